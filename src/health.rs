//! Broker health for operators: `--check` with Nagios plugin conventions
//! (one line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) and the `--status`
//! report as a table or JSON.

use std::fmt::Write;
use std::time::Duration;

use crate::client::Client;
use crate::error::Error;
use crate::status::BrokerStatus;

/// A Nagios state, with its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nagios {
    /// The broker answers and has workers.
    Ok = 0,
    /// The broker answers but has no worker registered.
    Warning = 1,
    /// No broker answers on the endpoint, or it answers badly.
    Critical = 2,
    /// The check itself could not run (an unusable endpoint).
    Unknown = 3,
}

impl Nagios {
    /// The state's name as the check line starts with it (`OK`, `WARNING`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Nagios::Ok => "OK",
            Nagios::Warning => "WARNING",
            Nagios::Critical => "CRITICAL",
            Nagios::Unknown => "UNKNOWN",
        }
    }
}

/// Checks that a broker answers on `frontend` within `timeout`; returns the
/// state and its one-line message (`OK - broker pid 1234 on ... (4 workers, 0 queued)`).
pub fn check(frontend: &str, curve: Option<&crate::auth::CurveClient>, timeout: Duration) -> (Nagios, String) {
    let line = |state: Nagios, text: String| (state, format!("{} - {text}", state.label()));
    if let Err(reason) = validate_endpoint(frontend) {
        return line(Nagios::Unknown, reason);
    }
    // A broker always has its socket file: without one, waiting cannot help.
    if let Some(path) = crate::endpoint::ipc_path(frontend).filter(|p| !p.exists()) {
        return line(Nagios::Critical, format!("no broker on {frontend}: {} does not exist", path.display()));
    }
    let client = match Client::connect_with(frontend, curve) {
        Ok(c) => c,
        Err(e) => return line(Nagios::Unknown, format!("cannot use endpoint {frontend}: {e}")),
    };
    let status = match client.status(timeout) {
        Ok(s) => s,
        Err(Error::BrokerUnreachable { .. } | Error::Timeout(_)) => {
            return line(
                Nagios::Critical,
                format!("no broker answers on {frontend} (waited {:.1} s)", timeout.as_secs_f64()),
            )
        }
        Err(e) => return line(Nagios::Critical, format!("broker on {frontend} answered badly: {e}")),
    };
    // The counts, not the list: a client that is not an operator sees no list.
    let workers: usize = status.services.iter().map(|s| s.workers).sum();
    let queued: usize = status.services.iter().map(|s| s.queued).sum();
    let summary = summary(status.pid, frontend, workers, queued);
    if workers == 0 {
        line(Nagios::Warning, format!("{summary}: no worker registered"))
    } else {
        line(Nagios::Ok, summary)
    }
}

/// Checks every broker of a deployment ([`check`] each, `timeout` each, in
/// parallel) and sums them up in one line naming each: OK when all are,
/// CRITICAL when none answers, WARNING otherwise (the service goes on, at
/// reduced capacity), UNKNOWN when an endpoint is unusable.
pub fn check_many(
    frontends: &[String],
    curve: Option<&crate::auth::CurveClient>,
    timeout: Duration,
) -> (Nagios, String) {
    let results: Vec<(Nagios, String)> = std::thread::scope(|s| {
        let checks: Vec<_> = frontends.iter().map(|f| s.spawn(move || check(f, curve, timeout))).collect();
        checks
            .into_iter()
            .map(|c| c.join().unwrap_or((Nagios::Unknown, "UNKNOWN - the check panicked".into())))
            .collect()
    });
    combine(&results)
}

/// One line for several brokers' checks (see [`check_many`]).
pub fn combine(results: &[(Nagios, String)]) -> (Nagios, String) {
    if let [one] = results {
        return one.clone();
    }
    let ok = results.iter().filter(|(s, _)| *s == Nagios::Ok).count();
    let answering = results.iter().filter(|(s, _)| matches!(s, Nagios::Ok | Nagios::Warning)).count();
    let state = if results.iter().any(|(s, _)| *s == Nagios::Unknown) {
        Nagios::Unknown
    } else if ok == results.len() {
        Nagios::Ok
    } else if answering == 0 {
        Nagios::Critical
    } else {
        Nagios::Warning
    };
    // Each broker's own line, without its state prefix (its state shows in its words).
    let each: Vec<&str> =
        results.iter().map(|(_, l)| l.split_once(" - ").map_or(l.as_str(), |(_, rest)| rest)).collect();
    let line = format!("{} - {ok} of {} brokers OK: {}", state.label(), results.len(), each.join("; "));
    (state, line)
}

/// `broker pid 1234 on ENDPOINT (4 workers, 0 queued)`, "1 worker" for one.
fn summary(pid: u32, frontend: &str, workers: usize, queued: usize) -> String {
    let noun = if workers == 1 { "worker" } else { "workers" };
    format!("broker pid {pid} on {frontend} ({workers} {noun}, {queued} queued)")
}

/// Catches endpoints ZeroMQ would reject or silently never reach.
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad endpoint {endpoint:?}: {why}"));
    if let Some(path) = endpoint.strip_prefix("ipc://").or_else(|| endpoint.strip_prefix(crate::local::SCHEME)) {
        if path.is_empty() {
            return bad("empty socket path");
        }
        if path.len() > 107 {
            return bad("ipc path longer than 107 bytes");
        }
        Ok(())
    } else if let Some(addr) = endpoint.strip_prefix("tcp://") {
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
            _ => bad("expected tcp://HOST:PORT"),
        }
    } else {
        bad("expected ipc://PATH or tcp://HOST:PORT")
    }
}

/// The human `--status` report.
pub fn format_status(s: &BrokerStatus) -> String {
    let mut out = String::new();
    let up = s.uptime_s as u64;
    let _ = writeln!(
        out,
        "broker pid {}, version {}, up {}h{:02}m{:02}s",
        s.pid,
        s.version,
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    let _ = writeln!(out, "front {}\nback  {}\n", s.frontend, s.backend);
    let _ = writeln!(out, "{:<24} {:>7} {:>5} {:>7}  BY PRIORITY", "SERVICE", "WORKERS", "IDLE", "QUEUED");
    for svc in &s.services {
        let levels = by_priority(&svc.queued_by_priority);
        let _ = writeln!(out, "{:<24} {:>7} {:>5} {:>7}  {levels}", svc.name, svc.workers, svc.idle, svc.queued);
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:>7} {:<12} {:<16} {:<10} {:<7} {:>8} {:>9}",
        "WORKER", "PID", "HOST", "SERVICE", "VERSION", "STATE", "JOBS", "SEEN(ms)"
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:<12} {:<16} {:<10} {:<7} {:>8} {:>9}",
            w.identity, w.pid, w.host, w.service, w.plugin_version, w.state, w.jobs_done, w.last_seen_ms
        );
    }
    let c = &s.counters;
    let _ = writeln!(
        out,
        "\njobs: ok {}, errors {}, timeouts {}, lost {}, retried {}, busy {}, no worker {}, bad requests {}, \
         cancelled {} ({} running), recalled {}; on the workers' lanes {}",
        c.ok,
        c.errors,
        c.timeouts,
        c.lost,
        c.retried,
        c.busy,
        c.no_worker,
        c.bad_requests,
        c.cancelled,
        c.cancelled_running,
        c.recalled,
        c.lane_jobs
    );
    let l = &s.latency_ms;
    let _ = writeln!(
        out,
        "latency (ms, n={}): p50 {:.3}, p90 {:.3}, p99 {:.3}, max {:.3}",
        l.count, l.p50, l.p90, l.p99, l.max
    );
    out
}

/// Waiting jobs per level, highest first, levels with none left out
/// (`9:2 5:1`); `-` when none wait.
fn by_priority(levels: &[usize]) -> String {
    let waiting: Vec<String> =
        levels.iter().enumerate().rev().filter(|(_, n)| **n > 0).map(|(level, n)| format!("{level}:{n}")).collect();
    if waiting.is_empty() {
        "-".into()
    } else {
        waiting.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated() {
        assert!(validate_endpoint("ipc:///run/x.ipc").is_ok());
        assert!(validate_endpoint("unix:///run/x.sock").is_ok());
        assert!(validate_endpoint("unix://").is_err());
        assert!(validate_endpoint("tcp://127.0.0.1:5555").is_ok());
        for bad in ["", "ipc://", "tcp://nohost", "tcp://h:0", "tcp://h:99999", "udp://x:1", "/tmp/x"] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
        assert!(validate_endpoint(&format!("ipc:///{}", "x".repeat(120))).unwrap_err().contains("107"));
    }

    #[test]
    fn several_brokers_sum_up_in_one_line_naming_each() {
        let ok = |n: u32| (Nagios::Ok, format!("OK - broker pid {n} on tcp://h{n}:1 (2 workers, 0 queued)"));
        let down = |n: u32| (Nagios::Critical, format!("CRITICAL - no broker answers on tcp://h{n}:1 (waited 3.0 s)"));
        let idle = (Nagios::Warning, "WARNING - broker pid 9 on tcp://h9:1 (0 workers, 0 queued): no worker".into());
        let bad = (Nagios::Unknown, "UNKNOWN - bad endpoint".to_string());
        assert_eq!(combine(&[ok(1)]), ok(1), "one broker: its own line");
        let (state, line) = combine(&[ok(1), ok(2)]);
        assert_eq!(state, Nagios::Ok);
        assert_eq!(line, "OK - 2 of 2 brokers OK: broker pid 1 on tcp://h1:1 (2 workers, 0 queued); broker pid 2 on tcp://h2:1 (2 workers, 0 queued)");
        let (state, line) = combine(&[ok(1), down(2)]);
        assert_eq!(state, Nagios::Warning, "one down: the other carries the service");
        assert!(
            line.starts_with("WARNING - 1 of 2 brokers OK: broker pid 1")
                && line.contains("no broker answers on tcp://h2:1"),
            "{line}"
        );
        assert_eq!(combine(&[ok(1), idle.clone()]).0, Nagios::Warning);
        assert_eq!(combine(&[down(1), down(2)]).0, Nagios::Critical);
        assert_eq!(combine(&[down(1), idle]).0, Nagios::Warning, "answering without workers is not down");
        assert_eq!(combine(&[ok(1), bad]).0, Nagios::Unknown);
    }

    #[test]
    fn an_unreachable_broker_is_critical_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // A socket file nobody listens on: the check waits for an answer.
        std::fs::write(dir.path().join("dead.ipc"), b"").unwrap();
        let endpoint = format!("ipc://{}/dead.ipc", dir.path().display());
        let start = std::time::Instant::now();
        let (state, line) = check(&endpoint, None, Duration::from_millis(200));
        assert_eq!(state, Nagios::Critical);
        assert!(line.starts_with("CRITICAL - no broker answers on ipc://"), "{line}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(check("nonsense", None, Duration::from_millis(10)).0, Nagios::Unknown);
    }

    #[test]
    fn a_missing_socket_file_is_critical_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.ipc");
        let endpoint = format!("ipc://{}", socket.display());
        let start = std::time::Instant::now();
        let (state, line) = check(&endpoint, None, Duration::from_secs(10));
        assert_eq!(state, Nagios::Critical);
        assert_eq!(line, format!("CRITICAL - no broker on {endpoint}: {} does not exist", socket.display()));
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn the_summary_counts_workers_in_words() {
        assert_eq!(summary(7, "ipc:///x", 1, 1), "broker pid 7 on ipc:///x (1 worker, 1 queued)");
        assert_eq!(summary(7, "ipc:///x", 0, 0), "broker pid 7 on ipc:///x (0 workers, 0 queued)");
        assert_eq!(summary(7, "ipc:///x", 4, 0), "broker pid 7 on ipc:///x (4 workers, 0 queued)");
    }

    #[test]
    fn status_table_lists_services_and_workers() {
        let mut s = BrokerStatus { pid: 7, version: "0.1.0".into(), uptime_s: 3725.0, ..Default::default() };
        s.services.push(crate::status::ServiceStatus {
            name: "echo".into(),
            workers: 2,
            idle: 1,
            queued: 3,
            queued_by_priority: vec![0, 0, 0, 0, 0, 3, 0, 0, 0, 0],
        });
        let text = format_status(&s);
        assert!(text.starts_with("broker pid 7, version 0.1.0, up 1h02m05s"), "{text}");
        assert!(text.contains("echo") && text.contains("jobs: ok 0"), "{text}");
        assert!(
            text.contains("BY PRIORITY") && text.lines().any(|l| l.starts_with("echo") && l.ends_with("  5:3")),
            "{text}"
        );
        assert!(text.contains("cancelled 0 (0 running), recalled 0"), "{text}");
        assert_eq!(by_priority(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 2]), "9:2 0:1");
        assert_eq!(by_priority(&[]), "-");
    }
}

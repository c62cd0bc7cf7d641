//! A plugin's `tracing` events and `log` records reach the worker's log, with
//! the plugin's name, the job and the worker's pid, at the worker's level;
//! under `powerhose`, what workers print comes out with their pid on each
//! line, and a worker that writes without newlines costs the supervisor a
//! bounded buffer.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(10);

/// A worker of `test_plugin` with `RUST_LOG` set (or not); registered when this returns.
fn worker_logging_at(dir: &TestDir, rust_log: Option<&str>) -> Proc {
    let client = dir.client();
    let plugin = plugin("test_plugin");
    let mut cmd = Command::new(WORKER);
    cmd.args(["--plugin", plugin.to_str().unwrap(), "--backend", &dir.back()])
        .env("POWERHOSE_RUNTIME_DIR", dir.path())
        .env_remove("RUST_LOG");
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let mut worker = Proc::spawn_cmd(cmd, dir, "worker");
    wait_until("the worker to register", Duration::from_secs(30), || {
        assert!(worker.child.try_wait().unwrap().is_none(), "worker exited: {}", worker.stderr());
        client.workers("", Duration::from_secs(5)).unwrap() > 0
    });
    worker
}

/// Logs `text` from the plugin through `action` (`log` or `log_crate`) at `level`.
fn log(dir: &TestDir, action: &str, level: &str, text: &str) {
    let job = JobRequest::new(text).header("action", action).header("level", level);
    assert_eq!(dir.client().execute(job, T).unwrap(), text.as_bytes());
}

/// The worker's log line that holds `needle`, waited for.
fn line_with(proc: &Proc, needle: &str) -> String {
    let mut found = None;
    wait_until(&format!("a log line with {needle:?}"), T, || {
        found = proc.stderr().lines().find(|l| l.contains(needle)).map(str::to_string);
        found.is_some()
    });
    found.unwrap()
}

/// The number after ` job=` in a line.
fn job_field(line: &str) -> u64 {
    let rest = line.split(" job=").nth(1).unwrap_or_else(|| panic!("no job field: {line}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn plugin_events_reach_the_worker_log_with_plugin_job_and_pid_at_its_level() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let worker = worker_logging_at(&dir, None);
    // The debug record goes first: once the info one is in the log, a
    // debug record let through would be there too.
    log(&dir, "log", "debug", "quiet-by-default");
    log(&dir, "log", "info", "loud-and-clear");
    let line = line_with(&worker, "loud-and-clear");
    for field in ["INFO", "plugin=test_plugin", &format!("pid={}", worker.pid()), "bytes=14"] {
        assert!(line.contains(field), "{field:?} missing: {line}");
    }
    assert!(job_field(&line) > 0, "{line}");
    assert!(!worker.stderr().contains("quiet-by-default"), "{}", worker.stderr());
}

#[test]
fn with_rust_log_debug_the_worker_shows_the_plugins_debug_records() {
    // Everything at debug, or the plugins' records only (target `plugin`).
    for rust_log in ["debug", "info,plugin=debug"] {
        let dir = TestDir::new();
        let _broker = start_broker(&dir, &[]);
        let worker = worker_logging_at(&dir, Some(rust_log));
        log(&dir, "log", "debug", "now-you-see-me");
        log(&dir, "log", "trace", "but-not-me");
        log(&dir, "log", "info", "the-end");
        let line = line_with(&worker, "now-you-see-me");
        assert!(line.contains("DEBUG") && line.contains(&format!("pid={}", worker.pid())), "{rust_log}: {line}");
        line_with(&worker, "the-end");
        assert!(!worker.stderr().contains("but-not-me"), "{rust_log}: {}", worker.stderr());
    }
}

#[test]
fn log_crate_records_arrive_too() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let worker = worker_logging_at(&dir, None);
    log(&dir, "log_crate", "debug", "log-crate-debug");
    log(&dir, "log_crate", "warn", "log-crate-warning");
    let line = line_with(&worker, "log-crate-warning");
    assert!(line.contains("WARN") && line.contains("plugin=test_plugin"), "{line}");
    assert!(line.contains(&format!("pid={}", worker.pid())) && job_field(&line) > 0, "{line}");
    assert!(!worker.stderr().contains("log-crate-debug"), "{}", worker.stderr());
}

#[test]
fn under_powerhose_printed_lines_carry_the_pid_of_the_worker_that_printed_them() {
    let dir = TestDir::new();
    let mut cluster = start_cluster(&dir, "test_plugin", 2, &[]);
    let client = std::sync::Arc::new(dir.client());
    // Lines longer than a pipe's atomic write, from both workers at once.
    let filler = "y".repeat(10_000);
    let jobs: Vec<_> = (0..4)
        .map(|t| {
            let (client, filler) = (client.clone(), filler.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|j| {
                        let text = format!("token-{t}-{j}-{filler}");
                        let job = JobRequest::new(text.clone()).header("action", "print");
                        let pid = String::from_utf8(client.execute(job, T).unwrap()).unwrap();
                        (format!("[worker {pid}] {text}"), pid)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let printed: Vec<(String, String)> = jobs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let pids: std::collections::BTreeSet<&str> = printed.iter().map(|(_, pid)| pid.as_str()).collect();
    let workers = children(cluster.pid());
    assert!(pids.iter().all(|pid| workers.contains(&pid.parse().unwrap())), "{pids:?} vs {workers:?}");

    // Stdout: the same lines, in whichever order the workers wrote them.
    let mut expected: Vec<&str> = printed.iter().map(|(line, _)| line.as_str()).collect();
    let mut seen: Vec<String> = (0..printed.len()).map(|_| cluster.wait_line("token-", T)).collect();
    expected.sort_unstable();
    seen.sort_unstable();
    assert_eq!(seen, expected, "stdout");
    wait_until("the printed lines on the supervisor's stderr", T, || {
        let stderr = cluster.stderr();
        printed.iter().all(|(line, _)| stderr.lines().any(|l| l == line))
    });
    // Every line that holds a token is one whole line of one worker.
    let stderr = cluster.stderr();
    let with_tokens: Vec<&str> = stderr.lines().filter(|l| l.contains("token-")).collect();
    assert_eq!(with_tokens.len(), printed.len());
    assert!(with_tokens.iter().all(|l| printed.iter().any(|(p, _)| p == l)));
}

/// The peak resident memory of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
    kb.trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_worker_writing_a_huge_line_without_newline_costs_the_supervisor_one_line() {
    let dir = TestDir::new();
    let mut cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let client = dir.client();
    let pid = String::from_utf8(client.execute(JobRequest::new("").header("action", "pid"), T).unwrap()).unwrap();
    let (rss_before, peak_before) = (powerhose::bench::procs::rss(cluster.pid()), peak_rss(cluster.pid()));

    let spew = 64 << 20;
    let job = JobRequest::new("spewed").header("action", "spew").header("bytes", spew.to_string());
    assert_eq!(client.execute(job, Duration::from_secs(30)).unwrap(), b"spewed");
    // All but a pipe's worth has been read by now, and no newline came: a
    // relay that kept the whole line would hold some 64 MiB.
    let (rss_after, peak_after) = (powerhose::bench::procs::rss(cluster.pid()), peak_rss(cluster.pid()));
    let bound = 16 << 20;
    assert!(rss_after < rss_before + bound, "rss {rss_before} -> {rss_after}");
    assert!(peak_after < peak_before + bound, "peak rss {peak_before} -> {peak_after}");
    let cut = format!("[worker {pid}] {} [line cut at 65536 bytes]", "x".repeat(65536));
    wait_until("the cut line", T, || cluster.stderr().lines().any(|l| l == cut));

    // Still serving; the cut line's rest, up to its newline, is dropped:
    // the next line is whole.
    let print = |text: &str| client.execute(JobRequest::new(text).header("action", "print"), T).unwrap();
    assert_eq!(print("ends-the-long-line"), pid.as_bytes());
    assert_eq!(print("a-fresh-line"), pid.as_bytes());
    cluster.wait_line("a-fresh-line", T);
    let fresh = format!("[worker {pid}] a-fresh-line");
    wait_until("the fresh line", T, || cluster.stderr().lines().any(|l| l == fresh));
    assert!(!cluster.stderr().contains("ends-the-long-line"));
    assert!(cluster.stderr().len() < 1 << 20, "the log holds {} bytes", cluster.stderr().len());
}

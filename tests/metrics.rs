//! `--metrics` with real processes: a broker and a test_plugin worker under
//! a known load (jobs that succeed, fail, wait behind a gate, some at
//! priority 9, and requests for a service nobody serves), scraped over HTTP
//! and parsed by Python's `prometheus_client`; every figure must match the
//! load. Then the same endpoint under `powerhose`, and the flag's refusals.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(30);

/// One sample: its name, its labels and its value.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// A scrape of `http://addr/metrics` as Python's `prometheus_client`
/// parses it (`text_string_to_metric_families`), with its content type.
struct Scrape {
    content_type: String,
    samples: Vec<Sample>,
}

const PARSE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    kind, text = r.headers["Content-Type"], r.read().decode()
samples = [
    {"name": s.name, "labels": s.labels, "value": s.value}
    for family in text_string_to_metric_families(text)
    for s in family.samples
]
print(json.dumps({"content_type": kind, "samples": samples}))
"#;

fn scrape(addr: &str) -> Scrape {
    let url = format!("http://{addr}/metrics");
    let out = Command::new("python3").args(["-c", PARSE, &url]).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "scraping {url} failed (pip install prometheus-client, as .ci/run does?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Scrape {
        content_type: parsed["content_type"].as_str().unwrap().to_string(),
        samples: serde_json::from_value(parsed["samples"].clone()).unwrap(),
    }
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`
    /// (panics if there is none: the name must be exported).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect();
        assert!(!matching.is_empty(), "no sample {name} {labels:?}");
        matching.iter().map(|s| s.value).sum()
    }
}

#[test]
fn a_scrape_under_a_known_load_matches_it() {
    let dir = TestDir::new();
    let addr = format!("127.0.0.1:{}", ports::free_port());
    // No jobs given ahead: the gated ones wait at the broker, where they are counted.
    let _broker = start_broker(&dir, &["--metrics", &addr, "--prefetch-budget-ms", "0"]);
    // No lane: every job is the broker's to count (lanes: the test below).
    let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = dir.client();
    let service = client.status(T).unwrap().services[0].name.clone();
    let svc = service.as_str();
    let (ok, errors, queued, high, bad) = (20, 5, 4, 3, 2);
    for i in 0..ok {
        client.execute(JobRequest::new(format!("ok {i}")).header("action", "echo"), T).unwrap();
    }
    for i in 0..errors {
        let failed = client.execute(JobRequest::new(format!("no {i}")).header("action", "error"), T);
        assert!(failed.is_err(), "action error fails");
    }
    for _ in 0..bad {
        assert!(client.execute(JobRequest::new("x").service("nobody"), T).is_err());
    }
    // One job holds the worker; the others wait behind it, some at priority 9.
    let gate = dir.path().join("gate");
    let started = dir.path().join("started");
    let held = JobRequest::new("held").header("action", "gate").header("until", gate.to_str().unwrap());
    let held = client.submit(held.header("file", started.to_str().unwrap()), T);
    let job = |p: u8| JobRequest::new("waits").header("action", "echo").priority(p);
    let mut waiting: Vec<_> = (0..queued).map(|_| client.submit(job(5), T)).collect();
    waiting.extend((0..high).map(|_| client.submit(job(9), T)));
    wait_until("the jobs queued behind the gate", T, || {
        client.status(T).is_ok_and(|s| s.services[0].queued == queued + high)
    });
    let queued_bytes = client.status(T).unwrap().queued_bytes as f64;

    let m = scrape(&addr);
    assert_eq!(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let jobs = |outcome: &str| m.sum("powerhose_jobs_total", &[("service", svc), ("outcome", outcome)]);
    assert_eq!((jobs("ok"), jobs("error")), (ok as f64, errors as f64));
    for outcome in ["timeout", "worker_lost", "busy", "no_worker", "cancelled"] {
        assert_eq!(jobs(outcome), 0.0, "{outcome}");
    }
    assert_eq!(m.sum("powerhose_bad_requests_total", &[]), bad as f64, "requests for a service nobody serves");
    let depth = |p: &str| m.sum("powerhose_queue_jobs", &[("service", svc), ("priority", p)]);
    assert_eq!((depth("5"), depth("9")), (queued as f64, high as f64));
    assert_eq!(m.sum("powerhose_queue_jobs", &[("service", svc)]), (queued + high) as f64, "no other level");
    let bytes = |p: &str| m.sum("powerhose_queue_bytes", &[("service", svc), ("priority", p)]);
    // Each waiting job holds the same bytes, whatever its level.
    assert_eq!(bytes("5") + bytes("9"), queued_bytes);
    assert_eq!(bytes("5") / queued as f64, bytes("9") / high as f64);
    // Dispatched: the ok and failed jobs and the gated one; answered: all but it.
    let dispatched = (ok + errors + 1) as f64;
    assert_eq!(m.sum("powerhose_queue_wait_seconds_count", &[("service", svc)]), dispatched);
    assert_eq!(m.sum("powerhose_queue_wait_seconds_bucket", &[("service", svc), ("le", "+Inf")]), dispatched);
    assert_eq!(m.sum("powerhose_run_seconds_count", &[("service", svc)]), (ok + errors) as f64);
    let workers = |state: &str| m.sum("powerhose_workers", &[("service", svc), ("state", state)]);
    assert_eq!((workers("busy"), workers("idle"), workers("stuck")), (1.0, 0.0, 0.0));
    assert_eq!(m.sum("powerhose_auth_failures_total", &[]), 0.0);
    assert!(m.sum("powerhose_broker_resident_memory_bytes", &[]) > 1e6);
    assert!(m.sum("powerhose_broker_cpu_seconds_total", &[]) > 0.0);

    std::fs::write(&gate, b"").unwrap();
    held.wait().unwrap();
    for handle in waiting {
        handle.wait().unwrap();
    }
    // The worker's READY after its last answer may trail the answer itself.
    wait_until("the worker idle again", T, || {
        scrape(&addr).sum("powerhose_workers", &[("service", svc), ("state", "idle")]) == 1.0
    });
    let m = scrape(&addr);
    let all = (ok + 1 + queued + high) as f64;
    assert_eq!(m.sum("powerhose_jobs_total", &[("service", svc), ("outcome", "ok")]), all);
    assert_eq!(m.sum("powerhose_queue_jobs", &[]), 0.0);
    assert_eq!(m.sum("powerhose_queue_bytes", &[]), 0.0);
    assert_eq!(m.sum("powerhose_queue_wait_seconds_count", &[("service", svc)]), all + errors as f64);
    assert_eq!(m.sum("powerhose_run_seconds_count", &[("service", svc)]), all + errors as f64);
    // The gated jobs waited in the queue at least until the gate opened.
    let slow = m.sum("powerhose_queue_wait_seconds_bucket", &[("service", svc), ("le", "+Inf")])
        - m.sum("powerhose_queue_wait_seconds_bucket", &[("service", svc), ("le", "0.001")]);
    assert!(slow >= (queued + high) as f64, "{slow} waits over 1 ms");
}

#[test]
fn powerhose_serves_its_brokers_metrics() {
    let dir = TestDir::new();
    let addr = format!("127.0.0.1:{}", ports::free_port());
    let _cluster = start_cluster(&dir, "test_plugin", 2, &["--metrics", &addr]);
    let client = dir.client();
    // Seven through the broker (a priority), five on the workers' lanes.
    for i in 0..12 {
        let job = JobRequest::new(format!("ok {i}")).header("action", "echo");
        client.execute(if i < 7 { job.priority(5) } else { job }, T).unwrap();
    }
    wait_until("both workers idle", T, || scrape(&addr).sum("powerhose_workers", &[("state", "idle")]) == 2.0);
    wait_until("the lanes' jobs reported", T, || scrape(&addr).sum("powerhose_lane_jobs_total", &[]) == 5.0);
    let m = scrape(&addr);
    assert_eq!(m.sum("powerhose_jobs_total", &[("outcome", "ok")]), 7.0);
    assert_eq!(m.sum("powerhose_run_seconds_count", &[]), 7.0);
    assert!(m.sum("powerhose_broker_resident_memory_bytes", &[]) > 1e6);
}

#[test]
fn a_bad_or_exposed_address_is_a_one_line_error() {
    let dir = TestDir::new();
    let cases: [(&str, &[&str], &str); 4] = [
        (BROKER, &["--metrics", "localhost:9464"], "is not an IP address and port"),
        (BROKER, &["--metrics", "0.0.0.0:9464"], "--metrics-allow-remote"),
        (POWERHOSE, &["--plugin", "x", "--metrics", "9464"], "is not an IP address and port"),
        (POWERHOSE, &["--plugin", "x", "--metrics", "[::]:9464"], "--metrics-allow-remote"),
    ];
    for (program, args, says) in cases {
        let (front, back) = (dir.front(), dir.back());
        let out = Command::new(program).args(args).args(["--frontend", &front, "--backend", &back]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A port in use is said at once, before the broker starts.
    let taken = std::net::TcpListener::bind(("127.0.0.1", ports::free_port())).unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let (front, back) = (dir.front(), dir.back());
    let out = Command::new(BROKER).args(["--metrics", &busy, "--frontend", &front, "--backend", &back]).output();
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("binding --metrics"), "{stderr}");
}

/// Every `powerhose_*` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in text.match_indices("powerhose_") {
        let name: String = text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        names.push(name);
    }
    names
}

#[test]
fn the_alert_rules_and_the_dashboard_check_and_name_exported_metrics() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules = deploy.join("prometheus/powerhose-alerts.yml");
    match Command::new("promtool").arg("check").arg("rules").arg(&rules).output() {
        Ok(out) => assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stdout)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "promtool is not installed (Debian's prometheus package, as .ci/run installs): its check is skipped"
            )
        }
        Err(e) => panic!("running promtool: {e}"),
    }
    let rules = std::fs::read_to_string(&rules).unwrap();
    for alert in ["PowerhoseBrokerDown", "PowerhoseNoWorkers", "PowerhoseQueueWaitHigh"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    let dashboard = std::fs::read_to_string(deploy.join("grafana/powerhose-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .chain([dashboard["templating"]["list"][0]["definition"].as_str().unwrap()])
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");

    // A broker that served a job exports every family the files name.
    let dir = TestDir::new();
    let addr = format!("127.0.0.1:{}", ports::free_port());
    let _broker = start_broker(&dir, &["--metrics", &addr]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    dir.client().execute(JobRequest::new("one").header("action", "echo"), T).unwrap();
    let exported: std::collections::BTreeSet<String> = scrape(&addr).samples.into_iter().map(|s| s.name).collect();
    let named: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).chain(metric_names(&rules)).collect();
    assert!(named.len() >= 10, "{named:?}");
    for name in named {
        assert!(exported.contains(&name), "{name} is not exported: {exported:?}");
    }
}

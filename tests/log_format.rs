//! `--log-format json`, with real processes: every binary then writes only
//! JSON objects on stderr (timestamp, level, fields.message), a worker's
//! relayed by `powerhose` with its `worker_pid`, and a bad value is a
//! one-line error with exit 2.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use powerhose::JobRequest;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);
const KEYGEN: &str = env!("CARGO_BIN_EXE_powerhose-keygen");
const BENCH: &str = env!("CARGO_BIN_EXE_powerhose-bench");

/// Every line of `text` as a JSON record, checked for the JSON layer's fields.
fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{text}"));
            assert!(v["timestamp"].is_string(), "no timestamp: {line}");
            assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&v["level"].as_str().unwrap_or("")), "{line}");
            assert!(v["fields"]["message"].is_string(), "no fields.message: {line}");
            assert!(v["target"].is_string(), "no target: {line}");
            v
        })
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

/// Waits until `proc`'s stderr holds a record `matches` accepts; returns it.
fn wait_record(proc: &Proc, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_until(what, T, || {
        // The last line may be half written: only whole lines are read.
        let text = proc.stderr();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        found = records(whole).into_iter().find(&matches);
        found.is_some()
    });
    found.unwrap()
}

/// Stops `proc` with SIGTERM and checks its whole log is JSON.
fn stop_and_check(mut proc: Proc) -> Vec<Value> {
    proc.signal(libc::SIGTERM);
    assert!(proc.wait_exit(T).is_some_and(|s| s.success()), "{}", proc.stderr());
    records(&proc.stderr())
}

fn run(program: &str, args: &[&str], dir: &TestDir) -> Output {
    Command::new(program).args(args).env("POWERHOSE_RUNTIME_DIR", dir.path()).env_remove("RUST_LOG").output().unwrap()
}

#[test]
fn the_broker_and_a_worker_log_json() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &["--log-format", "json"]);
    let worker = start_worker(&dir, "test_plugin", &["--log-format", "json"], "worker");
    let job = JobRequest::new("hello as json").header("action", "log").header("level", "warn");
    dir.client().execute(job, T).unwrap();

    let registered = wait_record(&broker, "the broker's record of the worker", |v| message(v) == "worker registered");
    assert_eq!(registered["fields"]["pid"], worker.pid());
    assert_eq!(registered["level"], "INFO");
    let loaded = wait_record(&worker, "the worker's own record", |v| message(v).starts_with("loaded plugin"));
    assert_eq!(loaded["level"], "INFO");
    // A plugin's record (its own fields follow its message): the worker's pid and the job.
    let plugin = wait_record(&worker, "the plugin's record", |v| message(v).starts_with("hello as json"));
    assert_eq!((plugin["level"].as_str(), plugin["target"].as_str()), (Some("WARN"), Some("plugin")));
    assert_eq!(plugin["fields"]["pid"], worker.pid());
    assert!(plugin["fields"]["job"].as_u64().is_some_and(|j| j > 0), "{plugin}");

    assert!(stop_and_check(worker).iter().any(|v| message(v) == "worker stopped"));
    assert!(stop_and_check(broker).iter().any(|v| message(v) == "broker stopping"));
}

#[test]
fn the_supervisor_logs_json_and_adds_each_workers_pid_to_its_records() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "test_plugin", 2, &["--log-format", "json"]);
    let pids = registered_pids(&dir);
    assert_eq!(pids.len(), 2);
    let client = dir.client();
    client.execute(JobRequest::new("plugin says hi").header("action", "log"), T).unwrap();
    // A plugin's println!: not JSON, so a record of the supervisor's own.
    let printer: u32 =
        String::from_utf8(client.execute(JobRequest::new("raw line").header("action", "print"), T).unwrap())
            .unwrap()
            .parse()
            .unwrap();

    // The supervisor's own records (its broker's) carry no worker pid.
    let own = wait_record(&cluster, "the broker's record", |v| message(v) == "broker ready");
    assert!(own.get("worker_pid").is_none(), "{own}");
    // Each worker's records, relayed whole with its pid.
    for pid in &pids {
        let loaded = wait_record(&cluster, "a worker's own record", |v| {
            v["worker_pid"] == *pid && message(v).starts_with("loaded plugin")
        });
        assert_eq!(loaded["target"], "powerhose::cli::worker");
    }
    let plugin = wait_record(&cluster, "the plugin's record", |v| message(v).starts_with("plugin says hi"));
    assert_eq!(plugin["worker_pid"], plugin["fields"]["pid"], "{plugin}");
    // Its stdout and its stderr line.
    let raw = |level: &'static str| {
        move |v: &Value| message(v) == "raw line" && v["level"] == level && v["fields"]["worker_pid"] == printer
    };
    wait_record(&cluster, "the worker's stdout line", raw("INFO"));
    wait_record(&cluster, "the worker's stderr line", raw("WARN"));

    let all = stop_and_check(cluster);
    assert!(all.iter().any(|v| v.get("worker_pid").is_some() && message(v) == "worker stopped"));
}

#[test]
fn the_client_and_keygen_log_json_errors_included() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let front = dir.front();
    let out = run(CLIENT, &["--log-format", "json", "--frontend", &front, "ping"], &dir);
    assert!(out.status.success(), "{out:?}");
    records(&String::from_utf8(out.stderr).unwrap());

    // Its fatal error is a record too: one line, the text mode's message.
    let nowhere = dir.endpoint("nowhere");
    let out = run(CLIENT, &["--log-format", "json", "--frontend", &nowhere, "--timeout", "0.2", "ping"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let errors = records(&String::from_utf8(out.stderr).unwrap());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["level"], "ERROR");
    assert!(message(&errors[0]).starts_with("powerhose-client: error: broker unreachable"), "{errors:?}");

    let keys = dir.path().to_str().unwrap();
    let out = run(KEYGEN, &["--log-format", "json", "--dir", keys, "server"], &dir);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3, "stdout is unchanged");
    records(&String::from_utf8(out.stderr).unwrap());
    let out = run(KEYGEN, &["--log-format", "json", "--dir", keys, "../bad"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let errors = records(&String::from_utf8(out.stderr).unwrap());
    assert!(errors.len() == 1 && message(&errors[0]).starts_with("powerhose-keygen: error: "), "{errors:?}");
}

#[test]
fn a_bad_log_format_is_a_one_line_error_with_exit_2() {
    let dir = TestDir::new();
    let front = dir.front();
    let binaries: [(&str, &str, Vec<&str>); 6] = [
        (BROKER, "powerhose-broker", vec!["--frontend", &front]),
        (POWERHOSE, "powerhose", vec!["--plugin", "echo"]),
        (WORKER, "powerhose-worker", vec!["--plugin", "echo"]),
        (CLIENT, "powerhose-client", vec!["ping"]),
        (KEYGEN, "powerhose-keygen", vec!["name"]),
        (BENCH, "powerhose-bench", vec!["--plugin", "echo"]),
    ];
    for (program, name, args) in binaries {
        let out = run(program, &[args.as_slice(), &["--log-format", "xml"]].concat(), &dir);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr, format!("{name}: error: --log-format must be text or json, not \"xml\"\n"));
        assert!(out.stdout.is_empty(), "{name}");
    }
}

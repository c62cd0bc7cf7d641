//! Operators' tools on real processes: `--check` for cron and Nagios, one
//! broker per endpoint, `--purge-ghosts`, `--status`.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(10);

/// Runs `powerhose-broker ARGS` to completion: (exit code, stdout, stderr).
fn broker_cmd(dir: &TestDir, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BROKER).args(args).env("POWERHOSE_RUNTIME_DIR", dir.path()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn check(dir: &TestDir, extra: &[&str]) -> (i32, String) {
    let front = dir.front();
    let mut args = vec!["--check", "--frontend", &front, "--timeout", "1"];
    args.extend_from_slice(extra);
    let (code, out, err) = broker_cmd(dir, &args);
    assert_eq!(out.lines().count(), 1, "one line: {out:?} (stderr {err:?})");
    assert!(!out.contains('\x1b'), "no colour");
    (code, out.trim_end().to_string())
}

#[test]
fn check_follows_nagios_conventions() {
    let dir = TestDir::new();
    let t = Instant::now();
    let (code, line) = check(&dir, &[]);
    assert_eq!(code, 2);
    let socket = dir.socket("front").display().to_string();
    assert_eq!(line, format!("CRITICAL - no broker on {}: {socket} does not exist", dir.front()));
    assert!(t.elapsed() < Duration::from_secs(3), "within the timeout");

    let broker = start_broker(&dir, &[]);
    let (code, line) = check(&dir, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        line,
        format!("WARNING - broker pid {} on {} (0 workers, 0 queued): no worker registered", broker.pid(), dir.front())
    );

    let _worker = start_worker(&dir, "echo", &[], "worker");
    let (code, line) = check(&dir, &[]);
    assert_eq!(code, 0);
    assert_eq!(line, format!("OK - broker pid {} on {} (1 worker, 0 queued)", broker.pid(), dir.front()));

    for bad in [&["--frontend", "udp://nowhere"][..], &["--bogus-flag"][..], &["--timeout", "soon"][..]] {
        let mut args = vec!["--check"];
        args.extend_from_slice(bad);
        let (code, out, _) = broker_cmd(&dir, &args);
        assert_eq!(code, 3, "{bad:?}: {out}");
        assert!(out.starts_with("UNKNOWN - ") && out.lines().count() == 1, "{bad:?}: {out}");
    }
}

both_transports! {
    fn two_brokers_started_at_once_leave_exactly_one_running(t) {
    let dir = TestDir::on(t);
    let (front, back) = (dir.front(), dir.back());
    let args = ["--frontend", front.as_str(), "--backend", back.as_str()];
    for round in 0..20 {
        let mut a = Proc::spawn(BROKER, &args, &dir, &format!("a{round}"));
        let mut b = Proc::spawn(BROKER, &args, &dir, &format!("b{round}"));
        let pid = dir.client().ping(T).unwrap();
        let (winner, loser) = if pid == a.pid() { (&mut a, &mut b) } else { (&mut b, &mut a) };
        assert_eq!(pid, winner.pid(), "round {round}: the answering broker is one of the two");
        let status = loser.wait_exit(T).expect("the second broker exits");
        assert_eq!(status.code(), Some(1), "round {round}");
        let err = loser.stderr();
        assert!(
            err.contains(&format!("a broker is already running on {front} (pid {})", winner.pid())),
            "round {round}: {err}"
        );
        assert!(winner.child.try_wait().unwrap().is_none(), "round {round}: the winner keeps running");
        winner.signal(libc::SIGTERM);
        assert_eq!(winner.wait_exit(T).unwrap().code(), Some(0));
    }
    }
}

both_transports! {
    fn a_sigkilled_brokers_socket_does_not_block_a_restart_and_tcp_in_use_is_refused(t) {
    let dir = TestDir::on(t);
    let mut first = start_broker(&dir, &[]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(dir.socket("front").exists(), "SIGKILL left the socket file");
    let second = start_broker(&dir, &[]);
    assert_eq!(dir.client().ping(T).unwrap(), second.pid());

    let port = common::ports::free_port();
    let (front, back) = (format!("tcp://127.0.0.1:{port}"), dir.back().replace("back", "back2"));
    let tcp = Proc::spawn(BROKER, &["--frontend", &front, "--backend", &back], &dir, "tcp1");
    powerhose::Client::connect(&front).unwrap().ping(T).unwrap();
    let back3 = dir.back().replace("back", "back3");
    let (code, _, err) = broker_cmd(&dir, &["--frontend", &front, "--backend", &back3]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("a broker is already running on {front} (pid {})", tcp.pid())), "{err}");
    }
}

/// A broker started with `exec -a` under another name would still be found by
/// its executable; a process that only *claims* the name is not a broker.
fn impostor(dir: &TestDir, front: &str) -> Proc {
    // `sleep; true` keeps the shell itself running (no exec of the last command).
    let mut cmd = Command::new("/bin/sh");
    cmd.arg0("powerhose-broker").args(["-c", "sleep 60; true", "--frontend", front]);
    let proc = Proc::spawn_cmd(cmd, dir, "impostor");
    let pid = proc.pid();
    wait_until("the impostor to exec", T, || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"powerhose-broker"))
    });
    proc
}

#[test]
fn purge_ghosts_kills_ghosts_and_spares_the_live_broker_and_strangers() {
    let dir = TestDir::new();
    let front = dir.front();
    // A ghost: a broker whose endpoint files were removed behind its back, so
    // a new broker took the endpoint (the seed post's zombie).
    let ghost = start_broker(&dir, &[]);
    for name in ["front", "back"] {
        let socket = dir.socket(name);
        std::fs::remove_file(&socket).unwrap();
        std::fs::remove_file(format!("{}.lock", socket.display())).unwrap();
    }
    let live = start_broker(&dir, &[]);
    let stranger = impostor(&dir, &front);

    let (code, out, _) = broker_cmd(&dir, &["--purge-ghosts", "--frontend", &front, "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("live broker on {front}: pid {} (spared)", live.pid())), "{out}");
    assert!(out.contains(&format!("ghost broker pid {}", ghost.pid())) && out.contains("dry run"), "{out}");
    assert!(!out.contains(&stranger.pid().to_string()), "{out}");
    assert!(alive(ghost.pid()));

    let (code, out, _) = broker_cmd(&dir, &["--purge-ghosts", "--frontend", &front, "--grace", "5"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("terminated (SIGTERM)"), "{out}");
    assert!(!alive(ghost.pid()), "the ghost is gone");
    assert!(alive(live.pid()) && alive(stranger.pid()), "live broker and stranger spared");
    assert_eq!(dir.client().ping(T).unwrap(), live.pid());
}

#[test]
fn purge_ghosts_unblocks_an_endpoint_held_by_a_hung_broker() {
    let dir = TestDir::new();
    let front = dir.front();
    let hung = start_broker(&dir, &[]);
    hung.signal(libc::SIGSTOP);
    let (code, _, err) = broker_cmd(&dir, &["--frontend", &front, "--backend", &dir.back()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("(pid {})", hung.pid())), "the refusal names the hung broker: {err}");

    let (code, out, _) =
        broker_cmd(&dir, &["--purge-ghosts", "--force", "--frontend", &front, "--timeout", "0.3", "--grace", "0.3"]);
    assert_eq!(code, 0);
    assert!(out.contains("no broker answers") && out.contains("holds the endpoint's lock"), "{out}");
    assert!(out.contains("killed (SIGKILL after the grace period)"), "{out}");
    let restarted = start_broker(&dir, &[]);
    assert_eq!(dir.client().ping(T).unwrap(), restarted.pid());
}

#[test]
fn status_reports_counters_of_a_known_run() {
    let dir = TestDir::new();
    // Every job through the broker, which counts them (lanes: tests/lanes.rs).
    let cluster = start_cluster(&dir, "test_plugin", 1, &["--no-lanes"]);
    let client = dir.client();
    for i in 0..5 {
        client.execute(format!("{i}"), T).unwrap();
    }
    for _ in 0..2 {
        assert!(client.execute(JobRequest::new("no").header("action", "error"), T).is_err());
    }
    assert!(client.execute(JobRequest::new("?").service("missing"), T).is_err());

    let front = dir.front();
    let (code, out, err) = broker_cmd(&dir, &["--status", "--json", "--frontend", &front]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("--status --json is JSON");
    assert_eq!(status["pid"], cluster.pid());
    assert_eq!(status["counters"]["ok"], 5);
    assert_eq!(status["counters"]["errors"], 2);
    assert_eq!(status["counters"]["bad_requests"], 1);
    assert_eq!(status["latency_ms"]["count"], 7);
    assert_eq!(status["services"][0]["name"], "test_plugin");
    assert_eq!(status["workers"][0]["jobs_done"], 7);
    assert_eq!(status["workers"][0]["plugin_version"], "0.1.0");

    let (code, table, _) = broker_cmd(&dir, &["--status", "--frontend", &front]);
    assert_eq!(code, 0);
    assert!(table.contains("test_plugin") && table.contains("jobs: ok 5, errors 2"), "{table}");
}

#[test]
fn a_saturated_broker_still_answers_pings_status_and_bad_requests_at_once() {
    let dir = TestDir::new();
    // No jobs given ahead: the worker holds one, the others queue.
    let _broker = start_broker(&dir, &["--prefetch-budget-ms", "0"]);
    // No lane: every job waits at the broker, the subject here.
    let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = std::sync::Arc::new(dir.client());
    client.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
    // One job runs for 3 s and one waits: the broker reads its front late
    // while saturated, but never later than its queue check.
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                client.execute(JobRequest::new("").header("action", "sleep").header("ms", "3000"), T)
            })
        })
        .collect();
    wait_until("a job queued", T, || client.status(T).unwrap().services[0].queued == 1);
    for _ in 0..5 {
        let t = Instant::now();
        client.ping(T).unwrap();
        assert_eq!(client.status(T).unwrap().services[0].queued, 1, "still saturated");
        let refused = client.execute(JobRequest::new("x").service("nope"), T);
        assert!(refused.is_err(), "{refused:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "answered after {:?} while saturated", t.elapsed());
    }
    for s in sleepers {
        s.join().unwrap().unwrap();
    }
}

//! Worker renewal on a machine with no idle CPU: rolling reloads and max-age
//! replacement under client load while a busy loop runs on every CPU, and
//! not one failed request. (A retiring worker interrupted by its SIGTERM in
//! the middle of a ZeroMQ call used to exit holding jobs, answered
//! `WorkerLost` after the heartbeats ran out.)

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);
const ROUNDS: usize = 5;

#[test]
fn rolling_reloads_under_a_cpu_hog_fail_no_request() {
    let dir = TestDir::new();
    let _hog = cpu_hog(&dir);
    let cluster = start_cluster(&dir, "echo", 2, &[]);
    let (stop, handle) = load(&dir, 8, || JobRequest::new("payload"));
    let client = dir.client();
    for round in 0..ROUNDS {
        let before = registered_pids(&dir);
        client.reload(T).unwrap();
        wait_until(&format!("reload {round} to replace both workers"), Duration::from_secs(60), || {
            let now = registered_pids(&dir);
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        });
    }
    stop.store(true, Ordering::Relaxed);
    let (done, failures) = handle.join().unwrap();
    let log = cluster.stderr();
    assert!(failures.is_empty(), "{} failed: {:?}\n{log}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(done > 100, "{done} jobs under load");
    eprintln!("{ROUNDS} reloads under a CPU hog: {done} jobs, 0 failures");
}

#[test]
fn max_age_renewal_under_a_cpu_hog_fails_no_request() {
    let dir = TestDir::new();
    let _hog = cpu_hog(&dir);
    let cluster = start_cluster(&dir, "test_plugin", 2, &["--max-age", "1", "--max-age-delta", "0.5"]);
    let served = Arc::new(Mutex::new(HashSet::new()));
    let job = || JobRequest::new("").header("action", "pid");
    let (stop, handle) = load(&dir, 8, job);
    let client = dir.client();
    // Until enough renewals happened: each worker lives 1-1.5 s.
    wait_until("five workers replaced by age", Duration::from_secs(60), || {
        let pid = client.execute(job(), T).unwrap();
        let mut served = served.lock().unwrap();
        served.insert(pid);
        served.len() >= 2 + ROUNDS
    });
    stop.store(true, Ordering::Relaxed);
    let (done, failures) = handle.join().unwrap();
    let log = cluster.stderr();
    assert!(failures.is_empty(), "{} failed: {:?}\n{log}", failures.len(), &failures[..failures.len().min(5)]);
    eprintln!("max age under a CPU hog: {done} jobs, {} workers served, 0 failures", served.lock().unwrap().len());
}

/// Threads of `pid` that do not block SIGTERM, by name.
fn threads_taking_sigterm(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").trim().to_string();
        let blocked = u64::from_str_radix(&field("SigBlk:"), 16).unwrap_or(0);
        if blocked & (1 << (libc::SIGTERM - 1)) == 0 {
            names.push(field("Name:"));
        }
    }
    names
}

/// A signal handled by a thread inside a ZeroMQ call makes the call fail
/// (EINTR), and a send that fails has lost its message: in every powerhose
/// process only the thread named "signals" may take SIGTERM.
#[test]
fn only_a_signal_thread_takes_the_signals_of_brokers_workers_and_clusters() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &[]);
    let worker = start_worker(&dir, "echo", &[], "worker");
    let other = TestDir::new();
    let cluster = start_cluster(&other, "echo", 1, &[]);
    let cluster_worker = children(cluster.pid())[0];
    for (what, pid) in [("broker", broker.pid()), ("worker", worker.pid()), ("powerhose", cluster.pid())] {
        assert_eq!(threads_taking_sigterm(pid), ["signals"], "{what}");
    }
    assert_eq!(threads_taking_sigterm(cluster_worker), ["signals"], "a cluster's worker");
}

/// A worker pelted with SIGTERM while it still holds jobs (an impatient
/// operator, or a service manager and a supervisor both asking it to stop)
/// finishes every one of them: no signal may cut a ZeroMQ call short.
#[test]
fn a_worker_pelted_with_sigterm_finishes_every_job_it_holds() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let _steady = start_worker(&dir, "test_plugin", &[], "steady");
    let target = start_worker(&dir, "test_plugin", &[], "target");
    let (stop, handle) = load(&dir, 8, || JobRequest::new("x").header("action", "sleep").header("ms", "1"));
    // Let both workers get busy, then signal one for as long as it lives (bounded).
    // On the lanes (the broker counts their jobs with the workers' heartbeats).
    wait_until("jobs flowing", T, || {
        let c = dir.client().status(T).unwrap().counters;
        c.ok + c.lane_jobs > 50
    });
    let deadline = std::time::Instant::now() + T;
    let mut sent = 0;
    while alive(target.pid()) && std::time::Instant::now() < deadline {
        kill(target.pid(), libc::SIGTERM);
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(300)); // more load on the steady worker
    stop.store(true, Ordering::Relaxed);
    let (done, failures) = handle.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed after {sent} SIGTERMs: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let log = target.stderr();
    assert!(!log.contains("error"), "{log}");
    eprintln!("{sent} SIGTERMs to a busy worker: {done} jobs, 0 failures");
}

both_transports! {
    /// The other side of judging a local worker by its process: one that is
    /// stopped while it holds a job is hung, not starved, and its job is
    /// answered once its heartbeats are missed (here 3 × 200 ms).
    fn a_stopped_local_worker_loses_its_job_after_its_heartbeats(t) {
    let dir = TestDir::on(t);
    let fast = ["--heartbeat-ms", "200"];
    let _broker = start_broker(&dir, &fast);
    let worker = start_worker(&dir, "test_plugin", &fast, "worker");
    let started = dir.path().join("started");
    let (client, file) = (dir.client(), started.to_str().unwrap().to_string());
    let call = std::thread::spawn(move || {
        let job = JobRequest::new("x").header("action", "sleep").header("ms", "10000").header("file", file);
        let t = std::time::Instant::now();
        (client.execute(job, T), t.elapsed())
    });
    wait_until("the job to start", T, || started.exists());
    worker.signal(libc::SIGSTOP);
    let (result, waited) = call.join().unwrap();
    worker.signal(libc::SIGCONT);
    assert!(matches!(result, Err(powerhose::Error::WorkerLost(_))), "{result:?}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    }
}

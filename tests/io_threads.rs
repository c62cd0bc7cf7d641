//! Where and how I/O threads run, read back from /proc of the real
//! processes: with `--io-cpu` the broker and the workers' I/O threads sit on
//! one CPU while job threads keep every CPU (a CPU that cannot be used is a
//! one-line error); a worker's I/O threads run under SCHED_BATCH unless
//! `--preemptive-io`, its job thread never. Over ZeroMQ, whose I/O threads
//! these are (over the local transport a worker has no thread but its job
//! thread and pulse, and the broker's loop is its I/O).

mod common;

use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);

/// `parse` of /proc/<pid>/task/<tid>/`file`, for every thread of `pid`
/// that has one: (tid, value).
fn per_thread<T>(pid: u32, file: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<(u32, T)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let tid: u32 = task.file_name().to_str().unwrap().parse().unwrap();
        // The thread that only takes signals (see powerhose::sys) is idle for good.
        if std::fs::read_to_string(task.path().join("comm")).is_ok_and(|n| n.trim() == "signals") {
            continue;
        }
        // A thread that ended meanwhile has no file: skipped.
        let text = std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        if let Some(value) = parse(&text) {
            out.push((tid, value));
        }
    }
    out
}

/// `Cpus_allowed_list` of every thread of `pid`: (tid, list).
fn thread_cpus(pid: u32) -> Vec<(u32, String)> {
    per_thread(pid, "status", |status| {
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|list| list.trim().to_string())
    })
}

/// The scheduling policy of every thread of `pid`: (tid, policy), field 41
/// of its `stat`.
fn thread_policies(pid: u32) -> Vec<(u32, i32)> {
    per_thread(pid, "stat", |stat| {
        // The command name may hold spaces: fields count from after its ')'.
        let (_, rest) = stat.rsplit_once(") ")?;
        Some(rest.split_whitespace().nth(41 - 3).unwrap().parse().unwrap())
    })
}

const SCHED_OTHER: i32 = 0;
const SCHED_BATCH: i32 = 3;

/// The job thread (the main one) runs under the default policy, the other
/// threads under `io_policy`.
fn assert_worker_policies(pid: u32, io_policy: i32) {
    let threads = thread_policies(pid);
    assert!(threads.len() >= 3, "a worker has a job thread, libzmq's threads and pulse: {threads:?}");
    for (tid, policy) in &threads {
        let want = if *tid == pid { SCHED_OTHER } else { io_policy };
        assert_eq!(*policy, want, "worker thread {tid}: {threads:?}");
    }
}

fn own_cpus() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string()
}

/// The worker's job thread (its main thread) keeps the CPUs it was started
/// with; its other threads (libzmq's, pulse) are on CPU 0.
fn assert_worker_split(pid: u32) {
    let threads = thread_cpus(pid);
    assert!(threads.len() >= 3, "a worker has a job thread, libzmq's threads and pulse: {threads:?}");
    for (tid, cpus) in &threads {
        let want = if *tid == pid { own_cpus() } else { "0".to_string() };
        assert_eq!(cpus, &want, "worker thread {tid}: {threads:?}");
    }
}

#[test]
fn broker_and_worker_io_threads_run_on_the_io_cpu_and_jobs_flow() {
    let dir = TestDir::zmq();
    let broker = start_broker(&dir, &["--io-cpu", "0"]);
    let worker = start_worker(&dir, "echo", &["--io-cpu", "0"], "worker");
    let client = dir.client();
    for i in 0..20 {
        let data = format!("job {i}");
        assert_eq!(client.execute(JobRequest::new(data.clone()), T).unwrap(), data.as_bytes());
    }
    let broker_threads = thread_cpus(broker.pid());
    assert!(broker_threads.len() >= 2, "{broker_threads:?}");
    assert!(broker_threads.iter().all(|(_, cpus)| cpus == "0"), "every broker thread on CPU 0: {broker_threads:?}");
    assert_worker_split(worker.pid());
    assert_worker_policies(worker.pid(), SCHED_BATCH);
    assert!(thread_policies(broker.pid()).iter().all(|(_, p)| *p == SCHED_OTHER), "the broker is never batched");
}

#[test]
fn preemptive_io_leaves_a_workers_io_threads_under_the_default_policy() {
    let dir = TestDir::zmq();
    let _broker = start_broker(&dir, &[]);
    let batched = start_worker(&dir, "echo", &[], "batched");
    let preemptive = start_worker(&dir, "echo", &["--preemptive-io"], "preemptive");
    let client = dir.client();
    for i in 0..20 {
        let data = format!("job {i}");
        assert_eq!(client.execute(JobRequest::new(data.clone()), T).unwrap(), data.as_bytes());
    }
    assert_worker_policies(batched.pid(), SCHED_BATCH);
    assert_worker_policies(preemptive.pid(), SCHED_OTHER);
}

#[test]
fn a_worker_started_under_another_policy_keeps_it_on_every_thread() {
    let dir = TestDir::zmq();
    let _broker = start_broker(&dir, &[]);
    let (plugin, back) = (plugin("echo"), dir.back());
    let mut cmd = std::process::Command::new(WORKER);
    cmd.args(["--plugin", plugin.to_str().unwrap(), "--backend", back.as_str()])
        .env("POWERHOSE_RUNTIME_DIR", dir.path());
    // As `chrt --batch 0` would: the operator's choice, which the worker keeps
    // (not SCHED_IDLE: on a busy machine that would starve the test itself).
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe call.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let param = libc::sched_param { sched_priority: 0 };
            match libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let worker = Proc::spawn_cmd(cmd, &dir, "idle-worker");
    let client = dir.client();
    assert_eq!(client.execute(JobRequest::new("hi"), T).unwrap(), b"hi");
    let threads = thread_policies(worker.pid());
    assert!(threads.len() >= 3, "{threads:?}");
    assert!(threads.iter().all(|(_, p)| *p == SCHED_BATCH), "{threads:?}");
}

#[test]
fn a_cluster_passes_io_cpu_and_preemptive_io_to_its_workers() {
    let dir = TestDir::zmq();
    let _cluster = start_cluster(&dir, "echo", 2, &["--io-cpu", "0", "--preemptive-io"]);
    let client = dir.client();
    assert_eq!(client.execute(JobRequest::new("hi"), T).unwrap(), b"hi");
    let status = client.status(T).unwrap();
    assert_eq!(status.workers.len(), 2);
    for w in &status.workers {
        assert_worker_split(w.pid);
        assert_worker_policies(w.pid, SCHED_OTHER);
    }
}

#[test]
fn an_unusable_cpu_is_a_one_line_error_for_broker_and_worker() {
    let dir = TestDir::zmq();
    let (front, back) = (dir.front(), dir.back());
    let plugin = plugin("echo");
    for (program, args) in [
        (BROKER, vec!["--frontend", front.as_str(), "--backend", back.as_str(), "--io-cpu", "100000"]),
        (WORKER, vec!["--plugin", plugin.to_str().unwrap(), "--backend", back.as_str(), "--io-cpu", "100000"]),
    ] {
        let mut proc = Proc::spawn(program, &args, &dir, "bad");
        let status = proc.wait_exit(T).unwrap_or_else(|| panic!("{program} did not exit"));
        assert!(!status.success());
        let err = proc.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("--io-cpu 100000: not a CPU this process may use"), "{err}");
    }
}

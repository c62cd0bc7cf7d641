//! `--io-cpu`: the broker and the workers' I/O threads sit on one CPU while
//! job threads keep every CPU, read back from /proc of the real processes;
//! and a CPU that cannot be used is a one-line error.

mod common;

use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);

/// `Cpus_allowed_list` of every thread of `pid`: (tid, list).
fn thread_cpus(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let tid: u32 = task.file_name().to_str().unwrap().parse().unwrap();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            out.push((tid, line["Cpus_allowed_list:".len()..].trim().to_string()));
        }
    }
    out
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
    let dir = TestDir::new();
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
}

#[test]
fn a_cluster_passes_io_cpu_to_its_workers() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "echo", 2, &["--io-cpu", "0"]);
    let client = dir.client();
    assert_eq!(client.execute(JobRequest::new("hi"), T).unwrap(), b"hi");
    let status = client.status(T).unwrap();
    assert_eq!(status.workers.len(), 2);
    for w in &status.workers {
        assert_worker_split(w.pid);
    }
}

#[test]
fn an_unusable_cpu_is_a_one_line_error_for_broker_and_worker() {
    let dir = TestDir::new();
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

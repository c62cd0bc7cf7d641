//! Lanes with real processes: a local client's jobs go straight to the
//! workers' lanes (they are answered while the broker is stopped), jobs
//! with a priority go through the broker, a worker that dies or stops is
//! handled as the broker would, stale and hostile peers change nothing,
//! and `--timeout` holds on a lane as through the broker.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(20);

/// The lane files of the cluster in `dir` (its front's link to them).
fn lanes(dir: &TestDir) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.path().join("front.sock.lanes")) else { return Vec::new() };
    // Each lane beside its load file (SERVICE@PID.load).
    let mut lanes: Vec<_> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_none_or(|e| e != "load")).collect();
    lanes.sort();
    lanes
}

fn wait_lanes(dir: &TestDir, n: usize) -> Vec<std::path::PathBuf> {
    wait_until("the workers' lanes", T, || lanes(dir).len() == n);
    lanes(dir)
}

fn sleep_job(ms: u64, file: &std::path::Path) -> JobRequest {
    JobRequest::new("slept")
        .header("action", "sleep")
        .header("ms", ms.to_string())
        .header("file", file.to_str().unwrap())
}

#[test]
fn jobs_go_to_the_lanes_and_those_with_a_priority_to_the_broker() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "test_plugin", 2, &[]);
    let lanes = wait_lanes(&dir, 2);
    for lane in &lanes {
        let name = lane.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("test_plugin@"), "{name}");
    }
    let client = dir.client();
    // A stopped broker answers nothing: every answer below came by a lane.
    let broker = registered_broker_pid(&client);
    let _resume = stop(broker);
    let mut pids = std::collections::HashSet::new();
    for i in 0..40 {
        let data = format!("job {i}");
        assert_eq!(client.execute(data.as_str(), T).unwrap(), data.as_bytes());
        let pid = client.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
        pids.insert(String::from_utf8(pid).unwrap());
    }
    // Four callers at once: both lanes serve.
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let job = || JobRequest::new("x").header("action", "sleep").header("ms", "50");
                    (0..4).for_each(|_| assert_eq!(client.execute(job(), T).unwrap(), b"x"));
                })
            })
            .collect();
        calls.into_iter().for_each(|c| c.join().unwrap());
    });
    assert!(!pids.is_empty());
    // A job with a priority waits for the broker.
    let started = Instant::now();
    let err = client.execute(JobRequest::new("p").priority(9), Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    kill(broker, libc::SIGCONT);
    assert_eq!(client.execute(JobRequest::new("p").priority(9), T).unwrap(), b"p");
    drop(cluster);
}

/// Resumes a stopped process on drop, so a failed test leaves none stopped.
struct Resume(u32);

/// Stops `pid` and waits until it is stopped: `kill` returns before a
/// process running on another CPU has stopped.
fn stop(pid: u32) -> Resume {
    kill(pid, libc::SIGSTOP);
    let resume = Resume(pid);
    wait_until("the process to stop", T, || powerhose::sys::process_state(pid) == Some('T'));
    resume
}

impl Drop for Resume {
    fn drop(&mut self) {
        kill(self.0, libc::SIGCONT);
    }
}

fn registered_broker_pid(client: &powerhose::Client) -> u32 {
    client.ping(T).unwrap()
}

#[test]
fn without_lanes_every_job_goes_through_the_broker() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 1, &["--no-lanes"]);
    let client = dir.client();
    assert_eq!(client.execute("a", T).unwrap(), b"a");
    assert!(lanes(&dir).is_empty(), "{:?}", lanes(&dir));
    let broker = registered_broker_pid(&client);
    let _resume = stop(broker);
    let err = client.execute("b", Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[test]
fn a_worker_killed_on_a_lane_job_is_worker_lost_or_a_retry() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let mut workers: Vec<Proc> = (0..2).map(|i| start_worker(&dir, "test_plugin", &[], &format!("w{i}"))).collect();
    wait_lanes(&dir, 2);
    let client = dir.client();
    for retry in [false, true] {
        let file = dir.path().join(format!("started-{retry}"));
        let mut job = sleep_job(3_000, &file);
        if retry {
            job = job.retry(1);
        }
        std::thread::scope(|s| {
            let call = s.spawn(|| client.execute(job, T));
            wait_until("the job to start", T, || file.exists());
            // The worker running it wrote its pid there.
            let pid: u32 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
            assert!(workers.iter().any(|w| w.pid() == pid), "{pid} is one of ours");
            kill(pid, libc::SIGKILL);
            let result = call.join().unwrap();
            match retry {
                false => {
                    assert!(matches!(&result, Err(Error::WorkerLost(m)) if m.contains(&pid.to_string())), "{result:?}")
                }
                // Sent again through the broker, which gives it to the other worker.
                true => assert_eq!(result.unwrap(), b"slept"),
            }
            workers.retain(|w| w.pid() != pid);
        });
        if !retry {
            workers.push(start_worker(&dir, "test_plugin", &[], "w2"));
            wait_lanes(&dir, 2);
        }
    }
}

#[test]
fn a_stopping_worker_sends_its_callers_to_the_broker_and_none_fails() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "test_plugin", 2, &["--heartbeat-ms", "200"]);
    wait_lanes(&dir, 2);
    let client = dir.client();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|i| {
                let (client, stop, answered) = (&client, &stop, &answered);
                s.spawn(move || {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let data = format!("{i}-{n}");
                        let job = JobRequest::new(data.as_str()).header("action", "sleep").header("ms", "2");
                        match client.execute(job, T) {
                            Ok(out) => assert_eq!(out, data.as_bytes()),
                            Err(e) => panic!("caller {i}, job {n}: {e}"),
                        }
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();
        // Every worker replaced in turn (SIGTERM, then a new one), twice.
        for _ in 0..2 {
            let before = answered.load(std::sync::atomic::Ordering::Relaxed);
            client.reload(T).unwrap();
            wait_until("jobs during the reload", T, || {
                answered.load(std::sync::atomic::Ordering::Relaxed) > before + 50
            });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        callers.into_iter().for_each(|c| c.join().unwrap());
    });
    wait_lanes(&dir, 2);
    drop(cluster);
}

/// The requests one lane has not answered, all clients' (its load word).
fn lane_load(lane: &std::path::Path) -> u64 {
    let bytes = std::fs::read(lane.with_extension("load")).unwrap();
    u64::from_ne_bytes(bytes[..8].try_into().unwrap())
}

/// A broker, a worker with a lane, one without (for the lane's callers when it closes), and the lane.
fn laned_and_other(dir: &TestDir) -> (Proc, Proc, Proc, std::path::PathBuf) {
    let broker = start_broker(dir, &[]);
    let laned = start_worker(dir, "test_plugin", &[], "laned");
    let other = start_worker(dir, "test_plugin", &["--no-lanes"], "other");
    (broker, laned, other, wait_lanes(dir, 1).remove(0))
}

#[test]
fn a_stopping_worker_runs_no_request_waiting_on_its_lane() {
    let dir = TestDir::new();
    let (_broker, mut laned, other, lane) = laned_and_other(&dir);
    let pid_job = || JobRequest::new("").header("action", "pid");
    // A caller with a connection to the lane already (its next request is
    // read at once), and one that will wait to be accepted.
    let (running, connected, queued) = (dir.client(), dir.client(), dir.client());
    assert_eq!(connected.execute(pid_job(), T).unwrap(), laned.pid().to_string().as_bytes());
    let file = dir.path().join("started");
    std::thread::scope(|s| {
        let first = s.spawn(|| running.execute(sleep_job(600, &file), T));
        wait_until("the lane's job to start", T, || file.exists());
        let waiting: Vec<_> = [&connected, &queued].map(|c| s.spawn(move || c.execute(pid_job(), T))).into();
        wait_until("both requests to wait on the lane", T, || lane_load(&lane) == 3);
        laned.signal(libc::SIGTERM);
        assert_eq!(first.join().unwrap().unwrap(), b"slept", "the job running finishes");
        // The two waiting were not run by the stopping worker: they went
        // to the broker, which gave them to the other.
        for call in waiting {
            let ran_on = String::from_utf8(call.join().unwrap().unwrap()).unwrap();
            assert_eq!(ran_on, other.pid().to_string(), "run by the other worker, not {}", laned.pid());
        }
    });
    assert_eq!(laned.wait_exit(T).expect("exits").code(), Some(0));
}

#[test]
fn a_stop_between_two_jobs_read_together_runs_only_the_first() {
    let dir = TestDir::new();
    let (_broker, mut laned, other, lane) = laned_and_other(&dir);
    // Two callers with a connection to the lane each, accepted already.
    let callers = [dir.client(), dir.client()];
    let pid_job = || JobRequest::new("").header("action", "pid");
    callers.iter().for_each(|c| assert_eq!(c.execute(pid_job(), T).unwrap(), laned.pid().to_string().as_bytes()));
    // Both requests come while the worker is stopped: its lane reads them
    // in one wake-up, and runs one while the other waits behind it.
    let files = [dir.path().join("a"), dir.path().join("b")];
    laned.signal(libc::SIGSTOP);
    std::thread::scope(|s| {
        let calls: Vec<_> =
            callers.iter().zip(&files).map(|(c, f)| s.spawn(move || c.execute(sleep_job(600, f), T))).collect();
        wait_until("both requests to wait on the lane", T, || lane_load(&lane) == 2);
        laned.signal(libc::SIGCONT);
        wait_until("one of them to start", T, || files.iter().any(|f| f.exists()));
        laned.signal(libc::SIGTERM);
        for call in calls {
            assert_eq!(call.join().unwrap().unwrap(), b"slept");
        }
    });
    // The first ran on the lane; the other, not begun at the stop, went to the other worker.
    let mut ran_on: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    ran_on.sort();
    let mut want = [laned.pid().to_string(), other.pid().to_string()];
    want.sort();
    assert_eq!(ran_on, want, "one on each worker (laned {}, other {})", laned.pid(), other.pid());
    assert_eq!(laned.wait_exit(T).expect("exits").code(), Some(0));
}

#[test]
fn stale_and_hostile_peers_change_nothing() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let lane = wait_lanes(&dir, 1).remove(0);
    let lanes_dir = lane.parent().unwrap().to_path_buf();
    // A lane that refuses (its listener gone) and one that is no socket:
    // named after a live process (this one), so no worker sweeps them.
    let me = std::process::id();
    drop(std::os::unix::net::UnixListener::bind(lanes_dir.join(format!("test_plugin@{me}"))).unwrap());
    std::fs::write(lanes_dir.join(format!("test_plugin@{}", me + 1)), b"not a socket").unwrap();
    std::fs::write(lanes_dir.join("junk"), b"no lane name").unwrap();
    let client = dir.client();
    for i in 0..20 {
        assert_eq!(client.execute(format!("{i}"), T).unwrap(), format!("{i}").as_bytes());
    }
    // Bytes that are no frames, and a frame that is no command: cut off.
    let mut no_command = b"PHLOCAL\x01".to_vec();
    powerhose::local::frame::encode_into(&mut no_command, &[b""]);
    powerhose::local::frame::encode_into(&mut no_command, &[b"abc"]);
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &no_command] {
        let mut s = UnixStream::connect(&lane).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(junk).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        // Until the lane closes: the end of the stream, or a reset.
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.kind()),
            }
        };
        let timed_out = matches!(end, Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(!timed_out, "the lane did not close the connection");
        assert_eq!(got, b"PHLOCAL\x01", "the lane greets, then closes, answering nothing");
    }
    // Another user cannot reach the lanes: the directory is the owner's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lanes_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let lane_mode = std::fs::metadata(&lane).unwrap().permissions().mode();
    assert_eq!(lane_mode & 0o777, 0o600, "{lane_mode:o}");
    assert_eq!(client.execute("still", T).unwrap(), b"still");
}

#[test]
fn a_lane_job_past_timeout_is_answered_timeout_and_its_stack_logged() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let worker = start_worker(&dir, "test_plugin", &["--timeout", "0.3", "--hard-timeout", "30"], "w");
    wait_lanes(&dir, 1);
    let client = dir.client();
    let started = Instant::now();
    let job = JobRequest::new("late").header("action", "sleep").header("ms", "1500");
    let err = client.execute(job, T).unwrap_err();
    assert!(matches!(&err, Error::JobTimedOut { pid, .. } if *pid == worker.pid()), "{err:?}");
    // Answered at the timeout, not when the handler returns.
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    wait_until("the stack in the log", T, || worker.stderr().contains("a lane's job timed out after 300ms"));
    assert!(worker.stderr().contains("test_plugin::nap"), "{}", worker.stderr());
    // The worker goes on: the next job is answered on the same lane.
    assert_eq!(client.execute("next", T).unwrap(), b"next");
}

#[test]
fn the_broker_counts_the_lanes_jobs_from_the_workers_heartbeats() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 2, &["--heartbeat-ms", "100"]);
    wait_lanes(&dir, 2);
    let client = dir.client();
    for i in 0..30 {
        assert_eq!(client.execute(format!("{i}"), T).unwrap(), format!("{i}").as_bytes());
    }
    // Reported with the next heartbeats, not counted among the broker's own.
    wait_until("the lanes' jobs in the status", T, || client.status(T).unwrap().counters.lane_jobs == 30);
    let counters = client.status(T).unwrap().counters;
    assert_eq!(counters.ok, 0, "{counters:?}");
    let front = dir.front();
    let out = std::process::Command::new(BROKER).args(["--status", "--frontend", &front]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("on the workers' lanes 30"), "{table}");
}

/// Listens on `path` as uid 65534 (bound as root, then the user changed
/// before `listen`, whose credentials a peer sees) and prints what each
/// connection sent.
const PLANTED: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.setgid(65534)
os.setuid(65534)
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    got = b""
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += b
    except OSError:
        pass
    print("sent " + repr(got), flush=True)
    c.close()
"#;

#[test]
fn a_lane_planted_by_another_user_gets_no_job() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let lanes_dir = wait_lanes(&dir, 1).remove(0).parent().unwrap().to_path_buf();
    // Named after a live process (this one): no worker sweeps it away.
    let planted = lanes_dir.join(format!("test_plugin@{}", std::process::id()));
    let mut stranger = Proc::spawn("python3", &["-c", PLANTED, planted.to_str().unwrap()], &dir, "stranger");
    stranger.wait_line("listening", T);
    let client = dir.client();
    for i in 0..20 {
        let data = format!("secret-{i}");
        assert_eq!(client.execute(data.as_str(), T).unwrap(), data.as_bytes());
    }
    // It was dialled (the two lanes are taken in turn), then left at once.
    let line = stranger.wait_line("sent ", T);
    assert!(!line.contains("secret"), "{line}");
}

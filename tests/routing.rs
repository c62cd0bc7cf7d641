//! Routing with real processes: idle dispatch, dead workers, full queues,
//! deadlines, broker restarts, services, and one client shared by many threads.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use powerhose::{Client, Error, JobRequest, TimeoutPolicy};

const T: Duration = Duration::from_secs(10);
/// Short heartbeats so liveness tests run fast: 100 ms × 3.
const HB: [&str; 4] = ["--heartbeat-ms", "100", "--liveness", "3"];

/// A job that sleeps `ms` in the test plugin and creates `file` when it starts.
fn sleeper(ms: u64, file: &std::path::Path) -> JobRequest {
    JobRequest::new("slept")
        .header("action", "sleep")
        .header("ms", ms.to_string())
        .header("file", file.to_str().unwrap())
}

fn started_pid(file: &std::path::Path) -> u32 {
    wait_until("the job to start", T, || std::fs::read_to_string(file).is_ok_and(|s| !s.is_empty()));
    std::fs::read_to_string(file).unwrap().parse().unwrap()
}

type Call = std::thread::JoinHandle<Result<Vec<u8>, Error>>;

/// Two test_plugin workers, a shared client, and a call on another thread
/// whose job sleeps `ms` on one worker (running when this returns):
/// (cluster, client, the call, its worker's pid).
fn cluster_with_a_slow_call(dir: &TestDir, ms: u64) -> (Proc, Arc<Client>, Call, u32) {
    let cluster = start_cluster(dir, "test_plugin", 2, &[]);
    let client = Arc::new(dir.client());
    let started = dir.path().join("started");
    let (c, job) = (client.clone(), sleeper(ms, &started));
    let slow = std::thread::spawn(move || c.execute(job, T));
    let pid = started_pid(&started);
    (cluster, client, slow, pid)
}

#[test]
fn a_job_goes_to_the_idle_worker_not_behind_a_busy_one() {
    let dir = TestDir::new();
    let (_cluster, client, slow, busy_pid) = cluster_with_a_slow_call(&dir, 2000);
    for _ in 0..5 {
        let t = Instant::now();
        let pid = client.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
        assert!(t.elapsed() < Duration::from_millis(500), "answered in {:?}", t.elapsed());
        assert_ne!(String::from_utf8(pid).unwrap(), busy_pid.to_string(), "never the busy worker");
    }
    assert!(!slow.is_finished(), "the slow job is still running");
    assert_eq!(slow.join().unwrap().unwrap(), b"slept");
}

both_transports! {
    fn a_worker_killed_mid_job_is_noticed_and_its_job_answered_or_retried(t) {
    let dir = TestDir::on(t);
    let _broker = start_broker(&dir, &HB);
    let _workers: Vec<Proc> = (0..3).map(|i| start_worker(&dir, "test_plugin", &HB, &format!("w{i}"))).collect();
    let client = Arc::new(dir.client());

    // Without retry: "worker lost", within a few heartbeat intervals.
    let file = dir.path().join("first");
    let (c, job) = (client.clone(), sleeper(20_000, &file));
    let call = std::thread::spawn(move || c.execute(job, Duration::from_secs(30)));
    let pid = started_pid(&file);
    let killed_at = Instant::now();
    kill(pid, libc::SIGKILL);
    let result = call.join().unwrap();
    let noticed = killed_at.elapsed();
    assert!(matches!(result, Err(Error::WorkerLost(_))), "{result:?}");
    assert!(noticed < Duration::from_millis(1500), "noticed after {noticed:?} (3 × 100 ms heartbeats)");

    // With a retry header: the job is re-sent and succeeds on another worker.
    let file = dir.path().join("second");
    let (c, job) = (client.clone(), sleeper(300, &file).retry(1));
    let call = std::thread::spawn(move || c.execute(job, Duration::from_secs(30)));
    let pid = started_pid(&file);
    std::fs::remove_file(&file).unwrap();
    kill(pid, libc::SIGKILL);
    assert_eq!(call.join().unwrap().unwrap(), b"slept");
    let rerun_pid: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    assert_ne!(rerun_pid, pid, "re-run by another worker");
    let status = client.status(T).unwrap();
    // Over the local transport both ran on lanes: the client answered the
    // first WORKER_LOST itself and sent the second to the broker, which
    // ran it once more: the broker lost nothing and retried nothing.
    let expected = if t == Transport::Zmq { (1, 1) } else { (0, 0) };
    assert_eq!((status.counters.lost, status.counters.retried), expected);
    assert_eq!(status.workers.len(), 1);
    }
}

both_transports! {
    fn a_full_queue_answers_busy_at_once_and_an_expired_queued_job_never_runs(t) {
    let dir = TestDir::on(t);
    let _broker = start_broker(&dir, &["--max-queue", "1"]);
    // No lane: the jobs queue at the broker, the subject here.
    let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = Arc::new(dir.client());
    let started = dir.path().join("started");
    let (c, job) = (client.clone(), sleeper(1500, &started));
    let slow = std::thread::spawn(move || c.execute(job, T));
    started_pid(&started);

    // Queued behind the slow job with a deadline that passes while it waits.
    let marks = dir.path().join("marks");
    let expiring = JobRequest::new("ran").header("action", "mark").header("file", marks.to_str().unwrap());
    let c = client.clone();
    let queued = std::thread::spawn(move || c.execute(expiring, Duration::from_millis(400)));
    wait_until("the job to be queued", T, || client.status(T).unwrap().services[0].queued == 1);

    let t = Instant::now();
    let result = client.execute("one too many", T);
    assert!(matches!(result, Err(Error::Busy(_))), "{result:?}");
    assert!(t.elapsed() < Duration::from_millis(200), "busy answered in {:?}", t.elapsed());

    assert!(matches!(queued.join().unwrap(), Err(e) if e.is_timeout()));
    assert_eq!(slow.join().unwrap().unwrap(), b"slept");
    // The worker is free now; the expired job must never have run.
    assert_eq!(client.execute("after", T).unwrap(), b"after");
    assert!(!marks.exists(), "the expired job ran");
    let counters = client.status(T).unwrap().counters;
    assert_eq!((counters.busy, counters.timeouts, counters.ok), (1, 1, 2));
    }
}

both_transports! {
    fn workers_rejoin_a_restarted_broker_by_themselves(t) {
    let dir = TestDir::on(t);
    let mut broker = start_broker(&dir, &HB);
    let workers: Vec<Proc> = (0..2).map(|i| start_worker(&dir, "echo", &HB, &format!("w{i}"))).collect();
    let client = dir.client();
    assert_eq!(client.execute("before", T).unwrap(), b"before");
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    // The SIGKILLed broker left its socket file; the new one starts anyway.
    let _broker = start_broker(&dir, &HB);
    wait_until("both workers to re-register", T, || client.workers("", T).unwrap() == 2);
    assert_eq!(client.execute("after", T).unwrap(), b"after");
    for w in &workers {
        assert!(alive(w.pid()), "no worker was restarted");
    }
    }
}

both_transports! {
    fn a_worker_can_exit_instead_when_the_broker_is_lost(t) {
    let dir = TestDir::on(t);
    let mut broker = start_broker(&dir, &HB);
    let mut args = HB.to_vec();
    args.push("--exit-on-broker-loss");
    let mut worker = start_worker(&dir, "echo", &args, "worker");
    broker.child.kill().unwrap();
    let status = worker.wait_exit(Duration::from_secs(5)).expect("the worker exits");
    assert_eq!(status.code(), Some(1));
    assert!(worker.stderr().contains("broker silent"), "{}", worker.stderr());
    }
}

#[test]
fn two_services_behind_one_broker() {
    let dir = TestDir::zmq();
    let _broker = start_broker(&dir, &[]);
    let _echo = start_worker(&dir, "echo", &[], "echo");
    let _test = start_worker(&dir, "test_plugin", &["--service", "tools"], "tools");
    let client = dir.client();
    assert_eq!(client.execute(JobRequest::new("e").service("echo"), T).unwrap(), b"e");
    let job = JobRequest::new("boom").service("tools").header("action", "error");
    assert!(matches!(client.execute(job, T), Err(Error::Handler { message, .. }) if message == "boom"));
    assert_eq!((client.workers("echo", T).unwrap(), client.workers("tools", T).unwrap()), (1, 1));
    assert_eq!(client.workers("nope", T).unwrap(), 0);

    let t = Instant::now();
    assert!(matches!(client.execute(JobRequest::new("x").service("nope"), T), Err(Error::UnknownService(_))));
    // No service named: the default, here the first to register (echo).
    assert_eq!(client.execute("which one?", T).unwrap(), b"which one?");
    assert!(t.elapsed() < Duration::from_millis(300));

    // Powerhose-format clients pick the service with a header.
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(10_000).unwrap();
    req.connect(&dir.front()).unwrap();
    req.send(&b"service:echo:::legacy"[..], 0).unwrap();
    let reply = String::from_utf8(req.recv_bytes(0).unwrap()).unwrap();
    assert!(reply.ends_with(":OK:legacy"), "{reply}");
}

both_transports! {
    fn sixty_four_threads_share_one_client_and_get_their_own_replies(t) {
    let dir = TestDir::on(t);
    let _cluster = start_cluster(&dir, "echo", 2, &[]);
    let client = Arc::new(dir.client());
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let jobs = 10_000 / 64 + usize::from(t < 10_000 % 64);
                for j in 0..jobs {
                    let data = format!("thread {t} job {j}");
                    assert_eq!(client.execute(data.clone(), Duration::from_secs(60)).unwrap(), data.as_bytes());
                }
                jobs
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 10_000);

    // A batch of 1,000 in flight at once, results in order.
    let results = client.execute_many((0..1000).map(|i| format!("batch {i}")), Duration::from_secs(60));
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("batch {i}").into_bytes());
    }
    // Over the local transport the single jobs ran on the lanes: the
    // broker counts them as the workers' heartbeats report them.
    wait_until("every job counted", T, || {
        let c = client.status(T).unwrap().counters;
        c.ok + c.lane_jobs == 11_000
    });
    }
}

#[test]
fn powerhose_timeout_policy_accepts_one_late_answer_in_a_row() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let client = dir.client();
    let policy =
        TimeoutPolicy { timeout: Duration::from_millis(100), max_overflow: Duration::from_millis(2000), overflows: 1 };
    let slow = || JobRequest::new("late").header("action", "sleep").header("ms", "250");
    assert_eq!(client.execute_with_policy(slow(), &policy).unwrap(), b"late");
    assert!(matches!(client.execute_with_policy(slow(), &policy), Err(Error::Timeout(_))));
    assert_eq!(client.execute_with_policy("fast", &policy).unwrap(), b"fast");
    assert_eq!(client.execute_with_policy(slow(), &policy).unwrap(), b"late", "an on-time answer resets the count");
}

#[test]
fn status_reports_workers_services_and_latency() {
    let dir = TestDir::new();
    // No lane: every job through the broker, which keeps these figures.
    let cluster = start_cluster(&dir, "echo", 2, &["--no-lanes"]);
    let client: Client = dir.client();
    for i in 0..20 {
        client.execute(format!("{i}"), T).unwrap();
    }
    let status = client.status(T).unwrap();
    assert_eq!(status.pid, cluster.pid());
    assert_eq!(status.services.len(), 1);
    assert_eq!((status.services[0].name.as_str(), status.services[0].workers), ("echo", 2));
    assert_eq!(status.workers.iter().map(|w| w.jobs_done).sum::<u64>(), 20);
    assert!(status.workers.iter().all(|w| w.plugin_version == "0.1.0" && w.state == "idle"));
    assert_eq!(status.latency_ms.count, 20);
    assert!(status.latency_ms.p50 > 0.0 && status.latency_ms.p50 <= status.latency_ms.max);
}

both_transports! {
    fn a_pipelined_stream_keeps_a_window_in_flight_and_reports_every_job(t) {
    let dir = TestDir::on(t);
    let _cluster = start_cluster(&dir, "echo", 2, &[]);
    let client = Arc::new(dir.client());
    // Another thread's calls keep working while one thread pipelines.
    let c = client.clone();
    let other = std::thread::spawn(move || {
        (0..200).all(|i| c.execute(format!("side {i}"), T).unwrap() == format!("side {i}").as_bytes())
    });
    let mut seen = vec![false; 20_000];
    client
        .pipeline((0..20_000).map(|i| format!("job {i}")), 500, T, |i, r| {
            assert_eq!(r.unwrap(), format!("job {i}").into_bytes());
            assert!(!std::mem::replace(&mut seen[i], true), "job {i} reported twice");
        })
        .unwrap();
    assert!(seen.iter().all(|s| *s));
    assert!(other.join().unwrap());
    }
}

#[test]
fn a_pipeline_is_not_held_back_by_a_slow_call_on_the_same_client() {
    let dir = TestDir::new();
    // The slow call leads the shared socket while its job sleeps.
    let (_cluster, client, slow, _) = cluster_with_a_slow_call(&dir, 5000);
    let mut answered = 0;
    client
        .pipeline((0..200).map(|i| format!("job {i}")), 50, T, |i, r| {
            assert_eq!(r.unwrap(), format!("job {i}").into_bytes());
            answered += 1;
        })
        .unwrap();
    assert_eq!(answered, 200);
    assert!(!slow.is_finished(), "the pipeline waited for the slow call to end");
    // The slow call's reply reaches it through the pipeline's socket or its own.
    assert_eq!(slow.join().unwrap().unwrap(), b"slept");
    assert_eq!(client.execute("after", T).unwrap(), b"after");
}

/// As a stranger did: a fake worker written from PROTOCOL.md registers a new
/// service and leaves. Jobs that name no service kept going to the broker's
/// one service until then; they still do (before: "several services are
/// served; name one" for every such job, until the broker restarted).
#[test]
fn a_service_that_comes_and_goes_does_not_reshape_where_unnamed_jobs_go() {
    use powerhose::protocol::{Command, CommandFrame, Registration};
    let dir = TestDir::zmq();
    let _broker = start_broker(&dir, &[]);
    let _echo = start_worker(&dir, "echo", &[], "echo");
    let client = dir.client();
    assert_eq!(client.execute("before", T).unwrap(), b"before");
    let ctx = zmq::Context::new();
    let fake = ctx.socket(zmq::DEALER).unwrap();
    fake.set_identity(b"stranger").unwrap();
    fake.connect(&dir.back()).unwrap();
    let reg = Registration {
        service: "fake".into(),
        pid: 1,
        host: "elsewhere".into(),
        plugin: "fake".into(),
        plugin_version: "0".into(),
        coalesce_us: 0,
        inline: false,
    };
    fake.send(CommandFrame::new(Command::Ready, 0, 0, &reg.encode()).encode(), 0).unwrap();
    wait_until("the fake service", T, || client.workers("fake", T).unwrap() == 1);
    fake.send(CommandFrame::new(Command::Disconnect, 0, 0, b"").encode(), 0).unwrap();
    wait_until("the fake worker to leave", T, || client.workers("fake", T).unwrap() == 0);
    assert_eq!(client.execute("after", T).unwrap(), b"after");
    // A broker told its default serves unnamed jobs there, whoever came first.
    let other = TestDir::new();
    let _broker = start_broker(&other, &["--default-service", "tools"]);
    let _echo = start_worker(&other, "echo", &[], "echo");
    let _tools = start_worker(&other, "echo", &["--service", "tools"], "tools");
    let c = other.client();
    assert_eq!(c.execute("x", T).unwrap(), b"x");
    let served_by_tools = c.status(T).unwrap().workers.iter().any(|w| w.service == "tools" && w.jobs_done == 1);
    assert!(served_by_tools, "the job went to the default service");
}

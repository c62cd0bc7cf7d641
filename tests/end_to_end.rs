//! Jobs answered end to end through real broker, worker and client processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(10);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn crypto_jobs_through_a_powerhose_cluster() {
    let dir = TestDir::new();
    // RFC 8032 test 1 key and RFC 4231 test case 2 key, so results are known.
    let params =
        r#"{"ed25519_seed":"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60","hmac_key":"Jefe"}"#;
    let plugin = plugin("crypto_job");
    let (front, back) = (dir.front(), dir.back());
    // `--numprocesses` is Powerhose's name for `--workers`.
    let args = [
        "--plugin",
        plugin.to_str().unwrap(),
        "--numprocesses",
        "2",
        "--params",
        params,
        "--frontend",
        &front,
        "--backend",
        &back,
    ];
    let mut cluster = Proc::spawn(POWERHOSE, &args, &dir, "powerhose");
    cluster.wait_line("powerhose ready: 2 workers", Duration::from_secs(60));
    let client = dir.client();

    let sig = client.execute(JobRequest::new(b"".to_vec()).header("op", "sign"), T).unwrap();
    assert_eq!(
        hex(&sig),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    let mac = client.execute(JobRequest::new("what do ya want for nothing?").header("op", "hmac"), T).unwrap();
    assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    let message = b"token payload";
    let sig = client.execute(JobRequest::new(message.to_vec()).header("op", "sign"), T).unwrap();
    let mut signed = sig.clone();
    signed.extend_from_slice(message);
    assert_eq!(client.execute(JobRequest::new(signed.clone()).header("op", "verify"), T).unwrap(), b"valid");
    signed[70] ^= 1;
    match client.execute(JobRequest::new(signed).header("op", "verify"), T) {
        Err(Error::Handler { message, pid }) => {
            assert!(message.contains("does not match"), "{message}");
            assert!(pid > 0);
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
}

#[test]
fn echo_through_separate_broker_and_worker_processes_over_ipc_and_tcp() {
    for tcp in [false, true] {
        let dir = TestDir::new();
        let (front, back) =
            if tcp { (common::ports::free_tcp(), common::ports::free_tcp()) } else { (dir.front(), dir.back()) };
        let broker = Proc::spawn(BROKER, &["--frontend", &front, "--backend", &back], &dir, "broker");
        let client = powerhose::Client::connect(&front).unwrap();
        assert_eq!(client.ping(T).unwrap(), broker.pid());
        let plugin = plugin("echo");
        let mut worker =
            Proc::spawn(WORKER, &["--plugin", plugin.to_str().unwrap(), "--backend", &back], &dir, "worker");
        wait_until("worker registration", T, || client.workers("echo", T).unwrap() == 1);
        let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        assert_eq!(client.execute(payload.clone(), T).unwrap(), payload);
        assert_eq!(client.execute(JobRequest::new("named").service("echo"), T).unwrap(), b"named");
        // Jobs the caller keeps and sends again (framed in one frame, and
        // in two past the inline limit).
        for kept in [JobRequest::new("kept").service("echo"), JobRequest::new(payload.clone())] {
            for _ in 0..2 {
                assert_eq!(client.execute_ref(&kept, T).unwrap(), kept.data);
            }
        }
        // SIGTERM: the lone worker unregisters and exits 0.
        worker.signal(libc::SIGTERM);
        assert!(worker.wait_exit(T).expect("worker exits").success(), "{}", worker.stderr());
        wait_until("worker to unregister", T, || client.workers("echo", T).unwrap() == 0);
    }
}

#[test]
fn a_panicking_handler_gets_an_error_reply_and_the_same_worker_answers_next() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let client = dir.client();
    let pid = |c: &powerhose::Client| c.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
    let before = pid(&client);
    match client.execute(JobRequest::new("").header("action", "panic"), T) {
        Err(Error::Handler { message, .. }) => {
            assert!(message.contains("handler panicked: test plugin panics on request"), "{message}")
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    match client.execute(JobRequest::new("it broke").header("action", "error"), T) {
        Err(Error::Handler { message, .. }) => assert_eq!(message, "it broke"),
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(pid(&client), before, "the same worker process answers after the panic");
}

#[test]
fn client_errors_are_typed_and_bounded() {
    let dir = TestDir::new();
    let client = dir.client();
    // Nobody listening: unreachable, within the timeout.
    let start = Instant::now();
    match client.execute("x", Duration::from_millis(300)) {
        Err(Error::BrokerUnreachable { .. }) => {}
        other => panic!("expected BrokerUnreachable, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));

    // A broker with no worker: "no worker" after the grace period.
    let _broker = start_broker(&dir, &["--no-worker-grace-ms", "200"]);
    match client.execute("x", T) {
        Err(Error::NoWorker(_)) => {}
        other => panic!("expected NoWorker, got {other:?}"),
    }

    // A job slower than the client's timeout: Timeout, and the late answer
    // does not confuse the next call.
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    let start = Instant::now();
    match client
        .execute(JobRequest::new("slow").header("action", "sleep").header("ms", "700"), Duration::from_millis(200))
    {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(client.execute("next", T).unwrap(), b"next");
}

both_transports! {
    /// Over ZeroMQ the caller waits out its timeout; over the local
    /// transport the closed connection answers `BrokerLost` at once.
    fn a_client_is_not_stuck_when_the_broker_dies_mid_request(t) {
    let dir = TestDir::on(t);
    let mut broker = start_broker(&dir, &[]);
    // No lane: the job is in the broker's hands (a lane's caller does not
    // need the broker: see tests/lanes.rs).
    let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = std::sync::Arc::new(dir.client());
    let c = client.clone();
    let started = dir.path().join("started");
    let file = started.to_str().unwrap().to_string();
    let call = std::thread::spawn(move || {
        let start = Instant::now();
        let job = JobRequest::new("x").header("action", "sleep").header("ms", "3000").header("file", file);
        (c.execute(job, Duration::from_millis(1500)), start.elapsed())
    });
    // Kill the broker while the job is in the worker.
    wait_until("the job to start in the worker", T, || started.exists());
    broker.child.kill().unwrap();
    let (result, took) = call.join().unwrap();
    let expected = match t {
        Transport::Zmq => matches!(result, Err(Error::Timeout(_)) | Err(Error::BrokerUnreachable { .. })),
        Transport::Local => matches!(result, Err(Error::BrokerLost { .. })),
    };
    assert!(expected, "{result:?}");
    assert!(took < Duration::from_millis(2500), "bounded by the timeout, took {took:?}");
}
}

both_transports! {
    /// A batch whose answers outgrow what the broker keeps for a client that
    /// is not reading (64 MiB over the local transport) is read while it is
    /// still being sent: every answer comes back.
    fn a_batch_larger_than_the_reply_buffers_comes_back_whole(t) {
        let dir = TestDir::on(t);
        let _cluster = start_cluster(&dir, "echo", 2, &[]);
        let client = dir.client();
        let jobs: Vec<Vec<u8>> = (0..600u32).map(|i| vec![(i % 251) as u8; 128 << 10]).collect();
        let results = client.execute_many(jobs.clone(), Duration::from_secs(60));
        assert_eq!(results.len(), jobs.len());
        for (i, (result, job)) in results.into_iter().zip(&jobs).enumerate() {
            assert_eq!(result.unwrap_or_else(|e| panic!("job {i}: {e}")), *job, "job {i}");
        }
    }
}

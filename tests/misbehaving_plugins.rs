//! Each way a plugin can misbehave has a defined outcome, and the pool is
//! healthy afterwards (real workers, the test plugin's actions).

mod common;

use std::time::{Duration, Instant};

use common::*;
use powerhose::{Client, Error, JobRequest};

const T: Duration = Duration::from_secs(10);

fn cluster(dir: &TestDir, extra: &[&str]) -> Proc {
    let mut args = vec!["--timeout", "1", "--hard-timeout", "2"];
    args.extend_from_slice(extra);
    start_cluster(dir, "test_plugin", 2, &args)
}

fn act(action: &str) -> JobRequest {
    JobRequest::new("payload").header("action", action)
}

/// Two workers registered and a plain job answered.
fn assert_healthy(_dir: &TestDir, client: &Client) {
    wait_until("two workers again", T, || client.workers("", T).unwrap() == 2);
    for _ in 0..4 {
        assert_eq!(client.execute("still fine", T).unwrap(), b"still fine");
    }
}

#[test]
fn an_error_is_a_handler_error() {
    let dir = TestDir::new();
    let _c = cluster(&dir, &[]);
    let client = dir.client();
    assert!(matches!(client.execute(act("error"), T), Err(Error::Handler { message, .. }) if message == "payload"));
    assert_healthy(&dir, &client);
}

#[test]
fn a_panic_is_a_handler_error_and_the_worker_lives_on() {
    let dir = TestDir::new();
    let c = cluster(&dir, &[]);
    let workers = children(c.pid());
    let client = dir.client();
    assert!(
        matches!(client.execute(act("panic"), T), Err(Error::Handler { message, .. }) if message.contains("handler panicked"))
    );
    assert_healthy(&dir, &client);
    assert_eq!(children(c.pid()), workers, "no worker was replaced");
}

#[test]
fn abort_and_segfault_lose_the_worker_answer_at_once_and_it_is_replaced() {
    let dir = TestDir::new();
    let _c = cluster(&dir, &[]);
    let client = dir.client();
    for action in ["abort", "segfault"] {
        let t = Instant::now();
        match client.execute(act(action), T) {
            Err(Error::WorkerLost(_)) => {}
            other => panic!("{action}: expected WorkerLost, got {other:?}"),
        }
        // The supervisor tells the broker at once: no waiting for missed heartbeats (3 s).
        assert!(t.elapsed() < Duration::from_secs(2), "{action}: answered after {:?}", t.elapsed());
        assert_healthy(&dir, &client);
    }
}

#[test]
fn a_hang_times_out_and_the_worker_is_replaced_after_the_hard_limit() {
    let dir = TestDir::new();
    let c = cluster(&dir, &[]);
    let before = children(c.pid());
    let client = dir.client();
    let t = Instant::now();
    assert!(matches!(client.execute(act("hang"), T), Err(Error::JobTimedOut { .. })));
    assert!(t.elapsed() < Duration::from_millis(1800), "timed out after {:?}", t.elapsed());
    // Meanwhile the other worker serves.
    assert_eq!(client.execute("meanwhile", T).unwrap(), b"meanwhile");
    wait_until("the stuck worker to be replaced", T, || {
        let now = children(c.pid());
        now.len() == 2 && now != before
    });
    assert_healthy(&dir, &client);
}

#[test]
fn huge_output_is_delivered_up_to_the_limit_and_refused_beyond() {
    let dir = TestDir::new();
    let _c = cluster(&dir, &["--max-message-bytes", "4194304"]);
    let client = dir.client();
    let big = client.execute(act("large").header("bytes", (3 << 20).to_string()), T).unwrap();
    assert_eq!(big.len(), 3 << 20);
    match client.execute(act("large").header("bytes", (5 << 20).to_string()), T) {
        Err(Error::Handler { message, .. }) => {
            assert!(message.contains("exceeds the maximum message size"), "{message}")
        }
        other => panic!("expected a size error, got {other:?}"),
    }
    // A client sending more than the limit is answered so by the broker.
    let big_client = dir.client();
    match big_client.execute(vec![0u8; 5 << 20], T) {
        Err(Error::BadRequest(m)) => assert!(m.contains("over the broker's --max-message-bytes 4194304"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Past twice the limit ZeroMQ disconnects it unread: its own wait ends it.
    let r = big_client.execute(vec![0u8; 9 << 20], Duration::from_millis(1500));
    assert!(r.as_ref().is_err_and(|e| e.is_timeout() || matches!(e, Error::BrokerUnreachable { .. })), "{r:?}");
    assert_healthy(&dir, &client);
}

#[test]
fn slow_init_delays_the_start_and_then_serves() {
    let dir = TestDir::new();
    let t = Instant::now();
    let _c = cluster(&dir, &["--params", r#"{"init_sleep_ms": 1200}"#]);
    assert!(t.elapsed() >= Duration::from_millis(1200), "ready only once init is done");
    assert_healthy(&dir, &dir.client());
}

#[test]
fn init_failure_stops_the_start_with_one_line() {
    let dir = TestDir::new();
    let p = plugin("test_plugin");
    let (front, back) = (dir.front(), dir.back());
    let args = [
        "--plugin",
        p.to_str().unwrap(),
        "--workers",
        "2",
        "--frontend",
        &front,
        "--backend",
        &back,
        "--params",
        r#"{"fail_init":"no key"}"#,
    ];
    let mut proc = Proc::spawn(POWERHOSE, &args, &dir, "powerhose");
    let status = proc.wait_exit(T).expect("exits");
    assert_eq!(status.code(), Some(3));
    assert!(proc.stderr().contains("failed to initialise: no key"), "{}", proc.stderr());
}

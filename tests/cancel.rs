//! Cancelling a job with real processes: a running job's handler sees the
//! cancel and the worker is free at once for the next job; a waiting job
//! never runs; the broker answers `CANCELLED` whatever the transport, and
//! counts it.

mod common;

use std::time::{Duration, Instant};

use common::raw::RawPeer;
use common::*;
use powerhose::protocol::{encode_headers, encode_request_tail, Command, CommandFrame, Status};
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(20);

/// A job that runs until it is cancelled (a minute at most), writing
/// `started` when it starts and what it saw to `outcome`.
fn spin(dir: &TestDir) -> (JobRequest, std::path::PathBuf, std::path::PathBuf) {
    let (started, outcome) = (dir.path().join("started"), dir.path().join("outcome"));
    let job = JobRequest::new("spin")
        .header("action", "spin")
        .header("ms", "60000")
        .header("file", started.to_str().unwrap())
        .header("outcome", outcome.to_str().unwrap());
    (job, started, outcome)
}

both_transports! {
    /// Over ZeroMQ the cancel goes out on the connection the job went on.
    fn a_running_job_is_cancelled_its_handler_sees_it_and_the_worker_serves_the_next_at_once(t) {
    let dir = TestDir::on(t);
    let _broker = start_broker(&dir, &[]);
    // No lane: the next job, too, goes through the broker, which counts it.
    let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = dir.client();
    let (job, started, outcome) = spin(&dir);
    let handle = client.submit(job, T);
    wait_until("the job to start", T, || started.exists());
    let asked = Instant::now();
    assert!(handle.cancel(), "cancelled before its answer");
    assert!(!handle.cancel(), "once only");
    assert!(matches!(handle.wait(), Err(Error::Cancelled)));
    assert!(asked.elapsed() < Duration::from_secs(1), "the caller waits for nothing: {:?}", asked.elapsed());
    wait_until("the handler to see the cancel", T, || {
        std::fs::read_to_string(&outcome).is_ok_and(|s| s == "cancelled")
    });
    // The one worker is free: the next job is answered.
    assert_eq!(client.execute(JobRequest::new("next").header("action", "echo"), T).unwrap(), b"next");
    let counters = client.status(T).unwrap().counters;
    assert_eq!((counters.cancelled, counters.cancelled_running), (1, 1));
    assert_eq!(counters.ok, 1, "the cancelled job's answer was dropped, not counted");
}
}

#[test]
fn a_waiting_job_is_cancelled_and_never_runs() {
    let dir = TestDir::on(Transport::Local);
    let _broker = start_broker(&dir, &["--prefetch-budget-ms", "0"]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    let client = dir.client();
    let (busy, started, outcome) = spin(&dir);
    let running = client.submit(busy, T);
    wait_until("the first job to start", T, || started.exists());
    let marks = dir.path().join("marks");
    let mark = |what: &str| JobRequest::new(what).header("action", "mark").header("file", marks.to_str().unwrap());
    let doomed = client.submit(mark("doomed"), T);
    let kept = client.submit(mark("kept"), T);
    wait_until("both to wait", T, || client.status(T).unwrap().services.iter().map(|s| s.queued).sum::<usize>() == 2);
    assert!(doomed.cancel());
    assert!(matches!(doomed.wait(), Err(Error::Cancelled)));
    wait_until("the broker to take it out", T, || client.status(T).unwrap().counters.cancelled == 1);
    assert_eq!(client.status(T).unwrap().services.iter().map(|s| s.queued).sum::<usize>(), 1);
    assert!(running.cancel());
    wait_until("the running job to end", T, || outcome.exists());
    assert_eq!(kept.wait().unwrap(), b"kept");
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "kept\n", "the cancelled job never ran");
}

#[test]
fn a_job_cancelled_before_it_is_sent_is_never_sent() {
    let dir = TestDir::on(Transport::Local);
    // No broker yet: the job waits in the client.
    let client = dir.client();
    let marks = dir.path().join("marks");
    let handle =
        client.submit(JobRequest::new("x").header("action", "mark").header("file", marks.to_str().unwrap()), T);
    assert!(handle.cancel());
    assert!(matches!(handle.wait(), Err(Error::Cancelled)));
    let _broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    assert_eq!(client.submit(JobRequest::new("after").header("action", "echo"), T).wait().unwrap(), b"after");
    assert!(!marks.exists(), "the cancelled job never reached a worker");
    assert_eq!(client.status(T).unwrap().counters.cancelled, 0, "nor the broker");
}

both_transports! {
    /// The wire protocol, on either front: `CANCEL` of a running request is
    /// answered `CANCELLED` on the request itself, the handler sees it, and
    /// a `CANCEL` of an unknown or answered request is ignored.
    fn cancel_on_the_wire_answers_the_request_cancelled(t) {
        let dir = TestDir::on(t);
        let _broker = start_broker(&dir, &[]);
        let _worker = start_worker(&dir, "test_plugin", &[], "worker");
        let client = dir.client();
        let mut peer = RawPeer::front(&dir);
        let (started, outcome) = (dir.path().join("started"), dir.path().join("outcome"));
        let headers = encode_headers([
            ("action", "spin"),
            ("ms", "60000"),
            ("file", started.to_str().unwrap()),
            ("outcome", outcome.to_str().unwrap()),
        ]);
        let tail = encode_request_tail("", &headers);
        peer.send(&[CommandFrame::new(Command::Request, 7, 60_000, &tail).encode(), b"spin".to_vec()]);
        wait_until("the job to start", T, || started.exists());
        // Unknown ids first: nothing comes of them.
        peer.send(&[CommandFrame::new(Command::Cancel, 99, 0, b"").encode()]);
        peer.send(&[CommandFrame::new(Command::Cancel, 7, 0, b"").encode()]);
        let reply = peer.recv(T).expect("the request's answer");
        let head = CommandFrame::decode(&reply[0]).unwrap();
        assert_eq!((head.command, head.id, head.arg), (Command::Reply, 7, Status::Cancelled as u32));
        wait_until("the handler to see it", T, || std::fs::read_to_string(&outcome).is_ok_and(|s| s == "cancelled"));
        // Cancelling again, after the answer: ignored, no second reply.
        peer.send(&[CommandFrame::new(Command::Cancel, 7, 0, b"").encode()]);
        let tail = encode_request_tail("", &encode_headers([("action", "echo")]));
        peer.send(&[CommandFrame::new(Command::Request, 8, 60_000, &tail).encode(), b"after".to_vec()]);
        let reply = peer.recv(T).expect("the next answer");
        assert_eq!(CommandFrame::decode(&reply[0]).unwrap().id, 8, "the next reply is request 8's");
        assert_eq!(client.status(T).unwrap().counters.cancelled, 1);
    }
}

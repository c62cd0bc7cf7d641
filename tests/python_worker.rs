//! A worker written in Python from PROTOCOL.md alone (tests/python/worker.py)
//! serves jobs through our broker: the protocol document is complete enough.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(10);

#[test]
fn the_python_worker_written_from_protocol_md_serves_jobs() {
    let probe = Command::new("python3").args(["-c", "import zmq"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with pyzmq is required (`pip install pyzmq`; .ci/run installs it)"
    );
    let dir = TestDir::zmq();
    let _broker = start_broker(&dir, &["--heartbeat-ms", "100", "--liveness", "3"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/worker.py");
    let back = dir.back();
    let mut worker = Proc::spawn("python3", &[script, "--backend", &back, "--heartbeat-ms", "100"], &dir, "pyworker");
    worker.wait_line("pyworker ready", T);
    let client = dir.client();
    wait_until("the python worker to register", T, || client.workers("pyecho", T).unwrap() == 1);

    assert_eq!(client.execute("hello", T).unwrap(), b"hello");
    assert_eq!(client.execute(JobRequest::new("hello").header("upper", "1"), T).unwrap(), b"HELLO");
    match client.execute(JobRequest::new("x").header("fail", "oops"), T) {
        Err(Error::Handler { message, pid }) => {
            assert_eq!(message, "oops");
            assert_eq!(pid, worker.pid());
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    // A burst: once the broker sees the jobs are short it gives them ahead
    // (prefetch), and the worker must queue and answer every one, in order.
    let results = client.execute_many((0..300).map(|i| format!("burst {i}")), T);
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("burst {i}").into_bytes());
    }
    // A job ten heartbeat intervals long: the worker heartbeats while it runs.
    assert_eq!(client.execute(JobRequest::new("slow").header("sleep_ms", "1000"), T).unwrap(), b"slow");
    assert_eq!(client.status(T).unwrap().counters.lost, 0);

    // SIGTERM: it unregisters and exits 0.
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(T).expect("exits").code(), Some(0), "{}", worker.stderr());
    assert_eq!(client.workers("pyecho", T).unwrap(), 0);
}

//! An unmodified Powerhose 0.7 client (a REQ socket sending one frame) works
//! against our broker. The frames are built by hand, as the reference describes.

mod common;

use common::*;

fn req(endpoint: &str) -> (zmq::Context, zmq::Socket) {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).unwrap();
    socket.set_rcvtimeo(10_000).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    (ctx, socket)
}

fn ask(socket: &zmq::Socket, body: &[u8]) -> Vec<u8> {
    socket.send(body, 0).unwrap();
    let frames = socket.recv_multipart(0).expect("a reply within 10 s");
    assert_eq!(frames.len(), 1, "a Powerhose reply is one frame");
    frames.into_iter().next().unwrap()
}

#[test]
fn powerhose_format_jobs_and_ping() {
    let dir = TestDir::zmq();
    let cluster = start_cluster(&dir, "test_plugin", 1, &[]);
    let (_ctx, socket) = req(&dir.front());

    // PING is answered by the broker itself with its pid (the cluster process).
    assert_eq!(ask(&socket, b"PING"), cluster.pid().to_string().as_bytes());

    let reply = String::from_utf8(ask(&socket, b"action:pid:::")).unwrap();
    let (pid, rest) = reply.split_once(":OK:").expect("PID:OK:RESULT");
    assert_eq!(pid, rest, "the reply's PID is the worker's pid");

    // No headers: NONE. Data is raw bytes, split at the first ':::'.
    let mut expected = format!("{pid}:OK:pay:::load").into_bytes();
    expected.extend_from_slice(&[0, 0xff]);
    assert_eq!(ask(&socket, b"NONE:::pay:::load\x00\xff"), expected);

    // Several headers, handler error: PID:ERROR:MESSAGE.
    assert_eq!(ask(&socket, b"action:error::extra:1:::boom"), format!("{pid}:ERROR:boom").into_bytes());

    // A malformed request gets an error in the same format, from the broker.
    let reply = String::from_utf8(ask(&socket, b"garbage without separator")).unwrap();
    assert!(reply.starts_with(&format!("{}:ERROR:", cluster.pid())), "{reply}");

    // The REQ socket is still usable (strict send/recv alternation kept).
    assert_eq!(ask(&socket, b"PING"), cluster.pid().to_string().as_bytes());
}

#[test]
fn powerhose_format_job_with_no_worker_gets_an_error_not_silence() {
    let dir = TestDir::zmq();
    let broker = start_broker(&dir, &["--no-worker-grace-ms", "100"]);
    let (_ctx, socket) = req(&dir.front());
    let reply = String::from_utf8(ask(&socket, b"NONE:::x")).unwrap();
    assert!(reply.starts_with(&format!("{}:ERROR:", broker.pid())), "{reply}");
    assert!(reply.contains("no worker"), "{reply}");
}

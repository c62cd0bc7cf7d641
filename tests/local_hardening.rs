//! Local hardening (issue #14, item 6): what a hostile or careless local user
//! can do to a broker through its sockets, its runtime directory and its
//! lock files, and what `--purge-ghosts` must never do to a live broker.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn a_req_client_sending_too_many_frames_gets_an_answer() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &[]);
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(5000).unwrap();
    req.set_linger(0).unwrap();
    req.connect(&dir.front()).unwrap();
    // REQ adds the empty delimiter: the broker reads 6 frames after the identity.
    let body: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 3]).collect();
    req.send_multipart(&body, 0).unwrap();
    let reply = String::from_utf8(req.recv_bytes(0).expect("an answer within 5 s")).unwrap();
    assert!(reply.starts_with(&format!("{}:ERROR:", broker.pid())), "{reply}");
    assert!(reply.contains("after the envelope"), "{reply}");
    assert_eq!(dir.client().status(T).unwrap().counters.bad_requests, 1);
}

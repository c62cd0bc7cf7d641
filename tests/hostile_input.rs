//! Hostile input on both broker sockets: each bad message is logged and
//! counted, answered where a reply is possible, and never crashes the broker.

mod common;

use std::time::Duration;

use common::*;
use powerhose::protocol::{Command, CommandFrame};

const T: Duration = Duration::from_secs(10);

fn cmd(c: Command, id: u64, arg: u32, tail: &[u8]) -> Vec<u8> {
    CommandFrame::new(c, id, arg, tail).encode()
}

#[test]
fn garbage_on_the_front_is_counted_answered_when_possible_and_survived() {
    let dir = TestDir::zmq();
    let broker = start_broker(&dir, &["--max-message-bytes", "65536"]);
    let _worker = start_worker(&dir, "echo", &[], "worker");
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(5000).unwrap();
    dealer.connect(&dir.front()).unwrap();
    // Answerable: a valid frame with a request id but the wrong content.
    let answerable: Vec<Vec<Vec<u8>>> = vec![
        vec![cmd(Command::Request, 1, 100, b"\x05\x00ab")], // truncated tail, no data frame
        vec![cmd(Command::Request, 2, 100, b"\x00\x00\xff\xff"), b"d".to_vec()], // truncated headers
        vec![cmd(Command::Ping, 3, 0, b""), b"extra".to_vec()], // wrong frame count
        vec![cmd(Command::Job, 4, 0, b"")],                 // a worker command from a client
        vec![cmd(Command::Control, 5, 0, b"{not json")],
        vec![cmd(Command::Control, 6, 0, br#"{"op":"reload"}"#)], // no supervisor here
    ];
    for frames in &answerable {
        dealer.send_multipart(frames, 0).unwrap();
        let reply = dealer.recv_multipart(0).expect("an answer");
        let head = CommandFrame::decode(&reply[0]).unwrap();
        assert_eq!(head.command, Command::Reply);
        assert_eq!(head.arg, 7, "BAD_REQUEST for {frames:?}: {}", String::from_utf8_lossy(&reply[1]));
    }
    // Unanswerable: dropped and counted.
    let garbage: Vec<Vec<Vec<u8>>> = vec![
        vec![b"hello".to_vec()],
        vec![vec![]],
        vec![b"PH\x09\x01".to_vec()], // bad version, too short
        vec![{
            let mut f = cmd(Command::Ping, 9, 0, b"");
            f[2] = 7;
            f
        }],
        (0..12).map(|i| vec![i as u8; 3]).collect(), // far too many frames
        vec![vec![0u8; 100_000]],                    // over --max-message-bytes
    ];
    for frames in &garbage {
        dealer.send_multipart(frames, 0).unwrap();
    }
    // A REQ client with a malformed envelope gets a Powerhose-format error.
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(5000).unwrap();
    req.connect(&dir.front()).unwrap();
    req.send_multipart([b"a".to_vec(), b"b".to_vec()], 0).unwrap();
    let reply = String::from_utf8(req.recv_bytes(0).unwrap()).unwrap();
    assert!(reply.starts_with(&format!("{}:ERROR:", broker.pid())), "{reply}");
    // A client that leaves before its answer.
    let leaver = ctx.socket(zmq::DEALER).unwrap();
    leaver.set_linger(0).unwrap();
    leaver.connect(&dir.front()).unwrap();
    let tail = powerhose::protocol::encode_request_tail("", &[]);
    leaver.send_multipart([cmd(Command::Request, 1, 5000, &tail), b"bye".to_vec()], 0).unwrap();
    drop(leaver);

    // The broker is still there and serving.
    let client = dir.client();
    assert_eq!(client.ping(T).unwrap(), broker.pid());
    assert_eq!(client.execute("still serving", T).unwrap(), b"still serving");
    let bad = client.status(T).unwrap().counters.bad_requests;
    assert!(bad >= (answerable.len() + 5) as u64, "bad requests counted: {bad}");
}

#[test]
fn garbage_on_the_back_is_counted_and_survived() {
    let dir = TestDir::zmq();
    let broker = start_broker(&dir, &["--max-message-bytes", "65536"]);
    let _worker = start_worker(&dir, "echo", &[], "worker");
    let ctx = zmq::Context::new();
    let rogue = ctx.socket(zmq::DEALER).unwrap();
    rogue.set_identity(b"rogue-worker").unwrap();
    rogue.set_rcvtimeo(3000).unwrap();
    rogue.connect(&dir.back()).unwrap();
    let client = dir.client();
    let before = client.status(T).unwrap().counters.bad_requests;
    let messages: Vec<Vec<Vec<u8>>> = vec![
        vec![b"garbage".to_vec()],
        vec![cmd(Command::Ready, 0, 0, b"{not json")],
        vec![cmd(Command::Ready, 0, 0, b"{}")],
        vec![cmd(Command::Return, 1, 0, b"")], // no data frame
        vec![cmd(Command::Ping, 1, 0, b"")],   // a client command from a worker
        vec![cmd(Command::Heartbeat, 0, 0, b""), b"x".to_vec(), b"y".to_vec()],
        vec![vec![0u8; 100_000]], // over --max-message-bytes
    ];
    for frames in &messages {
        rogue.send_multipart(frames, 0).unwrap();
    }
    // A registered worker answering a job it does not hold.
    let imposter = ctx.socket(zmq::DEALER).unwrap();
    imposter.set_identity(b"imposter").unwrap();
    imposter.set_rcvtimeo(3000).unwrap();
    imposter.connect(&dir.back()).unwrap();
    let reg = br#"{"service":"echo","pid":1,"host":"elsewhere","plugin":"x","plugin_version":"0"}"#;
    imposter.send(cmd(Command::Ready, 0, 0, reg), 0).unwrap();
    wait_until("the imposter to register", T, || client.workers("echo", T).unwrap() == 2);
    imposter.send_multipart([cmd(Command::Result, 424242, 0, b""), b"forged".to_vec()], 0).unwrap();
    // An unknown worker's RESULT is answered DISCONNECT (register again).
    rogue.send_multipart([cmd(Command::Result, 1, 0, b""), b"x".to_vec()], 0).unwrap();
    let reply = rogue.recv_multipart(0).expect("DISCONNECT for an unknown worker");
    assert_eq!(CommandFrame::decode(&reply[0]).unwrap().command, Command::Disconnect);
    imposter.send(cmd(Command::Disconnect, 0, 0, b""), 0).unwrap();
    wait_until("the imposter to leave", T, || client.workers("echo", T).unwrap() == 1);

    assert_eq!(client.ping(T).unwrap(), broker.pid());
    for i in 0..20 {
        assert_eq!(client.execute(format!("ok {i}"), T).unwrap(), format!("ok {i}").into_bytes());
    }
    let bad = client.status(T).unwrap().counters.bad_requests - before;
    assert!(bad >= 6, "bad messages counted: {bad}");
}

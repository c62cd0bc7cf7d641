//! Hostile input on both broker sockets, over ZeroMQ and the local transport
//! alike: each bad message is logged and counted, answered where a reply is
//! possible, and never crashes the broker. On the local transport, bytes
//! that are not our framing cost their sender its connection, at once and
//! without costing anyone else theirs.

mod common;

use std::time::Duration;

use common::raw::{encode, RawPeer, GREETING, MORE};
use common::*;
use powerhose::protocol::{Command, CommandFrame};
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(10);

fn cmd(c: Command, id: u64, arg: u32, tail: &[u8]) -> Vec<u8> {
    CommandFrame::new(c, id, arg, tail).encode()
}

/// Pings on `peer` and waits for the pong: the broker handles a
/// connection's messages in order, so everything sent before was handled.
/// Returns the messages that came before the pong.
fn settled(peer: &mut RawPeer) -> Vec<Vec<Vec<u8>>> {
    peer.send(&[cmd(Command::Ping, 999, 0, b"")]);
    let mut before = Vec::new();
    loop {
        let reply = peer.recv(T).expect("a pong");
        match CommandFrame::decode(&reply[0]) {
            Ok(head) if (head.command, head.id) == (Command::Reply, 999) => return before,
            _ => before.push(reply),
        }
    }
}

both_transports! {
    fn garbage_on_the_front_is_counted_answered_when_possible_and_survived(t) {
        let dir = TestDir::on(t);
        let broker = start_broker(&dir, &["--max-message-bytes", "65536"]);
        let _worker = start_worker(&dir, "echo", &[], "worker");
        let mut peer = RawPeer::front(&dir);
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
            peer.send(frames);
            let reply = peer.recv(T).expect("an answer");
            let head = CommandFrame::decode(&reply[0]).unwrap();
            assert_eq!(head.command, Command::Reply);
            assert_eq!(head.arg, 7, "BAD_REQUEST for {frames:?}: {}", String::from_utf8_lossy(&reply[1]));
        }
        // Unanswerable (but one): dropped and counted.
        let garbage: Vec<Vec<Vec<u8>>> = vec![
            vec![b"hello".to_vec()],
            vec![vec![]],
            vec![b"PH\x09\x01".to_vec()], // bad version, too short
            vec![{
                let mut f = cmd(Command::Ping, 9, 0, b"");
                f[2] = 7;
                f
            }],
            // Twice the protocol's most, and the most the local transport carries.
            (0..8).map(|i| vec![i as u8; 3]).collect(),
            vec![vec![0u8; 100_000]], // over --max-message-bytes, under its hard cap
        ];
        for frames in &garbage {
            peer.send(frames);
        }
        // Only the empty frame is answered: a Powerhose 0.7 envelope with
        // nothing in it, answered in that format.
        let answered = settled(&mut peer);
        let texts: Vec<Vec<String>> =
            answered.iter().map(|m| m.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()).collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        let legacy = format!("{}:ERROR:expected one frame after the envelope", broker.pid());
        assert!(texts[0][0].is_empty() && texts[0][1].starts_with(&legacy), "{texts:?}");
        let mut bad = (answerable.len() + 5) as u64;
        if t == Transport::Zmq {
            // A Powerhose 0.7 (REQ) client with a malformed envelope gets an
            // answer in its own format.
            let (_ctx, req) = front_socket(&dir, zmq::REQ);
            req.send_multipart([b"a".to_vec(), b"b".to_vec()], 0).unwrap();
            let reply = String::from_utf8(req.recv_bytes(0).unwrap()).unwrap();
            assert!(reply.starts_with(&format!("{}:ERROR:", broker.pid())), "{reply}");
            bad += 1;
        }
        // A client that leaves before its answer.
        let mut leaver = RawPeer::front(&dir);
        let tail = powerhose::protocol::encode_request_tail("", &[]);
        leaver.send(&[cmd(Command::Request, 1, 5000, &tail), b"bye".to_vec()]);
        drop(leaver);

        // The broker is still there and serving.
        let client = dir.client();
        assert_eq!(client.ping(T).unwrap(), broker.pid());
        assert_eq!(client.execute("still serving", T).unwrap(), b"still serving");
        let counters = client.status(T).unwrap().counters;
        assert_eq!((counters.bad_requests, counters.oversized), (bad, 1), "bad requests and oversized counted");
    }
}

/// Sends `bytes` on a new local connection to `name` (then stops writing
/// if `leave`): the broker must hang up, promptly.
fn hung_up_on(dir: &TestDir, name: &str, bytes: &[u8], leave: bool, what: &str) {
    let mut peer = RawPeer::unintroduced(dir, name);
    peer.send_bytes(bytes);
    if leave {
        peer.shutdown_write();
    }
    assert!(peer.closed(T), "the broker still holds the connection after {what}");
}

/// The greeting and a client's (empty) identity: an introduced client.
fn hello() -> Vec<u8> {
    let mut bytes = GREETING.to_vec();
    bytes.extend(encode(&[b""]));
    bytes
}

/// Bytes that are not our framing cost their sender its connection at
/// once: waiting for them to make sense would hold the connection, and
/// memory, for nothing. They are logged, not counted as requests.
#[test]
fn bytes_that_are_not_local_framing_close_only_their_connection() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &["--max-message-bytes", "65536"]);
    let _worker = start_worker(&dir, "echo", &[], "worker");
    let client = dir.client();
    let before = client.status(T).unwrap().counters;
    // A client that stopped mid-frame and stays: nobody else waits for it.
    let mut stalled = RawPeer::front(&dir);
    let ping = encode(&[cmd(Command::Ping, 7, 0, b"")]);
    stalled.send_bytes(&ping[..6]);

    // A ZeroMQ peer dialling the socket as ipc: its greeting is not ours.
    let ctx = zmq::Context::new();
    let zmq_peer = ctx.socket(zmq::DEALER).unwrap();
    zmq_peer.set_linger(0).unwrap();
    zmq_peer.monitor("inproc://zmq-peer", zmq::SocketEvent::DISCONNECTED as i32).unwrap();
    let events = ctx.socket(zmq::PAIR).unwrap();
    events.connect("inproc://zmq-peer").unwrap();
    zmq_peer.connect(&format!("ipc://{}", dir.socket("front").display())).unwrap();
    let mut items = [events.as_poll_item(zmq::POLLIN)];
    assert_eq!(zmq::poll(&mut items, T.as_millis() as i64).unwrap(), 1, "a ZeroMQ peer was hung up on");
    drop(zmq_peer);

    hung_up_on(&dir, "front", b"GET / HTTP/1.0\r\n\r\n", false, "an HTTP request");
    hung_up_on(&dir, "front", b"PHLOCAL\x02", false, "another version's greeting");
    hung_up_on(&dir, "back", b"GET / HTTP/1.0\r\n\r\n", false, "an HTTP request on the back");
    // A header claiming 2 GiB is refused before any of it is read.
    let huge = [hello(), (MORE - 1).to_le_bytes().to_vec()].concat();
    hung_up_on(&dir, "front", &huge, false, "a frame header claiming 2 GiB");
    let huge_more = [hello(), (u32::MAX).to_le_bytes().to_vec()].concat();
    hung_up_on(&dir, "front", &huge_more, false, "a header claiming 2 GiB and more frames");
    let many: Vec<Vec<u8>> = (0..12).map(|i| vec![i as u8; 3]).collect();
    hung_up_on(&dir, "front", &[hello(), encode(&many)].concat(), false, "a message of 12 frames");
    // Peers that leave halfway: the greeting, a header, a frame.
    hung_up_on(&dir, "front", b"PHLO", true, "half a greeting");
    hung_up_on(&dir, "front", &[hello(), vec![100, 0]].concat(), true, "half a header");
    let cut = [hello(), 100u32.to_le_bytes().to_vec(), b"ten bytes.".to_vec()].concat();
    hung_up_on(&dir, "front", &cut, true, "a frame cut short");

    assert_eq!(client.ping(T).unwrap(), broker.pid());
    assert_eq!(client.execute("still serving", T).unwrap(), b"still serving");
    let after = client.status(T).unwrap().counters;
    assert_eq!((after.bad_requests, after.oversized), (before.bad_requests, before.oversized), "logged, not counted");
    // The stalled client, finishing its message, is answered as anyone.
    stalled.send_bytes(&ping[6..]);
    let reply = stalled.recv(T).expect("an answer to the finished message");
    let head = CommandFrame::decode(&reply[0]).unwrap();
    assert_eq!((head.command, head.id), (Command::Reply, 7));
}

both_transports! {
    fn garbage_on_the_back_is_counted_and_survived(t) {
        let dir = TestDir::on(t);
        let broker = start_broker(&dir, &["--max-message-bytes", "65536"]);
        let _worker = start_worker(&dir, "echo", &[], "worker");
        let mut rogue = RawPeer::back(&dir, b"rogue-worker");
        let client = dir.client();
        let before = client.status(T).unwrap().counters;
        let messages: Vec<Vec<Vec<u8>>> = vec![
            vec![b"garbage".to_vec()],
            vec![cmd(Command::Ready, 0, 0, b"{not json")],
            vec![cmd(Command::Ready, 0, 0, b"{}")],
            vec![cmd(Command::Return, 1, 0, b"")], // no data frame
            vec![cmd(Command::Ping, 1, 0, b"")],   // a client command from a worker
            vec![cmd(Command::Heartbeat, 0, 0, b""), b"x".to_vec(), b"y".to_vec()],
            vec![vec![0u8; 100_000]], // over --max-message-bytes, under its hard cap
        ];
        for frames in &messages {
            rogue.send(frames);
        }
        // A registered worker answering a job it does not hold.
        let mut imposter = RawPeer::back(&dir, b"imposter");
        let reg = br#"{"service":"echo","pid":1,"host":"elsewhere","plugin":"x","plugin_version":"0"}"#;
        imposter.send(&[cmd(Command::Ready, 0, 0, reg)]);
        wait_until("the imposter to register", T, || client.workers("echo", T).unwrap() == 2);
        imposter.send(&[cmd(Command::Result, 424242, 0, b""), b"forged".to_vec()]);
        // An unknown worker's RESULT is answered DISCONNECT (register again);
        // the rogue's messages are handled in order, so all of them were.
        rogue.send(&[cmd(Command::Result, 1, 0, b""), b"x".to_vec()]);
        let reply = rogue.recv(T).expect("DISCONNECT for an unknown worker");
        assert_eq!(CommandFrame::decode(&reply[0]).unwrap().command, Command::Disconnect);
        imposter.send(&[cmd(Command::Disconnect, 0, 0, b"")]);
        wait_until("the imposter to leave", T, || client.workers("echo", T).unwrap() == 1);

        assert_eq!(client.ping(T).unwrap(), broker.pid());
        for i in 0..20 {
            assert_eq!(client.execute(format!("ok {i}"), T).unwrap(), format!("ok {i}").into_bytes());
        }
        let after = client.status(T).unwrap().counters;
        let bad = after.bad_requests - before.bad_requests;
        assert!(bad >= 6, "bad messages counted: {bad}");
        assert_eq!(after.oversized - before.oversized, 1);
    }
}

/// A worker names itself in its first message: a back connection that
/// names nobody is closed (a client dialling the back by mistake, or not
/// ours), and does not stand in for any worker.
#[test]
fn a_back_connection_without_an_identity_is_closed() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "echo", &[], "worker");
    let mut nameless = RawPeer::back(&dir, b"");
    let reg = br#"{"service":"echo","pid":1,"host":"elsewhere","plugin":"x","plugin_version":"0"}"#;
    nameless.send(&[cmd(Command::Ready, 0, 0, reg)]);
    assert!(nameless.closed(T), "a nameless worker connection is closed");
    let client = dir.client();
    assert_eq!(client.workers("echo", T).unwrap(), 1, "it registered nobody");
    assert_eq!(client.ping(T).unwrap(), broker.pid());
    assert_eq!(client.execute("still serving", T).unwrap(), b"still serving");
}

/// A worker that dials again before the broker saw its old connection close
/// takes its identity over: the old connection is closed unheard, and the
/// worker stays registered once, served on the new one.
#[test]
fn a_second_connection_with_a_workers_identity_replaces_the_first() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let reg = br#"{"service":"raw","pid":1,"host":"elsewhere","plugin":"x","plugin_version":"0"}"#;
    let mut first = RawPeer::back(&dir, b"twin");
    first.send(&[cmd(Command::Ready, 0, 0, reg)]);
    let client = dir.client();
    wait_until("the first connection to register", T, || client.workers("raw", T).unwrap() == 1);
    let mut second = RawPeer::back(&dir, b"twin");
    second.send(&[cmd(Command::Ready, 0, 0, reg)]);
    assert!(first.closed(T), "the replaced connection is closed");
    assert_eq!(client.workers("raw", T).unwrap(), 1, "one worker, not two");
    let asker = std::thread::spawn(move || client.execute(JobRequest::new("to the twin").service("raw"), T));
    let job = second.recv(T).expect("the job comes on the new connection");
    let head = CommandFrame::decode(&job[0]).unwrap();
    assert_eq!(head.command, Command::Job);
    let (tail, n) = powerhose::protocol::ResultTail::default().encode();
    second.send(&[CommandFrame::new(Command::Result, head.id, 0, &tail[..n]).encode(), b"answered".to_vec()]);
    assert_eq!(asker.join().unwrap().unwrap(), b"answered");
}

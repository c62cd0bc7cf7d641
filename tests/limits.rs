//! The broker's memory bound, with real processes: queued jobs are counted in
//! bytes, and a client that floods the queue gets `Busy` while another client
//! is still served (before, 120 × 8 MiB requests took a broker to 958 MiB and
//! one client could fill the queue for everyone).

mod common;

use std::time::Duration;

use common::raw::RawPeer;
use common::*;
use powerhose::protocol::{Command, CommandFrame};
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

#[test]
fn a_flooding_client_is_bounded_in_bytes_and_others_are_still_served() {
    let dir = TestDir::new();
    // 16 MiB for all waiting jobs: one client may hold 8 MiB.
    let broker = start_broker(&dir, &["--max-queue-bytes", &(16 * MIB).to_string()]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    let started = dir.path().join("started");
    let file = started.to_str().unwrap().to_string();
    let blocker = dir.client();
    // The only worker is busy for a while, so everything else queues.
    let long = std::thread::spawn(move || {
        let job = JobRequest::new("x").header("action", "sleep").header("ms", "3000").header("file", file);
        blocker.execute(job, T)
    });
    wait_until("the long job to start", T, || started.exists());
    let flood = dir.client();
    let big = || JobRequest::new(vec![b'x'; MIB]).header("action", "pid");
    let answers = flood.execute_many((0..40).map(|_| big()), Duration::from_secs(15));
    let busy = answers.iter().filter(|r| matches!(r, Err(Error::Busy(m)) if m.contains("share"))).count();
    let served = answers.iter().filter(|r| r.is_ok()).count();
    assert!(busy >= 30, "{busy} of 40 refused as over the client's share ({served} served)");
    assert!(served >= 7, "the share (8 MiB) was admitted: {served} served");
    // While the flood waited, another client's job was admitted and served.
    let other = dir.client();
    assert_eq!(other.execute(JobRequest::new("polite").header("action", "echo"), T).unwrap(), b"polite");
    long.join().unwrap().unwrap();
    let rss_mib = powerhose::bench::procs::rss(broker.pid()) as usize / MIB;
    assert!(rss_mib < 64, "broker RSS {rss_mib} MiB after a 40 MiB flood");
}

both_transports! {
    /// Replies to a client that never reads them were held without bound (front
    /// HWM 0): now past a bound they are dropped and counted, and the broker
    /// goes on serving everyone else. ZeroMQ's bound is a count of messages
    /// (`FRONT_SEND_HWM`), met with many small replies; the local transport's
    /// is bytes (`LOCAL_SEND_MAX`), met with a few large ones.
    fn replies_to_a_client_that_never_reads_are_dropped_and_counted(t) {
        let dir = TestDir::on(t);
        // Nothing given ahead to a busy worker: the gated echoes below queue.
        let _broker = start_broker(&dir, &["--prefetch-budget-ms", "0"]);
        let mut deaf = RawPeer::deaf_front(&dir);
        let client = dir.client();
        if t == Transport::Zmq {
            for id in 0..60_000u64 {
                deaf.send(&[CommandFrame::new(Command::Ping, id, 0, b"").encode()]);
            }
            wait_until("replies dropped", T, || client.status(T).unwrap().counters.replies_dropped > 10_000);
        } else {
            // The broker stops reading a client whose replies back up, so
            // they are met only by requests it took before: 14 echoes of
            // 8 MiB queued behind a gate, 112 MiB against LOCAL_SEND_MAX.
            // No lane: the gate job holds the worker at the broker's sight.
            let _worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
            let gate = dir.path().join("gate");
            let until = gate.to_str().unwrap().to_string();
            let gated = dir.client();
            let held = std::thread::spawn(move || gated.execute(JobRequest::new("g").header("action", "gate").header("until", until), T));
            wait_until("the gate job to start", T, || client.status(T).unwrap().services.iter().any(|s| s.workers > s.idle));
            const BIG: usize = 8 * MIB;
            let requests = 14;
            let headers = powerhose::protocol::encode_headers([("action", "echo")]);
            let (tail, data) = (powerhose::protocol::encode_request_tail("", &headers), vec![b'x'; BIG]);
            for id in 0..requests as u64 {
                deaf.send(&[CommandFrame::new(Command::Request, id, 60_000, &tail).encode(), data.clone()]);
            }
            wait_until("the echoes queued", T, || client.status(T).unwrap().queued_bytes >= requests * BIG);
            std::fs::write(&gate, b"").unwrap();
            held.join().unwrap().unwrap();
            wait_until("replies dropped", T, || client.status(T).unwrap().counters.replies_dropped >= 4);
        }
        assert!(client.ping(T).is_ok(), "others are still answered");
    }
}

both_transports! {
    /// A message just over `--max-message-bytes` used to cost its sender the
    /// connection, uncounted and unlogged: now it is read, counted (`oversized`),
    /// logged, and answered, natively and (over ZeroMQ) in the Powerhose 0.7
    /// format; a worker's is dropped and counted; everyone else is still served.
    fn a_message_over_the_limit_is_answered_counted_and_logged(t) {
        let dir = TestDir::on(t);
        let broker = start_broker(&dir, &["--max-message-bytes", &MIB.to_string()]);
        let _worker = start_worker(&dir, "echo", &[], "worker");
        let client = dir.client();
        let started = std::time::Instant::now();
        let err = client.execute(vec![b'x'; MIB + 1], T).unwrap_err();
        let Error::BadRequest(text) = &err else { panic!("not a BadRequest: {err}") };
        assert!(text.contains(&format!("bytes is over the broker's --max-message-bytes {MIB}")), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "answered promptly: {:?}", started.elapsed());
        assert_eq!(client.status(T).unwrap().counters.oversized, 1);
        let mut oversized = 1;

        if t == Transport::Zmq {
            let (_ctx, req) = front_socket(&dir, zmq::REQ);
            req.send(vec![b'y'; MIB + 1], 0).unwrap();
            let reply = String::from_utf8(req.recv_bytes(0).expect("a legacy answer")).unwrap();
            assert!(reply.starts_with(&format!("{}:ERROR:request of ", broker.pid())), "{reply}");
            oversized += 1;
        }

        // A worker's: nobody to answer, dropped and counted.
        let mut rogue = RawPeer::back(&dir, b"rogue");
        rogue.send(&[CommandFrame::new(Command::Heartbeat, 0, 0, b"").encode(), vec![0; MIB]]);
        oversized += 1;
        wait_until("the worker's message counted", T, || client.status(T).unwrap().counters.oversized == oversized);

        let log = broker.stderr();
        let over = format!("refused: over --max-message-bytes {MIB}");
        assert!(log.contains("a client's message of ") && log.contains(&over), "{log}");
        assert!(log.contains(&format!("a worker's message of {} bytes dropped", MIB + 16)), "{log}");
        assert_eq!(client.execute("still served", T).unwrap(), b"still served");
        assert_eq!(dir.client().execute(vec![b'z'; MIB / 2], T).unwrap(), vec![b'z'; MIB / 2], "under the limit");
    }
}

both_transports! {
    /// Past the hard cap (twice the limit) the sender's connection is dropped
    /// before the message is read: ZeroMQ does it without telling the broker
    /// (not countable), the local transport as soon as the frame header says
    /// so (logged). Nobody else is affected.
    fn a_message_over_the_hard_cap_drops_only_its_connection(t) {
        let dir = TestDir::on(t);
        let broker = start_broker(&dir, &["--max-message-bytes", &MIB.to_string()]);
        let _worker = start_worker(&dir, "echo", &[], "worker");
        let client = dir.client();
        assert_eq!(client.execute("connected", T).unwrap(), b"connected");
        let mut stranger = RawPeer::front(&dir);
        stranger.send(&[vec![0u8; 2 * MIB + 1]]);
        assert!(stranger.closed(T), "the stranger's connection was dropped");
        // The client connected before goes on, on the same connection.
        assert_eq!(client.execute("still served", T).unwrap(), b"still served");
        assert_eq!(client.status(T).unwrap().counters.oversized, 0, "a dropped connection's message is not counted");
        if t == Transport::Local {
            let log = broker.stderr();
            assert!(log.contains("a local connection dropped: a message of at least"), "{log}");
        }
    }
}

/// A local client that writes faster than it reads is slowed, not dropped:
/// once its replies back up the broker stops reading its requests, its own
/// writes wait, and every answer comes when it reads. (Before, the broker
/// read on and dropped the replies past `LOCAL_SEND_MAX`: a batch of 600
/// answers of 128 KiB lost those after the 514th.)
#[test]
fn a_local_client_that_reads_slowly_is_slowed_not_dropped() {
    let dir = TestDir::on(Transport::Local);
    let _broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    let client = dir.client();
    let mut peer = RawPeer::front(&dir);
    // 100 MiB of echoes, over LOCAL_SEND_MAX and under the client's share.
    const REQUESTS: u64 = 100;
    let mut stream = peer.writer();
    stream.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let headers = powerhose::protocol::encode_headers([("action", "echo")]);
        let tail = powerhose::protocol::encode_request_tail("", &headers);
        for id in 0..REQUESTS {
            let message = [CommandFrame::new(Command::Request, id, 120_000, &tail).encode(), vec![id as u8; MIB]];
            stream.write_all(&common::raw::encode(&message))?;
        }
        std::io::Result::Ok(())
    });
    // The slow reader reads nothing until the broker has answered all it
    // took (all 100 had it read on) or for two seconds (its writes wait).
    let quiet = std::time::Instant::now() + Duration::from_secs(2);
    let all_answered = || {
        let status = client.status(T).unwrap();
        status.queued_bytes == 0 && status.services.iter().all(|s| s.workers == s.idle)
    };
    while !(writer.is_finished() && all_answered()) && std::time::Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < REQUESTS as usize {
        let Some(reply) = peer.recv(Duration::from_secs(60)) else { break };
        let head = CommandFrame::decode(&reply[0]).unwrap();
        assert_eq!(head.command, Command::Reply);
        assert_eq!(reply.last().unwrap(), &vec![head.id as u8; MIB], "the echo of request {}", head.id);
        answered.insert(head.id);
    }
    writer.join().unwrap().expect("every request written");
    assert_eq!(answered.len(), REQUESTS as usize, "every request answered");
    assert_eq!(client.status(T).unwrap().counters.replies_dropped, 0);
}

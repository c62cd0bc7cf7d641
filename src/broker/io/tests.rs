//! The broker's I/O layer against real sockets: no allocation on the hot
//! path, and inline frames patched in place end to end.

use super::*;
use crate::protocol::{encode_headers, encode_request_tail, split_job_arg, Registration, ResultTail};
use crate::protocol::{Command, CommandFrame};
use crate::test_alloc::allocations;

fn msg(bytes: &[u8]) -> Msg {
    Msg::from(bytes)
}

fn registration(inline: bool) -> Vec<u8> {
    let reg = Registration {
        service: "echo".into(),
        pid: 2,
        host: "h".into(),
        plugin: "echo".into(),
        plugin_version: "1".into(),
        coalesce_us: 0,
        inline,
    };
    CommandFrame::new(Command::Ready, 0, 0, &reg.encode()).encode()
}

/// The broker's whole per-job path (front message in, JOB out, RESULT in,
/// REPLY out), two-frame and inline, makes no allocation of its own once
/// warmed up: only libzmq's message buffers (malloc, not counted here).
#[test]
fn the_hot_path_does_not_allocate_per_job() {
    let ctx = zmq::Context::new();
    let (front, back) = (ctx.socket(zmq::ROUTER).unwrap(), ctx.socket(zmq::ROUTER).unwrap());
    for s in [&front, &back] {
        s.set_router_mandatory(true).unwrap();
    }
    front.bind("inproc://alloc-front").unwrap();
    back.bind("inproc://alloc-back").unwrap();
    let options = BrokerOptions::new("inproc://alloc-front", "inproc://alloc-back");
    let mut io = Io::new(&front, &back, &options, super::Gate::new(&options.frontend, &options.backend, None));
    let now = Instant::now();
    let mut state = BrokerState::<Msg>::new(options.config.clone(), 1, now);
    let mut out = Vec::with_capacity(64);
    io.frames.extend([msg(b"worker-1"), msg(&registration(true))]);
    io.on_back(now, &mut state, &mut out);
    let tail = encode_request_tail("echo", &[]);
    let (result_tail, n) = ResultTail { still_busy: false, run_us: Some(5) }.encode();
    let mut run = |job_id: u64| {
        let (client, worker) = (msg(b"client-1"), msg(b"worker-1"));
        let inline = job_id.is_multiple_of(2);
        let before;
        if inline {
            let request = CommandFrame::new(Command::Request, job_id, 60_000, &tail).with_data(&[7; 100]).message();
            let result =
                CommandFrame::new(Command::Result, job_id, 0, &result_tail[..n]).with_data(&[8; 100]).message();
            before = allocations();
            io.frames.extend([client, request]);
            io.on_front(now, &mut state, &mut out);
            io.frames.extend([worker, result]);
        } else {
            let request = CommandFrame::new(Command::Request, job_id, 60_000, &tail).message();
            let result = CommandFrame::new(Command::Result, job_id, 0, b"").message();
            let (data, body) = (msg(&[7; 100]), msg(&[8; 100]));
            before = allocations();
            io.frames.extend([client, request, data]);
            io.on_front(now, &mut state, &mut out);
            io.frames.extend([worker, result, body]);
        }
        io.on_back(now, &mut state, &mut out);
        allocations() - before
    };
    for job_id in 1..=1_000 {
        run(job_id);
    }
    let allocated: u64 = (1_001..=11_000).map(&mut run).sum();
    assert_eq!(allocated, 0, "Rust allocations in 10,000 jobs through the broker");
    assert_eq!(state.counters.ok, 11_000);
}

/// The next message on `socket` (bounded wait).
fn frames(socket: &zmq::Socket) -> Vec<Vec<u8>> {
    socket.set_rcvtimeo(5_000).unwrap();
    socket.recv_multipart(0).expect("a message within 5 s")
}

/// Handles what arrived on the broker's front or back socket (bounded wait).
fn pump(io: &mut Io<'_>, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>, from_front: bool) {
    let socket = if from_front { io.front } else { io.back };
    let mut items = [socket.as_poll_item(zmq::POLLIN)];
    assert_eq!(zmq::poll(&mut items, 5_000).unwrap(), 1, "a message for the broker");
    let result = if from_front {
        io.drain(socket, |io, now| io.on_front(now, state, out))
    } else {
        io.drain(socket, |io, now| io.on_back(now, state, out))
    };
    assert!(!result.unwrap(), "one message, well under the read bound");
}

/// An inline request reaches an inline worker as one patched frame (its
/// tail the request's, service included), and the inline answer reaches
/// the client as one frame with the worker's pid; a two-frame worker gets
/// the same request unpacked into two frames, and answers in two.
#[test]
fn inline_frames_are_patched_through_or_unpacked_for_older_workers() {
    for inline_worker in [true, false] {
        let ctx = zmq::Context::new();
        let name = if inline_worker { "inl" } else { "two" };
        let (fe, be) = (format!("inproc://{name}-front"), format!("inproc://{name}-back"));
        let (front, back) = (ctx.socket(zmq::ROUTER).unwrap(), ctx.socket(zmq::ROUTER).unwrap());
        front.bind(&fe).unwrap();
        back.bind(&be).unwrap();
        let (client, worker) = (ctx.socket(zmq::DEALER).unwrap(), ctx.socket(zmq::DEALER).unwrap());
        worker.set_identity(b"w1").unwrap();
        client.connect(&fe).unwrap();
        worker.connect(&be).unwrap();
        let options = BrokerOptions::new(fe.as_str(), be.as_str());
        let mut io = Io::new(&front, &back, &options, super::Gate::new(&options.frontend, &options.backend, None));
        let mut state = BrokerState::<Msg>::new(options.config.clone(), 1, Instant::now());
        let mut out = Vec::new();

        worker.send(registration(inline_worker), 0).unwrap();
        pump(&mut io, &mut state, &mut out, false);
        let headers = encode_headers([("op", "up")]);
        let tail = encode_request_tail("echo", &headers);
        client.send(CommandFrame::new(Command::Request, 77, 9_000, &tail).with_data(b"hello").encode(), 0).unwrap();
        pump(&mut io, &mut state, &mut out, true);

        let job = frames(&worker);
        let cmd = CommandFrame::decode(&job[0]).unwrap();
        assert_eq!(cmd.command, Command::Job);
        assert!(split_job_arg(cmd.arg).0 <= 9_000);
        let (status_tail, n) = ResultTail { still_busy: false, run_us: Some(9) }.encode();
        let result = CommandFrame::new(Command::Result, cmd.id, 0, &status_tail[..n]);
        if inline_worker {
            assert_eq!(job.len(), 1, "one frame");
            assert_eq!((cmd.tail, cmd.data), (&tail[..], Some(&b"hello"[..])));
            worker.send(result.with_data(b"HELLO").encode(), 0).unwrap();
        } else {
            assert_eq!(job.len(), 2, "two frames for a worker that did not say inline");
            assert_eq!((cmd.tail, cmd.data, &job[1][..]), (&headers[..], None, &b"hello"[..]));
            worker.send_multipart([result.encode(), b"HELLO".to_vec()], 0).unwrap();
        }
        pump(&mut io, &mut state, &mut out, false);

        let reply = frames(&client);
        let cmd = CommandFrame::decode(&reply[0]).unwrap();
        assert_eq!((cmd.command, cmd.id, cmd.arg), (Command::Reply, 77, Status::Ok as u32));
        assert_eq!(&cmd.tail[..4], &2u32.to_le_bytes(), "the answering worker's pid first");
        let body = if inline_worker { cmd.data.unwrap() } else { &reply[1][..] };
        assert_eq!((reply.len(), body), (if inline_worker { 1 } else { 2 }, &b"HELLO"[..]));
    }
}

//! The lane's reading of callers' messages and its replies, without sockets.

use super::file::dir_of;
use super::wire::*;
use crate::local::Frames;
use crate::protocol::{encode_headers, encode_request_tail};
use crate::protocol::{Command, CommandFrame, HeaderIter, Status, INLINE_MAX, LANE_CLOSING};
use std::path::PathBuf;

fn request(id: u64, service: &str, headers: &[(&str, &str)], data: &[u8], inline: bool) -> Frames {
    let tail = encode_request_tail(service, &encode_headers(headers.iter().copied()));
    let head = CommandFrame::new(Command::Request, id, 1000, &tail);
    match inline {
        true => vec![head.with_data(data).message()],
        false => vec![head.message(), zmq::Message::from(data)],
    }
}

#[test]
fn requests_in_both_forms_are_jobs_of_the_lanes_service() {
    for inline in [true, false] {
        let frames = request(7, "sign", &[("a", "1")], b"payload", inline);
        let Parsed::Job(job) = parse(&frames, "sign") else { panic!("a job: {:?}", parse(&frames, "sign")) };
        assert_eq!((job.id, job.data, job.inline), (7, &b"payload"[..], inline));
        let headers: Vec<(&str, &str)> = HeaderIter::new(job.headers).collect::<crate::error::Result<_>>().unwrap();
        assert_eq!(headers, [("a", "1")]);
        // No service named: the lane's.
        assert!(matches!(parse(&request(8, "", &[], b"", inline), "sign"), Parsed::Job(LaneRequest { id: 8, .. })));
    }
}

#[test]
fn other_services_and_other_commands_are_answered_not_run() {
    let frames = request(9, "other", &[], b"x", true);
    let Parsed::Refused { id, status, why } = parse(&frames, "sign") else { panic!("refused") };
    assert_eq!((id, status), (9, Status::UnknownService));
    assert!(why.contains("\"other\""), "{why}");
    let ping = vec![CommandFrame::new(Command::Ping, 3, 0, b"").message()];
    let Parsed::Refused { id, status, why } = parse(&ping, "sign") else { panic!("refused") };
    assert_eq!((id, status), (3, Status::BadRequest));
    assert!(why.contains("broker"), "{why}");
    // Inline data and a data frame both: which is the job's?
    let mut both = request(4, "sign", &[], b"x", true);
    both.push(zmq::Message::from(&b"y"[..]));
    assert!(matches!(parse(&both, "sign"), Parsed::Refused { id: 4, status: Status::BadRequest, .. }));
    let bad_tail = vec![CommandFrame::new(Command::Request, 5, 0, b"\xff").with_data(b"").message()];
    assert!(matches!(parse(&bad_tail, "sign"), Parsed::Refused { id: 5, status: Status::BadRequest, .. }));
}

#[test]
fn bytes_that_are_no_command_cut_the_caller_off() {
    for junk in [vec![zmq::Message::from(&b"GET / HTTP/1.1"[..])], vec![]] {
        assert!(matches!(parse(&junk, "sign"), Parsed::Malformed(_)));
    }
}

#[test]
fn replies_read_as_a_brokers_with_this_pid() {
    // As a caller reads them: one whole message, nothing after it.
    let frames_of = |bytes: &[u8]| {
        let found = crate::local::frame::decode(bytes, usize::MAX).unwrap().expect("a whole message");
        assert_eq!(found.end, bytes.len());
        found.frames.iter().map(|r| bytes[r.clone()].to_vec()).collect::<Vec<_>>()
    };
    let pid = 4321u32;
    for (inline, body, frames) in [(true, vec![1u8; 10], 1), (true, vec![2u8; INLINE_MAX + 1], 2), (false, vec![3], 2)]
    {
        let reply = frames_of(&reply(pid, 11, Status::Ok, &body, inline));
        assert_eq!(reply.len(), frames);
        let head = CommandFrame::decode(&reply[0]).unwrap();
        let want = (Command::Reply, 11, Status::Ok as u32, &pid.to_le_bytes()[..]);
        assert_eq!((head.command, head.id, head.arg, head.tail), want);
        let got = head.data.unwrap_or_else(|| &reply[1][..]);
        assert_eq!(got, &body[..]);
    }
    let closing = frames_of(&reply(pid, LANE_CLOSING, Status::NoWorker, b"closing", true));
    assert_eq!(CommandFrame::decode(&closing[0]).unwrap().id, 0);
}

#[test]
fn lanes_are_named_after_service_and_pid_and_only_then_read_back() {
    use crate::local::{lane_name, parse_lane_name};
    assert_eq!(lane_name("sign", 42).as_deref(), Some("sign@42"));
    assert_eq!(parse_lane_name("sign@42"), Some(("sign", 42)));
    assert_eq!(parse_lane_name("a@b@42"), Some(("a@b", 42)), "the pid is after the last @");
    for service in ["", ".hidden", "a/b", "nul\0", &"x".repeat(201)] {
        assert_eq!(lane_name(service, 1), None, "{service:?}");
    }
    for name in [".sign@1.new", "sign@", "sign@0", "sign@x", "sign", "@5"] {
        assert_eq!(parse_lane_name(name), None, "{name:?}");
    }
    assert_eq!(dir_of(&["ipc:///x".into(), "unix:///r/back.sock".into()]), Some(PathBuf::from("/r/back.sock.lanes")));
    assert_eq!(dir_of(&["tcp://h:1".into()]), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Frames that are often nearly a request: a REQUEST head with a random
    /// tail and data, then any frames; or any bytes at all.
    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let tail = proptest::collection::vec(any::<u8>(), 0..40);
        let near = (any::<u64>(), tail, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(id, tail, inline, data)| {
                let head = CommandFrame::new(Command::Request, id, 0, &tail);
                match inline {
                    true => vec![head.with_data(&data).encode()],
                    false => vec![head.encode(), data],
                }
            },
        );
        let any_frames = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..4);
        prop_oneof![near, any_frames]
    }

    proptest! {
        /// Whatever a caller sends, the lane reads it as a job, a refusal
        /// it answers (with the request's own id), or bytes that cut the
        /// caller off: never a panic, and a job's parts lie in its frames.
        #[test]
        fn any_message_is_a_job_a_refusal_or_malformed(frames in frames()) {
            let frames: Frames = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
            match parse(&frames, "svc") {
                Parsed::Job(job) => {
                    let head = CommandFrame::decode(&frames[0]).unwrap();
                    prop_assert_eq!(job.id, head.id);
                    prop_assert!(job.data.len() <= frames.iter().map(|f| f.len()).sum::<usize>());
                }
                Parsed::Refused { id, status, .. } => {
                    prop_assert_eq!(id, CommandFrame::decode(&frames[0]).unwrap().id);
                    prop_assert!(matches!(status, Status::BadRequest | Status::UnknownService));
                }
                Parsed::Malformed(_) => {}
            }
        }
    }
}

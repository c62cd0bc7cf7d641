//! What the broker receives, classified: pure and total functions from the
//! frames of one message (after the routing identity) to what it means. Every
//! input gives an answer, never a panic; property tests and the fuzzer check it.

use super::legacy::{self, LegacyRequest};
use super::{
    decode_request_tail, Command, CommandFrame, Control, HeaderIter, Registration, ResultTail, Status,
    PRIORITY_DEFAULT, PRIORITY_MAX, RETURN_ELSEWHERE,
};

/// A message on the front (client) socket.
#[derive(Debug, PartialEq)]
pub enum Front<'a> {
    /// Powerhose 0.7 `PING`.
    LegacyPing,
    /// A Powerhose 0.7 job; its headers are re-encoded for the worker.
    LegacyJob {
        /// Its `service` header, or empty (the only service there is).
        service: &'a str,
        /// Its `retry` header: re-sends allowed if its worker is lost (0 if absent or not a number).
        retries: u32,
        /// Its `priority` header (see [`priority_of`]).
        priority: u8,
        /// All its headers, in order.
        headers: Vec<(&'a str, &'a str)>,
        /// The job's data.
        data: &'a [u8],
    },
    /// A REQ envelope with a bad body: answerable in the Powerhose format.
    LegacyBad(String),
    /// `PING`: answer with the broker's pid.
    Ping {
        /// The client's request id, echoed in the reply.
        req_id: u64,
    },
    /// `SERVICE`: how many workers serve `name`.
    Service {
        /// The client's request id, echoed in the reply.
        req_id: u64,
        /// The service name as sent (empty: all services); not yet checked for UTF-8.
        name: &'a [u8],
    },
    /// `CANCEL`: the client cancels its request `req_id`.
    Cancel {
        /// The request to cancel.
        req_id: u64,
    },
    /// `STATUS`: answer with the broker's status JSON.
    Status {
        /// The client's request id, echoed in the reply.
        req_id: u64,
    },
    /// `CONTROL`: a request for the cluster's supervisor.
    Control {
        /// The client's request id, echoed in the reply.
        req_id: u64,
        /// The decoded request, or why its JSON is unusable.
        request: Result<Control, String>,
    },
    /// A job; its data is inline, or else the message's last frame.
    Request {
        /// The client's request id, echoed in the reply.
        req_id: u64,
        /// The client's timeout, in ms from receipt.
        timeout_ms: u32,
        /// The service named, or empty (the only service there is).
        service: &'a str,
        /// The encoded headers, passed to the worker as they are.
        headers: &'a [u8],
        /// Its `retry` header: re-sends allowed if its worker is lost (0 if absent or not a number).
        retries: u32,
        /// Its `priority` header (see [`priority_of`]).
        priority: u8,
        /// The data, when it came inline in the command frame.
        inline: Option<&'a [u8]>,
    },
    /// A native message with a request id but something wrong: answerable.
    BadNative {
        /// The client's request id, echoed in the `BAD_REQUEST` reply.
        req_id: u64,
        /// What is wrong, for the reply's body.
        why: String,
    },
    /// Nothing to answer to (no request id, no REQ envelope).
    Garbage(String),
}

/// Classifies the frames of a front message (identity removed).
pub fn parse_front<'a>(frames: &[&'a [u8]]) -> Front<'a> {
    match frames {
        // REQ envelope: an empty delimiter, then exactly one body frame.
        [[], body] => match legacy::parse_request(body) {
            Ok(LegacyRequest::Ping) => Front::LegacyPing,
            Ok(LegacyRequest::Job { headers, data }) => {
                let find = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                let service = find("service").unwrap_or("");
                let retries = find("retry").and_then(|r| r.parse().ok()).unwrap_or(0);
                let priority = priority_of(find("priority"));
                Front::LegacyJob { service, retries, priority, headers, data }
            }
            Err(e) => Front::LegacyBad(e.to_string()),
        },
        [[], ..] => Front::LegacyBad(format!("expected one frame after the envelope, got {}", frames.len() - 1)),
        [head, rest @ ..] if CommandFrame::is_native(head) => parse_native(head, rest),
        [] => Front::Garbage("empty message".into()),
        _ => Front::Garbage(format!("unrecognised message of {} frames", frames.len())),
    }
}

/// Classifies a front message with more frames than the broker reads
/// (`kept` is how many it read, identity removed; `first` the first of them):
/// a REQ envelope is still answered, or its client would wait forever.
pub fn parse_oversized_front(first: Option<&[u8]>, kept: usize) -> Front<'static> {
    match first {
        Some([]) => Front::LegacyBad(format!("expected one frame after the envelope, got more than {}", kept - 1)),
        _ => Front::Garbage(format!("too many frames (more than {kept})")),
    }
}

fn parse_native<'a>(head: &'a [u8], rest: &[&'a [u8]]) -> Front<'a> {
    let cmd = match CommandFrame::decode(head) {
        Ok(cmd) => cmd,
        // Without a valid frame the request id cannot be trusted.
        Err(e) => return Front::Garbage(e.to_string()),
    };
    let req_id = cmd.id;
    let bad = |why: String| Front::BadNative { req_id, why };
    match (cmd.command, rest.len()) {
        (Command::Ping, 0) => Front::Ping { req_id },
        (Command::Service, 0) => Front::Service { req_id, name: cmd.tail },
        (Command::Status, 0) => Front::Status { req_id },
        (Command::Cancel, 0) => Front::Cancel { req_id },
        (Command::Control, 0) => Front::Control {
            req_id,
            request: serde_json::from_slice(cmd.tail).map_err(|e| format!("bad CONTROL request: {e}")),
        },
        (Command::Request, n) if n == usize::from(cmd.data.is_none()) => {
            let (service, headers) = match decode_request_tail(cmd.tail) {
                Ok(parts) => parts,
                Err(e) => return bad(e.to_string()),
            };
            let retries = match HeaderIter::find(headers, "retry") {
                Ok(r) => r.and_then(|r| r.parse().ok()).unwrap_or(0),
                Err(e) => return bad(e.to_string()),
            };
            let priority = match HeaderIter::find(headers, "priority") {
                Ok(p) => priority_of(p),
                Err(e) => return bad(e.to_string()),
            };
            Front::Request { req_id, timeout_ms: cmd.arg, service, headers, retries, priority, inline: cmd.data }
        }
        (command, n) => bad(format!("unexpected {command:?} with {n} frames after the command frame from a client")),
    }
}

/// A job's level from its `priority` header: 0 to [`PRIORITY_MAX`] (higher
/// is clamped); none, or not a number, is [`PRIORITY_DEFAULT`].
pub fn priority_of(header: Option<&str>) -> u8 {
    header.and_then(|p| p.trim().parse::<u64>().ok()).map_or(PRIORITY_DEFAULT, |p| p.min(PRIORITY_MAX.into()) as u8)
}

/// A message on the back (worker) socket.
#[derive(Debug, PartialEq)]
pub enum Back<'a> {
    /// `READY`: a worker registers (again) and can take a job.
    Ready(Registration),
    /// An answer; its body is inline, or else the second frame (empty when missing).
    Result {
        /// The broker's id of the job answered.
        job_id: u64,
        /// The outcome (a status a worker may not send reads as `HandlerError`).
        status: Status,
        /// Whether the handler still runs, and its run time.
        tail: ResultTail,
        /// The body, when it came inline in the command frame.
        inline: Option<&'a [u8]>,
    },
    /// A job handed back; its data is the second frame.
    Return {
        /// The broker's id of the job handed back.
        job_id: u64,
        /// Its encoded headers, as the `JOB` carried them.
        headers: &'a [u8],
        /// The worker is running another broker's job ([`RETURN_ELSEWHERE`]):
        /// send it nothing until its next `READY`.
        elsewhere: bool,
    },
    /// `HEARTBEAT`: the worker is alive.
    Heartbeat {
        /// The jobs it has answered on its lane so far.
        lane_jobs: u64,
    },
    /// `DISCONNECT`: the worker unregisters; it finishes the jobs it holds, then leaves.
    Disconnect,
    /// Anything else; the text says what was wrong (the broker logs it and counts a bad request).
    Bad(String),
}

/// Classifies the frames of a back message (identity removed).
pub fn parse_back<'a>(frames: &[&'a [u8]]) -> Back<'a> {
    let Some(head) = frames.first() else { return Back::Bad("empty message".into()) };
    let cmd = match CommandFrame::decode(head) {
        Ok(cmd) => cmd,
        Err(e) => return Back::Bad(e.to_string()),
    };
    match (cmd.command, frames.len()) {
        (Command::Ready, 1) => match Registration::decode(cmd.tail) {
            Ok(reg) => Back::Ready(reg),
            Err(e) => Back::Bad(e.to_string()),
        },
        (Command::Result, n) if n == 1 || (n == 2 && cmd.data.is_none()) => Back::Result {
            job_id: cmd.id,
            // An unknown status from a worker is a failed job.
            status: Status::from_u32(cmd.arg).unwrap_or(Status::HandlerError),
            tail: ResultTail::decode(cmd.tail),
            inline: cmd.data,
        },
        (Command::Return, 2) => {
            Back::Return { job_id: cmd.id, headers: cmd.tail, elsewhere: cmd.arg & RETURN_ELSEWHERE != 0 }
        }
        (Command::Heartbeat, 1) => Back::Heartbeat { lane_jobs: cmd.id },
        (Command::Disconnect, 1) => Back::Disconnect,
        (command, n) => {
            Back::Bad(format!("unexpected {command:?} with {} frames after the command frame from a worker", n - 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_headers, encode_request_tail};
    use proptest::prelude::*;

    fn frame(cmd: Command, id: u64, arg: u32, tail: &[u8]) -> Vec<u8> {
        CommandFrame::new(cmd, id, arg, tail).encode()
    }

    #[test]
    fn priorities_are_read_leniently_and_clamped() {
        assert_eq!(priority_of(None), PRIORITY_DEFAULT);
        assert_eq!(priority_of(Some("0")), 0);
        assert_eq!(priority_of(Some(" 9 ")), 9);
        assert_eq!(priority_of(Some("42")), PRIORITY_MAX);
        assert_eq!(priority_of(Some("99999999999999999999")), PRIORITY_DEFAULT);
        assert_eq!(priority_of(Some("high")), PRIORITY_DEFAULT);
        assert_eq!(priority_of(Some("-1")), PRIORITY_DEFAULT);
    }

    #[test]
    fn front_messages_are_classified() {
        assert_eq!(parse_front(&[b"", b"PING"]), Front::LegacyPing);
        assert!(matches!(
            parse_front(&[b"", b"service:s::retry:2:::d"]),
            Front::LegacyJob { service: "s", retries: 2, .. }
        ));
        assert!(matches!(parse_front(&[b"", b"x", b"y"]), Front::LegacyBad(_)));
        assert!(matches!(parse_front(&[b"", b"nonsense"]), Front::LegacyBad(_)));
        let headers = encode_headers([("retry", "3")]);
        let req = frame(Command::Request, 9, 100, &encode_request_tail("echo", &headers));
        assert_eq!(
            parse_front(&[&req, b"data"]),
            Front::Request {
                req_id: 9,
                timeout_ms: 100,
                service: "echo",
                headers: &headers,
                retries: 3,
                priority: 5,
                inline: None
            }
        );
        assert!(matches!(parse_front(&[&req]), Front::BadNative { req_id: 9, .. }));
        let tail = encode_request_tail("echo", &headers);
        let inline = CommandFrame::new(Command::Request, 9, 100, &tail).with_data(b"data").encode();
        assert_eq!(
            parse_front(&[&inline]),
            Front::Request {
                req_id: 9,
                timeout_ms: 100,
                service: "echo",
                headers: &headers,
                retries: 3,
                priority: 5,
                inline: Some(b"data")
            }
        );
        let headers = encode_headers([("priority", "8")]);
        let req = frame(Command::Request, 9, 100, &encode_request_tail("", &headers));
        assert!(matches!(parse_front(&[&req, b"data"]), Front::Request { priority: 8, .. }));
        assert!(matches!(parse_front(&[b"", b"priority:1:::x"]), Front::LegacyJob { priority: 1, .. }));
        // Inline data and a data frame: which one is meant?
        assert!(matches!(parse_front(&[&inline, b"data"]), Front::BadNative { req_id: 9, .. }));
        let ping = frame(Command::Ping, 4, 0, b"");
        assert!(matches!(parse_front(&[&ping, b"extra"]), Front::BadNative { req_id: 4, .. }));
        assert!(matches!(parse_front(&[&frame(Command::Job, 4, 0, b"")]), Front::BadNative { .. }));
        assert!(matches!(parse_front(&[b"PHxx"]), Front::Garbage(_)));
        assert!(matches!(parse_front(&[]), Front::Garbage(_)));
        assert!(matches!(parse_front(&[b"hello"]), Front::Garbage(_)));
        // Too many frames to read: a REQ envelope still gets its answer.
        assert!(matches!(parse_oversized_front(Some(b""), 4), Front::LegacyBad(_)));
        assert!(matches!(parse_oversized_front(Some(b"x"), 4), Front::Garbage(_)));
        assert!(matches!(parse_oversized_front(None, 0), Front::Garbage(_)));
    }

    #[test]
    fn back_messages_are_classified() {
        assert_eq!(parse_back(&[&frame(Command::Heartbeat, 7, 0, b"")]), Back::Heartbeat { lane_jobs: 7 });
        assert_eq!(
            parse_back(&[&frame(Command::Result, 5, 0, &[1]), b"body"]),
            Back::Result {
                job_id: 5,
                status: Status::Ok,
                tail: ResultTail { still_busy: true, run_us: None },
                inline: None
            }
        );
        let inline = CommandFrame::new(Command::Result, 5, 0, &[0]).with_data(b"body").encode();
        assert!(matches!(parse_back(&[&inline]), Back::Result { job_id: 5, inline: Some(b"body"), .. }));
        assert!(matches!(parse_back(&[&inline, b"body"]), Back::Bad(_)));
        let unknown = frame(Command::Result, 5, 999, b"");
        assert!(matches!(parse_back(&[&unknown]), Back::Result { status: Status::HandlerError, .. }));
        assert!(matches!(parse_back(&[&frame(Command::Ready, 0, 0, b"{}")]), Back::Bad(_)));
        assert!(matches!(parse_back(&[&frame(Command::Return, 1, 0, b"")]), Back::Bad(_)));
        for (arg, elsewhere) in [(0, false), (RETURN_ELSEWHERE, true)] {
            let head = frame(Command::Return, 9, arg, b"h");
            let parsed = parse_back(&[&head, b"data"]);
            assert_eq!(parsed, Back::Return { job_id: 9, headers: b"h", elsewhere });
        }
        assert!(matches!(parse_back(&[]), Back::Bad(_)));
        assert!(matches!(parse_back(&[b"garbage"]), Back::Bad(_)));
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let native = (0u8..0x70, any::<u64>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(c, id, arg, tail)| {
                let mut f = frame(Command::Ping, id, arg, &tail);
                f[3] = c;
                f
            },
        );
        let any_frame = prop_oneof![
            native,
            proptest::collection::vec(any::<u8>(), 0..64),
            Just(Vec::new()),
            Just(b"PING".to_vec()),
        ];
        proptest::collection::vec(any_frame, 0..5)
    }

    proptest! {
        #[test]
        fn parsers_are_total(frames in frames()) {
            let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let _ = parse_front(&views);
            let _ = parse_back(&views);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CommandFrame::decode(&bytes);
            let _ = decode_request_tail(&bytes);
            let _ = HeaderIter::new(&bytes).count();
            let _ = legacy::parse_request(&bytes);
            let _ = legacy::parse_reply(&bytes);
            let _ = Registration::decode(&bytes);
        }

        #[test]
        fn requests_round_trip(id in any::<u64>(), timeout in any::<u32>(), service in "[a-z_]{0,20}",
                               pairs in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,16}"), 0..4)) {
            let headers = encode_headers(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let head = frame(Command::Request, id, timeout, &encode_request_tail(&service, &headers));
            match parse_front(&[&head, b"data"]) {
                Front::Request { req_id, timeout_ms, service: s, headers: h, .. } => {
                    prop_assert_eq!((req_id, timeout_ms, s), (id, timeout, service.as_str()));
                    prop_assert_eq!(h, &headers[..]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        // The Powerhose format cannot carry an empty value (`a:` + `:::` reads
        // as `a` + `:::` + `:`), a value ending in `:` or one containing `::`.
        fn legacy_requests_round_trip(pairs in proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9]{1,8}"), 0..4),
                                      data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let headers: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let body = legacy::encode_request(&headers, &data);
            match parse_front(&[b"", &body]) {
                Front::LegacyJob { headers: h, data: d, .. } => {
                    prop_assert_eq!(h, headers);
                    prop_assert_eq!(d, &data[..]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

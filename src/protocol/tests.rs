//! Round trips and rejections of the command frame and its tails.

use super::*;

#[test]
fn command_frame_round_trips() {
    for (cmd, id, arg, tail) in [
        (Command::Request, 7u64, 5000u32, &b"crypto_job"[..]),
        (Command::Ping, u64::MAX, 0, &b""[..]),
        (Command::Reply, 1, Status::NoWorker as u32, &1234u32.to_le_bytes()[..]),
        (Command::Job, 42, 1, &b""[..]),
    ] {
        let frame = CommandFrame::new(cmd, id, arg, tail);
        let bytes = frame.encode();
        assert_eq!(bytes.len(), COMMAND_LEN + tail.len());
        assert_eq!(&frame.message()[..], &bytes[..]);
        assert_eq!(CommandFrame::decode(&bytes).unwrap(), frame);
    }
}

#[test]
fn bad_command_frames_are_errors() {
    assert!(CommandFrame::decode(b"PH").is_err());
    let mut ok = CommandFrame::new(Command::Ping, 1, 0, b"").encode();
    ok[0] = b'X';
    assert!(CommandFrame::decode(&ok).is_err());
    ok[0] = b'P';
    ok[2] = 9;
    assert!(CommandFrame::decode(&ok).unwrap_err().to_string().contains("version 9"));
    ok[2] = VERSION;
    ok[3] = 0x7f;
    assert!(CommandFrame::decode(&ok).unwrap_err().to_string().contains("unknown command 0x7f"));
}

#[test]
fn statuses_round_trip_and_unknown_is_none() {
    for v in 0..9 {
        assert_eq!(Status::from_u32(v).unwrap() as u32, v);
    }
    assert_eq!(Status::from_u32(9), None);
}

#[test]
fn every_variant_decodes_back_to_itself() {
    assert_eq!(Command::ALL.len(), 15);
    for &c in Command::ALL {
        assert_eq!(Command::from_byte(c as u8), Some(c));
    }
    assert_eq!(Status::ALL.len(), 9);
    for &s in Status::ALL {
        assert_eq!(Status::from_u32(s as u32), Some(s));
    }
}

#[test]
fn control_requests_round_trip_as_json() {
    for c in [
        Control::Reload,
        Control::Scale { workers: Some(3), delta: None },
        Control::Scale { workers: None, delta: Some(-1) },
    ] {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), c);
    }
    assert_eq!(serde_json::to_string(&Control::Reload).unwrap(), r#"{"op":"reload"}"#);
    assert!(serde_json::from_str::<Control>(r#"{"op":"explode"}"#).is_err());
}

#[test]
fn job_args_and_result_tails_round_trip() {
    for (ms, backlog) in [(0, false), (1, true), (5000, false), (JOB_BACKLOG - 1, true)] {
        assert_eq!(split_job_arg(job_arg(ms, backlog)), (ms, backlog));
    }
    assert_eq!(split_job_arg(job_arg(u32::MAX, false)), (JOB_BACKLOG - 1, false));
    for tail in [
        ResultTail::default(),
        ResultTail { still_busy: true, run_us: None },
        ResultTail { still_busy: false, run_us: Some(123_456) },
    ] {
        let (bytes, n) = tail.encode();
        assert_eq!(ResultTail::decode(&bytes[..n]), tail);
    }
    assert_eq!(ResultTail::decode(b""), ResultTail::default());
    assert_eq!(ResultTail::decode(&[1, 2]), ResultTail { still_busy: true, run_us: None });
}

#[test]
fn registration_without_coalesce_decodes() {
    let json = br#"{"service":"s","pid":1,"host":"h","plugin":"p","plugin_version":"1"}"#;
    assert_eq!(Registration::decode(json).unwrap().coalesce_us, 0);
}

#[test]
fn request_tails_round_trip() {
    let headers = encode_headers([("op", "sign")]);
    for service in ["", "crypto_job", "sérvice"] {
        let tail = encode_request_tail(service, &headers);
        assert_eq!(decode_request_tail(&tail).unwrap(), (service, &headers[..]));
    }
    assert!(decode_request_tail(b"").is_err());
    assert!(decode_request_tail(&[5, 0, b'a']).is_err());
    assert!(decode_request_tail(&[1, 0, 0xff]).is_err());
}

#[test]
fn registration_round_trips() {
    let r = Registration {
        service: "echo".into(),
        pid: 9,
        host: "h".into(),
        plugin: "echo".into(),
        plugin_version: "0.1.0".into(),
        coalesce_us: 5000,
        inline: true,
    };
    assert_eq!(Registration::decode(&r.encode()).unwrap(), r);
    assert!(Registration::decode(b"{").is_err());
}

#[test]
fn a_request_appended_in_one_pass_is_the_command_frame_encoded() {
    let headers = [("op", "sign"), ("rounds", ""), ("retry", "2")];
    for (service, data) in [("echo", Some(&b"hello"[..])), ("", Some(&b""[..])), ("crypto", None)] {
        let tail = encode_request_tail(service, &encode_headers(headers));
        let frame = CommandFrame::new(Command::Request, 77, 1500, &tail);
        let frame = match data {
            Some(data) => frame.with_data(data),
            None => frame,
        };
        let mut out = b"before".to_vec();
        append_request(&mut out, 77, 1500, service, headers, data);
        assert_eq!(&out[..6], b"before");
        assert_eq!(out[6..], frame.encode()[..], "{service:?} {data:?}");
    }
}

#[test]
fn inline_data_round_trips() {
    let big = vec![7u8; INLINE_MAX];
    for (cmd, tail, data) in [
        (Command::Request, &b"\x04\x00echo"[..], &b"hello"[..]),
        (Command::Job, &b""[..], &b""[..]),
        (Command::Result, &[1u8, 2, 3, 4, 5][..], &big[..]),
        (Command::Reply, &9u32.to_le_bytes()[..], &b"x"[..]),
    ] {
        let frame = CommandFrame::new(cmd, 3, 4, tail).with_data(data);
        let bytes = frame.encode();
        assert_eq!(bytes.len(), COMMAND_LEN + tail.len() + data.len() + 4);
        assert_eq!(bytes[3], cmd as u8 | INLINE);
        assert_eq!(&frame.message()[..], &bytes[..]);
        let back = CommandFrame::decode(&bytes).unwrap();
        assert_eq!(back, frame);
        assert_eq!((back.tail, back.data), (tail, Some(data)));
    }
}

#[test]
fn inline_lengths_that_do_not_fit_are_errors() {
    let mut bytes = CommandFrame::new(Command::Job, 1, 0, b"").with_data(b"abc").encode();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    assert!(CommandFrame::decode(&bytes).unwrap_err().to_string().contains("inline data length"));
    let mut short = CommandFrame::new(Command::Job, 1, 0, b"").encode();
    short[3] |= INLINE;
    assert!(CommandFrame::decode(&short).is_err(), "the flag without room for a length");
    let mut all = CommandFrame::new(Command::Job, 1, 0, b"ab").with_data(b"").encode();
    let n = all.len();
    all[n - 4..].copy_from_slice(&2u32.to_le_bytes());
    let f = CommandFrame::decode(&all).unwrap();
    assert_eq!((f.tail, f.data), (&b""[..], Some(&b"ab"[..])), "data may take the whole rest");
}

#[test]
fn patching_turns_a_request_into_a_job_in_place() {
    let tail = encode_request_tail("echo", &encode_headers([("op", "sign")]));
    let mut bytes = CommandFrame::new(Command::Request, 7, 5000, &tail).with_data(b"payload").encode();
    patch(&mut bytes, Command::Job, 42, job_arg(4000, true));
    let job = CommandFrame::decode(&bytes).unwrap();
    assert_eq!((job.command, job.id, split_job_arg(job.arg)), (Command::Job, 42, (4000, true)));
    assert_eq!((job.tail, job.data), (&tail[..], Some(&b"payload"[..])));
    // A two-frame command stays two-frame.
    let mut plain = CommandFrame::new(Command::Result, 1, 0, b"").encode();
    patch(&mut plain, Command::Reply, 2, 3);
    assert_eq!(CommandFrame::decode(&plain).unwrap(), CommandFrame::new(Command::Reply, 2, 3, b""));
}

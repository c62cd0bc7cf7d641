//! What a lane reads and writes, pure: a caller's `REQUEST` as a job (or
//! why it is refused), and a `REPLY` as a broker would send it.

use std::ops::Deref;

use crate::local::frame::append_frame;
use crate::protocol::{Command, CommandFrame, Status, INLINE_MAX};

/// A job as a caller sent it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LaneRequest<'f> {
    pub id: u64,
    pub headers: &'f [u8],
    pub data: &'f [u8],
    pub inline: bool,
}

/// What a caller's message is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'f> {
    Job(LaneRequest<'f>),
    /// A request the lane answers without running it.
    Refused {
        id: u64,
        status: Status,
        why: String,
    },
    /// Not a request: the caller is cut off.
    Malformed(String),
}

/// Reads a caller's message (pure): its frames where they were read.
pub(super) fn parse<'f, F: Deref<Target = [u8]>>(frames: &'f [F], service: &str) -> Parsed<'f> {
    let Some(Ok(cmd)) = frames.first().map(|f| CommandFrame::decode(f)) else {
        return Parsed::Malformed("a message that is no command frame".into());
    };
    if cmd.command != Command::Request {
        let why = format!("a lane runs jobs only: {:?} goes to the broker", cmd.command);
        return Parsed::Refused { id: cmd.id, status: Status::BadRequest, why };
    }
    let (named, headers) = match crate::protocol::decode_request_tail(cmd.tail) {
        Ok(tail) => tail,
        Err(e) => return Parsed::Refused { id: cmd.id, status: Status::BadRequest, why: e.to_string() },
    };
    if !named.is_empty() && named != service {
        let why = format!("this lane serves {service:?}, not {named:?}");
        return Parsed::Refused { id: cmd.id, status: Status::UnknownService, why };
    }
    let (data, inline) = match (cmd.data, frames.len()) {
        (Some(data), 1) => (data, true),
        (None, 2) => (&frames[1][..], false),
        _ => {
            let why = "a REQUEST needs its data inline or in one frame after it".to_string();
            return Parsed::Refused { id: cmd.id, status: Status::BadRequest, why };
        }
    };
    Parsed::Job(LaneRequest { id: cmd.id, headers, data, inline })
}

/// A `REPLY` as a broker sends it, framed for the caller's connection:
/// the worker's `pid` as tail; inline when the request was and the body fits.
pub(super) fn reply(pid: u32, id: u64, status: Status, body: &[u8], inline: bool) -> Vec<u8> {
    let pid = pid.to_le_bytes();
    let head = CommandFrame::new(Command::Reply, id, status as u32, &pid);
    let mut out = Vec::with_capacity(body.len() + 64);
    if inline && body.len() <= INLINE_MAX {
        append_frame(&mut out, false, |o| head.with_data(body).append_to(o));
    } else {
        append_frame(&mut out, true, |o| head.append_to(o));
        append_frame(&mut out, false, |o| o.extend_from_slice(body));
    }
    out
}

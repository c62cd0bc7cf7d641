//! The native wire protocol: frame layouts, commands and status codes, as pure
//! encode/decode functions (no sockets here). PROTOCOL.md is the prose version.
//!
//! Every native message is a multipart ZeroMQ message whose first frame is a
//! 16-byte *command frame* (plus an optional tail):
//!
//! | bytes  | field                                                          |
//! |--------|----------------------------------------------------------------|
//! | 0..2   | magic `PH`                                                     |
//! | 2      | protocol version, `1`                                          |
//! | 3      | command (see [`Command`]); bit 6 ([`INLINE`]): data inline    |
//! | 4..12  | `id`, u64 little-endian: request id (client) or job id (worker) |
//! | 12..16 | `arg`, u32 little-endian: timeout ms or status (per command)   |
//! | 16..   | tail: per command (service name, worker pid, flags, JSON)      |
//!
//! | command         | dir      | id     | arg        | tail              | further frames      |
//! |-----------------|----------|--------|------------|-------------------|---------------------|
//! | `REQUEST` 0x01  | C→B      | req id | timeout ms | service, headers  | data                |
//! | `PING` 0x02     | C→B      | req id | 0          | —                 | —                   |
//! | `SERVICE` 0x03  | C→B      | req id | 0          | service (UTF-8)   | —                   |
//! | `STATUS` 0x04   | C→B      | req id | 0          | —                 | —                   |
//! | `CONTROL` 0x05  | C→B      | req id | 0          | JSON [`Control`]  | —                   |
//! | `REPLY` 0x81    | B→C      | req id | status     | pid u32 LE        | body                |
//! | `READY` 0x11    | W→B      | 0      | 0          | registration JSON | —                   |
//! | `RESULT` 0x12   | W→B      | job id | status     | —                 | body                |
//! | `HEARTBEAT` 0x13| W→B, B→W | lane jobs (W→B) | 0 | —                 | —                   |
//! | `DISCONNECT` 0x14| W→B, B→W| 0      | 0          | —                 | —                   |
//! | `RETURN` 0x15   | W→B      | job id | 0          | headers           | data                |
//! | `JOB` 0x21      | B→W      | job id | timeout ms | headers           | data                |
//!
//! `JOB` arg: bits 0–30 are the ms left to the client's deadline, bit 31
//! ([`JOB_BACKLOG`]) says more jobs wait at the broker, so the worker may hold
//! this job's `RESULT` a little (see [`ResultTail`]). `RESULT` tail: byte 0
//! flags (bit 0: timed out, handler still running), then optionally the
//! handler's run time, u32 LE µs. `READY`'s registration may carry
//! `coalesce_us`, how long the worker may hold results under backlog.
//!
//! Inline data: a `REQUEST`, `JOB`, `RESULT` or `REPLY` with [`INLINE`] set
//! has no further frame; its data (body) ends the command frame, followed
//! by its length, u32 LE: `16 fixed bytes | tail | data | u32 LE length`.
//! Clients inline data up to [`INLINE_MAX`] bytes: one frame per message
//! instead of two. The broker then forwards the frame itself, patched in
//! place ([`patch`]): so an inline `JOB`'s tail is the `REQUEST` tail
//! (service, then headers), and an inline `REPLY`'s tail is the worker's
//! `RESULT` tail with the worker's pid written over its first 4 bytes
//! (readers take the pid from those 4 bytes and ignore the rest). The broker
//! sends inline `JOB`s only to workers whose `READY` says `inline`, and only
//! for inline requests; such a worker answers inline exactly the inline
//! `JOB`s; a client must read both forms of `REPLY`. Peers that never set
//! the bit keep the two-frame form throughout.
//!
//! `REQUEST` tail: `u16 LE service length, service (UTF-8), headers`. Headers
//! (in `REQUEST`, `JOB` and `RETURN` tails): zero or more `u16 LE name length,
//! name, u32 LE value length, value`, names and values UTF-8. Headers ride in
//! the command frame (one frame less per hop); the data keeps its own frame,
//! so the broker forwards it without copying. A `REPLY` to a `PING` has the broker's pid
//! as body (decimal ASCII), like Powerhose's; to a `SERVICE`, the number of
//! workers registered for that service (all services when empty), status `OK`
//! when there is at least one, `NO_WORKER` otherwise; to a `STATUS`, a JSON
//! [`crate::status::BrokerStatus`].

mod headers;
pub mod inline;
pub mod legacy;
pub mod parse;
mod tails;
mod timing;

pub use headers::{append_headers, encode_headers, HeaderIter};
pub use tails::{
    append_service, decode_request_tail, encode_request_tail, job_arg, split_job_arg, Control, Registration,
    ResultTail, JOB_BACKLOG,
};
pub use timing::*;

use crate::error::{Error, Result};

/// Length of the fixed part of a command frame.
pub const COMMAND_LEN: usize = 16;
const MAGIC: &[u8; 2] = b"PH";
const VERSION: u8 = 1;

/// Declares a wire enum, its values and its decoding from one variant list,
/// so a value added to the enum cannot be missing from the decoding (a value
/// used twice is an unreachable pattern).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident, decoded by $from_vis:vis fn $from:ident {
            $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr($repr)]
        $vis enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[cfg(test)]
            const ALL: &[$name] = &[$($name::$variant),+];

            /// The value's variant; `None` for a value the wire format does not define.
            $from_vis fn $from(v: $repr) -> Option<$name> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// The native commands; the byte values are part of the wire format.
    pub enum Command: u8, decoded by fn from_byte {
        /// Client → broker: run a job (service and headers in the tail, then the data).
        Request = 0x01,
        /// Client → broker: is the broker there? Answered with its pid.
        Ping = 0x02,
        /// Client → broker: how many workers serve a service (all, if the tail is empty).
        Service = 0x03,
        /// Client → broker: the broker's [`crate::status::BrokerStatus`], as JSON.
        Status = 0x04,
        /// Client → broker: a [`Control`] request for the cluster's supervisor.
        Control = 0x05,
        /// Client → broker: cancel request `id` of this client. Not answered
        /// itself: the request's own `REPLY` says `CANCELLED` (or how it
        /// ended, if it ended first).
        Cancel = 0x06,
        /// Broker → client: the answer to any of the above; `arg` is a [`Status`].
        Reply = 0x81,
        /// Worker → broker: register (a [`Registration`] in the tail), or register again.
        Ready = 0x11,
        /// Worker → broker: a job's answer; `arg` is a [`Status`], the tail a [`ResultTail`].
        Result = 0x12,
        /// Either way between broker and worker: still alive.
        Heartbeat = 0x13,
        /// Either way between broker and worker: leaving (or: register again, from the broker).
        Disconnect = 0x14,
        /// Worker → broker: a job handed back unrun (its handler is stuck), to go first in line again.
        Return = 0x15,
        /// Broker → worker: run a job; `arg` is the ms left and the backlog bit (see [`job_arg`]).
        Job = 0x21,
        /// Broker → worker: job `id` is cancelled: its handler is told (it
        /// may return early), or, not started yet, it is answered unrun.
        CancelJob = 0x22,
        /// Broker → worker: give job `id` back unrun (`RETURN`) if it has
        /// not started: a job of higher priority waits behind it.
        Recall = 0x23,
    }
}

wire_enum! {
    /// Outcome codes carried in the `arg` of `REPLY` and `RESULT`.
    pub enum Status: u32, decoded by pub fn from_u32 {
        /// Success; the body is the handler's result.
        Ok = 0,
        /// The handler returned an error (or panicked); the body is its message.
        HandlerError = 1,
        /// The job's deadline passed before an answer came.
        Timeout = 2,
        /// No worker serves the job's service.
        NoWorker = 3,
        /// The worker holding the job disappeared.
        WorkerLost = 4,
        /// The service's queue is full.
        Busy = 5,
        /// The job named a service no worker has ever registered while others exist.
        UnknownService = 6,
        /// The request was malformed; the body says why.
        BadRequest = 7,
        /// The client cancelled the job.
        Cancelled = 8,
    }
}

/// Bit 6 of the command byte: the data (or body) is inline, at the end of
/// the command frame, instead of in a frame of its own.
pub const INLINE: u8 = 0x40;

/// Data up to this size travels inline: one frame per message instead of
/// two, and the broker forwards the frame itself (patched in place).
pub const INLINE_MAX: usize = 2048;

/// The request id of the `REPLY` (status `NO_WORKER`) a worker's lane sends
/// each caller as it closes: no request has it (clients count from 1). A
/// caller that reads it knows its unanswered requests were not run, and
/// sends them to the broker; a lane closed without it (its worker died)
/// may have run them.
pub const LANE_CLOSING: u64 = 0;

/// Bit 0 of a `RETURN`'s arg: the worker serves several brokers and is
/// running another one's job. The broker puts the job first in line again
/// and sends that worker nothing until its next `READY`, which it sends
/// when it is free.
pub const RETURN_ELSEWHERE: u32 = 1;

/// A decoded command frame; `tail` and `data` borrow from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandFrame<'a> {
    /// What the message is.
    pub command: Command,
    /// The client's request id, or the broker's job id (0 when unused).
    pub id: u64,
    /// A timeout in ms or a [`Status`], depending on the command (0 when unused).
    pub arg: u32,
    /// The bytes after the fixed 16, up to any inline data; their meaning depends on the command.
    pub tail: &'a [u8],
    /// Inline data: the frame ends with the data and its length (u32 LE)
    /// and has [`INLINE`] set.
    pub data: Option<&'a [u8]>,
}

impl<'a> CommandFrame<'a> {
    /// A frame without inline data.
    pub fn new(command: Command, id: u64, arg: u32, tail: &'a [u8]) -> Self {
        CommandFrame { command, id, arg, tail, data: None }
    }

    /// The same frame carrying `data` inline.
    pub fn with_data(self, data: &'a [u8]) -> Self {
        CommandFrame { data: Some(data), ..self }
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        COMMAND_LEN + self.tail.len() + self.data.map_or(0, |d| d.len() + 4)
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(MAGIC);
        out[2] = VERSION;
        patch(out, self.command, self.id, self.arg);
        let end = COMMAND_LEN + self.tail.len();
        out[COMMAND_LEN..end].copy_from_slice(self.tail);
        match self.data {
            Some(data) => {
                out[3] |= INLINE;
                out[end..end + data.len()].copy_from_slice(data);
                let n = u32::try_from(data.len()).expect("inline data under 4 GiB");
                out[end + data.len()..].copy_from_slice(&n.to_le_bytes());
            }
            None => out[3] &= !INLINE,
        }
    }

    /// Writes the frame into `buf` (cleared first), so callers can reuse a buffer.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        self.append_to(buf);
    }

    /// Writes the frame at the end of `buf`.
    pub fn append_to(&self, buf: &mut Vec<u8>) {
        let at = buf.len();
        buf.resize(at + self.encoded_len(), 0);
        self.write(&mut buf[at..]);
    }

    /// The frame as a ZeroMQ message, written in place (small frames fit in
    /// the message itself: no allocation).
    pub fn message(&self) -> zmq::Message {
        let mut msg = zmq::Message::with_size(self.encoded_len());
        self.write(&mut msg);
        msg
    }

    /// The frame's bytes, in a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Reads a frame; a short frame, wrong magic or version, unknown command
    /// or inconsistent inline length is an [`Error::Protocol`].
    pub fn decode(frame: &'a [u8]) -> Result<Self> {
        if frame.len() < COMMAND_LEN {
            return Err(Error::Protocol(format!("command frame of {} bytes, need {COMMAND_LEN}", frame.len())));
        }
        if &frame[0..2] != MAGIC {
            return Err(Error::Protocol("command frame does not start with \"PH\"".into()));
        }
        if frame[2] != VERSION {
            return Err(Error::Protocol(format!("protocol version {} (this build speaks {VERSION})", frame[2])));
        }
        let command = Command::from_byte(frame[3] & !INLINE)
            .ok_or_else(|| Error::Protocol(format!("unknown command 0x{:02x}", frame[3])))?;
        let id = u64::from_le_bytes(frame[4..12].try_into().expect("8 bytes"));
        let arg = u32::from_le_bytes(frame[12..16].try_into().expect("4 bytes"));
        let rest = &frame[COMMAND_LEN..];
        if frame[3] & INLINE == 0 {
            return Ok(CommandFrame { command, id, arg, tail: rest, data: None });
        }
        let bad = || Error::Protocol(format!("inline data length does not fit a {}-byte frame", frame.len()));
        let at = rest.len().checked_sub(4).ok_or_else(bad)?;
        let n = u32::from_le_bytes(rest[at..].try_into().expect("4 bytes")) as usize;
        let start = at.checked_sub(n).ok_or_else(bad)?;
        Ok(CommandFrame { command, id, arg, tail: &rest[..start], data: Some(&rest[start..at]) })
    }

    /// True when a frame looks like a native command frame (magic present).
    pub fn is_native(frame: &[u8]) -> bool {
        frame.len() >= 2 && &frame[0..2] == MAGIC
    }
}

/// Rewrites the command (keeping the [`INLINE`] bit), id and arg of an
/// encoded command frame in place: how the broker turns an inline
/// `REQUEST` into a `JOB`, and an inline `RESULT` into a `REPLY`, without
/// copying or allocating.
pub fn patch(frame: &mut [u8], command: Command, id: u64, arg: u32) {
    frame[3] = command as u8 | (frame[3] & INLINE);
    frame[4..12].copy_from_slice(&id.to_le_bytes());
    frame[12..16].copy_from_slice(&arg.to_le_bytes());
}

/// Appends a `REQUEST` frame to `out`, the one [`CommandFrame`] encodes
/// for this tail (the service, then the headers) and data (inline when
/// `Some`), in one pass and with no buffer of its own: how a client frames
/// a job straight into the buffer it is sent from.
pub fn append_request<'h>(
    out: &mut Vec<u8>,
    id: u64,
    timeout_ms: u32,
    service: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    data: Option<&[u8]>,
) {
    let start = out.len();
    out.extend_from_slice(&[0; COMMAND_LEN]);
    let head = &mut out[start..];
    head[0..2].copy_from_slice(MAGIC);
    head[2] = VERSION;
    head[3] = if data.is_some() { INLINE } else { 0 };
    patch(head, Command::Request, id, timeout_ms);
    append_service(out, service);
    append_headers(out, headers);
    if let Some(data) = data {
        out.extend_from_slice(data);
        let n = u32::try_from(data.len()).expect("inline data under 4 GiB");
        out.extend_from_slice(&n.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;

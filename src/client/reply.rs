//! What a broker answered: a reply's parsed frames ([`reply_of`]), and how a
//! request ended ([`Outcome`]), whichever transport carried it.

use crate::protocol::{Command, CommandFrame, Status};

/// A reply as it came from the broker: its body is `frame[body]` (the body
/// frame, or the end of an inline REPLY frame: kept there, not copied).
pub(crate) struct Reply {
    pub status: Status,
    pub pid: u32,
    frame: Held,
    body: std::ops::Range<usize>,
}

/// Where a reply's bytes are: the ZeroMQ message they came in, or bytes
/// copied once from a local connection's buffer.
enum Held {
    Message(zmq::Message),
    Bytes(Vec<u8>),
}

impl std::ops::Deref for Held {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Held::Message(m) => m,
            Held::Bytes(b) => b,
        }
    }
}

impl Reply {
    /// A reply made here, as a broker would have sent it.
    pub fn made(status: Status, pid: u32, body: Vec<u8>) -> Reply {
        let body_len = body.len();
        Reply { status, pid, frame: Held::Bytes(body), body: 0..body_len }
    }

    pub fn body(&self) -> &[u8] {
        &self.frame[self.body.clone()]
    }

    /// The body, moved out when it is all the reply holds (one read off a
    /// local connection), copied otherwise.
    pub fn into_body(self) -> Vec<u8> {
        match self.frame {
            Held::Bytes(bytes) if self.body == (0..bytes.len()) => bytes,
            frame => frame[self.body].to_vec(),
        }
    }
}

/// How one request ended.
pub(crate) enum Outcome {
    Reply(Reply),
    /// Sent, but no reply before the deadline.
    Timeout,
    /// Never sent (no connection), or the connection is gone.
    Unreachable,
    /// Sent, then the connection dropped before the reply came (see
    /// `Mux::fail_sent`): the broker may or may not have run it.
    Lost,
}

/// A reply's request id and contents from its first frame (`head`) and the
/// body frame that followed it (`extra` frames in all after `head`); `None`
/// for a malformed one (logged: it is skipped).
pub(crate) fn reply_of(head: zmq::Message, body: zmq::Message, extra: usize) -> Option<(u64, Reply)> {
    let (id, status, pid, inline) = parse(&head, extra)?;
    let reply = match inline {
        Some(range) => Reply { status, pid, frame: Held::Message(head), body: range },
        None => Reply { status, pid, body: 0..body.len(), frame: Held::Message(body) },
    };
    Some((id, reply))
}

/// A reply read on a local connection, from its frames in place: only
/// the body is copied, once (`None`, logged, if malformed).
pub(crate) fn reply_of_parts(mut parts: crate::local::Parts<'_>) -> Option<(u64, Reply)> {
    let extra = parts.len().saturating_sub(1);
    let head = parts.next()?;
    let (id, status, pid, inline) = parse(head, extra)?;
    let body = match inline {
        Some(range) => head[range].to_vec(),
        None => parts.next().unwrap_or_default().to_vec(),
    };
    Some((id, Reply::made(status, pid, body)))
}

/// A reply's id, status, pid and, for an inline one, where its body is in
/// `head`; `None` (logged) for a malformed one.
fn parse(head: &[u8], extra: usize) -> Option<(u64, Status, u32, Option<std::ops::Range<usize>>)> {
    let cmd = match CommandFrame::decode(head) {
        Ok(cmd) if cmd.command == Command::Reply && extra <= usize::from(cmd.data.is_none()) => cmd,
        _ => {
            tracing::warn!("malformed reply from the broker ignored");
            return None;
        }
    };
    let Some(status) = Status::from_u32(cmd.arg) else {
        tracing::warn!(status = cmd.arg, "reply with an unknown status ignored");
        return None;
    };
    // The pid is the tail's first 4 bytes; an inline REPLY may have more.
    let pid = cmd.tail.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let end = head.len();
    let inline = cmd.data.map(|d| end - 4 - d.len()..end - 4);
    Some((cmd.id, status, pid, inline))
}

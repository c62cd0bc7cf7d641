//! What a broker answered: a reply's parsed frames ([`reply_of`]), and how a
//! request ended ([`Outcome`]), whichever transport carried it.

use crate::protocol::{Command, CommandFrame, Status};

/// A reply as it came from the broker: its body is `frame[body]` (the body
/// frame, or the end of an inline REPLY frame: kept there, not copied).
pub(crate) struct Reply {
    pub status: Status,
    pub pid: u32,
    frame: zmq::Message,
    body: std::ops::Range<usize>,
}

impl Reply {
    /// A reply made here, as a broker would have sent it.
    pub fn made(status: Status, pid: u32, body: Vec<u8>) -> Reply {
        let body_len = body.len();
        Reply { status, pid, frame: zmq::Message::from(body), body: 0..body_len }
    }

    pub fn body(&self) -> &[u8] {
        &self.frame[self.body.clone()]
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
    let cmd = match CommandFrame::decode(&head) {
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
    let (id, end) = (cmd.id, head.len());
    let reply = match cmd.data.map(|d| d.len()) {
        Some(n) => Reply { status, pid, frame: head, body: end - 4 - n..end - 4 },
        None => Reply { status, pid, body: 0..body.len(), frame: body },
    };
    Some((id, reply))
}

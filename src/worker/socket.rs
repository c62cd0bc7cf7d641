//! A worker's connection to one broker: a ZeroMQ DEALER (ipc, tcp, CURVE),
//! or the local transport for a `unix://` backend. Both are used the same
//! way: whole messages sent without waiting for a broker that is not there,
//! messages read without blocking, and a poll item.
//!
//! A local connection is dialled again (every [`LOCAL_REDIAL`]) while it is
//! down, and a new one is reported once ([`BrokerSocket::take_reconnected`])
//! so the worker registers at once rather than after its broker's silence.
//!
//! [`LOCAL_REDIAL`]: crate::protocol::LOCAL_REDIAL

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::local::Conn;
use crate::protocol::{LOCAL_REDIAL, LOCAL_SEND_WAIT};

/// One broker's socket.
pub(super) enum BrokerSocket {
    Zmq(zmq::Socket),
    Local(LocalSocket),
}

/// The local transport's side of [`BrokerSocket`]; used by one thread at a
/// time (the worker's sockets are behind a mutex).
pub(super) struct LocalSocket {
    path: PathBuf,
    identity: Vec<u8>,
    conn: RefCell<Option<Conn>>,
    next_dial: Cell<Instant>,
    reconnected: Cell<bool>,
    /// The last poll found the connection readable, and nothing has read it
    /// since (see [`BrokerSocket::recv_polled`]).
    readable: Cell<bool>,
    /// Sends are queued, written together at [`BrokerSocket::uncork`].
    corked: Cell<bool>,
}

impl LocalSocket {
    pub(super) fn new(endpoint: &str, identity: &str) -> Result<LocalSocket> {
        let path = crate::local::path_of(endpoint)
            .ok_or_else(|| Error::BadFlag(format!("{endpoint} is not a unix:// endpoint")))?;
        let socket = LocalSocket {
            path,
            identity: identity.as_bytes().to_vec(),
            conn: RefCell::new(None),
            next_dial: Cell::new(Instant::now()),
            reconnected: Cell::new(false),
            readable: Cell::new(true),
            corked: Cell::new(false),
        };
        socket.dial(Instant::now());
        Ok(socket)
    }

    /// Connects if unconnected and a dial is due; true when connected.
    fn dial(&self, now: Instant) -> bool {
        let mut conn = self.conn.borrow_mut();
        if conn.is_some() {
            return true;
        }
        if now < self.next_dial.get() {
            return false;
        }
        self.next_dial.set(now + LOCAL_REDIAL);
        match crate::local::connect(&self.path, &self.identity) {
            Ok(c) => {
                *conn = Some(c);
                self.reconnected.set(true);
                self.readable.set(true);
                true
            }
            Err(e) => {
                tracing::debug!("no broker at unix://{} yet: {e}", self.path.display());
                false
            }
        }
    }

    /// Sends a whole message; `Ok(false)` when no broker is connected (it
    /// is dropped: the broker that would have read it is gone).
    pub(super) fn send(&self, frames: &[&[u8]]) -> Result<bool> {
        if !self.dial(Instant::now()) {
            return Ok(false);
        }
        if self.corked.get() {
            self.conn.borrow_mut().as_mut().expect("dialled").queue(frames);
            return Ok(true);
        }
        Ok(self.write_by(|c, deadline| c.send_by(frames, deadline)))
    }

    /// Runs `write` on the connection, with [`LOCAL_SEND_WAIT`] to finish;
    /// false when there is none or the write fails (the connection ends).
    fn write_by(&self, write: impl FnOnce(&mut Conn, Option<Instant>) -> std::io::Result<()>) -> bool {
        let mut conn = self.conn.borrow_mut();
        let Some(c) = conn.as_mut() else { return false };
        match write(c, Some(Instant::now() + LOCAL_SEND_WAIT)) {
            Ok(()) => true,
            Err(e) => {
                drop(conn);
                self.drop_conn(&e);
                false
            }
        }
    }

    fn drop_conn(&self, why: &std::io::Error) {
        if self.conn.borrow_mut().take().is_some() {
            tracing::info!("the connection to the broker at unix://{} ended: {why}", self.path.display());
        }
    }
}

impl BrokerSocket {
    /// Connects to `backend` as `identity` (in the background for ZeroMQ;
    /// a local broker that is not there yet is dialled again later).
    pub(super) fn connect(
        ctx: &zmq::Context,
        options: &super::WorkerOptions,
        identity: &str,
        backend: &str,
    ) -> Result<BrokerSocket> {
        match crate::local::is_local(backend) {
            true => LocalSocket::new(backend, identity).map(BrokerSocket::Local),
            false => super::wire::connect(ctx, options, identity, backend).map(BrokerSocket::Zmq),
        }
    }

    /// The ZeroMQ socket, if that is what this is.
    pub(super) fn zmq(&self) -> Option<&zmq::Socket> {
        match self {
            BrokerSocket::Zmq(socket) => Some(socket),
            BrokerSocket::Local(_) => None,
        }
    }

    /// Queues what is sent until [`BrokerSocket::uncork`] (local only).
    pub(super) fn cork(&self) {
        if let BrokerSocket::Local(local) = self {
            local.corked.set(true);
        }
    }

    /// Writes what was queued since [`BrokerSocket::cork`] in one go.
    pub(super) fn uncork(&self) -> Result<bool> {
        let BrokerSocket::Local(local) = self else { return Ok(true) };
        local.corked.set(false);
        Ok(local.write_by(|c, deadline| c.flush_by(deadline)))
    }

    /// Reads one message without blocking; false when none is waiting.
    pub(super) fn recv_frames(&self, frames: &mut Vec<zmq::Message>) -> Result<bool> {
        let local = match self {
            BrokerSocket::Zmq(socket) => return super::wire::recv_zmq(socket, frames),
            BrokerSocket::Local(local) => local,
        };
        frames.clear();
        let mut conn = local.conn.borrow_mut();
        let Some(c) = conn.as_mut() else { return Ok(false) };
        match c.try_recv() {
            Ok(Some(message)) => {
                frames.extend(message);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                drop(conn);
                local.drop_conn(&e);
                Ok(false)
            }
        }
    }

    /// [`BrokerSocket::recv_frames`] for a loop that polls the socket: a
    /// local connection is read only if the last poll found it readable
    /// ([`BrokerSocket::polled`]) or a message is already buffered, which
    /// spares a read that would find nothing after each message.
    pub(super) fn recv_polled(&self, frames: &mut Vec<zmq::Message>) -> Result<bool> {
        if let BrokerSocket::Local(local) = self {
            let buffered = local.conn.borrow().as_ref().is_some_and(Conn::has_message);
            if !buffered && !local.readable.replace(false) {
                frames.clear();
                return Ok(false);
            }
        }
        self.recv_frames(frames)
    }

    /// What a poll said of this socket's item (see [`BrokerSocket::recv_polled`]).
    pub(super) fn polled(&self, item: &zmq::PollItem<'_>) {
        if let BrokerSocket::Local(local) = self {
            if item.is_readable() || item.is_error() {
                local.readable.set(true);
            }
        }
    }

    /// Read it at the next [`BrokerSocket::recv_polled`] whatever a poll said.
    pub(super) fn mark_readable(&self) {
        if let BrokerSocket::Local(local) = self {
            local.readable.set(true);
        }
    }

    /// Whether a broker is connected (ZeroMQ: a live connection takes
    /// messages; local: connected, or dialled now if due).
    pub(super) fn connected(&self, now: Instant) -> Result<bool> {
        match self {
            BrokerSocket::Zmq(socket) => {
                Ok(socket.get_events().map_err(Error::zmq("socket events"))?.contains(zmq::POLLOUT))
            }
            BrokerSocket::Local(local) => Ok(local.dial(now)),
        }
    }

    /// Whether a whole message already read waits (a poll of the
    /// descriptor would not show it).
    pub(super) fn buffered(&self) -> bool {
        matches!(self, BrokerSocket::Local(local) if local.conn.borrow().as_ref().is_some_and(Conn::has_message))
    }

    /// A new local connection since the last call: register on it at once.
    pub(super) fn take_reconnected(&self) -> bool {
        matches!(self, BrokerSocket::Local(local) if local.reconnected.replace(false))
    }

    /// When an unconnected local socket dials next (the loop must wake for
    /// it: nothing else signals a broker that comes back).
    pub(super) fn dial_at(&self) -> Option<Instant> {
        match self {
            BrokerSocket::Local(local) if local.conn.borrow().is_none() => Some(local.next_dial.get()),
            _ => None,
        }
    }

    /// A poll item for `events`; an unconnected local socket polls nothing.
    pub(super) fn poll_item(&self, events: zmq::PollEvents) -> zmq::PollItem<'_> {
        match self {
            BrokerSocket::Zmq(socket) => socket.as_poll_item(events),
            BrokerSocket::Local(local) => {
                let fd = local.conn.borrow().as_ref().map_or(-1, Conn::fd);
                zmq::PollItem::from_fd(fd, events & zmq::POLLIN)
            }
        }
    }
}

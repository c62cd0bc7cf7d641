//! The broker's `unix://` endpoints: listeners and connections polled by the
//! broker's own loop beside the ZeroMQ sockets, their messages handled by
//! the same [`Io::on_front`] and [`Io::on_back`] as ZeroMQ's, with a
//! connection-unique identity standing in for the ROUTER's. A worker names
//! itself in its first message; a client is named here.

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use super::{Io, Msg, MAX_FRAMES};
use crate::broker::listen::Backoff;
use crate::broker::state::{BrokerState, Output};
use crate::broker::warnings::Kind;
use crate::local::{Conn, Listener};

/// A local connection and who it is.
#[derive(Debug)]
pub(super) struct Peer {
    pub conn: Conn,
    pub back: bool,
    /// Set by the first message (a worker's own; a client's made here).
    identity: Option<Vec<u8>>,
    pid: u32,
    /// The events its descriptor is registered for (see [`super::wait`]).
    pub interest: u32,
}

/// The listeners (each with its backoff, and whether it is the back's) and
/// every local connection.
#[derive(Debug, Default)]
pub(in crate::broker) struct Locals {
    pub listeners: Vec<(Listener, Backoff, bool)>,
    /// Whether each listener is registered in `epoll` (not while paused).
    pub listening: Vec<bool>,
    pub(super) peers: Vec<Option<Peer>>,
    pub(super) free: Vec<usize>,
    /// Connection index by identity, per side (`[front, back]`).
    pub by_identity: [HashMap<Vec<u8>, usize>; 2],
    next_client: u64,
    /// Pids of local workers dropped when their connection closed, newest
    /// last: the supervisor may ask whether one was registered after the
    /// broker let it go.
    pub gone: std::collections::VecDeque<u32>,
    /// Connections with messages queued this turn.
    dirty: Vec<usize>,
    /// What the loop waits on (see [`super::wait`]); set by the loop.
    pub epoll: Option<crate::sys::epoll::Epoll>,
    /// The clients' connections, a set of their own that `epoll` watches
    /// except while requests may wait (see [`super::wait`]).
    pub clients: Option<crate::sys::epoll::Epoll>,
    /// Whether `epoll` watches `clients` now.
    pub clients_watched: bool,
}

/// What a poll item of the local side stands for.
#[derive(Clone, Copy, Debug)]
pub(in crate::broker) enum Ready {
    /// Listener `.0` has connections waiting.
    Accept(usize),
    /// Connection `.0` is readable (`.1`) and/or writable (`.2`).
    Peer(usize, bool, bool),
}

impl Peer {
    /// A client whose replies back up is not read until they drain: its
    /// requests wait in its own socket, and its writes with them.
    pub(super) fn reads_paused(&self) -> bool {
        !self.back && self.conn.unwritten() > crate::protocol::LOCAL_READ_PAUSE
    }
}

/// Pids kept in [`Locals::gone`].
const GONE_KEPT: usize = 64;

impl Locals {
    /// The connection behind `identity` on a side, if it is local.
    pub fn find(&self, back: bool, identity: &[u8]) -> Option<usize> {
        self.by_identity[usize::from(back)].get(identity).copied()
    }

    pub(super) fn insert(&mut self, peer: Peer) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.peers[i] = Some(peer);
                i
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() - 1
            }
        }
    }
}

impl Io<'_> {
    /// Accepts, reads and writes what the loop's wait found (see [`super::wait`]).
    pub fn serve_locals(&mut self, ready: &[Ready], state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        for &what in ready {
            let now = Instant::now();
            match what {
                Ready::Accept(n) => self.accept_local(now, n),
                Ready::Peer(i, read, write) => {
                    if write {
                        self.flush_local(i, now, state, out);
                    }
                    if read {
                        self.serve_local(i, now, state, out);
                    }
                }
            }
        }
    }

    /// Accepts every connection waiting on listener `n`.
    pub fn accept_local(&mut self, now: Instant, n: usize) {
        let limit = self.hard_limit();
        loop {
            let (listener, backoff, back) = &mut self.locals.listeners[n];
            let (back, side) = (*back, usize::from(*back));
            let fd = match listener.accept() {
                Ok(Some(fd)) => fd,
                Ok(None) => return,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    if let Some(pause) = backoff.accept_failed(now, errno) {
                        let message =
                            format_args!("cannot accept on {}: {e}; pausing {pause:?}", listener.path().display());
                        self.warnings.warn(now, if back { Kind::Worker } else { Kind::Client }, message);
                    }
                    self.listeners_failed[side] += 1;
                    return;
                }
            };
            backoff.accepted();
            let conn = Conn::accepted(fd, limit);
            let cred = match conn.peer() {
                Ok(cred) => cred,
                Err(e) => {
                    tracing::debug!("a local peer left before it was seen: {e}");
                    continue;
                }
            };
            if !crate::local::uid_allowed(cred.uid) {
                if back {
                    self.gate.failures.workers += 1;
                } else {
                    self.gate.failures.clients += 1;
                }
                let message = format_args!("a local connection from uid {} (pid {}) refused", cred.uid, cred.pid);
                self.warnings.warn(now, Kind::Auth, message);
                continue;
            }
            let pid = cred.pid as u32;
            if back {
                self.peers.insert_local(conn.fd(), pid);
            }
            let mut peer = Peer { conn, back, identity: None, pid, interest: crate::sys::epoll::IN };
            // The greeting; a peer gone already is found by the next read.
            let _ = peer.conn.flush();
            let fd = peer.conn.fd();
            let i = self.locals.insert(peer);
            if let Err(e) = self.register_peer(i, fd, back) {
                tracing::warn!("a local connection could not be watched, closed: {e}");
                self.locals.peers[i] = None;
                self.locals.free.push(i);
            }
        }
    }

    /// The largest message a local peer may send: past it, it is cut off.
    fn hard_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(crate::protocol::MAX_MESSAGE_HARD_FACTOR)
    }

    /// Reads and handles what connection `i` sent; closes it at its end or
    /// on bytes that are not ours.
    pub fn serve_local(&mut self, i: usize, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let Some(peer) = self.locals.peers[i].as_mut() else { return };
        let mut why: Option<String> = match peer.conn.fill() {
            Ok(0) => Some(String::new()),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(format!("{e}")),
        };
        let mut messages = Vec::new();
        loop {
            match peer.conn.next_message() {
                Ok(Some(frames)) => messages.push(frames),
                Ok(None) => break,
                Err(e) => {
                    why = Some(e.to_string());
                    break;
                }
            }
        }
        for frames in messages {
            let Some(peer) = self.locals.peers[i].as_mut() else { return };
            let (back, named) = (peer.back, peer.identity.clone());
            let identity = match named {
                Some(identity) => identity,
                None => {
                    if !self.name_local(i, frames.first().map_or(&[][..], |f| &f[..])) {
                        why = Some("a worker's connection named no worker (an empty identity)".into());
                        break;
                    }
                    continue;
                }
            };
            self.frames.clear();
            self.size = identity.len() + frames.iter().map(|f| f.len()).sum::<usize>();
            self.truncated = frames.len() > MAX_FRAMES;
            self.frames.push(Msg::from(identity));
            self.frames.extend(frames.into_iter().take(MAX_FRAMES + 1));
            if back {
                self.on_back(now, state, out);
            } else {
                self.on_front(now, state, out);
            }
        }
        if let Some(why) = why {
            if !why.is_empty() {
                let kind =
                    if self.locals.peers[i].as_ref().is_some_and(|p| p.back) { Kind::Worker } else { Kind::Client };
                self.warnings.warn(now, kind, format_args!("a local connection dropped: {why}"));
            }
            self.close_local(i, now, state, out);
        }
    }

    /// A connection's first message: a worker's identity, or a client's,
    /// made here. False for a worker's that is empty: it would name no
    /// worker (ZeroMQ never gives one), and every nameless peer on the
    /// back would take the one before's place.
    fn name_local(&mut self, i: usize, named: &[u8]) -> bool {
        let peer = self.locals.peers[i].as_mut().expect("live");
        let identity = if peer.back {
            if named.is_empty() {
                return false;
            }
            named.to_vec()
        } else {
            self.locals.next_client += 1;
            // Unlike any ZeroMQ peer's: libzmq's own are 5 bytes, a worker's text.
            let mut id = b"\0local".to_vec();
            id.extend_from_slice(&self.locals.next_client.to_le_bytes());
            id
        };
        let side = usize::from(peer.back);
        peer.identity = Some(identity.clone());
        // A worker that reconnects before its old connection is seen closed
        // takes its identity over; the old connection is closed here,
        // unheard: what it held is the new one's now (its jobs stay with
        // the worker registered under that identity).
        if let Some(old) = self.locals.by_identity[side].insert(identity, i) {
            if let Some(stale) = self.locals.peers.get_mut(old).filter(|_| old != i).and_then(Option::take) {
                self.locals.free.push(old);
                self.unregister_peer(stale.conn.fd(), stale.back);
                if stale.back {
                    self.peers.remove_local(stale.conn.fd());
                }
                tracing::info!(pid = stale.pid, "a local connection was replaced by a new one of the same identity");
            }
        }
        true
    }

    /// Writes what waits for connection `i`; closes it if it is gone.
    pub fn flush_local(&mut self, i: usize, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let Some(peer) = self.locals.peers[i].as_mut() else { return };
        if peer.conn.flush().is_err() {
            self.close_local(i, now, state, out);
        }
    }

    /// Forgets connection `i`. A worker's closes because its process exited
    /// or gave up on us: its jobs are retried or answered now, not after
    /// missed heartbeats.
    fn close_local(&mut self, i: usize, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let Some(peer) = self.locals.peers[i].take() else { return };
        self.locals.free.push(i);
        self.unregister_peer(peer.conn.fd(), peer.back);
        if peer.back {
            self.peers.remove_local(peer.conn.fd());
        }
        let Some(identity) = peer.identity else { return };
        let side = usize::from(peer.back);
        if self.locals.by_identity[side].get(&identity) == Some(&i) {
            self.locals.by_identity[side].remove(&identity);
        }
        if peer.back && state.knows_worker(&identity) {
            tracing::info!(pid = peer.pid, "a local worker's connection closed");
            state.worker_connection_closed(now, &identity, out);
            self.locals.gone.push_back(peer.pid);
            if self.locals.gone.len() > GONE_KEPT {
                self.locals.gone.pop_front();
            }
            self.flush(state, out);
        }
    }

    /// Sends a message to local connection `i`; a client that does not read
    /// its replies gets no more once [`LOCAL_SEND_MAX`] bytes wait for it.
    ///
    /// [`LOCAL_SEND_MAX`]: crate::protocol::LOCAL_SEND_MAX
    pub(super) fn send_local(&mut self, i: usize, parts: &[&[u8]]) -> Result<(), zmq::Error> {
        let peer = self.locals.peers[i].as_mut().ok_or(zmq::Error::EHOSTUNREACH)?;
        if !peer.back && peer.conn.unwritten() > crate::protocol::LOCAL_SEND_MAX {
            return Err(zmq::Error::EAGAIN);
        }
        // Written when the loop's turn ends ([`Io::flush_locals`]): one
        // system call for all of a turn's messages to a peer.
        if peer.conn.unwritten() == 0 {
            self.locals.dirty.push(i);
        }
        peer.conn.queue(parts);
        Ok(())
    }

    /// Writes what this turn queued for local peers; those gone are closed
    /// (which may queue more: answers to the jobs their workers held).
    pub fn flush_locals(&mut self, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        while let Some(i) = self.locals.dirty.pop() {
            self.flush_local(i, Instant::now(), state, out);
        }
    }
}

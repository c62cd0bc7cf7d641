//! One DEALER socket shared by many threads, leader/follower style: whichever
//! caller holds the socket does the I/O for everyone, so a lone caller sends
//! and receives on its own thread with no hand-off, and many callers keep many
//! requests in flight on one connection.
//!
//! A caller that finds the socket taken queues its frames in the outbox, wakes
//! the leader through a pipe and parks; the leader sends queued frames, stores
//! each reply in its request's slot and unparks the owner. A leader that is
//! done passes the socket on by unparking a caller still waiting. A pipeline
//! (which keeps the socket for its whole stream) that finds it taken asks the
//! leader to yield it: the leader then waits for its replies as a follower,
//! so a slow call never holds a pipeline back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::wakeup::Wakeup;

mod stream;

pub(crate) use super::reply::{reply_of, Outcome, Reply};

/// The shortest wait when looking again for a connection before `send_by`.
const WAKE_GRAIN: std::time::Duration = std::time::Duration::from_millis(1);

struct Slot {
    thread: Thread,
    reply: Option<Reply>,
    sent: bool,
    /// Its connection dropped after it was sent ([`Mux::fail_sent`]).
    lost: bool,
}

#[derive(Default)]
struct Pending {
    slots: HashMap<u64, Slot>,
    outbox: VecDeque<(u64, Vec<zmq::Message>)>,
}

pub(crate) struct Mux {
    socket: Mutex<zmq::Socket>,
    pending: Mutex<Pending>,
    /// Followers wake the leader with it when they queue frames.
    wake: Wakeup,
    connected: AtomicBool,
    next_id: AtomicU64,
    /// Pipelines waiting for the socket: a leader yields it to them, and
    /// callers leave it to them.
    pipelines_waiting: AtomicUsize,
    /// Bumped by [`Mux::fail_sent`]: a pipeline's requests in flight are lost.
    lost_epoch: AtomicU64,
    /// Dials again when unconnected for a while (see [`crate::redial`]).
    redial: Mutex<crate::redial::Redial>,
    _ctx: zmq::Context,
}

impl Mux {
    pub(crate) fn connect(endpoint: &str, curve: Option<&crate::auth::CurveClient>) -> Result<Mux> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).map_err(Error::zmq("creating the client socket"))?;
        // Queue only on a live connection: unsent means unreachable.
        socket.set_immediate(true).map_err(Error::zmq("immediate"))?;
        socket.set_linger(0).map_err(Error::zmq("linger"))?;
        socket.set_sndhwm(0).map_err(Error::zmq("sndhwm"))?;
        socket.set_rcvhwm(0).map_err(Error::zmq("rcvhwm"))?;
        if let Some(curve) = curve {
            curve.apply(&socket)?;
        }
        socket.connect(endpoint).map_err(Error::zmq(format!("connecting to {endpoint}")))?;
        Ok(Mux {
            socket: Mutex::new(socket),
            pending: Mutex::new(Pending::default()),
            wake: Wakeup::new()?,
            connected: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            pipelines_waiting: AtomicUsize::new(0),
            lost_epoch: AtomicU64::new(0),
            redial: Mutex::new(crate::redial::Redial::new(endpoint, std::time::Instant::now())),
            _ctx: ctx,
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends every request (id, frames) and waits for their replies until `deadline`.
    pub(crate) fn call(&self, requests: Vec<(u64, Vec<zmq::Message>)>, deadline: Instant) -> Result<Vec<Outcome>> {
        self.call_within(requests, deadline, deadline)
    }

    /// [`Self::call`], but requests still unsent (no connection) at
    /// `send_by` are withdrawn then and reported `Unreachable`, so a client
    /// of several brokers can send them elsewhere.
    pub(crate) fn call_within(
        &self,
        requests: Vec<(u64, Vec<zmq::Message>)>,
        deadline: Instant,
        send_by: Instant,
    ) -> Result<Vec<Outcome>> {
        let ids: Vec<u64> = requests.iter().map(|(id, _)| *id).collect();
        {
            let mut pending = self.pending();
            for &id in &ids {
                pending.slots.insert(id, Slot { thread: thread::current(), reply: None, sent: false, lost: false });
            }
            pending.outbox.extend(requests);
        }
        let mut led = false;
        let mut woke = false;
        let result = loop {
            // A panic in another caller's code (pipeline callbacks) must not
            // lock everyone out: a poisoned socket is still a usable socket.
            // The socket goes to waiting pipelines first.
            let acquired = if self.pipelines_waiting.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.socket.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                }
            };
            if let Some(socket) = acquired {
                led = true;
                match self.lead(&socket, &ids, deadline, send_by) {
                    // Yielded to a pipeline, which delivers our replies.
                    Ok(true) => woke = true,
                    done => break done.map(drop),
                }
            }
            if !woke {
                self.wake.trigger();
                woke = true;
            }
            let now = Instant::now();
            if now >= deadline || self.answered(&ids) == ids.len() || self.gave_up_sending(&ids, now, send_by) {
                break Ok(());
            }
            let until = if send_by < deadline { send_by.max(now + WAKE_GRAIN) } else { deadline };
            thread::park_timeout(until.min(deadline) - now);
        };
        let mut pending = self.pending();
        let connected = self.connected.load(Ordering::Acquire);
        let outcomes = ids
            .iter()
            .map(|id| {
                let slot = pending.slots.remove(id).expect("own slot");
                match slot.reply {
                    Some(reply) => Outcome::Reply(reply),
                    None if slot.lost => Outcome::Lost,
                    None if slot.sent && connected => Outcome::Timeout,
                    None => Outcome::Unreachable,
                }
            })
            .collect();
        if !pending.outbox.is_empty() {
            pending.outbox.retain(|(id, _)| !ids.contains(id));
        }
        drop(pending);
        if led || self.socket.try_lock().is_ok() {
            self.hand_over();
        }
        result.map(|_| outcomes)
    }

    /// Sends a message that gets no reply of its own (a `CANCEL`): queued
    /// for whoever leads the socket, woken to send it. A cancel is for a
    /// request still awaited, so a caller is there to lead.
    pub(crate) fn notify(&self, frames: Vec<zmq::Message>) {
        self.pending().outbox.push_back((0, frames));
        self.wake.trigger();
    }

    /// Called after releasing the socket: wakes a caller still waiting, so it
    /// takes the socket over (otherwise it would sleep until its deadline).
    fn hand_over(&self) {
        let pending = self.pending();
        if let Some(slot) = pending.slots.values().find(|s| s.reply.is_none()) {
            slot.thread.unpark();
        }
    }

    /// Answered or lost: nothing more to wait for.
    fn answered(&self, ids: &[u64]) -> usize {
        let pending = self.pending();
        ids.iter().filter(|id| pending.slots.get(id).is_some_and(|s| s.reply.is_some() || s.lost)).count()
    }

    /// Whether `send_by` has passed with some of `ids` still unsent (only
    /// ever true for a [`Self::call_within`] with a `send_by` of its own).
    fn gave_up_sending(&self, ids: &[u64], now: Instant, send_by: Instant) -> bool {
        if now < send_by {
            return false;
        }
        let pending = self.pending();
        ids.iter().any(|id| pending.slots.get(id).is_some_and(|s| !s.sent))
    }

    /// The connection dropped (a socket monitor saw it): every request sent
    /// and not yet answered is lost, since libzmq drops what was queued on a
    /// connection that ends and the broker, if it restarts, knows none of
    /// them. Their callers are woken at once instead of waiting for their
    /// deadlines; a pipeline ends its stream.
    pub(crate) fn fail_sent(&self) {
        let mut pending = self.pending();
        for slot in pending.slots.values_mut().filter(|s| s.sent && s.reply.is_none() && !s.lost) {
            slot.lost = true;
            slot.thread.unpark();
        }
        drop(pending);
        self.lost_epoch.fetch_add(1, Ordering::AcqRel);
        // The leader may be one of them, polling the socket.
        self.wake.trigger();
    }

    /// Starts a socket monitor on connections made and dropped; returns the
    /// socket its events arrive on (see [`crate::client::many`]).
    pub(crate) fn monitor(&self, name: &str) -> Result<zmq::Socket> {
        let addr = format!("inproc://powerhose-monitor-{name}");
        let events = zmq::SocketEvent::DISCONNECTED as i32 | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32;
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        socket.monitor(&addr, events).map_err(Error::zmq("monitoring the client socket"))?;
        let events = self._ctx.socket(zmq::PAIR).map_err(Error::zmq("creating the monitor socket"))?;
        events.connect(&addr).map_err(Error::zmq("connecting the monitor socket"))?;
        Ok(events)
    }

    /// The leader's loop: send queued requests, deliver replies, until all of
    /// `mine` are answered or the deadline passes (false), or a pipeline
    /// wants the socket (true: `mine` may still wait for replies).
    fn lead(&self, socket: &zmq::Socket, mine: &[u64], deadline: Instant, send_by: Instant) -> Result<bool> {
        let me = thread::current().id();
        let mut remaining = mine.len() - self.answered(mine);
        loop {
            let queued = self.flush(socket)?;
            if remaining == 0 {
                return Ok(false);
            }
            if self.pipelines_waiting.load(Ordering::Acquire) > 0 {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline || (queued && self.gave_up_sending(mine, now, send_by)) {
                return Ok(false);
            }
            let events = if queued { zmq::POLLIN | zmq::POLLOUT } else { zmq::POLLIN };
            let mut items = [socket.as_poll_item(events), self.wake.poll_item()];
            let until = if queued && send_by < deadline { send_by.max(now + WAKE_GRAIN) } else { deadline };
            let wait = (until - now).as_millis() as i64 + 1;
            crate::wakeup::poll(&mut items, wait)?;
            if items[1].is_readable() {
                self.wake.clear();
                // Some of ours may have been lost meanwhile (fail_sent).
                remaining = mine.len() - self.answered(mine);
            }
            if items[0].is_readable() {
                remaining -= self.receive(socket, me)?;
            }
        }
    }

    /// Sends what the outbox holds; true if something is left (no connection).
    fn flush(&self, socket: &zmq::Socket) -> Result<bool> {
        let writable = socket.get_events().map_err(Error::zmq("socket events"))?.contains(zmq::POLLOUT);
        self.connected.store(writable, Ordering::Release);
        let mut redial = self.redial.lock().unwrap_or_else(|p| p.into_inner());
        if redial.check(socket, writable, std::time::Instant::now())? {
            tracing::debug!("no connection to the broker: dialling again");
        }
        drop(redial);
        let mut pending = self.pending();
        if !writable {
            return Ok(!pending.outbox.is_empty());
        }
        // With no high-water mark, a connected socket takes every message; if
        // the connection drops meanwhile, the request stays queued.
        while let Some((id, frames)) = pending.outbox.front_mut() {
            let id = *id;
            let more = if frames.len() > 1 { zmq::SNDMORE } else { 0 };
            // The first frame (a small command frame) goes by copy, so on
            // failure the request is still whole in the outbox.
            match crate::sys::zmq_send_copy(socket, &frames[0][..], more | zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    self.connected.store(false, Ordering::Release);
                    return Ok(true);
                }
                Err(e) => return Err(Error::zmq("sending to the broker")(e)),
            }
            let (_, frames) = pending.outbox.pop_front().expect("front exists");
            let last = frames.len() - 1;
            // The first part went out, so the rest of the message does too;
            // by copy, since an application's thread may take signals.
            for (i, frame) in frames.iter().enumerate().skip(1) {
                let flags = if i < last { zmq::SNDMORE } else { 0 };
                crate::sys::zmq_send_copy(socket, frame, flags | zmq::DONTWAIT)
                    .map_err(Error::zmq("sending to the broker"))?;
            }
            if let Some(slot) = pending.slots.get_mut(&id) {
                slot.sent = true;
            }
        }
        Ok(false)
    }

    /// Reads one reply without blocking; `None` when nothing is waiting.
    /// Malformed replies are logged and skipped.
    fn recv_reply(&self, socket: &zmq::Socket) -> Result<Option<(u64, Reply)>> {
        loop {
            let mut head = zmq::Message::new();
            match crate::sys::zmq_recv(socket, &mut head, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => return Ok(None),
                Err(e) => return Err(Error::zmq("receiving from the broker")(e)),
            }
            let mut body = zmq::Message::new();
            let mut more = head.get_more();
            let mut extra = 0;
            while more {
                let mut frame = zmq::Message::new();
                crate::sys::zmq_recv(socket, &mut frame, 0).map_err(Error::zmq("receiving from the broker"))?;
                more = frame.get_more();
                if extra == 0 {
                    body = frame;
                }
                extra += 1;
            }
            match reply_of(head, body, extra) {
                Some(got) => return Ok(Some(got)),
                None => continue,
            }
        }
    }

    /// Puts a reply in its slot; true if the slot is the calling thread's.
    fn deliver(&self, id: u64, reply: Reply, me: thread::ThreadId) -> bool {
        let mut pending = self.pending();
        // No slot: a late answer to a request its caller gave up on (or
        // counted as lost, and perhaps sent elsewhere already).
        let Some(slot) = pending.slots.get_mut(&id).filter(|s| s.reply.is_none() && !s.lost) else { return false };
        slot.reply = Some(reply);
        if slot.thread.id() == me {
            true
        } else {
            slot.thread.unpark();
            false
        }
    }

    /// Reads every waiting reply into its slot; returns how many were the leader's own.
    fn receive(&self, socket: &zmq::Socket, me: thread::ThreadId) -> Result<usize> {
        let mut own = 0;
        while let Some((id, reply)) = self.recv_reply(socket)? {
            own += usize::from(self.deliver(id, reply, me));
        }
        Ok(own)
    }
}

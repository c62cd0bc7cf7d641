//! The broker's I/O: reads messages off the front and back sockets, turns
//! them into [`state`](super::state) events with the pure parsers of
//! [`crate::protocol::parse`], and sends what the state machine emits.
//! Reading is here; what a client's and a worker's messages mean is in
//! [`front`] and [`back`], and sending in [`send`].

mod back;
mod front;
mod gate;
mod local;
mod send;
mod wait;

pub(super) use gate::Gate;
pub(super) use local::Locals;

use std::time::Instant;

use super::listen::Listener;
use super::state::{Body, BrokerState, ClientRoute, Output};
use super::vitals::Peers;
use super::warnings::Warnings;
use super::BrokerOptions;
use crate::error::{Error, Result};
use crate::protocol::Status;
use crate::status::{BrokerStatus, Counters};

type Msg = zmq::Message;

/// Messages read from one socket before the other gets a turn.
const READS_PER_TURN: usize = 256;
/// The most frames a message may have; more is malformed anyway.
const MAX_FRAMES: usize = 4;

/// The loop's sockets and reusable buffers.
pub(super) struct Io<'a> {
    front: &'a zmq::Socket,
    back: &'a zmq::Socket,
    frames: Vec<Msg>,
    /// The message being handled had more than [`MAX_FRAMES`] frames.
    truncated: bool,
    /// The bytes of the message being handled, all its frames (the
    /// identity's too, which the check of [`Io::oversized`] takes off).
    size: usize,
    /// `--max-message-bytes` (`usize::MAX` when negative: no limit).
    max_message_bytes: usize,
    buf: Vec<u8>,
    pid: u32,
    started: Instant,
    options: &'a BrokerOptions,
    /// The back socket's monitor: who is connected over ipc.
    events: Option<&'a zmq::Socket>,
    peers: Peers,
    /// The front socket's monitor (accepts only), and both listening
    /// endpoints, stopped while descriptors run out.
    front_events: Option<&'a zmq::Socket>,
    listeners: [Option<Listener<'a>>; 2],
    /// Rate limits of the warnings peers' messages cause.
    pub warnings: Warnings,
    /// Replies dropped because their client did not read (see `FRONT_SEND_HWM`).
    replies_dropped: u64,
    /// Who may do what (see [`gate`]).
    pub gate: Gate,
    /// The `unix://` listeners and connections (see [`local`]).
    pub locals: Locals,
    /// Accepts that failed on the local listeners (`[front, back]`).
    listeners_failed: [u64; 2],
    /// A ZeroMQ socket was written (see [`Io::take_zmq_used`]).
    zmq_used: bool,
    /// How many ZeroMQ socket slots the loop's wait reports (see [`wait`]).
    zmq_slots: usize,
}

impl<'a> Io<'a> {
    pub fn new(front: &'a zmq::Socket, back: &'a zmq::Socket, options: &'a BrokerOptions, gate: Gate) -> Self {
        Io {
            front,
            back,
            frames: Vec::new(),
            truncated: false,
            size: 0,
            max_message_bytes: usize::try_from(options.max_message_bytes).unwrap_or(usize::MAX),
            buf: Vec::new(),
            pid: std::process::id(),
            started: Instant::now(),
            options,
            events: None,
            peers: Peers::default(),
            front_events: None,
            listeners: [None, None],
            warnings: Warnings::default(),
            replies_dropped: 0,
            gate,
            locals: Locals::default(),
            listeners_failed: [0; 2],
            zmq_used: false,
            zmq_slots: 0,
        }
    }

    /// Reads the back socket's connections from its monitor, and the
    /// front's accepts from its own; `[front, back]` listen.
    pub fn watch(
        &mut self,
        events: &'a zmq::Socket,
        front_events: &'a zmq::Socket,
        listeners: [Option<Listener<'a>>; 2],
    ) {
        self.events = Some(events);
        self.front_events = Some(front_events);
        self.listeners = listeners;
    }

    /// Applies pending monitor events of the back socket.
    pub fn read_events(&mut self) {
        let Some(events) = self.events else { return };
        self.zmq_used = true;
        while let Some((event, value)) = super::vitals::read_event(events) {
            self.peers.on_event(event, value);
            self.handshake_event(Instant::now(), true, event);
            if let Some(back) = self.listeners[1].as_mut() {
                back.on_event(Instant::now(), event, value, &mut self.warnings);
            }
        }
    }

    /// Applies pending monitor events of the front socket.
    pub fn read_front_events(&mut self) {
        let Some(events) = self.front_events else { return };
        self.zmq_used = true;
        while let Some((event, value)) = super::vitals::read_event(events) {
            self.handshake_event(Instant::now(), false, event);
            if let Some(front) = self.listeners[0].as_mut() {
                front.on_event(Instant::now(), event, value, &mut self.warnings);
            }
        }
    }

    /// When an endpoint that stopped listening is due to listen again.
    pub fn rebind_deadline(&self) -> Option<Instant> {
        let local = self.locals.listeners.iter().filter_map(|(_, backoff, _)| backoff.deadline());
        self.listeners.iter().flatten().filter_map(Listener::deadline).chain(local).min()
    }

    /// Listens again on the endpoints whose pause is over.
    pub fn rebind_if_due(&mut self, now: Instant) {
        for listener in self.listeners.iter_mut().flatten() {
            listener.rebind_if_due(now, &mut self.warnings);
        }
        for (_, backoff, _) in &mut self.locals.listeners {
            if backoff.deadline().is_some_and(|at| at <= now) {
                backoff.rebound();
            }
        }
    }

    /// STATUS as `role` may see it: each worker's pid and host only for the
    /// owner and operators.
    pub(super) fn status(&self, now: Instant, state: &BrokerState<Msg>, role: crate::auth::Role) -> BrokerStatus {
        BrokerStatus {
            pid: self.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            frontend: self.options.frontend.clone(),
            backend: self.options.backend.clone(),
            services: state.services().collect(),
            waiting_for_workers: state.waiting_for_workers(),
            queued_bytes: state.queued_bytes(),
            workers: if role.sees_workers() { state.workers(now) } else { Vec::new() },
            counters: Counters {
                replies_dropped: self.replies_dropped,
                accept_failures: self.listeners.iter().flatten().map(|l| l.failures).sum::<u64>()
                    + self.listeners_failed.iter().sum::<u64>(),
                ..state.counters.clone()
            },
            latency_ms: state.latency.latency(),
            curve: self.gate.lists.is_some(),
            insecure: self.options.insecure,
            auth_failures: self.gate.failures.clone(),
        }
    }

    /// Reads up to [`READS_PER_TURN`] messages from `socket` without blocking; true
    /// when it stopped at that bound (more may wait).
    pub fn drain(&mut self, socket: &zmq::Socket, mut handle: impl FnMut(&mut Self, Instant)) -> Result<bool> {
        self.zmq_used = true;
        for _ in 0..READS_PER_TURN {
            self.frames.clear();
            self.truncated = false;
            self.size = 0;
            loop {
                let mut msg = Msg::new();
                match crate::sys::zmq_recv(socket, &mut msg, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => return Ok(false),
                    Err(e) => return Err(Error::zmq("receiving")(e)),
                }
                let more = msg.get_more();
                self.size += msg.len();
                // Past MAX_FRAMES the message is malformed: keep reading it
                // to its end, but not its frames.
                if self.frames.len() <= MAX_FRAMES {
                    self.frames.push(msg);
                } else {
                    self.truncated = true;
                }
                if !more {
                    break;
                }
            }
            handle(self, Instant::now());
        }
        Ok(true)
    }

    /// The size of the message being handled when it is over
    /// `--max-message-bytes` (`identity` is its first frame, which the
    /// sender did not write).
    fn oversized(&self, identity: &[u8]) -> Option<usize> {
        let size = self.size.saturating_sub(identity.len());
        (size > self.max_message_bytes).then_some(size)
    }

    fn reply_text(&self, out: &mut Vec<Output<Msg>>, route: ClientRoute<Msg>, status: Status, text: String) {
        out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(text.into()) });
    }
}

#[cfg(test)]
mod tests;

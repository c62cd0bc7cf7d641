//! The job thread's loop: registering (again), heartbeating while idle,
//! running each job with the socket released to the pulse thread, holding
//! answers for coalescing, and leaving cleanly.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::coalesce::{may_hold, Finished};
use super::wire::{recv_frames, send, send_raw, send_result};
use super::{Guard, Link, Running, WorkerOptions};
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;
use crate::protocol::{
    decode_request_tail, split_job_arg, Command, CommandFrame, HeaderIter, ResultTail, Status, COMMAND_LEN, INLINE_MAX,
    RETURN_ELSEWHERE,
};
use crate::wakeup::Wakeup;

pub(super) struct JobLoop<'a> {
    pub(super) plugin: &'a LoadedPlugin,
    pub(super) options: &'a WorkerOptions,
    pub(super) ready: &'a [u8],
    pub(super) link: &'a Link,
    pub(super) retire_at: Option<Instant>,
    /// Moving average of the handler's run time, to judge whether a held
    /// result can wait for the next job.
    pub(super) expected_us: Cell<f64>,
    /// The broker whose socket is read first next time: each in turn, so
    /// that none is served ahead of the others when several send.
    pub(super) turn: Cell<usize>,
}

/// A job as it reached the job thread.
struct Job<'f> {
    /// The broker that sent it.
    origin: usize,
    id: u64,
    /// Other jobs waited at the broker (bit 31 of the arg): answers may be held.
    backlog: bool,
    headers: &'f [u8],
    data: &'f [u8],
    inline: bool,
}

/// A handler's answer, or an error text, before it becomes a message.
enum HandlerOutput {
    Plugin(abi_stable::std_types::RVec<u8>),
    Text(String),
}

impl HandlerOutput {
    fn bytes(&self) -> &[u8] {
        match self {
            HandlerOutput::Plugin(out) => out,
            HandlerOutput::Text(text) => text.as_bytes(),
        }
    }
}

/// A broker told we are free again (it had a job turned away while we ran
/// another broker's) answers with its job within a round trip; until this
/// long has passed, its job is awaited before another broker's next one,
/// or the broker that kept us busy would win every race and starve it.
const TURN_WAIT: Duration = Duration::from_millis(5);

/// The job thread's view of one broker's registration.
struct Registering {
    /// Not registered (or the broker went silent): `READY` is sent when it
    /// is connected, again after a backoff while it does not answer.
    lost: bool,
    backoff: Duration,
    next_ready: Instant,
    redial: crate::redial::Redial,
    /// When it is due a heartbeat (anything sent to it counts: a RESULT
    /// postpones it).
    next_heartbeat: Instant,
}

impl JobLoop<'_> {
    pub(super) fn run(&self, shutdown: &Wakeup) -> Result<()> {
        let interval = self.options.heartbeat_interval;
        let broker_timeout = interval * self.options.liveness;
        let start = Instant::now();
        let mut brokers: Vec<Registering> = (self.options.backends.iter())
            .map(|b| Registering {
                lost: true,
                backoff: interval,
                next_ready: start,
                redial: crate::redial::Redial::new(b, start),
                next_heartbeat: start + interval,
            })
            .collect();
        let mut frames: Vec<zmq::Message> = Vec::with_capacity(3);
        let mut announced = false;
        // --exit-on-broker-loss: only once a broker was had, and every one is lost.
        let mut registered_once = false;
        let mut sockets = Link::lock(&self.link.sockets);
        loop {
            let retiring = self.retire_at.is_some_and(|at| Instant::now() >= at);
            if shutdown.requested() || retiring || self.link.unregistered.load(Ordering::Acquire) {
                let why = if retiring { "max age reached" } else { "stop requested" };
                // Acknowledgements are awaited from the brokers that hear us.
                let live: Vec<bool> = brokers.iter().map(|b| !b.lost).collect();
                return self.leave(sockets, &mut frames, why, &live);
            }
            let now = Instant::now();
            for (i, broker) in brokers.iter_mut().enumerate() {
                let socket = &sockets[i];
                if self.link.peers[i].reregister.swap(false, Ordering::AcqRel) {
                    tracing::info!(backend = %self.options.backends[i], "broker asked us to register again");
                    if !send_raw(socket, self.ready)? {
                        broker.lost = true;
                    }
                }
                let last_heard = self.link.last_heard(i).unwrap_or(now);
                if !broker.lost && now >= last_heard + broker_timeout {
                    tracing::warn!(
                        backend = %self.options.backends[i],
                        "broker silent for {broker_timeout:?}; registering again as soon as it answers"
                    );
                    broker.lost = true;
                }
                let connected = socket.get_events().map_err(Error::zmq("socket events"))?.contains(zmq::POLLOUT);
                if broker.redial.check(socket, connected || !broker.lost, now)? {
                    tracing::warn!(
                        "no connection to the broker at {} for {:.0?}; dialling again (a broker with \
                         --curve-secret refuses keys not in its --allow-workers: see its log)",
                        self.options.backends[i],
                        broker.redial.unconnected_for(now)
                    );
                }
                if broker.lost && connected && now >= broker.next_ready {
                    // Sent: registered, as far as we know; the silence timer
                    // runs again, and the backoff grows until it answers.
                    if send_raw(socket, self.ready)? {
                        tracing::info!(backend = %self.options.backends[i], "registered with the broker");
                        registered_once = true;
                        broker.lost = false;
                        self.link.heard(i);
                        self.link.peers[i].owes_ready.store(false, Ordering::Release);
                        if !std::mem::replace(&mut announced, true) {
                            // A supervisor (systemd, or a pool with remote
                            // brokers) learns that we serve.
                            let pid = std::process::id();
                            crate::sys::notify::notify_or_log(&format!("READY=1\nMAINPID={pid}"));
                        }
                    }
                    broker.next_ready = now + broker.backoff;
                    broker.backoff = (broker.backoff * 2).min(Duration::from_secs(32));
                }
            }
            if self.options.exit_on_broker_loss && registered_once && brokers.iter().all(|b| b.lost) {
                return Err(Error::Protocol(format!("no broker heard for {broker_timeout:?}; exiting as asked")));
            }
            for (i, broker) in brokers.iter_mut().enumerate() {
                if now >= broker.next_heartbeat {
                    send(&sockets[i], CommandFrame::new(Command::Heartbeat, 0, 0, b""), None)?;
                    broker.next_heartbeat = now + interval;
                }
            }
            // Serving one broker must not starve the others of heartbeats
            // or of the check for their silence: the reading below stops
            // for this, then goes on.
            let mut chores = brokers.iter().map(|b| b.next_heartbeat).min().unwrap_or(now + interval);
            for (i, broker) in brokers.iter().enumerate() {
                if !broker.lost {
                    chores = chores.min(self.link.last_heard(i).unwrap_or(now) + broker_timeout);
                }
            }
            let mut wake = chores;
            let mut items = Vec::with_capacity(sockets.len() + 1);
            for (i, broker) in brokers.iter().enumerate() {
                let connected = sockets[i].get_events().map_err(Error::zmq("socket events"))?.contains(zmq::POLLOUT);
                if broker.lost {
                    wake = wake.min(broker.next_ready);
                    if let Some(at) = broker.redial.next() {
                        wake = wake.min(at);
                    }
                } else {
                    wake = wake.min(self.link.last_heard(i).unwrap_or(now) + broker_timeout);
                }
                // While lost and unconnected, a new connection (POLLOUT) wakes us to register.
                let events = if broker.lost && !connected { zmq::POLLIN | zmq::POLLOUT } else { zmq::POLLIN };
                items.push(sockets[i].as_poll_item(events));
            }
            if let Some(at) = self.retire_at {
                wake = wake.min(at);
            }
            items.push(shutdown.poll_item());
            // Messages already read (stashed) are handled without waiting.
            let timeout = if Link::lock(&self.link.stash).is_empty() {
                wake.saturating_duration_since(now).as_millis() as i64 + 1
            } else {
                0
            };
            crate::wakeup::poll(&mut items, timeout)?;
            let mut readable = false;
            for (i, item) in items[..brokers.len()].iter().enumerate() {
                if item.is_writable() {
                    brokers[i].next_ready = Instant::now();
                }
                readable |= item.is_readable();
            }
            drop(items);
            if !readable && Link::lock(&self.link.stash).is_empty() {
                continue;
            }
            // Brokers just told we are free, and until when their job is
            // awaited before the others' (see TURN_WAIT).
            let mut favour: Option<(Vec<bool>, Instant)> = None;
            loop {
                let now = Instant::now();
                let favoured = favour.as_ref().filter(|(_, until)| now < *until).map(|(f, _)| f.as_slice());
                let Some(origin) = self.next_message(&sockets, &mut frames, favoured)? else {
                    match favour.as_ref() {
                        Some((f, until)) if now < *until => {
                            // Held answers do not wait for another broker's turn.
                            self.link.flush_held(&sockets)?;
                            let mut items: Vec<_> = (f.iter().zip(sockets.iter()))
                                .filter(|(on, _)| **on)
                                .map(|(_, s)| s.as_poll_item(zmq::POLLIN))
                                .collect();
                            crate::wakeup::poll(&mut items, (*until - now).as_micros().div_ceil(1000) as i64)?;
                            continue;
                        }
                        _ => break,
                    }
                };
                self.link.heard(origin);
                let broker = &mut brokers[origin];
                (broker.lost, broker.backoff) = (false, interval);
                let ran_job;
                (sockets, ran_job) = self.handle(sockets, origin, &frames)?;
                let now = Instant::now();
                if ran_job {
                    brokers[origin].next_heartbeat = now + interval;
                    // Free for a moment: a broker we turned away may send
                    // again, and its job comes before the others' next ones.
                    let told = self.free_again(&sockets)?;
                    favour = told.iter().any(|t| *t).then(|| (told, now + TURN_WAIT));
                }
                if now >= chores {
                    break;
                }
            }
            // Nothing at hand: nothing may stay held while we wait, and the
            // brokers we turned away as busy may send again.
            self.link.flush_held(&sockets)?;
            self.free_again(&sockets)?;
        }
    }

    /// Gives back the jobs stashed from brokers other than `origin`, as
    /// busy elsewhere: they must not wait behind `origin`'s job.
    fn give_back_others(&self, sockets: &[zmq::Socket], origin: usize) {
        let others: Vec<super::FromBroker> = {
            let mut stash = Link::lock(&self.link.stash);
            if stash.iter().all(|(o, _)| *o == origin) {
                return;
            }
            let (others, mine): (Vec<_>, Vec<_>) = stash.drain(..).partition(|(o, _)| *o != origin);
            stash.extend(mine);
            others
        };
        for (j, frames) in others {
            super::pulse::give_back(&sockets[j], frames, RETURN_ELSEWHERE);
            self.link.peers[j].owes_ready.store(true, Ordering::Release);
        }
    }

    /// `READY` to each broker we gave a job back as busy elsewhere: we are idle.
    /// Returns, per broker, whether it was told.
    fn free_again(&self, sockets: &[zmq::Socket]) -> Result<Vec<bool>> {
        let mut told = vec![false; sockets.len()];
        for (i, peer) in self.link.peers.iter().enumerate() {
            if peer.owes_ready.swap(false, Ordering::AcqRel) && !self.link.unregistered.load(Ordering::Acquire) {
                tracing::debug!(backend = %self.options.backends[i], "free again: READY");
                told[i] = send_raw(&sockets[i], self.ready)?;
                if !told[i] {
                    // Not connected now: it is still owed, or that broker
                    // would wait for it for good.
                    peer.owes_ready.store(true, Ordering::Release);
                }
            }
        }
        Ok(told)
    }

    /// The next message and its broker, the brokers taken in turn (so that
    /// one broker's jobs held ahead never keep another's waiting): for each,
    /// what the pulse thread stashed from it first, then its socket.
    /// With `only`, the brokers marked there alone.
    fn next_message(
        &self,
        sockets: &[zmq::Socket],
        frames: &mut Vec<zmq::Message>,
        only: Option<&[bool]>,
    ) -> Result<Option<usize>> {
        let n = sockets.len();
        let first = self.turn.get();
        for k in 0..n {
            let i = (first + k) % n;
            if only.is_some_and(|only| !only[i]) {
                continue;
            }
            let stashed = {
                let mut stash = Link::lock(&self.link.stash);
                let at = stash.iter().position(|(origin, _)| *origin == i);
                at.and_then(|at| stash.remove(at))
            };
            let got = match stashed {
                Some((_, message)) => {
                    *frames = message;
                    true
                }
                None => recv_frames(&sockets[i], frames)?,
            };
            if got {
                self.turn.set((i + 1) % n);
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Handles one message from the broker; true when a job ran. The socket
    /// guard travels by value: running a job releases it and takes it back.
    fn handle<'s>(&'s self, sockets: Guard<'s>, origin: usize, frames: &[zmq::Message]) -> Result<(Guard<'s>, bool)> {
        let cmd = match frames.first().map(|f| CommandFrame::decode(f)) {
            Some(Ok(cmd)) => cmd,
            _ => {
                tracing::warn!("malformed message from the broker ignored");
                return Ok((sockets, false));
            }
        };
        match cmd.command {
            Command::Job => {
                // Two-frame: headers in the tail, then the data frame. Inline:
                // the tail is the client's REQUEST tail (service, headers).
                let job = match (cmd.data, frames.len()) {
                    (None, 2) => Ok((cmd.tail, &frames[1][..], false)),
                    (Some(data), 1) => decode_request_tail(cmd.tail)
                        .map(|(_, headers)| (headers, data, true))
                        .map_err(|_| "JOB with a malformed inline tail".to_string()),
                    (data, n) => Err(format!(
                        "JOB with {} frames after the command frame and {} inline data, expected one or the other",
                        n - 1,
                        if data.is_some() { "with" } else { "no" }
                    )),
                };
                match job {
                    Ok((headers, data, inline)) => {
                        let backlog = split_job_arg(cmd.arg).1;
                        let job = Job { origin, id: cmd.id, backlog, headers, data, inline };
                        return Ok((self.run_job(sockets, job)?, true));
                    }
                    Err(msg) => {
                        // Answer rather than ignore: the broker counts us busy until a RESULT.
                        tracing::warn!("{msg}");
                        send_result(
                            &sockets[origin],
                            cmd.id,
                            Status::BadRequest,
                            ResultTail::default(),
                            msg.into_bytes().into(),
                        )?;
                    }
                }
            }
            Command::Heartbeat => {}
            Command::Disconnect => self.link.on_disconnect(origin),
            other => tracing::warn!("unexpected {other:?} from the broker ignored"),
        }
        Ok((sockets, false))
    }

    /// Runs a job with the socket released (the pulse thread uses it
    /// meanwhile), then answers, unless the pulse thread already answered
    /// `TIMEOUT`: then the worker registers again to say it is free.
    fn run_job<'s>(&'s self, mut sockets: Guard<'s>, job: Job<'_>) -> Result<Guard<'s>> {
        let Job { origin, id: job_id, backlog, headers, data, inline } = job;
        // Other brokers' jobs held here would wait this whole job: back they go.
        self.give_back_others(&sockets, origin);
        // Results held for another broker leave before its job runs.
        if Link::lock(&self.link.held).origin().is_some_and(|o| o != origin) {
            self.link.flush_held(&sockets)?;
        }
        let started = Instant::now();
        let decoded: Result<Vec<(&str, &str)>> = HeaderIter::new(headers).collect();
        let (status, body) = match decoded {
            Err(e) => (Status::BadRequest, HandlerOutput::Text(e.to_string())),
            Ok(headers) => {
                let summary = headers.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
                let running = Running { origin, job_id, started, headers: summary, timed_out: false };
                *Link::lock(&self.link.running) = Some(running);
                drop(sockets);
                let outcome = self.plugin.handle_raw(headers.iter().copied(), data);
                sockets = Link::lock(&self.link.sockets);
                let limit = self.options.max_message_bytes;
                // The broker's limit is the whole message's: the RESULT
                // frame's head counts too.
                let head = COMMAND_LEN + ResultTail { still_busy: false, run_us: None }.encode().0.len();
                match outcome {
                    Ok(out) if out.len().saturating_add(head) > limit => {
                        let msg =
                            format!("result of {} bytes exceeds the maximum message size ({limit} bytes)", out.len());
                        (Status::HandlerError, HandlerOutput::Text(msg))
                    }
                    Ok(out) => (Status::Ok, HandlerOutput::Plugin(out)),
                    Err(msg) => (Status::HandlerError, HandlerOutput::Text(msg)),
                }
            }
        };
        let finished = Link::lock(&self.link.running).take();
        if finished.is_some_and(|r| r.timed_out) {
            // A worker that is leaving stays unregistered.
            if !self.link.unregistered.load(Ordering::Acquire) {
                tracing::info!(job_id, "the timed-out handler returned; registering again");
                send_raw(&sockets[origin], self.ready)?;
            }
            return Ok(sockets);
        }
        let now = Instant::now();
        let run_us = now.saturating_duration_since(started).as_micros().min(u32::MAX as u128) as u32;
        let expected = match self.expected_us.get() {
            avg if avg > 0.0 => avg * 0.8 + f64::from(run_us) * 0.2,
            _ => f64::from(run_us),
        };
        self.expected_us.set(expected);
        // An inline answer is built once, straight from the handler's output.
        let bytes = body.bytes();
        let inline = inline && bytes.len() <= INLINE_MAX;
        let body = if inline {
            let (tail, n) = ResultTail { still_busy: false, run_us: Some(run_us) }.encode();
            CommandFrame::new(Command::Result, job_id, status as u32, &tail[..n]).with_data(bytes).message()
        } else {
            zmq::Message::from(bytes)
        };
        let done = Finished { origin, job_id, status, run_us, body, inline };
        let mut held = Link::lock(&self.link.held);
        // A message read here waits in the stash, first in line: reading it
        // costs less than asking libzmq whether one is there (a syscall).
        let at_hand = || {
            let mut stash = Link::lock(&self.link.stash);
            if !stash.is_empty() {
                return true;
            }
            let mut next = Vec::with_capacity(2);
            let got = recv_frames(&sockets[origin], &mut next).unwrap_or(false);
            if got {
                stash.push_back((origin, next));
            }
            got
        };
        let expected = Duration::from_micros(expected as u64);
        let coalesce = self.options.coalesce;
        // A worker that is leaving sends every answer at once: its last
        // loop waits for the broker's acknowledgement, not for held answers.
        let backlog = backlog && !self.link.unregistered.load(Ordering::Acquire);
        if may_hold(coalesce, backlog, held.len(), held.age(now), expected, at_hand) {
            if held.push(now, done) {
                self.link.timer.set(coalesce);
            }
            return Ok(sockets);
        }
        drop(held);
        self.link.flush_held(&sockets)?;
        if !done.send(&sockets)? {
            tracing::warn!(job_id, "broker not connected: the answer is lost (its client's deadline ends it)");
        }
        Ok(sockets)
    }

    /// Unregisters, serves any job that crossed the DISCONNECT on the wire,
    /// and returns once the broker acknowledges (or stays silent too long).
    fn leave<'s>(
        &'s self,
        mut sockets: Guard<'s>,
        frames: &mut Vec<zmq::Message>,
        why: &str,
        live: &[bool],
    ) -> Result<()> {
        self.link.flush_held(&sockets)?;
        self.link.unregister(&sockets)?;
        tracing::info!("{why}: unregistered, leaving");
        let deadline = Instant::now() + self.options.heartbeat_interval * self.options.liveness;
        while !self.link.all_acked(live) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!("no acknowledgement from every broker; leaving anyway");
                break;
            }
            let mut items: Vec<_> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
            crate::wakeup::poll(&mut items, (deadline - now).as_millis() as i64 + 1)?;
            while let Some(origin) = self.next_message(&sockets, frames, None)? {
                (sockets, _) = self.handle(sockets, origin, frames)?;
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

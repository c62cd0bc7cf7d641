//! The job thread's work on each message: running a job with the sockets
//! released to the pulse thread, holding answers for coalescing, and
//! leaving cleanly (its loop over the brokers is [`super::turns`]).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::coalesce::{ahead_limit, may_hold, may_hold_ahead, Finished};
use super::handoff::Handoff;
use super::wire::{is_job, recv_frames, send_raw, send_result};
use super::{Guard, Link, Running, WorkerOptions};
use crate::error::Result;
use crate::plugin::LoadedPlugin;
use crate::protocol::{
    decode_request_tail, split_job_arg, Command, CommandFrame, HeaderIter, ResultTail, Status, COMMAND_LEN, INLINE_MAX,
    RETURN_ELSEWHERE,
};

/// The job thread: what it runs jobs with, and its state across jobs.
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
    /// Whether to yield the CPU after sending answers, from how it went.
    pub(super) handoff: Cell<Handoff>,
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

impl JobLoop<'_> {
    /// Handles one message from the broker; true when a job ran. The socket
    /// guard travels by value: running a job releases it and takes it back.
    pub(super) fn handle<'s>(
        &'s self,
        sockets: Guard<'s>,
        origin: usize,
        frames: &[zmq::Message],
    ) -> Result<(Guard<'s>, bool)> {
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
                    // A lane's job has the turn: busy elsewhere, as for
                    // another broker's job, until it ends.
                    Ok(_) if self.link.handler.is_busy() => {
                        let frames = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
                        super::pulse::give_back_for(&sockets[origin], frames, RETURN_ELSEWHERE, "stuck");
                        self.link.peers[origin].owes_ready.store(true, Ordering::Release);
                    }
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
            Command::CancelJob => self.link.on_cancel(&sockets, origin, cmd.id),
            Command::Recall => self.link.on_recall(&sockets, origin, cmd.id),
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
                self.link.cancelled.store(false, Ordering::Release);
                *Link::lock(&self.link.running) = Some(running);
                // A long job: the pulse wakes to read cancels and recalls
                // while it runs (it sleeps a heartbeat otherwise). Not for a
                // worker of several brokers: its pulse would give the other
                // brokers' jobs back at every job, and their turns between
                // jobs keep it fair (it sweeps once it wakes, as before).
                let long = self.expected_us.get() >= super::pulse::CONTROL_SWEEP.as_micros() as f64;
                self.link.long_jobs.store(long, Ordering::Relaxed);
                if long && self.link.peers.len() == 1 && Link::lock(&self.link.held).is_empty() {
                    self.link.timer.set(super::pulse::CONTROL_SWEEP);
                }
                drop(sockets);
                let outcome = {
                    let _turn = self.link.handler.take();
                    self.plugin.handle_job(headers.iter().copied(), data, job_id, &self.link.cancelled)
                };
                sockets = Link::lock(&self.link.sockets);
                let limit = self.options.max_message_bytes;
                // The broker's limit is the whole message's: the RESULT
                // frame's head counts too.
                let head = COMMAND_LEN + ResultTail { still_busy: false, run_us: None }.encode().0.len();
                match outcome {
                    // The broker answered its client already: nothing to carry.
                    _ if self.link.cancelled.load(Ordering::Acquire) => {
                        (Status::Cancelled, HandlerOutput::Text(String::new()))
                    }
                    Ok(out) if out.len().saturating_add(head) > limit => {
                        let msg = super::wire::oversized_result(out.len(), limit);
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
        let leaving = self.link.unregistered.load(Ordering::Acquire);
        let backlog = backlog && !leaving;
        let limit = if may_hold(coalesce, backlog, held.len(), held.age(now), expected, at_hand) {
            Some(coalesce)
        } else {
            let at_hand = |n| self.jobs_at_hand(&sockets, origin, n);
            let ahead = !leaving && may_hold_ahead(coalesce, held.len(), held.age(now), expected, at_hand);
            if ahead {
                tracing::debug!(job_id, "answer held: jobs given ahead wait at hand");
            }
            ahead.then(|| ahead_limit(coalesce))
        };
        if let Some(limit) = limit {
            if held.push(now, done, limit) {
                self.link.timer.set(limit);
            }
            return Ok(sockets);
        }
        drop(held);
        if !self.link.flush_held_with(&sockets, Some(done))? {
            tracing::warn!(job_id, "broker not connected: the answer is lost (its client's deadline ends it)");
        }
        // With nothing at hand, the wait for the next message gives the CPU up anyway.
        if !Link::lock(&self.link.stash).is_empty() {
            // The sockets are free meanwhile: the pulse thread may need them.
            drop(sockets);
            self.hand_over();
            sockets = Link::lock(&self.link.sockets);
        }
        Ok(sockets)
    }

    /// Yields the CPU once, to the broker the answers just sent woke, unless
    /// the last yields gave it away to other work (see [`super::handoff`]).
    fn hand_over(&self) {
        let mut handoff = self.handoff.get();
        let before = Instant::now();
        if handoff.may_yield(before) {
            crate::sys::yield_cpu();
            let now = Instant::now();
            handoff.yielded(now.saturating_duration_since(before), now);
            self.handoff.set(handoff);
        }
    }

    /// Jobs of broker `origin` waiting at hand, reading its socket into the
    /// stash until `want` are seen or nothing more is there.
    fn jobs_at_hand(&self, sockets: &[super::socket::BrokerSocket], origin: usize, want: usize) -> usize {
        let mut stash = Link::lock(&self.link.stash);
        let mut jobs = stash.iter().filter(|(o, f)| *o == origin && is_job(f)).count();
        let mut next = Vec::with_capacity(2);
        while jobs < want && recv_frames(&sockets[origin], &mut next).unwrap_or(false) {
            jobs += usize::from(is_job(&next));
            stash.push_back((origin, std::mem::take(&mut next)));
        }
        jobs
    }

    /// Unregisters, serves any job that crossed the DISCONNECT on the wire,
    /// and returns once the broker acknowledges (or stays silent too long).
    pub(super) fn leave<'s>(
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
            let mut items: Vec<_> = sockets.iter().map(|s| s.poll_item(zmq::POLLIN)).collect();
            let wait = if sockets.iter().any(|s| s.buffered()) { 0 } else { (deadline - now).as_millis() as i64 + 1 };
            crate::wakeup::poll(&mut items, wait)?;
            for (socket, item) in sockets.iter().zip(&items) {
                socket.polled(item);
            }
            drop(items);
            while let Some(origin) = self.next_message(&sockets, frames, None)? {
                (sockets, _) = self.handle(sockets, origin, frames)?;
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

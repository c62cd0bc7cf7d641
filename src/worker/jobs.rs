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
    pub(super) fn run(&self, shutdown: &Wakeup) -> Result<()> {
        let interval = self.options.heartbeat_interval;
        let broker_timeout = interval * self.options.liveness;
        let mut next_heartbeat = Instant::now() + interval;
        // Not registered yet (or the broker went silent): READY is sent when
        // a broker is connected, again after a backoff while none answers.
        let mut lost = true;
        let mut ready_backoff = interval;
        let mut next_ready = Instant::now();
        let mut frames: Vec<zmq::Message> = Vec::with_capacity(3);
        let mut socket = Link::lock(&self.link.socket);
        let mut redial = crate::redial::Redial::new(&self.options.backend, Instant::now());
        loop {
            let retiring = self.retire_at.is_some_and(|at| Instant::now() >= at);
            if shutdown.requested() || retiring || self.link.unregistered.load(Ordering::Acquire) {
                let why = if retiring { "max age reached" } else { "stop requested" };
                return self.leave(socket, &mut frames, why);
            }
            if self.link.reregister.swap(false, Ordering::AcqRel) {
                tracing::info!("broker asked us to register again");
                if !send_raw(&socket, self.ready)? {
                    lost = true;
                }
            }
            let now = Instant::now();
            let last_heard = *Link::lock(&self.link.last_heard);
            if !lost && now >= last_heard + broker_timeout {
                if self.options.exit_on_broker_loss {
                    return Err(Error::Protocol(format!("broker silent for {broker_timeout:?}; exiting as asked")));
                }
                tracing::warn!("broker silent for {broker_timeout:?}; registering again as soon as one answers");
                lost = true;
            }
            let connected = socket.get_events().map_err(Error::zmq("socket events"))?.contains(zmq::POLLOUT);
            if redial.check(&socket, connected || !lost, now)? {
                tracing::warn!(
                    "no connection to the broker at {} for {:.0?}; dialling again (a broker with \
                     --curve-secret refuses keys not in its --allow-workers: see its log)",
                    self.options.backend,
                    redial.unconnected_for(now)
                );
            }
            if lost && connected && now >= next_ready {
                // Sent: registered, as far as we know; the silence timer runs
                // again, and the backoff grows until the broker answers.
                if send_raw(&socket, self.ready)? {
                    lost = false;
                    self.link.heard();
                }
                next_ready = now + ready_backoff;
                ready_backoff = (ready_backoff * 2).min(Duration::from_secs(32));
            }
            if now >= next_heartbeat {
                send(&socket, CommandFrame::new(Command::Heartbeat, 0, 0, b""), None)?;
                next_heartbeat = now + interval;
            }
            let mut wake = next_heartbeat;
            if lost {
                wake = wake.min(next_ready);
                if let Some(at) = redial.next() {
                    wake = wake.min(at);
                }
            } else {
                wake = wake.min(last_heard + broker_timeout);
            }
            if let Some(at) = self.retire_at {
                wake = wake.min(at);
            }
            // While lost and unconnected, a new connection (POLLOUT) wakes us to register.
            let events = if lost && !connected { zmq::POLLIN | zmq::POLLOUT } else { zmq::POLLIN };
            let mut items = [socket.as_poll_item(events), shutdown.poll_item()];
            crate::wakeup::poll(&mut items, wake.saturating_duration_since(now).as_millis() as i64 + 1)?;
            if items[0].is_writable() {
                next_ready = Instant::now();
            }
            if !items[0].is_readable() && Link::lock(&self.link.stash).is_empty() {
                continue;
            }
            while self.next_message(&socket, &mut frames)? {
                self.link.heard();
                (lost, ready_backoff) = (false, interval);
                let ran_job;
                (socket, ran_job) = self.handle(socket, &frames)?;
                if ran_job {
                    next_heartbeat = Instant::now() + interval;
                }
            }
            // Nothing at hand: nothing may stay held while we wait.
            self.link.flush_held(&socket)?;
        }
    }

    /// The next message: one the pulse thread stashed, else one from the socket.
    fn next_message(&self, socket: &zmq::Socket, frames: &mut Vec<zmq::Message>) -> Result<bool> {
        if let Some(stashed) = Link::lock(&self.link.stash).pop_front() {
            *frames = stashed;
            return Ok(true);
        }
        recv_frames(socket, frames)
    }

    /// Handles one message from the broker; true when a job ran. The socket
    /// guard travels by value: running a job releases it and takes it back.
    fn handle<'s>(&'s self, socket: Guard<'s>, frames: &[zmq::Message]) -> Result<(Guard<'s>, bool)> {
        let cmd = match frames.first().map(|f| CommandFrame::decode(f)) {
            Some(Ok(cmd)) => cmd,
            _ => {
                tracing::warn!("malformed message from the broker ignored");
                return Ok((socket, false));
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
                        return Ok((self.run_job(socket, cmd.id, backlog, headers, data, inline)?, true));
                    }
                    Err(msg) => {
                        // Answer rather than ignore: the broker counts us busy until a RESULT.
                        tracing::warn!("{msg}");
                        send_result(
                            &socket,
                            cmd.id,
                            Status::BadRequest,
                            ResultTail::default(),
                            msg.into_bytes().into(),
                        )?;
                    }
                }
            }
            Command::Heartbeat => {}
            Command::Disconnect if self.link.unregistered.load(Ordering::Acquire) => {
                self.link.acked.store(true, Ordering::Release)
            }
            Command::Disconnect => self.link.reregister.store(true, Ordering::Release),
            other => tracing::warn!("unexpected {other:?} from the broker ignored"),
        }
        Ok((socket, false))
    }

    /// Runs a job with the socket released (the pulse thread uses it
    /// meanwhile), then answers, unless the pulse thread already answered
    /// `TIMEOUT`: then the worker registers again to say it is free.
    fn run_job<'s>(
        &'s self,
        mut socket: Guard<'s>,
        job_id: u64,
        backlog: bool,
        headers: &[u8],
        data: &[u8],
        inline: bool,
    ) -> Result<Guard<'s>> {
        let started = Instant::now();
        let decoded: Result<Vec<(&str, &str)>> = HeaderIter::new(headers).collect();
        let (status, body) = match decoded {
            Err(e) => (Status::BadRequest, HandlerOutput::Text(e.to_string())),
            Ok(headers) => {
                let summary = headers.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
                let running = Running { job_id, started, headers: summary, timed_out: false };
                *Link::lock(&self.link.running) = Some(running);
                drop(socket);
                let outcome = self.plugin.handle_raw(headers.iter().copied(), data);
                socket = Link::lock(&self.link.socket);
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
                send_raw(&socket, self.ready)?;
            }
            return Ok(socket);
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
        let done = Finished { job_id, status, run_us, body, inline };
        let mut held = Link::lock(&self.link.held);
        // A message read here waits in the stash, first in line: reading it
        // costs less than asking libzmq whether one is there (a syscall).
        let at_hand = || {
            let mut stash = Link::lock(&self.link.stash);
            if !stash.is_empty() {
                return true;
            }
            let mut next = Vec::with_capacity(2);
            let got = recv_frames(&socket, &mut next).unwrap_or(false);
            if got {
                stash.push_back(next);
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
            return Ok(socket);
        }
        drop(held);
        self.link.flush_held(&socket)?;
        if !done.send(&socket)? {
            tracing::warn!(job_id, "no broker connected: the answer is lost (its client's deadline ends it)");
        }
        Ok(socket)
    }

    /// Unregisters, serves any job that crossed the DISCONNECT on the wire,
    /// and returns once the broker acknowledges (or stays silent too long).
    fn leave<'s>(&'s self, mut socket: Guard<'s>, frames: &mut Vec<zmq::Message>, why: &str) -> Result<()> {
        self.link.flush_held(&socket)?;
        self.link.unregister(&socket)?;
        tracing::info!("{why}: unregistered, leaving");
        let deadline = Instant::now() + self.options.heartbeat_interval * self.options.liveness;
        while !self.link.acked.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!("no acknowledgement from the broker; leaving anyway");
                break;
            }
            let mut items = [socket.as_poll_item(zmq::POLLIN)];
            crate::wakeup::poll(&mut items, (deadline - now).as_millis() as i64 + 1)?;
            while self.next_message(&socket, frames)? {
                (socket, _) = self.handle(socket, frames)?;
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

//! The worker: connects to the broker's back socket, registers its service and
//! runs each job through the plugin, one at a time.
//!
//! The job runs on the thread that received it, so the hot path has no thread
//! hand-off. The socket sits in a mutex: while a job runs, the job thread
//! releases it and the [pulse] thread uses it to keep heartbeating (a long job
//! is not a dead worker), to unregister at once on a stop request, and to
//! answer `TIMEOUT` for a handler that outlives `--timeout`.

mod coalesce;
mod pulse;
pub mod stackdump;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;
use crate::protocol::{split_job_arg, Command, CommandFrame, HeaderIter, Registration, Status};
use crate::wakeup::Wakeup;
use coalesce::{may_hold, send_result, Finished, Held, Timer};

/// Exit status of a worker whose handler stayed stuck past the hard limit.
pub const EXIT_STUCK: i32 = 4;

/// How long a result may be held under backlog by default (see [`WorkerOptions::coalesce`]).
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(5);

/// How a worker connects and behaves.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub backend: String,
    /// Service name to register; the plugin's name when `None`.
    pub service: Option<String>,
    pub heartbeat_interval: Duration,
    /// Missed broker heartbeats before the broker counts as lost.
    pub liveness: u32,
    /// Exit (code 1) when the broker is lost instead of reconnecting.
    pub exit_on_broker_loss: bool,
    /// A job running longer is answered `TIMEOUT` and its stack is logged.
    pub timeout: Option<Duration>,
    /// A handler still running this long makes the worker exit ([`EXIT_STUCK`]).
    pub hard_timeout: Option<Duration>,
    /// Leave after this long (plus up to `max_age_delta`), between jobs.
    pub max_age: Option<Duration>,
    pub max_age_delta: Duration,
    /// Results larger than this are answered with an error instead (the
    /// broker would drop them); match the broker's `--max-message-bytes`.
    pub max_message_bytes: usize,
    /// Under backlog (the broker says more jobs wait), a finished result may
    /// wait this long to be sent with the next ones; zero sends each at once.
    pub coalesce: Duration,
}

impl WorkerOptions {
    pub fn new(backend: impl Into<String>) -> Self {
        WorkerOptions {
            backend: backend.into(),
            service: None,
            heartbeat_interval: Duration::from_secs(1),
            liveness: 3,
            exit_on_broker_loss: false,
            timeout: None,
            hard_timeout: None,
            max_age: None,
            max_age_delta: Duration::ZERO,
            max_message_bytes: crate::broker::MAX_MESSAGE_BYTES as usize,
            coalesce: DEFAULT_COALESCE,
        }
    }
}

type Guard<'s> = MutexGuard<'s, zmq::Socket>;

/// The job in progress, as the pulse thread sees it.
#[derive(Clone, Debug)]
struct Running {
    job_id: u64,
    started: Instant,
    /// `name=value` pairs, for the log of a timed-out job.
    headers: String,
    timed_out: bool,
}

/// Shared between the job thread and the pulse thread.
struct Link {
    socket: Mutex<zmq::Socket>,
    running: Mutex<Option<Running>>,
    /// The broker forgot us (it restarted): register again once idle.
    reregister: AtomicBool,
    /// DISCONNECT sent: no new job will come once the broker acknowledges.
    unregistered: AtomicBool,
    /// The broker acknowledged our DISCONNECT.
    acked: AtomicBool,
    /// The job thread has left: the pulse thread may end.
    finished: AtomicBool,
    /// Messages the pulse thread read while a job ran, for the job thread:
    /// jobs given ahead (prefetch) wait here.
    stash: Mutex<std::collections::VecDeque<Vec<zmq::Message>>>,
    /// Finished results held back under backlog; locked only by the holder
    /// of `socket`, so whoever sends them owns the socket.
    held: Mutex<Held>,
    /// Wakes the pulse thread when held results fall due during a job.
    timer: Timer,
    last_heard: Mutex<Instant>,
    job_thread: libc::pthread_t,
}

impl Link {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn heard(&self) {
        *Link::lock(&self.last_heard) = Instant::now();
    }

    /// Sends the held results, if any; call with the socket locked.
    fn flush_held(&self, socket: &zmq::Socket) -> Result<()> {
        let mut held = Link::lock(&self.held);
        if held.is_empty() {
            return Ok(());
        }
        self.timer.set(Duration::ZERO);
        if !held.flush(socket)? {
            tracing::warn!("no broker connected: held answers are lost (their clients' deadlines end them)");
        }
        Ok(())
    }

    /// Sends DISCONNECT once.
    fn unregister(&self, socket: &zmq::Socket) -> Result<()> {
        if !self.unregistered.swap(true, Ordering::AcqRel) {
            send(socket, CommandFrame::new(Command::Disconnect, 0, 0, b""), None)?;
        }
        Ok(())
    }
}

/// A unique identity across hosts: host name, pid and random bits.
fn identity(host: &str) -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom into a local buffer; on failure the time-based fallback is used.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if n == 4 {
        u32::from_le_bytes(bytes)
    } else {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
    };
    format!("{host}-{}-{random:08x}", std::process::id())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One socket for the worker's life: ZeroMQ reconnects it by itself. In
/// `immediate` mode messages queue only on a live connection, so nothing
/// piles up (or blocks) while the broker is away, and POLLOUT says whether a
/// broker is connected.
fn connect(ctx: &zmq::Context, options: &WorkerOptions, identity: &str) -> Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER).map_err(Error::zmq("creating the worker socket"))?;
    socket.set_identity(identity.as_bytes()).map_err(Error::zmq("setting the worker identity"))?;
    socket.set_linger(0).map_err(Error::zmq("linger"))?;
    socket.set_immediate(true).map_err(Error::zmq("immediate"))?;
    socket.connect(&options.backend).map_err(Error::zmq(format!("connecting to {}", options.backend)))?;
    Ok(socket)
}

/// Sends without ever blocking; `Ok(false)` when no broker is connected (the
/// message is dropped: the broker that would have read it is gone).
fn send(socket: &zmq::Socket, frame: CommandFrame<'_>, body: Option<zmq::Message>) -> Result<bool> {
    let more = if body.is_some() { zmq::SNDMORE } else { 0 };
    match socket.send(frame.message(), more | zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(false),
        Err(e) => return Err(Error::zmq("sending to the broker")(e)),
    }
    if let Some(body) = body {
        // The first part went out, so the rest of the message does too.
        socket.send(body, zmq::DONTWAIT).map_err(Error::zmq("sending to the broker"))?;
    }
    Ok(true)
}

/// Sends a prepared frame (READY) without blocking; `Ok(false)` when not connected.
fn send_raw(socket: &zmq::Socket, bytes: &[u8]) -> Result<bool> {
    match socket.send(bytes, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(e) => Err(Error::zmq("sending to the broker")(e)),
    }
}

/// A random duration in `0..=max` (spreads the retirement of workers).
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom into a local buffer.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    max.mul_f64(u64::from_le_bytes(bytes) as f64 / u64::MAX as f64)
}

/// Serves jobs with `plugin` until `shutdown` (or max age); returns `Err`
/// when the broker is lost and `exit_on_broker_loss` is set, or on socket failure.
pub fn serve(plugin: LoadedPlugin, options: &WorkerOptions, shutdown: &Wakeup) -> Result<()> {
    stackdump::install().map_err(Error::io("installing the stack dump handler"))?;
    let host = hostname();
    let id = identity(&host);
    let registration = Registration {
        service: options.service.clone().unwrap_or_else(|| plugin.name.clone()),
        pid: std::process::id(),
        host,
        plugin: plugin.name.clone(),
        plugin_version: plugin.version.clone(),
        coalesce_us: options.coalesce.as_micros() as u64,
    }
    .encode();
    let ready = CommandFrame::new(Command::Ready, 0, 0, &registration).encode();
    let ctx = zmq::Context::new();
    let link = Arc::new(Link {
        socket: Mutex::new(connect(&ctx, options, &id)?),
        running: Mutex::new(None),
        reregister: AtomicBool::new(false),
        unregistered: AtomicBool::new(false),
        acked: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        stash: Mutex::new(std::collections::VecDeque::new()),
        held: Mutex::new(Held::default()),
        timer: Timer::new().map_err(Error::io("creating the coalescing timer"))?,
        last_heard: Mutex::new(Instant::now()),
        job_thread: stackdump::current_thread(),
    });
    // READY goes out as soon as a broker is connected (see JobLoop::run).
    tracing::info!(identity = %id, backend = %options.backend, "worker started");

    let pulse = {
        let (link, shutdown, options) = (link.clone(), shutdown.clone(), options.clone());
        std::thread::Builder::new()
            .name("pulse".into())
            .spawn(move || pulse::run(&link, &shutdown, &options))
            .map_err(Error::io("starting the pulse thread"))?
    };
    let retire_at = options.max_age.map(|age| Instant::now() + age + jitter(options.max_age_delta));
    let result =
        JobLoop { plugin: &plugin, options, ready: &ready, link: &link, retire_at, expected_us: Cell::new(0.0) }
            .run(shutdown);
    link.finished.store(true, Ordering::Release);
    shutdown.trigger();
    let _ = pulse.join();
    result
}

struct JobLoop<'a> {
    plugin: &'a LoadedPlugin,
    options: &'a WorkerOptions,
    ready: &'a [u8],
    link: &'a Link,
    retire_at: Option<Instant>,
    /// Moving average of the handler's run time, to judge whether a held
    /// result can wait for the next job.
    expected_us: Cell<f64>,
}

impl JobLoop<'_> {
    fn run(&self, shutdown: &Wakeup) -> Result<()> {
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
            Command::Job if frames.len() == 2 => {
                let backlog = split_job_arg(cmd.arg).1;
                return Ok((self.run_job(socket, cmd.id, backlog, cmd.tail, &frames[1])?, true));
            }
            Command::Job => {
                // Answer rather than ignore: the broker counts us busy until a RESULT.
                let msg = format!("JOB with {} frames after the command frame, expected 1", frames.len() - 1);
                tracing::warn!("{msg}");
                let result = CommandFrame::new(Command::Result, cmd.id, Status::BadRequest as u32, b"");
                send(&socket, result, Some(msg.into_bytes().into()))?;
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
    ) -> Result<Guard<'s>> {
        let started = Instant::now();
        let decoded: Result<Vec<(&str, &str)>> = HeaderIter::new(headers).collect();
        let (status, body) = match decoded {
            Err(e) => (Status::BadRequest, e.to_string().into_bytes().into()),
            Ok(headers) => {
                let summary = headers.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
                let running = Running { job_id, started: Instant::now(), headers: summary, timed_out: false };
                *Link::lock(&self.link.running) = Some(running);
                drop(socket);
                let outcome = self.plugin.handle_raw(headers.iter().copied(), data);
                socket = Link::lock(&self.link.socket);
                let limit = self.options.max_message_bytes;
                match outcome {
                    Ok(out) if out.len() > limit => {
                        let msg =
                            format!("result of {} bytes exceeds the maximum message size ({limit} bytes)", out.len());
                        (Status::HandlerError, msg.into_bytes().into())
                    }
                    Ok(out) => (Status::Ok, zmq::Message::from(&out[..])),
                    Err(msg) => (Status::HandlerError, msg.into_bytes().into()),
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
        let done = Finished { job_id, status, run_us, body };
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
        // Cheap tests first: the socket is asked only under backlog.
        if backlog && !coalesce.is_zero() && may_hold(coalesce, backlog, at_hand(), held.len(), held.age(now), expected)
        {
            if held.push(now, done) {
                self.link.timer.set(coalesce);
            }
            return Ok(socket);
        }
        drop(held);
        self.link.flush_held(&socket)?;
        if !send_result(&socket, job_id, status, Some(run_us), done.body)? {
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

/// Reads one multipart message without blocking; `false` when none is waiting.
fn recv_frames(socket: &zmq::Socket, frames: &mut Vec<zmq::Message>) -> Result<bool> {
    frames.clear();
    loop {
        let mut msg = zmq::Message::new();
        match socket.recv(&mut msg, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if frames.is_empty() => return Ok(false),
            Err(e) => return Err(Error::zmq("receiving from the broker")(e)),
        }
        let more = msg.get_more();
        frames.push(msg);
        if !more {
            return Ok(true);
        }
    }
}

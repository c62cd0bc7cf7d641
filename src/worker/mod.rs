//! The worker: connects to the back socket of one broker or several,
//! registers its service with each and runs each job through the plugin, one
//! at a time, answering the broker that sent it.
//!
//! The job runs on the thread that received it, so the hot path has no thread
//! hand-off. The sockets (one per broker) sit in a mutex: while a job runs,
//! the job thread releases them and the pulse thread uses them to keep
//! heartbeating (a long job is not a dead worker), to unregister at once on
//! a stop request, to answer `TIMEOUT` for a handler that outlives
//! `--timeout`, and to give back at once a job another broker sends
//! meanwhile (`RETURN_ELSEWHERE`).

mod coalesce;
mod handoff;
mod jobs;
mod lane;
mod pulse;
mod socket;
pub mod stackdump;
mod turn;
mod turns;
mod wire;

use socket::BrokerSocket;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;
use crate::protocol::{Command, CommandFrame, Registration};
use crate::sys::Timer;
use crate::wakeup::Wakeup;
use coalesce::{Finished, Held};
use jobs::JobLoop;
use wire::{identity, jitter, send};

/// Exit status of a worker whose handler stayed stuck past the hard limit.
pub const EXIT_STUCK: i32 = 4;

/// How long a result may be held under backlog by default (see
/// [`WorkerOptions::coalesce`] and the protocol's timing contract).
pub use crate::protocol::DEFAULT_COALESCE;

/// How a worker connects and behaves.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The back endpoints of the brokers to serve (one, or several: the
    /// worker registers with each and runs one job at a time).
    pub backends: Vec<String>,
    /// Service name to register; the plugin's name when `None`.
    pub service: Option<String>,
    /// How often it heartbeats the broker and expects the broker's heartbeats: use the broker's interval.
    pub heartbeat_interval: Duration,
    /// Missed broker heartbeats before the broker counts as lost.
    pub liveness: u32,
    /// Exit (code 1) when every broker is lost instead of reconnecting.
    pub exit_on_broker_loss: bool,
    /// A job running longer is answered `TIMEOUT` and its stack is logged.
    pub timeout: Option<Duration>,
    /// A handler still running this long makes the worker exit ([`EXIT_STUCK`]).
    pub hard_timeout: Option<Duration>,
    /// Leave after this long (plus up to `max_age_delta`), between jobs.
    pub max_age: Option<Duration>,
    /// Up to this much is added at random to `max_age`, so workers do not all leave at once.
    pub max_age_delta: Duration,
    /// Results larger than this (with their frame's head) are answered with
    /// an error instead (the broker would drop them); no more than the
    /// broker's `--max-message-bytes`.
    pub max_message_bytes: usize,
    /// Under backlog (the broker says more jobs wait), a finished result may
    /// wait this long to be sent with the next ones; zero sends each at once.
    pub coalesce: Duration,
    /// Run libzmq's I/O thread and the pulse thread on this CPU (the job
    /// thread keeps the CPUs it had): see [`crate::affinity`].
    pub io_cpu: Option<usize>,
    /// Let libzmq's I/O thread and the pulse thread preempt the job thread
    /// on wake-up (the kernel's default); otherwise they run under
    /// `SCHED_BATCH`: see [`crate::affinity`].
    pub preemptive_io: bool,
    /// CURVE credentials for a broker whose back is tcp with `--curve-secret`.
    pub curve: Option<crate::auth::CurveClient>,
    /// Open a lane beside the first `unix://` broker, if any: local clients
    /// send this service's jobs straight to this worker (see `worker::lane`).
    pub lanes: bool,
}

impl WorkerOptions {
    /// Options for this back endpoint, everything else at its default (no timeouts, no max age).
    pub fn new(backend: impl Into<String>) -> Self {
        WorkerOptions {
            backends: vec![backend.into()],
            service: None,
            heartbeat_interval: crate::protocol::HEARTBEAT_INTERVAL,
            liveness: crate::protocol::LIVENESS,
            exit_on_broker_loss: false,
            timeout: None,
            hard_timeout: None,
            max_age: None,
            max_age_delta: Duration::ZERO,
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES,
            coalesce: DEFAULT_COALESCE,
            io_cpu: None,
            preemptive_io: false,
            curve: None,
            lanes: true,
        }
    }
}

/// How long a `SCHED_BATCH` I/O thread may wait for a busy CPU: about a
/// time slice plus a scheduler tick (4 ms at 250 Hz), once for the answer
/// going out and once for the next job coming in.
const BATCH_IO_DELAY: Duration = Duration::from_millis(8);

/// How long this worker's answers may wait before they leave, which the
/// broker covers with jobs given ahead (registered as `coalesce_us`).
fn answer_delay(options: &WorkerOptions, batched_io: bool) -> Duration {
    options.coalesce + if batched_io { BATCH_IO_DELAY } else { Duration::ZERO }
}

/// The sockets, one per broker (in `backends` order), locked.
type Guard<'s> = MutexGuard<'s, Vec<BrokerSocket>>;

/// The job in progress, as the pulse thread sees it.
#[derive(Clone, Debug)]
struct Running {
    /// The broker that sent it (its socket's index).
    origin: usize,
    job_id: u64,
    started: Instant,
    /// `name=value` pairs, for the log of a timed-out job.
    headers: String,
    timed_out: bool,
}

/// What the job and pulse threads know of one broker.
#[derive(Default)]
struct Peer {
    /// The broker forgot us (it restarted): register again once idle.
    reregister: AtomicBool,
    /// It acknowledged our DISCONNECT.
    acked: AtomicBool,
    /// We gave it a job back as busy elsewhere: `READY` once idle.
    owes_ready: AtomicBool,
    last_heard: Mutex<Option<Instant>>,
}

/// A message read from broker `.0`'s socket.
type FromBroker = (usize, Vec<zmq::Message>);

/// Shared between the job thread and the pulse thread.
struct Link {
    sockets: Mutex<Vec<BrokerSocket>>,
    peers: Vec<Peer>,
    running: Mutex<Option<Running>>,
    /// DISCONNECT sent: no new job will come once the brokers acknowledge.
    unregistered: AtomicBool,
    /// The running job was cancelled (the handler sees it through its
    /// `JobContext`); cleared as each job starts.
    cancelled: AtomicBool,
    /// Jobs here take [`pulse::CONTROL_SWEEP`] or more: the pulse reads the
    /// broker's messages while each runs.
    long_jobs: AtomicBool,
    /// The job thread has left: the pulse thread may end.
    finished: AtomicBool,
    /// Messages the pulse thread read while a job ran, for the job thread:
    /// jobs given ahead (prefetch) wait here.
    stash: Mutex<std::collections::VecDeque<FromBroker>>,
    /// Finished results held back under backlog; locked only by the holder
    /// of `socket`, so whoever sends them owns the socket.
    held: Mutex<Held>,
    /// Wakes the pulse thread when held results fall due during a job.
    timer: Timer,
    /// The handler's turn: the job thread's and the lane's jobs take turns.
    handler: turn::HandlerTurn,
    /// Fired by the lane when its job ends and a broker is owed a `READY`.
    lane_free: Wakeup,
    /// Jobs the lane answered, told to the brokers with each heartbeat.
    lane_jobs: std::sync::atomic::AtomicU64,
    /// The job the lane's handler runs, when there is a limit for the pulse thread to watch.
    lane_running: Mutex<Option<lane::LaneRunning>>,
    job_thread: libc::pthread_t,
}

impl Link {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Broker `i` was heard from (any message).
    fn heard(&self, i: usize) {
        *Link::lock(&self.peers[i].last_heard) = Some(Instant::now());
    }

    /// When broker `i` was last heard from (`None`: never, or forgotten).
    fn last_heard(&self, i: usize) -> Option<Instant> {
        *Link::lock(&self.peers[i].last_heard)
    }

    /// `CANCEL_JOB` from broker `origin`; call with the sockets locked. The
    /// running handler is told; a job given ahead and not started is
    /// answered `CANCELLED` unrun; one already answered is left alone.
    fn on_cancel(&self, sockets: &[BrokerSocket], origin: usize, job_id: u64) {
        if Link::lock(&self.running).as_ref().is_some_and(|r| r.origin == origin && r.job_id == job_id) {
            self.cancelled.store(true, Ordering::Release);
            tracing::debug!(job_id, "the running job was cancelled");
            return;
        }
        if self.unstash(origin, job_id).is_some() {
            let status = crate::protocol::Status::Cancelled;
            let _ = wire::send_result(&sockets[origin], job_id, status, Default::default(), zmq::Message::new());
        }
    }

    /// `RECALL` from broker `origin`; call with the sockets locked. A job
    /// given ahead and not started goes back unrun, for a job of higher
    /// priority to go first; one that started runs on.
    fn on_recall(&self, sockets: &[BrokerSocket], origin: usize, job_id: u64) {
        if let Some(frames) = self.unstash(origin, job_id) {
            pulse::give_back_for(&sockets[origin], frames, 0, "a job of higher priority waits behind it");
        }
    }

    /// Takes job `job_id` of broker `origin` out of the stash, if it waits there.
    fn unstash(&self, origin: usize, job_id: u64) -> Option<Vec<zmq::Message>> {
        let is_it = |(o, frames): &FromBroker| {
            let head = frames.first().and_then(|f| CommandFrame::decode(f).ok());
            *o == origin && head.is_some_and(|c| c.command == Command::Job && c.id == job_id)
        };
        let mut stash = Link::lock(&self.stash);
        stash.iter().position(is_it).and_then(|at| stash.remove(at)).map(|(_, frames)| frames)
    }

    /// Sends the held results, if any; call with the sockets locked.
    fn flush_held(&self, sockets: &[BrokerSocket]) -> Result<()> {
        self.flush_held_with(sockets, None).map(drop)
    }

    /// Sends the held results and then `last`, over the local transport in
    /// one write (one wake-up of the broker for all); false when `last`
    /// found no broker connected.
    fn flush_held_with(&self, sockets: &[BrokerSocket], last: Option<Finished>) -> Result<bool> {
        let mut held = Link::lock(&self.held);
        // Held answers are all one broker's; the job thread sends another
        // broker's before it runs that one's job, so `last` is theirs too.
        let Some(origin) = held.origin().or(last.as_ref().map(|f| f.origin)) else { return Ok(true) };
        let n = held.len() + usize::from(last.is_some());
        let together = n > 1;
        if together {
            sockets[origin].cork();
        }
        let send = || -> Result<bool> {
            if !held.is_empty() {
                self.timer.set(Duration::ZERO);
                if !held.flush(sockets)? {
                    tracing::warn!("broker not connected: held answers are lost (their clients' deadlines end them)");
                }
            }
            last.map_or(Ok(true), |last| last.send(sockets))
        };
        let sent = send();
        if together {
            tracing::debug!(answers = n, "answers sent together");
        }
        // Uncorked whatever happened: a corked socket would queue for ever.
        let written = if together { sockets[origin].uncork() } else { Ok(true) };
        Ok(sent? & written?)
    }

    /// Sends DISCONNECT to every broker, once.
    fn unregister(&self, sockets: &[BrokerSocket]) -> Result<()> {
        if !self.unregistered.swap(true, Ordering::AcqRel) {
            for socket in sockets {
                send(socket, CommandFrame::new(Command::Disconnect, 0, 0, b""), None)?;
            }
        }
        Ok(())
    }

    /// Every broker in `live` acknowledged our DISCONNECT (one that does
    /// not hear us cannot).
    fn all_acked(&self, live: &[bool]) -> bool {
        self.peers.iter().zip(live).all(|(p, &live)| !live || p.acked.load(Ordering::Acquire))
    }

    /// A `DISCONNECT` from broker `i`: the ack of ours, or it forgot us.
    fn on_disconnect(&self, i: usize) {
        let peer = &self.peers[i];
        let flag = if self.unregistered.load(Ordering::Acquire) { &peer.acked } else { &peer.reregister };
        flag.store(true, Ordering::Release);
    }
}

/// Serves jobs with `plugin` until `shutdown` (or max age); returns `Err`
/// when the broker is lost and `exit_on_broker_loss` is set, or on socket failure.
pub fn serve(plugin: LoadedPlugin, options: &WorkerOptions, shutdown: &Wakeup) -> Result<()> {
    stackdump::install().map_err(Error::io("installing the stack dump handler"))?;
    let host = crate::sys::hostname();
    let id = identity(&host);
    // libzmq starts its I/O thread with the first socket: it and the pulse
    // thread inherit this pin and policy; the job thread (this one) gets its
    // own back.
    let pin = crate::affinity::PinGuard::new(options.io_cpu)?;
    let batch = crate::affinity::BatchGuard::new(!options.preemptive_io);
    let service = options.service.clone().unwrap_or_else(|| plugin.name.clone());
    let registration = Registration {
        service: service.clone(),
        pid: std::process::id(),
        host,
        plugin: plugin.name.clone(),
        plugin_version: plugin.version.clone(),
        // The I/O allowance only when the batch policy really took.
        coalesce_us: answer_delay(options, batch.active()).as_micros() as u64,
        inline: true,
    }
    .encode();
    let ready = CommandFrame::new(Command::Ready, 0, 0, &registration).encode();
    if options.backends.is_empty() {
        return Err(Error::BadFlag("a worker needs at least one --backend".into()));
    }
    let ctx = zmq::Context::new();
    let sockets = (options.backends.iter())
        .map(|b| socket::BrokerSocket::connect(&ctx, options, &id, b))
        .collect::<Result<Vec<_>>>()?;
    let link = Arc::new(Link {
        sockets: Mutex::new(sockets),
        peers: options.backends.iter().map(|_| Peer::default()).collect(),
        running: Mutex::new(None),
        unregistered: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        long_jobs: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        stash: Mutex::new(std::collections::VecDeque::new()),
        held: Mutex::new(Held::default()),
        timer: Timer::new().map_err(Error::io("creating the coalescing timer"))?,
        handler: turn::HandlerTurn::default(),
        lane_running: Mutex::new(None),
        lane_jobs: std::sync::atomic::AtomicU64::new(0),
        lane_free: Wakeup::new()?,
        job_thread: stackdump::current_thread(),
    });
    // READY goes out as soon as a broker is connected (see JobLoop::run).
    tracing::info!(identity = %id, backends = %options.backends.join(" "), "worker started");

    let pulse = {
        let (link, shutdown, options) = (link.clone(), shutdown.clone(), options.clone());
        std::thread::Builder::new()
            .name("pulse".into())
            .spawn(move || {
                crate::sys::block_process_signals();
                pulse::run(&link, &shutdown, &options)
            })
            .map_err(Error::io("starting the pulse thread"))?
    };
    drop((batch, pin));
    let lane = options.lanes.then(|| lane::open(&options.backends, &service)).flatten();
    let retire_at = options.max_age.map(|age| Instant::now() + age + jitter(options.max_age_delta));
    let result = std::thread::scope(|scope| {
        if let Some(lane) = lane {
            let jobs = lane::LaneJobs {
                plugin: &plugin,
                service: &service,
                link: &link,
                watched: options.timeout.is_some() || options.hard_timeout.is_some(),
                poke_pulse: options.timeout.is_some_and(|t| t < options.heartbeat_interval),
                max_message_bytes: options.max_message_bytes,
                pid: std::process::id(),
            };
            let started = std::thread::Builder::new().name("lane".into()).spawn_scoped(scope, move || {
                crate::sys::block_process_signals();
                if let Err(e) = lane::serve(lane, &jobs, shutdown) {
                    tracing::error!("the lane stopped: {e}; local clients go through the broker");
                }
            });
            if let Err(e) = started {
                tracing::warn!("no lane: its thread did not start: {e}");
            }
        }
        let result = JobLoop {
            plugin: &plugin,
            options,
            ready: &ready,
            link: &link,
            retire_at,
            expected_us: Cell::new(0.0),
            turn: Cell::new(0),
            handoff: Cell::new(handoff::Handoff::default()),
        }
        .run(shutdown);
        link.finished.store(true, Ordering::Release);
        // Ends the lane's thread (the scope waits for it) and the pulse's.
        shutdown.trigger();
        result
    });
    let _ = pulse.join();
    if link.lane_jobs.load(Ordering::Relaxed) > 0 {
        tracing::info!(jobs = link.lane_jobs.load(Ordering::Relaxed), "the lane is closed");
    }
    result
}

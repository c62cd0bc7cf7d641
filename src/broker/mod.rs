//! The broker: binds the front (clients) and back (workers) sockets and moves
//! messages between them and [`state::BrokerState`]; this loop only does I/O.

mod bind;
mod io;
mod listen;
mod snapshot;
pub mod state;
mod vitals;
mod warnings;
mod watch;

use std::time::{Duration, Instant};

use crate::auth::allow::AllowLists;
use crate::auth::zap::Zap;
use crate::auth::CurveServer;
use crate::endpoint::EndpointLock;
use crate::error::Result;
use crate::protocol::{Control, REQUESTS_WAIT_MAX};
use crate::sys::notify::Watchdog;
use crate::wakeup::Wakeup;
use io::Io;
pub use snapshot::{Probe, Snapshot};
use state::{BrokerState, Config};
use vitals::Vitals;

/// The loop's ZeroMQ sockets, in [`watch::Watch`]'s order.
const FRONT: usize = 0;
const BACK: usize = 1;
const BACK_EVENTS: usize = 2;
const FRONT_EVENTS: usize = 3;
const ZAP: usize = 4;
const ZMQ_SOCKETS: usize = 5;

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// The endpoint clients connect to (`unix://...`, `ipc://...` or `tcp://...`).
    pub frontend: String,
    /// More endpoints for clients: with a `unix://` frontend, an `ipc://`
    /// or `tcp://` one serves ZeroMQ clients (Powerhose 0.7's among them)
    /// beside the local ones. One ZeroMQ endpoint at most, in all.
    pub more_frontends: Vec<String>,
    /// The endpoint workers connect to.
    pub backend: String,
    /// The routing rules' tunables: queue bound, heartbeats, prefetch.
    pub config: Config,
    /// Timeout for Powerhose-format jobs, which carry none (Powerhose's client
    /// gave up after 7.5 s at most).
    pub legacy_timeout: Duration,
    /// Where `CONTROL` requests go (the cluster supervisor), if anywhere.
    pub control: Option<ControlSink>,
    /// Larger messages (all frames together) are counted and refused; past
    /// [`MAX_MESSAGE_HARD_FACTOR`](crate::protocol::MAX_MESSAGE_HARD_FACTOR)
    /// times this, ZeroMQ drops the sender's connection unread. Negative: no limit.
    pub max_message_bytes: i64,
    /// Run the broker (its loop and libzmq's I/O thread) on this CPU.
    pub io_cpu: Option<usize>,
    /// CURVE on every tcp endpoint, with the keys each role may use.
    pub curve: Option<CurveServer>,
    /// Serve a tcp endpoint the network can reach without CURVE.
    pub insecure: bool,
    /// Serve Prometheus metrics over HTTP here (`--metrics`; checked by
    /// the flag's parser: loopback unless allowed otherwise).
    #[cfg(feature = "tools")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// What the supervisor of an in-process broker tells (or asks) it.
#[derive(Debug)]
pub enum Notice {
    /// Stop taking jobs; jobs in workers still finish.
    Drain,
    /// This local worker process exited.
    WorkerDied(u32),
    /// Send back the pids of the registered workers (asked in-process, so
    /// that it needs no key whatever the front's transport).
    Registered(std::sync::mpsc::Sender<Vec<u32>>),
    /// Send back a copy of the broker's figures (a metrics scrape).
    Snapshot(std::sync::mpsc::Sender<Box<Snapshot>>),
}

/// The broker's end of [`Notice`]s: a channel and a wake-up to poll.
pub struct Inbox {
    /// The notices, read when `wake` fires.
    pub rx: std::sync::mpsc::Receiver<Notice>,
    /// Triggered by the sender after each notice, so the broker's poll wakes.
    pub wake: Wakeup,
}

/// The supervisor's end of `CONTROL` requests: a channel and a wake-up.
#[derive(Clone, Debug)]
pub struct ControlSink {
    /// Where the broker puts each request.
    pub tx: std::sync::mpsc::Sender<Control>,
    /// Triggered after each request is sent, so the supervisor wakes.
    pub wake: Wakeup,
    /// A request to scale to more workers than this is refused at once.
    pub max_workers: usize,
}

impl BrokerOptions {
    /// Options for these two endpoints, everything else at its default.
    pub fn new(frontend: impl Into<String>, backend: impl Into<String>) -> Self {
        BrokerOptions {
            frontend: frontend.into(),
            more_frontends: Vec::new(),
            backend: backend.into(),
            config: Config::default(),
            legacy_timeout: crate::protocol::LEGACY_TIMEOUT,
            control: None,
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES as i64,
            io_cpu: None,
            curve: None,
            insecure: false,
            #[cfg(feature = "tools")]
            metrics: None,
        }
    }
}

/// A bound broker, ready to [`run`](Broker::run).
pub struct Broker {
    options: BrokerOptions,
    _ctx: zmq::Context,
    front: zmq::Socket,
    back: zmq::Socket,
    /// Connections to the back socket that open, drop or fail (libzmq's
    /// monitor events).
    back_events: zmq::Socket,
    /// The ZAP handler and the keys it admits, with `--curve-secret`.
    zap: Option<(Zap, AllowLists)>,
    /// Connections to the front socket that open or fail.
    front_events: zmq::Socket,
    /// systemd's watchdog, fed from the loop (see [`Broker::with_watchdog`]).
    watchdog: Option<Watchdog>,
    /// The listeners of `unix://` endpoints, and whether each is the back's.
    locals: Vec<(crate::local::Listener, bool)>,
    // Dropped after the sockets: removes the socket files, then unlocks.
    // The front's, then the back's (none for tcp), then the local ones'.
    locks: [Option<EndpointLock>; 2],
    _local_locks: Vec<EndpointLock>,
}

impl Broker {
    /// Feeds systemd's watchdog from the loop: `WATCHDOG=1` goes out only
    /// while the loop turns (the poll wakes for it), so a broker that hangs
    /// or is stopped falls silent and systemd restarts it.
    pub fn with_watchdog(mut self, watchdog: Option<Watchdog>) -> Broker {
        self.watchdog = watchdog;
        self
    }

    /// Serves until `shutdown` is triggered; then every job still held is
    /// answered. `inbox` carries a supervisor's [`Notice`]s.
    pub fn run(mut self, shutdown: &Wakeup, inbox: Option<&Inbox>) -> Result<()> {
        if let Some(cpu) = self.options.io_cpu {
            crate::affinity::pin_thread(cpu)?;
        }
        let host = crate::sys::hostname();
        let pid = std::process::id();
        let (zap, lists) = match self.zap {
            Some((zap, lists)) => (Some(zap), Some(lists)),
            None => (None, None),
        };
        let (front_side, back_side) = (bind::Side::front(&self.options)?, bind::Side::back(&self.options)?);
        let gate = io::Gate::new(front_side.trust_endpoint(), back_side.trust_endpoint(), lists);
        let mut io = Io::new(&self.front, &self.back, &self.options, gate);
        io.locals.listeners =
            std::mem::take(&mut self.locals).into_iter().map(|(l, back)| (l, Default::default(), back)).collect();
        let [front_lock, back_lock] = &mut self.locks;
        let (front, back) = (front_side.zmq, back_side.zmq);
        io.watch(
            &self.back_events,
            &self.front_events,
            [
                front.map(|e| {
                    listen::Listener::new("front", warnings::Kind::Client, &self.front, e, front_lock.as_mut())
                }),
                back.map(|e| listen::Listener::new("back", warnings::Kind::Worker, &self.back, e, back_lock.as_mut())),
            ],
        );
        let mut state = BrokerState::<zmq::Message>::new(self.options.config.clone(), pid, Instant::now());
        let mut out = Vec::new();
        let mut vitals = Vitals::default();
        let (front, back) = (&self.options.frontend, &self.options.backend);
        match self.options.more_frontends.join(" ") {
            more if more.is_empty() => tracing::info!(pid, %front, %back, "broker ready"),
            more => tracing::info!(pid, %front, also = %more, %back, "broker ready"),
        }
        let mut front_backlog = false;
        let mut watchdog = self.watchdog.take();
        let mut watch = watch::Watch::new(vec![
            Some(&self.front),
            Some(&self.back),
            Some(&self.back_events),
            Some(&self.front_events),
            zap.as_ref().map(|z| z.socket()),
        ])?;
        io.wait_on(watch.fds(), shutdown.fd(), inbox.map(|i| i.wake.fd()))?;
        loop {
            let now = Instant::now();
            if let Some(watchdog) = watchdog.as_mut() {
                watchdog.feed(now);
            }
            let next = state.next_deadline(now);
            let next = io.next_scan().map_or(next, |scan| scan.min(next));
            let wake = io.rebind_deadline().map_or(next, |at| at.min(next));
            let wake = watchdog.as_ref().map_or(wake, |w| w.deadline().min(wake));
            // Rounded up: a wait rounded down to 0 ms would spin through the
            // last millisecond before a deadline.
            let timeout = wake.saturating_duration_since(now).as_micros().div_ceil(1000).min(i64::MAX as u128) as i64;
            // Saturated, requests can only queue: read them when the loop
            // wakes anyway (the timeout is then at most QUEUE_CHECK), unless
            // the last read stopped at its bound: a flood must still reach
            // the queue limit and its prompt `Busy` answers.
            let front_paused = state.saturated() && !front_backlog;
            watch.settle()?;
            let waiting = (0..ZMQ_SOCKETS).any(|i| watch.readable(i) && !(i == FRONT && front_paused));
            let timeout = if waiting { 0 } else { timeout };
            let requests_wait = state.requests_may_wait();
            let timeout = if requests_wait { timeout.min(REQUESTS_WAIT_MAX.as_millis() as i64) } else { timeout };
            let wake = io.wait(timeout, front_paused, requests_wait)?;
            watch.fired(&wake.zmq)?;
            let zmq_turn = watch.any() || front_paused;
            if wake.stop {
                state.abandon(&mut out);
                io.flush(&state, &mut out);
                io.flush_locals(&mut state, &mut out);
                break;
            }
            if let Some(inbox) = inbox.filter(|_| wake.inbox) {
                inbox.wake.clear();
                while let Ok(notice) = inbox.rx.try_recv() {
                    match notice {
                        Notice::Drain => {
                            tracing::info!("broker draining: no new jobs");
                            state.drain(&mut out);
                        }
                        Notice::WorkerDied(pid) => state.worker_died(Instant::now(), pid, &host, &mut out),
                        Notice::Registered(reply) => {
                            // With the local workers dropped on their connection's
                            // end, which the supervisor may not have reaped yet.
                            let workers = state.workers(Instant::now());
                            let pids = workers.iter().map(|w| w.pid).chain(io.locals.gone.iter().copied());
                            let _ = reply.send(pids.collect());
                        }
                        Notice::Snapshot(reply) => {
                            // The client's view of STATUS: counts, no per-worker list.
                            let status = io.status(Instant::now(), &state, crate::auth::Role::Client);
                            let _ = reply.send(Box::new(Snapshot { status, services: state.service_snapshots() }));
                        }
                    }
                }
                io.flush(&state, &mut out);
            }
            if watch.readable(BACK_EVENTS) {
                io.read_events();
            }
            if watch.readable(FRONT_EVENTS) {
                io.read_front_events();
            }
            if let Some(zap) = zap.as_ref().filter(|_| watch.readable(ZAP)) {
                io.serve_zap(zap, Instant::now())?;
            }
            // Workers first: their answers free capacity for the waiting jobs.
            if watch.readable(BACK) {
                io.drain(&self.back, |io, now| io.on_back(now, &mut state, &mut out))?;
            }
            io.serve_locals(&wake.local, &mut state, &mut out);
            front_backlog = if watch.readable(FRONT) || front_paused {
                io.drain(&self.front, |io, now| io.on_front(now, &mut state, &mut out))?
            } else {
                false
            };
            // `next` from before the poll: what arrived since is seen by the
            // next iteration's fresh deadline.
            let now = Instant::now();
            if now >= next {
                state.tick(now, |pid| vitals.probe(pid), &mut out);
                io.flush(&state, &mut out);
                io.scan_allow_lists(now, &mut state, &mut out);
            }
            io.rebind_if_due(now);
            io.warnings.flush(now);
            io.flush_locals(&mut state, &mut out);
            if zmq_turn || io.take_zmq_used() {
                watch.used();
            }
        }
        tracing::info!("broker stopping");
        Ok(())
    }
}

/// Binds and serves until SIGTERM/SIGINT (or `shutdown`); the one call behind
/// `powerhose-broker`.
pub fn run_broker(options: BrokerOptions, shutdown: &Wakeup) -> Result<()> {
    // Bound first: a busy --metrics port fails before anything else starts.
    #[cfg(feature = "tools")]
    let metrics = options.metrics.map(crate::metrics::MetricsServer::bind).transpose()?;
    let broker = Broker::bind(options)?;
    // Bound: clients and workers may connect (systemd's Type=notify).
    crate::sys::notify::notify_or_log(&format!("READY=1\nSTATUS=serving {}", broker.options.frontend));
    let broker = broker.with_watchdog(Watchdog::from_process_env());
    #[cfg(feature = "tools")]
    if let Some(metrics) = metrics {
        let (inbox, probe) = Probe::with_inbox()?;
        // Stops serving when dropped, as the broker returns.
        let _serving = metrics.serve(probe)?;
        return broker.run(shutdown, Some(&inbox));
    }
    broker.run(shutdown, None)
}

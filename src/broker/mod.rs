//! The broker: binds the front (clients) and back (workers) sockets and moves
//! messages between them and [`state::BrokerState`]; this loop only does I/O.

mod io;
mod listen;
pub mod state;
mod vitals;
mod warnings;

use std::time::{Duration, Instant};

use crate::auth::allow::AllowLists;
use crate::auth::exposure::{check_bind, reach, Reach};
use crate::auth::zap::Zap;
use crate::auth::{CurveServer, BACK_DOMAIN, FRONT_DOMAIN};
use crate::endpoint::EndpointLock;
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::sys::notify::Watchdog;
use crate::wakeup::Wakeup;
use io::Io;
use state::{BrokerState, Config};
use vitals::Vitals;

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// The endpoint clients connect to (`ipc://...` or `tcp://...`).
    pub frontend: String,
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
            backend: backend.into(),
            config: Config::default(),
            legacy_timeout: crate::protocol::LEGACY_TIMEOUT,
            control: None,
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES as i64,
            io_cpu: None,
            curve: None,
            insecure: false,
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
    /// The listeners of `unix://` endpoints (`[front, back]`).
    locals: [Option<crate::local::Listener>; 2],
    // Dropped after the sockets: removes the socket files, then unlocks.
    // The front's, then the back's (none for tcp).
    locks: [Option<EndpointLock>; 2],
}

fn router(ctx: &zmq::Context, max_message_bytes: i64, sndhwm: i32) -> Result<zmq::Socket> {
    let socket = ctx.socket(zmq::ROUTER).map_err(Error::zmq("creating a ROUTER socket"))?;
    // libzmq's cap is a frame's, checked before reading it, and its only
    // sign is a disconnection: the broker's own limit, below it, is the one
    // that is counted and answered.
    let hard = match max_message_bytes {
        limit if limit < 0 => -1,
        limit => limit.saturating_mul(crate::protocol::MAX_MESSAGE_HARD_FACTOR as i64),
    };
    socket.set_maxmsgsize(hard).map_err(Error::zmq("maxmsgsize"))?;
    // Unknown peers must be errors, not silent drops; the queue bound is ours
    // (max_queue), not ZeroMQ's 1000-message high-water mark. What we send
    // is bounded by the caller: replies to a client per FRONT_SEND_HWM, jobs
    // to a worker by its prefetch limit.
    socket.set_router_mandatory(true).map_err(Error::zmq("router_mandatory"))?;
    socket.set_sndhwm(sndhwm).map_err(Error::zmq("sndhwm"))?;
    socket.set_rcvhwm(0).map_err(Error::zmq("rcvhwm"))?;
    socket.set_linger(0).map_err(Error::zmq("linger"))?;
    Ok(socket)
}

fn bind(socket: &zmq::Socket, endpoint: &str, role: &'static str) -> Result<()> {
    socket.bind(endpoint).map_err(|e| match e {
        // tcp refuses a second bind by itself; name the broker if one answers there.
        zmq::Error::EADDRINUSE => {
            let pid = crate::client::Client::connect(endpoint).ok().and_then(|c| c.ping(Duration::from_secs(1)).ok());
            match pid {
                Some(pid) => Error::BrokerAlreadyRunning { endpoint: endpoint.to_string(), pid: Some(pid) },
                None => Error::EndpointInUse { endpoint: endpoint.to_string(), role },
            }
        }
        e => Error::Zmq { context: format!("binding the {role} endpoint {endpoint}"), source: e },
    })
}

/// Listens on a `unix://` endpoint whose lock is held: a socket file left
/// by a broker that died is removed first (the lock says none serves it).
fn bind_local(path: &std::path::Path, endpoint: &str, role: &'static str) -> Result<crate::local::Listener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("removing the stale socket {}", path.display()))(e))
        }
        _ => {}
    }
    crate::local::Listener::bind(path).map_err(Error::io(format!("binding the {role} endpoint {endpoint}")))
}

/// A socket that reads `socket`'s `watched` events: connections accepted,
/// or not (see [`listen`]), and on the back, closed: which processes are
/// connected over ipc (see [`vitals`]).
fn monitor(ctx: &zmq::Context, socket: &zmq::Socket, role: &str, watched: i32) -> Result<zmq::Socket> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let endpoint = format!("inproc://powerhose-{role}-monitor-{}-{n}", std::process::id());
    socket.monitor(&endpoint, watched).map_err(Error::zmq(format!("monitoring the {role} socket")))?;
    let events = ctx.socket(zmq::PAIR).map_err(Error::zmq("creating the monitor socket"))?;
    events.connect(&endpoint).map_err(Error::zmq("connecting the monitor socket"))?;
    Ok(events)
}

impl Broker {
    /// Takes the endpoint locks and binds; when this returns, clients and
    /// workers can connect.
    pub fn bind(options: BrokerOptions) -> Result<Broker> {
        let curve = options.curve.is_some();
        let mut exposed = false;
        for (flag, endpoint) in [("--frontend", &options.frontend), ("--backend", &options.backend)] {
            exposed |= check_bind(flag, endpoint, curve, options.insecure)?;
        }
        let lists = options.curve.as_ref().map(|c| AllowLists::load(c, Instant::now())).transpose()?;
        let mut locks = [EndpointLock::acquire(&options.frontend)?, EndpointLock::acquire(&options.backend)?];
        // Each connection takes a descriptor: the most the system allows us.
        match crate::sys::raise_fd_limit() {
            Ok(limit) => tracing::debug!(limit, "open file limit"),
            Err(e) => tracing::debug!("could not raise the open file limit: {e}"),
        }
        // libzmq's I/O thread starts with the first socket and inherits this pin.
        let pin = crate::affinity::PinGuard::new(options.io_cpu)?;
        let ctx = zmq::Context::new();
        let front = router(&ctx, options.max_message_bytes, crate::protocol::FRONT_SEND_HWM)?;
        let back = router(&ctx, options.max_message_bytes, 0)?;
        // The handler first: a CURVE socket without one admits any key.
        let zap = match lists {
            Some(lists) => Some((Zap::bind(&ctx)?, lists)),
            None => None,
        };
        if let Some(curve) = &options.curve {
            for (socket, endpoint, domain) in
                [(&front, &options.frontend, FRONT_DOMAIN), (&back, &options.backend, BACK_DOMAIN)]
            {
                if reach(endpoint) != Reach::Owner {
                    curve.apply(socket, domain)?;
                }
            }
        }
        // Watched before they bind: no worker's connection goes unseen.
        let (accepted, failed) = (zmq::SocketEvent::ACCEPTED as i32, zmq::SocketEvent::ACCEPT_FAILED as i32);
        // On a CURVE socket, a peer that speaks no CURVE fails before ZAP:
        // counted from these events.
        let handshakes = |endpoint: &str| match options.curve.is_some() && reach(endpoint) != Reach::Owner {
            true => {
                zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32 | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            }
            false => 0,
        };
        let back_events = monitor(
            &ctx,
            &back,
            "back",
            accepted | failed | zmq::SocketEvent::DISCONNECTED as i32 | handshakes(&options.backend),
        )?;
        let front_events = monitor(&ctx, &front, "front", accepted | failed | handshakes(&options.frontend))?;
        let mut locals: [Option<crate::local::Listener>; 2] = [None, None];
        for (i, (socket, endpoint, role)) in
            [(&front, &options.frontend, "front"), (&back, &options.backend, "back")].into_iter().enumerate()
        {
            match crate::local::path_of(endpoint) {
                Some(path) => locals[i] = Some(bind_local(&path, endpoint, role)?),
                None => bind(socket, endpoint, role)?,
            }
        }
        for lock in locks.iter_mut().flatten() {
            lock.bound()?;
        }
        drop(pin);
        if exposed {
            tracing::warn!(
                front = %options.frontend, back = %options.backend,
                "--insecure: serving the network without authentication; anyone who can connect may submit jobs or register as a worker"
            );
        }
        Ok(Broker { options, _ctx: ctx, front, back, back_events, front_events, zap, locks, locals, watchdog: None })
    }

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
        let gate = io::Gate::new(&self.options.frontend, &self.options.backend, lists);
        let mut io = Io::new(&self.front, &self.back, &self.options, gate);
        let [front_local, back_local] = std::mem::take(&mut self.locals);
        io.locals.listeners = [front_local.map(|l| (l, Default::default())), back_local.map(|l| (l, Default::default()))];
        let [front_lock, back_lock] = &mut self.locks;
        let (front, back) = (&self.options.frontend, &self.options.backend);
        io.watch(
            &self.back_events,
            &self.front_events,
            [
                listen::Listener::new("front", warnings::Kind::Client, &self.front, front, front_lock.as_mut()),
                listen::Listener::new("back", warnings::Kind::Worker, &self.back, back, back_lock.as_mut()),
            ],
        );
        let mut state = BrokerState::<zmq::Message>::new(self.options.config.clone(), pid, Instant::now());
        let mut out = Vec::new();
        let mut vitals = Vitals::default();
        tracing::info!(pid, front = %self.options.frontend, back = %self.options.backend, "broker ready");
        let mut front_backlog = false;
        let mut watchdog = self.watchdog.take();
        loop {
            let now = Instant::now();
            if let Some(watchdog) = watchdog.as_mut() {
                watchdog.feed(now);
            }
            let next = state.next_deadline(now);
            let next = io.next_scan().map_or(next, |scan| scan.min(next));
            let wake = io.rebind_deadline().map_or(next, |at| at.min(next));
            let wake = watchdog.as_ref().map_or(wake, |w| w.deadline().min(wake));
            let timeout = wake.saturating_duration_since(now).as_millis().min(i64::MAX as u128) as i64;
            let inbox_item = inbox.map_or(zmq::PollItem::from_fd(-1, zmq::PollEvents::empty()), |i| i.wake.poll_item());
            // Saturated, requests can only queue: read them when the loop
            // wakes anyway (the timeout is then at most QUEUE_CHECK), unless
            // the last read stopped at its bound: a flood must still reach
            // the queue limit and its prompt `Busy` answers.
            let front_paused = state.saturated() && !front_backlog;
            let front_events = if front_paused { zmq::PollEvents::empty() } else { zmq::POLLIN };
            let mut items = vec![
                self.front.as_poll_item(front_events),
                self.back.as_poll_item(zmq::POLLIN),
                shutdown.poll_item(),
                inbox_item,
                self.back_events.as_poll_item(zmq::POLLIN),
                self.front_events.as_poll_item(zmq::POLLIN),
                zap.as_ref().map_or(zmq::PollItem::from_fd(-1, zmq::PollEvents::empty()), |z| {
                    z.socket().as_poll_item(zmq::POLLIN)
                }),
            ];
            let local_from = items.len();
            io.local_poll_items(&mut items, front_paused);
            crate::wakeup::poll(&mut items, timeout)?;
            let local_ready = io.local_ready(&items[local_from..], front_paused);
            if items[2].is_readable() {
                state.abandon(&mut out);
                io.flush(&state, &mut out);
                io.flush_locals(&mut state, &mut out);
                break;
            }
            if let Some(inbox) = inbox.filter(|_| items[3].is_readable()) {
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
                    }
                }
                io.flush(&state, &mut out);
            }
            if items[4].is_readable() {
                io.read_events();
            }
            if items[5].is_readable() {
                io.read_front_events();
            }
            if let Some(zap) = zap.as_ref().filter(|_| items[6].is_readable()) {
                io.serve_zap(zap, Instant::now())?;
            }
            // Workers first: their answers free capacity for the waiting jobs.
            if items[1].is_readable() {
                io.drain(&self.back, |io, now| io.on_back(now, &mut state, &mut out))?;
            }
            io.serve_locals(&local_ready, &mut state, &mut out);
            front_backlog = if items[0].is_readable() || front_paused {
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
        }
        tracing::info!("broker stopping");
        Ok(())
    }
}

/// Binds and serves until SIGTERM/SIGINT (or `shutdown`); the one call behind
/// `powerhose-broker`.
pub fn run_broker(options: BrokerOptions, shutdown: &Wakeup) -> Result<()> {
    let broker = Broker::bind(options)?;
    // Bound: clients and workers may connect (systemd's Type=notify).
    crate::sys::notify::notify_or_log(&format!("READY=1\nSTATUS=serving {}", broker.options.frontend));
    broker.with_watchdog(Watchdog::from_process_env()).run(shutdown, None)
}

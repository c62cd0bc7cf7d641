//! The broker: binds the front (clients) and back (workers) sockets and moves
//! messages between them and [`state::BrokerState`]; this loop only does I/O.

pub mod state;

use std::time::{Duration, Instant};

use crate::endpoint::EndpointLock;
use crate::error::{Error, Result};
use crate::protocol::decode_request_tail;
use crate::protocol::{encode_headers, legacy, Command, CommandFrame, Control, HeaderIter, Registration, Status};
use crate::shutdown::Shutdown;
use crate::status::BrokerStatus;
use state::{Answer, Body, BrokerState, ClientRoute, Config, Job, Output};

/// Everything a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    pub frontend: String,
    pub backend: String,
    pub config: Config,
    /// Timeout for Powerhose-format jobs, which carry none (Powerhose's client
    /// gave up after 7.5 s at most).
    pub legacy_timeout: Duration,
    /// Where `CONTROL` requests go (the cluster supervisor), if anywhere.
    pub control: Option<ControlSink>,
}

/// What the supervisor of an in-process broker tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Stop taking jobs; jobs in workers still finish.
    Drain,
    /// This local worker process exited.
    WorkerDied(u32),
}

/// The broker's end of [`Notice`]s: a channel and a wake-up to poll.
pub struct Inbox {
    pub rx: std::sync::mpsc::Receiver<Notice>,
    pub wake: Shutdown,
}

/// The supervisor's end of `CONTROL` requests: a channel and a wake-up.
#[derive(Clone, Debug)]
pub struct ControlSink {
    pub tx: std::sync::mpsc::Sender<Control>,
    pub wake: Shutdown,
}

impl BrokerOptions {
    pub fn new(frontend: impl Into<String>, backend: impl Into<String>) -> Self {
        BrokerOptions {
            frontend: frontend.into(),
            backend: backend.into(),
            config: Config::default(),
            legacy_timeout: Duration::from_millis(7500),
            control: None,
        }
    }
}

/// A bound broker, ready to [`run`](Broker::run).
pub struct Broker {
    options: BrokerOptions,
    _ctx: zmq::Context,
    front: zmq::Socket,
    back: zmq::Socket,
    // Dropped after the sockets: removes the socket files, then unlocks.
    _locks: Vec<EndpointLock>,
}

fn router(ctx: &zmq::Context, endpoint: &str, role: &str) -> Result<zmq::Socket> {
    let socket = ctx.socket(zmq::ROUTER).map_err(Error::zmq("creating a ROUTER socket"))?;
    // Unknown peers must be errors, not silent drops; the queue bound is ours
    // (max_queue), not ZeroMQ's 1000-message high-water mark.
    socket.set_router_mandatory(true).map_err(Error::zmq("router_mandatory"))?;
    socket.set_sndhwm(0).map_err(Error::zmq("sndhwm"))?;
    socket.set_rcvhwm(0).map_err(Error::zmq("rcvhwm"))?;
    socket.set_linger(0).map_err(Error::zmq("linger"))?;
    socket.bind(endpoint).map_err(|e| match e {
        // tcp refuses a second bind by itself; name the broker if one answers there.
        zmq::Error::EADDRINUSE => {
            let pid = crate::client::Client::connect(endpoint).ok().and_then(|c| c.ping(Duration::from_secs(1)).ok());
            match pid {
                Some(pid) => Error::BrokerAlreadyRunning { endpoint: endpoint.to_string(), pid: Some(pid) },
                None => Error::Config(format!("the {role} endpoint {endpoint} is in use by another program")),
            }
        }
        e => Error::Zmq { context: format!("binding the {role} endpoint {endpoint}"), source: e },
    })?;
    Ok(socket)
}

impl Broker {
    /// Takes the endpoint locks and binds; when this returns, clients and
    /// workers can connect.
    pub fn bind(options: BrokerOptions) -> Result<Broker> {
        let mut locks = Vec::new();
        for endpoint in [&options.frontend, &options.backend] {
            locks.extend(EndpointLock::acquire(endpoint)?);
        }
        let ctx = zmq::Context::new();
        let front = router(&ctx, &options.frontend, "front")?;
        let back = router(&ctx, &options.backend, "back")?;
        for lock in &mut locks {
            lock.bound();
        }
        Ok(Broker { options, _ctx: ctx, front, back, _locks: locks })
    }

    /// Serves until `shutdown` is triggered; then every job still held is
    /// answered. `inbox` carries a supervisor's [`Notice`]s.
    pub fn run(self, shutdown: &Shutdown, inbox: Option<&Inbox>) -> Result<()> {
        let host = crate::worker::hostname();
        let pid = std::process::id();
        let mut io = Io {
            front: &self.front,
            back: &self.back,
            frames: Vec::new(),
            buf: Vec::new(),
            pid,
            started: Instant::now(),
            options: &self.options,
        };
        let mut state = BrokerState::<zmq::Message>::new(self.options.config.clone(), pid, Instant::now());
        let mut out = Vec::new();
        tracing::info!(pid, front = %self.options.frontend, back = %self.options.backend, "broker ready");
        loop {
            let now = Instant::now();
            let next = state.next_deadline(now);
            let timeout = next.saturating_duration_since(now).as_millis().min(i64::MAX as u128) as i64;
            let inbox_item = inbox.map_or(zmq::PollItem::from_fd(-1, zmq::PollEvents::empty()), |i| i.wake.poll_item());
            let mut items = [
                self.front.as_poll_item(zmq::POLLIN),
                self.back.as_poll_item(zmq::POLLIN),
                shutdown.poll_item(),
                inbox_item,
            ];
            crate::shutdown::poll(&mut items, timeout)?;
            if items[2].is_readable() {
                state.abandon(&mut out);
                io.flush(&state, &mut out);
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
                    }
                }
                io.flush(&state, &mut out);
            }
            // Workers first: their answers free capacity for the waiting jobs.
            if items[1].is_readable() {
                io.drain(&self.back, |io, now| io.on_back(now, &mut state, &mut out))?;
            }
            if items[0].is_readable() {
                let legacy_timeout = self.options.legacy_timeout;
                io.drain(&self.front, |io, now| io.on_front(now, legacy_timeout, &mut state, &mut out))?;
            }
            let now = Instant::now();
            if now >= state.next_deadline(now) {
                state.tick(now, &mut out);
                io.flush(&state, &mut out);
            }
        }
        tracing::info!("broker stopping");
        Ok(())
    }
}

/// The loop's sockets and reusable buffers.
struct Io<'a> {
    front: &'a zmq::Socket,
    back: &'a zmq::Socket,
    frames: Vec<zmq::Message>,
    buf: Vec<u8>,
    pid: u32,
    started: Instant,
    options: &'a BrokerOptions,
}

/// Messages handled per socket before the other gets a turn.
const BATCH: usize = 256;

impl Io<'_> {
    fn status(&self, now: Instant, state: &BrokerState<zmq::Message>) -> BrokerStatus {
        BrokerStatus {
            pid: self.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            frontend: self.options.frontend.clone(),
            backend: self.options.backend.clone(),
            services: state.services().collect(),
            waiting_for_workers: state.waiting_for_workers(),
            workers: state.workers(now),
            counters: state.counters.clone(),
            latency_ms: state.latency.latency(),
        }
    }

    /// Reads up to [`BATCH`] messages from `socket` without blocking.
    fn drain(&mut self, socket: &zmq::Socket, mut handle: impl FnMut(&mut Self, Instant)) -> Result<()> {
        for _ in 0..BATCH {
            self.frames.clear();
            loop {
                let mut msg = zmq::Message::new();
                match socket.recv(&mut msg, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => return Ok(()),
                    Err(e) => return Err(Error::zmq("receiving")(e)),
                }
                let more = msg.get_more();
                self.frames.push(msg);
                if !more {
                    break;
                }
            }
            handle(self, Instant::now());
        }
        Ok(())
    }

    fn on_front(
        &mut self,
        now: Instant,
        legacy_timeout: Duration,
        state: &mut BrokerState<zmq::Message>,
        out: &mut Vec<Output<zmq::Message>>,
    ) {
        let n = self.frames.len();
        let mut frames = self.frames.drain(..);
        let identity = frames.next().expect("ROUTER gives an identity frame");
        let first = frames.next();
        match (first, n) {
            // Powerhose 0.7: REQ envelope, then one body frame.
            (Some(empty), 3) if empty.is_empty() => {
                let body = frames.next().expect("three frames");
                drop(frames);
                self.on_legacy(now, legacy_timeout, identity, &body, state, out);
            }
            (Some(cmd), _) if CommandFrame::is_native(&cmd) => {
                let rest: [Option<zmq::Message>; 2] = [frames.next(), frames.next()];
                let extra = frames.next().is_some();
                drop(frames);
                self.on_native(now, identity, &cmd, rest, extra, state, out);
            }
            (first, n) => {
                drop(frames);
                state.counters.bad_requests += 1;
                tracing::warn!(frames = n, "unrecognised client message dropped");
                // A REQ client with a malformed envelope can still be told why.
                if first.is_some_and(|f| f.is_empty()) {
                    let route = ClientRoute { identity, req_id: 0, legacy: true };
                    let body = Body::Text(format!("expected one frame after the envelope, got {}", n - 2).into());
                    out.push(Output::Reply { route, status: Status::BadRequest, pid: self.pid, body });
                }
            }
        }
        self.flush(state, out);
    }

    fn on_legacy(
        &mut self,
        now: Instant,
        legacy_timeout: Duration,
        identity: zmq::Message,
        body: &[u8],
        state: &mut BrokerState<zmq::Message>,
        out: &mut Vec<Output<zmq::Message>>,
    ) {
        let route = ClientRoute { identity, req_id: 0, legacy: true };
        match legacy::parse_request(body) {
            Ok(legacy::LegacyRequest::Ping) => {
                let body = Body::Text(self.pid.to_string().into());
                out.push(Output::Reply { route, status: Status::Ok, pid: self.pid, body });
            }
            Ok(legacy::LegacyRequest::Job { headers, data }) => {
                let find = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                let service = find("service").unwrap_or("").to_string();
                let retries = find("retry").and_then(|r| r.parse().ok()).unwrap_or(0);
                let job = Job {
                    route,
                    headers: zmq::Message::from(encode_headers(headers.iter().copied())),
                    data: zmq::Message::from(data),
                    deadline: now + legacy_timeout,
                    retries,
                    received: now,
                };
                state.submit(now, &service, job, out);
            }
            Err(e) => {
                state.counters.bad_requests += 1;
                out.push(Output::Reply {
                    route,
                    status: Status::BadRequest,
                    pid: self.pid,
                    body: Body::Text(e.to_string().into()),
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_native(
        &mut self,
        now: Instant,
        identity: zmq::Message,
        cmd: &[u8],
        rest: [Option<zmq::Message>; 2],
        extra: bool,
        state: &mut BrokerState<zmq::Message>,
        out: &mut Vec<Output<zmq::Message>>,
    ) {
        let cmd = match CommandFrame::decode(cmd) {
            Ok(c) => c,
            Err(e) => {
                state.counters.bad_requests += 1;
                let route = ClientRoute { identity, req_id: 0, legacy: false };
                return out.push(Output::Reply {
                    route,
                    status: Status::BadRequest,
                    pid: self.pid,
                    body: Body::Text(e.to_string().into()),
                });
            }
        };
        let route = ClientRoute { identity, req_id: cmd.id, legacy: false };
        let bad = |state: &mut BrokerState<zmq::Message>, out: &mut Vec<Output<zmq::Message>>, route, msg: String| {
            state.counters.bad_requests += 1;
            out.push(Output::Reply { route, status: Status::BadRequest, pid: self.pid, body: Body::Text(msg.into()) });
        };
        match (cmd.command, rest, extra) {
            (Command::Ping, [None, None], false) => {
                out.push(Output::Reply {
                    route,
                    status: Status::Ok,
                    pid: self.pid,
                    body: Body::Text(self.pid.to_string().into()),
                });
            }
            (Command::Service, [None, None], false) => {
                let name = String::from_utf8_lossy(cmd.tail);
                let count: usize =
                    state.services().filter(|s| name.is_empty() || s.name == name).map(|s| s.workers).sum();
                let status = if count > 0 { Status::Ok } else { Status::NoWorker };
                out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(count.to_string().into()) });
            }
            (Command::Status, [None, None], false) => {
                let json = serde_json::to_string(&self.status(now, state)).expect("status serialises");
                out.push(Output::Reply { route, status: Status::Ok, pid: self.pid, body: Body::Text(json.into()) });
            }
            (Command::Control, [None, None], false) => {
                let (status, text) = match (serde_json::from_slice::<Control>(cmd.tail), &self.options.control) {
                    (Err(e), _) => (Status::BadRequest, format!("bad CONTROL request: {e}")),
                    (Ok(_), None) => {
                        (Status::BadRequest, "this broker has no supervisor (start it with `powerhose`)".into())
                    }
                    (Ok(request), Some(sink)) => {
                        tracing::info!(?request, "control request");
                        match sink.tx.send(request) {
                            Ok(()) => {
                                sink.wake.trigger();
                                (Status::Ok, "accepted".into())
                            }
                            Err(_) => (Status::BadRequest, "the supervisor is stopping".into()),
                        }
                    }
                };
                if status != Status::Ok {
                    state.counters.bad_requests += 1;
                }
                out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(text.into()) });
            }
            (Command::Request, [Some(data), None], false) => {
                let (service, headers) = match decode_request_tail(cmd.tail) {
                    Ok(parts) => parts,
                    Err(e) => return bad(state, out, route, e.to_string()),
                };
                let retries = match HeaderIter::find(headers, "retry") {
                    Ok(r) => r.and_then(|r| r.parse().ok()).unwrap_or(0),
                    Err(e) => return bad(state, out, route, e.to_string()),
                };
                let timeout = Duration::from_millis(cmd.arg as u64);
                // Headers are small; copied into the JOB's command frame later.
                let headers = if headers.is_empty() { zmq::Message::new() } else { zmq::Message::from(headers) };
                let job = Job { route, headers, data, deadline: now + timeout, retries, received: now };
                state.submit(now, service, job, out);
            }
            (command, _, _) => {
                bad(state, out, route, format!("unexpected {command:?} message or frame count from a client"))
            }
        }
    }

    fn on_back(&mut self, now: Instant, state: &mut BrokerState<zmq::Message>, out: &mut Vec<Output<zmq::Message>>) {
        let mut frames = self.frames.drain(..);
        let identity = frames.next().expect("ROUTER gives an identity frame");
        let Some(cmd) = frames.next() else { return };
        let body = frames.next();
        drop(frames);
        let decoded = CommandFrame::decode(&cmd);
        match decoded {
            Ok(c) if c.command == Command::Ready => match Registration::decode(c.tail) {
                Ok(reg) => {
                    tracing::info!(pid = reg.pid, service = %reg.service, host = %reg.host, "worker registered");
                    state.worker_ready(now, &identity, reg, out);
                }
                Err(e) => {
                    state.counters.bad_requests += 1;
                    tracing::warn!("worker registration refused: {e}");
                }
            },
            Ok(c) if c.command == Command::Result => {
                let status = Status::from_u32(c.arg).unwrap_or(Status::HandlerError);
                // Tail bit 0: the handler still runs (the worker timed the job out).
                let still_busy = c.tail.first().is_some_and(|f| f & 1 != 0);
                let body = body.unwrap_or_else(zmq::Message::new);
                state.worker_result(now, &identity, Answer { job_id: c.id, status, still_busy, body }, out);
            }
            Ok(c) if c.command == Command::Return => match body {
                Some(data) => state.worker_return(now, &identity, c.id, zmq::Message::from(c.tail), data, out),
                None => {
                    state.counters.bad_requests += 1;
                    tracing::warn!("RETURN without its data frame from a worker");
                }
            },
            Ok(c) if c.command == Command::Heartbeat => state.worker_heartbeat(now, &identity, out),
            Ok(c) if c.command == Command::Disconnect => {
                tracing::info!("worker {} unregistered", String::from_utf8_lossy(&identity));
                state.worker_disconnect(now, &identity, out);
            }
            Ok(c) => {
                state.counters.bad_requests += 1;
                tracing::warn!("unexpected {:?} from a worker", c.command);
            }
            Err(e) => {
                state.counters.bad_requests += 1;
                tracing::warn!("bad message from a worker: {e}");
            }
        }
        self.flush(state, out);
    }

    /// Sends every pending output. A peer that is gone is logged, not fatal.
    fn flush(&mut self, state: &BrokerState<zmq::Message>, out: &mut Vec<Output<zmq::Message>>) {
        for output in out.drain(..) {
            let result = match output {
                Output::Reply { route, status, pid, body } => self.send_reply(route, status, pid, body),
                Output::Job { worker, job_id, timeout_ms, headers, data } => {
                    CommandFrame::new(Command::Job, job_id, timeout_ms, &headers).encode_into(&mut self.buf);
                    send_parts(self.back, [state.worker_identity(worker).into(), (&self.buf[..]).into(), data])
                }
                Output::Heartbeat { worker } => {
                    CommandFrame::new(Command::Heartbeat, 0, 0, b"").encode_into(&mut self.buf);
                    send_parts(self.back, [state.worker_identity(worker).into(), (&self.buf[..]).into()])
                }
                Output::Disconnect { identity } => {
                    CommandFrame::new(Command::Disconnect, 0, 0, b"").encode_into(&mut self.buf);
                    send_parts(self.back, [identity.into(), (&self.buf[..]).into()])
                }
            };
            if let Err(e) = result {
                tracing::debug!("dropped a message to a departed peer: {e}");
            }
        }
    }

    fn send_reply(
        &mut self,
        route: ClientRoute<zmq::Message>,
        status: Status,
        pid: u32,
        body: Body<zmq::Message>,
    ) -> Result<(), zmq::Error> {
        if route.legacy {
            let bytes: &[u8] = match &body {
                Body::Payload(m) => m,
                Body::Text(t) => t.as_bytes(),
            };
            // A PING's pong is the bare pid; everything else is PID:OK/ERROR:...
            let reply = match (&body, status) {
                (Body::Text(_), Status::Ok) => bytes.to_vec(),
                _ => legacy::encode_reply(pid, status == Status::Ok, bytes),
            };
            return send_parts(self.front, [route.identity, zmq::Message::new(), reply.into()]);
        }
        CommandFrame::new(Command::Reply, route.req_id, status as u32, &pid.to_le_bytes()).encode_into(&mut self.buf);
        let body = match body {
            Body::Payload(m) => m,
            Body::Text(t) => t.as_bytes().into(),
        };
        send_parts(self.front, [route.identity, (&self.buf[..]).into(), body])
    }
}

fn send_parts<const N: usize>(socket: &zmq::Socket, parts: [zmq::Message; N]) -> Result<(), zmq::Error> {
    let last = N - 1;
    for (i, part) in parts.into_iter().enumerate() {
        socket.send(part, if i < last { zmq::SNDMORE | zmq::DONTWAIT } else { zmq::DONTWAIT })?;
    }
    Ok(())
}

/// Binds and serves until SIGTERM/SIGINT (or `shutdown`); the one call behind
/// `powerhose-broker`.
pub fn run_broker(options: BrokerOptions, shutdown: &Shutdown) -> Result<()> {
    Broker::bind(options)?.run(shutdown, None)
}

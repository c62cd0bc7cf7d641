//! Binding a broker: the endpoint locks, the ZeroMQ ROUTER sockets (with
//! CURVE and their monitors) and the `unix://` listeners. Each side may
//! serve one ZeroMQ endpoint (ipc or tcp) and any number of local ones.

use std::time::{Duration, Instant};

use super::{Broker, BrokerOptions};
use crate::auth::allow::AllowLists;
use crate::auth::exposure::{check_bind, reach, Reach};
use crate::auth::zap::Zap;
use crate::auth::{BACK_DOMAIN, FRONT_DOMAIN};
use crate::endpoint::EndpointLock;
use crate::error::{Error, Result};

/// One side's endpoints, sorted by transport.
pub(super) struct Side<'o> {
    /// Its ZeroMQ endpoint, if any.
    pub zmq: Option<&'o str>,
    /// Its local (`unix://`) endpoints.
    pub local: Vec<&'o str>,
}

impl<'o> Side<'o> {
    fn of(flag: &str, endpoints: impl IntoIterator<Item = &'o String>) -> Result<Side<'o>> {
        let mut side = Side { zmq: None, local: Vec::new() };
        for endpoint in endpoints {
            if crate::local::is_local(endpoint) {
                side.local.push(endpoint);
            } else if let Some(first) = side.zmq.replace(endpoint) {
                return Err(Error::BadFlag(format!(
                    "{flag}: one ipc:// or tcp:// endpoint per side ({first} and {endpoint} given); unix:// ones may be added"
                )));
            }
        }
        Ok(side)
    }

    /// The front's: `--frontend` and its extra endpoints.
    pub fn front(options: &'o BrokerOptions) -> Result<Side<'o>> {
        Side::of("--frontend", std::iter::once(&options.frontend).chain(&options.more_frontends))
    }

    /// The back's.
    pub fn back(options: &'o BrokerOptions) -> Result<Side<'o>> {
        Side::of("--backend", [&options.backend])
    }

    /// The endpoint whose reach decides how its ZeroMQ socket trusts peers.
    pub fn trust_endpoint(&self) -> &'o str {
        self.zmq.or(self.local.first().copied()).unwrap_or_default()
    }
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
fn bind_local(endpoint: &str, role: &'static str) -> Result<crate::local::Listener> {
    let path = crate::local::path_of(endpoint).ok_or_else(|| Error::BadFlag(format!("bad endpoint {endpoint}")))?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("removing the stale socket {}", path.display()))(e))
        }
        _ => {}
    }
    crate::local::Listener::bind(&path).map_err(Error::io(format!("binding the {role} endpoint {endpoint}")))
}

/// Shows the lanes of the workers of a local back to the clients of each
/// local front (see `worker::lane`): `FRONT.lanes` is made a link to
/// `BACK.lanes`, where the workers open them; a link left by a broker
/// before with a local back is removed when this one has none. Under the
/// fronts' locks; a failure only means that clients go through the broker.
fn link_lanes(fronts: &[&str], back: Option<&str>) {
    let target = back.and_then(crate::local::path_of).map(|p| crate::local::lanes_dir(&p));
    for front in fronts.iter().filter_map(|f| crate::local::path_of(f)) {
        let link = crate::local::lanes_dir(&front);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Err(e) = std::fs::remove_file(&link) {
                tracing::warn!("the old lanes link {} stays: {e}", link.display());
                continue;
            }
        }
        if let Some(target) = &target {
            if let Err(e) = std::os::unix::fs::symlink(target, &link) {
                tracing::warn!("no lanes for the clients of {}: {e}", front.display());
            }
        }
    }
}

/// A socket that reads `socket`'s `watched` events: connections accepted,
/// or not (see [`super::listen`]), and on the back, closed: which processes
/// are connected over ipc (see [`super::vitals`]).
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
        let (front_side, back_side) = (Side::front(&options)?, Side::back(&options)?);
        let mut exposed = false;
        for (flag, side) in [("--frontend", &front_side), ("--backend", &back_side)] {
            for endpoint in side.zmq.iter().chain(&side.local) {
                exposed |= check_bind(flag, endpoint, curve, options.insecure)?;
            }
        }
        let lists = options.curve.as_ref().map(|c| AllowLists::load(c, Instant::now())).transpose()?;
        let lock = |side: &Side| side.zmq.map(EndpointLock::acquire).transpose().map(Option::flatten);
        let mut locks = [lock(&front_side)?, lock(&back_side)?];
        let mut local_locks = Vec::new();
        for endpoint in front_side.local.iter().chain(&back_side.local) {
            local_locks.extend(EndpointLock::acquire(endpoint)?);
        }
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
        let curved = |side: &Side| curve && side.zmq.is_some_and(|e| reach(e) != Reach::Owner);
        if let Some(keys) = &options.curve {
            for (socket, side, domain) in [(&front, &front_side, FRONT_DOMAIN), (&back, &back_side, BACK_DOMAIN)] {
                if curved(side) {
                    keys.apply(socket, domain)?;
                }
            }
        }
        // Watched before they bind: no worker's connection goes unseen.
        let (accepted, failed) = (zmq::SocketEvent::ACCEPTED as i32, zmq::SocketEvent::ACCEPT_FAILED as i32);
        // On a CURVE socket, a peer that speaks no CURVE fails before ZAP:
        // counted from these events.
        let handshakes = |side: &Side| match curved(side) {
            true => {
                zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32 | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            }
            false => 0,
        };
        let closed = zmq::SocketEvent::DISCONNECTED as i32;
        let back_events = monitor(&ctx, &back, "back", accepted | failed | closed | handshakes(&back_side))?;
        let front_events = monitor(&ctx, &front, "front", accepted | failed | handshakes(&front_side))?;
        let mut locals = Vec::new();
        for (socket, side, role) in [(&front, &front_side, "front"), (&back, &back_side, "back")] {
            if let Some(endpoint) = side.zmq {
                bind(socket, endpoint, role)?;
            }
            for endpoint in &side.local {
                locals.push((bind_local(endpoint, role)?, role == "back"));
            }
        }
        link_lanes(&front_side.local, back_side.local.first().copied());
        for lock in locks.iter_mut().flatten().chain(&mut local_locks) {
            lock.bound()?;
        }
        drop(pin);
        if exposed {
            tracing::warn!(
                front = %options.frontend, back = %options.backend,
                "--insecure: serving the network without authentication; anyone who can connect may submit jobs or register as a worker"
            );
        }
        Ok(Broker {
            options,
            _ctx: ctx,
            front,
            back,
            back_events,
            front_events,
            zap,
            locks,
            _local_locks: local_locks,
            locals,
            watchdog: None,
        })
    }
}

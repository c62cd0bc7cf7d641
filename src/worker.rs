//! The worker: connects to the broker's back socket, registers its service and
//! runs each job through the plugin, one at a time.
//!
//! The job runs on the thread that received it, so the hot path has no thread
//! hand-off. The socket sits in a mutex: while a job runs, the receiving thread
//! releases it and a *pulse* thread uses it to keep heartbeating the broker
//! (so long jobs are not mistaken for a dead worker) and to unregister at once
//! when a stop is requested.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;
use crate::protocol::{Command, CommandFrame, HeaderIter, Registration, Status};
use crate::shutdown::Shutdown;

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
}

impl WorkerOptions {
    pub fn new(backend: impl Into<String>) -> Self {
        WorkerOptions {
            backend: backend.into(),
            service: None,
            heartbeat_interval: Duration::from_secs(1),
            liveness: 3,
            exit_on_broker_loss: false,
        }
    }
}

/// Shared between the job thread and the pulse thread.
struct Link {
    socket: Mutex<zmq::Socket>,
    busy: AtomicBool,
    /// The broker forgot us (it restarted): register again before the next job.
    reregister: AtomicBool,
    /// Set once DISCONNECT was sent: do not send it twice.
    unregistered: AtomicBool,
    last_heard: Mutex<Instant>,
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

fn connect(ctx: &zmq::Context, options: &WorkerOptions, identity: &str) -> Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER).map_err(Error::zmq("creating the worker socket"))?;
    socket.set_identity(identity.as_bytes()).map_err(Error::zmq("setting the worker identity"))?;
    socket.set_linger(0).map_err(Error::zmq("linger"))?;
    socket.connect(&options.backend).map_err(Error::zmq(format!("connecting to {}", options.backend)))?;
    Ok(socket)
}

fn send(socket: &zmq::Socket, frame: CommandFrame<'_>, body: Option<zmq::Message>) -> Result<()> {
    let more = if body.is_some() { zmq::SNDMORE } else { 0 };
    socket.send(frame.encode(), more).map_err(Error::zmq("sending to the broker"))?;
    if let Some(body) = body {
        socket.send(body, 0).map_err(Error::zmq("sending to the broker"))?;
    }
    Ok(())
}

/// Serves jobs with `plugin` until `shutdown`; returns `Err` only when the
/// broker is lost and `exit_on_broker_loss` is set, or on socket failure.
pub fn serve(plugin: LoadedPlugin, options: &WorkerOptions, shutdown: &Shutdown) -> Result<()> {
    let host = hostname();
    let id = identity(&host);
    let registration = Registration {
        service: options.service.clone().unwrap_or_else(|| plugin.name.clone()),
        pid: std::process::id(),
        host,
        plugin: plugin.name.clone(),
        plugin_version: plugin.version.clone(),
    }
    .encode();
    let ready = CommandFrame::new(Command::Ready, 0, 0, &registration).encode();
    let ctx = zmq::Context::new();
    let link = Arc::new(Link {
        socket: Mutex::new(connect(&ctx, options, &id)?),
        busy: AtomicBool::new(false),
        reregister: AtomicBool::new(false),
        unregistered: AtomicBool::new(false),
        last_heard: Mutex::new(Instant::now()),
    });
    link.socket.lock().expect("no poison").send(&ready[..], 0).map_err(Error::zmq("registering"))?;
    tracing::info!(identity = %id, backend = %options.backend, "worker started");

    let pulse = {
        let (link, shutdown, interval) = (link.clone(), shutdown.clone(), options.heartbeat_interval);
        std::thread::Builder::new()
            .name("pulse".into())
            .spawn(move || pulse(&link, &shutdown, interval))
            .map_err(Error::io("starting the pulse thread"))?
    };
    let result = job_loop(&ctx, &plugin, options, &id, &ready, &link, shutdown);
    shutdown.trigger();
    let _ = pulse.join();
    result
}

/// While a job runs: heartbeat the broker and unregister on a stop request.
fn pulse(link: &Link, shutdown: &Shutdown, interval: Duration) {
    let mut items = [shutdown.poll_item()];
    loop {
        let stop = crate::shutdown::poll(&mut items, interval.as_millis() as i64).map(|n| n > 0).unwrap_or(true);
        if !link.busy.load(Ordering::Acquire) {
            if stop {
                return;
            }
            continue;
        }
        // The job thread holds the socket only between jobs; try_lock fails
        // only in that instant, when it heartbeats by itself.
        let Ok(socket) = link.socket.try_lock() else {
            continue;
        };
        if stop && !link.unregistered.swap(true, Ordering::AcqRel) {
            let _ = send(&socket, CommandFrame::new(Command::Disconnect, 0, 0, b""), None);
            tracing::info!("stop requested: unregistered, finishing the current job");
        }
        let _ = send(&socket, CommandFrame::new(Command::Heartbeat, 0, 0, b""), None);
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            *link.last_heard.lock().expect("no poison") = Instant::now();
            if let Some(Ok(cmd)) = frames.first().map(|f| CommandFrame::decode(f)) {
                if cmd.command == Command::Disconnect {
                    link.reregister.store(true, Ordering::Release);
                }
            }
        }
        if stop {
            // Keep heartbeating until the job ends; the poll fires at once now.
            std::thread::sleep(interval);
        }
    }
}

fn job_loop(
    ctx: &zmq::Context,
    plugin: &LoadedPlugin,
    options: &WorkerOptions,
    id: &str,
    ready: &[u8],
    link: &Link,
    shutdown: &Shutdown,
) -> Result<()> {
    let interval = options.heartbeat_interval;
    let broker_timeout = interval * options.liveness;
    let mut next_heartbeat = Instant::now() + interval;
    let mut reconnect_delay = interval;
    let mut frames: Vec<zmq::Message> = Vec::with_capacity(3);
    let mut socket = link.socket.lock().expect("no poison");
    loop {
        if shutdown.requested() {
            if !link.unregistered.swap(true, Ordering::AcqRel) {
                let _ = send(&socket, CommandFrame::new(Command::Disconnect, 0, 0, b""), None);
            }
            tracing::info!("worker stopping");
            return Ok(());
        }
        if link.reregister.swap(false, Ordering::AcqRel) {
            tracing::info!("broker asked us to register again");
            socket.send(ready, 0).map_err(Error::zmq("registering"))?;
        }
        let now = Instant::now();
        let last_heard = *link.last_heard.lock().expect("no poison");
        if now >= last_heard + broker_timeout {
            if options.exit_on_broker_loss {
                return Err(Error::Protocol(format!("broker silent for {broker_timeout:?}; exiting as asked")));
            }
            tracing::warn!("broker silent for {broker_timeout:?}; reconnecting in {reconnect_delay:?}");
            let mut items = [shutdown.poll_item()];
            let _ = crate::shutdown::poll(&mut items, reconnect_delay.as_millis() as i64);
            *socket = connect(ctx, options, id)?;
            socket.send(ready, 0).map_err(Error::zmq("registering"))?;
            *link.last_heard.lock().expect("no poison") = Instant::now();
            reconnect_delay = (reconnect_delay * 2).min(Duration::from_secs(32));
            continue;
        }
        if now >= next_heartbeat {
            send(&socket, CommandFrame::new(Command::Heartbeat, 0, 0, b""), None)?;
            next_heartbeat = now + interval;
        }
        let wait = next_heartbeat.min(last_heard + broker_timeout).saturating_duration_since(now);
        let mut items = [socket.as_poll_item(zmq::POLLIN), shutdown.poll_item()];
        crate::shutdown::poll(&mut items, wait.as_millis() as i64 + 1)?;
        if !items[0].is_readable() {
            continue;
        }
        while recv_frames(&socket, &mut frames)? {
            *link.last_heard.lock().expect("no poison") = Instant::now();
            reconnect_delay = interval;
            let cmd = match frames.first().map(|f| CommandFrame::decode(f)) {
                Some(Ok(cmd)) => cmd,
                _ => {
                    tracing::warn!("malformed message from the broker ignored");
                    continue;
                }
            };
            match cmd.command {
                Command::Job if frames.len() == 3 => {
                    let (job_id, timeout_ms) = (cmd.id, cmd.arg);
                    // Release the socket while the job runs: the pulse thread
                    // heartbeats with it meanwhile.
                    link.busy.store(true, Ordering::Release);
                    drop(socket);
                    let (status, body) = run_job(plugin, &frames[1], &frames[2]);
                    socket = link.socket.lock().expect("no poison");
                    link.busy.store(false, Ordering::Release);
                    send(&socket, CommandFrame::new(Command::Result, job_id, status as u32, b""), Some(body))?;
                    next_heartbeat = Instant::now() + interval;
                    tracing::debug!(job_id, timeout_ms, ?status, "job done");
                }
                Command::Job => {
                    // Answer rather than ignore: the broker counts us busy until a RESULT.
                    let msg = format!("JOB with {} frames after the command frame, expected 2", frames.len() - 1);
                    tracing::warn!("{msg}");
                    send(
                        &socket,
                        CommandFrame::new(Command::Result, cmd.id, Status::BadRequest as u32, b""),
                        Some(msg.into_bytes().into()),
                    )?;
                }
                Command::Heartbeat => {}
                Command::Disconnect => link.reregister.store(true, Ordering::Release),
                other => tracing::warn!("unexpected {other:?} from the broker ignored"),
            }
            if link.reregister.swap(false, Ordering::AcqRel) {
                tracing::info!("broker asked us to register again");
                socket.send(ready, 0).map_err(Error::zmq("registering"))?;
            }
        }
    }
}

/// Runs one job; the status and body of the RESULT to send.
fn run_job(plugin: &LoadedPlugin, headers: &[u8], data: &[u8]) -> (Status, zmq::Message) {
    let headers: Vec<(&str, &str)> = match HeaderIter::new(headers).collect::<Result<_>>() {
        Ok(h) => h,
        Err(e) => return (Status::BadRequest, e.to_string().into_bytes().into()),
    };
    match plugin.handle(headers, data) {
        Ok(out) => (Status::Ok, out.into()),
        Err(msg) => (Status::HandlerError, msg.into_bytes().into()),
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

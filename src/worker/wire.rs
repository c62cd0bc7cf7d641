//! The worker's socket and its non-blocking sends and receives, and the
//! small helpers around them (identity, host name, jitter).

use std::time::Duration;

use super::socket::BrokerSocket;
use super::WorkerOptions;
use crate::error::{Error, Result};
use crate::protocol::{Command, CommandFrame, ResultTail, Status};

/// `N` random bytes; should the kernel refuse, bits of the clock instead
/// (they only need to differ between workers, not to be secret), the
/// fastest-changing last so they weigh most when read little-endian.
fn random_or_clock<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = crate::sys::random_bytes(&mut bytes) {
        tracing::debug!("getrandom failed ({e}); the clock stands in");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (b, n) in bytes.iter_mut().rev().zip(nanos.to_le_bytes()) {
            *b = n;
        }
    }
    bytes
}

/// A unique identity across hosts: host name, pid and random bits.
pub(super) fn identity(host: &str) -> String {
    let random = u32::from_le_bytes(random_or_clock());
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// One socket for the worker's life: ZeroMQ reconnects it by itself. In
/// `immediate` mode messages queue only on a live connection, so nothing
/// piles up (or blocks) while the broker is away, and POLLOUT says whether a
/// broker is connected.
pub(super) fn connect(
    ctx: &zmq::Context,
    options: &WorkerOptions,
    identity: &str,
    backend: &str,
) -> Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER).map_err(Error::zmq("creating the worker socket"))?;
    socket.set_identity(identity.as_bytes()).map_err(Error::zmq("setting the worker identity"))?;
    socket.set_linger(0).map_err(Error::zmq("linger"))?;
    socket.set_immediate(true).map_err(Error::zmq("immediate"))?;
    if let Some(curve) = &options.curve {
        curve.apply(&socket)?;
    }
    socket.connect(backend).map_err(Error::zmq(format!("connecting to {backend}")))?;
    Ok(socket)
}

/// Sends without ever blocking; `Ok(false)` when no broker is connected (the
/// message is dropped: the broker that would have read it is gone).
pub(super) fn send(socket: &BrokerSocket, frame: CommandFrame<'_>, body: Option<zmq::Message>) -> Result<bool> {
    let socket = match socket {
        BrokerSocket::Zmq(socket) => socket,
        BrokerSocket::Local(local) => {
            let head = frame.encode();
            return match &body {
                Some(body) => local.send(&[&head, body]),
                None => local.send(&[&head]),
            };
        }
    };
    let more = if body.is_some() { zmq::SNDMORE } else { 0 };
    loop {
        // Built again when a signal interrupts the send (see crate::sys).
        match socket.send(frame.message(), more | zmq::DONTWAIT) {
            Ok(()) => break,
            Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::EAGAIN) => return Ok(false),
            Err(e) => return Err(Error::zmq("sending to the broker")(e)),
        }
    }
    if let Some(body) = body {
        // The first part went out, so the rest of the message does too.
        socket.send(body, zmq::DONTWAIT).map_err(Error::zmq("sending to the broker"))?;
    }
    Ok(true)
}

/// Sends one two-frame `RESULT` without blocking; false when no broker is connected.
pub(super) fn send_result(
    socket: &BrokerSocket,
    job_id: u64,
    status: Status,
    tail: ResultTail,
    body: zmq::Message,
) -> Result<bool> {
    let (tail, n) = tail.encode();
    send(socket, CommandFrame::new(Command::Result, job_id, status as u32, &tail[..n]), Some(body))
}

/// Sends a prepared one-frame message (READY, an inline `RESULT`) without
/// blocking; `Ok(false)` when not connected.
pub(super) fn send_raw(socket: &BrokerSocket, frame: &[u8]) -> Result<bool> {
    let socket = match socket {
        BrokerSocket::Zmq(socket) => socket,
        BrokerSocket::Local(local) => return local.send(&[frame]),
    };
    match socket.send(frame, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(e) => Err(Error::zmq("sending to the broker")(e)),
    }
}

/// The error text for a result over the maximum message size.
pub(super) fn oversized_result(len: usize, limit: usize) -> String {
    format!("result of {len} bytes exceeds the maximum message size ({limit} bytes)")
}

/// A random duration in `0..=max` (spreads the retirement of workers).
pub(super) fn jitter(max: Duration) -> Duration {
    max.mul_f64(u64::from_le_bytes(random_or_clock()) as f64 / u64::MAX as f64)
}

/// Reads one message without blocking; `false` when none is waiting.
pub(super) fn recv_frames(socket: &BrokerSocket, frames: &mut Vec<zmq::Message>) -> Result<bool> {
    socket.recv_frames(frames)
}

/// Whether a message from a broker is a `JOB`.
pub(super) fn is_job(frames: &[zmq::Message]) -> bool {
    frames.first().and_then(|h| CommandFrame::decode(h).ok()).is_some_and(|c| c.command == Command::Job)
}

/// [`recv_frames`] from a ZeroMQ socket.
pub(super) fn recv_zmq(socket: &zmq::Socket, frames: &mut Vec<zmq::Message>) -> Result<bool> {
    frames.clear();
    loop {
        let mut msg = zmq::Message::new();
        match crate::sys::zmq_recv(socket, &mut msg, zmq::DONTWAIT) {
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

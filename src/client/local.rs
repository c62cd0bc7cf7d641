//! The client over the local transport (`unix://`): each call takes a
//! connection of its own from a small pool, writes its requests and waits on
//! that connection for its answers, so the caller's thread is the one the
//! kernel wakes when the answer comes (no leader, no hand-off), and callers
//! never wait for each other.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::mux::{reply_of, Outcome};
use crate::error::{Error, Result};
use crate::local::{Conn, Frames};

/// Idle connections kept for the next callers; more are closed.
const POOL_MAX: usize = 64;
/// The first and the longest pause between attempts to reach a broker
/// that is not listening (yet): it is dialled again until the deadline.
const DIAL_FIRST: Duration = Duration::from_millis(1);
const DIAL_MAX: Duration = Duration::from_millis(50);

/// A client's connections to one broker's local front.
pub(crate) struct Local {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

impl Local {
    pub(crate) fn new(endpoint: &str) -> Result<Local> {
        let path = crate::local::path_of(endpoint)
            .ok_or_else(|| Error::BadFlag(format!("{endpoint} is not a unix:// endpoint")))?;
        Ok(Local { path, idle: Mutex::new(Vec::new()), next_id: AtomicU64::new(1) })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An idle connection that is still open (answers that came too late
    /// for their callers are read off and dropped), or a new one; `None`
    /// when no broker listens before `deadline`.
    fn checkout(&self, deadline: Instant) -> Result<Option<Conn>> {
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut conn) = pooled else { break };
            loop {
                match conn.try_recv() {
                    Ok(Some(_late)) => continue,
                    Ok(None) => return Ok(Some(conn)),
                    Err(_) => break,
                }
            }
        }
        let mut pause = DIAL_FIRST;
        loop {
            match crate::local::connect(&self.path, b"") {
                Ok(conn) => return Ok(Some(conn)),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {}
                // EAGAIN: the listener's queue is full, as good as refused.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io(format!("connecting to unix://{}", self.path.display()))(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // No readiness signal for a socket that does not exist yet.
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(DIAL_MAX);
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(conn);
        }
    }

    /// Sends every request (id, frames) and waits for their replies until `deadline`.
    pub(crate) fn call(&self, requests: Vec<(u64, Vec<zmq::Message>)>, deadline: Instant) -> Result<Vec<Outcome>> {
        let ids: Vec<u64> = requests.iter().map(|(id, _)| *id).collect();
        let Some(mut conn) = self.checkout(deadline)? else {
            return Ok(ids.iter().map(|_| Outcome::Unreachable).collect());
        };
        let mut got: HashMap<u64, Outcome> = HashMap::with_capacity(ids.len());
        for (sent, (_, frames)) in requests.iter().enumerate() {
            let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            if let Err(e) = conn.send_by(&parts, Some(deadline)) {
                // Cut mid-message or gone: the connection is not reused. A
                // broker that stopped reading until the deadline: all timed
                // out; one that is gone: those sent are lost, the rest unsent.
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                let outcome = |i: usize| match (timed_out, i < sent) {
                    (true, _) => Outcome::Timeout,
                    (false, true) => Outcome::Lost,
                    (false, false) => Outcome::Unreachable,
                };
                return Ok((0..ids.len()).map(outcome).collect());
            }
        }
        let healthy = loop {
            if got.len() == ids.len() {
                break true;
            }
            match conn.recv_by(Some(deadline)) {
                Ok(Some(frames)) => {
                    if let Some((id, reply)) = reply_from(frames) {
                        if ids.contains(&id) {
                            got.insert(id, Outcome::Reply(reply));
                        }
                    }
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if healthy {
            self.checkin(conn);
        }
        let missing = || if healthy { Outcome::Timeout } else { Outcome::Lost };
        Ok(ids.iter().map(|id| got.remove(id).unwrap_or_else(missing)).collect())
    }
}

/// A reply from a message's frames (`None`, logged, if malformed).
pub(super) fn reply_from(frames: Frames) -> Option<(u64, crate::client::mux::Reply)> {
    let extra = frames.len().saturating_sub(1);
    let mut frames = frames.into_iter();
    let head = frames.next()?;
    let body = frames.next().unwrap_or_else(zmq::Message::new);
    reply_of(head, body, extra)
}

impl Local {
    /// Keeps up to `window` requests from `next` in flight on one
    /// connection, reporting each outcome to `done` as it comes; each
    /// request gets `timeout`. If the broker goes, those in flight are
    /// `Lost` and the rest go on over a new connection.
    pub(crate) fn pipeline(
        &self,
        mut next: impl FnMut(u64) -> Option<Vec<zmq::Message>>,
        window: usize,
        timeout: Duration,
        mut done: impl FnMut(u64, Outcome),
    ) -> Result<()> {
        let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(window);
        let mut order: std::collections::VecDeque<u64> = std::collections::VecDeque::with_capacity(window);
        let mut exhausted = false;
        let mut conn = None;
        loop {
            let Some(c) = conn.as_mut() else {
                match self.checkout(Instant::now() + timeout)? {
                    Some(c) => conn = Some(c),
                    None => {
                        // No broker: what is left is unreachable.
                        while let Some(id) = Some(self.next_id()).filter(|&id| next(id).is_some()) {
                            done(id, Outcome::Unreachable);
                        }
                        return Ok(());
                    }
                }
                continue;
            };
            // One clock read per burst of sends: deadlines differ by µs at most.
            let deadline = Instant::now() + timeout;
            let mut broken = false;
            while !exhausted && in_flight.len() < window {
                let id = self.next_id();
                let Some(frames) = next(id) else {
                    exhausted = true;
                    break;
                };
                let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                in_flight.insert(id, deadline);
                order.push_back(id);
                // Written together by the pump below.
                c.queue(&parts);
            }
            let now = Instant::now();
            while let Some(&id) = order.front() {
                match in_flight.get(&id) {
                    None => drop(order.pop_front()),
                    Some(&deadline) if deadline <= now => {
                        order.pop_front();
                        in_flight.remove(&id);
                        done(id, Outcome::Timeout);
                    }
                    Some(_) => break,
                }
            }
            if !broken && exhausted && in_flight.is_empty() {
                if c.unwritten() == 0 {
                    self.checkin(conn.take().expect("connected"));
                }
                return Ok(());
            }
            if !broken {
                broken = self.pump(c, order.front().and_then(|id| in_flight.get(id)).copied(), |id, reply| {
                    if in_flight.remove(&id).is_some() {
                        done(id, Outcome::Reply(reply));
                    }
                });
            }
            if broken {
                conn = None;
                for id in order.drain(..) {
                    if in_flight.remove(&id).is_some() {
                        done(id, Outcome::Lost);
                    }
                }
            }
        }
    }

    /// Writes what waits and reads what came, waiting until `until` for
    /// either; true when the connection is gone.
    fn pump(&self, c: &mut Conn, until: Option<Instant>, mut reply: impl FnMut(u64, super::mux::Reply)) -> bool {
        let Ok(flushed) = c.flush() else { return true };
        let events = if flushed { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
        let revents = match c.poll(events, until) {
            Ok(revents) => revents,
            Err(_) => return true,
        };
        if revents & !libc::POLLOUT == 0 {
            return false;
        }
        match c.fill() {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        loop {
            match c.next_message() {
                Ok(Some(frames)) => {
                    if let Some((id, r)) = reply_from(frames) {
                        reply(id, r);
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!("bad bytes from the broker: {e}");
                    return true;
                }
            }
        }
    }
}

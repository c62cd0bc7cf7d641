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

use super::mux::Outcome;
use super::reply::reply_of_parts;
use crate::error::{Error, Result};
use crate::local::Conn;
use crate::wakeup::Wakeup;

/// Idle connections kept for the next callers; more are closed.
const POOL_MAX: usize = 64;
/// Reads of the socket per turn of [`Local::pump`] at most.
const READS_PER_PUMP: usize = 16;
/// The first and the longest pause between attempts to reach a broker
/// that is not listening (yet): it is dialled again until the deadline.
pub(super) const DIAL_FIRST: Duration = Duration::from_millis(1);
pub(super) const DIAL_MAX: Duration = Duration::from_millis(50);

/// A client's connections to one broker's local front.
pub(crate) struct Local {
    path: PathBuf,
    /// The lanes of this broker's workers.
    pub(super) lanes: super::lanes::Lanes,
    idle: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

impl Local {
    pub(crate) fn new(endpoint: &str) -> Result<Local> {
        let path = crate::local::path_of(endpoint)
            .ok_or_else(|| Error::BadFlag(format!("{endpoint} is not a unix:// endpoint")))?;
        let lanes = super::lanes::Lanes::new(&path);
        Ok(Local { path, lanes, idle: Mutex::new(Vec::new()), next_id: AtomicU64::new(1) })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An idle connection (true), or a new one (false); `None` when no
    /// broker listens before `deadline`. An idle one is not checked: one
    /// whose broker is gone fails its first write at once ([`Local::call`]
    /// then dials), and answers that came too late for their callers are
    /// skipped by request id.
    fn checkout(&self, deadline: Instant) -> Result<Option<(Conn, bool)>> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(conn) = pooled {
            return Ok(Some((conn, true)));
        }
        Ok(self.dial(deadline)?.map(|conn| (conn, false)))
    }

    /// A new connection, dialled until `deadline`.
    fn dial(&self, deadline: Instant) -> Result<Option<Conn>> {
        let mut pause = DIAL_FIRST;
        loop {
            if let Some(conn) = self.try_dial()? {
                return Ok(Some(conn));
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

    /// One attempt at a new connection: `None` when no broker listens.
    pub(super) fn try_dial(&self) -> Result<Option<Conn>> {
        match crate::local::connect(&self.path, b"") {
            Ok(conn) => Ok(Some(conn)),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => Ok(None),
            // EAGAIN: the listener's queue is full, as good as refused.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // Accepted, then closed at once: the broker refuses us (another user).
            Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                Err(Error::LocalRefused { endpoint: format!("unix://{}", self.path.display()) })
            }
            Err(e) => Err(Error::io(format!("connecting to unix://{}", self.path.display()))(e)),
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
        let unreachable = || Ok(ids.iter().map(|_| Outcome::Unreachable).collect());
        let Some((mut conn, pooled)) = self.checkout(deadline)? else { return unreachable() };
        let mut requests = requests.iter();
        let Some((_, first)) = requests.next() else { return Ok(Vec::new()) };
        let first: Vec<&[u8]> = first.iter().map(|f| &f[..]).collect();
        let mut result = conn.send_by(&first, Some(deadline));
        if result.is_err() && pooled {
            // An idle connection whose broker went: nothing was sent on it.
            let Some(fresh) = self.dial(deadline)? else { return unreachable() };
            conn = fresh;
            result = conn.send_by(&first, Some(deadline));
        }
        if let Err(e) = result {
            // Cut mid-message or gone: the connection is not reused. A
            // broker that stopped reading until the deadline: timed out;
            // one that is gone: nothing was sent.
            let timed_out = e.kind() == io::ErrorKind::TimedOut;
            return Ok(ids.iter().map(|_| if timed_out { Outcome::Timeout } else { Outcome::Unreachable }).collect());
        }
        if !requests.as_slice().is_empty() {
            return Ok(self.many_replies(conn, &ids, requests, deadline));
        }
        // One request: wait on the connection for its reply (answers that
        // came too late for an earlier caller of this connection are skipped).
        let (reply, healthy) = loop {
            match conn.recv_map_by(Some(deadline), reply_of_parts) {
                Ok(Some(got)) => {
                    if let Some((_, reply)) = got.filter(|(id, _)| *id == ids[0]) {
                        break (Some(reply), true);
                    }
                }
                Ok(None) => break (None, true),
                Err(_) => break (None, false),
            }
        };
        if healthy {
            self.checkin(conn);
        }
        Ok(vec![match reply {
            Some(reply) => Outcome::Reply(reply),
            None if healthy => Outcome::Timeout,
            None => Outcome::Lost,
        }])
    }
}

impl Local {
    /// The rest of a call of several requests (the first is sent on
    /// `conn`): written while the replies are read, so that neither side
    /// waits for the other however many there are.
    fn many_replies<'r>(
        &self,
        mut conn: Conn,
        ids: &[u64],
        rest: impl Iterator<Item = &'r (u64, Vec<zmq::Message>)>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        for (_, frames) in rest {
            let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            conn.queue(&parts);
        }
        let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
        let mut got: HashMap<u64, Outcome> = HashMap::with_capacity(ids.len());
        let healthy = loop {
            if got.len() == ids.len() {
                break true;
            }
            if Instant::now() >= deadline {
                // Bytes left unwritten would cut a message: not reused then.
                break conn.unwritten() == 0;
            }
            let broken = self.pump(&mut conn, Some(deadline), None, |id, reply| {
                if wanted.contains(&id) {
                    got.insert(id, Outcome::Reply(reply));
                }
            });
            if broken {
                break false;
            }
        };
        if healthy {
            self.checkin(conn);
        }
        // Gone: those not answered may have run (the broker cannot say).
        let missing = || if healthy { Outcome::Timeout } else { Outcome::Lost };
        ids.iter().map(|id| got.remove(id).unwrap_or_else(missing)).collect()
    }
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
                match self.dial(Instant::now() + timeout)? {
                    Some(c) => conn = Some(c),
                    None => {
                        // No broker: what is left is unreachable.
                        loop {
                            let id = self.next_id();
                            if next(id).is_none() {
                                return Ok(());
                            }
                            done(id, Outcome::Unreachable);
                        }
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
                broken = self.pump(c, order.front().and_then(|id| in_flight.get(id)).copied(), None, |id, reply| {
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
    /// either (or for `also` to fire); true when the connection is gone.
    pub(super) fn pump(
        &self,
        c: &mut Conn,
        until: Option<Instant>,
        also: Option<&Wakeup>,
        mut reply: impl FnMut(u64, super::mux::Reply),
    ) -> bool {
        let Ok(flushed) = c.flush() else { return true };
        let readable = match also {
            None => {
                let events = if flushed { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
                match c.poll(events, until) {
                    Ok(revents) => revents & !libc::POLLOUT != 0,
                    Err(_) => return true,
                }
            }
            Some(wake) => {
                let events = if flushed { zmq::POLLIN } else { zmq::POLLIN | zmq::POLLOUT };
                // Rounded up: waking a little early would spin.
                let ms =
                    until.map_or(-1, |d| d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000) as i64);
                let mut items = [zmq::PollItem::from_fd(c.fd(), events), wake.poll_item()];
                if crate::wakeup::poll(&mut items, ms).is_err() {
                    return true;
                }
                items[0].is_readable() || items[0].is_error()
            }
        };
        if !readable {
            return false;
        }
        // Read on while reads come back full (up to a bound, so writing
        // gets its turn): a caller that wrote a burst reads its answers as
        // fast, and a lone answer costs one read.
        for _ in 0..READS_PER_PUMP {
            let more = match c.fill() {
                Ok(0) => return true,
                Ok(n) => n >= crate::local::conn::READ_CHUNK,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => return true,
            };
            loop {
                match c.next_parts() {
                    Ok(Some(parts)) => {
                        if let Some((id, r)) = reply_of_parts(parts) {
                            reply(id, r);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("bad bytes from the broker: {e}");
                        return true;
                    }
                }
            }
            if !more {
                break;
            }
        }
        false
    }
}

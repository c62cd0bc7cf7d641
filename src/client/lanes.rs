//! A local client's use of the workers' lanes (see `worker::lane`): a job
//! of a service whose workers opened lanes goes straight to one of them,
//! with no broker on its way, and comes back to the broker only when no
//! lane can take it.
//!
//! What the broker would do is done here:
//! - the choice of worker: the lane with the fewest requests waiting, all
//!   clients' (its load word, `crate::local::load`), ties taken in turn;
//! - a worker gone: a lane that refuses connections is skipped; a lane
//!   that says it closes ran none of the requests it did not answer, which
//!   go to the broker; a worker that dies running a job is `WORKER_LOST`,
//!   or the job goes to the broker with one retry fewer if it allows
//!   retries, as the broker would do;
//! - a worker stuck in a handler past `--timeout`: its lane answers
//!   `TIMEOUT` (the job that outlived it) or sends the job to the broker
//!   (those that would wait behind it), and is left alone for a while;
//! - the deadline: the caller waits until it and no longer.
//!
//! Jobs with a priority go through the broker (a lane has no queue to
//! order), and so do jobs of more than 1 MiB of data.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::reply::{reply_of_parts, Reply};
use crate::local::load::{load_path, LoadWord};
use crate::local::Conn;
use crate::protocol::{
    Status, HEARTBEAT_INTERVAL, LANE_CLOSING, LANE_MAX_DATA, LANE_RESCAN, LANE_STUCK_PAUSE, LIVENESS,
};
use crate::syscall;

/// Idle connections kept per lane.
const POOL_MAX: usize = 64;
/// A lane not to be used again.
const GONE: Duration = Duration::MAX;
/// How many times a caller may lose its choice of lane to another client
/// (each loss means that client's claim went through) before it sends to
/// its last choice regardless.
const CLAIM_TRIES: usize = 16;

/// The lanes of one broker's workers, as this client knows them.
pub(crate) struct Lanes {
    dir: PathBuf,
    known: RwLock<Known>,
    /// Where the search for the least busy lane starts: each in turn.
    turn: AtomicUsize,
    /// What the lanes' pauses count from.
    epoch: Instant,
}

#[derive(Default)]
struct Known {
    read_at: Option<Instant>,
    lanes: Vec<Arc<Lane>>,
}

/// One worker's lane.
pub(crate) struct Lane {
    name: String,
    service: String,
    /// Its worker's process.
    pid: u32,
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
    /// Its requests not answered, by which the least busy lane is chosen.
    count: Count,
    /// Not used before this many ms from `epoch`: for good ([`GONE`]) once it
    /// refused a connection, said it closes or lost a job; for a while
    /// ([`LANE_STUCK_PAUSE`]) once its worker's handler outlived `--timeout`.
    unusable_until: AtomicU64,
    epoch: Instant,
}

/// How a call on a lane ended.
pub(crate) enum LaneOutcome {
    Reply(Reply),
    /// Not run: the lane is gone or closed before it took the job.
    NotRun,
    /// The worker's end closed with the job sent and unanswered: it may have run.
    Lost,
    /// No answer before the deadline.
    Timeout,
}

/// Whether a job may go to a lane: not one with a priority, which only
/// the broker's queue gives, nor one of more than [`LANE_MAX_DATA`] of data.
pub(crate) fn may_take(job: &super::JobRequest) -> bool {
    job.data.len() <= LANE_MAX_DATA && !job.headers.iter().any(|(name, _)| name == "priority")
}

impl Lanes {
    /// The lanes beside the broker socket at `socket`.
    pub(crate) fn new(socket: &Path) -> Lanes {
        let (known, turn, epoch) = (RwLock::default(), AtomicUsize::new(0), Instant::now());
        Lanes { dir: crate::local::lanes_dir(socket), known, turn, epoch }
    }

    /// The lane to send a job of `service` to (empty: the only service
    /// there is), if any worker of that service has one: the least loaded,
    /// with this job already counted on it ([`Lane::call`] sends it).
    pub(crate) fn pick(&self, service: &str, now: Instant) -> Option<Arc<Lane>> {
        // Read-locked: the callers of a client pick at once; the directory
        // is read again under the write lock, once per LANE_RESCAN.
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        if known.read_at.is_none_or(|at| now.saturating_duration_since(at) >= LANE_RESCAN) {
            drop(known);
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            if known.read_at.is_none_or(|at| now.saturating_duration_since(at) >= LANE_RESCAN) {
                known.lanes = self.scan(&known.lanes);
                known.read_at = Some(now);
            }
            drop(known);
            return self.pick(service, now);
        }
        let live = || known.lanes.iter().filter(|l| l.usable(now));
        let service = match service {
            "" => {
                let mut services = live().map(|l| l.service.as_str());
                let first = services.next()?;
                // Several services: the broker says which (or that it cannot).
                if services.any(|s| s != first) {
                    return None;
                }
                first
            }
            named => named,
        };
        let n = known.lanes.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut chosen = None;
        for _ in 0..CLAIM_TRIES {
            let order = known.lanes.iter().cycle().skip(start).take(n);
            let candidates = order.filter(|l| l.service == service && l.usable(now));
            let (lane, seen) = candidates.map(|l| (l, l.count.get())).min_by_key(|&(_, load)| load)?;
            // Chosen and counted in one step: two clients (in two processes,
            // say) that both saw an idle lane do not both send to it while
            // another lane idles; the one that lost looks again.
            if lane.count.claim(seen) {
                return Some(Arc::clone(lane));
            }
            chosen = Some(lane);
        }
        // Contended past all tries: the last choice, counted as it is.
        let lane = chosen?;
        lane.count.add();
        Some(Arc::clone(lane))
    }

    /// The lanes listed in the directory now; those known already are kept
    /// (with their connections and whether they are gone).
    fn scan(&self, before: &[Arc<Lane>]) -> Vec<Arc<Lane>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut lanes = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((service, pid)) = crate::local::parse_lane_name(name) else { continue };
            match before.iter().find(|l| l.name == name) {
                Some(lane) => lanes.push(Arc::clone(lane)),
                None => lanes.push(Arc::new(Lane {
                    name: name.to_string(),
                    service: service.to_string(),
                    pid,
                    path: entry.path(),
                    idle: Mutex::default(),
                    count: match LoadWord::open(&load_path(&entry.path())) {
                        Ok(word) => Count::Shared(word),
                        Err(_) => Count::Own(AtomicU64::new(0)),
                    },
                    unusable_until: AtomicU64::new(0),
                    epoch: self.epoch,
                })),
            }
        }
        lanes
    }
}

/// A lane's requests not answered. The load word, all clients' count, is
/// the one that matters; this client's own is kept only when it has none.
enum Count {
    /// Every client's, shared with the worker, which takes each request off
    /// as it answers it (see `crate::local::load`).
    Shared(LoadWord),
    /// This client's calls on the lane now.
    Own(AtomicU64),
}

impl Count {
    fn get(&self) -> u64 {
        match self {
            Count::Shared(word) => word.get(),
            Count::Own(n) => n.load(Ordering::Relaxed),
        }
    }

    /// One more request, if the count is still `seen`.
    fn claim(&self, seen: u64) -> bool {
        match self {
            Count::Shared(word) => word.claim(seen),
            Count::Own(n) => n.compare_exchange(seen, seen + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok(),
        }
    }

    /// One more request, whatever the count.
    fn add(&self) {
        match self {
            Count::Shared(word) => word.add(),
            Count::Own(n) => drop(n.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// A call ended; `sent`: its request reached the lane, whose worker
    /// takes a shared count off itself.
    fn ended(&self, sent: bool) {
        match self {
            Count::Shared(word) if !sent => word.sub(),
            Count::Shared(_) => {}
            Count::Own(n) => drop(n.fetch_sub(1, Ordering::Relaxed)),
        }
    }
}

impl Lane {
    /// Sends one request (`id`, framed for a local connection in `request`)
    /// to this lane, which [`Lanes::pick`] chose and counted, and waits for
    /// its answer until `deadline`.
    pub(crate) fn call(&self, id: u64, request: &[u8], deadline: Instant) -> LaneOutcome {
        let (outcome, sent) = match self.send(request, deadline) {
            Ok(conn) => (self.answer(conn, id, deadline), true),
            Err(outcome) => (outcome, false),
        };
        self.count.ended(sent);
        outcome
    }

    /// The connection the whole request was written on, or how the call ends.
    fn send(&self, request: &[u8], deadline: Instant) -> Result<Conn, LaneOutcome> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(mut conn) => match conn.send_encoded_by(request, Some(deadline)) {
                Ok(()) => Ok(conn),
                // Its worker went while it was idle: nothing was sent.
                Err(e) if e.kind() != io::ErrorKind::TimedOut => {
                    self.dial_and_send(request, deadline).ok_or(LaneOutcome::NotRun)
                }
                Err(_) => Err(LaneOutcome::Timeout),
            },
            None => self.dial_and_send(request, deadline).ok_or(LaneOutcome::NotRun),
        }
    }

    /// Waits on `conn` for the answer to request `id`.
    fn answer(&self, mut conn: Conn, id: u64, deadline: Instant) -> LaneOutcome {
        let mut stopped = 0;
        loop {
            // Looked at as the broker looks at a silent worker: a worker
            // stopped for as many heartbeats as it may miss is hung.
            let until = deadline.min(Instant::now() + HEARTBEAT_INTERVAL);
            let got = conn.recv_map_by(Some(until), reply_of_parts);
            if matches!(got, Ok(None)) && Instant::now() < deadline {
                stopped = if self.stopped() { stopped + 1 } else { 0 };
                if stopped < LIVENESS {
                    continue;
                }
                tracing::warn!(lane = %self.path.display(), "the lane's worker is stopped: its job is lost");
                self.set_unusable(GONE);
                return LaneOutcome::Lost;
            }
            match got {
                Ok(Some(got)) => match got {
                    Some((got, reply)) if got == id => {
                        return match reply.status {
                            // Not run: its handler is stuck (or the service is another).
                            Status::NoWorker | Status::UnknownService => {
                                self.set_unusable(LANE_STUCK_PAUSE);
                                LaneOutcome::NotRun
                            }
                            // Past the worker's --timeout: it is stuck for a while.
                            Status::Timeout => {
                                self.set_unusable(LANE_STUCK_PAUSE);
                                self.checkin(conn);
                                LaneOutcome::Reply(reply)
                            }
                            _ => {
                                self.checkin(conn);
                                LaneOutcome::Reply(reply)
                            }
                        };
                    }
                    Some((LANE_CLOSING, _)) => {
                        self.set_unusable(GONE);
                        return LaneOutcome::NotRun;
                    }
                    // An answer that came too late for this connection's caller before.
                    _ => continue,
                },
                Ok(None) => {
                    // Its answer, if it comes, is skipped by the next caller.
                    self.checkin(conn);
                    return LaneOutcome::Timeout;
                }
                Err(_) => {
                    self.set_unusable(GONE);
                    // A lane greets a connection as it accepts it, before it
                    // reads a request: one closed ungreeted (still queued
                    // when its worker stopped or died) ran nothing.
                    return if conn.greeted() { LaneOutcome::Lost } else { LaneOutcome::NotRun };
                }
            }
        }
    }

    /// Whether the lane's worker is stopped (a signal, a debugger).
    fn stopped(&self) -> bool {
        matches!(crate::sys::process_state(self.pid), Some('T' | 't'))
    }

    /// Waits until the lane's worker has exited (all its sockets closed), or
    /// `until`: its process descriptor is readable from then.
    pub(crate) fn wait_exit(&self, until: Instant) {
        let pid = self.pid;
        // SAFETY: pidfd_open(2) with a pid and no flags; the result is a new
        // descriptor owned at once, or an error (ESRCH: gone already).
        let fd = match unsafe { syscall!(syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long)) } {
            // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
            Ok(fd) => unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
            Err(_) => return,
        };
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = until.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd. Interrupted or not, the resubmission goes on.
        let _ = unsafe { syscall!(poll(&mut pfd, 1, ms)) };
    }

    /// The `WORKER_LOST` a broker would answer for a job whose worker died.
    pub(crate) fn lost_reply(&self) -> Reply {
        let pid = self.pid;
        let why = format!("worker {pid} ended while it ran the job (on its lane); the job allows no retry");
        Reply::made(crate::protocol::Status::WorkerLost, pid, why.into_bytes())
    }

    /// A new connection with the request written on it; `None` (the lane
    /// marked gone) when the lane refuses or is not there: not run.
    fn dial_and_send(&self, request: &[u8], deadline: Instant) -> Option<Conn> {
        let sent = crate::local::connect(&self.path, b"").and_then(|mut conn| {
            // Only the broker's user (or root) serves a lane: a socket
            // planted by another user gets no job.
            let uid = conn.peer()?.uid;
            if !crate::local::uid_allowed(uid) {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("served by uid {uid}")));
            }
            conn.send_encoded_by(request, Some(deadline))?;
            Ok(conn)
        });
        match sent {
            Ok(conn) => Some(conn),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(lane = %self.path.display(), "lane not used: {e}");
                self.set_unusable(GONE);
                None
            }
            Err(e) => {
                tracing::debug!(lane = %self.path.display(), "lane not used: {e}");
                self.set_unusable(GONE);
                None
            }
        }
    }

    fn usable(&self, now: Instant) -> bool {
        let until = self.unusable_until.load(Ordering::Relaxed);
        until == 0 || now.saturating_duration_since(self.epoch).as_millis() as u64 >= until
    }

    fn set_unusable(&self, pause: Duration) {
        let from = Instant::now().saturating_duration_since(self.epoch);
        let until = from.checked_add(pause).map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128) as u64);
        self.unusable_until.fetch_max(until.max(1), Ordering::Relaxed);
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
#[path = "lanes_tests.rs"]
mod tests;

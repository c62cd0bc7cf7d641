//! A worker's lane (unless `--no-lanes`): a socket of its own in the
//! broker's lanes directory, where local clients send a service's jobs straight to the
//! worker, which answers them itself: no broker between them.
//!
//! Why: a caller waiting for one job at a time pays for every wake-up on
//! its job's way, and through a broker each request and each answer wakes
//! the broker too, which on a busy host preempts a worker running a job.
//! A lane leaves one wake-up per job: the caller's, for its answer (the
//! worker finds the next request waiting when it finishes a job).
//!
//! The lane speaks the client side of the local transport (`REQUEST` in,
//! `REPLY` out), so a client reads a lane's answers as a broker's. It runs
//! on a thread of its own beside the job thread; the two take turns at the
//! handler (one job at a time per worker). What the broker adds is the
//! client's to rebuild (see `client::lanes`): the choice among workers, a
//! job whose worker dies (sent to the broker if it allows a retry), the
//! deadline (the caller's wait). The lane file is `SERVICE@PID`, 0600 in a
//! 0700 directory, and a peer of another uid is refused (`SO_PEERCRED`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

mod file;
mod watch;
mod wire;

use super::Link;
use crate::local::frame::MAX_FRAMES;
use crate::local::{Conn, Listener};
use crate::plugin::LoadedPlugin;
use crate::protocol::{HeaderIter, Status, COMMAND_LEN, LANE_CLOSING, LOCAL_READ_PAUSE};
use crate::sys::epoll::{self, Epoll};
use crate::wakeup::Wakeup;
pub(super) use file::open;
use file::Lane;
pub(super) use watch::{check as watch, next_limit, LaneRunning};
use wire::{parse, reply, Parsed};

/// Tokens of the lane's descriptors in its epoll set; connections follow.
const LISTENER: u64 = 0;
const STOP: u64 = 1;
const FIRST_CONN: u64 = 2;

/// Job ids the handler sees for a lane's jobs (the broker's count up from
/// 1): the top bit set, so the two never meet in a log.
const LANE_JOB_IDS: u64 = 1 << 63;

/// What the lane thread runs jobs with.
pub(super) struct LaneJobs<'a> {
    pub plugin: &'a LoadedPlugin,
    pub service: &'a str,
    /// What the job and pulse threads share: the handler's turn, the lane's
    /// running job (watched by the pulse) and its count, the brokers owed a
    /// `READY` once the lane's job ends, and the wake-up that says so.
    pub link: &'a Link,
    /// `--timeout` or `--hard-timeout` is set: each job is shown to the
    /// pulse thread's watch (see `watch`).
    pub watched: bool,
    /// Set the pulse thread's timer as each job starts: its `--timeout` is
    /// shorter than the pulse's own wake-ups.
    pub poke_pulse: bool,
    pub max_message_bytes: usize,
    /// This process's, for every reply (glibc asks the kernel at each `getpid`).
    pub pid: u32,
}

/// One client's connection to the lane.
struct Caller {
    conn: Conn,
    /// Its first message (its identity, empty for a client) was read.
    introduced: bool,
    /// The events it is watched for.
    interest: u32,
}

/// Serves the lane until `stop` fires; then every caller is told it closes
/// (between jobs: none runs after that) and its socket file goes.
pub(super) fn serve(lane: Lane, jobs: &LaneJobs<'_>, stop: &Wakeup) -> io::Result<()> {
    let mut callers: Vec<Option<Caller>> = Vec::new();
    let result = serve_until(&lane, jobs, stop, &mut callers);
    drop(lane);
    let why = b"this lane is closing: send it to the broker";
    let closing = reply(jobs.pid, LANE_CLOSING, Status::NoWorker, why, true);
    for caller in callers.iter_mut().flatten() {
        // Best effort, without waiting: a caller whose buffer is full has
        // answers unread, and reads the end of the stream after them.
        let _ = caller.conn.send_encoded(&closing);
    }
    result
}

fn serve_until(lane: &Lane, jobs: &LaneJobs<'_>, stop: &Wakeup, callers: &mut Vec<Option<Caller>>) -> io::Result<()> {
    let mut epoll = Epoll::new()?;
    epoll.add(lane.listener.fd(), LISTENER, epoll::IN)?;
    epoll.add(stop.fd(), STOP, epoll::IN)?;
    let limit = jobs.max_message_bytes.saturating_mul(crate::protocol::MAX_MESSAGE_HARD_FACTOR);
    let cancelled = AtomicBool::new(false);
    let mut next_id = 0u64;
    tracing::info!(lane = %lane.path().display(), "serving local clients on a lane");
    // Kept from one wake-up to the next: a wake-up allocates nothing.
    let mut ready: Vec<(u64, u32)> = Vec::new();
    loop {
        ready.clear();
        ready.extend(epoll.wait(-1)?);
        // Told to stop: the requests waiting are not run (their callers go
        // to the broker), whatever the order they came in beside it.
        if ready.iter().any(|&(token, _)| token == STOP) {
            return Ok(());
        }
        let mut batch = Batch { stop, ran: false, stopping: false };
        for &(token, events) in &ready {
            match token {
                LISTENER => accept(&lane.listener, &epoll, callers, limit),
                token => {
                    let i = (token - FIRST_CONN) as usize;
                    let Some(caller) = callers.get_mut(i).and_then(Option::as_mut) else { continue };
                    let served = caller.serve(events, jobs, &lane.load, &cancelled, &mut next_id, &mut batch);
                    if batch.stopping {
                        return Ok(());
                    }
                    if let Err(why) = served {
                        if !why.is_empty() {
                            tracing::warn!("a lane's caller was cut off: {why}");
                        }
                        let _ = epoll.delete(caller.conn.fd());
                        callers[i] = None;
                        continue;
                    }
                    let interest = caller.interest();
                    if interest != caller.interest {
                        caller.interest = interest;
                        epoll.modify(caller.conn.fd(), token, interest)?;
                    }
                }
            }
        }
    }
}

/// Takes every waiting connection of the owner's uid (or root's).
fn accept(listener: &Listener, epoll: &Epoll, callers: &mut Vec<Option<Caller>>, limit: usize) {
    loop {
        let fd = match listener.accept() {
            Ok(Some(fd)) => fd,
            Ok(None) => return,
            Err(e) => {
                // Out of descriptors: the callers still waiting are refused
                // by the kernel once the queue fills, and go to the broker.
                tracing::warn!("a lane could not accept a connection: {e}");
                return;
            }
        };
        let mut conn = Conn::accepted(fd, limit);
        match conn.peer() {
            Ok(cred) if crate::local::uid_allowed(cred.uid) => {}
            Ok(cred) => {
                tracing::warn!("a lane refused a connection from uid {} (pid {})", cred.uid, cred.pid);
                continue;
            }
            Err(_) => continue,
        }
        // The greeting, before any request is read: a caller whose
        // connection closes ungreeted knows its request never ran.
        if !matches!(conn.flush(), Ok(true)) {
            continue;
        }
        let i = callers.iter().position(Option::is_none).unwrap_or_else(|| {
            callers.push(None);
            callers.len() - 1
        });
        if let Err(e) = epoll.add(conn.fd(), FIRST_CONN + i as u64, epoll::IN) {
            tracing::warn!("a lane's caller could not be watched, closed: {e}");
            continue;
        }
        callers[i] = Some(Caller { conn, introduced: false, interest: epoll::IN });
    }
}

impl Caller {
    /// Reads and answers what the caller sent, writes what waits; an error
    /// (empty at the caller's end of stream) closes the connection.
    fn serve(
        &mut self,
        events: u32,
        jobs: &LaneJobs<'_>,
        load: &crate::local::load::LoadWord,
        cancelled: &AtomicBool,
        next_id: &mut u64,
        batch: &mut Batch<'_>,
    ) -> Result<(), String> {
        if events & epoll::OUT != 0 {
            self.conn.flush().map_err(|e| e.to_string())?;
        }
        if events & (epoll::IN | epoll::ERR) == 0 || self.conn.unwritten() >= LOCAL_READ_PAUSE {
            return Ok(());
        }
        let end = match self.conn.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(e) => return Err(e.to_string()),
        };
        loop {
            let (fd, clean) = (self.conn.fd(), self.conn.unwritten() == 0);
            let answer = {
                // Read where it lies: the frames are borrowed until answered.
                let parts = match self.conn.next_parts() {
                    Ok(Some(parts)) => parts,
                    Ok(None) => break,
                    Err(e) => return Err(format!("bad bytes: {e}")),
                };
                if !std::mem::replace(&mut self.introduced, true) {
                    continue;
                }
                if !batch.may_run() {
                    return Ok(());
                }
                *next_id += 1;
                let n = parts.len();
                let mut frames: [&[u8]; MAX_FRAMES] = [&[]; MAX_FRAMES];
                for (frame, part) in frames.iter_mut().zip(parts) {
                    *frame = part;
                }
                let caller = Watched { fd, clean, job_id: LANE_JOB_IDS | *next_id };
                answer(&frames[..n], jobs, cancelled, caller)?
            };
            // Answered, one way or the other: one request fewer waits here.
            load.sub();
            // A reply, or what the pulse's TIMEOUT reply left unsent: the
            // rest goes after what waits, and before anything else.
            self.conn.send_encoded(&answer).map_err(|e| e.to_string())?;
        }
        if end {
            return Err(String::new());
        }
        Ok(())
    }

    /// Watched for room while answers wait to be written; not for more
    /// requests while too many bytes of answers wait (bounded memory).
    fn interest(&self) -> u32 {
        match self.conn.unwritten() {
            0 => epoll::IN,
            n if n >= LOCAL_READ_PAUSE => epoll::OUT,
            _ => epoll::IN | epoll::OUT,
        }
    }
}

/// The requests one wake-up of the lane found. The wake-up itself showed
/// no stop; a job may have run long enough for one to come since, so each
/// further job looks first (a flag the stop's trigger or signal sets: no
/// system call between jobs).
struct Batch<'a> {
    stop: &'a Wakeup,
    ran: bool,
    /// A stop was seen between two jobs: the lane closes now.
    stopping: bool,
}

impl Batch<'_> {
    /// Whether the next request may run: false once a stop was requested.
    fn may_run(&mut self) -> bool {
        if self.ran && self.stop.ever_triggered() {
            self.stopping = true;
            return false;
        }
        self.ran = true;
        true
    }
}

/// The caller whose job runs, as the pulse thread needs it.
struct Watched {
    fd: std::os::fd::RawFd,
    clean: bool,
    job_id: u64,
}

/// The answer to one message from a caller, framed to be sent (or what of
/// it the pulse did not send when it answered `TIMEOUT`); `Err` for bytes
/// that are no request at all.
fn answer(frames: &[&[u8]], jobs: &LaneJobs<'_>, cancelled: &AtomicBool, caller: Watched) -> Result<Vec<u8>, String> {
    let pid = jobs.pid;
    let request = match parse(frames, jobs.service) {
        Parsed::Job(request) => request,
        Parsed::Refused { id, status, why } => return Ok(reply(pid, id, status, why.as_bytes(), false)),
        Parsed::Malformed(why) => return Err(why),
    };
    let headers: Vec<(&str, &str)> = match HeaderIter::new(request.headers).collect() {
        Ok(headers) => headers,
        Err(e) => return Ok(reply(pid, request.id, Status::BadRequest, e.to_string().as_bytes(), false)),
    };
    let size: usize = frames.iter().map(|f| f.len()).sum();
    if size > jobs.max_message_bytes {
        let why =
            format!("request of {size} bytes is over the broker's --max-message-bytes {}", jobs.max_message_bytes);
        return Ok(reply(pid, request.id, Status::BadRequest, why.as_bytes(), false));
    }
    let (outcome, timed_out) = {
        let Some(_turn) = jobs.link.handler.take_unless_stuck() else {
            // Not run: the client sends it to the broker, which waits for a free worker.
            let why = b"this worker's handler is stuck past --timeout";
            return Ok(reply(pid, request.id, Status::NoWorker, why, false));
        };
        // Only what the pulse's watch reads, and only with a limit to watch.
        if jobs.watched {
            let summary = headers.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
            *Link::lock(&jobs.link.lane_running) = Some(LaneRunning {
                started: std::time::Instant::now(),
                request_id: request.id,
                job_id: caller.job_id,
                fd: caller.fd,
                clean: caller.clean,
                headers: summary,
                thread: crate::sys::current_thread(),
                timed_out: None,
            });
        }
        if jobs.poke_pulse {
            // The pulse sleeps up to a heartbeat: it looks at this job now.
            jobs.link.timer.set(std::time::Duration::from_micros(1));
        }
        let outcome = jobs.plugin.handle_job(headers.iter().copied(), request.data, caller.job_id, cancelled);
        let finished = jobs.watched.then(|| Link::lock(&jobs.link.lane_running).take()).flatten();
        (outcome, finished.and_then(|r| r.timed_out))
    };
    jobs.link.lane_jobs.fetch_add(1, Ordering::Relaxed);
    // A broker's job came meanwhile and went back (busy elsewhere): the job
    // thread tells that broker we are free.
    if jobs.link.peers.iter().any(|p| p.owes_ready.load(Ordering::Acquire)) {
        jobs.link.lane_free.trigger();
    }
    if let Some((bytes, sent)) = timed_out {
        return Ok(bytes[sent..].to_vec());
    }
    Ok(match outcome {
        Ok(out) if out.len().saturating_add(COMMAND_LEN + 4) > jobs.max_message_bytes => {
            let why = crate::worker::wire::oversized_result(out.len(), jobs.max_message_bytes);
            reply(pid, request.id, Status::HandlerError, why.as_bytes(), false)
        }
        Ok(out) => reply(pid, request.id, Status::Ok, &out, request.inline),
        Err(why) => reply(pid, request.id, Status::HandlerError, why.as_bytes(), request.inline),
    })
}

#[cfg(test)]
mod tests;

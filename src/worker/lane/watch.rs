//! The pulse thread's watch over the job a lane runs, as over the broker's:
//! past `--timeout` its caller is answered `TIMEOUT` and the lane thread's
//! stack is logged; past `--hard-timeout` the worker exits to be replaced.
//!
//! The lane thread is inside the handler meanwhile, so it writes nothing to
//! the caller's connection: the pulse writes the answer there itself, on
//! a connection that had nothing else waiting to go out. What the socket
//! did not take is queued by the lane thread once the handler returns
//! (before anything else), so the stream stays whole.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::protocol::Status;
use crate::syscall;
use crate::worker::{stackdump, Link, WorkerOptions, EXIT_STUCK};

/// The job a lane's handler runs, as the pulse thread sees it.
pub(in crate::worker) struct LaneRunning {
    pub started: Instant,
    /// The caller's request id, for its answer.
    pub request_id: u64,
    pub job_id: u64,
    /// The caller's connection; open while the handler runs (the lane
    /// thread, which owns it, is in the handler).
    pub fd: RawFd,
    /// Nothing else waited to go out on it: the pulse may write there.
    pub clean: bool,
    /// `name=value` pairs, for the log.
    pub headers: String,
    pub thread: libc::pthread_t,
    /// The `TIMEOUT` answer, once made, and how much of it the socket took.
    pub timed_out: Option<(Vec<u8>, usize)>,
}

/// How long until the lane's job reaches its next limit, if one runs.
pub(in crate::worker) fn next_limit(link: &Link, options: &WorkerOptions) -> Option<Duration> {
    let lane = Link::lock(&link.lane_running);
    let r = lane.as_ref()?;
    let soft = options.timeout.filter(|_| r.timed_out.is_none());
    let now = Instant::now();
    [soft, options.hard_timeout].into_iter().flatten().map(|l| (r.started + l).saturating_duration_since(now)).min()
}

/// Acts on the lane's job if it passed a limit.
pub(in crate::worker) fn check(link: &Link, options: &WorkerOptions) {
    let mut lane = Link::lock(&link.lane_running);
    let Some(r) = lane.as_mut() else { return };
    let elapsed = r.started.elapsed();
    if let Some(hard) = options.hard_timeout.filter(|h| elapsed >= *h) {
        tracing::error!(
            job_id = r.job_id,
            "a lane's handler still running after {hard:?}: exiting so the worker is replaced"
        );
        drop(lane);
        if let Ok(sockets) = link.sockets.try_lock() {
            let _ = link.flush_held(&sockets);
            let _ = link.unregister(&sockets);
        }
        std::process::exit(EXIT_STUCK);
    }
    let Some(limit) = options.timeout.filter(|t| elapsed >= *t && r.timed_out.is_none()) else { return };
    let pid = std::process::id();
    let message = format!("job timed out after {limit:?} in worker {pid}");
    let bytes = super::wire::reply(pid, r.request_id, Status::Timeout, message.as_bytes(), true);
    // SAFETY (the send below): fd is the caller's open connection (see LaneRunning::fd); the
    // pointer and length describe `bytes`. Non-blocking: what is not taken
    // now is queued by the lane thread.
    let sent = match r.clean {
        true => unsafe { syscall!(send(r.fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)) }
            .map_or(0, |n| n as usize),
        false => 0,
    };
    r.timed_out = Some((bytes, sent));
    // The brokers' jobs go back (busy elsewhere) until the handler returns.
    link.handler.set_stuck();
    let (job_id, headers, thread) = (r.job_id, r.headers.clone(), r.thread);
    drop(lane);
    let stack = match stackdump::capture(thread) {
        Some(ips) => stackdump::symbolize(&ips),
        None => "  (the lane thread did not answer the stack dump signal)\n".into(),
    };
    tracing::error!(
        job_id,
        "a lane's job timed out after {limit:?}; headers: [{headers}]; lane thread stack:\n{stack}"
    );
}

//! The pulse thread: while a job runs (and only then, the job thread owns the
//! sockets otherwise) it heartbeats the brokers, unregisters on a stop request,
//! answers `TIMEOUT` for a handler that outlives `--timeout` with a stack dump
//! in the log, and ends the process if the handler is still stuck at the hard
//! limit, so a supervisor can replace it. It also sends results held for
//! coalescing once they fall due while a job runs, and, serving several
//! brokers, gives back within [`ELSEWHERE_SWEEP`] a job another broker sent
//! meanwhile, so that job does not wait behind this one.

use super::socket::BrokerSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::wire::{is_job, send_result};
use super::{send, stackdump, FromBroker, Link, WorkerOptions, EXIT_STUCK};
use crate::protocol::{decode_request_tail, Command, CommandFrame, ResultTail, Status, RETURN_ELSEWHERE};
use crate::wakeup::Wakeup;

/// Serving several brokers, how often a running job's pulse looks for jobs
/// other brokers sent meanwhile (they are given back, the worker being busy):
/// the longest such a job waits before another worker may take it.
const ELSEWHERE_SWEEP: Duration = Duration::from_millis(10);

/// While a long job runs (one that has run this long, or any job of a
/// worker whose jobs take this long), how often the pulse reads what the
/// broker sent: a cancel reaches the handler, and a job asked back for a
/// higher one goes back, within about this. Short jobs are not swept: the
/// job thread reads their broker's messages between jobs.
pub(super) const CONTROL_SWEEP: Duration = Duration::from_millis(5);

pub(super) fn run(link: &Link, shutdown: &Wakeup, options: &WorkerOptions) {
    let interval = options.heartbeat_interval;
    let mut items = [shutdown.poll_item(), link.timer.poll_item()];
    let mut last_beat = Instant::now();
    let mut stopping = false;
    loop {
        // Wake for the next heartbeat or the job's next limit, whichever is first.
        // Idle, the job thread does all the talking: just wake once per interval.
        let running = Link::lock(&link.running).clone();
        let mut wait = interval;
        if let Some(r) = &running {
            wait = interval.saturating_sub(last_beat.elapsed());
            if link.peers.len() > 1 {
                wait = wait.min(ELSEWHERE_SWEEP);
            }
            if link.long_jobs.load(Ordering::Relaxed) || r.started.elapsed() >= CONTROL_SWEEP {
                wait = wait.min(CONTROL_SWEEP);
            }
            for limit in [options.timeout.filter(|_| !r.timed_out), options.hard_timeout].into_iter().flatten() {
                wait = wait.min((r.started + limit).saturating_duration_since(Instant::now()));
            }
        }
        if let Some(limit) = super::lane::next_limit(link, options) {
            wait = wait.min(limit);
        }
        // Held results due while the job thread was between jobs (the timer fired then).
        if let Some(due) = Link::lock(&link.held).due() {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        // Once a stop is seen the pipe stays readable: sleep instead of polling it.
        if stopping {
            std::thread::sleep(wait.min(Duration::from_millis(20)));
        } else {
            let woke = crate::wakeup::poll(&mut items, wait.as_millis() as i64 + 1);
            stopping = woke.is_err() || items[0].is_readable();
            if items[1].is_readable() {
                link.timer.clear();
            }
        }
        let stop = stopping;
        // Jobs can still run while the job thread leaves (one that crossed the
        // DISCONNECT): keep heartbeating until it is done.
        if link.finished.load(Ordering::Acquire) {
            return;
        }
        super::lane::watch(link, options);
        if Link::lock(&link.running).is_none() {
            continue;
        }
        // The job thread takes the sockets back only when its job is over.
        let Ok(sockets) = link.sockets.try_lock() else { continue };
        // Read again now: the job thread changes `running` only while it holds
        // the socket, so this copy is the job actually in progress.
        let Some(running) = Link::lock(&link.running).clone() else { continue };
        if Link::lock(&link.held).due().is_some_and(|due| due <= Instant::now()) {
            let _ = link.flush_held(&sockets);
        }
        if stop && !link.unregistered.load(Ordering::Acquire) {
            let _ = link.unregister(&sockets);
            tracing::info!("stop requested: unregistered, finishing the current job");
        }
        if last_beat.elapsed() >= interval {
            for socket in sockets.iter() {
                let lane_jobs = link.lane_jobs.load(Ordering::Relaxed);
                let _ = send(socket, CommandFrame::new(Command::Heartbeat, lane_jobs, 0, b""), None);
            }
            last_beat = Instant::now();
        }
        for (i, socket) in sockets.iter().enumerate() {
            while let Some(frames) = recv(socket) {
                link.heard(i);
                match frames.first().map(|f| CommandFrame::decode(f)) {
                    Some(Ok(cmd)) if cmd.command == Command::Disconnect => link.on_disconnect(i),
                    Some(Ok(cmd)) if cmd.command == Command::CancelJob => link.on_cancel(&sockets, i, cmd.id),
                    Some(Ok(cmd)) if cmd.command == Command::Recall => link.on_recall(&sockets, i, cmd.id),
                    // Another broker's job: we are busy, it goes back at once
                    // and that broker waits for our READY.
                    Some(Ok(cmd)) if cmd.command == Command::Job && i != running.origin => {
                        give_back(socket, frames, RETURN_ELSEWHERE);
                        link.peers[i].owes_ready.store(true, Ordering::Release);
                    }
                    // A job given ahead: the job thread runs it next, unless the
                    // current handler is stuck, then the broker gets it back.
                    Some(Ok(cmd)) if cmd.command == Command::Job => {
                        if Link::lock(&link.running).as_ref().is_some_and(|r| r.timed_out) {
                            give_back(socket, frames, 0);
                        } else {
                            Link::lock(&link.stash).push_back((i, frames));
                        }
                    }
                    _ => {}
                }
            }
        }
        let elapsed = running.started.elapsed();
        if let Some(limit) = options.timeout.filter(|t| elapsed >= *t && !running.timed_out) {
            time_out(link, &sockets, &running, limit);
        }
        if let Some(hard) = options.hard_timeout.filter(|h| elapsed >= *h) {
            tracing::error!(
                job_id = running.job_id,
                "handler still running after {hard:?}: exiting so the worker is replaced"
            );
            let _ = link.flush_held(&sockets);
            let _ = link.unregister(&sockets);
            std::process::exit(EXIT_STUCK);
        }
        if stop {
            // The stop is noted; keep heartbeating until the job ends.
            std::thread::sleep(interval.min(Duration::from_millis(100)));
        }
    }
}

/// Answers the job `TIMEOUT` (the worker stays busy: tail flag 1) and logs
/// where the handler is stuck.
fn time_out(link: &Link, sockets: &[BrokerSocket], running: &super::Running, limit: Duration) {
    // The lane sends its callers to the broker until the handler returns.
    link.handler.set_stuck();
    let _ = link.flush_held(sockets);
    if let Some(r) = Link::lock(&link.running).as_mut().filter(|r| r.job_id == running.job_id) {
        r.timed_out = true;
    }
    let message = format!("job timed out after {limit:?} in worker {}", std::process::id());
    let tail = ResultTail { still_busy: true, run_us: None };
    let socket = &sockets[running.origin];
    let _ = send_result(socket, running.job_id, Status::Timeout, tail, message.into_bytes().into());
    // Jobs given ahead would wait behind the stuck handler: hand them back.
    let stashed: Vec<FromBroker> = Link::lock(&link.stash).drain(..).collect();
    let (jobs, others): (Vec<_>, Vec<_>) = stashed.into_iter().partition(|(_, f)| is_job(f));
    Link::lock(&link.stash).extend(others);
    for (origin, frames) in jobs {
        // Another broker's job goes back as busy elsewhere, or that broker
        // would send it straight back (its READY follows once we are free).
        let arg = if origin == running.origin { 0 } else { RETURN_ELSEWHERE };
        give_back(&sockets[origin], frames, arg);
        if arg != 0 {
            link.peers[origin].owes_ready.store(true, Ordering::Release);
        }
    }
    let stack = match stackdump::capture(link.job_thread) {
        Some(ips) => stackdump::symbolize(&ips),
        None => "  (the job thread did not answer the stack dump signal)\n".into(),
    };
    tracing::error!(
        job_id = running.job_id,
        "job timed out after {limit:?}; headers: [{}]; job thread stack:\n{stack}",
        running.headers
    );
}

fn recv(socket: &BrokerSocket) -> Option<Vec<zmq::Message>> {
    let mut frames = Vec::new();
    socket.recv_frames(&mut frames).ok().filter(|&got| got).map(|_| frames)
}

/// `RETURN`s a job the worker will not run: always headers in the command
/// frame and data in a frame of its own, whichever form the `JOB` had.
pub(super) fn give_back(socket: &BrokerSocket, frames: Vec<zmq::Message>, arg: u32) {
    give_back_for(socket, frames, arg, "the handler is stuck");
}

/// [`give_back`], saying `why` in the log (unless busy elsewhere, which is routine).
pub(super) fn give_back_for(socket: &BrokerSocket, frames: Vec<zmq::Message>, arg: u32, why: &str) {
    let mut frames = frames.into_iter();
    let Some(head) = frames.next() else { return };
    let Ok(cmd) = CommandFrame::decode(&head) else { return };
    let (headers, data): (&[u8], zmq::Message) = match (cmd.data, frames.next()) {
        (Some(inline), None) => match decode_request_tail(cmd.tail) {
            Ok((_, headers)) => (headers, inline.into()),
            Err(_) => return,
        },
        (None, Some(data)) => (cmd.tail, data),
        _ => return,
    };
    let _ = super::wire::send(socket, CommandFrame::new(Command::Return, cmd.id, arg, headers), Some(data));
    if arg & RETURN_ELSEWHERE != 0 {
        tracing::debug!(job_id = cmd.id, "job given back: busy with another broker's job");
    } else {
        tracing::info!(job_id = cmd.id, "job given back to the broker: {why}");
    }
}

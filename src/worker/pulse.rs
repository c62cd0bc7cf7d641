//! The pulse thread: while a job runs (and only then, the job thread owns the
//! socket otherwise) it heartbeats the broker, unregisters on a stop request,
//! answers `TIMEOUT` for a handler that outlives `--timeout` with a stack dump
//! in the log, and ends the process if the handler is still stuck at the hard
//! limit, so a supervisor can replace it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{send, stackdump, Link, WorkerOptions, EXIT_STUCK};
use crate::protocol::{Command, CommandFrame, Status};
use crate::shutdown::Shutdown;

pub(super) fn run(link: &Link, shutdown: &Shutdown, options: &WorkerOptions) {
    let interval = options.heartbeat_interval;
    let mut items = [shutdown.poll_item()];
    let mut last_beat = Instant::now();
    loop {
        // Wake for the next heartbeat or the job's next limit, whichever is first.
        let running = Link::lock(&link.running).clone();
        let mut wait = interval.saturating_sub(last_beat.elapsed());
        if let Some(r) = &running {
            for limit in [options.timeout.filter(|_| !r.timed_out), options.hard_timeout].into_iter().flatten() {
                wait = wait.min((r.started + limit).saturating_duration_since(Instant::now()));
            }
        }
        let stop = crate::shutdown::poll(&mut items, wait.as_millis() as i64 + 1).map(|n| n > 0).unwrap_or(true);
        let Some(running) = Link::lock(&link.running).clone() else {
            if stop {
                return;
            }
            continue;
        };
        // The job thread takes the socket back only when its job is over.
        let Ok(socket) = link.socket.try_lock() else { continue };
        if stop && !link.unregistered.load(Ordering::Acquire) {
            let _ = link.unregister(&socket);
            tracing::info!("stop requested: unregistered, finishing the current job");
        }
        if last_beat.elapsed() >= interval {
            let _ = send(&socket, CommandFrame::new(Command::Heartbeat, 0, 0, b""), None);
            last_beat = Instant::now();
        }
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            link.heard();
            match frames.first().map(|f| CommandFrame::decode(f)) {
                Some(Ok(cmd)) if cmd.command == Command::Disconnect => {
                    let flag = if link.unregistered.load(Ordering::Acquire) { &link.acked } else { &link.reregister };
                    flag.store(true, Ordering::Release);
                }
                Some(Ok(cmd)) if cmd.command == Command::Job => {
                    // Never happens with our broker (it only sends to idle workers).
                    let frame = CommandFrame::new(Command::Result, cmd.id, Status::BadRequest as u32, b"");
                    let _ = send(&socket, frame, Some(b"worker busy".to_vec().into()));
                }
                _ => {}
            }
        }
        let elapsed = running.started.elapsed();
        if let Some(limit) = options.timeout.filter(|t| elapsed >= *t && !running.timed_out) {
            time_out(link, &socket, &running, limit);
        }
        if let Some(hard) = options.hard_timeout.filter(|h| elapsed >= *h) {
            tracing::error!(
                job_id = running.job_id,
                "handler still running after {hard:?}: exiting so the worker is replaced"
            );
            let _ = link.unregister(&socket);
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
fn time_out(link: &Link, socket: &zmq::Socket, running: &super::Running, limit: Duration) {
    if let Some(r) = Link::lock(&link.running).as_mut() {
        r.timed_out = true;
    }
    let message = format!("job timed out after {limit:?} in worker {}", std::process::id());
    let frame = CommandFrame::new(Command::Result, running.job_id, Status::Timeout as u32, &[1]);
    let _ = send(socket, frame, Some(message.into_bytes().into()));
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

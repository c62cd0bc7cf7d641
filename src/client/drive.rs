//! The thread behind [`Client::submit`] over the local transport: one
//! connection with every submitted job in flight on it, each answered (or
//! timed out) on its own. It sleeps on the connection and the submission
//! queue's wake-up together, so a new job goes out at once however many wait.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::request_frames;
use super::local::{DIAL_FIRST, DIAL_MAX};
use super::mux::Outcome;
use super::submit::{Queue, Submission, Token};
use super::{Client, Route};
use crate::error::Error;
use crate::local::Conn;
use crate::protocol::{Command, CommandFrame};

/// A job sent and not yet answered.
struct Sent {
    timeout: Duration,
    done: Arc<Token>,
}

/// Runs until the client is gone and every job it submitted is answered.
pub(super) fn run(client: &Client, queue: &Queue) {
    let Route::Local(local) = &client.route else { unreachable!("started for a local client only") };
    let wake = queue.wake.as_ref().expect("a local driver's queue has a wake-up");
    let mut unsent: VecDeque<Submission> = VecDeque::new();
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    // Deadlines of the jobs sent, earliest first (answered ones are skipped).
    let mut deadlines: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut conn: Option<Conn> = None;
    let (mut next_dial, mut pause) = (Instant::now(), DIAL_FIRST);
    let finish = |s: Sent, outcome: Outcome| s.done.finish(client.result(outcome, s.timeout, &client.endpoint));
    loop {
        wake.clear();
        let closed = queue.take_all(&mut unsent);
        if closed && unsent.is_empty() && sent.is_empty() {
            return;
        }
        let now = Instant::now();
        if conn.is_none() && !unsent.is_empty() && now >= next_dial {
            match local.try_dial() {
                Ok(Some(c)) => (conn, pause) = (Some(c), DIAL_FIRST),
                Ok(None) => (next_dial, pause) = (now + pause, (pause * 2).min(DIAL_MAX)),
                Err(e) => {
                    // Refused for good (another user's broker): every waiting job says so.
                    for s in unsent.drain(..) {
                        s.done.finish(Err(clone_refusal(&e)));
                    }
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            for s in unsent.drain(..) {
                let left = s.deadline.saturating_duration_since(now);
                if left.is_zero() {
                    s.done.finish(Err(Error::Timeout(s.timeout)));
                    continue;
                }
                let id = local.next_id();
                // Cancelled while it waited here: never sent.
                if !s.done.sending(Some(id)) {
                    continue;
                }
                let frames = request_frames(id, s.job, left);
                let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                c.queue(&parts);
                deadlines.push(Reverse((s.deadline, id)));
                sent.insert(id, Sent { timeout: s.timeout, done: s.done });
            }
        }
        // Unsent past their deadline: no broker could be reached in time.
        if unsent.iter().any(|s| s.deadline <= now) {
            let (late, waiting): (VecDeque<_>, _) = unsent.drain(..).partition(|s| s.deadline <= now);
            unsent = waiting;
            for s in late {
                s.done.finish(Err(client.unreachable(s.timeout)));
            }
        }
        while let Some(&Reverse((deadline, id))) = deadlines.peek() {
            if sent.contains_key(&id) && deadline > now {
                break;
            }
            deadlines.pop();
            if let Some(s) = sent.remove(&id) {
                finish(s, Outcome::Timeout);
            }
        }
        let until = deadlines.peek().map(|Reverse((d, _))| *d);
        let until = match unsent.iter().map(|s| s.deadline).min() {
            Some(first) if conn.is_none() => Some(until.map_or(next_dial, |u| u.min(next_dial)).min(first)),
            _ => until,
        };
        // Cancelled after they went: the broker is told; their answers
        // (given already) are not awaited.
        for id in queue.take_cancels() {
            if sent.remove(&id).is_some() {
                if let Some(c) = conn.as_mut() {
                    c.queue(&[&CommandFrame::new(Command::Cancel, id, 0, b"").encode()]);
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            let ms = until.map_or(-1, |u| u.saturating_duration_since(now).as_micros().div_ceil(1000) as i64);
            let mut items = [wake.poll_item()];
            // An error polling our own pipe leaves nothing to do but look again.
            let _ = crate::wakeup::poll(&mut items, ms);
            continue;
        };
        let broken = local.pump(c, until, Some(wake), |id, reply| {
            if let Some(s) = sent.remove(&id) {
                finish(s, Outcome::Reply(reply));
            }
        });
        if broken {
            // The broker went: what was in flight may have run (it cannot say).
            conn = None;
            for (_, s) in sent.drain() {
                finish(s, Outcome::Lost);
            }
            deadlines.clear();
        }
    }
}

/// The error for each job when the broker refuses this user (errors are not `Clone`).
fn clone_refusal(e: &Error) -> Error {
    match e {
        Error::LocalRefused { endpoint } => Error::LocalRefused { endpoint: endpoint.clone() },
        other => Error::BadFlag(other.to_string()),
    }
}

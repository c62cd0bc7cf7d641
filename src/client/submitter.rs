//! The threads behind [`Client::submit`]: the local driver's one (see
//! [`super::drive`]), or over ZeroMQ a pool that runs each job on its own
//! thread, through a client of their own.

use std::sync::Arc;
use std::time::Instant;

use super::job::request_frames;
use super::submit::{Queue, Submission};
use super::{Client, Route};
use crate::error::{Error, Result};
use crate::wakeup::Wakeup;

/// Threads that run submitted jobs over ZeroMQ, each one at a time.
pub const ZMQ_SUBMITTERS: usize = 32;

/// The client's submitting side: its queue, and the thread(s) that empty it
/// through a client of their own (the same brokers and credentials).
pub(super) struct Submitter {
    pub queue: Arc<Queue>,
}

impl Submitter {
    pub fn start(client: &Client) -> Result<Submitter> {
        let own = Client::connect_many(&client.endpoints(), client.curve.as_ref())?;
        if let Route::Local(_) = own.route {
            let queue = Arc::new(Queue::waking(Wakeup::new()?));
            let q = Arc::clone(&queue);
            spawn("powerhose-submit", move || super::drive::run(&own, &q))?;
            return Ok(Submitter { queue });
        }
        let queue = Arc::new(Queue::default());
        let own = Arc::new(own);
        let _ = queue.zmq.set(Arc::clone(&own));
        for _ in 0..ZMQ_SUBMITTERS {
            let (q, own) = (Arc::clone(&queue), Arc::clone(&own));
            spawn("powerhose-submit", move || {
                while let Some(s) = q.take_one() {
                    run_one(&own, s);
                }
            })?;
        }
        Ok(Submitter { queue })
    }
}

/// Runs one submitted job over ZeroMQ on this thread. On a single broker's
/// connection it goes under an id the job's [`super::Cancel`] knows, so a
/// cancel can name it to the broker.
fn run_one(own: &Client, s: Submission) {
    let left = s.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return s.done.finish(Err(Error::Timeout(s.timeout)));
    }
    let result = match &own.route {
        Route::One(mux) => {
            let id = mux.next_id();
            // Cancelled while it waited here: never sent.
            if !s.done.sending(Some(id)) {
                return;
            }
            let frames = request_frames(id, s.job, left);
            mux.call(vec![(id, frames)], s.deadline)
                .map(|outcomes| outcomes.into_iter().next().expect("one outcome"))
                .and_then(|outcome| own.result(outcome, s.timeout, &own.endpoint))
        }
        _ => {
            if !s.done.sending(None) {
                return;
            }
            own.execute(s.job, left)
        }
    };
    s.done.finish(result.map_err(|e| match e {
        // The caller's timeout, not what was left of it.
        Error::Timeout(_) => Error::Timeout(s.timeout),
        e => e,
    }));
}

impl Drop for Submitter {
    /// Jobs already submitted still get their answers; then the thread ends.
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| Error::io("starting the client's submitting thread")(e))
}

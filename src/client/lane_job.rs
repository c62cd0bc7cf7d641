//! One job for a local broker: framed once, into the caller thread's own
//! buffer, and sent to a worker's lane if one takes it (see [`super::lanes`]),
//! to the broker otherwise.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::job::{append_local_request, job_retries, request_frames, with_retries};
use super::lanes::LaneOutcome;
use super::local::Local;
use super::mux::Outcome;
use super::JobRequest;
use crate::protocol::LANE_EXIT_WAIT;

/// Requests longer than this leave their buffer to be freed, not kept.
const KEPT_REQUEST_BUFFER: usize = 64 * 1024;

thread_local! {
    /// Each caller thread's request bytes: framed here, sent from here.
    static REQUEST: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl super::Client {
    /// One job for a local broker: to a worker's lane if one takes it, to
    /// the broker otherwise.
    pub(super) fn local_job(
        &self,
        local: &Local,
        job: &JobRequest,
        timeout: Duration,
        deadline: Instant,
    ) -> crate::error::Result<Outcome> {
        let id = local.next_id();
        let mut job = Cow::Borrowed(job);
        if let Some(lane) = local.lanes.pick(&job.service, Instant::now()) {
            let outcome = REQUEST.with_borrow_mut(|request| {
                request.clear();
                append_local_request(request, id, &job, timeout);
                let outcome = lane.call(id, request, deadline);
                if request.capacity() > KEPT_REQUEST_BUFFER {
                    *request = Vec::new();
                }
                outcome
            });
            match outcome {
                LaneOutcome::Reply(reply) => return Ok(Outcome::Reply(reply)),
                LaneOutcome::Timeout => return Ok(Outcome::Timeout),
                LaneOutcome::NotRun => {}
                LaneOutcome::Lost => {
                    // A dying process closes its sockets one by one: until its
                    // broker connection is closed too, the broker counts it
                    // idle (its job was the lane's) and would give it the
                    // retry, or this caller's next job.
                    lane.wait_exit((Instant::now() + LANE_EXIT_WAIT).min(deadline));
                    match job_retries(&job) {
                        0 => return Ok(Outcome::Reply(lane.lost_reply())),
                        left => job = Cow::Owned(with_retries(job.into_owned(), left - 1)),
                    }
                }
            }
        }
        let frames = request_frames(id, job.into_owned(), timeout);
        Ok(local.call(vec![(id, frames)], deadline)?.into_iter().next().expect("one outcome"))
    }
}

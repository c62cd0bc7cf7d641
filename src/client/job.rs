//! What a client sends (a [`JobRequest`]) and Powerhose's timeout policy for
//! handlers that are slow while they warm up ([`TimeoutPolicy`]).

use std::collections::HashMap;
use std::time::Duration;

use crate::local::frame::append_frame;
use crate::protocol::{append_request, encode_headers, encode_request_tail, Command, CommandFrame, INLINE_MAX};

/// One job: data, headers and the service that should run it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRequest {
    /// The service to run it; empty means "the only one there is".
    pub service: String,
    /// Name–value pairs the handler sees in this order (names may repeat).
    pub headers: Vec<(String, String)>,
    /// The payload, passed to the handler untouched.
    pub data: Vec<u8>,
}

impl JobRequest {
    /// A job with this data, no headers, for the only service there is.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        JobRequest { data: data.into(), ..Default::default() }
    }

    /// Adds a header (after those already set).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The service to run the job; empty means "the only one there is".
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Its priority, 0 (lowest) to 9 (higher is taken as 9; the default is
    /// 5): the broker dispatches higher levels first, each level in order,
    /// and lifts a waiting job a level per 100 ms so none is starved (the
    /// `priority` header, as on Powerhose 0.7's front).
    pub fn priority(self, level: u8) -> Self {
        self.header("priority", level.to_string())
    }

    /// Lets the broker re-send the job up to `n` times if its worker dies.
    /// Only for idempotent jobs: a worker may die after doing the work.
    pub fn retry(self, n: u32) -> Self {
        self.header("retry", n.to_string())
    }
}

impl From<Vec<u8>> for JobRequest {
    fn from(data: Vec<u8>) -> Self {
        JobRequest::new(data)
    }
}

impl From<&[u8]> for JobRequest {
    fn from(data: &[u8]) -> Self {
        JobRequest::new(data)
    }
}

impl From<String> for JobRequest {
    fn from(data: String) -> Self {
        JobRequest::new(data.into_bytes())
    }
}

impl From<&str> for JobRequest {
    fn from(data: &str) -> Self {
        JobRequest::new(data.as_bytes())
    }
}

/// Powerhose's timeout policy: an answer later than `timeout` but within
/// `max_overflow` is accepted, unless the same worker has now been late more
/// than `overflows` times in a row; later than `max_overflow` is a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// The answer is on time within this.
    pub timeout: Duration,
    /// The longest the client waits; a late answer within it may still be accepted.
    pub max_overflow: Duration,
    /// Late answers in a row accepted from one worker before the next is a timeout.
    pub overflows: u32,
}

impl Default for TimeoutPolicy {
    /// Powerhose's defaults: 5 s, up to 7.5 s, one late answer in a row.
    fn default() -> Self {
        TimeoutPolicy { timeout: Duration::from_secs(5), max_overflow: Duration::from_millis(7500), overflows: 1 }
    }
}

/// Late answers in a row, per worker pid.
#[derive(Debug, Default)]
pub(crate) struct LateCounts(HashMap<u32, u32>);

impl LateCounts {
    /// Whether an answer from `pid` after `elapsed` is accepted under `policy`.
    pub(crate) fn accept(&mut self, policy: &TimeoutPolicy, pid: u32, elapsed: Duration) -> bool {
        if elapsed <= policy.timeout {
            self.0.remove(&pid);
            return true;
        }
        if elapsed > policy.max_overflow {
            return false;
        }
        let late = self.0.entry(pid).or_insert(0);
        *late += 1;
        *late <= policy.overflows
    }
}

/// The retries a job allows (its last `retry` header), 0 without one.
pub(super) fn job_retries(job: &JobRequest) -> u32 {
    job.headers.iter().rev().find(|(n, _)| n == "retry").and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(0)
}

/// The job with its `retry` header set to `n` (unchanged if it has none to lower).
pub(super) fn with_retries(mut job: JobRequest, n: u32) -> JobRequest {
    if let Some((_, v)) = job.headers.iter_mut().rev().find(|(name, _)| name == "retry") {
        *v = n.to_string();
    }
    job
}

/// A timeout as a request carries it: in ms, at least 1.
fn timeout_ms(timeout: Duration) -> u32 {
    timeout.as_millis().clamp(1, u32::MAX as u128) as u32
}

pub(super) fn request_frames(id: u64, job: JobRequest, timeout: Duration) -> Vec<zmq::Message> {
    let timeout_ms = timeout_ms(timeout);
    let headers = encode_headers(job.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let tail = encode_request_tail(&job.service, &headers);
    let frame = CommandFrame::new(Command::Request, id, timeout_ms, &tail);
    if job.data.len() <= INLINE_MAX {
        return vec![frame.with_data(&job.data).message()];
    }
    vec![frame.message(), job.data.into()]
}

/// Appends the request, framed for a local connection, to `out`: the
/// message [`request_frames`] gives, encoded in one pass where it is sent from.
pub(super) fn append_local_request(out: &mut Vec<u8>, id: u64, job: &JobRequest, timeout: Duration) {
    let headers = job.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let (service, ms) = (job.service.as_str(), timeout_ms(timeout));
    if job.data.len() <= INLINE_MAX {
        append_frame(out, false, |o| append_request(o, id, ms, service, headers, Some(&job.data)));
    } else {
        append_frame(out, true, |o| append_request(o, id, ms, service, headers, None));
        append_frame(out, false, |o| o.extend_from_slice(&job.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_answers_are_accepted_up_to_the_overflow_count_per_worker() {
        let policy =
            TimeoutPolicy { timeout: Duration::from_secs(1), max_overflow: Duration::from_secs(2), overflows: 1 };
        let mut counts = LateCounts::default();
        let late = Duration::from_millis(1500);
        assert!(counts.accept(&policy, 7, late), "first late answer is accepted");
        assert!(!counts.accept(&policy, 7, late), "second in a row is a timeout");
        assert!(counts.accept(&policy, 8, late), "counted per worker");
        assert!(counts.accept(&policy, 7, Duration::from_millis(10)), "on time resets");
        assert!(counts.accept(&policy, 7, late));
        assert!(!counts.accept(&policy, 9, Duration::from_secs(3)), "past the maximum is always a timeout");
    }

    #[test]
    fn a_local_request_is_its_frames_encoded() {
        let small = JobRequest::new("d").service("s").header("a", "1");
        let big = JobRequest::new(vec![9u8; INLINE_MAX + 1]).header("retry", "1");
        for job in [small, big] {
            let frames = request_frames(5, job.clone(), Duration::from_millis(2500));
            let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let mut want = Vec::new();
            crate::local::frame::encode_into(&mut want, &parts);
            let mut out = Vec::new();
            append_local_request(&mut out, 5, &job, Duration::from_millis(2500));
            assert_eq!(out, want);
        }
    }

    #[test]
    fn job_builder() {
        let job = JobRequest::new("d").service("s").header("a", "1").retry(2);
        assert_eq!(job.service, "s");
        assert_eq!(job.headers, [("a".to_string(), "1".to_string()), ("retry".to_string(), "2".to_string())]);
    }
}

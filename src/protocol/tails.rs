//! What command frames carry past their fixed 16 bytes, per command: the
//! `REQUEST` tail (service, headers), the `JOB` arg's backlog bit, the
//! `RESULT` tail, a worker's `READY` registration and a `CONTROL` request.

use crate::error::{Error, Result};

/// A request to the supervisor of a `powerhose` cluster (`CONTROL` tail).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Control {
    /// Replace every worker, one at a time, loading the plugin afresh.
    Reload,
    /// Run `workers` workers, or change the count by `delta`.
    Scale {
        /// The number of workers to run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workers: Option<usize>,
        /// How many workers to add (positive) or retire (negative).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<i64>,
    },
}

/// The tail of a `REQUEST`: service name, then headers.
pub fn encode_request_tail(service: &str, headers: &[u8]) -> Vec<u8> {
    let mut tail = Vec::with_capacity(2 + service.len() + headers.len());
    append_service(&mut tail, service);
    tail.extend_from_slice(headers);
    tail
}

/// Appends the start of a `REQUEST` tail, the service name, to `out`.
pub fn append_service(out: &mut Vec<u8>, service: &str) {
    let len = u16::try_from(service.len()).expect("service name under 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(service.as_bytes());
}

/// Splits a `REQUEST` tail into the service name and the encoded headers.
pub fn decode_request_tail(tail: &[u8]) -> Result<(&str, &[u8])> {
    let bad = |why: &str| Error::Protocol(format!("REQUEST tail {why}"));
    let len = u16::from_le_bytes(tail.get(..2).ok_or_else(|| bad("shorter than 2 bytes"))?.try_into().expect("2 bytes"))
        as usize;
    let service = tail.get(2..2 + len).ok_or_else(|| bad("truncated in the service name"))?;
    let service = std::str::from_utf8(service).map_err(|_| bad("has a service name that is not UTF-8"))?;
    Ok((service, &tail[2 + len..]))
}

/// Bit 31 of a `JOB`'s arg: other jobs are waiting at the broker.
pub const JOB_BACKLOG: u32 = 1 << 31;

/// A `JOB`'s arg from the time left (capped at 2^31 - 1 ms, about 24 days) and the backlog flag.
pub fn job_arg(timeout_ms: u32, backlog: bool) -> u32 {
    timeout_ms.min(JOB_BACKLOG - 1) | if backlog { JOB_BACKLOG } else { 0 }
}

/// Splits a `JOB`'s arg into the ms left and the backlog flag.
pub fn split_job_arg(arg: u32) -> (u32, bool) {
    (arg & !JOB_BACKLOG, arg & JOB_BACKLOG != 0)
}

/// The tail of a `RESULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResultTail {
    /// The job timed out but its handler still runs: the worker stays busy.
    pub still_busy: bool,
    /// How long the handler ran, in µs (absent from workers that do not say).
    pub run_us: Option<u32>,
}

impl ResultTail {
    /// The tail's bytes and how many of them to send (1, or 5 with a run time).
    pub fn encode(self) -> ([u8; 5], usize) {
        let mut bytes = [u8::from(self.still_busy), 0, 0, 0, 0];
        match self.run_us {
            Some(us) => {
                bytes[1..].copy_from_slice(&us.to_le_bytes());
                (bytes, 5)
            }
            None => (bytes, 1),
        }
    }

    /// Total: bytes it does not understand are ignored.
    pub fn decode(tail: &[u8]) -> Self {
        ResultTail {
            still_busy: tail.first().is_some_and(|f| f & 1 != 0),
            run_us: tail.get(1..5).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        }
    }
}

/// What a worker says about itself in `READY`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    /// The service the worker serves (its plugin's name unless overridden).
    pub service: String,
    /// The worker's process id on its host.
    pub pid: u32,
    /// The worker's host name.
    pub host: String,
    /// The name its plugin exports.
    pub plugin: String,
    /// The version its plugin exports.
    pub plugin_version: String,
    /// Under backlog the worker may hold a finished result this long (µs),
    /// to send several together; the broker gives it that much more work ahead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub coalesce_us: u64,
    /// The worker reads inline `JOB`s (and answers them inline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Registration {
    /// The `READY` tail: the registration as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("registration serialises")
    }

    /// Reads a `READY` tail; JSON that does not fit is an [`Error::Protocol`].
    pub fn decode(tail: &[u8]) -> Result<Self> {
        serde_json::from_slice(tail).map_err(|e| Error::Protocol(format!("bad READY registration: {e}")))
    }
}

//! What the broker reports about itself (`STATUS`): a typed snapshot shared by
//! the broker, the client library and `powerhose-broker --status`.

use serde::{Deserialize, Serialize};

/// The broker's state at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The broker's process id (what `ping` returns).
    pub pid: u32,
    /// The broker's powerhose version.
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_s: f64,
    /// The endpoint clients connect to.
    pub frontend: String,
    /// The endpoint workers connect to.
    pub backend: String,
    /// One entry per service a worker has registered for, in order of first registration.
    pub services: Vec<ServiceStatus>,
    /// Jobs waiting for a service's first worker to register.
    #[serde(default)]
    pub waiting_for_workers: usize,
    /// Bytes (headers and data) that waiting jobs hold, against `--max-queue-bytes`.
    #[serde(default)]
    pub queued_bytes: usize,
    /// Every registered worker, including those leaving; empty unless asked
    /// by an operator or over ipc (a client sees the counts in `services`).
    pub workers: Vec<WorkerStatus>,
    /// How the jobs it answered ended, since it started.
    pub counters: Counters,
    /// Broker-side latency of answered jobs, from receipt to reply.
    pub latency_ms: Latency,
    /// Whether tcp endpoints take CURVE keys only (`--curve-secret`).
    #[serde(default)]
    pub curve: bool,
    /// Whether the broker was allowed to serve the network in plaintext (`--insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// Peers refused, by the role they failed to get.
    #[serde(default)]
    pub auth_failures: AuthFailures,
}

/// Peers refused since the broker started, by role. `workers` shows only
/// when asked by an operator or over ipc (see `WorkerStatus`); these counts
/// show to every client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailures {
    /// Front handshakes refused (a key in neither `--allow-clients` nor
    /// `--allow-operators`, or a plaintext peer on a CURVE socket), and
    /// messages from a client whose key was removed since it connected.
    pub clients: u64,
    /// Back handshakes refused and messages from revoked workers.
    pub workers: u64,
    /// Reload and scale requests from peers that are not operators.
    pub operators: u64,
}

/// One service: its workers and its queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's name (its workers' plugin name, unless set otherwise).
    pub name: String,
    /// Workers registered for it now (zero once all have gone: a service is never forgotten).
    pub workers: usize,
    /// Of those, how many wait for a job.
    pub idle: usize,
    /// Jobs waiting in its queue for a worker (at most the broker's `--max-queue`).
    pub queued: usize,
    /// Of those, how many at each priority, 0 to 9 (empty from a broker
    /// before priorities).
    #[serde(default)]
    pub queued_by_priority: Vec<usize>,
}

/// One registered worker, as the broker sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its ZeroMQ identity: host name, pid and random bits.
    pub identity: String,
    /// Its process id on its host, as it registered.
    pub pid: u32,
    /// The host it runs on, as it registered.
    pub host: String,
    /// The service it serves.
    pub service: String,
    /// Its plugin's name.
    pub plugin: String,
    /// Its plugin's version.
    pub plugin_version: String,
    /// `idle`, `busy`, `leaving` (finishing its jobs, then gone) or `stuck`
    /// (a job timed out while its handler still runs).
    pub state: String,
    /// Jobs it has answered since it registered.
    pub jobs_done: u64,
    /// Jobs it holds now (more than one when it is given jobs ahead).
    #[serde(default)]
    pub in_flight: usize,
    /// Milliseconds since the broker last heard from it (any message, heartbeats too).
    pub last_seen_ms: u64,
}

/// Outcome counters since the broker started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Jobs a worker answered with success.
    pub ok: u64,
    /// Jobs a worker answered with an error (the handler failed or panicked).
    pub errors: u64,
    /// Jobs answered `TIMEOUT`, by a worker or by the broker (expired while queued).
    pub timeouts: u64,
    /// Jobs answered `WORKER_LOST`: their worker died or went silent and no retry was left.
    pub lost: u64,
    /// Jobs re-queued after their worker was lost (their `retry` header allowed it).
    pub retried: u64,
    /// Requests refused because the service's queue was full.
    pub busy: u64,
    /// Requests answered `NO_WORKER` (no worker came in time, or the broker was shutting down).
    pub no_worker: u64,
    /// Malformed messages, requests for unknown services, and worker answers to jobs they do not hold.
    pub bad_requests: u64,
    /// Replies dropped because their client did not read them (its pipe was full).
    #[serde(default)]
    pub replies_dropped: u64,
    /// Messages over `--max-message-bytes` (read, refused, answered when possible;
    /// those over the hard cap are dropped by ZeroMQ unread and not counted).
    #[serde(default)]
    pub oversized: u64,
    /// Connections the front or back socket failed to accept (for want of
    /// file descriptors, the endpoint then stops listening for a while).
    #[serde(default)]
    pub accept_failures: u64,
    /// Jobs their clients cancelled: answered `CANCELLED`, waiting or running.
    #[serde(default)]
    pub cancelled: u64,
    /// Of those, jobs a worker was running: it was told, and its answer dropped.
    #[serde(default)]
    pub cancelled_running: u64,
    /// Jobs given ahead that a worker was asked to give back unrun, for a
    /// job of higher priority.
    #[serde(default)]
    pub recalled: u64,
    /// Jobs workers answered on their lanes, straight from local clients
    /// (counted as their heartbeats report them; not in the counters above).
    #[serde(default)]
    pub lane_jobs: u64,
}

/// A latency distribution in milliseconds (about 3% resolution).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// How many jobs were measured.
    pub count: u64,
    /// Median, in ms.
    pub p50: f64,
    /// 90th percentile, in ms.
    pub p90: f64,
    /// 99th percentile, in ms.
    pub p99: f64,
    /// The slowest, in ms.
    pub max: f64,
}

/// A fixed-size log-linear histogram of microseconds (about 3% resolution,
/// up to ~35 minutes): recording never allocates, so it can sit on the hot path.
pub struct Histogram {
    counts: Box<[u64; Histogram::BUCKETS]>,
    total: u64,
    max: u64,
}

impl Histogram {
    const SUB: usize = 32;
    const GROUPS: usize = 32;
    const BUCKETS: usize = Self::SUB * Self::GROUPS;

    /// An empty histogram (one allocation, about 8 KiB).
    pub fn new() -> Self {
        Histogram { counts: Box::new([0; Self::BUCKETS]), total: 0, max: 0 }
    }

    fn bucket(us: u64) -> usize {
        if us < Self::SUB as u64 {
            return us as usize;
        }
        let group = (63 - us.leading_zeros()) as usize - 4; // us >= 32 → group >= 1
        let sub = (us >> (group - 1)) as usize - Self::SUB;
        (group * Self::SUB + sub).min(Self::BUCKETS - 1)
    }

    fn bucket_floor(b: usize) -> u64 {
        let (group, sub) = (b / Self::SUB, b % Self::SUB);
        if group == 0 {
            sub as u64
        } else {
            ((Self::SUB + sub) as u64) << (group - 1)
        }
    }

    /// Counts one value, in microseconds; never allocates.
    pub fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// The value at quantile `q` (0..=1), in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_floor(b).min(self.max);
            }
        }
        self.max
    }

    /// The summary `STATUS` reports, converted to milliseconds.
    pub fn latency(&self) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: self.total,
            p50: ms(self.quantile(0.5)),
            p90: ms(self.quantile(0.9)),
            p99: ms(self.quantile(0.99)),
            max: ms(self.max),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for us in [0u64, 1, 31, 32, 33, 63, 64, 100, 1000, 12_345, 1_000_000, 60_000_000] {
            let b = Histogram::bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let floor = Histogram::bucket_floor(b);
            assert!(floor <= us && us - floor <= us / 16 + 1, "{us} → {floor}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::new();
        for us in 1..=10_000 {
            h.record(us);
        }
        let within = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.04;
        assert!(within(h.quantile(0.5), 5000), "{}", h.quantile(0.5));
        assert!(within(h.quantile(0.99), 9900), "{}", h.quantile(0.99));
        assert_eq!(h.latency().count, 10_000);
        assert_eq!(h.latency().max, 10.0);
    }
}

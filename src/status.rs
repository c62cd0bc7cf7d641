//! What the broker reports about itself (`STATUS`): a typed snapshot shared by
//! the broker, the client library and `powerhose-broker --status`.

use serde::{Deserialize, Serialize};

/// The broker's state at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_s: f64,
    pub frontend: String,
    pub backend: String,
    pub services: Vec<ServiceStatus>,
    /// Jobs waiting for a service's first worker to register.
    #[serde(default)]
    pub waiting_for_workers: usize,
    pub workers: Vec<WorkerStatus>,
    pub counters: Counters,
    /// Broker-side latency of answered jobs, from receipt to reply.
    pub latency_ms: Latency,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub workers: usize,
    pub idle: usize,
    pub queued: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub identity: String,
    pub pid: u32,
    pub host: String,
    pub service: String,
    pub plugin: String,
    pub plugin_version: String,
    /// `idle`, `busy` or `leaving`.
    pub state: String,
    pub jobs_done: u64,
    /// Jobs it holds now (more than one when it is given jobs ahead).
    #[serde(default)]
    pub in_flight: usize,
    pub last_seen_ms: u64,
}

/// Outcome counters since the broker started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub lost: u64,
    pub retried: u64,
    pub busy: u64,
    pub no_worker: u64,
    pub bad_requests: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
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

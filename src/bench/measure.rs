//! The measuring loops: a plugin in-process on N threads (the ideal), and
//! jobs through a broker by concurrent callers or a pipelined stream.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Client, JobRequest};
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;

/// How long a measurement lasts: a time, or a number of jobs.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// Run for this long.
    Time(Duration),
    /// Run this many jobs (in all, across threads).
    Jobs(u64),
}

/// Hands out permission to run one more job, from any thread.
pub struct Budget {
    end: Option<Instant>,
    left: std::sync::atomic::AtomicI64,
}

impl Budget {
    /// A budget starting now.
    pub fn new(limit: Limit) -> Budget {
        match limit {
            Limit::Time(d) => Budget { end: Some(Instant::now() + d), left: i64::MAX.into() },
            Limit::Jobs(n) => Budget { end: None, left: (n as i64).into() },
        }
    }

    /// Whether one more job may run (counts it against a job limit).
    pub fn take(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0,
        }
    }

    /// `take` with the time already read.
    pub fn take_at(&self, now: Instant) -> bool {
        match self.end {
            Some(end) => now < end,
            None => self.left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0,
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Lat {
    /// How many calls were measured.
    pub count: u64,
    /// Median, in µs.
    pub p50_us: f64,
    /// 90th percentile, in µs.
    pub p90_us: f64,
    /// 99th percentile, in µs.
    pub p99_us: f64,
    /// The slowest, in µs.
    pub max_us: f64,
}

/// Jobs per second over a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Rate {
    /// Jobs completed.
    pub jobs: u64,
    /// The run's wall-clock time, in seconds.
    pub secs: f64,
    /// `jobs / secs`.
    pub jobs_per_s: f64,
}

impl Rate {
    pub(super) fn new(jobs: u64, elapsed: Duration) -> Rate {
        Rate { jobs, secs: elapsed.as_secs_f64(), jobs_per_s: jobs as f64 / elapsed.as_secs_f64().max(1e-9) }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

pub(crate) fn lat(h: &Histogram<u64>) -> Lat {
    let q = |q: f64| h.value_at_quantile(q) as f64;
    Lat { count: h.len(), p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99), max_us: h.max() as f64 }
}

/// Runs `f` back to back for `duration`; latency of each call and the rate.
pub fn latency_loop(duration: Duration, mut f: impl FnMut() -> Result<()>) -> Result<(Lat, Rate)> {
    let mut h = histogram();
    let start = Instant::now();
    let end = start + duration;
    let mut t = start;
    while t < end {
        f()?;
        let now = Instant::now();
        h.saturating_record((now - t).as_micros().max(1) as u64);
        t = now;
    }
    Ok((lat(&h), Rate::new(h.len(), start.elapsed())))
}

/// The handler in-process on `threads` threads, each job back to back.
pub fn in_process(plugin: &LoadedPlugin, job: &JobRequest, threads: usize, limit: Limit) -> Result<Rate> {
    let headers: Vec<(&str, &str)> = job.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let start = Instant::now();
    let budget = &Budget::new(limit);
    let counts: Vec<Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let headers = &headers;
                scope.spawn(move || {
                    let mut n = 0u64;
                    while budget.take() {
                        plugin
                            .handle(headers.iter().copied(), &job.data)
                            .map_err(|e| Error::InProcessHandler(e.to_string()))?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let jobs = counts.into_iter().sum::<Result<u64>>()?;
    Ok(Rate::new(jobs, start.elapsed()))
}

/// `callers` threads sharing one client, each running jobs back to back.
pub fn concurrent(client: &Client, job: &JobRequest, callers: usize, limit: Limit) -> (Rate, Lat, u64) {
    let start = Instant::now();
    let budget = &Budget::new(limit);
    let results: Vec<(Histogram<u64>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                scope.spawn(move || {
                    let (mut h, mut errors) = (histogram(), 0);
                    while budget.take() {
                        let t = Instant::now();
                        match client.execute_ref(job, Duration::from_secs(30)) {
                            Ok(_) => h.saturating_record(t.elapsed().as_micros().max(1) as u64),
                            Err(_) => errors += 1,
                        }
                    }
                    (h, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let mut all = histogram();
    let mut errors = 0;
    for (h, e) in results {
        all.add(h).expect("same bounds");
        errors += e;
    }
    (Rate::new(all.len(), start.elapsed()), lat(&all), errors)
}

/// One thread streaming jobs with `window` in flight.
pub fn pipelined(client: &Client, job: &JobRequest, window: usize, limit: Limit) -> Result<(Rate, Lat, u64)> {
    let start = Instant::now();
    let budget = Budget::new(limit);
    // Send times by job index; at most `window` jobs are in flight.
    let sent = RefCell::new(vec![start; window * 2 + 1]);
    let slots = window * 2 + 1;
    // One clock read per job for both the time limit and its send time.
    let jobs = (0..).map_while(|i: usize| {
        let now = Instant::now();
        budget.take_at(now).then(|| {
            sent.borrow_mut()[i % slots] = now;
            job.clone()
        })
    });
    let (mut h, mut errors) = (histogram(), 0u64);
    client.pipeline(jobs, window, Duration::from_secs(30), |i, result| match result {
        Ok(_) => h.saturating_record(sent.borrow()[i % slots].elapsed().as_micros().max(1) as u64),
        Err(_) => errors += 1,
    })?;
    Ok((Rate::new(h.len(), start.elapsed()), lat(&h), errors))
}

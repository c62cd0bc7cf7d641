//! Load from a client host (a network namespace): 4 callers and a
//! pipelined client (window 16) on one `Client` over every front given,
//! recording each answer, its outcome and how far past its timeout it came.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use powerhose::auth::CurveClient;
use powerhose::{Client, JobRequest};

use super::net::Host;
use super::wait_until;

/// Each request's timeout under load.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(4);
/// An answer later than its timeout by more than this is a hang.
pub const SLACK: Duration = Duration::from_millis(500);

/// What a load run saw: answers by outcome, when each came, and the latest
/// answer past its request's timeout.
#[derive(Debug, Default)]
pub struct Seen {
    pub ok: usize,
    pub failed: Vec<String>,
    pub worst_overrun: Duration,
    /// When each successful answer came.
    pub ok_at: Vec<Instant>,
    /// When each failed request was sent, in the order of `failed`.
    pub failed_sent: Vec<Instant>,
}

impl Seen {
    fn record(&mut self, sent: Instant, result: powerhose::Result<Vec<u8>>) {
        let now = Instant::now();
        self.worst_overrun = self.worst_overrun.max(now.duration_since(sent).saturating_sub(JOB_TIMEOUT));
        match result {
            Ok(_) => {
                self.ok += 1;
                self.ok_at.push(now);
            }
            Err(e) => {
                self.failed.push(e.to_string());
                self.failed_sent.push(sent);
            }
        }
    }

    /// The longest stretch without a successful answer between `from` and `to`.
    pub fn longest_gap_between(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self.ok_at.iter().copied().filter(|t| *t >= from && *t <= to).collect();
        times.push(to);
        times.sort();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in times {
            gap = gap.max(t - last);
            last = t;
        }
        gap
    }
}

/// A load running on a client host.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    handle: std::thread::JoinHandle<Seen>,
}

impl Load {
    /// 4 callers and a pipelined client on `host`, over `fronts`, until
    /// [`Load::finish`]; `job` makes each request.
    pub fn start(host: &Host, fronts: Vec<String>, curve: CurveClient, job: fn() -> JobRequest) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let handle = host.enter(move || {
            let client = Arc::new(Client::connect_many(&fronts, Some(&curve)).unwrap());
            client.ping(Duration::from_secs(10)).unwrap();
            let mut threads = Vec::new();
            for _ in 0..4 {
                let (client, stop, seen) = (client.clone(), stop2.clone(), seen2.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let result = client.execute(job(), JOB_TIMEOUT);
                        seen.lock().unwrap().record(sent, result);
                    }
                }));
            }
            let (stop, seen) = (stop2.clone(), seen2.clone());
            threads.push(std::thread::spawn(move || {
                let pipelined = Client::connect_many(&fronts, Some(&curve)).unwrap();
                let sent = Mutex::new(Vec::new());
                let jobs = std::iter::from_fn(|| {
                    (!stop.load(Ordering::Relaxed)).then(|| {
                        sent.lock().unwrap().push(Instant::now());
                        job()
                    })
                });
                pipelined
                    .pipeline(jobs, 16, JOB_TIMEOUT, |i, result| {
                        seen.lock().unwrap().record(sent.lock().unwrap()[i], result)
                    })
                    .unwrap();
            }));
            for t in threads {
                t.join().unwrap();
            }
            std::mem::take(&mut *seen2.lock().unwrap())
        });
        Load { stop, seen, handle }
    }

    /// Waits (bounded) until `n` more answers came in.
    pub fn wait_answers(&self, n: usize) {
        let start = { self.seen.lock().unwrap().ok };
        wait_until(&format!("{n} answers"), Duration::from_secs(10), || self.seen.lock().unwrap().ok >= start + n);
    }

    /// Stops the load and returns what it saw; no answer came later than
    /// its timeout allows.
    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.handle.join().unwrap();
        assert!(seen.worst_overrun <= SLACK, "an answer came {:?} after its timeout", seen.worst_overrun);
        seen
    }
}

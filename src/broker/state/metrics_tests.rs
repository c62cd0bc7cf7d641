//! Unit tests of the per-service figures behind `--metrics`: outcomes,
//! queue wait and run time, queue depth and bytes by priority, workers by
//! state. Driven with explicit instants.

use super::lanes::LEVELS;
use super::tests::{answer, config, job, jobs, reg, Out};
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn snapshot(b: &BrokerState<Vec<u8>>, name: &str) -> ServiceSnapshot {
    b.service_snapshots().into_iter().find(|s| s.name == name).expect("the service is in the snapshot")
}

#[test]
fn buckets_count_each_duration_once_under_its_bound() {
    let mut h = Buckets::default();
    for d in [Duration::ZERO, Duration::from_micros(100), Duration::from_micros(101), ms(3), ms(120_000)] {
        h.record(d);
    }
    assert_eq!(h.count(), 5);
    let got: Vec<(f64, u64)> = h.buckets().filter(|b| b.1 > 0).collect();
    // 0 and 100 µs are ≤ 100 µs; 101 µs ≤ 250 µs; 3 ms ≤ 5 ms; two minutes only under +Inf.
    assert_eq!(got, [(0.0001, 2), (0.00025, 1), (0.005, 1), (f64::INFINITY, 1)]);
    assert!((h.sum_seconds() - 120.003201).abs() < 1e-9, "{}", h.sum_seconds());
}

#[test]
fn outcomes_waits_and_run_times_are_counted_per_service() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(Config { max_queue: 100, ..config() }, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"e", reg("echo", 11), &mut out);
    b.worker_ready(t0, b"c", reg("crypto", 12), &mut out);
    // echo: job 1 runs at once; job 2 waits 30 ms behind it.
    b.submit(t0, "echo", job(1, t0, 10_000, 0), &mut out);
    b.submit(t0, "echo", job(2, t0, 10_000, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    b.worker_result(t0 + ms(30), b"e", answer(first), &mut out);
    let second = jobs(&out)[0].1;
    let failed = Answer { status: Status::HandlerError, ..answer(second) };
    b.worker_result(t0 + ms(33), b"e", failed, &mut out);
    // crypto: one ok, and one for a service nobody serves (a bad request, not an outcome).
    b.submit(t0, "crypto", job(3, t0, 10_000, 0), &mut out);
    let third = jobs(&out).last().unwrap().1;
    b.worker_result(t0 + ms(1), b"c", answer(third), &mut out);
    b.submit(t0, "nobody", job(4, t0, 10_000, 0), &mut out);

    let echo = snapshot(&b, "echo");
    assert_eq!((echo.metrics.count(Outcome::Ok), echo.metrics.count(Outcome::Error)), (1, 1));
    assert_eq!(echo.metrics.queue_wait.count(), 2);
    assert!((echo.metrics.queue_wait.sum_seconds() - 0.030).abs() < 1e-9, "job 2 waited 30 ms");
    assert_eq!(echo.metrics.run.count(), 2);
    assert!((echo.metrics.run.sum_seconds() - 0.033).abs() < 1e-9, "30 ms, then 3 ms");
    let crypto = snapshot(&b, "crypto");
    assert_eq!(crypto.metrics.outcomes, [1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(snapshot(&b, NO_SERVICE).metrics.outcomes, [0; 7], "unknown services are bad requests");
    assert_eq!(b.counters.bad_requests, 1);
}

#[test]
fn broker_made_answers_are_counted_against_their_service() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    // Waiting for a first worker: its expiry is no service's.
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    b.tick(t0 + ms(600), |_| Vitality::Gone, &mut out);
    assert_eq!(snapshot(&b, NO_SERVICE).metrics.count(Outcome::NoWorker), 1);
    let t1 = t0 + ms(600);
    b.worker_ready(t1, b"w", reg("echo", 11), &mut out);
    b.submit(t1, "echo", job(2, t1, 10_000, 0), &mut out);
    b.submit(t1, "echo", job(3, t1, 50, 0), &mut out);
    b.submit(t1, "echo", job(4, t1, 10_000, 0), &mut out);
    b.cancel(b"client", 4, &mut out);
    // The queue holds 4, a client half of it: job 5 waits, job 6 is refused.
    b.submit(t1, "echo", job(5, t1, 10_000, 0), &mut out);
    b.submit(t1, "echo", job(6, t1, 10_000, 0), &mut out);
    b.tick(t1 + ms(60), |_| Vitality::Gone, &mut out);
    b.worker_died(t1 + ms(60), 11, "h", &mut out);
    let echo = snapshot(&b, "echo").metrics;
    let counts: Vec<(&str, u64)> = Outcome::ALL.iter().map(|&o| (o.name(), echo.count(o))).collect();
    assert_eq!(
        counts,
        [("ok", 0), ("error", 0), ("timeout", 1), ("worker_lost", 1), ("busy", 1), ("no_worker", 0), ("cancelled", 1)]
    );
    assert_eq!(echo.run.count(), 0, "no worker answered");
}

#[test]
fn queue_depth_and_bytes_by_priority_and_workers_by_state() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(Config { max_queue: 100, ..config() }, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"busy", reg("echo", 11), &mut out);
    b.worker_ready(t0, b"leaving", reg("echo", 12), &mut out);
    b.worker_ready(t0, b"idle", reg("crypto", 13), &mut out);
    b.submit(t0, "echo", job(1, t0, 10_000, 0), &mut out);
    b.submit(t0, "echo", job(2, t0, 10_000, 0), &mut out);
    // Its job still runs: it leaves once answered.
    b.worker_disconnect(t0, b"leaving", &mut out);
    // Jobs 3 to 5 wait, one at priority 9.
    b.submit(t0, "echo", job(3, t0, 10_000, 0), &mut out);
    b.submit(t0, "echo", Job { priority: 9, ..job(4, t0, 10_000, 0) }, &mut out);
    b.submit(t0, "echo", job(5, t0, 10_000, 0), &mut out);
    let s = snapshot(&b, "echo");
    let default = usize::from(crate::protocol::PRIORITY_DEFAULT);
    let (mut queued, mut bytes) = ([0; LEVELS], [0; LEVELS]);
    (queued[default], queued[9]) = (2, 1);
    (bytes[default], bytes[9]) = (8, 4);
    assert_eq!((s.queued, s.queued_bytes), (queued, bytes), "{out:?}");
    assert_eq!(s.queued_bytes.iter().sum::<usize>(), b.queued_bytes());
    let by_state: Vec<(&str, usize)> = WORKER_STATES.iter().map(|(_, n)| *n).zip(s.workers).collect();
    assert_eq!(by_state, [("idle", 0), ("busy", 1), ("leaving", 1), ("stuck", 0), ("elsewhere", 0)]);
    assert_eq!(snapshot(&b, "crypto").workers, [1, 0, 0, 0, 0]);
}

#[test]
fn a_forgotten_service_keeps_its_counters_and_gets_them_back() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"w", reg("echo", 11), &mut out);
    b.submit(t0, "echo", job(1, t0, 10_000, 0), &mut out);
    let id = jobs(&out)[0].1;
    b.worker_result(t0, b"w", answer(id), &mut out);
    b.worker_disconnect(t0, b"w", &mut out);
    let later = t0 + crate::protocol::SERVICE_FORGET_GRACE + ms(1);
    b.tick(later, |_| Vitality::Gone, &mut out);
    assert_eq!(b.services().count(), 0, "forgotten");
    assert_eq!(snapshot(&b, "echo").metrics.count(Outcome::Ok), 1, "still exported");
    b.worker_ready(later, b"w2", reg("echo", 12), &mut out);
    assert_eq!(snapshot(&b, "echo").metrics.count(Outcome::Ok), 1, "given back");
    assert_eq!(b.service_snapshots().iter().filter(|s| s.name == "echo").count(), 1);
}

#[test]
fn lane_jobs_are_counted_from_each_workers_heartbeat_totals() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"a", reg("echo", 11), &mut out);
    b.worker_ready(t0, b"b", reg("echo", 12), &mut out);
    for (who, total) in [(&b"a"[..], 5), (b"b", 3), (b"a", 9), (b"a", 9), (b"a", 2)] {
        b.worker_lane_jobs(who, total);
    }
    // 9 from a (a lower total later is not taken back), 3 from b.
    assert_eq!(b.counters.lane_jobs, 12);
    b.worker_lane_jobs(b"stranger", 100);
    assert_eq!(b.counters.lane_jobs, 12, "an unknown worker's count is not taken");
    assert_eq!((b.counters.ok, b.counters.errors), (0, 0), "lane jobs are not the broker's outcomes");
}

//! Unit tests of giving busy workers jobs ahead (prefetch) and of the
//! backlog flag that lets workers coalesce their answers.

use super::tests::{answer, config, job, jobs, reg, Out};
use super::*;
use crate::protocol::REQUESTS_WAIT_AHEAD;

/// A broker with prefetch on (2 ms budget) and room for 100 queued jobs.
fn prefetching_broker() -> (Instant, BrokerState<Vec<u8>>, Out) {
    let t0 = Instant::now();
    let config = Config { max_queue: 100, prefetch_budget: Duration::from_millis(2), ..config() };
    (t0, BrokerState::new(config, 1, t0), Out::new())
}

#[test]
fn fast_workers_get_jobs_ahead_slow_ones_one_at_a_time() {
    let (t0, mut b, mut out) = prefetching_broker();
    b.worker_ready(t0, b"fast", reg("echo", 11), &mut out);
    // Unknown speed: one job at a time.
    for id in 1..=3 {
        b.submit(t0, "", job(id, t0, 10_000, 0), &mut out);
    }
    assert_eq!(jobs(&out).len(), 1);
    // Answers 100 µs apart: capacity 1 + 2000/100 = 21, so the rest go ahead.
    let mut t = t0;
    for _ in 0..5 {
        let oldest = jobs(&out)[0].1;
        out.clear();
        t += Duration::from_micros(100);
        b.worker_result(t, b"fast", answer(oldest), &mut out);
        b.submit(t, "", job(100, t, 10_000, 0), &mut out);
        if jobs(&out).len() > 1 {
            break;
        }
    }
    assert!(b.workers(t)[0].in_flight > 1, "a fast worker holds jobs ahead");

    // A slow worker (2 s per job) never holds more than one.
    let (t0, mut b, mut out) = prefetching_broker();
    b.worker_ready(t0, b"slow", reg("echo", 12), &mut out);
    b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
    let first = jobs(&out)[0].1;
    let t1 = t0 + Duration::from_secs(2);
    b.worker_result(t1, b"slow", answer(first), &mut out);
    out.clear();
    for id in 2..=4 {
        b.submit(t1, "", job(id, t1, 60_000, 0), &mut out);
    }
    assert_eq!(jobs(&out).len(), 1, "capacity 1 + 2000/2000000 = 1");
}

#[test]
fn idle_workers_come_before_prefetch_and_returned_jobs_go_first() {
    let (t0, mut b, mut out) = prefetching_broker();
    b.worker_ready(t0, b"a", reg("echo", 11), &mut out);
    // Make "a" fast: one quick answer.
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    let t1 = t0 + Duration::from_micros(50);
    b.worker_result(t1, b"a", answer(jobs(&out)[0].1), &mut out);
    out.clear();
    b.submit(t1, "", job(2, t1, 10_000, 0), &mut out);
    b.worker_ready(t1, b"b", reg("echo", 12), &mut out);
    b.submit(t1, "", job(3, t1, 10_000, 0), &mut out);
    let sent = jobs(&out);
    assert_eq!(b.worker_identity_ok(sent[1].0), b"b", "the idle worker is preferred to prefetching on a");
    // "a" returns job 2 (its handler is stuck): it goes to the next free place first.
    out.clear();
    b.submit(t1, "", job(4, t1, 10_000, 0), &mut out);
    out.clear();
    b.worker_return(t1, b"a", sent[0].1, vec![], b"job2".to_vec(), false, &mut out);
    assert_eq!(jobs(&out)[0].2, b"job2", "the returned job is dispatched before job 4");
}

/// (job id, backlog flag) of every Job output.
fn backlog_flags(out: &Out) -> Vec<(u64, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Job { job_id, backlog, .. } => Some((*job_id, *backlog)),
            _ => None,
        })
        .collect()
}

#[test]
fn jobs_dispatched_while_others_wait_are_flagged_and_reported_run_times_size_the_prefetch() {
    let (t0, mut b, mut out) = prefetching_broker();
    let coalescing = Registration { coalesce_us: 3000, ..reg("echo", 11) };
    b.worker_ready(t0, b"w", coalescing, &mut out);
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    assert_eq!(backlog_flags(&out), [(1, false)], "a lone job is answered at once");
    // The answer says the handler ran 1 ms, although it arrives 10 ms later
    // (held): capacity is 1 + (2 ms budget + 3 ms coalescing) / 1 ms = 6.
    let t1 = t0 + Duration::from_millis(10);
    out.clear();
    let first = Answer { run_us: Some(1000), ..answer(1) };
    b.worker_result(t1, b"w", first, &mut out);
    for id in 2..=9 {
        b.submit(t1, "", job(id, t1, 10_000, 0), &mut out);
    }
    let flags = backlog_flags(&out);
    assert_eq!(flags.len(), 6, "capacity 6: {flags:?}");
    assert!(flags.iter().all(|f| !f.1), "nothing waited at the broker when they left: {flags:?}");
    // Jobs 8 and 9 wait here; when the worker answers, the first sent on is
    // flagged (job 9 still waits), the last is not.
    out.clear();
    b.worker_result(t1, b"w", Answer { run_us: Some(1000), ..answer(flags[0].0) }, &mut out);
    b.worker_result(t1, b"w", Answer { run_us: Some(1000), ..answer(flags[1].0) }, &mut out);
    assert_eq!(backlog_flags(&out).iter().map(|f| f.1).collect::<Vec<_>>(), [true, false]);
}

#[test]
fn requests_may_wait_only_while_every_worker_has_short_jobs_ahead() {
    let (t0, mut b, mut out) = prefetching_broker();
    assert!(!b.requests_may_wait(), "no worker: nothing would wake the broker");
    b.worker_ready(t0, b"a", reg("echo", 11), &mut out);
    assert!(!b.requests_may_wait(), "an idle worker waits for the next request");
    // "a" answers in 100 µs: it may then hold 1 + 2000/100 jobs.
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    let t1 = t0 + Duration::from_micros(100);
    b.worker_result(t1, b"a", answer(jobs(&out)[0].1), &mut out);
    for id in 2..=REQUESTS_WAIT_AHEAD as u64 {
        b.submit(t1, "", job(id, t1, 10_000, 0), &mut out);
    }
    assert_eq!(b.workers(t1)[0].in_flight, REQUESTS_WAIT_AHEAD - 1);
    assert!(!b.requests_may_wait(), "too few jobs ahead: it could run dry");
    b.submit(t1, "", job(100, t1, 10_000, 0), &mut out);
    assert!(b.requests_may_wait(), "every worker has short jobs ahead");
    b.worker_ready(t1, b"b", reg("echo", 12), &mut out);
    assert!(!b.requests_may_wait(), "another worker is idle");

    // Jobs of 1.5 ms may wait too (the broker still reads them within
    // REQUESTS_WAIT_MAX); jobs of 3 ms: a worker that announced 23 ms of
    // coalescing holds several of them, but its next answer may be that far
    // off: requests are read at once.
    for (us, may) in [(1_500, true), (3_000, false)] {
        let (t0, mut b, mut out) = prefetching_broker();
        b.worker_ready(t0, b"slow", Registration { coalesce_us: 23_000, ..reg("echo", 13) }, &mut out);
        b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
        let t1 = t0 + Duration::from_micros(us);
        b.worker_result(t1, b"slow", answer(jobs(&out)[0].1), &mut out);
        for id in 2..=10 {
            b.submit(t1, "", job(id, t1, 60_000, 0), &mut out);
        }
        assert!(b.workers(t1)[0].in_flight >= REQUESTS_WAIT_AHEAD);
        assert_eq!(b.requests_may_wait(), may, "jobs of {us} µs against REQUESTS_WAIT_MAX");
    }
}

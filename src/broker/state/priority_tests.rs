//! Unit tests of priorities: higher levels first, FIFO within a level, and
//! ageing, so a low-priority job is not starved by a steady stream of
//! higher ones. Driven with explicit instants.

use super::tests::{answer, config, job, jobs, reg, Out};
use super::*;
use crate::protocol::{PRIORITY_AGE_STEP, PRIORITY_MAX};

fn prio(req_id: u64, now: Instant, priority: u8) -> Job<Vec<u8>> {
    Job { priority, ..job(req_id, now, 60_000, 0) }
}

/// One busy worker (holding job 0) and room for many jobs from one client.
fn busy() -> (Instant, BrokerState<Vec<u8>>, Out) {
    let t0 = Instant::now();
    let mut b = BrokerState::new(Config { max_queue: 1000, ..config() }, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"w1", reg("echo", 11), &mut out);
    b.submit(t0, "", prio(0, t0, 5), &mut out);
    out.clear();
    (t0, b, out)
}

/// Answers the job the worker holds at `now` and returns the req id of the one it gets next.
fn next(b: &mut BrokerState<Vec<u8>>, now: Instant, out: &mut Out) -> u64 {
    let held = b.workers[0].as_ref().unwrap().jobs.front().unwrap().job_id;
    out.clear();
    b.worker_result(now, b"w1", answer(held), out);
    let given = jobs(out);
    assert_eq!(given.len(), 1, "one job given: {out:?}");
    let job_id = given[0].1;
    b.workers[0].as_ref().unwrap().jobs.iter().find(|j| j.job_id == job_id).unwrap().route.req_id
}

#[test]
fn higher_priorities_go_first_and_each_level_in_order() {
    let (t0, mut b, mut out) = busy();
    for (id, p) in [(1, 2), (2, 9), (3, 5), (4, 9), (5, 0), (6, 5)] {
        b.submit(t0, "", prio(id, t0, p), &mut out);
    }
    let status = b.services().next().unwrap();
    assert_eq!(status.queued_by_priority, vec![1, 0, 1, 0, 0, 2, 0, 0, 0, 2]);
    let order: Vec<u64> = (0..6).map(|_| next(&mut b, t0, &mut out)).collect();
    assert_eq!(order, [2, 4, 3, 6, 1, 5]);
}

#[test]
fn a_waiting_job_rises_a_level_per_age_step() {
    let (t0, mut b, mut out) = busy();
    b.submit(t0, "", prio(1, t0, 0), &mut out);
    // Just short of 9 steps: still below a fresh 9.
    let t1 = t0 + PRIORITY_AGE_STEP * u32::from(PRIORITY_MAX) - Duration::from_millis(1);
    b.submit(t1, "", prio(2, t1, 9), &mut out);
    assert_eq!(next(&mut b, t1, &mut out), 2);
    // At 9 steps it ties with a fresh 9, and was received first.
    let t2 = t0 + PRIORITY_AGE_STEP * u32::from(PRIORITY_MAX);
    b.submit(t2, "", prio(3, t2, 9), &mut out);
    assert_eq!(next(&mut b, t2, &mut out), 1);
    assert_eq!(next(&mut b, t2, &mut out), 3);
}

#[test]
fn under_a_steady_stream_of_top_priority_jobs_a_low_one_waits_a_bounded_time() {
    let (t0, mut b, mut out) = busy();
    b.submit(t0, "", prio(1, t0, 0), &mut out);
    // The worker takes 10 ms a job; two top-priority jobs arrive per job done.
    let tick = Duration::from_millis(10);
    let mut now = t0;
    let mut id = 100;
    let waited = loop {
        for _ in 0..2 {
            b.submit(now, "", prio(id, now, 9), &mut out);
            id += 1;
        }
        now += tick;
        if next(&mut b, now, &mut out) == 1 {
            break now - t0;
        }
        assert!(now - t0 < Duration::from_secs(10), "starved");
    };
    // Ageing lifts it to the top after 9 steps; it then goes before every
    // top-level job received after it (the ones before it are served first).
    let bound = PRIORITY_AGE_STEP * u32::from(PRIORITY_MAX) + tick;
    assert!(waited <= bound, "waited {waited:?}, bound {bound:?}");
    assert!(waited >= PRIORITY_AGE_STEP * u32::from(PRIORITY_MAX) - tick, "too early: {waited:?}");
}

#[test]
fn a_job_waiting_again_goes_first_of_its_level() {
    let (t0, mut b, mut out) = busy();
    b.submit(t0, "", prio(1, t0, 5), &mut out);
    b.submit(t0, "", prio(2, t0, 7), &mut out);
    // The worker hands its job (req 0, priority 5) back unrun: first of level 5, after level 7.
    let held = b.workers[0].as_ref().unwrap().jobs.front().unwrap().job_id;
    out.clear();
    b.worker_return(t0, b"w1", held, b"h".to_vec(), b"job0".to_vec(), false, &mut out);
    let order: Vec<u64> = (0..2).map(|_| next(&mut b, t0, &mut out)).collect();
    assert_eq!(order, [0, 1]);
}

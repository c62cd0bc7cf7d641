//! Unit tests of giving back for priority: a job of higher priority that
//! would wait behind lower ones a worker holds ahead (prefetch) has them
//! asked back, each once and only while young. Explicit instants.

use super::tests::{answer, config, job, jobs, reg, Out};
use super::*;
use crate::protocol::PRIORITY_AGE_STEP;

fn prio(req_id: u64, now: Instant, priority: u8) -> Job<Vec<u8>> {
    Job { priority, ..job(req_id, now, 60_000, 0) }
}

fn recalls(out: &Out) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Recall { job_id, .. } => Some(*job_id),
            _ => None,
        })
        .collect()
}

/// One worker measured at 100 µs a job with a 2 ms budget (it may hold 21),
/// running job 0 at the returned instant.
fn fast(max_queue: usize, budget: Duration) -> (Instant, BrokerState<Vec<u8>>, Out) {
    let t0 = Instant::now();
    let config = Config { max_queue, prefetch_budget: budget, ..config() };
    let mut b = BrokerState::new(config, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"w1", reg("echo", 11), &mut out);
    let mut t = t0;
    for id in 0..5 {
        b.submit(t, "", prio(100 + id, t, 5), &mut out);
        let held = jobs(&out).last().unwrap().1;
        t += Duration::from_micros(100);
        out.clear();
        b.worker_result(t, b"w1", answer(held), &mut out);
    }
    b.submit(t, "", prio(0, t, 5), &mut out);
    out.clear();
    (t, b, out)
}

fn held_req_ids(b: &BrokerState<Vec<u8>>) -> Vec<u64> {
    b.workers[0].as_ref().unwrap().jobs.iter().map(|j| j.route.req_id).collect()
}

#[test]
fn a_higher_job_given_ahead_has_the_lower_ones_before_it_asked_back() {
    let (t, mut b, mut out) = fast(100, Duration::from_millis(2));
    b.submit(t, "", prio(1, t, 5), &mut out);
    b.submit(t, "", prio(2, t, 5), &mut out);
    assert_eq!(held_req_ids(&b), [0, 1, 2], "both given ahead");
    assert!(recalls(&out).is_empty(), "equal levels ask nothing back");
    let job_of = |b: &BrokerState<Vec<u8>>, req| {
        b.workers[0].as_ref().unwrap().jobs.iter().find(|j| j.route.req_id == req).unwrap().job_id
    };
    let (low, mid) = (job_of(&b, 1), job_of(&b, 2));
    out.clear();
    b.submit(t, "", prio(3, t, 9), &mut out);
    assert_eq!(recalls(&out), [low, mid], "the running job is never asked back");
    // They come back unrun (RETURN) and go behind the high one.
    for job_id in [low, mid] {
        b.worker_return(t, b"w1", job_id, vec![], vec![], false, &mut out);
    }
    let order = held_req_ids(&b);
    assert_eq!(order, [0, 3, 1, 2], "the high job first, then the others in their order");
    assert_eq!(b.counters.recalled, 2);
    // A second higher job does not ask back what was asked back once.
    out.clear();
    b.submit(t, "", prio(4, t, 9), &mut out);
    assert_eq!(recalls(&out).len(), 2, "the re-given jobs are new in-flight entries: asked once more");
}

#[test]
fn a_higher_job_that_must_wait_asks_for_lower_ones_back() {
    // One job ahead at most (budget 100 µs: capacity 2).
    let (t, mut b, mut out) = fast(100, Duration::from_micros(100));
    b.submit(t, "", prio(1, t, 1), &mut out);
    assert_eq!(held_req_ids(&b), [0, 1]);
    out.clear();
    b.submit(t, "", prio(2, t, 9), &mut out);
    assert!(jobs(&out).is_empty(), "no room: it waits");
    assert_eq!(recalls(&out).len(), 1);
    let low = recalls(&out)[0];
    b.worker_return(t, b"w1", low, vec![], vec![], false, &mut out);
    assert_eq!(held_req_ids(&b), [0, 2], "the high job took the place");
}

#[test]
fn jobs_that_waited_an_age_step_are_not_asked_back() {
    let (t, mut b, mut out) = fast(100, Duration::from_millis(2));
    b.submit(t, "", prio(1, t, 1), &mut out);
    out.clear();
    let later = t + PRIORITY_AGE_STEP;
    b.submit(later, "", prio(2, later, 9), &mut out);
    assert!(recalls(&out).is_empty(), "an old low job is left where it is: it waited long enough");
    // Equal priorities never ask anything back.
    b.submit(later, "", prio(3, later, 9), &mut out);
    assert!(recalls(&out).is_empty());
}

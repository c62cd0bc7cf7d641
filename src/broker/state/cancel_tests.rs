//! Unit tests of cancelling: a waiting job leaves its queue, a held one is
//! answered at once and its worker told, and nothing is answered twice.

use super::tests::{answer, broker, job, jobs, replies};
use super::*;

fn cancels(out: &[Output<Vec<u8>>]) -> Vec<(usize, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cancel { worker, job_id } => Some((*worker, *job_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_waiting_job_is_taken_out_and_answered_cancelled() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    let held = jobs(&out)[0].1;
    out.clear();
    assert!(b.queued_bytes() > 0);
    b.cancel(b"client", 2, &mut out);
    assert_eq!(replies(&out), [(2, Status::Cancelled)]);
    assert!(cancels(&out).is_empty(), "no worker held it");
    assert_eq!(b.queued_bytes(), 0, "what it held is credited back");
    assert_eq!((b.counters.cancelled, b.counters.cancelled_running), (1, 0));
    // When the worker is free, the cancelled job is not what it gets.
    out.clear();
    b.worker_result(t0, b"w1", answer(held), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    assert!(jobs(&out).is_empty());
}

#[test]
fn a_running_job_is_answered_at_once_its_worker_told_and_its_answer_dropped() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 3), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    let held = jobs(&out)[0].1;
    out.clear();
    b.cancel(b"client", 1, &mut out);
    assert_eq!(replies(&out), [(1, Status::Cancelled)]);
    assert_eq!(cancels(&out), [(0, held)]);
    assert_eq!((b.counters.cancelled, b.counters.cancelled_running), (1, 1));
    // A second cancel of the same request does nothing.
    out.clear();
    b.cancel(b"client", 1, &mut out);
    assert!(out.is_empty(), "{:?}", replies(&out));
    // The worker's answer is dropped; the worker is free: job 2 goes to it.
    b.worker_result(t0, b"w1", answer(held), &mut out);
    assert!(replies(&out).is_empty(), "no second answer");
    assert_eq!(jobs(&out).iter().map(|j| j.2.clone()).collect::<Vec<_>>(), [b"job2".to_vec()]);
    assert_eq!(b.counters.ok, 0, "a dropped answer is not counted as served");
}

#[test]
fn a_cancelled_job_is_neither_retried_nor_answered_again_when_its_worker_dies() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    b.submit(t0, "", job(1, t0, 1000, 3), &mut out);
    out.clear();
    b.cancel(b"client", 1, &mut out);
    out.clear();
    b.worker_disconnect(t0, b"w1", &mut out);
    assert!(replies(&out).is_empty() && jobs(&out).is_empty(), "not retried, not answered WorkerLost");
    assert_eq!(b.counters.retried, 0);
}

#[test]
fn other_clients_requests_and_answered_ones_are_left_alone() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    let held = jobs(&out)[0].1;
    out.clear();
    b.cancel(b"stranger", 1, &mut out);
    assert!(out.is_empty(), "another client's request 1 is not this one");
    b.worker_result(t0, b"w1", answer(held), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    out.clear();
    b.cancel(b"client", 1, &mut out);
    assert!(out.is_empty(), "answered already: nothing more");
    assert_eq!(b.counters.cancelled, 0);
}

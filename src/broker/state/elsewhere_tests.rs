//! Unit tests of workers that serve several brokers: a job given back as
//! "busy elsewhere" goes to another worker, and the worker gets nothing
//! until it says it is free (`READY`).

use super::tests::{broker, job, jobs, reg};
use super::*;

#[test]
fn a_worker_busy_elsewhere_gets_nothing_until_ready_and_its_job_goes_on() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    // w1 is running another broker's job: it gives ours back.
    b.worker_return(t0, b"w1", first, vec![], b"job1".to_vec(), true, &mut out);
    assert!(jobs(&out).is_empty(), "not sent back to the worker that returned it");
    assert_eq!(b.workers(t0)[0].state, "elsewhere");
    assert_eq!(b.services().next().unwrap().queued, 1, "the job waits, first in line");
    // Heartbeats keep it alive without making it free.
    let t1 = t0 + Duration::from_millis(50);
    b.worker_heartbeat(t1, b"w1", &mut out);
    assert!(jobs(&out).is_empty());
    // Another worker comes: it takes the returned job at once.
    b.worker_ready(t1, b"w2", reg("echo", 12), &mut out);
    let sent = jobs(&out);
    assert_eq!((sent.len(), sent[0].2.as_slice()), (1, b"job1".as_slice()));
    assert_eq!(b.worker_identity_ok(sent[0].0), b"w2");
    out.clear();
    // w1 is free again: READY, and the next job is its.
    b.worker_ready(t1, b"w1", reg("echo", 11), &mut out);
    assert_eq!(b.workers(t1)[0].state, "idle");
    b.submit(t1, "", job(2, t1, 1000, 0), &mut out);
    let sent = jobs(&out);
    assert_eq!(b.worker_identity_ok(sent[0].0), b"w1");
}

#[test]
fn a_plain_return_leaves_the_worker_free_and_a_leaving_one_is_not_revived() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    b.worker_disconnect(t0, b"w1", &mut out);
    b.worker_return(t0, b"w1", first, vec![], b"job1".to_vec(), true, &mut out);
    assert!(b.workers(t0).is_empty(), "a leaving worker that holds nothing is gone, busy elsewhere or not");
    assert!(!b.by_identity.contains_key(b"w1".as_slice()));
}

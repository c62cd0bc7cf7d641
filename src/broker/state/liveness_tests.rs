//! Unit tests of how silent workers are judged: by heartbeats alone over
//! tcp, by their process when local (ipc), with explicit instants and a
//! probe standing in for `/proc`.

use super::tests::{answer, broker, job, jobs, reg, replies, Out};
use super::*;

const MS: Duration = Duration::from_millis(1);

/// A broker (test config: 100-ms heartbeats, liveness 3) with local worker
/// "w1" (pid 11) holding job 1, which allows no retry.
fn local_worker_holding_a_job() -> (Instant, BrokerState<Vec<u8>>, Out, u64) {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.worker_is_local(b"w1", 11);
    b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
    let job_id = jobs(&out)[0].1;
    out.clear();
    (t0, b, out, job_id)
}

#[test]
fn a_starved_local_worker_keeps_its_job_while_its_process_runs() {
    let (t0, mut b, mut out, job_id) = local_worker_holding_a_job();
    // Silent for 10 liveness windows minus a little: it runs, so it stays.
    let mut t = t0 + 300 * MS;
    while t < t0 + 2_990 * MS {
        b.tick(t, |pid| if pid == 11 { Vitality::Running } else { Vitality::Gone }, &mut out);
        assert!(replies(&out).is_empty(), "nothing answered at {:?}", t - t0);
        t += 100 * MS;
    }
    assert_eq!(b.workers(t)[0].state, "busy");
    // Heard again: its answer goes through.
    b.worker_result(t, b"w1", answer(job_id), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    assert_eq!(b.counters.lost, 0);
}

#[test]
fn a_local_worker_whose_process_is_gone_or_hung_is_dropped() {
    for (vitality, why) in [(Vitality::Gone, "the worker process died"), (Vitality::Hung, "heartbeats")] {
        let (t0, mut b, mut out, _) = local_worker_holding_a_job();
        b.tick(t0 + 299 * MS, |_| panic!("not silent yet: no probe"), &mut out);
        b.tick(t0 + 300 * MS, |_| vitality, &mut out);
        let answers: Vec<_> = out.iter().filter(|o| matches!(o, Output::Reply { .. })).collect();
        match answers[..] {
            [Output::Reply { status: Status::WorkerLost, body: Body::Text(text), .. }] => {
                assert!(text.contains(why), "{vitality:?}: {text}")
            }
            ref other => panic!("{vitality:?}: {other:?}"),
        }
        assert!(b.workers(t0).is_empty());
    }
}

#[test]
fn a_local_worker_that_runs_but_never_talks_is_dropped_at_the_backstop() {
    let (t0, mut b, mut out, _) = local_worker_holding_a_job();
    let limit = t0 + 300 * MS * LOCAL_SILENCE_LIMIT;
    let mut t = t0 + 300 * MS;
    while t <= limit {
        b.tick(t, |_| Vitality::Running, &mut out);
        t += 100 * MS;
    }
    assert_eq!(replies(&out), [(1, Status::WorkerLost)]);
}

#[test]
fn a_remote_worker_is_judged_by_heartbeats_alone() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
    out.clear();
    b.tick(t0 + 300 * MS, |_| panic!("a remote worker's process is not looked at"), &mut out);
    assert_eq!(replies(&out), [(1, Status::WorkerLost)]);
}

#[test]
fn a_worker_registering_again_keeps_the_jobs_it_holds() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
    let job_id = jobs(&out)[0].1;
    out.clear();
    // It thought the broker gone (our heartbeats were late) and says READY again.
    b.worker_ready(t0 + 10 * MS, b"w1", reg("echo", 11), &mut out);
    assert!(replies(&out).is_empty(), "no job answered for a READY from the same process");
    assert_eq!(b.workers(t0)[0].state, "busy");
    b.worker_result(t0 + 20 * MS, b"w1", answer(job_id), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    assert_eq!(b.workers(t0)[0].state, "idle");
    assert_eq!(b.services().next().unwrap().idle, 1, "idle once, not twice");
}

/// Test config: 500-ms grace. Job 2 waits behind job 1 from t0; the
/// worker dies at 400 ms (job 1 lost).
fn a_worker_dies_with_a_job_queued_behind() -> (Instant, BrokerState<Vec<u8>>, Out) {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 60_000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 60_000, 0), &mut out);
    b.worker_died(t0 + 400 * MS, 11, "h", &mut out);
    out.clear();
    (t0, b, out)
}

#[test]
fn a_job_queued_behind_a_worker_that_dies_waits_the_whole_grace_for_its_replacement() {
    let (t0, mut b, mut out) = a_worker_dies_with_a_job_queued_behind();
    b.tick(t0 + 600 * MS, |_| Vitality::Gone, &mut out);
    assert!(replies(&out).is_empty(), "the grace counts from when the last worker left, not from the queueing");
    // Its replacement was slow to start, but in time.
    b.worker_ready(t0 + 800 * MS, b"w2", reg("echo", 12), &mut out);
    assert_eq!(jobs(&out).len(), 1, "the replacement gets job 2");
    // With no replacement at all, the job is answered once the grace is over.
    let (t0, mut b, mut out) = a_worker_dies_with_a_job_queued_behind();
    b.tick(t0 + 900 * MS, |_| Vitality::Gone, &mut out);
    assert_eq!(replies(&out), [(2, Status::NoWorker)]);
}

//! Unit tests of the routing rules, driven with explicit instants.

use super::*;

pub(super) type Out = Vec<Output<Vec<u8>>>;

pub(super) fn reg(service: &str, pid: u32) -> Registration {
    Registration {
        service: service.into(),
        pid,
        host: "h".into(),
        plugin: service.into(),
        plugin_version: "1".into(),
        coalesce_us: 0,
        inline: false,
    }
}

pub(super) fn job(req_id: u64, now: Instant, timeout_ms: u64, retries: u32) -> Job<Vec<u8>> {
    Job {
        route: ClientRoute { identity: b"client".to_vec(), req_id, legacy: false },
        headers: vec![],
        data: format!("job{req_id}").into_bytes(),
        deadline: now + Duration::from_millis(timeout_ms),
        retries,
        priority: crate::protocol::PRIORITY_DEFAULT,
        received: now,
        inline: false,
    }
}

impl BrokerState<Vec<u8>> {
    pub(super) fn worker_identity_ok(&self, slot: usize) -> &[u8] {
        self.worker_identity(slot).expect("outputs name live workers")
    }
}

/// A broker (test config) with these echo workers registered at `t0`.
pub(super) fn broker(workers: &[(&[u8], u32)]) -> (Instant, BrokerState<Vec<u8>>, Out) {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    for (identity, pid) in workers {
        b.worker_ready(t0, identity, reg("echo", *pid), &mut out);
    }
    (t0, b, out)
}

pub(super) fn config() -> Config {
    Config {
        // A client may hold half: 2 jobs.
        max_queue: 4,
        heartbeat_interval: Duration::from_millis(100),
        liveness: 3,
        no_worker_grace: Duration::from_millis(500),
        prefetch_budget: Duration::ZERO,
        max_queue_bytes: 1 << 20,
        max_timeout: Duration::from_secs(3600),
        default_service: None,
    }
}

/// (worker slot, job id, data) of every Job output.
pub(super) fn jobs(out: &Out) -> Vec<(usize, u64, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Job { worker, job_id, data, .. } => Some((*worker, *job_id, data.clone())),
            _ => None,
        })
        .collect()
}

/// A worker's plain `OK` answer to `job_id`.
pub(super) fn answer(job_id: u64) -> Answer<Vec<u8>> {
    Answer { job_id, status: Status::Ok, still_busy: false, run_us: None, body: vec![], inline: false }
}

/// (req id, status) of every Reply output.
pub(super) fn replies(out: &Out) -> Vec<(u64, Status)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { route, status, .. } => Some((route.req_id, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn jobs_go_to_the_oldest_idle_worker_and_wait_when_all_are_busy() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    b.submit(t0, "echo", job(2, t0, 1000, 0), &mut out);
    b.submit(t0, "echo", job(3, t0, 1000, 0), &mut out);
    let sent = jobs(&out);
    assert_eq!(
        sent.iter().map(|j| (j.0, j.2.clone())).collect::<Vec<_>>(),
        [(0, b"job1".to_vec()), (1, b"job2".to_vec())]
    );
    out.clear();
    // w2 finishes first: it gets job 3, and job 2's reply carries w2's pid.
    b.worker_result(
        t0,
        b"w2",
        Answer {
            job_id: sent[1].1,
            status: Status::Ok,
            still_busy: false,
            run_us: None,
            body: b"r2".to_vec(),
            inline: false,
        },
        &mut out,
    );
    assert!(matches!(&out[0], Output::Reply { route, pid: 12, status: Status::Ok, .. } if route.req_id == 2));
    assert_eq!(jobs(&out)[0].0, 1);
    assert_eq!(b.counters.ok, 1);
    assert_eq!(b.latency.latency().count, 1);
    let workers = b.workers(t0);
    assert_eq!(
        workers.iter().map(|w| (w.pid, w.state.as_str(), w.jobs_done)).collect::<Vec<_>>(),
        [(11, "busy", 0), (12, "busy", 1)]
    );
}

#[test]
fn full_queue_answers_busy_at_once() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    for id in 1..=4 {
        b.submit(t0, "", job(id, t0, 1000, 0), &mut out);
    }
    // One dispatched, two queued (max_queue 2), the fourth refused.
    assert_eq!(jobs(&out).len(), 1);
    assert_eq!(replies(&out), [(4, Status::Busy)]);
}

#[test]
fn expired_queued_jobs_are_answered_and_never_dispatched() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 50, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    let t1 = t0 + Duration::from_millis(60);
    assert!(b.next_deadline(t0) <= t0 + QUEUE_CHECK);
    b.tick(t1, |_| Vitality::Gone, &mut out);
    assert_eq!(replies(&out), [(2, Status::Timeout)]);
    out.clear();
    b.worker_result(t1, b"w1", answer(first), &mut out);
    assert!(jobs(&out).is_empty(), "the expired job must not run");
    assert_eq!(b.counters.timeouts, 1);
}

#[test]
fn a_silent_worker_is_dropped_and_its_job_answered_or_retried() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 10_000, 1), &mut out);
    out.clear();
    // Both go silent; a third worker appears and keeps heartbeating.
    let t1 = t0 + Duration::from_millis(200);
    b.worker_ready(t1, b"w3", reg("echo", 13), &mut out);
    let t2 = t0 + Duration::from_millis(301);
    b.tick(t2, |_| Vitality::Gone, &mut out);
    assert_eq!(replies(&out), [(1, Status::WorkerLost)]);
    let retried = jobs(&out);
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].2, b"job2");
    assert_eq!(b.worker_identity_ok(retried[0].0), b"w3");
    assert_eq!((b.counters.lost, b.counters.retried), (1, 1));
    // A heartbeat from a forgotten worker asks it to register again.
    out.clear();
    b.worker_heartbeat(t2, b"w1", &mut out);
    assert!(matches!(&out[0], Output::Disconnect { identity } if identity == b"w1"));
}

#[test]
fn a_disconnecting_worker_finishes_its_job_and_gets_no_new_one() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    let first = jobs(&out)[0].1;
    b.worker_disconnect(t0, b"w1", &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })), "no ack while it holds a job");
    out.clear();
    b.worker_result(t0, b"w1", answer(first), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    assert!(jobs(&out).is_empty());
    assert!(matches!(out.last(), Some(Output::Disconnect { identity }) if identity == b"w1"), "ack after the job");
    let s = b.services().next().unwrap();
    assert_eq!((s.name.as_str(), s.workers, s.idle, s.queued), ("echo", 0, 0, 1));
    // With no worker left, the queued job gets NoWorker after the grace period.
    out.clear();
    b.tick(t0 + Duration::from_millis(499), |_| Vitality::Gone, &mut out);
    assert!(replies(&out).is_empty());
    b.tick(t0 + Duration::from_millis(500), |_| Vitality::Gone, &mut out);
    assert_eq!(replies(&out), [(2, Status::NoWorker)]);
}

#[test]
fn services_route_separately_and_unknown_ones_fail_at_once() {
    let (t0, mut b, mut out) = broker(&[]);
    // Before any worker exists, jobs wait in limbo.
    b.submit(t0, "crypto", job(1, t0, 1000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    assert!(out.is_empty());
    b.worker_ready(t0, b"e", reg("echo", 11), &mut out);
    // Echo registered first: it is the default, the unnamed job goes there; "crypto" is unknown now.
    assert_eq!(replies(&out), [(1, Status::UnknownService)]);
    assert_eq!(jobs(&out).len(), 1);
    b.worker_ready(t0, b"c", reg("crypto", 12), &mut out);
    out.clear();
    b.submit(t0, "crypto", job(3, t0, 1000, 0), &mut out);
    assert_eq!(b.worker_identity_ok(jobs(&out)[0].0), b"c");
    // A second service does not reshape where unnamed jobs go: still echo.
    b.submit(t0, "", job(4, t0, 1000, 0), &mut out);
    b.submit(t0, "nope", job(5, t0, 1000, 0), &mut out);
    assert_eq!(replies(&out), [(5, Status::UnknownService)]);
    assert_eq!(
        b.services().map(|s| (s.name, s.queued)).collect::<Vec<_>>(),
        [("echo".into(), 1), ("crypto".into(), 0)]
    );
}

#[test]
fn answers_for_jobs_a_worker_does_not_hold_are_ignored() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.worker_result(t0, b"w1", answer(99), &mut out);
    assert!(out.is_empty());
    assert_eq!(b.counters.bad_requests, 1);
    b.worker_result(t0, b"stranger", answer(1), &mut out);
    assert!(matches!(&out[0], Output::Disconnect { .. }));
}

#[test]
fn heartbeats_go_to_every_worker_each_interval() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.tick(t0 + Duration::from_millis(50), |_| Vitality::Gone, &mut out);
    assert!(out.is_empty());
    b.worker_heartbeat(t0 + Duration::from_millis(90), b"w1", &mut out);
    b.tick(t0 + Duration::from_millis(100), |_| Vitality::Gone, &mut out);
    assert!(matches!(out[..], [Output::Heartbeat { worker: 0 }]));
}

#[test]
fn a_timed_out_worker_that_still_runs_its_handler_gets_no_new_job_until_ready() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 10_000, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    b.worker_result(
        t0,
        b"w1",
        Answer {
            job_id: first,
            status: Status::Timeout,
            still_busy: true,
            run_us: None,
            body: b"stuck".to_vec(),
            inline: false,
        },
        &mut out,
    );
    assert_eq!(replies(&out), [(1, Status::Timeout)]);
    assert!(jobs(&out).is_empty(), "job 2 must not go to the stuck worker");
    assert_eq!(b.workers(t0)[0].state, "stuck");
    out.clear();
    // The handler returned at last: the worker registers again and gets job 2.
    b.worker_ready(t0, b"w1", reg("echo", 11), &mut out);
    assert_eq!(jobs(&out)[0].2, b"job2");
    // An idle worker's DISCONNECT is acknowledged at once.
    out.clear();
    b.worker_ready(t0, b"w2", reg("echo", 12), &mut out);
    b.worker_disconnect(t0, b"w2", &mut out);
    assert!(matches!(&out[..], [Output::Disconnect { identity }] if identity == b"w2"));
}

#[test]
fn draining_answers_queued_and_new_jobs_and_abandon_answers_held_ones() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    let first = jobs(&out)[0].1;
    out.clear();
    b.drain(&mut out);
    b.submit(t0, "", job(3, t0, 1000, 0), &mut out);
    assert_eq!(replies(&out), [(2, Status::NoWorker), (3, Status::NoWorker)]);
    out.clear();
    // The job in the worker still completes normally...
    b.worker_result(t0, b"w1", answer(first), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    // ...and one still held when the broker exits is answered too.
    out.clear();
    let mut b = BrokerState::new(config(), 1, t0);
    b.worker_ready(t0, b"w1", reg("echo", 11), &mut out);
    b.submit(t0, "", job(4, t0, 1000, 0), &mut out);
    out.clear();
    b.abandon(&mut out);
    assert_eq!(replies(&out), [(4, Status::WorkerLost)]);
}

#[test]
fn a_worker_reported_dead_is_dropped_at_once_and_its_job_retried() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    b.submit(t0, "", job(1, t0, 1000, 1), &mut out);
    assert_eq!(b.worker_identity_ok(jobs(&out)[0].0), b"w1");
    out.clear();
    b.worker_died(t0, 11, "elsewhere", &mut out);
    assert!(out.is_empty(), "a pid on another host is another process");
    b.worker_died(t0, 11, "h", &mut out);
    assert_eq!(b.worker_identity_ok(jobs(&out)[0].0), b"w2", "retried on the other worker at once");
    assert_eq!(b.workers(t0).len(), 1);
}

#[test]
fn a_heartbeat_never_names_a_worker_dropped_in_the_same_tick() {
    // Found by the fuzzer: heartbeats were emitted, then the dead removed.
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    out.clear();
    let t1 = t0 + Duration::from_millis(250);
    b.worker_heartbeat(t1, b"w2", &mut out);
    // At 300 ms: a heartbeat is due and w1 has expired.
    b.tick(t0 + Duration::from_millis(300), |_| Vitality::Gone, &mut out);
    for o in &out {
        if let Output::Heartbeat { worker } | Output::Job { worker, .. } = o {
            assert_eq!(b.worker_identity(*worker), Some(&b"w2"[..]));
        }
    }
    assert!(out.iter().any(|o| matches!(o, Output::Heartbeat { .. })));
}

#[test]
fn retried_jobs_of_a_dead_worker_never_go_to_another_dead_one() {
    // Found by the fuzzer: two workers expire in the same tick.
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    b.submit(t0, "", job(1, t0, 10_000, 3), &mut out);
    let t1 = t0 + Duration::from_millis(50);
    b.worker_result(t1, b"w2", answer(999), &mut out);
    out.clear();
    b.tick(t0 + Duration::from_millis(400), |_| Vitality::Gone, &mut out);
    assert!(out.iter().all(|o| !matches!(o, Output::Job { .. })), "no job to a dead worker: {out:?}");
    assert_eq!(b.workers(t0).len(), 0);
}

#[test]
fn an_inline_job_stays_inline_through_a_retry_and_its_inline_answer_is_a_frame() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11), (b"w2", 12)]);
    // (job id, worker slot, inline) of the job sent.
    let sent = |out: &Out| {
        out.iter().find_map(|o| match o {
            Output::Job { job_id, worker, inline, .. } => Some((*job_id, *worker, *inline)),
            _ => None,
        })
    };
    b.submit(t0, "", Job { inline: true, ..job(1, t0, 1000, 1) }, &mut out);
    assert!(matches!(sent(&out), Some((_, _, true))));
    out.clear();
    b.worker_died(t0, 11, "h", &mut out);
    let Some((job_id, worker, true)) = sent(&out) else { panic!("retried inline: {out:?}") };
    assert_eq!(b.worker_identity_ok(worker), b"w2");
    out.clear();
    b.worker_result(t0, b"w2", Answer { inline: true, ..answer(job_id) }, &mut out);
    assert!(matches!(&out[..], [Output::Reply { body: Body::Frame(_), .. }, ..]), "{out:?}");
    out.clear();
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    let Some((job_id, _, false)) = sent(&out) else { panic!("a plain job: {out:?}") };
    out.clear();
    b.worker_result(t0, b"w2", answer(job_id), &mut out);
    assert!(matches!(&out[..], [Output::Reply { body: Body::Payload(_), .. }, ..]), "{out:?}");
}

#[test]
fn saturated_only_while_every_service_has_jobs_waiting() {
    let (t0, mut b, mut out) = broker(&[(b"w1", 11)]);
    assert!(!b.saturated(), "an idle worker takes a new request at once");
    b.submit(t0, "", job(1, t0, 10_000, 0), &mut out);
    assert!(!b.saturated(), "busy, but nothing waits: a request could still be refused or queued");
    b.submit(t0, "", job(2, t0, 10_000, 0), &mut out);
    assert!(b.saturated());
    // The loop must still wake for the queue check while it reads the front late.
    assert!(b.next_deadline(t0) <= t0 + QUEUE_CHECK);
    // A second service with an idle worker: its requests must be read at once.
    b.worker_ready(t0, b"w2", reg("other", 12), &mut out);
    assert!(!b.saturated());
    b.submit(t0, "other", job(3, t0, 10_000, 0), &mut out);
    b.submit(t0, "other", job(4, t0, 10_000, 0), &mut out);
    assert!(b.saturated());
    b.worker_result(t0, b"w1", answer(1), &mut out);
    assert!(!b.saturated(), "the waiting job went to w1");
}

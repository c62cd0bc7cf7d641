//! Unit tests of the memory bounds: bytes in all, each client's share, and
//! the longest timeout a job may ask for.

use super::tests::{answer, config, jobs, reg, replies, Out};
use super::*;

fn job_of(client: &[u8], req_id: u64, now: Instant, bytes: usize, timeout: Duration) -> Job<Vec<u8>> {
    Job {
        route: ClientRoute { identity: client.to_vec(), req_id, legacy: false },
        headers: vec![],
        data: vec![0; bytes],
        deadline: now + timeout,
        retries: 0,
        priority: crate::protocol::PRIORITY_DEFAULT,
        received: now,
        inline: false,
    }
}

/// One echo worker (busy with a first job), room for 100 jobs and 1,000 bytes.
fn busy_broker() -> (Instant, BrokerState<Vec<u8>>, Out) {
    let t0 = Instant::now();
    let config = Config { max_queue: 100, max_queue_bytes: 1000, ..config() };
    let mut b = BrokerState::new(config, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"w", reg("echo", 11), &mut out);
    b.submit(t0, "echo", job_of(b"first", 1, t0, 10, Duration::from_secs(60)), &mut out);
    out.clear();
    (t0, b, out)
}

#[test]
fn a_flooding_client_gets_busy_first_while_others_are_served() {
    let (t0, mut b, mut out) = busy_broker();
    let minute = Duration::from_secs(60);
    for id in 10..15 {
        b.submit(t0, "echo", job_of(b"flood", id, t0, 100, minute), &mut out);
    }
    // 500 bytes is the flood's share: the sixth 100-byte job is refused.
    b.submit(t0, "echo", job_of(b"flood", 15, t0, 100, minute), &mut out);
    assert_eq!(replies(&out), [(15, Status::Busy)]);
    assert_eq!(b.queued_bytes(), 500);
    // Another client still gets in, up to the byte limit in all.
    out.clear();
    for id in 20..25 {
        b.submit(t0, "echo", job_of(b"polite", id, t0, 100, minute), &mut out);
    }
    assert!(replies(&out).is_empty());
    b.submit(t0, "echo", job_of(b"third", 30, t0, 1, minute), &mut out);
    assert_eq!(replies(&out), [(30, Status::Busy)], "1,000 bytes wait: full");
    // Answers free room: what leaves the queue is no longer counted.
    out.clear();
    b.worker_result(t0, b"w", answer(1), &mut out);
    assert_eq!(b.queued_bytes(), 900, "one 100-byte job went to the worker");
}

#[test]
fn every_way_out_of_the_queue_gives_its_bytes_back() {
    let (t0, mut b, mut out) = busy_broker();
    b.submit(t0, "echo", job_of(b"a", 2, t0, 100, Duration::from_millis(50)), &mut out);
    b.submit(t0, "echo", job_of(b"a", 3, t0, 100, Duration::from_secs(60)), &mut out);
    assert_eq!(b.queued_bytes(), 200);
    b.tick(t0 + Duration::from_millis(60), |_| Vitality::Gone, &mut out);
    assert_eq!(b.queued_bytes(), 100, "expired");
    b.drain(&mut out);
    assert_eq!(b.queued_bytes(), 0, "drained");
    // Limbo (no worker yet) counts too, and gives back when resolved.
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    b.submit(t0, "", job_of(b"a", 1, t0, 70, Duration::from_secs(60)), &mut out);
    assert_eq!(b.queued_bytes(), 70);
    b.worker_ready(t0, b"w", reg("echo", 11), &mut out);
    assert_eq!(b.queued_bytes(), 0, "dispatched from limbo");
    assert_eq!(jobs(&out).len(), 1);
}

#[test]
fn a_timeout_longer_than_the_limit_is_cut() {
    let t0 = Instant::now();
    let config = Config { max_timeout: Duration::from_millis(250), ..config() };
    let mut b = BrokerState::new(config, 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"w", reg("echo", 11), &mut out);
    b.submit(t0, "echo", job_of(b"a", 1, t0, 1, Duration::from_secs(60)), &mut out);
    // 49 days asked: it waits 250 ms behind job 1 at most.
    b.submit(t0, "echo", job_of(b"a", 2, t0, 1, Duration::from_secs(49 * 24 * 3600)), &mut out);
    b.tick(t0 + Duration::from_millis(249), |_| Vitality::Gone, &mut out);
    assert!(replies(&out).is_empty());
    b.tick(t0 + Duration::from_millis(250), |_| Vitality::Gone, &mut out);
    assert_eq!(replies(&out), [(2, Status::Timeout)]);
    assert_eq!(b.queued_bytes(), 0);
}

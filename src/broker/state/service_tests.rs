//! Unit tests of where jobs that name no service go, and of services that
//! are forgotten once nobody serves them.

use super::tests::{answer, config, job, jobs, reg, replies, Out};
use super::*;
use crate::protocol::SERVICE_FORGET_GRACE;

#[test]
fn unnamed_jobs_go_to_the_configured_default_whoever_registers_first() {
    let t0 = Instant::now();
    let config = Config { default_service: Some("crypto".into()), ..config() };
    let mut b = BrokerState::new(config, 1, t0);
    let mut out = Out::new();
    // A stranger's service registers first: unnamed jobs still wait for crypto.
    b.worker_ready(t0, b"stranger", reg("mine-now", 66), &mut out);
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    assert_eq!(replies(&out), [(1, Status::UnknownService)], "crypto has no worker yet, others exist");
    out.clear();
    b.worker_ready(t0, b"c", reg("crypto", 12), &mut out);
    b.submit(t0, "", job(2, t0, 1000, 0), &mut out);
    assert_eq!(b.worker_identity_ok(jobs(&out)[0].0), b"c");
}

#[test]
fn a_service_that_comes_and_goes_does_not_reshape_unnamed_routing() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    b.worker_ready(t0, b"e", reg("echo", 11), &mut out);
    // One READY for a new service from a worker that then leaves.
    b.worker_ready(t0, b"x", reg("fake", 66), &mut out);
    b.worker_disconnect(t0, b"x", &mut out);
    out.clear();
    b.submit(t0, "", job(1, t0, 1000, 0), &mut out);
    assert_eq!(b.worker_identity_ok(jobs(&out)[0].0), b"e", "unnamed jobs keep going to echo");
}

#[test]
fn services_nobody_serves_are_forgotten_after_the_grace_and_the_rest_still_route() {
    let t0 = Instant::now();
    let mut b = BrokerState::new(config(), 1, t0);
    let mut out = Out::new();
    // Three services; the first two lose their workers, the last keeps one.
    for (identity, service, pid) in [(&b"a"[..], "a", 1), (b"b", "b", 2), (b"c", "c", 3)] {
        b.worker_ready(t0, identity, reg(service, pid), &mut out);
    }
    b.worker_disconnect(t0, b"a", &mut out);
    b.worker_disconnect(t0, b"b", &mut out);
    let heard = |b: &mut BrokerState<Vec<u8>>, t: Instant| b.worker_heartbeat(t, b"c", &mut Out::new());
    let mut t = t0;
    while t < t0 + SERVICE_FORGET_GRACE - Duration::from_millis(100) {
        t += Duration::from_millis(100);
        heard(&mut b, t);
        b.tick(t, |_| Vitality::Gone, &mut out);
    }
    assert_eq!(b.services().count(), 3, "not before the grace");
    t += Duration::from_millis(100);
    heard(&mut b, t);
    b.tick(t, |_| Vitality::Gone, &mut out);
    assert_eq!(b.services().map(|s| s.name).collect::<Vec<_>>(), ["c"]);
    // The last service moved to a freed index: its worker still gets its jobs.
    out.clear();
    b.submit(t, "c", job(1, t, 1000, 0), &mut out);
    let sent = jobs(&out);
    assert_eq!(b.worker_identity_ok(sent[0].0), b"c");
    b.worker_result(t, b"c", answer(sent[0].1), &mut out);
    assert_eq!(replies(&out), [(1, Status::Ok)]);
    assert_eq!(b.services().next().map(|s| (s.workers, s.idle)), Some((1, 1)));
    // A forgotten service is unknown again.
    b.submit(t, "a", job(2, t, 1000, 0), &mut out);
    assert_eq!(replies(&out)[1], (2, Status::UnknownService));
}

//! Job priorities through a real broker and worker: with the worker busy,
//! waiting jobs run highest level first, each level in the order sent; and
//! a high job does not wait behind low ones the worker was given ahead.

mod common;

use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);

#[test]
fn waiting_jobs_run_highest_priority_first_each_level_in_order() {
    let dir = TestDir::new();
    // No jobs given ahead: they wait at the broker, where priorities apply.
    let _broker = start_broker(&dir, &["--prefetch-budget-ms", "0"]);
    let _worker = start_worker(&dir, "test_plugin", &[], "worker");
    let client = dir.client();
    let started = dir.path().join("started");
    let busy = JobRequest::new("busy").header("action", "sleep").header("ms", "300");
    let busy = client.submit(busy.header("file", started.to_str().unwrap()), T);
    wait_until("the worker to be busy", T, || started.exists());
    let log = dir.path().join("order");
    let mark = |name: &str, level: u8| {
        JobRequest::new(name).header("action", "mark").header("file", log.to_str().unwrap()).priority(level)
    };
    let sent = [("low-a", 1), ("top-a", 9), ("mid", 5), ("top-b", 9), ("low-b", 1), ("default", 5)];
    let handles: Vec<_> = sent.iter().map(|(name, level)| client.submit(mark(name, *level), T)).collect();
    // All queued at the broker before the worker frees up.
    wait_until("six jobs queued", T, || {
        client.status(T).is_ok_and(|s| s.services.iter().map(|s| s.queued).sum::<usize>() == 6)
    });
    let status = client.status(T).unwrap();
    assert_eq!(status.services[0].queued_by_priority, vec![0, 2, 0, 0, 0, 2, 0, 0, 0, 2]);
    busy.wait().unwrap();
    for handle in handles {
        handle.wait().unwrap();
    }
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), ["top-a", "top-b", "mid", "default", "low-a", "low-b"]);
}

#[test]
fn a_high_job_goes_before_low_ones_a_busy_worker_was_given_ahead() {
    let dir = TestDir::new();
    // A generous budget: a fast worker is given many jobs ahead.
    let _broker = start_broker(&dir, &["--prefetch-budget-ms", "500"]);
    let worker = start_worker(&dir, "test_plugin", &["--no-lanes"], "worker");
    let client = dir.client();
    // The broker measures the worker fast, so it may hold jobs ahead.
    for i in 0..20 {
        client.execute(JobRequest::new(format!("warm {i}")).header("action", "echo"), T).unwrap();
    }
    let gate = dir.path().join("gate");
    let held = JobRequest::new("held").header("action", "gate").header("until", gate.to_str().unwrap());
    let held = client.submit(held, T);
    let log = dir.path().join("order");
    let mark = |name: &str, level: u8| {
        JobRequest::new(name).header("action", "mark").header("file", log.to_str().unwrap()).priority(level)
    };
    let lows: Vec<_> = ["low-a", "low-b"].iter().map(|name| client.submit(mark(name, 1), T)).collect();
    let in_worker = || client.status(T).unwrap().workers.iter().map(|w| w.in_flight).sum::<usize>();
    wait_until("the low jobs given ahead to the busy worker", T, || in_worker() == 3);
    let high = client.submit(mark("high", 9), T);
    // The broker asks the worker for the low jobs back, which it gives
    // back unrun (its pulse reads the broker while the long job runs).
    let given_back = || worker.stderr().matches("a job of higher priority waits behind it").count();
    wait_until("the low jobs given back", T, || given_back() == 2);
    wait_until("all four in the worker again", T, || in_worker() == 4);
    std::fs::write(&gate, b"").unwrap();
    held.wait().unwrap();
    high.wait().unwrap();
    for low in lows {
        low.wait().unwrap();
    }
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), ["high", "low-a", "low-b"], "the low jobs were given back");
    assert_eq!(client.status(T).unwrap().counters.recalled, 2);
}

//! Job priorities through a real broker and worker: with the worker busy,
//! waiting jobs run highest level first, each level in the order sent.

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

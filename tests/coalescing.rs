//! Result coalescing with real processes: while jobs wait at the broker a
//! worker holds finished answers to send them together, and a held answer
//! still leaves on time when the job after it runs long.

mod common;

use std::time::{Duration, Instant};

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);

fn nap(ms: u64) -> JobRequest {
    JobRequest::new("slept").header("action", "sleep").header("ms", ms.to_string())
}

/// When each of `jobs` was answered, in ms after they were all sent.
fn answer_times(client: &powerhose::Client, jobs: Vec<JobRequest>) -> Vec<u128> {
    let n = jobs.len();
    let mut at = vec![None; n];
    let start = Instant::now();
    client
        .pipeline(jobs, n, T, |i, r| {
            r.unwrap_or_else(|e| panic!("job {i} failed: {e}"));
            at[i] = Some(start.elapsed().as_millis());
        })
        .unwrap();
    at.into_iter().map(|t| t.expect("every job answered")).collect()
}

/// One worker whose jobs take 100 ms and may hold answers `coalesce_ms`; the
/// broker gives it 1 + (2 + coalesce + 8) / 100 jobs at a time (8 ms: the
/// worker's SCHED_BATCH I/O allowance).
fn one_worker(dir: &TestDir, coalesce_ms: &str) -> (Proc, Proc, powerhose::Client) {
    let broker = start_broker(dir, &[]);
    let worker = start_worker(dir, "test_plugin", &["--coalesce-ms", coalesce_ms], "worker");
    let client = dir.client();
    // The broker and the worker learn how long the jobs take.
    for _ in 0..2 {
        client.execute(nap(100), T).unwrap();
    }
    (broker, worker, client)
}

#[test]
fn a_held_answer_leaves_when_due_even_while_a_long_job_runs() {
    let dir = TestDir::new();
    let (_broker, _worker, client) = one_worker(&dir, "150");
    // The worker holds two jobs at a time (1 + 160 / 100); the other three
    // wait at the broker. Jobs 2 and 3 are sent on while others still wait
    // (backlog), so job 2's answer (done at ~300 ms) is held for job 3,
    // which runs 3 s: the timer sends it at ~450 ms.
    let times = answer_times(&client, vec![nap(100), nap(100), nap(100), nap(3000), nap(100)]);
    assert!(times[0] < 180 && times[1] < 280, "no backlog when they left: {times:?}");
    assert!(times[2] >= 420, "job 2's answer was held: {times:?}");
    assert!(times[2] < 1500, "the held answer left when due, not after the long job: {times:?}");
    assert!(times[3] >= 3300 && times[4] >= 3400, "{times:?}");
}

#[test]
fn with_coalescing_off_every_answer_leaves_at_once() {
    let dir = TestDir::new();
    let (_broker, _worker, client) = one_worker(&dir, "0");
    let times = answer_times(&client, vec![nap(100), nap(100), nap(100), nap(3000), nap(100)]);
    assert!(times[2] < 400, "{times:?}");
}

//! Result coalescing with real processes: under backlog a worker holds
//! finished answers to send them together, and a held answer still leaves
//! on time when the job after it runs long.

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

#[test]
fn a_held_answer_leaves_when_due_even_while_a_long_job_runs() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "test_plugin", &["--coalesce-ms", "400"], "worker");
    let client = dir.client();
    // The worker learns its jobs take ~5 ms (so holding one for the next fits in 400 ms).
    for _ in 0..5 {
        client.execute(nap(5), T).unwrap();
    }
    // One worker, five jobs at once: the third onwards have two ahead of them
    // (backlog), so the 3rd and 4th answers are held for the next job, and
    // the 4th's next is the long one.
    let times = answer_times(&client, vec![nap(5), nap(5), nap(5), nap(5), nap(3000)]);
    assert!(times[0] < 300 && times[1] < 300, "no backlog: answered at once: {times:?}");
    for held in [2, 3] {
        assert!(times[held] >= 380, "job {held}'s answer was held for the next ones: {times:?}");
        assert!(times[held] < 2000, "job {held}'s answer left when due, not after the long job: {times:?}");
    }
    assert!(times[4] >= 3000, "{times:?}");
}

#[test]
fn with_coalescing_off_every_answer_leaves_at_once() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "test_plugin", &["--coalesce-ms", "0"], "worker");
    let client = dir.client();
    for _ in 0..5 {
        client.execute(nap(5), T).unwrap();
    }
    let times = answer_times(&client, vec![nap(5), nap(5), nap(5), nap(5), nap(3000)]);
    assert!(times[..4].iter().all(|&t| t < 300), "{times:?}");
}

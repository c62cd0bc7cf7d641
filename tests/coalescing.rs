//! Result coalescing with real processes: while jobs wait at the broker, or
//! jobs given ahead wait at the worker, a worker holds finished answers to
//! send them together, and a held answer still leaves on time when the job
//! after it runs long.

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

/// One worker whose jobs take 200 ms and may hold answers `coalesce_ms`; the
/// broker gives it 1 + (2 + coalesce + 8) / 200 jobs at a time (8 ms: the
/// worker's SCHED_BATCH I/O allowance). Jobs this long leave room for a busy
/// machine's scheduling delays in every bound below.
fn one_worker(dir: &TestDir, coalesce_ms: &str) -> (Proc, Proc, powerhose::Client) {
    let broker = start_broker(dir, &[]);
    let worker = start_worker(dir, "test_plugin", &["--coalesce-ms", coalesce_ms], "worker");
    let client = dir.client();
    // The broker and the worker learn how long the jobs take.
    for _ in 0..2 {
        client.execute(nap(200), T).unwrap();
    }
    (broker, worker, client)
}

/// Eight short jobs, a 4-s one, then three short ones. The worker holds six
/// jobs at a time (1 + 1110 / 200 with 1.1 s of coalescing; still six if a
/// busy machine stretches a job to 222 ms): jobs 0-5 go to
/// it at once, while no job waits; jobs 6-10 leave the broker as answers
/// come back, while later ones still wait (backlog).
fn jobs() -> Vec<JobRequest> {
    let mut jobs: Vec<JobRequest> = (0..8).map(|_| nap(200)).collect();
    jobs.push(nap(4000));
    jobs.extend((0..3).map(|_| nap(200)));
    jobs
}

/// When each of [`jobs`] was answered by one worker that may hold answers
/// `coalesce_ms`.
fn times_with(coalesce_ms: &str) -> Vec<u128> {
    let dir = TestDir::new();
    let (_broker, _worker, client) = one_worker(&dir, coalesce_ms);
    answer_times(&client, jobs())
}

#[test]
fn a_held_answer_leaves_when_due_even_while_a_long_job_runs() {
    // 1.1 s: room for four 200-ms answers and more, so they may be held.
    // Jobs 0-5 are answered at once (~200 ms apart). The answers of jobs 6
    // and 7 (done at ~1.4 and ~1.6 s) are held for the next ones; job 8
    // runs 4 s (to ~5.6 s), so the timer sends them when the oldest is
    // due, at ~2.5 s.
    let times = times_with("1100");
    assert!(times[0] < 480 && times[5] < 1680, "no backlog when they left: {times:?}");
    assert!(times[6..8].iter().all(|&t| t >= 2320), "jobs 6 and 7's answers were held: {times:?}");
    assert!(times[6..8].iter().all(|&t| t < 4400), "held answers left when due, not after the long job: {times:?}");
    assert!(times[8] >= 5600, "{times:?}");
}

#[test]
fn with_coalescing_off_every_answer_leaves_at_once() {
    let times = times_with("0");
    assert!(times[6] < 2000 && times[7] < 2200, "{times:?}");
}

#[test]
fn answers_of_jobs_too_long_to_share_a_send_are_never_held() {
    // 760 ms holds fewer than four 200-ms answers: not worth the wait. The
    // worker holds four or five jobs (1 + 770 / a little over 200), so job 4
    // or 5 is the first sent under backlog: held, job 4 (done at ~1 s)
    // would leave at ~1.6 s, or job 5 (done at ~1.2 s) at ~1.96 s.
    let times = times_with("760");
    assert!(times[4] < 1400 && times[5] < 1680, "{times:?}");
}

/// How many answers `--debug` says were held because jobs given ahead
/// waited at hand, and how many sends carried several answers, for 400
/// echoes kept 32 in flight through one worker that may hold `coalesce_ms`.
/// Once the broker knows the jobs are short it gives the worker all 32 (it
/// takes up to 64 ahead), so none waits at the broker: no backlog.
fn held_ahead(coalesce_ms: &str) -> (usize, usize) {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let worker = start_worker(&dir, "test_plugin", &["--debug", "--coalesce-ms", coalesce_ms], "worker");
    let client = dir.client();
    for i in 0..20 {
        client.execute(JobRequest::new(format!("warm {i}")), T).unwrap();
    }
    let jobs: Vec<JobRequest> = (0..400).map(|i| JobRequest::new(format!("job {i}"))).collect();
    let mut answered = 0;
    client
        .pipeline(jobs, 32, T, |i, r| {
            assert_eq!(r.unwrap_or_else(|e| panic!("job {i} failed: {e}")), format!("job {i}").into_bytes());
            answered += 1;
        })
        .unwrap();
    assert_eq!(answered, 400);
    let log = worker.stderr();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    (count("answer held: jobs given ahead wait at hand"), count("answers sent together"))
}

#[test]
fn answers_wait_while_jobs_given_ahead_wait_at_hand_and_leave_together() {
    let (held, together) = held_ahead("15");
    assert!(held >= 1 && together >= 1, "held {held}, sends of several {together}");
    let (held, together) = held_ahead("0");
    assert_eq!((held, together), (0, 0), "coalescing off: every answer at once");
}

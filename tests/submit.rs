//! Jobs handed over without waiting (`Client::submit`, `submit_with`): each
//! answered once, each within its own timeout, whatever the others do.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(20);

fn sleep_job(ms: u64) -> JobRequest {
    JobRequest::new("slow").header("action", "sleep").header("ms", ms.to_string())
}

both_transports! {
    fn a_thousand_submitted_jobs_each_get_their_own_answer(t) {
        let dir = TestDir::on(t);
        let _pool = start_cluster(&dir, "test_plugin", 2, &[]);
        let client = dir.client();
        let handles: Vec<_> = (0..1000).map(|i| client.submit(format!("job {i}"), T)).collect();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.wait().unwrap(), format!("job {i}").into_bytes());
        }
    }

    fn a_submitted_job_times_out_on_its_own_while_the_others_are_answered(t) {
        let dir = TestDir::on(t);
        let _pool = start_cluster(&dir, "test_plugin", 2, &[]);
        let client = dir.client();
        let started = dir.path().join("started");
        let job = sleep_job(5_000).header("file", started.to_str().unwrap());
        let start = Instant::now();
        let slow = client.submit(job, Duration::from_millis(500));
        // Running on one worker before the rest come: none is prefetched
        // behind it (a fresh worker's time per job is unknown: one at a time).
        wait_until("the slow job to start", T, || started.exists());
        let quick: Vec<_> = (0..50).map(|i| client.submit(format!("{i}"), T)).collect();
        for (i, handle) in quick.into_iter().enumerate() {
            assert_eq!(handle.wait().unwrap(), format!("{i}").into_bytes());
        }
        match slow.wait() {
            Err(Error::Timeout(waited)) => assert_eq!(waited, Duration::from_millis(500)),
            Err(Error::JobTimedOut { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(4), "the slow job held the rest: {:?}", start.elapsed());
    }

    fn submit_with_calls_back_once_per_job_with_typed_errors(t) {
        let dir = TestDir::on(t);
        let _pool = start_cluster(&dir, "test_plugin", 2, &[]);
        let client = dir.client();
        let (tx, rx) = mpsc::channel();
        for i in 0..100u32 {
            let tx = tx.clone();
            let job = match i % 2 {
                0 => JobRequest::new(i.to_string()),
                _ => JobRequest::new(i.to_string()).header("action", "error"),
            };
            client.submit_with(job, T, move |result| tx.send((i, result)).unwrap());
        }
        drop(tx);
        let mut seen = vec![0; 100];
        for (i, result) in rx.iter() {
            seen[i as usize] += 1;
            match (i % 2, result) {
                (0, Ok(data)) => assert_eq!(data, i.to_string().into_bytes()),
                (1, Err(Error::Handler { message, pid })) => assert!(message.contains(&i.to_string()) && pid > 0),
                (_, other) => panic!("job {i}: {other:?}"),
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every job answered exactly once: {seen:?}");
    }

    fn with_no_broker_a_submitted_job_is_unreachable_within_its_timeout(t) {
        let dir = TestDir::on(t);
        let client = dir.client();
        let start = Instant::now();
        let handle = client.submit("nobody", Duration::from_millis(300));
        assert!(matches!(handle.wait(), Err(Error::BrokerUnreachable { .. }) | Err(Error::Timeout(_))));
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }

    fn jobs_submitted_before_the_broker_starts_are_answered_once_it_does(t) {
        let dir = TestDir::on(t);
        let client = dir.client();
        let handles: Vec<_> = (0..20).map(|i| client.submit(format!("{i}"), Duration::from_secs(60))).collect();
        let _pool = start_cluster(&dir, "test_plugin", 1, &[]);
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.wait().unwrap(), format!("{i}").into_bytes());
        }
    }

    fn a_dropped_client_still_answers_what_it_submitted(t) {
        let dir = TestDir::on(t);
        let _pool = start_cluster(&dir, "test_plugin", 2, &[]);
        let client = dir.client();
        let handles: Vec<_> = (0..50).map(|i| client.submit(format!("{i}"), T)).collect();
        drop(client);
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.wait().unwrap(), format!("{i}").into_bytes());
        }
    }
}

#[test]
fn a_submitted_job_whose_local_broker_dies_is_lost_at_once() {
    let dir = TestDir::new();
    let mut pool = start_cluster(&dir, "test_plugin", 1, &[]);
    let client = dir.client();
    let handle = client.submit(sleep_job(30_000), Duration::from_secs(60));
    // Ready only once it is sent: the broker must hold it when it dies.
    wait_until("the job to reach a worker", T, || {
        client.status(T).is_ok_and(|s| s.workers.iter().any(|w| w.state == "busy"))
    });
    pool.child.kill().unwrap();
    let start = Instant::now();
    assert!(handle.wait_for(Duration::from_secs(10)), "not answered after its broker died");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(handle.wait(), Err(Error::BrokerLost { .. })));
}

#[test]
fn wait_for_says_when_the_result_is_there() {
    let dir = TestDir::new();
    let _pool = start_cluster(&dir, "test_plugin", 1, &[]);
    let client = dir.client();
    let handle = client.submit(sleep_job(600), T);
    assert!(!handle.wait_for(Duration::from_millis(100)));
    assert!(!handle.is_ready());
    assert!(handle.wait_for(T));
    assert!(handle.is_ready());
    assert_eq!(handle.wait().unwrap(), b"slow");
}

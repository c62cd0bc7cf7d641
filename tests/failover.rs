//! A client of several brokers (`Client::connect_many`, `--frontend`
//! repeated): requests spread over the brokers; one SIGKILLed under load
//! costs no request that allows a retry and keeps none waiting for its
//! timeout; one that is stopped (alive, silent) is skipped, and either is
//! used again once it is back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pair::Pair;
use common::*;
use powerhose::{Client, Error, JobRequest};

const T: Duration = Duration::from_secs(10);

fn both(pair: &Pair) -> Client {
    Client::connect_many(&[Pair::front(&pair.dir, "a"), Pair::front(&pair.dir, "b")], None).unwrap()
}

/// Jobs answered `ok` by broker `name` so far.
fn served(pair: &Pair, name: &str) -> u64 {
    pair.client(name).status(T).unwrap().counters.ok
}

/// The pair with `n` workers serving both brokers, registered with each.
fn served_pair(n: usize) -> (Pair, Vec<Proc>) {
    let pair = Pair::start();
    let workers = (0..n).map(|i| pair.worker(&["a", "b"], &format!("w{i}"))).collect();
    for name in ["a", "b"] {
        let client = pair.client(name);
        wait_until(&format!("{n} workers at {name}"), T, || client.workers("", T).unwrap() == n);
    }
    (pair, workers)
}

#[test]
fn requests_spread_over_both_brokers() {
    let (pair, _workers) = served_pair(1);
    let client = both(&pair);
    for i in 0..40 {
        let data = format!("job {i}");
        assert_eq!(client.execute(data.clone(), T).unwrap(), data.into_bytes());
    }
    let (a, b) = (served(&pair, "a"), served(&pair, "b"));
    assert_eq!(a + b, 40);
    assert!(a >= 10 && b >= 10, "spread: a {a}, b {b}");
}

#[test]
fn a_broker_that_cannot_be_reached_is_skipped_without_using_a_retry() {
    let (pair, _workers) = served_pair(1);
    let nowhere = format!("ipc://{}/nobody-front.ipc", pair.dir.path().display());
    let client = Client::connect_many(&[nowhere.as_str(), &Pair::front(&pair.dir, "b")], None).unwrap();
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(client.execute("x", T).unwrap(), b"x");
        assert!(t.elapsed() < Duration::from_secs(1), "waited {:?}", t.elapsed());
    }
    // The command-line client too, with --frontend repeated.
    let out = std::process::Command::new(CLIENT)
        .args(["--frontend", &nowhere, "--frontend", &Pair::front(&pair.dir, "b"), "run", "hello"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hello");
}

/// What one request of the load saw.
struct Outcome {
    retry: bool,
    sent: Instant,
    done: Instant,
    result: Result<Vec<u8>, Error>,
}

#[test]
fn a_killed_broker_costs_no_retried_request_and_is_used_again_once_back() {
    let (mut pair, _workers) = served_pair(2);
    let client = Arc::new(both(&pair));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (client, stop, log) = (client.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Half allow a retry; every job takes a moment, so many are in flight.
                    let retry = (t + n).is_multiple_of(2);
                    n += 1;
                    let job = JobRequest::new("").header("action", "sleep").header("ms", "20");
                    let job = if retry { job.retry(2) } else { job };
                    let sent = Instant::now();
                    let result = client.execute(job, T);
                    log.lock().unwrap().push(Outcome { retry, sent, done: Instant::now(), result });
                }
            })
        })
        .collect();
    wait_until("both brokers to serve the load", T, || served(&pair, "a") > 20 && served(&pair, "b") > 20);
    let mut a = pair.brokers.remove(0);
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    a.wait_exit(T).expect("broker a is gone");
    let gone = Instant::now();
    std::thread::sleep(Duration::from_secs(2)); // the load runs on b alone meanwhile
    pair.brokers.insert(0, Pair::broker(&pair.dir, "a"));
    let back = Instant::now();
    wait_until("the restarted broker to be used", Duration::from_secs(5), || served(&pair, "a") > 0);
    eprintln!("restarted broker used again after {:?}", back.elapsed());
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let log = log.lock().unwrap();
    let mut lost = 0;
    for o in log.iter() {
        let waited = o.done - o.sent;
        assert!(waited < T / 2, "a request waited {waited:?}: {:?}", o.result);
        match &o.result {
            Ok(_) => {}
            Err(Error::BrokerLost { endpoint }) if !o.retry => {
                assert!(endpoint.contains("a-front"), "lost on {endpoint}");
                assert!(o.sent < gone, "sent after the broker was gone, yet lost");
                lost += 1;
            }
            Err(e) => panic!("a request (retry: {}) failed: {e}", o.retry),
        }
    }
    // In flight on a when it died: answered from b, or BrokerLost; how soon?
    let caught: Vec<Duration> = log
        .iter()
        .filter(|o| o.sent < killed && o.done > killed && (o.retry || o.result.is_err()))
        .map(|o| o.done - killed)
        .collect();
    eprintln!(
        "{} requests, {lost} BrokerLost; those in flight at the kill answered within {:?} of it",
        log.len(),
        caught.iter().max()
    );
    assert!(caught.iter().all(|d| *d < Duration::from_secs(1)), "not at once: {caught:?}");
    let after: Vec<_> = log.iter().filter(|o| o.sent > killed + Duration::from_secs(2)).collect();
    assert!(after.iter().all(|o| o.result.is_ok()), "traffic on b alone from 2 s after the kill");
}

#[test]
fn a_stopped_broker_is_skipped_within_two_seconds_and_used_again_after_cont() {
    let (pair, _workers) = served_pair(1);
    let client = both(&pair);
    for _ in 0..10 {
        client.execute("warm", T).unwrap();
    }
    pair.brokers[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // Short timeouts: a request that goes to the silent broker times out.
    let short = Duration::from_millis(300);
    let mut last_timeout = None;
    while stopped.elapsed() < Duration::from_secs(4) {
        match client.execute("x", short) {
            Ok(_) => {}
            Err(Error::Timeout(_)) => last_timeout = Some(stopped.elapsed()),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("last request sent to the stopped broker timed out {last_timeout:?} after the stop");
    // BROKER_PROBE_INTERVAL + BROKER_SILENCE (1.5 s), plus one short timeout and slack.
    assert!(last_timeout.unwrap_or_default() < Duration::from_secs(2) + short, "{last_timeout:?}");
    pair.brokers[0].signal(libc::SIGCONT);
    let resumed = Instant::now();
    // What it held meanwhile has expired: answered as timeouts, not counted `ok`.
    let before = served(&pair, "a");
    wait_until("the resumed broker to be used", Duration::from_secs(5), || {
        client.execute("y", T).unwrap();
        served(&pair, "a") > before
    });
    eprintln!("resumed broker used again after {:?}", resumed.elapsed());
}

#[test]
fn a_pipeline_goes_on_at_the_other_broker_when_its_broker_is_killed() {
    let (mut pair, _workers) = served_pair(2);
    let client = both(&pair);
    // Who streams first: the pipeline takes the next broker in turn.
    let first_a = {
        client.execute("which", T).unwrap();
        served(&pair, "a") == 0
    };
    let victim = if first_a { 0 } else { 1 };
    let job = || JobRequest::new("").header("action", "sleep").header("ms", "5").retry(1);
    let mut results = Vec::new();
    let t = Instant::now();
    let mut killed = false;
    client
        .pipeline((0..400).map(|_| job()), 20, T, |i, result| {
            results.push((i, result));
            if results.len() == 50 && !killed {
                killed = true;
                pair.brokers[victim].signal(libc::SIGKILL);
            }
        })
        .unwrap();
    assert!(killed);
    assert_eq!(results.len(), 400);
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "{} failed, the first: {:?}", failed.len(), failed[0]);
    eprintln!("400 jobs, a broker killed after 50, in {:?}", t.elapsed());
    let _ = pair.brokers.remove(victim).wait_exit(T);
}

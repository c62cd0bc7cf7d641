//! One worker serving several brokers (`--backend` repeated): registered
//! with each, one job at a time, each answer to its own broker; a job that
//! arrives from one broker while the worker runs another's is given back at
//! once and served elsewhere, not left behind the long job; a broker that
//! dies and returns is joined again by itself.

mod common;

use std::time::{Duration, Instant};

use common::pair::Pair;
use common::*;
use powerhose::{Client, JobRequest};

const T: Duration = Duration::from_secs(10);

fn pid_of(client: &Client) -> u32 {
    let pid = client.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
    String::from_utf8(pid).unwrap().parse().unwrap()
}

fn wait_registered(client: &Client, n: usize) {
    wait_until(&format!("{n} workers"), T, || client.workers("", T).unwrap() == n);
}

both_transports! {
    fn a_worker_serves_two_brokers_and_answers_each_its_own_jobs(t) {
    let pair = Pair::start_on(t);
    let worker = pair.worker(&["a", "b"], "dual");
    let (a, b) = (pair.client("a"), pair.client("b"));
    wait_registered(&a, 1);
    wait_registered(&b, 1);
    assert_eq!(pid_of(&a), worker.pid());
    assert_eq!(pid_of(&b), worker.pid());
    // Both at once, many times: every answer reaches its own client.
    let threads: Vec<_> = [(a, "from a"), (b, "from b")]
        .into_iter()
        .map(|(client, text)| {
            std::thread::spawn(move || {
                for i in 0..300 {
                    let data = format!("{text} {i}");
                    assert_eq!(client.execute(data.clone(), T).unwrap(), data.into_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    }
}

both_transports! {
    fn a_job_from_one_broker_does_not_wait_behind_anothers_long_job(t) {
    let pair = Pair::start_on(t);
    let dual = pair.worker(&["a", "b"], "dual");
    let (a, b) = (pair.client("a"), pair.client("b"));
    wait_registered(&a, 1);
    wait_registered(&b, 1);
    let only_b = pair.worker(&["b"], "only-b");
    wait_registered(&b, 2);
    // Keep "only-b" busy for a moment so that b's next job goes to "dual".
    let long = std::thread::spawn(move || {
        a.execute(JobRequest::new("").header("action", "sleep").header("ms", "3000"), T).unwrap();
        a
    });
    wait_until("the long job to start", T, || {
        pair.client("a").status(T).unwrap().workers.iter().any(|w| w.state == "busy")
    });
    // b picks the oldest idle worker; whichever it is, a job to "dual" goes
    // back at once and "only-b" runs it: nothing waits 3 s.
    for _ in 0..5 {
        let t = Instant::now();
        let pid = pid_of(&b);
        assert!(t.elapsed() < Duration::from_millis(1500), "waited {:?} behind a's job", t.elapsed());
        assert_eq!(pid, only_b.pid(), "dual is busy with a's job");
    }
    let status = b.status(T).unwrap();
    let dual_seen = status.workers.iter().find(|w| w.pid == dual.pid()).expect("dual still registered with b");
    assert_eq!(dual_seen.state, "elsewhere");
    let a = long.join().unwrap();
    // Free again: it told b (READY), and serves both.
    wait_until("dual idle at b", T, || {
        b.status(T).unwrap().workers.iter().any(|w| w.pid == dual.pid() && w.state == "idle")
    });
    assert_eq!(pid_of(&a), dual.pid());
    assert_eq!(b.status(T).unwrap().counters.lost, 0);
    }
}

both_transports! {
    fn a_broker_that_dies_and_returns_is_joined_again_while_the_other_serves(t) {
    let mut pair = Pair::start_on(t);
    let worker = pair.worker(&["a", "b"], "dual");
    let (a, b) = (pair.client("a"), pair.client("b"));
    wait_registered(&a, 1);
    wait_registered(&b, 1);
    let mut old = pair.brokers.remove(0);
    kill(old.pid(), libc::SIGKILL);
    old.wait_exit(T).expect("broker a is gone");
    // b is not disturbed.
    for _ in 0..20 {
        assert_eq!(pid_of(&b), worker.pid());
    }
    let t = Instant::now();
    pair.brokers.push(Pair::broker(&pair.dir, "a"));
    wait_registered(&a, 1);
    eprintln!("rejoined the restarted broker after {:?}", t.elapsed());
    assert_eq!(pid_of(&a), worker.pid());
    assert_eq!(pid_of(&b), worker.pid());
    }
}

#[test]
fn check_and_status_name_every_broker_of_a_deployment() {
    let mut pair = Pair::start();
    let _worker = pair.worker(&["a", "b"], "dual");
    wait_registered(&pair.client("a"), 1);
    wait_registered(&pair.client("b"), 1);
    let (a, b) = (Pair::front(&pair.dir, "a"), Pair::front(&pair.dir, "b"));
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(BROKER).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, line) = tool(&["--check", "--frontend", &a, "--frontend", &b]);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("OK - 2 of 2 brokers OK: ") && line.contains(&a) && line.contains(&b), "{line}");
    assert_eq!(line.lines().count(), 1);
    let (code, json) = tool(&["--status", "--json", "--frontend", &a, "--frontend", &b]);
    assert_eq!(code, Some(0));
    let each: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(each.as_array().unwrap().len(), 2);
    assert_eq!(each[1]["frontend"], b.as_str());
    assert_eq!(each[1]["status"]["workers"].as_array().unwrap().len(), 1, "over ipc: the owner's view");
    // One down: WARNING, naming the one that does not answer.
    let mut gone = pair.brokers.remove(1);
    kill(gone.pid(), libc::SIGKILL);
    gone.wait_exit(T).unwrap();
    let (code, line) = tool(&["--check", "--frontend", &a, "--frontend", &b, "--timeout", "0.5"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("WARNING - 1 of 2 brokers OK: broker pid")
            && line.contains(&format!("no broker answers on {b}")),
        "{line}"
    );
    let (code, text) = tool(&["--status", "--frontend", &a, "--frontend", &b, "--timeout", "0.5"]);
    assert_eq!(code, Some(1));
    assert!(text.contains(&format!("== {a}")) && text.contains(&format!("== {b}\nno answer")), "{text}");
}

both_transports! {
    fn two_loaded_brokers_share_one_worker_fairly(t) {
    let pair = Pair::start_on(t);
    let _worker = pair.worker(&["a", "b"], "dual");
    wait_registered(&pair.client("a"), 1);
    wait_registered(&pair.client("b"), 1);
    // Two callers on each broker keep both queues full of 20 ms jobs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = ["a", "b", "a", "b"]
        .iter()
        .map(|name| {
            let (client, stop) = (pair.client(name), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.execute(JobRequest::new("").header("action", "sleep").header("ms", "20"), T) {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3)); // the load period itself, not a synchronisation
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<(usize, Vec<String>)> = loads.into_iter().map(|h| h.join().unwrap()).collect();
    let (a, b) = (results[0].0 + results[2].0, results[1].0 + results[3].0);
    let failed: Vec<&String> = results.iter().flat_map(|r| &r.1).collect();
    assert!(failed.is_empty(), "{failed:?}");
    // One worker, 20 ms jobs: ~150 in 3 s, and neither broker starved.
    let share = a.min(b) as f64 / (a + b) as f64;
    assert!(share >= 0.45, "a got {a} jobs, b got {b}");
    eprintln!("one worker, two loaded brokers: a {a} jobs, b {b} jobs");
    }
}

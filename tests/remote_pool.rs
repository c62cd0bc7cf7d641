//! A pool with no broker of its own (`powerhose --connect E --connect E2`):
//! its workers serve remote brokers, and the supervisor still replaces the
//! dead, reloads, scales and stops them, learning who registered from the
//! workers' own notifications.

mod common;

use std::time::Duration;

use common::pair::Pair;
use common::*;
use powerhose::{Client, JobRequest};

const T: Duration = Duration::from_secs(10);

fn pids(client: &Client) -> Vec<u32> {
    let mut pids: Vec<u32> = client.status(T).unwrap().workers.iter().map(|w| w.pid).collect();
    pids.sort_unstable();
    pids
}

fn pool(pair: &Pair, workers: &str) -> Proc {
    let plugin = plugin("test_plugin");
    let (a, b) = (Pair::back(&pair.dir, "a"), Pair::back(&pair.dir, "b"));
    let args = [
        "--plugin",
        plugin.to_str().unwrap(),
        "--workers",
        workers,
        "--connect",
        &a,
        "--connect",
        &b,
        "--heartbeat-ms",
        "200",
    ];
    let mut pool = Proc::spawn(POWERHOSE, &args, &pair.dir, "pool");
    let line = pool.wait_line("powerhose ready", Duration::from_secs(60));
    assert!(line.contains("for the brokers at") && line.contains(&a) && line.contains(&b), "{line}");
    pool
}

both_transports! {
    fn a_pool_without_a_broker_serves_remote_brokers_and_supervises_its_workers(t) {
    let pair = Pair::start_on(t);
    let pool = pool(&pair, "2");
    let notify = std::fs::read_dir(pair.dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".notify"));
    assert_eq!(notify.count(), 1, "the pool listens for its workers' READY");
    let (a, b) = (pair.client("a"), pair.client("b"));
    // Ready means registered: both brokers know both workers already.
    let first = pids(&a);
    assert_eq!(first.len(), 2);
    assert_eq!(pids(&b), first);
    assert!(first.iter().all(|pid| children(pool.pid()).contains(pid)));
    assert_eq!(a.execute("via a", T).unwrap(), b"via a");
    assert_eq!(b.execute("via b", T).unwrap(), b"via b");

    // A dead worker is replaced, and its replacement serves both brokers.
    kill(first[0], libc::SIGKILL);
    wait_until("a replacement at both brokers", T, || {
        let (now_a, now_b) = (pids(&a), pids(&b));
        now_a.len() == 2 && !now_a.contains(&first[0]) && now_a == now_b
    });

    // Reload (SIGHUP): every worker replaced, one at a time.
    let before = pids(&a);
    pool.signal(libc::SIGHUP);
    wait_until("every worker replaced", Duration::from_secs(30), || {
        let now = pids(&a);
        now.len() == 2 && now.iter().all(|p| !before.contains(p)) && pids(&b) == now
    });
    // Scale up by signal.
    pool.signal(libc::SIGTTIN);
    wait_until("three workers", T, || pids(&a).len() == 3 && pids(&b).len() == 3);
    let pid: u32 =
        String::from_utf8(b.execute(JobRequest::new("").header("action", "pid"), T).unwrap()).unwrap().parse().unwrap();
    assert!(children(pool.pid()).contains(&pid));
    }
}

both_transports! {
    fn stopping_a_remote_pool_unregisters_its_workers_from_every_broker(t) {
    let pair = Pair::start_on(t);
    let mut pool = pool(&pair, "2");
    let (a, b) = (pair.client("a"), pair.client("b"));
    pool.signal(libc::SIGTERM);
    assert_eq!(pool.wait_exit(T).expect("stops").code(), Some(0), "{}", pool.stderr());
    // DISCONNECT went to both: no waiting for missed heartbeats.
    assert_eq!(a.workers("", T).unwrap(), 0);
    assert_eq!(b.workers("", T).unwrap(), 0);
    let files: Vec<String> =
        std::fs::read_dir(pair.dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(files.iter().all(|f| !f.ends_with(".notify")), "the pool's notify socket is removed: {files:?}");
    }
}

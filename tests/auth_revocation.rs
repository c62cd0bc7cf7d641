//! CURVE keys that change while peers are connected: a key allowed after a
//! refusal gets in, a removed worker or client certificate stops its holder
//! within 2 s while others carry on, and a rotation with overlap under load
//! fails nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pki::*;
use common::*;
use powerhose::{Client, Error};

const T: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(700);

/// A running load: its stop flag and threads, each yielding (jobs done, failures).
type Load = (Arc<AtomicBool>, Vec<std::thread::JoinHandle<(usize, Vec<String>)>>);

#[test]
fn a_worker_and_a_client_refused_at_first_get_in_once_their_keys_are_allowed() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow("operators", "op");
    pki.make("late_worker");
    pki.make("late_client");
    let (_broker, front, back) = curve_broker(&dir, &pki, &[]);
    let operator = pki.client(&front, "op");
    let mut worker = curve_worker(&dir, &pki, &back, "late_worker");
    let client = pki.client(&front, "late_client");
    assert!(refused(client.ping(SHORT)));
    wait_until("the worker refused", T, || operator.status(T).unwrap().auth_failures.workers >= 1);
    // libzmq gives up on an endpoint after a refused handshake: both dial again.
    pki.allow_all(&[("workers", "late_worker"), ("clients", "late_client")]);
    wait_workers(&operator, 1);
    wait_until("the client admitted", T, || client.ping(SHORT).is_ok());
    assert_eq!(client.execute("late", T).unwrap(), b"late");
    assert!(worker.child.try_wait().unwrap().is_none());
    assert!(std::fs::read_to_string(&worker.log).unwrap().contains("dialling again"));
}

#[test]
fn a_removed_worker_certificate_drops_it_within_2_s_while_another_takes_its_jobs() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "c1"), ("operators", "op"), ("workers", "w1"), ("workers", "w2")]);
    let (_broker, front, back) = curve_broker(&dir, &pki, &["--heartbeat-ms", "200"]);
    let operator = pki.client(&front, "op");
    let (w1, w2) = (curve_worker(&dir, &pki, &back, "w1"), curve_worker(&dir, &pki, &back, "w2"));
    wait_workers(&operator, 2);

    let client = Arc::new(pki.client(&front, "c1"));
    let served_after = Arc::new(Mutex::new(Vec::<u32>::new()));
    let (stop, revoked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (client, stop, revoked, served) = (client.clone(), stop.clone(), revoked.clone(), served_after.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let after = revoked.load(Ordering::Relaxed);
                    match client.execute(pid_job(), T) {
                        Ok(pid) if after => {
                            served.lock().unwrap().push(String::from_utf8(pid).unwrap().parse().unwrap())
                        }
                        Ok(_) => {}
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    wait_until("both workers served", T, || operator.status(T).unwrap().workers.iter().all(|w| w.jobs_done > 0));

    let t = Instant::now();
    pki.revoke("workers", "w1");
    wait_until("w1 dropped", T, || operator.status(T).unwrap().workers.iter().all(|w| w.pid != w1.pid()));
    let dropped = t.elapsed();
    revoked.store(true, Ordering::Relaxed);
    // w1 is told to go and reconnects: its new handshake is refused.
    wait_until("w1 refused again", T, || operator.status(T).unwrap().auth_failures.workers >= 1);
    wait_until("jobs served since", T, || served_after.lock().unwrap().len() >= 50);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = loaders.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(dropped < Duration::from_secs(2), "w1 dropped after {dropped:?}");
    let served = served_after.lock().unwrap();
    assert!(served.iter().all(|&pid| pid == w2.pid()), "served after the revocation by {:?}", served);
    eprintln!("revoked worker dropped after {dropped:?}; {} jobs since, all on the other worker", served.len());
}

#[test]
fn a_removed_client_certificate_stops_its_connected_client_within_2_s() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "c1"), ("clients", "c2"), ("workers", "w1"), ("operators", "op")]);
    let (_broker, front, back) = curve_broker(&dir, &pki, &[]);
    let operator = pki.client(&front, "op");
    let _w1 = curve_worker(&dir, &pki, &back, "w1");
    wait_workers(&operator, 1);
    let (c1, c2) = (pki.client(&front, "c1"), pki.client(&front, "c2"));
    assert_eq!(c1.execute("a", T).unwrap(), b"a");
    assert_eq!(c2.execute("b", T).unwrap(), b"b");
    let t = Instant::now();
    pki.revoke("clients", "c1");
    // Its connection stays up, but nothing it sends is obeyed any more.
    wait_until("c1 ignored", T, || refused(c1.ping(SHORT)));
    let stopped = t.elapsed();
    assert!(stopped < Duration::from_secs(2) + SHORT, "c1 still obeyed after {stopped:?}");
    assert!(matches!(c1.execute("late", SHORT), Err(Error::Timeout(_))));
    assert!(operator.status(T).unwrap().auth_failures.clients >= 1);
    assert_eq!(c2.execute("c", T).unwrap(), b"c", "the other client is unaffected");
}

#[test]
fn a_key_rotation_with_overlap_under_load_fails_nothing() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "c_old"), ("operators", "op"), ("workers", "w_old")]);
    let (_broker, front, back) = curve_broker(&dir, &pki, &["--heartbeat-ms", "200"]);
    let operator = pki.client(&front, "op");
    let _old_worker = curve_worker(&dir, &pki, &back, "w_old");
    wait_workers(&operator, 1);
    let run_load = |client: Client| {
        let client = Arc::new(client);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut done, mut failures) = (0usize, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match client.execute(pid_job(), T) {
                            Ok(_) => done += 1,
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (done, failures)
                })
            })
            .collect();
        (stop, handles)
    };
    let finish = |(stop, handles): Load| {
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let done: usize = results.iter().map(|r| r.0).sum();
        let failures: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
        assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(done > 0);
        done
    };
    let old_client = pki.client(&front, "c_old");
    old_client.ping(T).unwrap();
    let old_load = run_load(old_client);
    // Overlap: the new keys are added while the old ones still work.
    pki.allow("workers", "w_new");
    let new_worker = curve_worker(&dir, &pki, &back, "w_new");
    wait_workers(&operator, 2);
    pki.allow("clients", "c_new");
    let new_client = pki.client(&front, "c_new");
    wait_until("the new client key admitted", T, || new_client.ping(SHORT).is_ok());
    let new_load = run_load(new_client);
    // Applications move to the new key; then the old keys are removed.
    let old_done = finish(old_load);
    pki.revoke("clients", "c_old");
    pki.revoke("workers", "w_old");
    wait_until("only the new worker left", T, || {
        operator.status(T).unwrap().workers.iter().map(|w| w.pid).collect::<Vec<_>>() == [new_worker.pid()]
    });
    let since = operator.status(T).unwrap().counters.ok;
    wait_until("jobs on the new worker", T, || operator.status(T).unwrap().counters.ok >= since + 50);
    let new_done = finish(new_load);
    let stale = pki.client(&front, "c_old");
    assert!(refused(stale.ping(SHORT)), "the old client key is refused");
    eprintln!("rotation: {old_done} jobs on the old keys, {new_done} on the new ones, none failed");
}

//! Two broker hosts across network namespaces (CURVE on tcp, the brokers
//! sharing one key pair): worker hosts serve both, a client host drives 4
//! callers and a pipelined client given both fronts. Broker host "a" is
//! killed under load: no request that allows a retry fails, the others get
//! a typed error or an answer, traffic moves to "b" within 2 s, and "a"
//! restarted is used again within 5 s.

mod common;

use std::time::{Duration, Instant};

use common::hostload::Load;
use common::net::Net;
use common::pki::{path, Pki};
use common::*;
use powerhose::{Client, JobRequest};

const T: Duration = Duration::from_secs(10);

struct Deployment {
    net: Net,
    dir: TestDir,
    pki: Pki,
    brokers: Vec<(String, Proc)>,
    _workers: Vec<Proc>,
}

impl Deployment {
    fn start() -> Deployment {
        let net = Net::new(&["a", "b", "w1", "w2", "c"]);
        let dir = TestDir::new();
        let pki = Pki::new(&dir);
        pki.allow_all(&[("clients", "app"), ("operators", "op"), ("workers", "w1"), ("workers", "w2")]);
        let mut d = Deployment { net, dir, pki, brokers: Vec::new(), _workers: Vec::new() };
        for name in ["a", "b"] {
            let broker = d.broker(name);
            d.brokers.push((name.to_string(), broker));
        }
        for host in ["w1", "w2"] {
            let mut cmd = d.net.host(host).command(WORKER);
            cmd.args(["--plugin", &path(&plugin("test_plugin")), "--heartbeat-ms", "200"]);
            for b in ["a", "b"] {
                cmd.args(["--backend", &d.back(b)]);
            }
            cmd.args(d.pki.peer_args(host)).env("POWERHOSE_RUNTIME_DIR", d.dir.path());
            d._workers.push(Proc::spawn_cmd(cmd, &d.dir, &format!("worker-{host}")));
        }
        for b in ["a", "b"] {
            wait_until(&format!("both workers at {b}"), Duration::from_secs(30), || d.registered(b) == 2);
        }
        d
    }

    fn front(&self, host: &str) -> String {
        format!("tcp://{}:5555", self.net.addr(host))
    }

    fn back(&self, host: &str) -> String {
        format!("tcp://{}:5556", self.net.addr(host))
    }

    fn broker(&self, host: &str) -> Proc {
        let mut cmd = self.net.host(host).command(BROKER);
        cmd.args(["--frontend", &self.front(host), "--backend", &self.back(host), "--heartbeat-ms", "200"]);
        cmd.args(self.pki.broker_args()).env("POWERHOSE_RUNTIME_DIR", self.dir.path());
        Proc::spawn_cmd(cmd, &self.dir, &format!("broker-{host}"))
    }

    /// Workers registered at broker `host` (0 when it does not answer), asked from the client host.
    fn registered(&self, host: &str) -> usize {
        self.status(host).map_or(0, |s| s.workers.len())
    }

    fn status(&self, host: &str) -> Option<powerhose::status::BrokerStatus> {
        let (front, op) = (self.front(host), self.pki.credentials("op"));
        self.net
            .host("c")
            .enter(move || Client::connect_with(&front, Some(&op)).ok()?.status(Duration::from_secs(2)).ok())
            .join()
            .unwrap()
    }

    fn load(&self, job: fn() -> JobRequest) -> Load {
        Load::start(self.net.host("c"), vec![self.front("a"), self.front("b")], self.pki.credentials("app"), job)
    }
}

fn retried() -> JobRequest {
    JobRequest::new("").header("action", "sleep").header("ms", "20").retry(2)
}

fn not_retried() -> JobRequest {
    JobRequest::new("").header("action", "sleep").header("ms", "20")
}

#[test]
fn a_broker_host_killed_under_load_costs_no_retried_request_and_returns_to_service() {
    let mut d = Deployment::start();
    let with_retry = d.load(retried);
    let without = d.load(not_retried);
    with_retry.wait_answers(100);
    without.wait_answers(100);
    let both_served = |d: &Deployment| {
        d.status("a").is_some_and(|s| s.counters.ok > 0) && d.status("b").is_some_and(|s| s.counters.ok > 0)
    };
    assert!(both_served(&d), "the load is spread over both brokers");

    let killed = Instant::now();
    d.net.kill_host("a");
    d.brokers.remove(0);
    with_retry.wait_answers(200);
    // Broker "a" back on its host: clients use it again.
    let ok_before = d.status("b").map_or(0, |s| s.counters.ok);
    let restarted = Instant::now();
    let broker = d.broker("a");
    d.brokers.push(("a".into(), broker));
    let deadline = Instant::now() + T;
    let serving = |d: &Deployment| d.status("a").is_some_and(|s| s.counters.ok > 0);
    while !serving(&d) {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&d.brokers.last().unwrap().1.log).unwrap_or_default()
                + &std::fs::read_to_string(&d._workers[0].log).unwrap_or_default();
            panic!("a not serving again: {:?}\n{log}", d.status("a"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let back_in_use = restarted.elapsed();
    let retried_seen = with_retry.finish();
    let plain_seen = without.finish();

    let when: Vec<String> = retried_seen
        .failed_sent
        .iter()
        .map(|t| {
            format!(
                "sent {:?} after the kill, {:?} after the restart",
                t.saturating_duration_since(killed),
                t.saturating_duration_since(restarted)
            )
        })
        .collect();
    let logs: String = d
        ._workers
        .iter()
        .map(|w| std::fs::read_to_string(&w.log).unwrap_or_default())
        .chain(d.brokers.iter().map(|b| std::fs::read_to_string(&b.1.log).unwrap_or_default()))
        .flat_map(|l| l.lines().filter(|l| !l.contains(" INFO ")).map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        retried_seen.failed.is_empty(),
        "{} retried requests failed: {:?} {when:?}\nb: {:?}\n{logs}",
        retried_seen.failed.len(),
        &retried_seen.failed[..retried_seen.failed.len().min(5)],
        (d.status("b").map(|s| s.counters), d.status("a").map(|s| (s.counters, s.workers)))
    );
    // From the kill to the restart: the traffic moved to "b".
    let gap = |seen: &common::hostload::Seen| seen.longest_gap_between(killed, restarted);
    let moved = gap(&retried_seen).max(gap(&plain_seen));
    assert!(moved < Duration::from_secs(2), "no answer for {moved:?} after the kill");
    // Without a retry: the request on the dead broker gets a typed error at once.
    let untyped: Vec<&String> = plain_seen.failed.iter().filter(|e| !e.contains("broker")).collect();
    assert!(untyped.is_empty(), "{untyped:?}");
    assert!(back_in_use < Duration::from_secs(5), "a used again {back_in_use:?} after its restart");
    assert!(d.status("b").map_or(0, |s| s.counters.ok) >= ok_before);
    eprintln!(
        "broker host killed: retried {} ok / 0 failed, unretried {} ok / {} failed ({:?}); longest gap {moved:?}; \
         restarted broker in use after {back_in_use:?}",
        retried_seen.ok,
        plain_seen.ok,
        plain_seen.failed.len(),
        plain_seen.failed.first()
    );
}

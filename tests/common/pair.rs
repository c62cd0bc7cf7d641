//! Two lone brokers, "a" and "b", on ipc endpoints of their own, for the
//! tests of workers and pools that serve several brokers (over ZeroMQ: a
//! client of several brokers takes no unix:// endpoints).

use std::time::Duration;

use powerhose::Client;

use super::{plugin, Proc, TestDir, Transport, BROKER, WORKER};

/// Two lone brokers, "a" and "b", each with its own pair of ipc endpoints.
pub struct Pair {
    pub dir: TestDir,
    pub brokers: Vec<Proc>,
}

impl Pair {
    pub fn start() -> Pair {
        Pair::start_on(Transport::Zmq)
    }

    /// The workers' side (the back) on transport `t`; the fronts are ipc,
    /// which a client of several brokers needs.
    pub fn start_on(t: Transport) -> Pair {
        let dir = TestDir::on(t);
        let brokers = ["a", "b"].iter().map(|n| Pair::broker(&dir, n)).collect();
        Pair { dir, brokers }
    }

    pub fn front(dir: &TestDir, name: &str) -> String {
        format!("ipc://{}/{name}-front.ipc", dir.path().display())
    }

    pub fn back(dir: &TestDir, name: &str) -> String {
        dir.endpoint(&format!("{name}-back"))
    }

    pub fn broker(dir: &TestDir, name: &str) -> Proc {
        let (front, back) = (Pair::front(dir, name), Pair::back(dir, name));
        let args = ["--frontend", &front, "--backend", &back, "--heartbeat-ms", "200"];
        let proc = Proc::spawn(BROKER, &args, dir, &format!("broker-{name}"));
        Client::connect(&front).unwrap().ping(Duration::from_secs(30)).unwrap();
        proc
    }

    pub fn client(&self, name: &str) -> Client {
        Client::connect(&Pair::front(&self.dir, name)).unwrap()
    }

    /// A test_plugin worker on the brokers named.
    pub fn worker(&self, brokers: &[&str], name: &str) -> Proc {
        let plugin = plugin("test_plugin");
        let mut args = vec!["--plugin".to_string(), plugin.to_str().unwrap().into()];
        for b in brokers {
            args.extend(["--backend".into(), Pair::back(&self.dir, b)]);
        }
        args.extend(["--heartbeat-ms".into(), "200".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(WORKER, &args, &self.dir, name)
    }
}

//! Readiness for systemd's `Type=notify`: the broker says `READY=1` once
//! bound, a worker once registered (with its pid), a `powerhose` pool once
//! its workers serve; a pool's workers never write to the pool's own
//! `$NOTIFY_SOCKET` (systemd would refuse them as not the main process).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A datagram socket standing in for systemd's, and the notifications it got.
struct FakeSystemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    fn bind(dir: &TestDir) -> FakeSystemd {
        let path = dir.path().join("systemd-notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        FakeSystemd { socket, path }
    }

    fn command(&self, program: &str, args: &[&str], dir: &TestDir) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).env("POWERHOSE_RUNTIME_DIR", dir.path()).env("NOTIFY_SOCKET", &self.path);
        // Not the test runner's own watchdog, if it has one.
        cmd.env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
        cmd
    }

    /// Every notification that arrives within `wait`.
    fn collect(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }

    /// Waits (bounded) for a notification containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(needle) {
                    return text;
                }
            }
        }
        panic!("no notification with {needle:?} within 30 s");
    }
}

#[test]
fn broker_and_worker_say_ready_when_they_serve() {
    let dir = TestDir::new();
    let systemd = FakeSystemd::bind(&dir);
    let (front, back) = (dir.front(), dir.back());
    let cmd = systemd.command(BROKER, &["--frontend", &front, "--backend", &back], &dir);
    let _broker = Proc::spawn_cmd(cmd, &dir, "broker");
    let ready = systemd.wait_for("READY=1");
    assert!(ready.contains(&format!("STATUS=serving {front}")), "{ready}");
    // The broker answers by then: READY means bound.
    dir.client().ping(Duration::from_secs(1)).unwrap();
    let plugin = plugin("echo");
    let cmd = systemd.command(WORKER, &["--plugin", plugin.to_str().unwrap(), "--backend", &back], &dir);
    let worker = Proc::spawn_cmd(cmd, &dir, "worker");
    let ready = systemd.wait_for("READY=1");
    assert!(ready.contains(&format!("MAINPID={}", worker.pid())), "{ready}");
    assert_eq!(dir.client().execute("x", Duration::from_secs(10)).unwrap(), b"x");
}

#[test]
fn a_pool_says_ready_once_and_its_workers_never_use_its_socket() {
    let dir = TestDir::new();
    let systemd = FakeSystemd::bind(&dir);
    let plugin = plugin("echo");
    let (front, back) = (dir.front(), dir.back());
    let args = ["--plugin", plugin.to_str().unwrap(), "--workers", "2", "--frontend", &front, "--backend", &back];
    let mut pool = Proc::spawn_cmd(systemd.command(POWERHOSE, &args, &dir), &dir, "powerhose");
    pool.wait_line("powerhose ready", Duration::from_secs(60));
    let ready = systemd.wait_for("READY=1");
    assert!(ready.contains("2 workers"), "{ready}");
    // Nothing else: the workers' READY went nowhere near this socket.
    let more = systemd.collect(Duration::from_millis(500));
    assert!(more.is_empty(), "{more:?}");
    assert_eq!(dir.client().execute("y", Duration::from_secs(10)).unwrap(), b"y");
}

impl FakeSystemd {
    /// How many of the notifications within `wait` say `WATCHDOG=1`.
    fn watchdogs(&self, wait: Duration) -> usize {
        self.collect(wait).iter().filter(|n| n.lines().any(|l| l == "WATCHDOG=1")).count()
    }
}

/// The process's state letter in /proc (`T`: stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

/// `WatchdogSec=` gives `WATCHDOG_USEC`: 200 ms here, so `WATCHDOG=1` is
/// due every 100 ms, from the broker's loop: a broker that is stopped (or
/// hangs) falls silent, and systemd would restart it.
#[test]
fn a_broker_feeds_the_watchdog_while_its_loop_turns_and_not_while_stopped() {
    let dir = TestDir::new();
    let systemd = FakeSystemd::bind(&dir);
    let (front, back) = (dir.front(), dir.back());
    let mut cmd = systemd.command(BROKER, &["--frontend", &front, "--backend", &back], &dir);
    cmd.env("WATCHDOG_USEC", "200000");
    let broker = Proc::spawn_cmd(cmd, &dir, "broker");
    systemd.wait_for("READY=1");
    let fed = systemd.watchdogs(Duration::from_secs(1));
    assert!(fed >= 4, "{fed} WATCHDOG=1 in 1 s, expected about 10");
    broker.signal(libc::SIGSTOP);
    wait_until("the broker to stop", Duration::from_secs(10), || state(broker.pid()) == 'T');
    // What it sent before it stopped.
    systemd.collect(Duration::from_millis(200));
    let fed = systemd.watchdogs(Duration::from_secs(1));
    assert_eq!(fed, 0, "a stopped broker fed the watchdog");
    broker.signal(libc::SIGCONT);
    systemd.wait_for("WATCHDOG=1");
    dir.client().ping(Duration::from_secs(5)).unwrap();
}

/// `WATCHDOG_PID` names the process systemd watches: another's watchdog
/// (a variable inherited from a parent) is not fed.
#[test]
fn a_watchdog_meant_for_another_pid_is_not_fed() {
    let dir = TestDir::new();
    let systemd = FakeSystemd::bind(&dir);
    let (front, back) = (dir.front(), dir.back());
    let mut cmd = systemd.command(BROKER, &["--frontend", &front, "--backend", &back], &dir);
    cmd.env("WATCHDOG_USEC", "200000").env("WATCHDOG_PID", std::process::id().to_string());
    let _broker = Proc::spawn_cmd(cmd, &dir, "broker");
    systemd.wait_for("READY=1");
    assert_eq!(systemd.watchdogs(Duration::from_secs(1)), 0);
}

/// A pool feeds the watchdog from its broker's loop, or with `--connect`
/// (no broker here) from its supervisor's.
#[test]
fn pools_feed_the_watchdog_with_and_without_a_broker_of_their_own() {
    let dir = TestDir::new();
    let systemd = FakeSystemd::bind(&dir);
    let plugin = plugin("echo");
    let (front, back) = (dir.front(), dir.back());
    let args = ["--plugin", plugin.to_str().unwrap(), "--workers", "2", "--frontend", &front, "--backend", &back];
    let mut cmd = systemd.command(POWERHOSE, &args, &dir);
    cmd.env("WATCHDOG_USEC", "200000");
    let mut pool = Proc::spawn_cmd(cmd, &dir, "powerhose");
    pool.wait_line("powerhose ready", Duration::from_secs(60));
    systemd.wait_for("READY=1");
    let fed = systemd.watchdogs(Duration::from_secs(1));
    assert!(fed >= 4, "pool with a broker: {fed} WATCHDOG=1 in 1 s, expected about 10");
    drop(pool);

    let _broker = start_broker(&dir, &[]);
    let args = ["--plugin", plugin.to_str().unwrap(), "--workers", "2", "--connect", &back];
    let mut cmd = systemd.command(POWERHOSE, &args, &dir);
    cmd.env("WATCHDOG_USEC", "200000");
    let mut pool = Proc::spawn_cmd(cmd, &dir, "powerhose-connect");
    pool.wait_line("powerhose ready", Duration::from_secs(60));
    systemd.wait_for("READY=1");
    let fed = systemd.watchdogs(Duration::from_secs(1));
    assert!(fed >= 4, "pool with --connect: {fed} WATCHDOG=1 in 1 s, expected about 10");
    assert_eq!(dir.client().execute("z", Duration::from_secs(10)).unwrap(), b"z");
}

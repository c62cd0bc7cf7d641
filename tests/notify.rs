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

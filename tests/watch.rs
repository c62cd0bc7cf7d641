//! `powerhose-broker --status --watch` on a real terminal: tmux runs it in a
//! pane of 160x50, and its screen is read with `capture-pane`. Every wait is
//! a bounded poll on the screen's text.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(20);

/// A tmux server of this test's own (`-L`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let version = Command::new("tmux").arg("-V").output().expect("tmux is needed (.ci/run installs it)");
        assert!(version.status.success(), "{version:?}");
        Tmux { socket: format!("powerhose-{name}-{}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).env_remove("TMUX").output().unwrap()
    }

    /// A detached session of 160x50 running `command` (through `sh -c`).
    fn start(&self, session: &str, command: &str) {
        let out = self.run(&["new-session", "-d", "-x", "160", "-y", "50", "-s", session, command]);
        assert!(out.status.success(), "{out:?}");
    }

    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
    }

    /// Waits until the screen holds `needle`; returns the screen.
    fn wait_for(&self, session: &str, needle: &str) -> String {
        let mut screen = String::new();
        wait_until(&format!("{needle:?} on the screen"), T, || {
            screen = self.screen(session);
            screen.contains(needle)
        });
        screen
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let out = self.run(&[&["send-keys", "-t", session][..], keys].concat());
        assert!(out.status.success(), "{out:?}");
    }

    fn pane_pid(&self, session: &str) -> u32 {
        let out = self.run(&["display-message", "-p", "-t", session, "#{pane_pid}"]);
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    }

    fn has_session(&self, session: &str) -> bool {
        self.run(&["has-session", "-t", session]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        // A server that ended with its last session leaves its socket file.
        let tmp = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(format!("{tmp}/tmux-{uid}/{}", self.socket));
    }
}

fn watch_command(dir: &TestDir) -> String {
    format!("{BROKER} --status --watch --frontend {}", dir.front())
}

#[test]
fn the_table_is_redrawn_in_place_with_new_counts_until_ctrl_c() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    // No lane: the broker counts each job as it is answered.
    let _worker = start_worker(&dir, "echo", &["--no-lanes"], "worker");
    let tmux = Tmux::new("watch");
    // exec: the pane's process is the watch itself.
    tmux.start("w", &format!("exec {}", watch_command(&dir)));
    let watcher = tmux.pane_pid("w");
    tmux.wait_for("w", "jobs: ok 0,");

    let client = dir.client();
    for i in 0..3 {
        client.execute(JobRequest::new(format!("job {i}")), T).unwrap();
    }
    let screen = tmux.wait_for("w", "jobs: ok 3,");
    // One table, drawn over the last: not several stacked.
    assert_eq!(screen.matches("broker pid ").count(), 1, "{screen}");
    assert_eq!(screen.matches("jobs: ok").count(), 1, "{screen}");
    assert!(screen.starts_with(&format!("{} every 1 s; q or Ctrl-C quits", dir.front())), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("echo ")), "the service's line: {screen}");

    tmux.keys("w", &["C-c"]);
    wait_until("the watch to end on Ctrl-C", T, || !alive(watcher));
    wait_until("its session to end", T, || !tmux.has_session("w"));
}

#[test]
fn a_broker_gone_shows_no_answer_until_it_is_back_and_q_restores_the_terminal() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &[]);
    let tmux = Tmux::new("gone");
    // In a shell, to see the terminal it gets back.
    tmux.start("g", "PS1='$ ' sh");
    tmux.keys("g", &[&format!("{}; echo watch ended: $?", watch_command(&dir)), "Enter"]);
    tmux.wait_for("g", "jobs: ok 0,");

    drop(broker);
    let screen = tmux.wait_for("g", "no answer: ");
    assert!(screen.contains("last answer "), "the last table stays below: {screen}");
    assert_eq!(screen.matches("broker pid ").count(), 1, "{screen}");

    // Asked again every second: a new broker on the endpoint shows.
    let _broker = start_broker(&dir, &[]);
    wait_until("the table without \"no answer\"", T, || {
        let screen = tmux.screen("g");
        screen.contains("jobs: ok 0,") && !screen.contains("no answer")
    });

    tmux.keys("g", &["q"]);
    let screen = tmux.wait_for("g", "watch ended: 0");
    // Off the alternate screen: the table is gone, the command line is back.
    assert!(!screen.contains("jobs: ok"), "{screen}");
    assert!(screen.contains("--status --watch"), "{screen}");
    // Echo is back on: what is typed shows.
    tmux.keys("g", &["echo typed", "Enter"]);
    let screen = tmux.wait_for("g", "$ echo typed");
    assert!(screen.lines().any(|l| l == "typed"), "{screen}");
}

#[test]
fn on_a_pipe_it_prints_one_json_report_a_line_until_ctrl_c() {
    let dir = TestDir::new();
    let broker = start_broker(&dir, &[]);
    let front = dir.front();
    let args = ["--status", "--watch", "--json", "--interval", "0.2", "--frontend", front.as_str()];
    let mut watch = Proc::spawn(BROKER, &args, &dir, "watch");
    for _ in 0..2 {
        let line = watch.wait_line("\"status\"", T);
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (report["frontend"].as_str(), report["status"]["pid"].as_u64()),
            (Some(front.as_str()), Some(u64::from(broker.pid())))
        );
    }
    drop(broker);
    let line = watch.wait_line("\"error\"", T);
    assert!(serde_json::from_str::<serde_json::Value>(&line).unwrap()["error"].is_string(), "{line}");
    watch.signal(libc::SIGINT);
    assert_eq!(watch.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", watch.stderr());

    let out =
        Command::new(BROKER).args(["--status", "--watch", "--interval", "0", "--frontend", &front]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "powerhose-broker: error: --interval must be more than 0 seconds\n"
    );
}

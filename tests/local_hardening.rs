//! Local hardening (issue #14, item 6): what a hostile or careless local user
//! can do to a broker through its sockets, its runtime directory and its
//! lock files, and what `--purge-ghosts` must never do to a live broker.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::raw::RawPeer;
use common::*;

const T: Duration = Duration::from_secs(10);

/// A directory `name` in the test's directory, with exactly `mode`.
fn subdir(dir: &TestDir, name: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_req_client_sending_too_many_frames_gets_an_answer() {
    let dir = TestDir::zmq();
    let broker = start_broker(&dir, &[]);
    let (_ctx, req) = front_socket(&dir, zmq::REQ);
    // REQ adds the empty delimiter: the broker reads 6 frames after the identity.
    let body: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 3]).collect();
    req.send_multipart(&body, 0).unwrap();
    let reply = String::from_utf8(req.recv_bytes(0).expect("an answer within 5 s")).unwrap();
    assert!(reply.starts_with(&format!("{}:ERROR:", broker.pid())), "{reply}");
    assert!(reply.contains("after the envelope"), "{reply}");
    assert_eq!(dir.client().status(T).unwrap().counters.bad_requests, 1);
}

/// Runs `powerhose-broker ARGS`, which must exit within [`T`]: (exit code, stderr).
fn broker_cmd(dir: &TestDir, args: &[&str], name: &str) -> (i32, String) {
    let mut proc = Proc::spawn(BROKER, args, dir, name);
    let status = proc.wait_exit(T).unwrap_or_else(|| panic!("{name} still running after {T:?}: {}", proc.stderr()));
    (status.code().unwrap_or(-1), proc.stderr())
}

#[test]
fn a_planted_lock_symlink_is_refused_and_its_target_untouched() {
    let dir = TestDir::new();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let lock = std::path::PathBuf::from(format!("{}.lock", dir.socket("front").display()));
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let (code, err) = broker_cmd(&dir, &["--frontend", &dir.front(), "--backend", &dir.back()], "broker");
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("lock file {} is a symlink: refusing to use it", lock.display())), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_lock_file_of_another_user_is_refused_without_its_pid() {
    let dir = TestDir::new();
    let lock = std::path::PathBuf::from(format!("{}.lock", dir.socket("front").display()));
    std::fs::write(&lock, b"4242").unwrap();
    std::os::unix::fs::chown(&lock, Some(65534), None).unwrap();
    let (code, err) = broker_cmd(&dir, &["--frontend", &dir.front(), "--backend", &dir.back()], "broker");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is owned by uid 65534: refusing to use it"), "{err}");
    assert!(!err.contains("4242"), "an attacker-chosen pid is not shown: {err}");
    assert_eq!(std::fs::read(&lock).unwrap(), b"4242");
}

#[test]
fn a_runtime_directory_open_to_others_is_refused_not_chmodded() {
    let dir = TestDir::new();
    let runtime = subdir(&dir, "rt", 0o777);
    let mut cmd = std::process::Command::new(BROKER);
    cmd.env("POWERHOSE_RUNTIME_DIR", &runtime);
    let mut broker = Proc::spawn_cmd(cmd, &dir, "broker");
    let status = broker.wait_exit(T).unwrap_or_else(|| panic!("the broker started: {}", broker.stderr()));
    let err = broker.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let path = runtime.display();
    assert!(err.contains(&format!("runtime directory {path} is not private: mode 777")), "{err}");
    assert!(err.contains(&format!("chmod 700 {path}")), "{err}");
    assert_eq!(std::fs::metadata(&runtime).unwrap().mode() & 0o777, 0o777, "left as found");
    assert_eq!(std::fs::read_dir(&runtime).unwrap().count(), 0, "nothing created in it");
}

both_transports! {
    fn socket_files_are_0600_even_outside_the_runtime_directory(t) {
        let dir = TestDir::on(t);
        let elsewhere = subdir(&dir, "shared", 0o755);
        let (scheme, ext) = if t == Transport::Local { ("unix", "sock") } else { ("ipc", "ipc") };
        let (front, back) = (elsewhere.join(format!("front.{ext}")), elsewhere.join(format!("back.{ext}")));
        let (front_ep, back_ep) = (format!("{scheme}://{}", front.display()), format!("{scheme}://{}", back.display()));
        let broker = Proc::spawn(BROKER, &["--frontend", &front_ep, "--backend", &back_ep], &dir, "broker");
        let client = powerhose::Client::connect(&front_ep).unwrap();
        assert_eq!(client.ping(T).unwrap_or_else(|e| panic!("{e}: {}", broker.stderr())), broker.pid());
        for socket in [&front, &back] {
            assert_eq!(std::fs::metadata(socket).unwrap().mode() & 0o777, 0o600, "{}", socket.display());
        }
    }
}

#[test]
fn purge_ghosts_spares_a_stopped_broker_unless_forced() {
    let dir = TestDir::new();
    let front = dir.front();
    let broker = start_broker(&dir, &[]);
    broker.signal(libc::SIGSTOP);
    wait_until("the broker to stop", T, || powerhose::ghosts::stopped(broker.pid()));
    let purge = |extra: &[&str], name: &str| {
        let mut args = vec!["--purge-ghosts", "--frontend", &front, "--timeout", "0.3", "--grace", "0.3"];
        args.extend_from_slice(extra);
        let report = dir.path().join(format!("{name}.out"));
        let mut cmd = std::process::Command::new(BROKER);
        cmd.args(&args).env("POWERHOSE_RUNTIME_DIR", dir.path());
        let stdout = std::fs::File::create(&report).unwrap();
        let mut proc = Proc::spawn_cmd_to(cmd, stdout.into(), &dir, name);
        assert_eq!(proc.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", proc.stderr());
        std::fs::read_to_string(&report).unwrap()
    };
    let out = purge(&[], "purge");
    assert!(out.contains(&format!("ghost broker pid {}", broker.pid())), "{out}");
    assert!(out.contains("spared: stopped") && out.contains("--force"), "{out}");
    assert!(alive(broker.pid()), "a stopped broker is not killed without --force");
    // Resumed, it is the live broker again, and never a ghost.
    broker.signal(libc::SIGCONT);
    assert_eq!(dir.client().ping(T).unwrap(), broker.pid());
    let out = purge(&["--force"], "purge-live");
    assert!(out.contains(&format!("live broker on {front}: pid {} (spared)", broker.pid())), "{out}");
    assert!(out.contains("no ghost brokers"), "{out}");
    assert!(alive(broker.pid()));
}

both_transports! {
    /// 50,000 one-byte garbage messages once wrote 5.2 MB of warnings: now each
    /// kind logs a few lines a second and one "suppressed N" line, while every
    /// message is still counted.
    fn a_flood_of_garbage_is_counted_in_full_but_logged_in_few_lines(t) {
        let dir = TestDir::on(t);
        let broker = start_broker(&dir, &[]);
        let mut stranger = RawPeer::front(&dir);
        for _ in 0..50_000 {
            stranger.send(&[b"x"]);
        }
        let client = dir.client();
        wait_until("every garbage message counted", T, || client.status(T).unwrap().counters.bad_requests == 50_000);
        wait_until("the suppressed count reported", T, || broker.stderr().contains("suppressed"));
        let log = broker.stderr();
        assert!(log.len() < 50_000, "{} bytes of log", log.len());
        let lines = log.lines().filter(|l| l.contains("unanswerable client message dropped")).count();
        assert!(lines <= 100, "{lines} warning lines");
    }
}

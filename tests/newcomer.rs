//! What a newcomer meets first: the client's output on a terminal, help texts
//! that say one thing, exit codes that match the README, one-line errors.

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// A file holding `data`, for a client's stdin (`run -`): job data need not be UTF-8.
fn input(dir: &TestDir, data: &[u8]) -> std::fs::File {
    let path = dir.path().join("input");
    std::fs::write(&path, data).unwrap();
    std::fs::File::open(path).unwrap()
}

/// Runs `powerhose-client run -` on `data` with a pseudo-terminal as stdout;
/// returns (exit code, what the terminal showed, stderr).
fn run_on_a_terminal(dir: &TestDir, data: &[u8], extra: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty fills two fds we then own; no name, termios or size given.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are open and ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = Command::new(CLIENT);
    cmd.args(["--frontend", &dir.front(), "run", "-"]).args(extra).stdin(input(dir, data));
    let mut proc = Proc::spawn_cmd_to(cmd, Stdio::from(slave), dir, "client");
    // The last slave fd is the child's now (ours went with `cmd`), so reading
    // the master ends (EIO) once the child exits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut shown = Vec::new();
        let _ = std::fs::File::from(master).read_to_end(&mut shown);
        let _ = tx.send(shown);
    });
    let status = proc.wait_exit(Duration::from_secs(20)).expect("the client exits");
    let shown = rx.recv_timeout(Duration::from_secs(10)).expect("the terminal closes");
    (status.code(), shown, proc.stderr())
}

#[test]
fn the_client_ends_text_with_a_newline_and_keeps_binary_off_a_terminal() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let _worker = start_worker(&dir, "echo", &[], "worker");

    let (code, shown, stderr) = run_on_a_terminal(&dir, b"hello", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    // The terminal turns "\n" into "\r\n".
    assert_eq!(String::from_utf8_lossy(&shown), "hello\r\n");
    assert_eq!(stderr, "");

    let binary = b"\xff\xfe\x80";
    let (code, shown, stderr) = run_on_a_terminal(&dir, binary, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(shown.is_empty(), "{shown:?}");
    assert_eq!(stderr, "powerhose-client: the result is 3 bytes of binary data; use --print-hex or redirect stdout\n");

    // --print-hex, and the old --hex, show it on the terminal.
    for flag in ["--print-hex", "--hex"] {
        let (code, shown, stderr) = run_on_a_terminal(&dir, binary, &[flag]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&shown), "fffe80\r\n", "{flag}");
    }

    // A pipe gets the bytes exactly, as before.
    let client = || {
        let mut cmd = Command::new(CLIENT);
        cmd.args(["--frontend", &dir.front(), "run", "-"]);
        cmd
    };
    let out = client().stdin(input(&dir, binary)).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\xff\xfe\x80");
    let out = client().stdin(input(&dir, b"hello")).output().unwrap();
    assert_eq!(out.stdout, b"hello");
}

#[test]
fn client_help_shows_one_default_per_flag_and_what_print_hex_is_about() {
    let out = Command::new(CLIENT).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let service = help.lines().find(|l| l.contains("--service")).expect("--service in help");
    assert_eq!(service.matches("[default:").count(), 1, "{service}");
    let print_hex = help.lines().find(|l| l.contains("--print-hex")).expect("--print-hex in help");
    assert!(print_hex.contains("result"), "{print_hex}");
    assert!(!help.contains("--hex "), "the old name stays hidden:\n{help}");
}

/// Runs a program to its end; returns (exit code, stderr).
fn exit_and_stderr(program: &str, args: &[&str], dir: &TestDir) -> (Option<i32>, String) {
    let mut proc = Proc::spawn(program, args, dir, "run");
    let status = proc.wait_exit(Duration::from_secs(30)).expect("it exits");
    (status.code(), proc.stderr())
}

#[test]
fn bad_params_are_bad_flags() {
    let dir = TestDir::new();
    let echo = plugin("echo");
    let (front, back) = (dir.front(), dir.back());
    let plugin_args = ["--plugin", echo.to_str().unwrap(), "--backend", &back, "--params", "{bad json"];
    for (program, name, extra) in
        [(WORKER, "powerhose-worker", &[][..]), (POWERHOSE, "powerhose", &["--frontend", &front][..])]
    {
        let mut args = plugin_args.to_vec();
        args.extend_from_slice(extra);
        let (code, stderr) = exit_and_stderr(program, &args, &dir);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with(&format!("{name}: error: --params is not valid JSON")), "{stderr}");
    }
}

#[test]
fn check_without_a_socket_file_fails_at_once_and_creates_nothing() {
    let dir = TestDir::new();
    let runtime = dir.path().join("not-yet");
    let mut cmd = Command::new(BROKER);
    cmd.args(["--check", "--timeout", "10"]).env("POWERHOSE_RUNTIME_DIR", &runtime);
    let t = std::time::Instant::now();
    let mut proc = Proc::spawn_cmd(cmd, &dir, "check");
    let status = proc.wait_exit(Duration::from_secs(20)).expect("the check exits");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(status.code(), Some(2), "{}", proc.stderr());
    let line = proc.wait_line("CRITICAL", Duration::from_secs(5));
    let socket = runtime.join("front.sock");
    assert_eq!(line, format!("CRITICAL - no broker on unix://{0}: {0} does not exist", socket.display()));
    assert!(!runtime.exists(), "the check created {}", runtime.display());
}

/// Runs `powerhose --plugin PLUGIN [extra]` to its end; returns (exit code, stderr).
fn powerhose(dir: &TestDir, plugin: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let (front, back) = (dir.front(), dir.back());
    let mut args =
        vec!["--plugin", plugin.to_str().unwrap(), "--workers", "2", "--frontend", &front, "--backend", &back];
    args.extend_from_slice(extra);
    exit_and_stderr(POWERHOSE, &args, dir)
}

fn assert_one_error_line(stderr: &str, cause: &str) {
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.starts_with("powerhose: error: plugin "), "{stderr}");
    assert!(stderr.contains(cause), "expected {cause:?} in {stderr}");
}

#[test]
fn a_plugin_that_cannot_start_is_one_line_and_exit_3_under_powerhose() {
    let dir = TestDir::new();
    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(&garbage, "not a library\n".repeat(20)).unwrap();
    let (code, stderr) = powerhose(&dir, &garbage, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert_one_error_line(&stderr, "cannot be loaded as a shared library");

    let test_plugin = plugin("test_plugin");
    let (code, stderr) = powerhose(&dir, &test_plugin, &["--params", r#"{"fail_init": "no key"}"#]);
    assert_eq!(code, Some(3), "{stderr}");
    assert_one_error_line(&stderr, "failed to initialise: no key");
    assert!(dir.leftovers().is_empty(), "nothing was bound: {:?}", dir.leftovers());
}

#[test]
fn an_abi_mismatch_is_one_line_and_debug_shows_the_details_instead_of_pointing_at_them() {
    let dir = TestDir::new();
    let mismatch = incompatible_plugin();
    let (code, stderr) = powerhose(&dir, &mismatch, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert_one_error_line(&stderr, "was built against an incompatible powerhose-plugin-api");
    assert!(stderr.contains("(details with --debug)"), "{stderr}");

    let (code, stderr) = powerhose(&dir, &mismatch, &["--debug"]);
    assert_eq!(code, Some(3), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("powerhose: error: plugin ") && !errors[0].contains("with --debug"), "{stderr}");
    assert!(stderr.len() > 1000, "--debug shows abi_stable's report ({} bytes)", stderr.len());
}

/// The README's "Writing a plugin" crate as `cargo new --lib` makes it today
/// (edition 2024), outside the workspace, with plugin-api by absolute path.
#[test]
fn an_edition_2024_plugin_from_outside_the_repo_builds_and_serves() {
    let ws = env!("CARGO_MANIFEST_DIR");
    let manifest = format!(
        "[package]\nname = \"upper2024\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\npowerhose-plugin-api = {{ path = \"{ws}/plugin-api\" }}\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n"
    );
    let source = "use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};\n\
        pub struct Upper;\n\
        impl Plugin for Upper {\n\
            fn init(_params: &Params) -> Result<Self, String> { Ok(Upper) }\n\
            fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> { Ok(job.data().to_ascii_uppercase()) }\n\
        }\n\
        export_plugin!(Upper);\n"
        .to_string();
    let files = [("plugin/Cargo.toml", manifest), ("plugin/src/lib.rs", source)];
    let upper = build_fixture("upper2024", &files, "plugin", "upper2024");

    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let back = dir.back();
    let args = ["--plugin", upper.to_str().unwrap(), "--backend", &back];
    let worker = Proc::spawn(WORKER, &args, &dir, "worker");
    let client = dir.client();
    wait_until("the worker to register", Duration::from_secs(30), || {
        assert!(worker.stderr().lines().all(|l| !l.contains("error")), "{}", worker.stderr());
        client.workers("upper2024", Duration::from_secs(5)).unwrap() == 1
    });
    let result = client.execute(powerhose::JobRequest::new("hello"), Duration::from_secs(10)).unwrap();
    assert_eq!(result, b"HELLO");
}

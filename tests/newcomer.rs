//! What a newcomer meets first: exit codes that match the README, one-line errors.

mod common;

use std::time::Duration;

use common::*;

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

//! Every way a plugin can fail to load gives one readable line naming the file
//! and the cause, and exit status 3; never a panic, a backtrace or a layout dump.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `powerhose-worker --plugin PATH [extra]` and returns (exit code, stderr).
fn load(dir: &TestDir, plugin: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--plugin", plugin.to_str().unwrap(), "--backend", "ipc:///nonexistent/never.ipc"];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(WORKER, &args, dir, "worker");
    let status = proc.wait_exit(Duration::from_secs(20)).expect("the worker exits");
    (status.code(), proc.stderr())
}

fn assert_one_line(stderr: &str, plugin: &Path, cause: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line expected, got:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("powerhose-worker: error: plugin "), "{line}");
    assert!(line.contains(&*plugin.to_string_lossy()), "names the file: {line}");
    assert!(line.contains(cause), "expected {cause:?} in: {line}");
    assert!(!line.contains("panicked") && !line.contains("backtrace"), "{line}");
    assert!(line.len() < 400, "one short line, got {} bytes", line.len());
}

#[test]
fn missing_file() {
    let dir = TestDir::new();
    let path = dir.path().join("libmissing.so");
    let (code, stderr) = load(&dir, &path, &[]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &path, "not found");
}

#[test]
fn not_a_shared_library() {
    let dir = TestDir::new();
    let path = dir.path().join("libtext.so");
    // Longer than an ELF header, so the loader reads it and rejects the magic.
    std::fs::write(&path, "this is a text file, not an ELF object\n".repeat(4)).unwrap();
    let (code, stderr) = load(&dir, &path, &[]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &path, "cannot be loaded as a shared library (invalid ELF header)");
}

#[test]
fn shared_library_without_a_root_module() {
    let dir = TestDir::new();
    let src = dir.path().join("plain.c");
    std::fs::write(&src, "int plain(void) { return 1; }\n").unwrap();
    let path = dir.path().join("libplain.so");
    let status = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&path).arg(&src).status().unwrap();
    assert!(status.success());
    let (code, stderr) = load(&dir, &path, &[]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &path, "is not a powerhose plugin");
}

#[test]
fn init_failures_name_the_plugin_and_the_message() {
    let dir = TestDir::new();
    let test_plugin = plugin("test_plugin");
    let (code, stderr) = load(&dir, &test_plugin, &["--params", r#"{"fail_init": "database password missing"}"#]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &test_plugin, "failed to initialise: database password missing");

    let crypto = plugin("crypto_job");
    let (code, stderr) = load(&dir, &crypto, &["--params", r#"{"ed25519_seed": "zz"}"#]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &crypto, "failed to initialise: ed25519_seed: Invalid character");

    // A panic inside init is caught by the plugin, not a crash of the worker.
    let (code, stderr) = load(&dir, &test_plugin, &["--params", r#"{"panic_init": true}"#]);
    assert_eq!(code, Some(3));
    assert!(stderr.lines().last().unwrap().contains("init panicked: test plugin panics in init"), "{stderr}");
}

#[test]
fn the_powerhose_command_reports_a_bad_plugin_and_exits_3() {
    let dir = TestDir::new();
    let front = dir.front();
    let mut proc =
        Proc::spawn(POWERHOSE, &["--plugin", "libnothere.so", "--workers", "1", "--frontend", &front], &dir, "ph");
    let status = proc.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(3));
    let stderr = proc.stderr();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("plugin libnothere.so: not found"), "{stderr}");
    // A plugin found but failing in init: tests/newcomer.rs (one line, exit 3, nothing bound).
}

#[test]
fn plugin_built_against_an_incompatible_interface_is_refused_at_load() {
    let dir = TestDir::new();
    let path = incompatible_plugin();
    let (code, stderr) = load(&dir, &path, &[]);
    assert_eq!(code, Some(3));
    assert_one_line(&stderr, &path, "was built against an incompatible powerhose-plugin-api");
    // The full report is there for whoever asks.
    let (code, stderr) = load(&dir, &path, &["--debug"]);
    assert_eq!(code, Some(3));
    assert!(stderr.len() > 1000, "--debug shows abi_stable's report ({} bytes)", stderr.len());
}

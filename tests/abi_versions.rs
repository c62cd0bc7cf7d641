//! Plugins built against older releases of plugin-api keep working: the
//! ABI grows only by appending (see plugin-api's evolution rules), so a
//! plugin built on a frozen copy of 0.1.0 (`tests/fixtures/plugin-api-0.1.0`,
//! never edited) loads and serves on the current worker; a worker that
//! requires what 0.1.0 lacks refuses it in one line.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use powerhose::JobRequest;

const T: Duration = Duration::from_secs(10);

/// A plugin written as a 0.1.0 author wrote one, built on the frozen 0.1.0 crate.
fn plugin_on_0_1_0() -> PathBuf {
    let frozen = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugin-api-0.1.0");
    let read = |path: &str| std::fs::read_to_string(frozen.join(path)).unwrap();
    let mut files: Vec<(String, String)> = ["Cargo.toml", "src/lib.rs", "src/abi.rs", "src/author.rs"]
        .iter()
        .map(|path| (format!("plugin-api/{path}"), read(path)))
        .collect();
    let manifest = "[package]\nname = \"old_abi\"\nversion = \"1.0.0\"\nedition = \"2021\"\n\n[lib]\n\
                    crate-type = [\"cdylib\"]\n\n[dependencies]\npowerhose-plugin-api = { path = \"../plugin-api\" }\n\n\
                    [workspace]\n";
    let source = r#"//! A plugin of the 0.1.0 era: answers "NAME=VALUE;" for each header, then the data.
use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};

pub struct Old;

impl Plugin for Old {
    fn init(_params: &Params) -> Result<Self, String> {
        Ok(Old)
    }

    fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> {
        if job.data() == b"fail" {
            return Err("failing as asked".into());
        }
        let mut out = Vec::new();
        for (name, value) in job.headers() {
            out.extend_from_slice(format!("{name}={value};").as_bytes());
        }
        out.extend_from_slice(job.data());
        Ok(out)
    }
}

export_plugin!(Old);
"#;
    files.push(("plugin/Cargo.toml".into(), manifest.to_string()));
    files.push(("plugin/src/lib.rs".into(), source.to_string()));
    let files: Vec<(&str, String)> = files.iter().map(|(path, text)| (path.as_str(), text.clone())).collect();
    build_fixture("abi-0.1.0", &files, "plugin", "old_abi")
}

#[test]
fn a_plugin_built_against_plugin_api_0_1_0_loads_and_serves_on_this_worker() {
    let plugin = plugin_on_0_1_0();
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let back = dir.back();
    let mut worker = Proc::spawn(WORKER, &["--plugin", plugin.to_str().unwrap(), "--backend", &back], &dir, "old-abi");
    let client = dir.client();
    wait_until("the 0.1.0 plugin's worker to register", T, || {
        assert!(worker.child.try_wait().unwrap().is_none(), "the worker exited: {}", worker.stderr());
        client.workers("", T).is_ok_and(|n| n == 1)
    });
    let answer = client.execute(JobRequest::new("data").header("a", "1").header("b", "2"), T).unwrap();
    assert_eq!(answer, b"a=1;b=2;data");
    match client.execute("fail", T) {
        Err(powerhose::Error::Handler { message, .. }) => assert_eq!(message, "failing as asked"),
        other => panic!("expected the plugin's error, got {other:?}"),
    }
}

/// `powerhose-worker --check-plugin` with `args`: its exit code and stderr.
fn check(plugin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(WORKER)
        .args(["--plugin", plugin.to_str().unwrap(), "--check-plugin"])
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_worker_that_requires_a_newer_plugin_api_refuses_an_older_plugin_in_one_line() {
    let old = plugin_on_0_1_0();
    let (code, stderr) = check(&old, &["--require-plugin-api", "0.1.1"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("was built against powerhose-plugin-api 0.1.0, older than the 0.1.1"), "{stderr}");
    // Without the requirement the same plugin loads; a current plugin
    // meets it.
    assert_eq!(check(&old, &[]), (Some(0), String::new()));
    let current = plugin("test_plugin");
    assert_eq!(check(&current, &["--require-plugin-api", "0.1.1"]), (Some(0), String::new()));
    // A requirement this worker cannot meet, or that is no version, is a bad flag.
    for bad in ["9.0.0", "latest"] {
        let (code, stderr) = check(&current, &["--require-plugin-api", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--require-plugin-api"), "{stderr}");
    }
}

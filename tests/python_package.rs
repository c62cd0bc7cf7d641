//! The Python package (python/) passes its own tests: `cargo test` runs
//! `python3 -m pytest python/tests` against the installed `powerhose`
//! package (`pip install ./python`; .ci/run installs it), with this build's
//! binaries and example plugins.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole suite takes under a minute on 2 idle cores; a busy machine
/// gets ample room before the run counts as hung.
const LIMIT: Duration = Duration::from_secs(900);

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running python3: {e} (python3 is required)"))
}

/// The installed package's Python files are python/powerhose's: a stale
/// install would test old code.
fn check_installed() {
    let probe = python(&["-c", "import powerhose, os; print(os.path.dirname(powerhose.__file__))"]);
    assert!(
        probe.status.success(),
        "the powerhose Python package is not importable: `pip install ./python` first (.ci/run does)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let installed = Path::new(String::from_utf8_lossy(&probe.stdout).trim()).to_path_buf();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/powerhose");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py" || e == "pyi") {
            let name = path.file_name().unwrap();
            let same = std::fs::read(installed.join(name)).ok() == Some(std::fs::read(&path).unwrap());
            assert!(
                same,
                "the installed powerhose package ({}) is not this tree's python/powerhose ({} differs): \
                 `pip install ./python` again",
                installed.display(),
                name.to_string_lossy()
            );
        }
    }
    let pytest = python(&["-c", "import pytest"]);
    assert!(pytest.status.success(), "pytest is not installed: `pip install pytest==9.2.0` (.ci/run does)");
}

#[test]
fn the_python_package_passes_its_tests() {
    check_installed();
    let bin_dir = common::plugin_dir();
    let out_dir = tempfile::tempdir().unwrap();
    let log = out_dir.path().join("pytest.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("python3")
        .args(["-m", "pytest", "python/tests", "-q", "-p", "no:cacheprovider"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("POWERHOSE_TEST_BIN_DIR", bin_dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        // Its own process group: a hung run is killed with every process it started.
        .process_group(0)
        .spawn()
        .expect("running python3 -m pytest");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill takes no pointers; the group is the child's own (process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) if status.success() => {
            // The summary line, in `cargo test -- --nocapture`'s output.
            println!("{}", output.lines().last().unwrap_or_default());
        }
        Some(status) => panic!("pytest failed ({status}):\n{output}"),
        None => panic!("pytest still running after {LIMIT:?}, killed:\n{output}"),
    }
}

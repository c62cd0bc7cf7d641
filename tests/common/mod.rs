//! Test harness: plugins built by the test run, processes that are killed when
//! their guard drops, a temp dir per test, and bounded waits on readiness.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use powerhose::JobRequest;

pub use dir::{TestDir, Transport};

mod dir;
pub mod hostload;
pub mod net;
pub mod pair;
pub mod pki;
pub mod ports;
pub mod raw;

pub const POWERHOSE: &str = env!("CARGO_BIN_EXE_powerhose");
pub const BROKER: &str = env!("CARGO_BIN_EXE_powerhose-broker");
pub const WORKER: &str = env!("CARGO_BIN_EXE_powerhose-worker");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_powerhose-client");

/// Builds the example plugins once per test binary; returns their directory.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "echo", "-p", "crypto_job", "-p", "test_plugin"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the plugins");
        assert!(status.success(), "building the example plugins failed");
        Path::new(WORKER).parent().unwrap().to_path_buf()
    })
}

/// Path of an example plugin (`echo`, `crypto_job`, `test_plugin`).
pub fn plugin(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("lib{name}.so"));
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// A child process that is SIGKILLed when dropped; stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    stdout: Option<mpsc::Receiver<String>>,
}

impl Proc {
    pub fn spawn(program: &str, args: &[&str], dir: &TestDir, name: &str) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args).env("POWERHOSE_RUNTIME_DIR", dir.path());
        Proc::spawn_cmd(cmd, dir, name)
    }

    /// Spawns a prepared command (own env or cwd); stdout piped, stderr logged.
    pub fn spawn_cmd(cmd: Command, dir: &TestDir, name: &str) -> Proc {
        Proc::spawn_cmd_to(cmd, Stdio::piped(), dir, name)
    }

    /// [`spawn_cmd`](Self::spawn_cmd) with stdout going elsewhere (a terminal);
    /// [`wait_line`](Self::wait_line) then needs `Stdio::piped()`.
    pub fn spawn_cmd_to(mut cmd: Command, stdout: Stdio, dir: &TestDir, name: &str) -> Proc {
        let log = dir.path().join(format!("{name}.log"));
        let child = cmd
            .stdout(stdout)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        drop(cmd); // closes our copies of the child's stdio
        let mut proc = Proc { child, log, stdout: None };
        let Some(out) = proc.child.stdout.take() else {
            return proc;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        proc.stdout = Some(rx);
        proc
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let rx = self.stdout.as_ref().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {needle:?} line within {timeout:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        kill(self.pid(), sig);
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[allow(unused_imports)]
pub use powerhose::bench::procs::children;
#[allow(unused_imports)]
pub use powerhose::ghosts::alive;

/// A cluster started with the `powerhose` command, ready when this returns.
pub fn start_cluster(dir: &TestDir, plugin_name: &str, workers: usize, extra: &[&str]) -> Proc {
    let plugin = plugin(plugin_name);
    let (front, back, n) = (dir.front(), dir.back(), workers.to_string());
    let mut args =
        vec!["--plugin", plugin.to_str().unwrap(), "--workers", &n, "--frontend", &front, "--backend", &back];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(POWERHOSE, &args, dir, "powerhose");
    proc.wait_line("powerhose ready", Duration::from_secs(60));
    proc
}

/// A lone broker on the test's endpoints, answering pings when this returns.
pub fn start_broker(dir: &TestDir, extra: &[&str]) -> Proc {
    let (front, back) = (dir.front(), dir.back());
    let mut args = vec!["--frontend", front.as_str(), "--backend", back.as_str()];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(BROKER, &args, dir, "broker");
    dir.client().ping(Duration::from_secs(30)).unwrap_or_else(|e| panic!("broker not up: {e}\n{}", proc.stderr()));
    proc
}

/// A lone worker; registered with the broker when this returns.
pub fn start_worker(dir: &TestDir, plugin_name: &str, extra: &[&str], name: &str) -> Proc {
    let client = dir.client();
    let before = client.workers("", Duration::from_secs(10)).unwrap();
    let plugin = plugin(plugin_name);
    let back = dir.back();
    let mut args = vec!["--plugin", plugin.to_str().unwrap(), "--backend", back.as_str()];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(WORKER, &args, dir, name);
    wait_until("the worker to register", Duration::from_secs(30), || {
        assert!(proc.child.try_wait().unwrap().is_none(), "worker exited: {}", proc.stderr());
        client.workers("", Duration::from_secs(5)).unwrap() > before
    });
    proc
}

/// Builds a plugin crate outside the workspace, in `target/test-fixtures/NAME`
/// (reusing the workspace's target dir and lockfile, so only the fixture
/// itself compiles), and returns the path of `lib{lib}.so`.
/// `files` are (path relative to the fixture root, contents); `package` is
/// the directory of the crate to build.
pub fn build_fixture(name: &str, files: &[(&str, String)], package: &str, lib: &str) -> PathBuf {
    let target = plugin_dir().parent().unwrap().to_path_buf();
    let root = target.join("test-fixtures").join(name);
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
            std::fs::write(path, text).unwrap();
        }
    };
    for (path, text) in files {
        write(&root.join(path), text);
    }
    // Same dependency versions as the workspace, so its build artifacts are reused.
    write(&root.join(package).join("Cargo.lock"), &std::fs::read_to_string(ws.join("Cargo.lock")).unwrap());
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--offline", "--target-dir"])
        .arg(&target)
        .current_dir(root.join(package))
        .status()
        .unwrap();
    assert!(status.success(), "building fixture {name} failed");
    target.join(format!("debug/lib{lib}.so"))
}

/// The workspace's echo plugin rebuilt as version `version` (same service name).
pub fn echo_version(version: &str) -> PathBuf {
    let ws = env!("CARGO_MANIFEST_DIR");
    let crate_name = format!("echo_v{}", version.replace('.', "_"));
    let manifest = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"{version}\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\npowerhose-plugin-api = {{ path = \"{ws}/plugin-api\" }}\n\n[workspace]\n"
    );
    let source = std::fs::read_to_string(format!("{ws}/example-plugins/echo/src/lib.rs")).unwrap();
    let source = source.replace("export_plugin!(Echo);", "export_plugin!(Echo, name = \"echo\");");
    build_fixture(&crate_name, &[("plugin/Cargo.toml", manifest), ("plugin/src/lib.rs", source)], "plugin", &crate_name)
}

/// Pids of the workers registered with the test's broker, sorted.
pub fn registered_pids(dir: &TestDir) -> Vec<u32> {
    let mut pids: Vec<u32> =
        dir.client().status(Duration::from_secs(10)).unwrap().workers.iter().map(|w| w.pid).collect();
    pids.sort_unstable();
    pids
}

/// Runs `threads` client threads in a loop until the returned stop flag is
/// set; the handle yields (jobs done, failures as text).
pub fn load(
    dir: &TestDir,
    threads: usize,
    job: fn() -> JobRequest,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<(usize, Vec<String>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = Arc::new(dir.client());
    let (done, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, client, done, failures) = (stop.clone(), client.clone(), done.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.execute(job(), Duration::from_secs(10)) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let joiner = std::thread::spawn(move || {
        for h in handles {
            h.join().unwrap();
        }
        (done.load(Ordering::Relaxed), failures.lock().unwrap().clone())
    });
    (stop, joiner)
}

/// One busy loop per CPU, as separate processes (killed when dropped): a
/// machine with no idle CPU, where every process waits its turn.
pub fn cpu_hog(dir: &TestDir) -> Vec<Proc> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..cpus).map(|i| Proc::spawn("sh", &["-c", "while :; do :; done"], dir, &format!("hog{i}"))).collect()
}

/// Builds an echo plugin against a copy of plugin-api whose `RHeader` gained a
/// field without a version bump: the mistake abi_stable's layout check catches.
pub fn incompatible_plugin() -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    // Every source file: the crate's modules change from release to release.
    for entry in std::fs::read_dir(ws.join("plugin-api/src")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if file == "abi.rs" {
            let changed = text.replace(
                "    pub value: RStr<'a>,\n}",
                "    pub value: RStr<'a>,\n    /// Added without a version bump.\n    pub flags: u32,\n}",
            );
            assert_ne!(changed, text, "the RHeader definition moved; update this test");
            changed
        } else {
            text
        };
        files.push((format!("plugin-api/src/{file}"), text));
    }
    let version = env!("CARGO_PKG_VERSION");
    files.push((
        "plugin-api/Cargo.toml".into(),
        format!("[package]\nname = \"powerhose-plugin-api\"\nversion = \"{version}\"\nedition = \"2021\"\n\n[dependencies]\nabi_stable = \"0.11.3\"\nserde_json = \"1\"\ntracing = \"0.1\"\nlog = \"0.4\"\n"),
    ));
    files.push((
        "plugin/Cargo.toml".into(),
        "[package]\nname = \"abi_mismatch\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\npowerhose-plugin-api = { path = \"../plugin-api\" }\n\n[workspace]\n".into(),
    ));
    files.push((
        "plugin/src/lib.rs".into(),
        std::fs::read_to_string(ws.join("example-plugins/echo/src/lib.rs")).unwrap(),
    ));
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    build_fixture("abi-mismatch", &files, "plugin", "abi_mismatch")
}

/// Sends `sig` to `pid`; a process that is already gone is no error here.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill only signals; the pids come from processes this test started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    let err = std::io::Error::last_os_error();
    assert!(rc == 0 || err.raw_os_error() == Some(libc::ESRCH), "kill({pid}, {sig}): {err}");
}

/// A raw ZeroMQ socket of `kind` connected to the test's front, as a
/// stranger would use (linger 0, sends and receives bounded to 10 s); the
/// context comes along, since a socket must not outlive it.
pub fn front_socket(dir: &TestDir, kind: zmq::SocketType) -> (zmq::Context, zmq::Socket) {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_sndtimeo(10_000).unwrap();
    socket.set_rcvtimeo(10_000).unwrap();
    socket.connect(&dir.front()).unwrap();
    (ctx, socket)
}

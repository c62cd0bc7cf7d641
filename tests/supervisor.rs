//! The `powerhose` command: starts a broker and N workers, stops them all on
//! SIGTERM or Ctrl-C leaving nothing behind; default endpoints are private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(10);

#[test]
fn sigterm_and_sigint_stop_broker_and_workers_leaving_nothing_behind() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = TestDir::new();
        let mut cluster = start_cluster(&dir, "test_plugin", 3, &[]);
        let workers = children(cluster.pid());
        assert_eq!(workers.len(), 3, "three worker processes");
        let client = dir.client();
        assert_eq!(client.execute("hi", T).unwrap(), b"hi");
        assert!(dir.leftovers().iter().any(|f| f == "front.sock"));

        cluster.signal(sig);
        let status = cluster.wait_exit(Duration::from_secs(20)).expect("powerhose stops");
        assert_eq!(status.code(), Some(0), "signal {sig}: {}", cluster.stderr());
        for pid in workers {
            assert!(!alive(pid), "worker {pid} still running after signal {sig}");
        }
        assert!(dir.leftovers().is_empty(), "left behind: {:?}", dir.leftovers());
    }
}

#[test]
fn default_endpoints_live_in_a_private_runtime_directory() {
    let dir = TestDir::new();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let mut cmd = Command::new(POWERHOSE);
    cmd.args(["--plugin", plugin("echo").to_str().unwrap(), "--workers", "1"])
        .env_remove("POWERHOSE_RUNTIME_DIR")
        .env("XDG_RUNTIME_DIR", &xdg);
    let mut cluster = Proc::spawn_cmd(cmd, &dir, "powerhose");
    let ready = cluster.wait_line("powerhose ready", Duration::from_secs(60));
    let private = xdg.join("powerhose");
    assert!(ready.contains(&format!("unix://{}/front.sock", private.display())), "{ready}");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // Beside it, the ZeroMQ front for ZeroMQ clients (Powerhose 0.7's), 0600.
    for name in ["front.sock", "front.ipc", "back.sock"] {
        let mode = std::fs::metadata(private.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let zmq_client = powerhose::Client::connect(&format!("ipc://{}/front.ipc", private.display())).unwrap();
    assert_eq!(zmq_client.execute("over zeromq", T).unwrap(), b"over zeromq");

    // The client CLI finds the same default endpoint.
    let out = Command::new(CLIENT)
        .args(["run", "from the cli"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .env_remove("POWERHOSE_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"from the cli");
    let out = Command::new(CLIENT)
        .args(["ping"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .env_remove("POWERHOSE_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cluster.pid().to_string());

    cluster.signal(libc::SIGTERM);
    assert_eq!(cluster.wait_exit(T).unwrap().code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(&private).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bare_plugin_names_are_found_in_cwd_plugin_dir_and_next_to_the_executable() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let client = dir.client();
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::copy(plugin("test_plugin"), own.join("libmine.so")).unwrap();
    let back = dir.back();
    let serve = |args: &[&str], cwd: &std::path::Path, env: Option<&std::path::Path>, name: &str| {
        let mut cmd = Command::new(WORKER);
        cmd.args(args).args(["--backend", &back, "--service", name]).current_dir(cwd);
        if let Some(d) = env {
            cmd.env("POWERHOSE_PLUGIN_DIR", d);
        }
        let mut worker = Proc::spawn_cmd(cmd, &dir, name);
        wait_until(name, T, || {
            assert!(worker.child.try_wait().unwrap().is_none(), "{name}: {}", worker.stderr());
            client.workers(name, T).unwrap() == 1
        });
        let job = JobRequest::new("ok").service(name);
        assert_eq!(client.execute(job, T).unwrap(), b"ok", "{name}");
        worker
    };
    let _a = serve(&["--plugin", "libmine.so"], &own, None, "in-cwd");
    let _b = serve(&["--plugin", "libmine.so"], dir.path(), Some(&own), "in-env-dir");
    let _c = serve(&["--plugin", "libmine.so", "--plugin-dir", own.to_str().unwrap()], dir.path(), None, "in-flag-dir");
    let _d = serve(&["--plugin", "libecho.so"], dir.path(), None, "next-to-exe");
    let _e = serve(&["--plugin", "echo"], dir.path(), None, "lib-prefix");
}

/// `scale 24` from anyone could fork without bound: a scale request beyond
/// `--max-workers` is refused at once, a relative one stops at the cap, and
/// a start asking for more is a bad flag.
#[test]
fn scaling_stops_at_max_workers() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "echo", 1, &["--max-workers", "2"]);
    let client = dir.client();
    let t = Duration::from_secs(10);
    match client.scale(Some(24), None, t) {
        Err(Error::BadRequest(m)) => assert!(m.contains("at most 2 workers (--max-workers)"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.scale(None, Some(5), t).unwrap();
    wait_until("2 workers", t, || client.workers("", t).unwrap() == 2);
    assert!(cluster.stderr().contains("scaling from 1 to 2 workers"), "+5 stops at 2:\n{}", cluster.stderr());

    let other = TestDir::new();
    let plugin = plugin("echo");
    let args = ["--plugin", plugin.to_str().unwrap(), "--workers", "3", "--max-workers", "2"];
    let mut proc = Proc::spawn(POWERHOSE, &args, &other, "powerhose");
    let status = proc.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(2), "{}", proc.stderr());
    assert_eq!(proc.stderr().trim(), "powerhose: error: --workers 3 is over --max-workers 2");
}

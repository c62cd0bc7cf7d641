//! `powerhose-bench --floor --callers N`: beside the echo floors, the relay
//! floor runs the job itself (the plugin's handler in the relay's workers),
//! so a user sees what the least a broker must do leaves of their job; and
//! so do the same workers without the relay's hub, each caller connected
//! to one: what the least any process boundary leaves of it; and `--turns`
//! puts ours beside that last floor, round by round.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, TestDir};

const BENCH: &str = env!("CARGO_BIN_EXE_powerhose-bench");

/// The JSON report of `powerhose-bench` run on crypto_job (`rounds`
/// signatures a job, 4 callers, 2 workers, 0.3 s) with `args` besides.
fn bench_json(dir: &TestDir, rounds: &str, args: &[&str]) -> serde_json::Value {
    let crypto = common::plugin("crypto_job");
    let out_path = dir.path().join("report.json");
    let mut cmd = Command::new(BENCH);
    cmd.args(["--plugin", crypto.to_str().unwrap(), "-H", "op:sign", "-H", &format!("rounds:{rounds}")])
        .args(["--callers", "4", "--workers", "2", "--duration", "0.3", "--json"])
        .args(args)
        .env("POWERHOSE_RUNTIME_DIR", dir.path());
    let out = Stdio::from(std::fs::File::create(&out_path).unwrap());
    let mut bench = Proc::spawn_cmd_to(cmd, out, dir, "bench");
    let status = bench.wait_exit(Duration::from_secs(180)).unwrap_or_else(|| panic!("bench hung: {}", bench.stderr()));
    assert!(status.success(), "powerhose-bench failed: {}", bench.stderr());
    serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap()
}

#[test]
fn the_relay_floor_runs_the_job_when_callers_are_measured() {
    let dir = TestDir::new();
    let report = bench_json(&dir, "40", &["--floor"]);
    let relay = &report["relay_running_job"];
    assert_eq!(relay["callers"], 4, "{report:#}");
    let (relay_rate, relay_cpu) = (relay["jobs_per_s"].as_f64().unwrap(), relay["cpu_us_per_job"].as_f64().unwrap());
    assert!(relay_rate > 0.0 && relay_cpu > 0.0, "{relay:#}");
    // 40 signatures a job: relay workers that echoed instead of running the
    // handler would go tens of times faster. Compared with the echo floor,
    // measured as before (its workers echoing), not with in-process: that is
    // measured at another moment, and other load can slow it more.
    assert!(report["in_process_n_threads"]["jobs_per_s"].as_f64().unwrap() > 0.0, "{report:#}");
    let echo_rate = report["floor"]["relay"]["callers"][0]["jobs_per_s"].as_f64().unwrap();
    assert!(echo_rate > 3.0 * relay_rate, "echo relay {echo_rate:.0} jobs/s against {relay_rate:.0} with the job");
    // And in CPU, which other load does not change: 40 signatures take
    // hundreds of µs, an echo tens.
    assert!(relay_cpu > 200.0, "the relay spent {relay_cpu:.0} µs CPU per job");
    // Without the hub the workers run the job too, for as many callers.
    let direct = &report["direct_running_job"];
    assert_eq!(direct["callers"], 4, "{report:#}");
    let (direct_rate, direct_cpu) =
        (direct["jobs_per_s"].as_f64().unwrap(), direct["cpu_us_per_job"].as_f64().unwrap());
    assert!(direct_rate > 0.0 && direct_cpu > 0.0, "{direct:#}");
    assert!(echo_rate > 3.0 * direct_rate, "echo relay {echo_rate:.0} jobs/s against {direct_rate:.0} with no hub");
    assert!(direct_cpu > 200.0, "with no hub {direct_cpu:.0} µs CPU per job");
}

#[test]
fn a_relay_helper_given_bad_arguments_says_so_in_one_line() {
    let dir = TestDir::new();
    let (front, back) = (dir.path().join("f"), dir.path().join("b"));
    let (front, back) = (front.to_str().unwrap(), back.to_str().unwrap());
    let crypto = common::plugin("crypto_job");
    let cases: [(&[&str], &str); 5] = [
        (&["relay-hub", front, back, "0"], "requests ahead must be 1 or more"),
        (&["relay-worker", back, crypto.to_str().unwrap(), "", "op=sign"], "headers must be NAME:VALUE"),
        (&["relay-worker", back, "/nonexistent/libnothing.so", ""], "libnothing"),
        (&["relay-direct", front, "/nonexistent/libnothing.so", ""], "libnothing"),
        (&["relay-direct", "/nonexistent/dir/worker"], "listening on /nonexistent/dir/worker"),
    ];
    for (args, says) in cases {
        let mut cmd = Command::new(BENCH);
        cmd.arg("--helper").args(args);
        // Killed on drop: a helper that took these would serve for ever.
        let mut helper = Proc::spawn_cmd(cmd, &dir, "helper");
        let status = helper.wait_exit(Duration::from_secs(30));
        let stderr = helper.stderr();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("powerhose-bench helper: error:") && stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `--turns N`: ours and the no-broker floor take turns with the same
/// callers for N rounds; each round's rates, the median of their ratios,
/// and each side's CPU per job (the floor has no broker).
#[test]
fn turns_put_ours_beside_no_broker_round_by_round() {
    let dir = TestDir::new();
    let report = bench_json(&dir, "4", &["--turns", "2"]);
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!((rounds.len(), &report["callers"]), (2, &serde_json::json!(4)), "{report:#}");
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|r| {
            let (ours, floor) = (r["ours_jobs_per_s"].as_f64().unwrap(), r["floor_jobs_per_s"].as_f64().unwrap());
            assert!(ours > 0.0 && floor > 0.0, "{report:#}");
            ours / floor
        })
        .collect();
    let median = report["median_ratio"].as_f64().unwrap();
    assert!((median - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-9, "{report:#}");
    let cpu = |side: &str, of: &str| report[side][of].as_f64().unwrap();
    // Both sides ran the job (4 signatures: tens of µs at least) in their workers.
    assert!(cpu("ours_cpu", "workers_us") > 20.0 && cpu("floor_cpu", "workers_us") > 20.0, "{report:#}");
    assert!(cpu("ours_cpu", "client_us") > 0.0 && cpu("floor_cpu", "client_us") > 0.0, "{report:#}");
    assert_eq!(cpu("floor_cpu", "broker_us"), 0.0, "{report:#}");

    // Nothing to take turns with: refused in one line, before anything starts.
    let crypto = common::plugin("crypto_job");
    for (args, says) in
        [(&["--turns", "0"][..], "at least one round"), (&["--turns", "2", "--pipeline", "8"][..], "--pipeline")]
    {
        let mut cmd = Command::new(BENCH);
        cmd.args(["--plugin", crypto.to_str().unwrap(), "--duration", "0.1"]).args(args);
        cmd.env("POWERHOSE_RUNTIME_DIR", dir.path());
        let mut bench = Proc::spawn_cmd(cmd, &dir, "bad-turns");
        let status = bench.wait_exit(Duration::from_secs(60)).expect("a bad flag is refused at once");
        let stderr = bench.stderr();
        assert!(!status.success() && stderr.contains(says), "{args:?}: {stderr}");
    }
}

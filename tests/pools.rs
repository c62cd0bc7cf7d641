//! Several pools under one `powerhose --config` supervisor, with real
//! processes: each pool serves its own service; SIGHUP applies a changed
//! file (a new pool starts, a changed one is rolled, an unchanged one is left
//! alone, a removed one drains) without a failed request; a bad file is
//! refused in one line, at start (exit 2) and on SIGHUP (nothing changes).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(10);

/// A pool file of test_plugin pools: (name, more lines of its table).
fn write_pools(dir: &TestDir, pools: &[(&str, &str)]) -> PathBuf {
    let plugin = plugin("test_plugin");
    let text: String = pools
        .iter()
        .map(|(name, more)| {
            // Four lines a pool, whatever `more` sets.
            let workers = if more.contains("workers =") { "# workers set below" } else { "workers = 2" };
            format!("[pool.{name}]\nplugin = {:?}\n{workers}\n{more}\n", plugin.display())
        })
        .collect();
    let path = dir.path().join("pools.toml");
    // Whole, at once: a SIGHUP must never read half a file.
    let tmp = dir.path().join("pools.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn start_pools(dir: &TestDir, config: &Path, extra: &[&str]) -> Proc {
    let (front, back) = (dir.front(), dir.back());
    let mut args = vec!["--config", config.to_str().unwrap(), "--frontend", &front, "--backend", &back];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(POWERHOSE, &args, dir, "powerhose");
    proc.wait_line("powerhose ready", Duration::from_secs(60));
    proc
}

fn job(service: &str, action: &str) -> JobRequest {
    JobRequest::new("x").service(service).header("action", action)
}

fn ask(dir: &TestDir, service: &str, action: &str) -> String {
    String::from_utf8(dir.client().execute(job(service, action), T).unwrap()).unwrap()
}

/// Pids of the workers registered for `service`, sorted.
fn pids(dir: &TestDir, service: &str) -> Vec<u32> {
    let status = dir.client().status(T).unwrap();
    let mut pids: Vec<u32> = status.workers.iter().filter(|w| w.service == service).map(|w| w.pid).collect();
    pids.sort_unstable();
    pids
}

/// Sends SIGHUP and waits until the supervisor has logged what it made of
/// the file (applied or refused): the `n`-th such line.
fn hup(pools: &Proc, n: usize) {
    pools.signal(libc::SIGHUP);
    let seen = || pools.stderr().lines().filter(|l| l.contains("pools.toml: applied") || l.contains("SIGHUP:")).count();
    wait_until("the pool file to be applied or refused", Duration::from_secs(60), || seen() >= n);
}

#[test]
fn two_pools_serve_their_own_services_from_one_broker() {
    let dir = TestDir::new();
    let config = write_pools(&dir, &[("a", ""), ("b", "params = { version_tag = \"-b\" }")]);
    let _pools = start_pools(&dir, &config, &[]);
    assert_eq!(ask(&dir, "a", "version"), "0.1.0");
    assert_eq!(ask(&dir, "b", "version"), "0.1.0-b");
    let (a, b) = (pids(&dir, "a"), pids(&dir, "b"));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert!(a.contains(&ask(&dir, "a", "pid").parse().unwrap()));
    assert!(b.contains(&ask(&dir, "b", "pid").parse().unwrap()));
}

#[test]
fn sighup_rolls_a_changed_pool_starts_a_new_one_and_leaves_the_others_under_load() {
    let dir = TestDir::new();
    let config = write_pools(&dir, &[("a", ""), ("b", "params = { version_tag = \"-1\" }")]);
    let pools = start_pools(&dir, &config, &[]);
    let (a_before, b_before) = (pids(&dir, "a"), pids(&dir, "b"));
    // One client thread per service, no retries: any failure is counted.
    let (stop_a, load_a) = load(&dir, 1, || job("a", "pid"));
    let (stop_b, load_b) = load(&dir, 1, || job("b", "version"));
    write_pools(&dir, &[("a", ""), ("b", "params = { version_tag = \"-2\" }"), ("c", "")]);
    hup(&pools, 1);
    wait_until("b to answer its new version", T, || ask(&dir, "b", "version") == "0.1.0-2");
    wait_until("b's old workers to leave", T, || pids(&dir, "b").iter().all(|p| !b_before.contains(p)));
    assert_eq!(ask(&dir, "c", "version"), "0.1.0");
    assert_eq!(pids(&dir, "c").len(), 2);
    // More load after the roll, then the count.
    let client = dir.client();
    for _ in 0..20 {
        assert_eq!(client.execute(job("b", "version"), T).unwrap(), b"0.1.0-2");
    }
    stop_a.store(true, Ordering::Relaxed);
    stop_b.store(true, Ordering::Relaxed);
    let ((done_a, failed_a), (done_b, failed_b)) = (load_a.join().unwrap(), load_b.join().unwrap());
    assert!(failed_a.is_empty() && failed_b.is_empty(), "failed: a {failed_a:?}, b {failed_b:?}");
    assert!(done_a > 0 && done_b > 0, "{done_a} and {done_b} jobs under load");
    assert_eq!(pids(&dir, "a"), a_before, "pool a was left alone");
    assert!(b_before.iter().all(|&p| !alive(p)), "b's old workers exited");
    eprintln!("roll: {done_a} jobs on a and {done_b} on b, 0 failures");
}

#[test]
fn a_removed_pool_finishes_its_jobs_and_its_service_goes_away() {
    let dir = TestDir::new();
    let config = write_pools(&dir, &[("a", ""), ("c", "")]);
    let pools = start_pools(&dir, &config, &["--no-worker-grace-ms", "200"]);
    let (a_before, c_before) = (pids(&dir, "a"), pids(&dir, "c"));
    // A job on each of c's workers, still running when the file drops c.
    // (Each job writes its worker's pid to its file when it starts.)
    let files: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("started-{i}"))).collect();
    let running: Vec<_> = files
        .iter()
        .map(|file| {
            let (client, file) = (dir.client(), file.display().to_string());
            std::thread::spawn(move || client.execute(job("c", "sleep").header("ms", "1500").header("file", file), T))
        })
        .collect();
    wait_until("a job to run on each of c's workers", T, || {
        let mut on: Vec<u32> = files.iter().filter_map(|f| std::fs::read_to_string(f).ok()?.parse().ok()).collect();
        on.sort_unstable();
        on == c_before
    });
    write_pools(&dir, &[("a", "")]);
    hup(&pools, 1);
    for job in running {
        assert_eq!(job.join().unwrap().unwrap(), b"x", "a job in flight on a removed pool finishes");
    }
    wait_until("c's workers to exit", T, || c_before.iter().all(|&p| !alive(p)));
    assert!(pids(&dir, "c").is_empty());
    match dir.client().execute(job("c", "version"), T) {
        Err(Error::NoWorker(_)) => {}
        other => panic!("c has no worker any more, got {other:?}"),
    }
    assert_eq!(pids(&dir, "a"), a_before);
    assert_eq!(ask(&dir, "a", "version"), "0.1.0");
}

#[test]
fn a_bad_file_on_sighup_is_logged_in_one_line_and_changes_nothing() {
    let dir = TestDir::new();
    let config = write_pools(&dir, &[("a", ""), ("b", "")]);
    let pools = start_pools(&dir, &config, &[]);
    let before = registered_pids(&dir);
    let path = config.display().to_string();
    // Each pool's table is 4 lines: b's own lines start at 5.
    let bad = [
        (vec![("a", ""), ("b", "workers = \"two\"")], format!("{path}:8: pool.b.workers: invalid type")),
        (vec![("a", ""), ("b", ""), ("c", "wrkers = 1")], format!("{path}:12: pool.c.wrkers: unknown field")),
        (vec![("a", ""), ("b", "service = \"a\"")], format!("{path}:8: pool.b.service: service \"a\"")),
        // Only starting the plugin finds this one.
        (vec![("a", ""), ("b", "params = { fail_init = \"no\" }")], format!("{path}:8: pool.b.params: ")),
    ];
    for (n, (pools_text, expected)) in bad.into_iter().enumerate() {
        write_pools(&dir, &pools_text);
        hup(&pools, n + 1);
        let log = pools.stderr();
        let line = log.lines().filter(|l| l.contains("SIGHUP:")).nth(n).unwrap();
        assert!(line.contains(&format!("SIGHUP: {expected}")), "{line}");
        assert!(line.ends_with("the pools keep running as they are"), "{line}");
        assert_eq!(registered_pids(&dir), before, "after {expected}");
        assert_eq!(ask(&dir, "a", "version"), "0.1.0");
        assert_eq!(ask(&dir, "b", "version"), "0.1.0");
    }
}

#[test]
fn a_bad_file_at_start_exits_2_with_one_line() {
    let dir = TestDir::new();
    let missing = dir.path().join("libnothing.so");
    let cases = [
        ("workers = -1", "pools.toml:8: pool.b.workers: -1 is not between 1"),
        ("params = { fail_init = \"no\" }", "pools.toml:8: pool.b.params: "),
        ("wrkers = 1", "pools.toml:8: pool.b.wrkers: unknown field"),
    ];
    let run = |config: &Path| {
        let (front, back) = (dir.front(), dir.back());
        let args = ["--config", config.to_str().unwrap(), "--frontend", &front, "--backend", &back];
        let mut proc = Proc::spawn(POWERHOSE, &args, &dir, "refused");
        let status = proc.wait_exit(Duration::from_secs(30)).expect("refused at once");
        (status.code(), proc.stderr())
    };
    for (more, expected) in cases {
        let config = write_pools(&dir, &[("a", ""), ("b", more)]);
        let (code, stderr) = run(&config);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(&format!("powerhose: error: {}", dir.path().join(expected).display())), "{stderr}");
    }
    let text = format!("[pool.a]\nplugin = {:?}\n", missing.display());
    let config = dir.path().join("pools.toml");
    std::fs::write(&config, text).unwrap();
    let (code, stderr) = run(&config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pools.toml:2: pool.a.plugin: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(dir.leftovers().is_empty(), "nothing was bound: {:?}", dir.leftovers());
}

//! The worker lifecycle under the `powerhose` supervisor, with real processes:
//! respawn, crash-loop give-up, max age, job timeouts with stack dumps,
//! graceful stop, rolling reload, scaling, and the embedding example.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use powerhose::{Error, JobRequest};

const T: Duration = Duration::from_secs(10);

both_transports! {
    fn a_killed_worker_is_replaced_within_a_second_and_its_job_is_not_left_waiting(t) {
    let dir = TestDir::on(t);
    let cluster = start_cluster(&dir, "test_plugin", 2, &[]);
    let before = children(cluster.pid());
    let client = Arc::new(dir.client());
    let started = dir.path().join("started");
    let file = started.to_str().unwrap().to_string();
    let c = client.clone();
    // Default heartbeats (3 s to notice silence): the supervisor's notice must be faster.
    let call = std::thread::spawn(move || {
        let job = JobRequest::new("x").header("action", "sleep").header("ms", "5000").header("file", file).retry(1);
        let t = Instant::now();
        (c.execute(job, Duration::from_secs(20)), t.elapsed())
    });
    wait_until("the job to start", T, || started.exists());
    let victim: u32 = std::fs::read_to_string(&started).unwrap().parse().unwrap();
    std::fs::remove_file(&started).unwrap();
    let killed = Instant::now();
    kill(victim, libc::SIGKILL);
    wait_until("a replacement worker", T, || {
        let pids = registered_pids(&dir);
        pids.len() == 2 && !pids.contains(&victim)
    });
    let replaced = killed.elapsed();
    assert!(replaced < Duration::from_secs(1), "replacement registered after {replaced:?}");
    // The retried job restarted on a live worker at once, not after 3 s of heartbeats.
    wait_until("the retried job to start", T, || started.exists());
    assert!(killed.elapsed() < Duration::from_secs(2), "retried after {:?}", killed.elapsed());
    let (result, _) = call.join().unwrap();
    assert_eq!(result.unwrap(), b"x");
    assert_eq!(children(cluster.pid()).len(), before.len());
    }
}

#[test]
fn workers_that_cannot_start_stop_the_respawning_with_one_error() {
    let dir = TestDir::new();
    let breakable = dir.path().join("libbreakable.so");
    std::fs::copy(plugin("test_plugin"), &breakable).unwrap();
    let (front, back) = (dir.front(), dir.back());
    let args = ["--plugin", breakable.to_str().unwrap(), "--workers", "2", "--frontend", &front, "--backend", &back];
    let mut cluster = Proc::spawn(POWERHOSE, &args, &dir, "powerhose");
    cluster.wait_line("powerhose ready", Duration::from_secs(60));
    // The plugin file is replaced by garbage (atomically), then the workers die.
    let tmp = dir.path().join("garbage.tmp");
    std::fs::write(&tmp, "not a library".repeat(10)).unwrap();
    std::fs::rename(&tmp, &breakable).unwrap();
    let t = Instant::now();
    for pid in children(cluster.pid()) {
        kill(pid, libc::SIGKILL);
    }
    let status = cluster
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("powerhose did not give up in 20 s:\n{}", cluster.stderr()));
    assert!(t.elapsed() < Duration::from_secs(10), "gave up after {:?}", t.elapsed());
    assert_eq!(status.code(), Some(3));
    let log = cluster.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("powerhose: error:")).collect();
    assert_eq!(errors, ["powerhose: error: workers keep failing at start (5 in a row, last: could not load its plugin); stopped respawning"], "{log}");
    assert!(dir.leftovers().iter().all(|f| f.ends_with(".lock")), "{:?}", dir.leftovers());
}

#[test]
fn max_age_replaces_workers_under_load_without_failing_a_job() {
    let dir = TestDir::new();
    let _cluster = start_cluster(&dir, "test_plugin", 2, &["--max-age", "1", "--max-age-delta", "0.5"]);
    let pids = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let (stop, handle) = load(&dir, 4, || JobRequest::new("").header("action", "pid"));
    let watcher = {
        let (pids, dir_front) = (pids.clone(), dir.front());
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = powerhose::Client::connect(&dir_front).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let pid = client.execute(JobRequest::new("").header("action", "pid"), T).unwrap();
                pids.lock().unwrap().insert(String::from_utf8(pid).unwrap());
            }
        })
    };
    std::thread::sleep(Duration::from_secs(5)); // the load period itself, not a synchronisation
    stop.store(true, Ordering::Relaxed);
    let (done, failures) = handle.join().unwrap();
    watcher.join().unwrap();
    let distinct = pids.lock().unwrap().len();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(distinct >= 5, "several workers replaced: {distinct} distinct pids served");
    eprintln!("max age: {done} jobs, {distinct} workers served, 0 failures");
}

#[test]
fn a_job_past_the_timeout_is_answered_at_once_dumped_and_its_worker_replaced() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "test_plugin", 1, &["--timeout", "0.5", "--hard-timeout", "1.5"]);
    let client = dir.client();
    let stuck_pid = String::from_utf8(client.execute(JobRequest::new("").header("action", "pid"), T).unwrap()).unwrap();
    let t = Instant::now();
    let job = JobRequest::new("zzz").header("action", "sleep").header("ms", "60000").header("tag", "stuck-job-7");
    match client.execute(job, T) {
        Err(Error::JobTimedOut { message, .. }) => {
            assert!(message.starts_with("job timed out after 500ms in worker"), "{message}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(1400), "answered after {:?}", t.elapsed());
    // No job goes to the stuck worker: this one waits for its replacement.
    let next = String::from_utf8(client.execute(JobRequest::new("").header("action", "pid"), T).unwrap()).unwrap();
    assert_ne!(next, stuck_pid, "served by the replacement");
    let log = cluster.stderr();
    assert!(log.contains("job timed out after 500ms; headers: [action=sleep ms=60000 tag=stuck-job-7]"), "{log}");
    assert!(log.contains("test_plugin::nap"), "the stack names the plugin's sleeping function:\n{log}");
    assert!(log.contains("handler still running after 1.5s: exiting"), "{log}");
}

#[test]
fn sigterm_lets_in_flight_jobs_finish_refuses_new_ones_and_leaves_nothing() {
    let dir = TestDir::new();
    let mut cluster = start_cluster(&dir, "test_plugin", 2, &[]);
    let workers = children(cluster.pid());
    let client = Arc::new(dir.client());
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let (c, file) = (client.clone(), dir.path().join(format!("started{i}")));
            let f = file.to_str().unwrap().to_string();
            (
                file,
                std::thread::spawn(move || {
                    c.execute(
                        JobRequest::new("done").header("action", "sleep").header("ms", "800").header("file", f),
                        T,
                    )
                }),
            )
        })
        .collect();
    for (file, _) in &calls {
        wait_until("both jobs to start", T, || file.exists());
    }
    cluster.signal(libc::SIGTERM);
    // With a priority, so the broker's answer is asked for: a job without
    // one goes to a lane first, and is sent to the broker only once its
    // lane closes, as late as the in-flight jobs end and the broker with them.
    let late = || JobRequest::new("late").priority(1);
    wait_until(
        "the broker to drain",
        T,
        || matches!(client.execute(late(), T), Err(Error::NoWorker(m)) if m.contains("shutting down")),
    );
    for (_, call) in calls {
        assert_eq!(call.join().unwrap().unwrap(), b"done", "in-flight jobs complete");
    }
    assert_eq!(cluster.wait_exit(T).expect("exits").code(), Some(0), "{}", cluster.stderr());
    assert!(workers.iter().all(|p| !alive(*p)));
    assert!(dir.leftovers().is_empty(), "{:?}", dir.leftovers());
}

#[test]
fn a_lone_worker_finishes_its_job_on_sigterm_and_exits_0() {
    let dir = TestDir::new();
    let _broker = start_broker(&dir, &[]);
    let mut worker = start_worker(&dir, "test_plugin", &[], "worker");
    let started = dir.path().join("started");
    let (c, f) = (dir.client(), started.to_str().unwrap().to_string());
    let call = std::thread::spawn(move || {
        c.execute(JobRequest::new("ok").header("action", "sleep").header("ms", "500").header("file", f), T)
    });
    wait_until("the job to start", T, || started.exists());
    worker.signal(libc::SIGTERM);
    assert_eq!(call.join().unwrap().unwrap(), b"ok");
    assert_eq!(worker.wait_exit(T).expect("exits").code(), Some(0));
    assert_eq!(dir.client().workers("", T).unwrap(), 0);
}

#[test]
fn rolling_reload_under_load_switches_versions_without_a_failed_request() {
    let dir = TestDir::new();
    let (v1, v2) = (plugin("echo"), echo_version("0.2.0"));
    let live = dir.path().join("libreloadable.so");
    std::fs::copy(&v1, &live).unwrap();
    let (front, back) = (dir.front(), dir.back());
    let args = ["--plugin", live.to_str().unwrap(), "--workers", "2", "--frontend", &front, "--backend", &back];
    let mut cluster = Proc::spawn(POWERHOSE, &args, &dir, "powerhose");
    cluster.wait_line("powerhose ready", Duration::from_secs(60));
    let versions =
        || dir.client().status(T).unwrap().workers.iter().map(|w| w.plugin_version.clone()).collect::<Vec<_>>();
    assert_eq!(versions(), ["0.1.0", "0.1.0"]);

    let (stop, handle) = load(&dir, 8, || JobRequest::new("payload"));
    // Install the new build atomically (never overwrite a mapped library in place).
    let replace = |from: &std::path::Path| {
        let tmp = dir.path().join("new.tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, &live).unwrap();
    };
    replace(&v2);
    cluster.signal(libc::SIGHUP);
    wait_until("every worker to run 0.2.0", Duration::from_secs(30), || versions() == ["0.2.0", "0.2.0"]);

    // A broken build: the reload is aborted and 0.2.0 keeps serving.
    let broken = dir.path().join("broken.so");
    std::fs::write(&broken, "garbage".repeat(20)).unwrap();
    replace(&broken);
    let client = dir.client();
    client.reload(T).unwrap();
    wait_until("the reload to be aborted", T, || cluster.stderr().contains("reload aborted"));
    std::thread::sleep(Duration::from_millis(300)); // more load after the abort
    stop.store(true, Ordering::Relaxed);
    let (done, failures) = handle.join().unwrap();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(done > 100, "{done} jobs under load");
    assert_eq!(versions(), ["0.2.0", "0.2.0"]);
    eprintln!("reload: {done} jobs during two reloads, 0 failures");
}

#[test]
fn workers_scale_by_signal_and_command_and_hand_started_workers_join() {
    let dir = TestDir::new();
    let cluster = start_cluster(&dir, "echo", 1, &[]);
    let client = dir.client();
    // Standard signals do not queue: two sent at once may arrive as one.
    cluster.signal(libc::SIGTTIN);
    wait_until("2 workers", T, || client.workers("", T).unwrap() == 2);
    cluster.signal(libc::SIGTTIN);
    wait_until("3 workers", T, || client.workers("", T).unwrap() == 3);
    client.scale(Some(1), None, T).unwrap();
    wait_until("1 worker", T, || client.workers("", T).unwrap() == 1);
    cluster.signal(libc::SIGTTOU);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(client.workers("", T).unwrap(), 1, "never below one worker");
    let _by_hand = start_worker(&dir, "echo", &[], "by-hand");
    assert_eq!(client.workers("echo", T).unwrap(), 2);
    assert_eq!(client.execute("joined", T).unwrap(), b"joined");
    // A lone broker has no supervisor to ask.
    let other = TestDir::new();
    let _lone = start_broker(&other, &[]);
    assert!(matches!(other.client().reload(T), Err(Error::BadRequest(m)) if m.contains("no supervisor")));
}

#[test]
fn the_embedding_example_runs() {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "embed"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success());
    let bin_dir = plugin_dir();
    let runtime = TestDir::new();
    let out = std::process::Command::new(bin_dir.join("examples/embed"))
        .current_dir(bin_dir)
        .env("POWERHOSE_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "signed by the pool: 64 bytes");
}

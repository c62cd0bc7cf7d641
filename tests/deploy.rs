//! The systemd units in `deploy/systemd/` (see DEPLOYMENT.md): they parse,
//! carry what a deployment relies on (`Type=notify`, the watchdog, the
//! sandbox, a stop timeout above the jobs' hard timeout), and their
//! `ExecStart` lines use flags the binaries take. `systemd-analyze verify`
//! checks them too where it is installed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A unit file: section name to its (key, value) lines, in order (a key
/// may repeat).
type Unit = BTreeMap<String, Vec<(String, String)>>;

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd").join(name)
}

/// Parses systemd's INI dialect (comments, sections, `key=value`; our
/// units use no continuation lines), panicking on anything else.
fn parse(name: &str) -> Unit {
    let text = std::fs::read_to_string(unit_path(name)).unwrap();
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "{name}:{}: continuation lines are not expected", n + 1);
        if let Some(header) = line.strip_prefix('[') {
            let header = header.strip_suffix(']').unwrap_or_else(|| panic!("{name}:{}: {line}", n + 1));
            section = Some(header.to_string());
            unit.entry(header.to_string()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{name}:{}: not key=value: {line}", n + 1));
        let section = section.as_ref().unwrap_or_else(|| panic!("{name}:{}: outside a section", n + 1));
        unit.get_mut(section).unwrap().push((key.trim().to_string(), value.trim().to_string()));
    }
    unit
}

fn get<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section).into_iter().flatten().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    match get(unit, section, key)[..] {
        [value] => value,
        ref values => panic!("[{section}] {key}: expected one value, got {values:?}"),
    }
}

/// systemd's `5s`, `1min 30s`, `75`: seconds.
fn seconds(value: &str) -> u64 {
    let mut total = 0;
    for part in value.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("a time span: {value}"));
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => n,
            "min" | "m" => n * 60,
            unit => panic!("unexpected time unit {unit:?} in {value}"),
        };
    }
    total
}

/// The binary a unit's `ExecStart` names, built by this test run.
fn built(exec: &str) -> &'static str {
    match exec {
        "/usr/local/bin/powerhose" => POWERHOSE,
        "/usr/local/bin/powerhose-broker" => BROKER,
        other => panic!("an ExecStart naming {other}: which binary is that?"),
    }
}

const UNITS: [&str; 2] = ["powerhose-broker.service", "powerhose-pool.service"];

#[test]
fn the_units_parse_and_carry_what_a_deployment_relies_on() {
    for name in UNITS {
        let unit = parse(name);
        assert_eq!(one(&unit, "Service", "Type"), "notify", "{name}");
        assert_eq!(one(&unit, "Service", "NotifyAccess"), "main", "{name}: only the main process notifies");
        assert!(seconds(one(&unit, "Service", "WatchdogSec")) >= 2, "{name}");
        assert_eq!(one(&unit, "Service", "Restart"), "on-failure", "{name}");
        assert_eq!(one(&unit, "Service", "User"), "powerhose", "{name}");
        assert_eq!(one(&unit, "Service", "RuntimeDirectory"), "powerhose", "{name}");
        assert_eq!(one(&unit, "Service", "RuntimeDirectoryMode"), "0700", "{name}");
        assert_eq!(get(&unit, "Service", "Environment"), ["POWERHOSE_RUNTIME_DIR=%t/powerhose"], "{name}");
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("ReadOnlyPaths", "/etc/powerhose"),
            ("LimitNOFILE", "65536"),
        ] {
            assert_eq!(one(&unit, "Service", key), value, "{name}: {key}");
        }
        assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target", "{name}");
    }

    let broker = parse("powerhose-broker.service");
    let exec = one(&broker, "Service", "ExecStart");
    assert!(exec.starts_with("/usr/local/bin/powerhose-broker "), "{exec}");
    for flag in ["--curve-secret", "--allow-clients", "--allow-workers", "--allow-operators"] {
        assert!(exec.contains(flag), "the broker serves tcp with CURVE and allow-lists: {exec}");
    }

    let pool = parse("powerhose-pool.service");
    let exec = one(&pool, "Service", "ExecStart");
    assert!(exec.starts_with("/usr/local/bin/powerhose "), "{exec}");
    assert_eq!(exec.matches("--connect ").count(), 2, "both brokers: {exec}");
    assert_eq!(one(&pool, "Service", "KillMode"), "mixed", "SIGTERM to the pool alone, which stops its workers");
    assert_eq!(one(&pool, "Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
    // The pool waits for a worker's job up to the hard timeout (60 s by
    // default, none given here) plus 2 s before SIGKILL: systemd must wait longer.
    assert!(!exec.contains("--hard-timeout") && !exec.contains("--timeout"), "{exec}: update the bound below");
    let stop = seconds(one(&pool, "Service", "TimeoutStopSec"));
    assert!(stop > 62, "TimeoutStopSec={stop}s is not above the hard timeout and grace (62 s)");
}

#[test]
fn every_flag_in_the_units_is_one_their_binary_takes() {
    let dir = TestDir::new();
    for name in UNITS {
        let unit = parse(name);
        let exec = one(&unit, "Service", "ExecStart");
        let mut words = exec.split_whitespace();
        let binary = built(words.next().unwrap());
        let args: Vec<&str> = words.collect();
        let help = Command::new(binary).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(help.contains(&format!("{flag} ")), "{name}: {flag} is not in {binary} --help");
        }
        // And the parser takes them together (no conflict between them):
        // the binary gets as far as reading the first key, which is not
        // installed here.
        if Path::new("/etc/powerhose").exists() {
            eprintln!("/etc/powerhose exists here: not starting {name}'s ExecStart");
            continue;
        }
        let mut child = Command::new(binary)
            .args(&args)
            .env("POWERHOSE_RUNTIME_DIR", dir.path())
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{name}: {binary} {args:?} did not stop at the missing key");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("Usage:"), "{name}: the arguments were refused:\n{stderr}");
        assert!(stderr.contains("opening certificate /etc/powerhose/keys/"), "{name}: {stderr}");
    }
}

/// `systemd-analyze verify` on copies of the units whose `ExecStart`
/// names this test run's binaries (it checks that the executable exists,
/// and /usr/local/bin holds none here). Skipped where it is not installed.
#[test]
fn systemd_analyze_verifies_the_units() {
    let found = Command::new("systemd-analyze").arg("--version").stdout(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        eprintln!("systemd-analyze is not installed: verify skipped");
        return;
    }
    let dir = TestDir::new();
    let mut copies = Vec::new();
    for name in UNITS {
        let text = std::fs::read_to_string(unit_path(name)).unwrap();
        let mut text = text.replace("/usr/local/bin/powerhose-broker ", &format!("{BROKER} "));
        text = text.replace("/usr/local/bin/powerhose ", &format!("{POWERHOSE} "));
        assert!(!text.contains("/usr/local/bin/"), "{name}: an ExecStart binary left unreplaced");
        let copy = dir.path().join(name);
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&copies).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // It only warns about unknown keys or bad values, and goes on: any line
    // about our units fails the test.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| UNITS.iter().any(|u| l.contains(u))).collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify:\n{}", about_ours.join("\n"));
}

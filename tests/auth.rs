//! CURVE on tcp, as clients, workers, operators and strangers see it: each
//! role admitted by its allow-list only, refusals counted and logged, the
//! Python worker and a pyzmq client with keygen's certificates, bad key
//! flags, and the plaintext network refused unless `--insecure` (keys that
//! change while peers are connected: tests/auth_revocation.rs).

mod common;

use std::time::Duration;

use common::pki::*;
use common::*;
use powerhose::{Client, Error};

const T: Duration = Duration::from_secs(10);

const SHORT: Duration = Duration::from_millis(700);

#[test]
fn each_role_gets_in_with_its_key_only_and_refusals_are_counted_and_logged() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "c1"), ("workers", "w1"), ("operators", "op")]);
    pki.make("stranger");
    let (broker, front, back) = curve_broker(&dir, &pki, &[]);
    let operator = pki.client(&front, "op");
    let _w1 = curve_worker(&dir, &pki, &back, "w1");
    wait_workers(&operator, 1);

    let client = pki.client(&front, "c1");
    assert_eq!(client.execute("hello", T).unwrap(), b"hello");
    // A client sees the counts, not each worker's pid and host.
    let seen = client.status(T).unwrap();
    assert!(seen.curve && !seen.insecure);
    assert!(seen.workers.is_empty(), "{:?}", seen.workers);
    assert_eq!(seen.services[0].workers, 1);
    assert_eq!(operator.status(T).unwrap().workers.len(), 1);
    // Reload and scale are an operator's: a client's key is refused at once.
    match client.reload(T) {
        Err(Error::BadRequest(text)) => assert!(text.contains("operator"), "{text}"),
        other => panic!("a client's reload: {other:?}"),
    }
    match operator.reload(T) {
        Err(Error::BadRequest(text)) => assert!(text.contains("no supervisor"), "{text}"),
        other => panic!("an operator's reload on a lone broker: {other:?}"),
    }

    // The operator's tools: Nagios --check with a key, --status as the owner.
    let tool = |args: &[&str]| std::process::Command::new(BROKER).args(["--frontend", &front]).args(args).output();
    let (op_secret, broker_public) = (path(&pki.secret("op")), path(&pki.public("broker")));
    let check = tool(&["--check", "--curve-secret", &op_secret, "--curve-server", &broker_public]).unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("OK - "));
    let unkeyed = tool(&["--check", "--timeout", "0.5"]).unwrap();
    assert_eq!(unkeyed.status.code(), Some(2), "no key: CRITICAL, no answer");
    let owner = tool(&["--status", "--json", "--curve-secret", &path(&pki.secret("broker"))]).unwrap();
    let owner: powerhose::status::BrokerStatus = serde_json::from_slice(&owner.stdout).unwrap();
    assert_eq!(owner.workers.len(), 1, "the owner sees the workers");

    // Strangers: an unknown key, a worker's key at the front, no key at all.
    assert!(refused(pki.client(&front, "stranger").ping(SHORT)));
    assert!(refused(pki.client(&front, "w1").ping(SHORT)));
    assert!(refused(Client::connect(&front).unwrap().ping(SHORT)));
    // An unknown worker never registers; a client's key is no worker's either.
    let _w2 = curve_worker(&dir, &pki, &back, "stranger");
    let _w3 = curve_worker(&dir, &pki, &back, "c1");
    wait_until("both workers refused", T, || operator.status(T).unwrap().auth_failures.workers >= 2);
    let status = operator.status(T).unwrap();
    assert_eq!(status.workers.len(), 1, "only w1: {:?}", status.workers);
    // Two unknown keys and two peers without CURVE at all (a client, --check).
    assert!(status.auth_failures.clients >= 4, "{:?}", status.auth_failures);
    assert_eq!(status.auth_failures.operators, 1);
    let log = std::fs::read_to_string(&broker.log).unwrap();
    let stranger_key = powerhose::keys::load_certificate(&pki.public("stranger")).unwrap().public_z85();
    let line = format!("refused a CURVE handshake on the front from 127.0.0.1: key {}...", &stranger_key[..8]);
    assert!(log.contains(&line), "no {line:?} in\n{log}");
    assert!(log.contains("refused a CURVE handshake on the back from 127.0.0.1"), "{log}");
    assert!(log.contains("a handshake failed on the CURVE front (a peer without CURVE keys"), "{log}");
}

#[test]
fn a_role_without_an_allow_list_is_admitted_by_no_key() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow("clients", "c1");
    let (front, back) = (free_tcp(), free_tcp());
    let secret = path(&pki.secret("broker"));
    let clients = path(&pki.list("clients"));
    let args = ["--frontend", &front, "--backend", &back, "--curve-secret", &secret, "--allow-clients", &clients];
    let _broker = Proc::spawn(BROKER, &args, &dir, "broker");
    let client = pki.client(&front, "c1");
    client.ping(Duration::from_secs(30)).unwrap();
    // c1 is a client: as a worker it is refused, and nobody can be an operator.
    let _worker = curve_worker(&dir, &pki, &back, "c1");
    wait_until("the worker refused", T, || client.status(T).unwrap().auth_failures.workers >= 1);
    assert_eq!(client.workers("", T).unwrap(), 0);
    assert!(matches!(client.scale(Some(2), None, T), Err(Error::BadRequest(_))));
}

#[test]
fn the_python_worker_and_a_pyzmq_client_use_keygen_certificates() {
    let dir = TestDir::zmq();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "pyclient"), ("workers", "pyworker"), ("operators", "op")]);
    let (_broker, front, back) = curve_broker(&dir, &pki, &["--heartbeat-ms", "200"]);
    pki.make("stranger");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/worker.py");
    let py_worker = |name: &str| {
        let mut args =
            vec![script.to_string(), "--backend".into(), back.clone(), "--heartbeat-ms".into(), "200".into()];
        args.extend(pki.peer_args(name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut worker = Proc::spawn("python3", &args, &dir, name);
        worker.wait_line("pyworker ready", T);
        worker
    };
    // The stranger's fake worker (the probe's): refused, it sees no job.
    let operator = pki.client(&front, "op");
    let _fake = py_worker("stranger");
    wait_until("the fake worker refused", T, || operator.status(T).unwrap().auth_failures.workers >= 1);
    let _worker = py_worker("pyworker");
    wait_workers(&operator, 1);
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let run = |name: &str| {
        let mut cmd = std::process::Command::new("python3");
        cmd.args([client, "--frontend", &front, "--count", "20", "--timeout-ms", "2000"]);
        if !name.is_empty() {
            cmd.args(pki.peer_args(name));
        }
        cmd.output().unwrap()
    };
    let out = run("pyclient");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 20", "{}", String::from_utf8_lossy(&out.stderr));
    // Without a key, or with a stranger's, the same client gets nothing through.
    assert_eq!(run("").status.code(), Some(2));
    assert_eq!(run("stranger").status.code(), Some(2));
    assert_eq!(operator.status(T).unwrap().counters.ok, 20);
}

#[test]
fn the_network_is_not_served_in_plaintext_unless_insecure() {
    let dir = TestDir::new();
    let back = dir.back();
    for front in ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://[::]:5555"] {
        let mut broker = Proc::spawn(BROKER, &["--frontend", front, "--backend", &back], &dir, "refused");
        assert_eq!(broker.wait_exit(T).expect("refuses at once").code(), Some(2));
        let log = broker.stderr();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("--curve-secret") && log.contains("--insecure") && log.contains(front), "{log}");
    }
    // --insecure allows it, with a warning and a flag in STATUS. In a
    // namespace of its own, so that nothing outside can reach it.
    let net = net::Net::new(&["b"]);
    let host = net.host("b");
    let mut cmd = host.command(BROKER);
    cmd.args(["--frontend", "tcp://0.0.0.0:5555", "--backend", &back, "--insecure"]);
    cmd.env("POWERHOSE_RUNTIME_DIR", dir.path());
    let broker = Proc::spawn_cmd(cmd, &dir, "insecure");
    let mut status = host.command(BROKER);
    status.args(["--status", "--json", "--frontend", "tcp://127.0.0.1:5555", "--timeout", "10"]);
    let out = status.output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), broker.stderr());
    let status: powerhose::status::BrokerStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status.insecure && !status.curve);
    assert!(broker.stderr().contains("--insecure: serving the network without authentication"), "{}", broker.stderr());
}

#[test]
fn plaintext_loopback_clients_get_a_clients_rights_only() {
    let dir = TestDir::new();
    let front = free_tcp();
    let back = dir.back();
    let _broker = Proc::spawn(BROKER, &["--frontend", &front, "--backend", &back], &dir, "broker");
    let anonymous = Client::connect(&front).unwrap();
    anonymous.ping(Duration::from_secs(30)).unwrap();
    let plugin = plugin("test_plugin");
    let _worker = Proc::spawn(WORKER, &["--plugin", plugin.to_str().unwrap(), "--backend", &back], &dir, "worker");
    wait_until("the worker registered", T, || anonymous.workers("", T).unwrap() == 1);
    assert_eq!(anonymous.execute("x", T).unwrap(), b"x");
    assert!(anonymous.status(T).unwrap().workers.is_empty());
    assert!(matches!(anonymous.reload(T), Err(Error::BadRequest(t)) if t.contains("operator")));
}

#[test]
fn a_cluster_on_tcp_with_curve_obeys_operators_and_runs_its_own_workers_with_its_key() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.allow_all(&[("clients", "c1"), ("operators", "op")]);
    let (front, back) = (free_tcp(), free_tcp());
    let plugin = plugin("test_plugin");
    let mut args = vec![
        "--plugin".to_string(),
        path(&plugin),
        "--workers".into(),
        "2".into(),
        "--frontend".into(),
        front.clone(),
        "--backend".into(),
        back,
    ];
    args.extend(pki.broker_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = Proc::spawn(POWERHOSE, &args, &dir, "powerhose");
    cluster.wait_line("powerhose ready", Duration::from_secs(60));
    let client = |name: &str, command: &[&str]| {
        let mut cmd = std::process::Command::new(CLIENT);
        cmd.args(["--frontend", &front]).args(pki.peer_args(name)).args(command);
        cmd.output().unwrap()
    };
    let out = client("c1", &["run", "hi"]);
    assert_eq!(out.stdout, b"hi", "{}", String::from_utf8_lossy(&out.stderr));
    let out = client("c1", &["scale", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = client("op", &["scale", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_workers(&pki.client(&front, "op"), 3);
}

#[test]
fn bad_curve_flags_get_one_line_and_a_defined_exit() {
    let dir = TestDir::new();
    let pki = Pki::new(&dir);
    pki.make("w");
    std::fs::write(pki.list("workers").join("junk.key"), "not a certificate\n").unwrap();
    let plugin = path(&plugin("echo"));
    let (public, secret, broker) = (path(&pki.public("w")), path(&pki.secret("w")), path(&pki.public("broker")));
    let (broker_secret, workers) = (path(&pki.secret("broker")), path(&pki.list("workers")));
    let missing = path(&dir.path().join("nowhere"));
    let front = free_tcp();
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program).args(args).env("POWERHOSE_RUNTIME_DIR", dir.path()).output();
        let out = out.unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let worker = |extra: &[&str]| {
        let mut args = vec!["--plugin", &plugin, "--backend", "tcp://127.0.0.1:9"];
        args.extend_from_slice(extra);
        run(WORKER, &args)
    };
    let broker_with = |extra: &[&str]| {
        let mut args = vec!["--frontend", front.as_str(), "--backend", "tcp://127.0.0.1:9"];
        args.extend_from_slice(extra);
        run(BROKER, &args)
    };
    let one_line = |(code, err): (Option<i32>, String), want_code: i32, needle: &str| {
        assert_eq!(code, Some(want_code), "{err}");
        assert!(err.contains(needle), "no {needle:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    };
    // A public certificate where the secret one belongs.
    one_line(worker(&["--curve-secret", &public, "--curve-server", &broker]), 2, "give the NAME.key_secret file");
    // A secret others can read is refused, naming the file.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, err) = worker(&["--curve-secret", &secret, "--curve-server", &broker]);
    assert!(code.is_some_and(|c| c != 0) && err.contains(&secret) && err.trim_end().lines().count() == 1, "{err}");
    // Half a pair, or an allow-list without a secret, is a usage error (clap's, exit 2).
    assert_eq!(worker(&["--curve-secret", &secret]).0, Some(2));
    assert_eq!(broker_with(&["--allow-workers", &workers]).0, Some(2));
    assert_eq!(broker_with(&["--curve-secret", &broker_secret, "--insecure"]).0, Some(2));
    // An allow-list that cannot be read stops the start, naming it.
    let (code, err) = broker_with(&["--curve-secret", &broker_secret, "--allow-workers", &workers]);
    assert!(code.is_some_and(|c| c != 0) && err.contains("junk.key") && err.trim_end().lines().count() == 1, "{err}");
    let (code, err) = broker_with(&["--curve-secret", &broker_secret, "--allow-clients", &missing]);
    assert!(code.is_some_and(|c| c != 0) && err.contains("nowhere") && err.trim_end().lines().count() == 1, "{err}");
}

/// The local transport lets in only the broker's user (and root): a socket
/// file opened to everyone (by default it is 0600 in a 0700 directory)
/// still refuses another uid's connection, and counts it.
#[test]
fn a_local_endpoint_refuses_another_users_connection() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TestDir::new();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    for path in [dir.path(), open.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (front, back) =
        (format!("unix://{}/front.sock", open.display()), format!("unix://{}/back.sock", open.display()));
    let broker = Proc::spawn(BROKER, &["--frontend", &front, "--backend", &back], &dir, "broker");
    let client = Client::connect(&front).unwrap();
    assert_eq!(client.ping(T).unwrap_or_else(|e| panic!("{e}: {}", broker.stderr())), broker.pid());
    std::fs::set_permissions(open.join("front.sock"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new(CLIENT)
        .args(["--frontend", &front, "--timeout", "5", "ping"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "another user got in: {}", String::from_utf8_lossy(&out.stdout));
    // Refused as it connects, or (if the broker took longer to look) its
    // request's connection dropped.
    assert!(err.contains("its own user only") || err.contains("dropped"), "{err}");
    let status = client.status(T).unwrap();
    assert_eq!(status.auth_failures.clients, 1, "{}", broker.stderr());
    assert!(broker.stderr().contains("a local connection from uid 65534"), "{}", broker.stderr());
}

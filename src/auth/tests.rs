//! Roles, the allow-lists' decisions and rescans, and the ZAP decision,
//! without sockets (the handshakes themselves are in tests/auth.rs).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::allow::{AllowLists, Domain};
use super::zap::decide;
use super::*;
use crate::keys::{write_certificates, Keypair};
use crate::protocol::{ALLOW_LIST_RESCAN, ALLOW_LIST_SCAN};

fn key() -> String {
    Keypair::generate().unwrap().public_z85()
}

fn set(keys: &[&String]) -> HashSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn private_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
}

#[test]
fn only_the_owner_and_operators_may_control_or_see_workers() {
    for role in [Role::Owner, Role::Operator] {
        assert!(role.may_control() && role.sees_workers(), "{role:?}");
    }
    for role in [Role::Client, Role::Worker, Role::Anonymous] {
        assert!(!role.may_control() && !role.sees_workers(), "{role:?}");
    }
}

#[test]
fn a_build_without_curve_refuses_the_flags_in_one_line() {
    assert!(curve_available(Some(true), "--curve-secret").is_ok());
    for has in [Some(false), None] {
        let e = curve_available(has, "--curve-secret").unwrap_err();
        assert!(matches!(e, crate::Error::BadFlag(_)), "exit 2");
        let line = e.to_string();
        assert!(line.starts_with("--curve-secret: ") && line.contains("no CURVE") && !line.contains('\n'), "{line}");
    }
    // This build has it: libsodium is built in (zmq-sys/build.rs).
    assert!(require_curve("--curve-secret").is_ok());
}

#[test]
fn user_ids_round_trip_and_strangers_do_not_parse() {
    let k = key();
    for role in [Role::Owner, Role::Operator, Role::Client, Role::Worker] {
        assert_eq!(parse_user_id(&user_id(role, &k)), Some((role, k.as_str())));
    }
    assert_eq!(parse_user_id(""), None);
    assert_eq!(parse_user_id("root:abc"), None);
    assert_eq!(parse_user_id("client"), None);
}

#[test]
fn each_domain_admits_its_own_roles_and_the_owner() {
    let owner = Keypair::generate().unwrap();
    let now = Instant::now();
    let mut lists = AllowLists::new(&owner.public, now);
    let (client, operator, worker, stranger) = (key(), key(), key(), key());
    lists.replace(Role::Client, set(&[&client]));
    lists.replace(Role::Operator, set(&[&operator]));
    lists.replace(Role::Worker, set(&[&worker]));
    let own = owner.public_z85();
    assert_eq!(lists.admit(Domain::Front, &client), Some(Role::Client));
    assert_eq!(lists.admit(Domain::Front, &operator), Some(Role::Operator));
    assert_eq!(lists.admit(Domain::Front, &own), Some(Role::Owner));
    assert_eq!(lists.admit(Domain::Back, &own), Some(Role::Owner));
    assert_eq!(lists.admit(Domain::Back, &worker), Some(Role::Worker));
    // A worker's key is no client's, and the other way round.
    assert_eq!(lists.admit(Domain::Front, &worker), None);
    assert_eq!(lists.admit(Domain::Back, &client), None);
    assert_eq!(lists.admit(Domain::Back, &operator), None);
    assert_eq!(lists.admit(Domain::Front, &stranger), None);
    assert_eq!(lists.admit(Domain::Back, &stranger), None);
}

#[test]
fn a_role_without_a_list_admits_no_key() {
    let owner = Keypair::generate().unwrap();
    let lists = AllowLists::new(&owner.public, Instant::now());
    let k = key();
    assert_eq!(lists.admit(Domain::Front, &k), None);
    assert_eq!(lists.admit(Domain::Back, &k), None);
    assert!(!lists.still_allowed(Role::Anonymous, &k));
}

#[test]
fn replacing_a_list_reports_the_removed_keys() {
    let owner = Keypair::generate().unwrap();
    let mut lists = AllowLists::new(&owner.public, Instant::now());
    let (a, b, c) = (key(), key(), key());
    assert!(lists.replace(Role::Worker, set(&[&a, &b])).is_empty());
    // Rotation: c added while b stays, then b removed.
    assert!(lists.replace(Role::Worker, set(&[&a, &b, &c])).is_empty());
    assert_eq!(lists.replace(Role::Worker, set(&[&a, &c])), vec![b.clone()]);
    assert!(lists.still_allowed(Role::Worker, &a) && lists.still_allowed(Role::Worker, &c));
    assert!(!lists.still_allowed(Role::Worker, &b));
    assert!(lists.still_allowed(Role::Owner, &owner.public_z85()));
    assert!(!lists.still_allowed(Role::Owner, &a));
}

#[test]
fn scans_follow_the_directories_and_revoke_removed_certificates() {
    let dir = std::env::temp_dir().join(format!("powerhose-allow-{}-{}", std::process::id(), key().len()));
    let _ = std::fs::remove_dir_all(&dir);
    let (workers, clients) = (dir.join("workers"), dir.join("clients"));
    private_dir(&workers);
    private_dir(&clients);
    let (w1, _) = write_certificates(&workers, "w1").unwrap();
    let (c1, c1_secret) = write_certificates(&clients, "c1").unwrap();
    // A secret certificate in the list is skipped (it is not a *.key).
    assert!(c1_secret.exists());
    let mut server = CurveServer::from_file(&write_certificates(&dir, "broker").unwrap().1).unwrap();
    server.allow_workers = Some(workers.clone());
    server.allow_clients = Some(clients.clone());
    let t0 = Instant::now();
    let mut lists = AllowLists::load(&server, t0).unwrap();
    let w1_key = crate::keys::load_certificate(&w1).unwrap().public_z85();
    let c1_key = crate::keys::load_certificate(&c1).unwrap().public_z85();
    assert_eq!(lists.admit(Domain::Back, &w1_key), Some(Role::Worker));
    assert_eq!(lists.admit(Domain::Front, &c1_key), Some(Role::Client));
    assert_eq!(lists.admit(Domain::Front, &w1_key), None, "no operator list: no operator");

    // Not due yet: nothing read.
    std::fs::remove_file(&w1).unwrap();
    assert_eq!(lists.scan(t0 + ALLOW_LIST_SCAN - Duration::from_millis(1)), (vec![], vec![]));
    assert!(lists.still_allowed(Role::Worker, &w1_key));
    // Due: the removal is seen, a new certificate admitted, a bad file named.
    let (w2, _) = write_certificates(&workers, "w2").unwrap();
    std::fs::write(workers.join("junk.key"), "not a certificate").unwrap();
    let (revoked, problems) = lists.scan(t0 + ALLOW_LIST_SCAN);
    assert_eq!(revoked, vec![(Role::Worker, w1_key.clone())]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("junk.key"), "{problems:?}");
    let w2_key = crate::keys::load_certificate(&w2).unwrap().public_z85();
    assert_eq!(lists.admit(Domain::Back, &w2_key), Some(Role::Worker));
    assert!(!lists.still_allowed(Role::Worker, &w1_key));
    assert!(lists.still_allowed(Role::Client, &c1_key), "an unchanged list keeps its keys");
    // The whole directory gone: nobody of that role is allowed.
    std::fs::remove_dir_all(&clients).unwrap();
    let (revoked, problems) = lists.scan(t0 + ALLOW_LIST_RESCAN);
    assert_eq!(revoked, vec![(Role::Client, c1_key.clone())]);
    // The full rescan reads every directory: the junk is named again.
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("clients")), "{problems:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zap_requests_are_decided_by_domain_and_key() {
    let owner = Keypair::generate().unwrap();
    let mut lists = AllowLists::new(&owner.public, Instant::now());
    let worker = Keypair::generate().unwrap();
    lists.replace(Role::Worker, set(&[&worker.public_z85()]));
    let request = |domain: &str, mechanism: &str, key: &[u8]| -> Vec<Vec<u8>> {
        [b"1.0".as_slice(), b"7", domain.as_bytes(), b"10.0.0.9", b"", mechanism.as_bytes(), key]
            .iter()
            .map(|f| f.to_vec())
            .collect()
    };
    let run = |frames: Vec<Vec<u8>>| {
        let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        decide(&views, &lists)
    };
    let ok = run(request(BACK_DOMAIN, "CURVE", &worker.public));
    assert_eq!(ok.request_id, b"7");
    assert_eq!(ok.outcome, Ok(user_id(Role::Worker, &worker.public_z85())));

    let refused = run(request(FRONT_DOMAIN, "CURVE", &worker.public)).outcome.unwrap_err();
    assert_eq!(refused.domain, Some(Domain::Front));
    assert_eq!(refused.address, "10.0.0.9");
    assert_eq!(refused.key_start, worker.public_z85()[..8]);
    for (frames, why) in [
        (request("someone-elses", "CURVE", &worker.public), "unknown ZAP domain"),
        (request(BACK_DOMAIN, "NULL", b""), "not a CURVE handshake"),
        (request(BACK_DOMAIN, "CURVE", b"short"), "malformed CURVE key"),
        (request(BACK_DOMAIN, "CURVE", &worker.public)[..5].to_vec(), "malformed ZAP request"),
    ] {
        assert_eq!(run(frames).outcome.unwrap_err().why, why);
    }
}

/// Sets `dir`'s modification time, as a coarse clock tick would leave it.
fn set_mtime(dir: &Path, t: std::time::SystemTime) {
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

#[test]
fn a_certificate_added_in_the_tick_of_a_read_is_seen_at_the_next_scan() {
    let dir = std::env::temp_dir().join(format!("powerhose-allow-tick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let workers = dir.join("workers");
    private_dir(&workers);
    let mut server = CurveServer::from_file(&write_certificates(&dir, "broker").unwrap().1).unwrap();
    server.allow_workers = Some(workers.clone());
    let key_of = |p: &Path| crate::keys::load_certificate(p).unwrap().public_z85();

    // Read just after a change: a certificate added in the same tick leaves
    // the directory's time as it was, and is still read at the next scan.
    let t0 = Instant::now();
    let mut lists = AllowLists::load(&server, t0).unwrap();
    let read_at = std::fs::metadata(&workers).unwrap().modified().unwrap();
    let (w1, _) = write_certificates(&workers, "w1").unwrap();
    set_mtime(&workers, read_at);
    assert_eq!(lists.admit(Domain::Back, &key_of(&w1)), None);
    lists.scan(t0 + ALLOW_LIST_SCAN);
    assert_eq!(lists.admit(Domain::Back, &key_of(&w1)), Some(Role::Worker));

    // A directory unchanged for longer is not read again until it changes
    // (or the full rescan): the cheap path stays cheap.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&workers, old);
    lists.scan(t0 + ALLOW_LIST_SCAN * 2);
    let (w2, _) = write_certificates(&workers, "w2").unwrap();
    set_mtime(&workers, old);
    lists.scan(t0 + ALLOW_LIST_SCAN * 3);
    assert_eq!(lists.admit(Domain::Back, &key_of(&w2)), None, "settled and unchanged: not read");
    lists.scan(t0 + ALLOW_LIST_RESCAN);
    assert_eq!(lists.admit(Domain::Back, &key_of(&w2)), Some(Role::Worker));
    std::fs::remove_dir_all(&dir).unwrap();
}

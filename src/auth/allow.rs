//! The allow-lists: one directory of public certificates per role, read when
//! the broker starts and read again when a directory changes, so an added
//! certificate admits new connections and a removed one is revoked: the
//! broker stops obeying its holder at once (see [`super`]). Which key gets
//! which role is decided here, apart from the file reading.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{CurveServer, Role};
use crate::error::{Error, Result};
use crate::keys::{load_certificate, Keypair};
use crate::protocol::{ALLOW_LIST_RESCAN, ALLOW_LIST_SCAN};

/// Which socket a handshake is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    /// The front: clients and operators.
    Front,
    /// The back: workers.
    Back,
}

/// One role's list.
#[derive(Debug)]
struct List {
    dir: Option<PathBuf>,
    /// Z85 public keys.
    keys: HashSet<String>,
    /// The directory's modification time when last read.
    stamp: Option<SystemTime>,
    /// Whether that time was already [`ALLOW_LIST_SCAN`] old when read. A
    /// directory's time has the file system's coarse grain (a few ms here):
    /// a certificate added in the same tick as a read, or still being
    /// written then, leaves it unchanged, so a list read that soon after a
    /// change is read again at the next scan.
    settled: bool,
}

/// The keys each role may connect with.
#[derive(Debug)]
pub(crate) struct AllowLists {
    /// The broker's own public key (Z85): its holder is the owner.
    owner: String,
    clients: List,
    operators: List,
    workers: List,
    next_scan: Instant,
    next_full_scan: Instant,
}

impl AllowLists {
    /// Lists with these keys and no directories behind them (for tests and
    /// for building up from directories).
    pub fn new(owner: &[u8; 32], now: Instant) -> AllowLists {
        let empty = || List { dir: None, keys: HashSet::new(), stamp: None, settled: false };
        AllowLists {
            owner: crate::keys::z85(owner),
            clients: empty(),
            operators: empty(),
            workers: empty(),
            next_scan: now + ALLOW_LIST_SCAN,
            next_full_scan: now + ALLOW_LIST_RESCAN,
        }
    }

    /// Reads every directory of `curve`; a certificate that cannot be read
    /// fails the start with its one-line error.
    pub fn load(curve: &CurveServer, now: Instant) -> Result<AllowLists> {
        let mut lists = AllowLists::new(&curve.keys.public, now);
        for (list, dir) in [
            (&mut lists.clients, &curve.allow_clients),
            (&mut lists.operators, &curve.allow_operators),
            (&mut lists.workers, &curve.allow_workers),
        ] {
            let Some(dir) = dir else { continue };
            let (keys, mut errors) = read_dir(dir)?;
            if let Some(first) = errors.drain(..).next() {
                return Err(first);
            }
            list.keys = keys;
            list.dir = Some(dir.clone());
            (list.stamp, list.settled) = stamp(dir);
        }
        Ok(lists)
    }

    fn list_mut(&mut self, role: Role) -> Option<&mut List> {
        match role {
            Role::Client => Some(&mut self.clients),
            Role::Operator => Some(&mut self.operators),
            Role::Worker => Some(&mut self.workers),
            Role::Owner | Role::Anonymous => None,
        }
    }

    /// The role a handshake with `key` (Z85) gets on `domain`'s socket, or
    /// `None`: refused. The broker's own key is the owner's on both.
    pub fn admit(&self, domain: Domain, key: &str) -> Option<Role> {
        if key == self.owner {
            return Some(Role::Owner);
        }
        match domain {
            Domain::Front if self.operators.keys.contains(key) => Some(Role::Operator),
            Domain::Front if self.clients.keys.contains(key) => Some(Role::Client),
            Domain::Back if self.workers.keys.contains(key) => Some(Role::Worker),
            _ => None,
        }
    }

    /// Whether a peer admitted as `role` with `key` still is.
    pub fn still_allowed(&self, role: Role, key: &str) -> bool {
        match role {
            Role::Owner => key == self.owner,
            Role::Operator => self.operators.keys.contains(key),
            Role::Client => self.clients.keys.contains(key),
            Role::Worker => self.workers.keys.contains(key),
            Role::Anonymous => false,
        }
    }

    /// Replaces `role`'s keys; returns those that were removed.
    pub fn replace(&mut self, role: Role, keys: HashSet<String>) -> Vec<String> {
        let Some(list) = self.list_mut(role) else { return Vec::new() };
        let mut revoked: Vec<String> = list.keys.difference(&keys).cloned().collect();
        revoked.sort();
        list.keys = keys;
        revoked
    }

    /// When [`Self::scan`] is next due.
    pub fn next_scan(&self) -> Instant {
        self.next_scan
    }

    /// Re-reads the directories that changed (all of them every
    /// `ALLOW_LIST_RESCAN`: a certificate rewritten in place changes no
    /// directory). Returns the revoked keys with their role, and a line for
    /// each certificate that could not be read (it is left out).
    pub fn scan(&mut self, now: Instant) -> (Vec<(Role, String)>, Vec<String>) {
        let (mut revoked, mut problems) = (Vec::new(), Vec::new());
        if now < self.next_scan {
            return (revoked, problems);
        }
        self.next_scan = now + ALLOW_LIST_SCAN;
        let full = now >= self.next_full_scan;
        if full {
            self.next_full_scan = now + ALLOW_LIST_RESCAN;
        }
        for role in [Role::Client, Role::Operator, Role::Worker] {
            let list = self.list_mut(role).expect("a listed role");
            let Some(dir) = list.dir.clone() else { continue };
            let (now_stamp, settled) = stamp(&dir);
            if !full && list.settled && now_stamp == list.stamp && now_stamp.is_some() {
                continue;
            }
            (list.stamp, list.settled) = (now_stamp, settled);
            let keys = match read_dir(&dir) {
                Ok((keys, errors)) => {
                    problems.extend(errors.iter().map(ToString::to_string));
                    keys
                }
                // A directory that is gone or unreadable allows nobody.
                Err(e) => {
                    problems.push(e.to_string());
                    HashSet::new()
                }
            };
            revoked.extend(self.replace(role, keys).into_iter().map(|key| (role, key)));
        }
        (revoked, problems)
    }
}

/// The directory's modification time, and whether it is settled (see
/// [`List::settled`]); read before the directory itself.
fn stamp(dir: &Path) -> (Option<SystemTime>, bool) {
    let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let settled =
        modified.and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age >= ALLOW_LIST_SCAN);
    (modified, settled)
}

/// The public keys of every `*.key` in `dir`, and an error for each file
/// that is not a public certificate (left out). `Err` when the directory
/// itself cannot be read.
fn read_dir(dir: &Path) -> Result<(HashSet<String>, Vec<Error>)> {
    let context = || format!("reading allow-list directory {}", dir.display());
    let mut keys = HashSet::new();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(context())(e))? {
        let path = entry.map_err(|e| Error::io(context())(e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with('.') || !name.ends_with(".key") || !path.is_file() {
            continue;
        }
        match load_certificate(&path) {
            Ok(Keypair { secret: Some(_), .. }) => errors.push(Error::BadCertificate {
                path,
                line: None,
                reason: "holds a secret-key; an allow-list takes public certificates only".into(),
            }),
            Ok(pair) => {
                keys.insert(pair.public_z85());
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((keys, errors))
}

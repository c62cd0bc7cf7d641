//! Who sent a message: the role of each peer, checked per message on a
//! CURVE socket (a removed certificate stops its holder at the next scan),
//! the handshakes the ZAP handler refused, and the dropping of workers whose
//! key was revoked.

use std::collections::HashMap;
use std::time::Instant;

use super::{Io, Msg};
use crate::auth::allow::{AllowLists, Domain};
use crate::auth::exposure::{reach, Reach};
use crate::auth::zap::{Refusal, Zap};
use crate::auth::{parse_user_id, Role};
use crate::broker::state::{BrokerState, Output};
use crate::broker::warnings::Kind;
use crate::error::Result;
use crate::protocol::{Command, CommandFrame};
use crate::status::AuthFailures;

/// How a socket's peers are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::broker) enum Trust {
    /// ipc: only the owner can connect.
    Owner,
    /// Plaintext tcp: anyone who can reach it, a client's rights.
    Anonymous,
    /// CURVE: the role the ZAP handler gave the connection.
    Curve,
}

impl Trust {
    fn of(endpoint: &str, curve: bool) -> Trust {
        match reach(endpoint) {
            Reach::Owner => Trust::Owner,
            _ if curve => Trust::Curve,
            _ => Trust::Anonymous,
        }
    }
}

/// The broker's authentication state.
pub(in crate::broker) struct Gate {
    pub front: Trust,
    pub back: Trust,
    pub lists: Option<AllowLists>,
    pub failures: AuthFailures,
    /// Workers admitted over CURVE, by identity: their key, to drop them
    /// when it is revoked.
    worker_keys: HashMap<Vec<u8>, String>,
}

impl Gate {
    pub fn new(frontend: &str, backend: &str, lists: Option<AllowLists>) -> Gate {
        let curve = lists.is_some();
        Gate {
            front: Trust::of(frontend, curve),
            back: Trust::of(backend, curve),
            lists,
            failures: AuthFailures::default(),
            worker_keys: HashMap::new(),
        }
    }
}

/// The role in a CURVE message's `User-Id`, if its key is still allowed,
/// and the key itself when `want_key` (a copy: only a READY needs it).
fn curve_sender(lists: Option<&AllowLists>, last: &mut Msg, want_key: bool) -> Option<(Role, Option<String>)> {
    let (role, key) = parse_user_id(last.gets("User-Id")?)?;
    lists?.still_allowed(role, key).then(|| (role, want_key.then(|| key.to_string())))
}

impl Io<'_> {
    /// The role of the client that sent the message being handled, or
    /// `None` when its key was revoked (the message is dropped, counted).
    pub(super) fn front_role(&mut self, now: Instant, frames: &mut [Msg]) -> Option<Role> {
        match self.gate.front {
            Trust::Owner => Some(Role::Owner),
            Trust::Anonymous => Some(Role::Anonymous),
            Trust::Curve => {
                let sender = frames.last_mut().and_then(|last| curve_sender(self.gate.lists.as_ref(), last, false));
                if sender.is_none() {
                    self.gate.failures.clients += 1;
                    self.warnings.warn(now, Kind::Auth, format_args!("message from a revoked client key dropped"));
                }
                sender.map(|(role, _)| role)
            }
        }
    }

    /// Whether the worker message being handled may be obeyed; over CURVE
    /// also its key (`Some(None)` over ipc or plaintext). A worker whose key
    /// was revoked is dropped here, its jobs retried or answered.
    pub(super) fn back_sender(
        &mut self,
        now: Instant,
        identity: &[u8],
        frames: &mut [Msg],
        state: &mut BrokerState<Msg>,
        out: &mut Vec<Output<Msg>>,
    ) -> Option<Option<String>> {
        if self.gate.back != Trust::Curve {
            return Some(None);
        }
        // The key is kept for a READY only (to drop the worker if revoked).
        let ready =
            frames.first().and_then(|f| CommandFrame::decode(f).ok()).is_some_and(|c| c.command == Command::Ready);
        let sender = frames.last_mut().and_then(|last| curve_sender(self.gate.lists.as_ref(), last, ready));
        match sender {
            Some((_, key)) => Some(key),
            None => {
                self.gate.failures.workers += 1;
                self.warnings.warn(now, Kind::Auth, format_args!("message from a revoked worker key dropped"));
                self.gate.worker_keys.remove(identity);
                state.worker_revoked(now, identity, out);
                None
            }
        }
    }

    /// A monitor event of the back (`back`) or front socket: a handshake
    /// that failed before ZAP (a plaintext peer on a CURVE socket, or a
    /// broken one) is counted and logged. libzmq gives no peer address here.
    pub(super) fn handshake_event(&mut self, now: Instant, back: bool, event: u16) {
        let failed = [zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL, zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL]
            .iter()
            .any(|e| *e as u16 == event);
        if !failed {
            return;
        }
        let side = if back {
            self.gate.failures.workers += 1;
            "back"
        } else {
            self.gate.failures.clients += 1;
            "front"
        };
        self.warnings.warn(
            now,
            Kind::Auth,
            format_args!("a handshake failed on the CURVE {side} (a peer without CURVE keys, or a broken one)"),
        );
    }

    /// A worker admitted over CURVE registered with `key`.
    pub(super) fn worker_key(&mut self, identity: &[u8], key: String) {
        self.gate.worker_keys.insert(identity.to_vec(), key);
    }

    /// Answers the ZAP handler's pending requests, counting and logging refusals.
    pub(in crate::broker) fn serve_zap(&mut self, zap: &Zap, now: Instant) -> Result<()> {
        let Some(lists) = self.gate.lists.as_ref() else { return Ok(()) };
        let (failures, warnings) = (&mut self.gate.failures, &mut self.warnings);
        zap.serve(lists, |refusal: Refusal| {
            let (side, roles) = match refusal.domain {
                Some(Domain::Back) => {
                    failures.workers += 1;
                    ("back", "--allow-workers")
                }
                _ => {
                    failures.clients += 1;
                    ("front", "--allow-clients or --allow-operators")
                }
            };
            let key =
                if refusal.key_start.is_empty() { String::new() } else { format!(" key {}...", refusal.key_start) };
            warnings.warn(
                now,
                Kind::Auth,
                format_args!(
                    "refused a CURVE handshake on the {side} from {}:{key} {} ({roles})",
                    refusal.address, refusal.why
                ),
            );
        })
    }

    /// Reads the allow-lists again if due; drops the workers whose key was
    /// removed (their clients' messages are refused from now on anyway).
    pub(in crate::broker) fn scan_allow_lists(
        &mut self,
        now: Instant,
        state: &mut BrokerState<Msg>,
        out: &mut Vec<Output<Msg>>,
    ) {
        let Some(lists) = self.gate.lists.as_mut() else { return };
        let (revoked, problems) = lists.scan(now);
        for problem in problems {
            tracing::warn!("allow-list: {problem} (left out)");
        }
        for (role, key) in revoked {
            tracing::warn!("key {}... removed from the {} allow-list: its holders are dropped", &key[..8], role.name());
            if role != Role::Worker {
                continue;
            }
            let holders: Vec<Vec<u8>> =
                self.gate.worker_keys.iter().filter(|(_, k)| **k == key).map(|(id, _)| id.clone()).collect();
            for identity in holders {
                self.gate.worker_keys.remove(&identity);
                state.worker_revoked(now, &identity, out);
            }
        }
        // Forget the keys of workers that left by themselves.
        self.gate.worker_keys.retain(|identity, _| state.knows_worker(identity));
        self.flush(state, out);
    }

    /// When the allow-lists are next due for a scan.
    pub(in crate::broker) fn next_scan(&self) -> Option<Instant> {
        self.gate.lists.as_ref().map(AllowLists::next_scan)
    }
}

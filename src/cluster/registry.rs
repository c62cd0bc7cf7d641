//! How a pool's supervisor learns which of its workers registered: from its
//! in-process broker, or, for a pool whose brokers run elsewhere
//! (`--connect`), from the workers themselves, each notifying a socket of
//! the supervisor's (`sd_notify`'s `READY=1`, see [`crate::sys::notify`])
//! once it has registered with a broker.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::broker::Notice;
use crate::error::{Error, Result};
use crate::sys::notify::Listener;
use crate::wakeup::Wakeup;

/// How long the broker may take to say which workers registered.
const REGISTERED_WAIT: Duration = Duration::from_secs(2);

pub(super) enum Registry {
    /// The in-process broker, asked over its notice channel (it also hears
    /// of deaths and of the drain at stop).
    Broker { notices: Sender<Notice>, wake: Wakeup },
    /// Remote brokers: the workers' own notifications, and the pids that
    /// said `READY=1` so far.
    Notify { listener: Listener, ready: HashSet<u32> },
}

impl Registry {
    /// Tells the in-process broker, if there is one.
    pub fn tell(&self, notice: Notice) {
        if let Registry::Broker { notices, wake } = self {
            if notices.send(notice).is_ok() {
                wake.trigger();
            }
        }
    }

    /// Pids of the workers registered (with a broker) now, or ever (with
    /// notifications: a worker says so once).
    pub fn registered(&mut self) -> Result<Vec<u32>> {
        match self {
            Registry::Broker { .. } => {
                let (tx, rx) = std::sync::mpsc::channel();
                self.tell(Notice::Registered(tx));
                rx.recv_timeout(REGISTERED_WAIT).map_err(|_| Error::Timeout(REGISTERED_WAIT))
            }
            Registry::Notify { listener, ready } => {
                ready.extend(listener.drain().into_iter().filter(|n| n.ready).filter_map(|n| n.pid));
                Ok(ready.iter().copied().collect())
            }
        }
    }

    /// A worker exited: its pid may come back as another process's.
    pub fn forget(&mut self, pid: u32) {
        match self {
            Registry::Broker { .. } => self.tell(Notice::WorkerDied(pid)),
            Registry::Notify { ready, .. } => {
                ready.remove(&pid);
            }
        }
    }

    /// Another handle on the same in-process broker, for another pool's
    /// supervisor (`None` for remote brokers: each pool listens on its own).
    #[cfg(feature = "tools")]
    pub fn share(&self) -> Option<Registry> {
        match self {
            Registry::Broker { notices, wake } => {
                Some(Registry::Broker { notices: notices.clone(), wake: wake.clone() })
            }
            Registry::Notify { .. } => None,
        }
    }

    /// The `$NOTIFY_SOCKET` the workers get: ours, or none (a pool run by
    /// systemd must not pass systemd's socket on to its workers).
    pub fn notify_socket(&self) -> Option<&std::path::Path> {
        match self {
            Registry::Broker { .. } => None,
            Registry::Notify { listener, .. } => Some(listener.path()),
        }
    }
}

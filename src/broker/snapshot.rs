//! What a metrics scrape asks the broker's loop for: a copy of its figures,
//! taken by the loop itself between two turns (through its [`Inbox`]), so
//! that the loop shares nothing with the scraping thread and takes no lock
//! per job.

use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use super::state::ServiceSnapshot;
use super::{Inbox, Notice};
use crate::error::{Error, Result};
use crate::status::BrokerStatus;
use crate::wakeup::Wakeup;

/// The broker's figures at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// What `STATUS` reports (broker-wide counters, auth failures, services).
    pub status: BrokerStatus,
    /// Each service's outcomes, histograms, queue and workers (see
    /// [`super::state::BrokerState::service_snapshots`]).
    pub services: Vec<ServiceSnapshot>,
}

/// Asks a running broker for a [`Snapshot`]; clonable, for another thread.
#[derive(Clone, Debug)]
pub struct Probe {
    notices: Sender<Notice>,
    wake: Wakeup,
}

impl Probe {
    /// A probe sending through `notices` and waking the loop with `wake`
    /// (the two ends of the broker's [`Inbox`]).
    pub fn new(notices: Sender<Notice>, wake: Wakeup) -> Self {
        Probe { notices, wake }
    }

    /// An inbox for a broker nobody else tells anything, and its probe.
    pub fn with_inbox() -> Result<(Inbox, Probe)> {
        let (tx, rx) = mpsc::channel();
        let wake = Wakeup::new()?;
        Ok((Inbox { rx, wake: wake.clone() }, Probe::new(tx, wake)))
    }

    /// The broker's figures, if its loop answers within `timeout`.
    pub fn snapshot(&self, timeout: Duration) -> Result<Snapshot> {
        let (tx, rx) = mpsc::channel();
        self.notices.send(Notice::Snapshot(tx)).map_err(|_| Error::Protocol("the broker has stopped".into()))?;
        self.wake.trigger();
        rx.recv_timeout(timeout).map(|s| *s).map_err(|_| Error::Timeout(timeout))
    }
}

//! What the jobs waiting at the broker (queued or in limbo) hold, in bytes
//! and jobs, in all and per client: the memory bound is in bytes, and no
//! client may take more than its share, so one flooding client gets `Busy`
//! while the others keep being served.

use std::collections::HashMap;

/// A client may hold at most this part of the byte limit and of the job
/// limit (numerator over 100).
pub const CLIENT_SHARE_PERCENT: usize = 50;

/// Per-client entries are swept when there are more than this many, so a
/// steady client's entry stays (no allocation per job) while clients that
/// came and went are dropped.
const SWEEP_ABOVE: usize = 1024;

#[derive(Default, Clone, Copy)]
struct Share {
    bytes: usize,
    jobs: usize,
}

/// The running totals; the state machine charges every job that starts
/// waiting and credits every job that stops.
#[derive(Default)]
pub(super) struct Ledger {
    bytes: usize,
    jobs: usize,
    per_client: HashMap<Box<[u8]>, Share>,
}

/// Why a job may not wait.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The broker holds its byte limit.
    Full,
    /// This client holds its share.
    ClientShare,
}

impl Ledger {
    /// Whether a job of `size` bytes from `client` may wait, given the byte
    /// limit and the job limit per client share.
    pub fn admits(&self, client: &[u8], size: usize, max_bytes: usize, max_jobs: usize) -> Result<(), Refusal> {
        if self.bytes.saturating_add(size) > max_bytes {
            return Err(Refusal::Full);
        }
        let mine = self.per_client.get(client).copied().unwrap_or_default();
        let share = |limit: usize| limit / 100 * CLIENT_SHARE_PERCENT + limit % 100 * CLIENT_SHARE_PERCENT / 100;
        if mine.bytes.saturating_add(size) > share(max_bytes).max(size) || mine.jobs + 1 > share(max_jobs).max(1) {
            return Err(Refusal::ClientShare);
        }
        Ok(())
    }

    /// A job starts waiting.
    pub fn charge(&mut self, client: &[u8], size: usize) {
        self.bytes += size;
        self.jobs += 1;
        match self.per_client.get_mut(client) {
            Some(share) => {
                share.bytes += size;
                share.jobs += 1;
            }
            None => {
                if self.per_client.len() >= SWEEP_ABOVE {
                    self.per_client.retain(|_, s| s.jobs > 0);
                }
                self.per_client.insert(client.into(), Share { bytes: size, jobs: 1 });
            }
        }
    }

    /// A job stops waiting (dispatched, answered, or dropped).
    pub fn credit(&mut self, client: &[u8], size: usize) {
        self.bytes = self.bytes.saturating_sub(size);
        self.jobs = self.jobs.saturating_sub(1);
        if let Some(share) = self.per_client.get_mut(client) {
            share.bytes = share.bytes.saturating_sub(size);
            share.jobs = share.jobs.saturating_sub(1);
        }
    }

    /// Bytes the waiting jobs hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_limit_and_each_clients_share_are_enforced() {
        let mut l = Ledger::default();
        // 1,000 bytes and 10 jobs: a client may hold 500 bytes and 5 jobs.
        assert_eq!(l.admits(b"a", 400, 1000, 10), Ok(()));
        l.charge(b"a", 400);
        assert_eq!(l.admits(b"a", 200, 1000, 10), Err(Refusal::ClientShare), "a would hold 600 of 1,000");
        assert_eq!(l.admits(b"b", 500, 1000, 10), Ok(()), "others are still served");
        l.charge(b"b", 500);
        assert_eq!(l.admits(b"c", 200, 1000, 10), Err(Refusal::Full));
        l.credit(b"a", 400);
        assert_eq!(l.admits(b"c", 200, 1000, 10), Ok(()));
        for _ in 0..5 {
            l.charge(b"d", 1);
        }
        assert_eq!(l.admits(b"d", 1, 1000, 10), Err(Refusal::ClientShare), "five jobs of ten");
        assert_eq!(l.bytes(), 505);
        // A job larger than the share alone still fits an otherwise idle broker.
        let empty = Ledger::default();
        assert_eq!(empty.admits(b"a", 900, 1000, 10), Ok(()));
    }

    #[test]
    fn clients_that_left_are_swept_but_a_steady_one_keeps_its_entry() {
        let mut l = Ledger::default();
        for i in 0..SWEEP_ABOVE as u32 {
            l.charge(&i.to_le_bytes(), 1);
            l.credit(&i.to_le_bytes(), 1);
        }
        l.charge(b"steady", 1);
        assert!(l.per_client.len() <= 2, "{} entries", l.per_client.len());
        assert_eq!((l.bytes, l.jobs), (1, 1));
    }
}

//! A service's waiting jobs by priority: one FIFO lane per level. The next
//! job is the head with the highest *effective* priority, its own plus one
//! level per [`PRIORITY_AGE_STEP`] it has waited since the broker received
//! it, ties going to the one received first; so higher levels go first,
//! each level is FIFO, and a low-priority job is never starved (see
//! [`PRIORITY_AGE_STEP`] for the bound). Pure: time is passed in.

use std::collections::VecDeque;
use std::time::Instant;

use super::Queued;
use crate::protocol::{PRIORITY_AGE_STEP, PRIORITY_MAX};

/// Levels 0 to [`PRIORITY_MAX`].
pub const LEVELS: usize = PRIORITY_MAX as usize + 1;

pub(super) struct Lanes<M> {
    lanes: [VecDeque<Queued<M>>; LEVELS],
    len: usize,
}

impl<M> Default for Lanes<M> {
    fn default() -> Self {
        Lanes { lanes: std::array::from_fn(|_| VecDeque::new()), len: 0 }
    }
}

impl<M> Lanes<M> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A new job: last of its level.
    pub fn push_back(&mut self, q: Queued<M>) {
        self.len += 1;
        self.lanes[level(&q)].push_back(q);
    }

    /// A job waiting again (returned, or retried after its worker was
    /// lost): first of its level.
    pub fn push_front(&mut self, q: Queued<M>) {
        self.len += 1;
        self.lanes[level(&q)].push_front(q);
    }

    /// The lane whose head goes next at `now` (see [`Lanes::head`],
    /// [`Lanes::pop_lane`]): chosen once, then looked at and taken.
    pub fn next_lane(&self, now: Instant) -> Option<usize> {
        let effective = |lane: usize, q: &Queued<M>| {
            let waited = now.saturating_duration_since(q.job.received);
            let aged = (waited.as_nanos() / PRIORITY_AGE_STEP.as_nanos()).min(LEVELS as u128) as usize;
            (lane + aged).min(PRIORITY_MAX as usize)
        };
        (0..LEVELS)
            .filter_map(|lane| self.lanes[lane].front().map(|q| (lane, effective(lane, q), q.job.received)))
            // Highest effective level; among equals the one received first.
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(lane, _, _)| lane)
    }

    /// The first job of `lane`, which [`Lanes::next_lane`] named.
    pub fn head(&self, lane: usize) -> &Queued<M> {
        self.lanes[lane].front().expect("next_lane names a lane with jobs")
    }

    /// Takes the first job of `lane`, which [`Lanes::next_lane`] named.
    pub fn pop_lane(&mut self, lane: usize) -> Queued<M> {
        self.len -= 1;
        self.lanes[lane].pop_front().expect("next_lane names a lane with jobs")
    }

    /// Every waiting job, level by level, each level in order.
    pub fn iter(&self) -> impl Iterator<Item = &Queued<M>> {
        self.lanes.iter().flatten()
    }

    /// Takes every waiting job (level by level, each level in order):
    /// pushing them back in that order restores the lanes.
    pub fn take_all(&mut self) -> Vec<Queued<M>> {
        self.len = 0;
        self.lanes.iter_mut().flat_map(std::mem::take).collect()
    }

    /// Takes the first waiting job that `wanted` picks, whatever its level.
    pub fn remove_first(&mut self, mut wanted: impl FnMut(&Queued<M>) -> bool) -> Option<Queued<M>> {
        for lane in &mut self.lanes {
            if let Some(at) = lane.iter().position(&mut wanted) {
                self.len -= 1;
                return lane.remove(at);
            }
        }
        None
    }

    /// Jobs waiting at each level.
    pub fn depths(&self) -> [usize; LEVELS] {
        std::array::from_fn(|lane| self.lanes[lane].len())
    }
}

fn level<M>(q: &Queued<M>) -> usize {
    usize::from(q.job.priority.min(PRIORITY_MAX))
}

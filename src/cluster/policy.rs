//! The supervisor's restart policy: what a worker's exit means and when to
//! start its replacement, a pure state machine fed with explicit instants.
//!
//! A worker that never got to serve (not registered, and out within the start
//! window or unable to load its plugin) failed to start: the plugin, its
//! parameters or the environment is at fault, so retrying at once would spin.
//! Those retries back off (0.1 s, doubling) and stop after
//! [`MAX_START_FAILURES`] in a row. A worker that served and then left or
//! died is replaced at once. The supervisor does the process calls and asks
//! this type; every rule here is unit-tested without sleeping.

use std::time::{Duration, Instant};

/// A worker that exits sooner than this after starting failed to start.
pub(super) const START_WINDOW: Duration = Duration::from_secs(5);
/// Start failures in a row before the supervisor gives up.
pub(super) const MAX_START_FAILURES: u32 = 5;
/// Wait before retrying after the first start failure; doubles with each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Start failures further apart than this are not "in a row": the count
/// starts again (a worker that failed once an hour is no crash loop).
const QUIET_WINDOW: Duration = START_WINDOW.saturating_mul(2);

/// What the supervisor knows about a worker that exited.
#[derive(Clone, Copy, Debug)]
pub(super) struct ExitFacts {
    /// It was asked to leave (reload, scale down, stop).
    pub retiring: bool,
    /// Exit code 0: it left on its own (max age).
    pub success: bool,
    /// It exited with `EXIT_PLUGIN`: it could not load its plugin.
    pub plugin_failure: bool,
    /// Time from its start to its exit being seen.
    pub lived: Duration,
    /// The broker knew it (asked before the broker hears of its death).
    pub was_registered: bool,
}

/// What to do about an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Expected (it was retiring): nothing to replace.
    Forget,
    /// It served, then left (`crashed: false`, max age) or died: replace it
    /// at once, unless an earlier start failure's backoff is still running.
    ReplaceNow { crashed: bool },
    /// It failed to start: start the next worker at `at`, `backoff` from now.
    RetryAt { at: Instant, backoff: Duration },
    /// The `attempts`-th start failure in a row: stop respawning.
    GiveUp { attempts: u32 },
}

/// Counts start failures in a row and holds the time of the next respawn.
#[derive(Debug, Default)]
pub(super) struct RestartPolicy {
    /// Start failures in a row.
    failures: u32,
    last_failure: Option<Instant>,
    /// No worker is started before this (backing off after a start failure).
    respawn_at: Option<Instant>,
}

impl RestartPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies an exit seen at `now` and updates the failure count.
    pub fn on_exit(&mut self, now: Instant, exit: ExitFacts) -> Verdict {
        if self.last_failure.is_some_and(|t| now.saturating_duration_since(t) > QUIET_WINDOW) {
            self.failures = 0;
        }
        if exit.retiring {
            return Verdict::Forget;
        }
        if exit.success {
            self.failures = 0;
            return Verdict::ReplaceNow { crashed: false };
        }
        let never_served = !exit.was_registered && (exit.plugin_failure || exit.lived < START_WINDOW);
        if !never_served {
            // It served: whatever killed it is no start-up fault.
            self.failures = 0;
            return Verdict::ReplaceNow { crashed: true };
        }
        self.failures += 1;
        self.last_failure = Some(now);
        if self.failures >= MAX_START_FAILURES {
            return Verdict::GiveUp { attempts: self.failures };
        }
        let backoff = FIRST_BACKOFF * 2u32.pow(self.failures - 1);
        let at = now + backoff;
        self.respawn_at = Some(at);
        Verdict::RetryAt { at, backoff }
    }

    /// Whether workers may be started at `now` (no backoff running); a
    /// backoff that has run out is dropped, so [`Self::next_respawn`] ends.
    pub fn may_spawn(&mut self, now: Instant) -> bool {
        if self.respawn_at.is_some_and(|at| now < at) {
            return false;
        }
        self.respawn_at = None;
        true
    }

    /// When a backed-off respawn is due: the supervisor wakes up then.
    pub fn next_respawn(&self) -> Option<Instant> {
        self.respawn_at
    }
}

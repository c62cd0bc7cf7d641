//! Handing the CPU over after answers: when a worker sends answers and has
//! more jobs at hand, it yields its CPU once, so that the broker its answers
//! woke (and the callers the broker wakes in turn) run now rather than after
//! the worker's time slice. Linux (EEVDF) may let a running task go on for
//! up to its slice (1.4 ms here) before a woken one runs, and meanwhile the
//! answers' callers wait, and so does this worker's next supply of jobs.
//!
//! A yield also hands the CPU to anything else ready on it: a busy process
//! of someone else's then takes a whole slice, and the worker loses that
//! much of its share. This policy watches how long its yields take and
//! stops yielding for a while when too many give the CPU away like that.

use std::time::{Duration, Instant};

/// A yield that took longer than this gave the CPU to work that is not ours:
/// the broker and a few callers take tens of microseconds, a busy process
/// a whole slice (README, "Why the defaults").
const LONG_YIELD: Duration = Duration::from_micros(500);
/// Yields are judged in windows of this many.
const WINDOW: u32 = 64;
/// This many long yields in one window mean other work shares the CPU.
const LONG_IN_WINDOW: u32 = 4;
/// How long the worker stops yielding then (it tries again afterwards: the
/// other work may be gone).
const PAUSE: Duration = Duration::from_secs(1);

/// Whether the job thread yields after sending answers, from how its last
/// yields went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handoff {
    /// Yields judged in the current window, and how many of them were long.
    seen: u32,
    long: u32,
    /// No yields until then.
    paused_until: Option<Instant>,
}

impl Handoff {
    /// Whether to yield now.
    pub fn may_yield(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|until| now >= until)
    }

    /// Records a yield that took `took`, ending at `now`.
    pub fn yielded(&mut self, took: Duration, now: Instant) {
        self.paused_until = None;
        self.seen += 1;
        self.long += u32::from(took > LONG_YIELD);
        if self.long >= LONG_IN_WINDOW {
            self.paused_until = Some(now + PAUSE);
            (self.seen, self.long) = (0, 0);
        } else if self.seen >= WINDOW {
            (self.seen, self.long) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_micros(30);
    const SLICE: Duration = Duration::from_micros(1400);

    #[test]
    fn yields_while_yields_stay_short() {
        let (mut h, t0) = (Handoff::default(), Instant::now());
        assert!(h.may_yield(t0));
        for i in 0..10 * WINDOW {
            // A long one now and then (the broker had much to do) is no reason to stop.
            let took = if i % 32 == 0 { SLICE } else { SHORT };
            h.yielded(took, t0);
            assert!(h.may_yield(t0), "yield {i}");
        }
    }

    #[test]
    fn stops_for_a_while_when_other_work_takes_the_cpu() {
        let (mut h, t0) = (Handoff::default(), Instant::now());
        for _ in 0..LONG_IN_WINDOW - 1 {
            h.yielded(SLICE, t0);
            h.yielded(SHORT, t0);
        }
        assert!(h.may_yield(t0));
        h.yielded(SLICE, t0);
        assert!(!h.may_yield(t0), "as many long yields as LONG_IN_WINDOW");
        assert!(!h.may_yield(t0 + PAUSE - Duration::from_millis(1)));
        assert!(h.may_yield(t0 + PAUSE), "tried again after the pause");
        // A fresh window: one long yield alone does not stop it again.
        h.yielded(SLICE, t0 + PAUSE);
        assert!(h.may_yield(t0 + PAUSE));
    }

    #[test]
    fn long_yields_count_within_one_window_only() {
        let (mut h, t0) = (Handoff::default(), Instant::now());
        for _ in 0..LONG_IN_WINDOW - 1 {
            h.yielded(SLICE, t0);
        }
        for _ in LONG_IN_WINDOW - 1..WINDOW {
            h.yielded(SHORT, t0);
        }
        h.yielded(SLICE, t0);
        assert!(h.may_yield(t0), "the earlier window's long yields are forgotten");
        assert!(LONG_YIELD < SLICE && SHORT < LONG_YIELD);
    }
}

//! The handler's turn: a worker runs one job at a time, whether it came
//! from a broker (the job thread) or from a local client (the lane), and a
//! job whose handler outlives `--timeout` makes the worker *stuck* until it
//! returns: the lane then sends its callers to the broker instead of
//! keeping them waiting, and the job thread gives the brokers' jobs back
//! (busy elsewhere) instead of taking them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a lane waiting for its turn looks whether the handler is stuck.
const STUCK_CHECK: Duration = Duration::from_millis(50);

/// Whose turn it is at the handler.
#[derive(Default)]
pub(super) struct HandlerTurn {
    state: Mutex<State>,
    free: Condvar,
    stuck: AtomicBool,
}

#[derive(Default)]
struct State {
    busy: bool,
    /// Threads waiting for the turn: a turn given up with none skips the
    /// wake (a system call per job).
    waiters: usize,
}

/// A turn at the handler, given up when dropped (which also ends "stuck").
pub(super) struct Turn<'t>(&'t HandlerTurn);

impl HandlerTurn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the turn, however long.
    pub(super) fn take(&self) -> Turn<'_> {
        let mut state = self.lock();
        while state.busy {
            state.waiters += 1;
            state = self.free.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiters -= 1;
        }
        state.busy = true;
        Turn(self)
    }

    /// Waits for the turn unless the job that has it is stuck: `None` then.
    pub(super) fn take_unless_stuck(&self) -> Option<Turn<'_>> {
        let mut state = self.lock();
        while state.busy {
            if self.is_stuck() {
                return None;
            }
            state.waiters += 1;
            state = self.free.wait_timeout(state, STUCK_CHECK).unwrap_or_else(|p| p.into_inner()).0;
            state.waiters -= 1;
        }
        state.busy = true;
        Some(Turn(self))
    }

    /// The running job's handler outlived `--timeout` (said by the pulse thread).
    pub(super) fn set_stuck(&self) {
        self.stuck.store(true, Ordering::Release);
    }

    /// Whether a job has the turn: asked by the job thread, whose own jobs
    /// take it only while it runs them, so it is the lane's.
    pub(super) fn is_busy(&self) -> bool {
        self.lock().busy
    }

    /// Whether the running job's handler outlived `--timeout`.
    pub(super) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Acquire)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.stuck.store(false, Ordering::Release);
        let mut state = self.0.lock();
        state.busy = false;
        // A thread not counted now waits for this lock, then finds the turn free.
        let waiting = state.waiters > 0;
        drop(state);
        if waiting {
            self.0.free.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_at_a_time_and_a_stuck_one_turns_the_lane_away() {
        let turn = HandlerTurn::default();
        let first = turn.take();
        std::thread::scope(|s| {
            // Waiting already or not yet: turned away either way.
            let waiter = s.spawn(|| turn.take_unless_stuck().is_some());
            turn.set_stuck();
            let got = waiter.join().unwrap();
            assert!(!got, "turned away while the handler is stuck");
            assert!(turn.is_stuck());
            assert!(turn.is_busy());
            drop(first);
            assert!(!turn.is_stuck(), "the stuck job's end ends it");
            assert!(!turn.is_busy());
            let again = turn.take_unless_stuck();
            assert!(again.is_some());
            // A plain waiter gets the turn when it is given up.
            let waiter = s.spawn(|| {
                let _t = turn.take();
            });
            drop(again);
            waiter.join().unwrap();
        });
    }
}

//! Unit tests of the restart policy, driven with explicit instants.

use std::time::{Duration, Instant};

use super::policy::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A worker that could not load its plugin, seen soon after its start.
fn plugin_failure() -> ExitFacts {
    ExitFacts { retiring: false, success: false, plugin_failure: true, lived: ms(30), was_registered: false }
}

/// A worker that exited with an error inside the start window, never registered.
fn early_exit(lived: Duration) -> ExitFacts {
    ExitFacts { retiring: false, success: false, plugin_failure: false, lived, was_registered: false }
}

/// A registered worker that died (killed, panicked) after `lived`.
fn crash(lived: Duration) -> ExitFacts {
    ExitFacts { retiring: false, success: false, plugin_failure: false, lived, was_registered: true }
}

/// A worker that left on its own at max age.
fn max_age_leave() -> ExitFacts {
    ExitFacts {
        retiring: false,
        success: true,
        plugin_failure: false,
        lived: Duration::from_secs(60),
        was_registered: true,
    }
}

/// Feeds `n` plugin failures, each when the previous backoff ends; returns
/// the instant of the last one.
/// A fresh policy after `n` start failures in a row, and the last one's instant.
fn after_failures(n: u32) -> (RestartPolicy, Instant) {
    let mut p = RestartPolicy::new();
    let last = fail_in_a_row(&mut p, Instant::now(), n);
    (p, last)
}

fn fail_in_a_row(p: &mut RestartPolicy, t0: Instant, n: u32) -> Instant {
    let mut now = t0;
    for i in 0..n {
        match p.on_exit(now, plugin_failure()) {
            Verdict::RetryAt { at, .. } if i + 1 < n => now = at,
            Verdict::RetryAt { .. } => {}
            other => panic!("failure {}: {other:?}", i + 1),
        }
    }
    now
}

#[test]
fn a_crash_loop_backs_off_doubling_then_gives_up_after_five() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    let mut now = t0;
    for expected in [ms(100), ms(200), ms(400), ms(800)] {
        assert!(p.may_spawn(now), "no backoff running at {now:?}");
        let verdict = p.on_exit(now, plugin_failure());
        assert_eq!(verdict, Verdict::RetryAt { at: now + expected, backoff: expected });
        assert_eq!(p.next_respawn(), Some(now + expected));
        assert!(!p.may_spawn(now), "backing off");
        assert!(!p.may_spawn(now + expected - ms(1)), "still backing off");
        now += expected;
    }
    assert!(p.may_spawn(now));
    assert_eq!(p.on_exit(now, plugin_failure()), Verdict::GiveUp { attempts: MAX_START_FAILURES });
    assert_eq!(MAX_START_FAILURES, 5);
}

#[test]
fn an_early_exit_without_registering_is_a_start_failure() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    assert_eq!(p.on_exit(t0, early_exit(ms(10))), Verdict::RetryAt { at: t0 + ms(100), backoff: ms(100) });
    let t1 = t0 + ms(100);
    let just_inside = START_WINDOW - ms(1);
    assert_eq!(p.on_exit(t1, early_exit(just_inside)), Verdict::RetryAt { at: t1 + ms(200), backoff: ms(200) });
}

#[test]
fn a_plugin_failure_is_a_start_failure_however_long_it_took() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    let slow = ExitFacts { lived: START_WINDOW * 3, ..plugin_failure() };
    assert_eq!(p.on_exit(t0, slow), Verdict::RetryAt { at: t0 + ms(100), backoff: ms(100) });
}

#[test]
fn a_worker_that_lived_past_the_start_window_is_replaced_at_once_and_resets_the_count() {
    let (mut p, last) = after_failures(3);
    let now = last + ms(400);
    assert_eq!(p.on_exit(now, early_exit(START_WINDOW)), Verdict::ReplaceNow { crashed: true });
    // The count starts again: the next failure waits 0.1 s, not 0.8 s.
    let later = now + ms(10);
    assert_eq!(p.on_exit(later, plugin_failure()), Verdict::RetryAt { at: later + ms(100), backoff: ms(100) });
}

#[test]
fn a_registered_worker_that_dies_early_is_replaced_at_once_and_resets_the_count() {
    let (mut p, last) = after_failures(4);
    let now = last + ms(800);
    assert_eq!(p.on_exit(now, crash(ms(50))), Verdict::ReplaceNow { crashed: true });
    // Four more failures are needed to give up again, not one.
    let last = fail_in_a_row(&mut p, now, 4);
    assert_eq!(p.on_exit(last + ms(800), plugin_failure()), Verdict::GiveUp { attempts: 5 });
}

#[test]
fn a_max_age_leave_is_replaced_at_once_and_resets_the_count() {
    let (mut p, last) = after_failures(4);
    let now = last + ms(800);
    assert!(p.may_spawn(now));
    assert_eq!(p.on_exit(now, max_age_leave()), Verdict::ReplaceNow { crashed: false });
    assert!(p.may_spawn(now), "a leave starts no backoff");
    assert_eq!(p.on_exit(now, plugin_failure()), Verdict::RetryAt { at: now + ms(100), backoff: ms(100) });
}

#[test]
fn a_quiet_period_resets_the_count() {
    let (mut p, last) = after_failures(4);
    let quiet = last + START_WINDOW * 2 + ms(1);
    assert_eq!(p.on_exit(quiet, plugin_failure()), Verdict::RetryAt { at: quiet + ms(100), backoff: ms(100) });
}

#[test]
fn failures_two_start_windows_apart_are_still_in_a_row() {
    let (mut p, last) = after_failures(4);
    assert_eq!(p.on_exit(last + START_WINDOW * 2, plugin_failure()), Verdict::GiveUp { attempts: 5 });
}

#[test]
fn the_quiet_window_counts_from_the_last_failure_not_the_first() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    // Failures spread over more than two start windows, each within two of
    // the one before: still a crash loop.
    let mut now = t0;
    for _ in 0..4 {
        assert!(matches!(p.on_exit(now, plugin_failure()), Verdict::RetryAt { .. }));
        now += START_WINDOW * 2;
    }
    assert_eq!(p.on_exit(now, plugin_failure()), Verdict::GiveUp { attempts: 5 });
}

#[test]
fn a_retiring_workers_exit_is_forgotten() {
    let (mut p, last) = after_failures(2);
    let now = last + ms(200);
    for exit in [plugin_failure(), early_exit(ms(1)), crash(ms(1)), max_age_leave()] {
        assert_eq!(p.on_exit(now, ExitFacts { retiring: true, ..exit }), Verdict::Forget);
    }
    assert_eq!(p.next_respawn(), Some(last + ms(200)), "the backoff is untouched");
    // Neither counted nor reset: the next failure is the third in a row.
    assert_eq!(p.on_exit(now, plugin_failure()), Verdict::RetryAt { at: now + ms(400), backoff: ms(400) });
}

#[test]
fn spawning_waits_for_the_backoff_and_the_wake_up_ends_with_it() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    assert_eq!(p.next_respawn(), None);
    assert!(p.may_spawn(t0));
    p.on_exit(t0, plugin_failure());
    assert_eq!(p.next_respawn(), Some(t0 + ms(100)));
    assert!(!p.may_spawn(t0 + ms(99)));
    assert_eq!(p.next_respawn(), Some(t0 + ms(100)), "still due");
    assert!(p.may_spawn(t0 + ms(100)));
    assert_eq!(p.next_respawn(), None, "nothing left to wake up for");
    assert!(p.may_spawn(t0 + ms(101)));
}

#[test]
fn a_replacement_still_waits_for_a_running_backoff() {
    let t0 = Instant::now();
    let mut p = RestartPolicy::new();
    p.on_exit(t0, plugin_failure());
    // Another worker served and died while the failed one's retry waits:
    // the count resets, but starting waits for the backoff to run out.
    assert_eq!(p.on_exit(t0 + ms(10), crash(Duration::from_secs(600))), Verdict::ReplaceNow { crashed: true });
    assert!(!p.may_spawn(t0 + ms(10)));
    assert!(p.may_spawn(t0 + ms(100)));
}

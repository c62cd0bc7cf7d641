//! Scale arithmetic: how many workers a scale request asks for, and which
//! running workers leave to get there. Pure functions; the supervisor sends
//! the signals.

/// Workers wanted after a request: `workers` if given (absolute), else
/// `target` moved by `delta`; never below one (a cluster with no worker
/// would queue jobs forever), never above `max` (`--max-workers`: no
/// request may fork without bound).
pub(super) fn wanted(target: usize, workers: Option<usize>, delta: Option<i64>, max: usize) -> usize {
    let asked = workers.map_or_else(|| target as i64 + delta.unwrap_or(0), |n| n.min(i64::MAX as usize) as i64);
    asked.clamp(1, max.max(1) as i64) as usize
}

/// Indexes of the workers to retire so that `wanted` stay, given the
/// workers in start order (`true`: already retiring, neither counted nor
/// picked). Newest first: the oldest have warm caches.
pub(super) fn to_retire(retiring: &[bool], wanted: usize) -> Vec<usize> {
    let running = retiring.iter().filter(|r| !**r).count();
    let extra = running.saturating_sub(wanted);
    (0..retiring.len()).rev().filter(|&i| !retiring[i]).take(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_count_replaces_the_target() {
        assert_eq!(wanted(4, Some(7), None, 64), 7);
        assert_eq!(wanted(4, Some(2), None, 64), 2);
        // An absolute count wins over a delta given with it.
        assert_eq!(wanted(4, Some(2), Some(5), 64), 2);
    }

    #[test]
    fn delta_moves_the_target() {
        assert_eq!(wanted(4, None, Some(3), 64), 7);
        assert_eq!(wanted(4, None, Some(-3), 64), 1);
        assert_eq!(wanted(4, None, None, 64), 4);
    }

    #[test]
    fn never_below_one_worker() {
        assert_eq!(wanted(4, Some(0), None, 64), 1);
        assert_eq!(wanted(4, None, Some(-4), 64), 1);
        assert_eq!(wanted(2, None, Some(-100), 64), 1);
        assert_eq!(wanted(1, None, Some(i64::MIN / 2), 64), 1);
        assert_eq!(wanted(4, Some(1000), None, 8), 8, "capped at --max-workers");
        assert_eq!(wanted(4, None, Some(i64::MAX / 2), 8), 8);
    }

    #[test]
    fn retires_the_newest_first() {
        assert_eq!(to_retire(&[false; 5], 3), [4, 3]);
        assert_eq!(to_retire(&[false; 5], 1), [4, 3, 2, 1]);
    }

    #[test]
    fn skips_workers_already_retiring() {
        // Workers 1 and 4 are leaving: 3 run, 1 must go, the newest running.
        assert_eq!(to_retire(&[false, true, false, false, true], 2), [3]);
        assert_eq!(to_retire(&[false, true, false, false, true], 1), [3, 2]);
    }

    #[test]
    fn retires_nobody_when_growing_or_even() {
        assert!(to_retire(&[false; 3], 3).is_empty());
        assert!(to_retire(&[false; 3], 5).is_empty());
        assert!(to_retire(&[true, true], 1).is_empty());
        assert!(to_retire(&[], 1).is_empty());
    }
}

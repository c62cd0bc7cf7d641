//! Side by side within a round: ours and its reference take turns, so that
//! a change in the machine's speed during the round falls on both alike.
//!
//! Why: this VM's speed drifts by up to a third within minutes (the suite's
//! "~1 ms" job measured 870–1,511 µs across one hour's runs), and a round
//! that measured the reference for its whole time and then ours for as long
//! judged the drift as much as the code: single rounds of one build ranged
//! from 84 to 129% of in-process.

use std::time::Duration;

use super::measure::Rate;
use super::Limit;
use crate::error::Result;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Reference,
    Ours,
}

/// A round's turns, each with its length in quarters of the time each side
/// gets: the reference first and last, in half turns. Each side then runs
/// as long, and the middle of its time falls at the middle of the round, so
/// a drift that is steady over the round favours neither.
const TURNS: [(Side, u32); 5] =
    [(Side::Reference, 1), (Side::Ours, 2), (Side::Reference, 2), (Side::Ours, 2), (Side::Reference, 1)];

/// Runs `reference` and `ours` in turns (see [`TURNS`]), each for
/// `duration` in all; returns (ours, reference) over all their turns.
pub(super) fn side_by_side(
    duration: Duration,
    mut reference: impl FnMut(Limit) -> Result<Rate>,
    mut ours: impl FnMut(Limit) -> Result<Rate>,
) -> Result<(Rate, Rate)> {
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for (side, quarters) in TURNS {
        let limit = Limit::Time(duration * quarters / 4);
        match side {
            Side::Reference => theirs.push(reference(limit)?),
            Side::Ours => mine.push(ours(limit)?),
        }
    }
    Ok((total(&mine), total(&theirs)))
}

/// The jobs and time of several runs as one.
fn total(rates: &[Rate]) -> Rate {
    let secs: f64 = rates.iter().map(|r| r.secs).sum();
    Rate::new(rates.iter().map(|r| r.jobs).sum(), Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a side's time is centred, in quarters from the round's start.
    fn centre(side: Side) -> f64 {
        let (mut at, mut weighted, mut time) = (0.0, 0.0, 0.0);
        for (s, q) in TURNS {
            let q = f64::from(q);
            if s == side {
                weighted += q * (at + q / 2.0);
                time += q;
            }
            at += q;
        }
        weighted / time
    }

    #[test]
    fn each_side_gets_the_same_time_centred_alike() {
        let time = |side| TURNS.iter().filter(|(s, _)| *s == side).map(|(_, q)| q).sum::<u32>();
        assert_eq!((time(Side::Reference), time(Side::Ours)), (4, 4));
        assert_eq!(centre(Side::Reference), centre(Side::Ours));
    }

    #[test]
    fn turns_alternate_and_their_rates_add_up() {
        let rate = |jobs, secs| Rate { jobs, secs, jobs_per_s: jobs as f64 / secs };
        let time = |limit| match limit {
            Limit::Time(t) => t,
            Limit::Jobs(n) => panic!("a round is timed, not {n} jobs"),
        };
        let (turns, d) = (std::cell::RefCell::new(Vec::new()), Duration::from_secs(2));
        let (ours, theirs) = side_by_side(
            d,
            |limit| {
                turns.borrow_mut().push(('r', time(limit)));
                Ok(rate(100, 0.5))
            },
            |limit| {
                turns.borrow_mut().push(('o', time(limit)));
                Ok(rate(300, 1.0))
            },
        )
        .unwrap();
        assert_eq!((ours.jobs, ours.secs, ours.jobs_per_s), (600, 2.0, 300.0));
        assert_eq!((theirs.jobs, theirs.secs, theirs.jobs_per_s), (300, 1.5, 200.0));
        let (q, h) = (d / 4, d / 2);
        assert_eq!(turns.into_inner(), [('r', q), ('o', h), ('r', h), ('o', h), ('r', q)], "half turns first and last");
    }
}

//! What `powerhose-bench --brokers` reports ([`super::brokers`]): one
//! figure against broker "a" alone and against both, the failover rounds,
//! and the human table.

use std::collections::BTreeMap;

use super::suite_report::Medians;

/// One figure against broker "a" alone and against both brokers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Side {
    /// Median over the rounds, one client of broker "a" only.
    pub a_only: f64,
    /// Median over the rounds, one client of both brokers (`connect_many`).
    pub both: f64,
    /// Median of the rounds' both / a-only ratios.
    pub both_over_a: f64,
    /// Each round's ratio, as the suite prints them.
    pub rounds: String,
    /// Median over the same rounds, one client of a lone broker whose
    /// workers serve it only (the reference: workers serving several
    /// brokers register "shared", with no jobs held ahead for them).
    pub lone: f64,
}

impl Side {
    /// From rounds of (both, a only) and of the lone broker.
    pub(super) fn of(rounds: &[(f64, f64)], lone: &[f64]) -> Side {
        let m = Medians::of(rounds);
        let lone = median_and_max(lone.iter().copied()).0;
        Side { a_only: m.reference, both: m.ours, both_over_a: m.ratio, rounds: m.spread(), lone }
    }
}

/// One kill of broker "a" under the 4-caller load over both brokers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FailoverRound {
    /// Requests sent during the round (before and after the kill).
    pub requests: u64,
    /// Requests that failed, by [`Error`] variant name.
    pub errors: BTreeMap<String, u64>,
    /// From the kill to the first answer of a request sent after it, in ms
    /// (the whole time after the kill when none came).
    pub first_answer_ms: f64,
    /// The longest stretch without any answer, from the last answer before
    /// the kill to the end of the round, in ms.
    pub longest_gap_ms: f64,
    /// The slowest request of the round (a re-sent one, typically), in ms.
    pub slowest_ms: f64,
}

/// The failover rounds and their medians and maxima.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Failover {
    /// Each round.
    pub rounds: Vec<FailoverRound>,
    /// Median and max of [`FailoverRound::first_answer_ms`].
    pub first_answer_ms_median: f64,
    pub first_answer_ms_max: f64,
    /// Median and max of [`FailoverRound::longest_gap_ms`].
    pub longest_gap_ms_median: f64,
    pub longest_gap_ms_max: f64,
    /// Requests sent in all rounds, and how many failed (expected: 0).
    pub requests: u64,
    pub failed: u64,
}

/// What `--brokers` measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BrokersReport {
    /// The CPU count and model.
    pub machine: String,
    /// How long the whole run took, in seconds.
    pub seconds: f64,
    /// Echo workers, each serving both brokers.
    pub workers: usize,
    /// The job's data size, in bytes.
    pub payload_bytes: usize,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// 4 callers sharing one client, each one job at a time: jobs/s.
    pub callers_jobs_per_s: Side,
    /// The same runs' p50 latency, in µs.
    pub callers_p50_us: Side,
    /// One pipelined client, 1,000 in flight: jobs/s.
    pub pipelined_jobs_per_s: Side,
    /// Jobs that failed in the side-by-side runs (expected: 0).
    pub errors: u64,
    /// Broker "a" killed under the 4-caller load with `retry(1)`.
    pub failover: Failover,
    /// How to read the figures.
    pub notes: Vec<String>,
}

/// The human report.
pub fn format_brokers(r: &BrokersReport) -> String {
    let mut s = format!(
        "machine: {} ({:.0} s); echo, {} B, {} workers serving brokers a and b, {} s per measurement\n\n",
        r.machine, r.seconds, r.payload_bytes, r.workers, r.duration_s
    );
    s += &format!(
        "{:<28} {:>10} {:>10} {:>10} {:>9}  {}\n",
        "MEDIAN OF 3 ROUNDS", "LONE", "A ONLY", "BOTH", "BOTH / A", "ROUNDS"
    );
    for (name, side) in [
        ("4 callers, jobs/s", &r.callers_jobs_per_s),
        ("4 callers, p50 µs", &r.callers_p50_us),
        ("pipelined (1,000), jobs/s", &r.pipelined_jobs_per_s),
    ] {
        s += &format!(
            "{:<28} {:>10.0} {:>10.0} {:>10.0} {:>8.1}%  {}\n",
            name,
            side.lone,
            side.a_only,
            side.both,
            side.both_over_a * 100.0,
            side.rounds
        );
    }
    s += &format!("errors: {}\n", r.errors);
    let f = &r.failover;
    let each =
        |g: fn(&FailoverRound) -> f64| f.rounds.iter().map(|x| format!("{:.1}", g(x))).collect::<Vec<_>>().join(" / ");
    s += &format!("\nbroker a killed under 4 callers over both, retry(1), {} rounds:\n", f.rounds.len());
    s += &format!(
        "  kill → first answer   median {:.1} ms, max {:.1} ms ({})\n",
        f.first_answer_ms_median,
        f.first_answer_ms_max,
        each(|x| x.first_answer_ms)
    );
    s += &format!(
        "  longest gap           median {:.1} ms, max {:.1} ms ({})\n",
        f.longest_gap_ms_median,
        f.longest_gap_ms_max,
        each(|x| x.longest_gap_ms)
    );
    s += &format!("  slowest request       {} ms\n", each(|x| x.slowest_ms));
    s += &format!("  failed                {} of {} requests\n", f.failed, f.requests);
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

pub(super) fn median_and_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (v.get(v.len() / 2).copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0))
}

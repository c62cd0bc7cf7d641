//! The suite's report: each target as measured and judged (with its
//! ratio to the relay floor), the medians of rounds, and the human table.

use super::suite::LOCAL;
use super::{floor, CpuPerJob, Wire};

/// One target: what was measured, against what, and whether it holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    pub name: String,
    pub ours: f64,
    pub reference: f64,
    pub unit: String,
    pub rule: String,
    /// Whether the rule holds; `None` for a figure only reported (no target).
    pub pass: Option<bool>,
    /// How far from the relay floor's like figure: ours ÷ relay for times,
    /// relay ÷ ours for jobs/s, so above 1 the relay does better either way;
    /// `None` where the relay has no like figure (CPU-bound jobs, memory).
    pub relay: Option<f64>,
    /// CPU time per job of each process, where the run measured it.
    pub cpu: Option<CpuPerJob>,
}

impl Target {
    /// Adds the ratio to `relay`, the relay floor's like figure (see [`Target::relay`]).
    pub(super) fn against_relay(mut self, relay: Option<f64>) -> Target {
        self.relay = relay.map(|r| match self.unit.as_str() {
            "jobs/s" => r / self.ours.max(1e-9),
            _ => self.ours / r.max(1e-9),
        });
        self
    }

    pub(super) fn with_cpu(mut self, cpu: CpuPerJob) -> Target {
        self.cpu = Some(cpu);
        self
    }
}

/// Every target's figures, and the floors they were compared with.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SuiteReport {
    /// The CPU count and model.
    pub machine: String,
    /// How long the whole suite took, in seconds.
    pub seconds: f64,
    /// Each target, measured and judged.
    pub targets: Vec<Target>,
    /// The ZeroMQ floor with no process pinned.
    pub floor_unpinned: floor::Floor,
    /// The ZeroMQ floor with every process on one CPU.
    pub floor_pinned: floor::Floor,
}

pub(super) fn target(name: &str, ours: f64, reference: f64, unit: &str, rule: &str, pass: bool) -> Target {
    Target {
        name: name.into(),
        ours,
        reference,
        unit: unit.into(),
        rule: rule.into(),
        pass: Some(pass),
        relay: None,
        cpu: None,
    }
}

/// A figure reported next to its reference, with no target to meet.
pub(super) fn report(name: &str, m: &Medians, unit: &str, what: &str) -> Target {
    Target {
        name: name.into(),
        ours: m.ours,
        reference: m.reference,
        unit: unit.into(),
        rule: format!("{what} [{}]", m.spread()),
        pass: None,
        relay: None,
        cpu: None,
    }
}

/// The medians of (ours, reference) rounds and of their ratios.
pub(super) struct Medians {
    pub(super) ours: f64,
    pub(super) reference: f64,
    pub(super) ratio: f64,
    ratios: Vec<f64>,
}

impl Medians {
    pub(super) fn of(rounds: &[(f64, f64)]) -> Medians {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let ratios: Vec<f64> = rounds.iter().map(|(o, r)| o / r.max(1e-9)).collect();
        Medians {
            ours: median(rounds.iter().map(|r| r.0).collect()),
            reference: median(rounds.iter().map(|r| r.1).collect()),
            ratio: median(ratios.clone()),
            ratios,
        }
    }

    /// "median 95.1%: 94.0 / 95.1 / 96.2%" for the report.
    pub(super) fn spread(&self) -> String {
        let each: Vec<String> = self.ratios.iter().map(|r| format!("{:.1}", r * 100.0)).collect();
        format!("median {:.1}%: {}%", self.ratio * 100.0, each.join(" / "))
    }
}

/// `local`'s figure measured again on ZeroMQ ipc, the local transport
/// before unix://: reported under it against the same reference, so one
/// run shows before and after.
pub(super) fn over_ipc(local: &Target, ours: f64, relay: Option<f64>) -> Target {
    Target {
        name: format!("{}, {}", local.name, Wire::Ipc.name()),
        ours,
        reference: local.reference,
        unit: local.unit.clone(),
        rule: format!("report: {} ÷ ipc = {:.2}", LOCAL.name(), local.ours / ours.max(1e-9)),
        pass: None,
        relay: None,
        cpu: None,
    }
    .against_relay(relay)
}

/// The human suite report.
pub fn format_suite(r: &SuiteReport) -> String {
    let mut s = format!("machine: {} ({:.0} s)\n\n", r.machine, r.seconds);
    s += &format!(
        "{:<46} {:>12} {:>12} {:>7} {:<8} {:<42} {}\n",
        "TARGET", "OURS", "REFERENCE", "RELAY×", "UNIT", "RULE", ""
    );
    for t in &r.targets {
        s += &format!(
            "{:<46} {:>12.1} {:>12.1} {:>7} {:<8} {:<42} {}\n",
            t.name,
            t.ours,
            t.reference,
            t.relay.map_or("—".into(), |x| format!("{x:.2}")),
            t.unit,
            t.rule,
            match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "report",
            }
        );
    }
    s += "\nRELAY×: ours ÷ relay floor for times, relay ÷ ours for jobs/s (above 1, the relay does better);\n\
          jobs/s lines are held to the relay's best (most callers), unless their reference is the relay.\n";
    // Where a transport spends its time: the split is what a change to the
    // client, the broker or the worker loop moves.
    s += &format!("\n{:<46} {:>8} {:>8} {:>8}\n", "CPU PER JOB (µs)", "CLIENT", "BROKER", "WORKERS");
    for t in &r.targets {
        if let Some(c) = &t.cpu {
            s += &format!("{:<46} {:>8.1} {:>8.1} {:>8.1}\n", t.name, c.client_us, c.broker_us, c.workers_us);
        }
    }
    s += "(a floor's CLIENT is its callers, its BROKER the relay's hub)\n";
    for (name, f) in [("unpinned", &r.floor_unpinned), ("pinned", &r.floor_pinned)] {
        s += &format!(
            "\nfloor {name}: REQ/REP p50 {:.0} µs, REQ→proxy→REP p50 {:.0} µs, pipelined via proxy {:.0} msg/s\n",
            f.reqrep.p50_us, f.proxy.p50_us, f.pipelined_msgs_per_s
        );
        s += &format!("floor {name}: {}", super::format_relay(&f.relay));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{over_ipc, target, Medians};

    #[test]
    fn medians_take_the_middle_ratio_not_the_ratio_of_middles() {
        let m = Medians::of(&[(1.0, 2.0), (3.0, 4.0), (2.0, 2.0)]);
        assert_eq!((m.ours, m.reference, m.ratio), (2.0, 2.0, 0.75));
        assert_eq!(m.spread(), "median 75.0%: 50.0 / 75.0 / 100.0%");
    }

    #[test]
    fn the_relay_ratio_is_above_one_when_the_relay_does_better() {
        let lat = target("p50", 60.0, 0.0, "µs", "", true).against_relay(Some(20.0));
        assert_eq!(lat.relay, Some(3.0));
        let rate = target("jobs", 10_000.0, 0.0, "jobs/s", "", true).against_relay(Some(40_000.0));
        assert_eq!(rate.relay, Some(4.0));
        assert_eq!(target("rss", 1.0, 0.0, "MiB", "", true).against_relay(None).relay, None);
    }

    #[test]
    fn an_ipc_line_keeps_the_reference_and_says_how_the_local_one_compares() {
        let local = target("seq p50", 40.0, 50.0, "µs", "", true);
        let ipc = over_ipc(&local, 100.0, Some(20.0));
        assert_eq!((ipc.name.as_str(), ipc.reference, ipc.pass), ("seq p50, ipc (ZeroMQ)", 50.0, None));
        assert_eq!(ipc.rule, "report: unix:// ÷ ipc = 0.40");
        assert_eq!(ipc.relay, Some(5.0));
    }
}

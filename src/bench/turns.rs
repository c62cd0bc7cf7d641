//! `powerhose-bench --turns N`: ours and the no-broker floor (the same
//! workers running the job, each caller connected straight to one) take
//! turns with the same callers, N rounds of `--duration`: each round's
//! ratio, their median, and each side's CPU per job. For work on the
//! callers' path, where one run's figures swing more than the change
//! being measured, so that an A/B needs no patch to the suite.

use super::interleave::side_by_side;
use super::measure::Limit;
use super::relay::Relay;
use super::suite_callers::{callers_run, CpuTotals};
use super::{floor, start_cluster, BenchOptions, CpuPerJob, Mode};
use crate::error::{Error, Result};

/// What `--turns` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TurnsReport {
    /// Callers on each side.
    pub callers: usize,
    /// Workers on each side.
    pub workers: usize,
    /// Each round's throughput, ours and the floor's.
    pub rounds: Vec<TurnRound>,
    /// The median of the rounds' ratios, ours ÷ the floor's.
    pub median_ratio: f64,
    /// Our CPU per job, over every round: this process (the callers), the
    /// broker and the workers.
    pub ours_cpu: CpuPerJob,
    /// The floor's: its callers (as a client) and its workers.
    pub floor_cpu: CpuPerJob,
}

/// One round: ours and the floor in turns.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TurnRound {
    /// Our jobs per second.
    pub ours_jobs_per_s: f64,
    /// The floor's jobs per second.
    pub floor_jobs_per_s: f64,
}

impl TurnRound {
    /// Ours ÷ the floor's.
    fn ratio(&self) -> f64 {
        self.ours_jobs_per_s / self.floor_jobs_per_s.max(1e-9)
    }
}

/// Runs `rounds` rounds of `options`' callers against the no-broker floor.
pub fn turns(options: &BenchOptions, rounds: usize, mut progress: impl FnMut(&str)) -> Result<TurnsReport> {
    let Mode::Callers(callers) = options.mode else {
        return Err(Error::BadFlag("--turns measures callers waiting on one job each: not --pipeline".into()));
    };
    let Limit::Time(duration) = options.limit else {
        return Err(Error::BadFlag("--turns measures rounds of --duration: not --jobs".into()));
    };
    if rounds == 0 || !options.frontend.is_empty() {
        return Err(Error::BadFlag(
            "--turns needs at least one round, and a cluster of its own (no --frontend)".into(),
        ));
    }
    let plugin = crate::plugin::LoadedPlugin::load(&options.plugin, options.params.as_deref().unwrap_or(""))?;
    let dir = crate::endpoint::runtime_dir()?.join(format!("turns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating the floor directory"))?;
    let measured = (|| {
        let exe = std::env::current_exe().map_err(Error::io("finding this executable"))?;
        let setup =
            floor::Setup { exe: &exe, dir: &dir, payload: &options.job.data, window: 1, duration, pin: options.pin };
        progress(&format!("starting a broker and {} workers, and the floor's", options.workers));
        let cluster = start_cluster(options)?;
        let client = cluster.client()?;
        let floor = Relay::start_direct(&setup, &super::relay_job(options, &plugin))?;
        let (mut ours_cpu, mut floor_cpu) = (CpuTotals::default(), CpuTotals::default());
        let mut measured = Vec::with_capacity(rounds);
        for round in 0..rounds {
            progress(&format!("{callers} callers, the floor and ours in turns, round {} of {rounds}", round + 1));
            let (ours, theirs) = side_by_side(
                duration,
                |limit| {
                    let (rate, cpu) = floor.callers_within(callers, &options.job.data, limit)?;
                    floor_cpu.add(&cpu, rate.jobs);
                    Ok(rate)
                },
                |limit| Ok(callers_run(&cluster, &client, &options.job, callers, limit, &mut ours_cpu)?.0),
            )?;
            measured.push(TurnRound { ours_jobs_per_s: ours.jobs_per_s, floor_jobs_per_s: theirs.jobs_per_s });
        }
        Ok(TurnsReport {
            callers,
            workers: options.workers,
            median_ratio: median_ratio(&measured),
            rounds: measured,
            ours_cpu: ours_cpu.per_job(),
            floor_cpu: floor_cpu.per_job(),
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// The median of the rounds' ratios (the mean of the middle two for an
/// even count).
fn median_ratio(rounds: &[TurnRound]) -> f64 {
    let mut ratios: Vec<f64> = rounds.iter().map(TurnRound::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => 0.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    }
}

/// The report as a table.
pub fn format_turns(r: &TurnsReport) -> String {
    let mut out = format!("{} callers, {} workers: ours ÷ no broker, in turns\n", r.callers, r.workers);
    for (i, round) in r.rounds.iter().enumerate() {
        out += &format!(
            "round {:<3} ours {:>9.0} jobs/s   no broker {:>9.0} jobs/s   {:>6.1}%\n",
            i + 1,
            round.ours_jobs_per_s,
            round.floor_jobs_per_s,
            round.ratio() * 100.0
        );
    }
    out += &format!("median {:.1}%\n", r.median_ratio * 100.0);
    let cpu = |c: &CpuPerJob| {
        format!(
            "client {:.1}  broker {:.1}  workers {:.1}  ({:.1})",
            c.client_us,
            c.broker_us,
            c.workers_us,
            c.total_us()
        )
    };
    out += &format!("CPU per job (µs)  ours:      {}\n", cpu(&r.ours_cpu));
    out += &format!("CPU per job (µs)  no broker: {}\n", cpu(&r.floor_cpu));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ours: f64, floor: f64) -> TurnRound {
        TurnRound { ours_jobs_per_s: ours, floor_jobs_per_s: floor }
    }

    #[test]
    fn the_median_is_of_the_rounds_ratios_not_of_their_rates() {
        // Rates that rise round by round, ratios that do not.
        let rounds = [round(90.0, 100.0), round(190.0, 200.0), round(240.0, 300.0)];
        assert!((median_ratio(&rounds) - 0.9).abs() < 1e-9);
        assert!((median_ratio(&rounds[..2]) - (0.9 + 0.95) / 2.0).abs() < 1e-9);
        assert_eq!(median_ratio(&[]), 0.0);
    }
}

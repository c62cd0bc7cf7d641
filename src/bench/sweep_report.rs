//! A sweep's outputs: the table printed without `--report`, and with it
//! `sweep-<dimension>.json` (every point and the environment) and
//! `sweep-<dimension>.svg` (chart.rs) side by side; and the UTC date they
//! carry, computed here rather than with a date crate for one timestamp.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::sweep::SweepReport;
use crate::error::{Error, Result};

/// The human table.
pub fn format_sweep(r: &SweepReport) -> String {
    let e = &r.environment;
    let mut s = format!("machine: {}, {}\n", e.machine, e.date);
    s += &format!(
        "plugin {}, payload {} B, {} workers, over {}, {:.1} s per measurement\n",
        e.plugin,
        e.payload_bytes,
        e.workers,
        e.wire.name(),
        e.seconds_per_measurement
    );
    s += &format!("floor: {}\n", e.floor);
    s += &format!("each figure the median of {} rounds (the JSON has every round)\n\n", super::sweep::ROUNDS);
    s += &format!(
        "{:>9} {:>12} {:>9} {:>9} {:>7} {:>12} {:>8} {:>12} {:>7}\n",
        r.dimension.name().to_uppercase(),
        "JOBS/S",
        "P50 ms",
        "P99 ms",
        "ERRORS",
        "IN-PROCESS",
        "THREADS",
        "FLOOR",
        "IDEAL%"
    );
    for p in &r.points {
        s += &format!(
            "{:>9} {:>12.0} {:>9.3} {:>9.3} {:>7} {:>12.0} {:>8} {:>12.0} {:>6.1}%\n",
            p.value,
            p.jobs_per_s,
            p.latency.p50_us / 1000.0,
            p.latency.p99_us / 1000.0,
            p.errors,
            p.in_process_jobs_per_s,
            p.in_process_threads,
            p.floor_jobs_per_s,
            100.0 * p.jobs_per_s / p.in_process_jobs_per_s.max(1e-9)
        );
    }
    s
}

/// Writes `sweep-<dimension>.json` and `.svg` into `dir` (made if missing);
/// returns their paths.
pub fn write_sweep(dir: &Path, r: &SweepReport) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let stem = format!("sweep-{}", r.dimension.name());
    let (json, svg) = (dir.join(format!("{stem}.json")), dir.join(format!("{stem}.svg")));
    // Drawn before anything is written: a chart that fails leaves no half report.
    let chart = super::chart::svg(r)?;
    let text = serde_json::to_string_pretty(r).map_err(|e| Error::Protocol(format!("sweep as JSON: {e}")))?;
    for (path, content) in [(&json, text + "\n"), (&svg, chart)] {
        std::fs::write(path, content).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok((json, svg))
}

/// Now, as `2025-06-01T12:34:56Z`.
pub(super) fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as an RFC 3339 UTC time.
fn utc(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::super::sweep::{Dimension, Environment, SweepPoint};
    use super::*;

    #[test]
    fn utc_dates_are_gregorian() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_table_has_a_line_per_point_and_the_ideal_share() {
        let point = |value, jobs_per_s| SweepPoint {
            value,
            jobs_per_s,
            in_process_jobs_per_s: 2000.0,
            in_process_threads: 2,
            ..Default::default()
        };
        let r = SweepReport {
            dimension: Dimension::Callers,
            points: vec![point(1, 900.0), point(2, 1900.0)],
            environment: Environment { floor: "relay".into(), ..Default::default() },
        };
        let t = format_sweep(&r);
        assert!(t.contains("CALLERS") && t.contains("floor: relay"), "{t}");
        assert!(t.lines().any(|l| l.trim_start().starts_with("2 ") && l.ends_with("95.0%")), "{t}");
    }
}

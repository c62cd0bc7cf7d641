//! The sweep's chart, as SVG: throughput against the swept value (powerhose,
//! the in-process ideal and the floor) above, latency p50 and p99 below.
//! Both axes are logarithmic: sweeps double their values, and the three
//! throughputs can be orders of magnitude apart (a free echo against a
//! CPU-bound plugin). The text is SVG `<text>` in a generic font family,
//! rendered by the viewer: no font files at build or run time.

use std::ops::Range;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::sweep::SweepReport;
use crate::error::{Error, Result};

/// The picture's size in pixels: two panels of 900 × 340, and the title.
const SIZE: (u32, u32) = (900, 720);
const POWERHOSE: RGBColor = RGBColor(31, 119, 180);
const IDEAL: RGBColor = RGBColor(44, 160, 44);
const FLOOR: RGBColor = RGBColor(214, 39, 40);
const P99: RGBColor = RGBColor(255, 127, 14);
const FONT: &str = "sans-serif";

/// A panel: log x with ticks at the swept values, log y with ticks at 1, 2
/// and 5 times powers of ten.
type Panel<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<LogCoord<f64>>, WithKeyPoints<LogCoord<f64>>>>;

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

/// `1.2k`, `35k`, `1.5M`: tick labels that fit.
fn si(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{}M", trim(v / 1e6)),
        a if a >= 1e3 => format!("{}k", trim(v / 1e3)),
        _ => trim(v),
    }
}

fn trim(v: f64) -> String {
    let s = if v.abs() >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').into()
    } else {
        s
    }
}

/// A log axis's range around `values` (positive ones; zeros cannot be
/// drawn on it), with a margin so no point sits on the frame, and
/// `headroom` times more on top for the legend to sit above the lines.
fn log_span(values: impl Iterator<Item = f64>, headroom: f64) -> Range<f64> {
    let (lo, hi) =
        values.filter(|v| *v > 0.0 && v.is_finite()).fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return 0.1..10.0;
    }
    lo / 1.6..hi * 1.6 * headroom
}

/// 1, 2 and 5 times the powers of ten within `span`: the log ticks of a
/// printed chart (plotters' own crowd near each power).
fn ticks(span: &Range<f64>) -> Vec<f64> {
    let mut decade = 10f64.powf(span.start.log10().floor());
    let mut out = Vec::new();
    while decade <= span.end {
        out.extend([1.0, 2.0, 5.0].map(|m| m * decade).into_iter().filter(|v| span.contains(v)));
        decade *= 10.0;
    }
    out
}

/// One line with a marker at each point; `dashed` for the references.
fn line<'b>(
    chart: &mut Panel<'_, 'b>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
    label: &str,
) -> Result<()> {
    // Points a log axis cannot place (no jobs, no latency) are left out.
    let points: Vec<(f64, f64)> = points.into_iter().filter(|(_, y)| *y > 0.0 && y.is_finite()).collect();
    let style = color.stroke_width(2);
    let series = if dashed {
        chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
    } else {
        chart.draw_series(LineSeries::new(points.clone(), style))
    };
    series
        .map_err(failed)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(failed)?;
    Ok(())
}

/// A panel's frame: log axes over `x` and `y`, ticks at the swept values,
/// its grid and axis labels (`x_desc`, `y_desc`) drawn.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x: &[f64],
    y: Range<f64>,
    (x_desc, y_desc): (&str, &str),
) -> Result<Panel<'a, 'b>> {
    let x_span = log_span(x.iter().copied(), 1.0);
    let y_ticks = ticks(&y);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 19))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(x_span.log_scale().with_key_points(x.to_vec()), y.log_scale().with_key_points(y_ticks))
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .label_style((FONT, 15))
        .draw()
        .map_err(failed)?;
    Ok(chart)
}

/// The sweep's chart as an SVG document.
pub fn svg(r: &SweepReport) -> Result<String> {
    let e = &r.environment;
    let name = r.dimension.name();
    let x: Vec<f64> = r.points.iter().map(|p| p.value as f64).collect();
    let at = |f: &dyn Fn(&super::SweepPoint) -> f64| -> Vec<(f64, f64)> {
        r.points.iter().map(|p| (p.value as f64, f(p))).collect()
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let title = format!(
            "powerhose-bench --sweep {name}: {}, {} B, {} workers, over {}",
            e.plugin,
            e.payload_bytes,
            e.workers,
            e.wire.name()
        );
        let root = root.titled(&title, (FONT, 22)).map_err(failed)?;
        let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);

        let jobs = r.points.iter().flat_map(|p| [p.jobs_per_s, p.in_process_jobs_per_s, p.floor_jobs_per_s]);
        let mut chart = panel(&top, "throughput", &x, log_span(jobs, 10.0), (name, "jobs/s"))?;
        line(&mut chart, at(&|p| p.jobs_per_s), POWERHOSE, false, "powerhose")?;
        let ideal = "in-process (plugin called directly, min(value, workers) threads)";
        line(&mut chart, at(&|p| p.in_process_jobs_per_s), IDEAL, true, ideal)?;
        let floor = match r.dimension {
            super::Dimension::Callers => "floor: relay over SOCK_SEQPACKET, running the job",
            super::Dimension::Pipeline => "floor: ZeroMQ proxy hop, echo",
        };
        line(&mut chart, at(&|p| p.floor_jobs_per_s), FLOOR, true, floor)?;
        legend(&mut chart)?;

        let lat = r.points.iter().flat_map(|p| [p.latency.p50_us / 1e3, p.latency.p99_us / 1e3]);
        let mut chart = panel(&bottom, "latency through powerhose", &x, log_span(lat, 4.0), (name, "ms"))?;
        line(&mut chart, at(&|p| p.latency.p50_us / 1e3), POWERHOSE, false, "p50")?;
        line(&mut chart, at(&|p| p.latency.p99_us / 1e3), P99, false, "p99")?;
        legend(&mut chart)?;
        root.present().map_err(failed)?;
    }
    Ok(out)
}

fn legend<'a, 'b: 'a>(chart: &mut Panel<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::super::sweep::{Dimension, Environment, SweepPoint};
    use super::super::SweepReport;
    use super::*;

    fn report(dimension: Dimension) -> SweepReport {
        let points = [1, 2, 4, 8, 16]
            .into_iter()
            .map(|n| SweepPoint {
                value: n,
                jobs_per_s: 900.0 * (n as f64).min(2.0),
                latency: super::super::measure::Lat {
                    p50_us: 1100.0 * n as f64,
                    p99_us: 2500.0 * n as f64,
                    ..Default::default()
                },
                in_process_threads: n.min(2),
                in_process_jobs_per_s: 1000.0 * (n as f64).min(2.0),
                floor_jobs_per_s: 20_000.0 * (n as f64).min(4.0),
                ..Default::default()
            })
            .collect();
        let environment = Environment { plugin: "crypto_job 0.1.0".into(), workers: 2, ..Default::default() };
        SweepReport { dimension, points, environment }
    }

    /// Every element closed, in order: XML enough for a browser to draw it.
    fn well_formed(svg: &str) {
        let mut open = Vec::new();
        for tag in svg.split('<').skip(1).map(|t| &t[..t.find('>').expect("a tag ends")]) {
            let name = |t: &str| t.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("").to_string();
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            } else if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(closing.trim()), "misnested </{closing}>");
            } else {
                open.push(name(tag));
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    #[test]
    fn the_chart_has_every_series_its_legend_and_its_axes() {
        let svg = svg(&report(Dimension::Callers)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..200.min(svg.len())]);
        well_formed(&svg);
        // Five lines (3 throughput, 2 latency), each also in its legend; the
        // dashed references are drawn as many short segments.
        assert!(svg.matches("<polyline").count() >= 5, "{} polylines", svg.matches("<polyline").count());
        assert_eq!(svg.matches("<circle").count(), 5 * 5, "a marker per point per series");
        let texts = texts(&svg);
        for want in [
            "powerhose-bench --sweep callers: crypto_job 0.1.0",
            "powerhose",
            "in-process (plugin called directly, min(value, workers) threads)",
            "floor: relay over SOCK_SEQPACKET, running the job",
            "p50",
            "p99",
            "callers",
            "jobs/s",
            "ms",
            "16",
        ] {
            assert!(texts.iter().any(|t| t.starts_with(want)), "no {want:?} in {texts:?}");
        }
        let svg = super::svg(&report(Dimension::Pipeline)).unwrap();
        assert!(texts_of(&svg, "floor: ZeroMQ proxy hop, echo") && texts_of(&svg, "pipeline"));
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text").skip(1).filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim())).collect()
    }

    fn texts_of(svg: &str, want: &str) -> bool {
        texts(svg).contains(&want)
    }

    #[test]
    fn zeros_and_a_single_point_still_draw() {
        let mut r = report(Dimension::Callers);
        r.points.truncate(1);
        r.points[0].jobs_per_s = 0.0;
        r.points[0].latency = Default::default();
        let svg = svg(&r).unwrap();
        assert!(texts(&svg).iter().any(|t| t.starts_with("in-process")), "the legend is drawn");
    }

    #[test]
    fn log_ticks_are_one_two_five() {
        assert_eq!(ticks(&(0.15..12.0)), [0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(ticks(&(900.0..1100.0)), [1000.0]);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(
            [si(1.0), si(2.5), si(16.0), si(1500.0), si(35_000.0), si(2e6)],
            ["1", "2.5", "16", "1.5k", "35k", "2M"]
        );
        assert_eq!(si(0.05), "0.05");
    }
}

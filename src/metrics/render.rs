//! A [`Snapshot`] in the Prometheus text format, through `prometheus-client`:
//! a [`Collector`] writes each family from the snapshot (the figures are the
//! loop's, copied; nothing here counts).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::ProcessUsage;
use crate::broker::state::{Outcome, ServiceSnapshot, WORKER_STATES};
use crate::broker::Snapshot;

/// The `Content-Type` of what [`render`] writes (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition of `snapshot` and `process`; every name starts `powerhose_`.
pub fn render(snapshot: Snapshot, process: ProcessUsage) -> String {
    let mut registry = Registry::with_prefix("powerhose");
    registry.register_collector(Box::new(Figures { snapshot, process }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Figures {
    snapshot: Snapshot,
    process: ProcessUsage,
}

type Fmt = Result<(), std::fmt::Error>;

/// One family whose samples each carry the labels `keys` (counters get
/// `_total` from the encoder).
fn family<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    keys: [&'static str; N],
    samples: impl IntoIterator<Item = ([String; N], f64)>,
) -> Fmt {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (values, value) in samples {
        if N == 0 {
            value_of(&mut metric, kind, value)?;
        } else {
            let labels: Vec<(&str, String)> = keys.into_iter().zip(values).collect();
            value_of(&mut metric.encode_family(&labels)?, kind, value)?;
        }
    }
    Ok(())
}

/// Counts are written as integers, other figures (seconds) as they are.
fn value_of(sample: &mut MetricEncoder, kind: MetricType, value: f64) -> Fmt {
    let count = (value.fract() == 0.0 && (0.0..9e15).contains(&value)).then_some(value as u64);
    match (kind, count) {
        (MetricType::Counter, Some(n)) => sample.encode_counter::<NoLabelSet, _, f64>(&n, None),
        (MetricType::Counter, None) => sample.encode_counter::<NoLabelSet, _, f64>(&value, None),
        (_, Some(n)) => sample.encode_gauge(&n),
        (_, None) => sample.encode_gauge(&value),
    }
}

/// A per-service histogram family.
fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    services: &[ServiceSnapshot],
    pick: impl Fn(&ServiceSnapshot) -> &crate::broker::state::Buckets,
) -> Fmt {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for s in services {
        let h = pick(s);
        let buckets: Vec<(f64, u64)> = h.buckets().collect();
        let labels = [("service", s.name.as_str())];
        metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &buckets, None)?;
    }
    Ok(())
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let (status, services) = (&self.snapshot.status, &self.snapshot.services);
        let c = &status.counters;
        use MetricType::{Counter, Gauge};
        family(
            &mut e,
            "jobs",
            "Jobs answered, by service and outcome (service \"(none)\": jobs that reached no service).",
            Counter,
            ["service", "outcome"],
            services
                .iter()
                .flat_map(|s| Outcome::ALL.map(|o| ([s.name.clone(), o.name().into()], s.metrics.count(o) as f64))),
        )?;
        family(
            &mut e,
            "queue_jobs",
            "Jobs waiting for a worker, by service and priority (0 to 9).",
            Gauge,
            ["service", "priority"],
            services
                .iter()
                .flat_map(|s| s.queued.iter().enumerate().map(|(p, &n)| ([s.name.clone(), p.to_string()], n as f64))),
        )?;
        family(
            &mut e,
            "queue_bytes",
            "Bytes (headers and data) that waiting jobs hold, by service and priority.",
            Gauge,
            ["service", "priority"],
            services.iter().flat_map(|s| {
                s.queued_bytes.iter().enumerate().map(|(p, &n)| ([s.name.clone(), p.to_string()], n as f64))
            }),
        )?;
        histograms(
            &mut e,
            "queue_wait_seconds",
            "Time from joining a service's queue to going to a worker.",
            services,
            |s| &s.metrics.queue_wait,
        )?;
        histograms(
            &mut e,
            "run_seconds",
            "Time from going to a worker to its answer (time held ahead included).",
            services,
            |s| &s.metrics.run,
        )?;
        family(
            &mut e,
            "workers",
            "Registered workers, by service and state.",
            Gauge,
            ["service", "state"],
            services.iter().filter(|s| s.name != crate::broker::state::NO_SERVICE).flat_map(|s| {
                WORKER_STATES.iter().zip(s.workers).map(|((_, state), n)| ([s.name.clone(), (*state).into()], n as f64))
            }),
        )?;
        let failures = &status.auth_failures;
        family(
            &mut e,
            "auth_failures",
            "Peers refused, by the role they failed to get.",
            Counter,
            ["role"],
            [("client", failures.clients), ("worker", failures.workers), ("operator", failures.operators)]
                .map(|(role, n)| ([role.to_string()], n as f64)),
        )?;
        let broker_wide = [
            (
                "bad_requests",
                "Malformed messages, requests for unknown services, answers to jobs not held.",
                c.bad_requests,
            ),
            ("jobs_retried", "Jobs queued again after their worker was lost.", c.retried),
            (
                "jobs_recalled",
                "Jobs given ahead that a worker was asked to give back for a higher priority.",
                c.recalled,
            ),
            ("replies_dropped", "Replies dropped because their client did not read them.", c.replies_dropped),
            ("lane_jobs", "Jobs workers answered on their lanes, straight from local clients.", c.lane_jobs),
            ("oversized_messages", "Messages over --max-message-bytes.", c.oversized),
            ("accept_failures", "Connections the broker failed to accept.", c.accept_failures),
        ];
        for (name, help, n) in broker_wide {
            family(&mut e, name, help, Counter, [], [([], n as f64)])?;
        }
        let waiting = "Jobs waiting for the first worker of a service nobody serves yet.";
        family(&mut e, "jobs_waiting_for_workers", waiting, Gauge, [], [([], status.waiting_for_workers as f64)])?;
        family(
            &mut e,
            "broker_uptime_seconds",
            "Seconds since the broker started.",
            Gauge,
            [],
            [([], status.uptime_s)],
        )?;
        let rss = "Resident memory of the broker's process.";
        family(&mut e, "broker_resident_memory_bytes", rss, Gauge, [], [([], self.process.resident_bytes as f64)])?;
        let cpu = "CPU time (user and system) of the broker's process.";
        family(&mut e, "broker_cpu_seconds", cpu, Counter, [], [([], self.process.cpu_seconds)])
    }
}

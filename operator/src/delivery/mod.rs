//! Whether a SpanSink's spans arrive, from its exporter pods' `/metrics`: per-sink sent,
//! failed and dropped rates between two scrapes of each pod, summed over the pods, and the
//! `Delivering` condition they amount to. Not the scraping nor the status write (the
//! controller's).

pub mod samples;

use std::collections::BTreeMap;

pub use samples::{ParseError, Samples};

/// A queue above this share of its capacity at both ends of the window is filling.
pub const QUEUE_FILLING: f64 = 0.8;

/// Refusal reasons that mean the exporter is pushing back on its clients (a full queue,
/// a sink that cannot keep up), as opposed to refusing bad requests.
const BACKPRESSURE_REASONS: [&str; 2] = ["queue_full", "backpressure"];

/// One sink's rates, in spans per second, over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkRates {
    pub sent: f64,
    /// Failed after retries, by the failure's `reason` label.
    pub failed: BTreeMap<String, f64>,
    /// Discarded (`queue_full` with drop_oldest, `shutdown`, `reload`, `no_fallback`),
    /// not counting `filtered`: spans a filter removes on purpose are not lost.
    pub dropped: f64,
    /// The lower of the queue's fill at the window's two ends (0..1): high only if the
    /// queue stayed full. The highest of the pods.
    pub queue_fill: f64,
}

impl SinkRates {
    pub fn failed_total(&self) -> f64 {
        self.failed.values().sum()
    }
}

/// What the exporter pods did over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    pub sinks: BTreeMap<String, SinkRates>,
    /// Spans refused to clients for backpressure, per second, by reason.
    pub refused: BTreeMap<String, f64>,
    /// Pods whose two scrapes went into the figures.
    pub pods: usize,
}

/// One pod's scrapes at the window's start and end, `seconds` apart.
pub struct PodWindow<'a> {
    pub first: &'a Samples,
    pub last: &'a Samples,
    pub seconds: f64,
}

impl Delivery {
    /// The figures of the pods' windows, summed (rates) or maximised (queue fill).
    pub fn of_pods<'a>(pods: impl IntoIterator<Item = PodWindow<'a>>) -> Self {
        let mut delivery = Delivery::default();
        for pod in pods {
            if pod.seconds <= 0.0 {
                continue;
            }
            delivery.pods += 1;
            let rate = |name: &str, keep: &dyn Fn(&samples::Sample) -> bool| {
                increases(pod.first, pod.last, name, keep)
                    .into_iter()
                    .map(|(sample, increase)| (sample, increase / pod.seconds))
                    .collect::<Vec<_>>()
            };
            for (sample, r) in rate("spansink_sink_sent_spans_total", &|_| true) {
                delivery.sink(sample.label("sink")).sent += r;
            }
            for (sample, r) in rate("spansink_sink_failed_spans_total", &|_| true) {
                *delivery
                    .sink(sample.label("sink"))
                    .failed
                    .entry(sample.label("reason").to_string())
                    .or_default() += r;
            }
            for (sample, r) in rate("spansink_sink_dropped_spans_total", &|s| {
                s.label("reason") != "filtered"
            }) {
                delivery.sink(sample.label("sink")).dropped += r;
            }
            for (sample, r) in rate("spansink_receiver_refused_spans_total", &|s| {
                BACKPRESSURE_REASONS.contains(&s.label("reason"))
            }) {
                *delivery
                    .refused
                    .entry(sample.label("reason").to_string())
                    .or_default() += r;
            }
            for (sink, fill) in queue_fill(pod.first, pod.last) {
                let rates = delivery.sink(&sink);
                rates.queue_fill = rates.queue_fill.max(fill);
            }
        }
        delivery
    }

    fn sink(&mut self, name: &str) -> &mut SinkRates {
        self.sinks.entry(name.to_string()).or_default()
    }
}

/// Each counter sample of `name` in `last` with its increase since `first`. A counter
/// lower than before was reset (the process restarted): its whole value is the increase,
/// as Prometheus' `rate` takes it. A counter absent before started at 0.
fn increases<'a>(
    first: &Samples,
    last: &'a Samples,
    name: &str,
    keep: &dyn Fn(&samples::Sample) -> bool,
) -> Vec<(&'a samples::Sample, f64)> {
    last.named(name)
        .filter(|s| keep(s))
        .map(|now| {
            let before = first
                .named(name)
                .find(|s| s.labels == now.labels)
                .map_or(0.0, |s| s.value);
            let increase = if now.value >= before {
                now.value - before
            } else {
                now.value
            };
            (now, increase)
        })
        .collect()
}

/// Per sink, the lower of its queue's fill in `first` and in `last`.
fn queue_fill(first: &Samples, last: &Samples) -> Vec<(String, f64)> {
    let fill = |samples: &Samples, sink: &str| -> Option<f64> {
        let spans = samples
            .named("spansink_sink_queue_spans")
            .find(|s| s.label("sink") == sink)?
            .value;
        let capacity = samples
            .named("spansink_sink_queue_capacity_spans")
            .find(|s| s.label("sink") == sink)?
            .value;
        (capacity > 0.0).then(|| spans / capacity)
    };
    last.named("spansink_sink_queue_spans")
        .filter_map(|s| {
            let sink = s.label("sink");
            let low = fill(first, sink)?.min(fill(last, sink)?);
            Some((sink.to_string(), low))
        })
        .collect()
}

/// The `Delivering` condition: its status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveringCondition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The condition for `delivery` (`None`: no pod's metrics could be read, with why).
/// A failing sink is reported first, then backpressure, then a filling queue.
pub fn delivering(delivery: Result<&Delivery, &str>) -> DeliveringCondition {
    let delivery = match delivery {
        Ok(d) if d.pods > 0 => d,
        Ok(_) => {
            return DeliveringCondition {
                status: "Unknown",
                reason: "MetricsUnavailable",
                message: "no exporter pod's metrics were read twice yet".to_string(),
            };
        }
        Err(why) => {
            return DeliveringCondition {
                status: "Unknown",
                reason: "MetricsUnavailable",
                message: format!("the exporter pods' metrics cannot be read: {why}"),
            };
        }
    };
    let failing = delivery
        .sinks
        .iter()
        .filter(|(_, r)| r.failed_total() > 0.0)
        .max_by(|a, b| a.1.failed_total().total_cmp(&b.1.failed_total()));
    if let Some((sink, rates)) = failing {
        let (reason, _) = rates
            .failed
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(("", &0.0), |(k, v)| (k.as_str(), v));
        return DeliveringCondition {
            status: "False",
            reason: "SinkFailing",
            message: format!(
                "sink {sink} is failing: {} spans/s not delivered (reason {reason}), {} spans/s sent",
                per_second(rates.failed_total()),
                per_second(rates.sent)
            ),
        };
    }
    let refused: f64 = delivery.refused.values().sum();
    if refused > 0.0 {
        let reasons: Vec<&str> = delivery.refused.keys().map(String::as_str).collect();
        return DeliveringCondition {
            status: "False",
            reason: "Backpressure",
            message: format!(
                "clients are refused: {} spans/s ({}); a sink is not keeping up",
                per_second(refused),
                reasons.join(", ")
            ),
        };
    }
    let filling = delivery
        .sinks
        .iter()
        .filter(|(_, r)| r.queue_fill > QUEUE_FILLING)
        .max_by(|a, b| a.1.queue_fill.total_cmp(&b.1.queue_fill));
    if let Some((sink, rates)) = filling {
        return DeliveringCondition {
            status: "False",
            reason: "QueueFilling",
            message: format!(
                "sink {sink}'s queue stays {:.0}% full",
                rates.queue_fill * 100.0
            ),
        };
    }
    let sent: f64 = delivery.sinks.values().map(|r| r.sent).sum();
    DeliveringCondition {
        status: "True",
        reason: "Delivering",
        message: format!(
            "{} spans/s sent, no failures, from {} pod(s)",
            per_second(sent),
            delivery.pods
        ),
    }
}

/// A rate as people read it: whole numbers above 10, one decimal below.
fn per_second(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> (Samples, Samples) {
        let read = |text: &str| Samples::parse(text).unwrap();
        match name {
            "healthy" => (
                read(include_str!("testdata/healthy-t0.metrics")),
                read(include_str!("testdata/healthy-t1.metrics")),
            ),
            "failing" => (
                read(include_str!("testdata/failing-t0.metrics")),
                read(include_str!("testdata/failing-t1.metrics")),
            ),
            _ => (
                read(include_str!("testdata/backpressure-t0.metrics")),
                read(include_str!("testdata/backpressure-t1.metrics")),
            ),
        }
    }

    fn delivery_of(name: &str, seconds: f64) -> Delivery {
        let (first, last) = recorded(name);
        Delivery::of_pods([PodWindow {
            first: &first,
            last: &last,
            seconds,
        }])
    }

    // The recordings: real exporters (the release binary) before and after the official
    // Python SDK sent them spans. healthy: a blackhole sink; 3,000 spans accepted, 2,800
    // sent by the second scrape. failing: the same plus an otlp sink to a closed port.
    // backpressure: only that otlp sink, a 1,000-span queue with when_full: reject.

    #[test]
    fn a_healthy_exporter_is_delivering() {
        let delivery = delivery_of("healthy", 10.0);
        assert_eq!(delivery.sinks["archive"].sent, 280.0);
        assert_eq!(delivery.sinks["archive"].failed_total(), 0.0);
        let condition = delivering(Ok(&delivery));
        assert_eq!((condition.status, condition.reason), ("True", "Delivering"));
        assert_eq!(
            condition.message,
            "280 spans/s sent, no failures, from 1 pod(s)"
        );
    }

    #[test]
    fn a_failing_sink_is_named_with_its_reason_and_rate() {
        let delivery = delivery_of("failing", 10.0);
        let forward = &delivery.sinks["forward"];
        assert_eq!(forward.failed["transport"], 280.0);
        assert_eq!(forward.dropped, 280.0, "no fallback: dropped after failing");
        assert_eq!(delivery.sinks["archive"].sent, 280.0);
        let condition = delivering(Ok(&delivery));
        assert_eq!(
            (condition.status, condition.reason),
            ("False", "SinkFailing")
        );
        assert_eq!(
            condition.message,
            "sink forward is failing: 280 spans/s not delivered (reason transport), 0.0 spans/s sent"
        );
    }

    #[test]
    fn refused_clients_are_backpressure_and_a_full_queue_alone_is_filling() {
        let delivery = delivery_of("backpressure", 5.0);
        assert_eq!(delivery.refused["queue_full"], 440.0);
        let condition = delivering(Ok(&delivery));
        assert_eq!(
            (condition.status, condition.reason),
            ("False", "Backpressure")
        );
        assert!(
            condition
                .message
                .starts_with("clients are refused: 440 spans/s (queue_full)")
        );

        // The queue was empty at the first scrape: not "stays full". Full at both ends
        // (the later scrape twice) with no refusals is QueueFilling.
        assert_eq!(delivery.sinks["forward"].queue_fill, 0.0);
        let (_, last) = recorded("backpressure");
        let mut still_full = Delivery::of_pods([PodWindow {
            first: &last,
            last: &last,
            seconds: 30.0,
        }]);
        assert!(still_full.refused.values().all(|r| *r == 0.0));
        assert_eq!(still_full.sinks["forward"].queue_fill, 1.0);
        still_full.refused.clear();
        let condition = delivering(Ok(&still_full));
        assert_eq!(
            (condition.status, condition.reason),
            ("False", "QueueFilling")
        );
        assert_eq!(condition.message, "sink forward's queue stays 100% full");
    }

    #[test]
    fn pods_add_up_restarts_count_from_zero_and_no_metrics_is_unknown() {
        let (first, last) = recorded("healthy");
        let two = Delivery::of_pods([
            PodWindow {
                first: &first,
                last: &last,
                seconds: 10.0,
            },
            // A pod that restarted between the scrapes: its counter went down.
            PodWindow {
                first: &last,
                last: &first,
                seconds: 10.0,
            },
        ]);
        assert_eq!(two.pods, 2);
        assert_eq!(two.sinks["archive"].sent, 280.0);
        assert_eq!(
            delivering(Err("connection refused")).message,
            "the exporter pods' metrics cannot be read: connection refused"
        );
        let none = delivering(Ok(&Delivery::default()));
        assert_eq!(
            (none.status, none.reason),
            ("Unknown", "MetricsUnavailable")
        );
    }
}

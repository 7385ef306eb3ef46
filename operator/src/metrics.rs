//! The operator's Prometheus metrics, declared once here with their help text.
//! Not the exporter's metrics (those live in the exporter crate) and not the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result` of one reconciliation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `applied`, `invalid_pipeline`, `unmanaged`, `name_conflict` or `error`.
    pub result: String,
}

/// A condition and its status, for counting SpanSinks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Condition type, e.g. `Ready`.
    pub condition: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// Failure reason of a reconciliation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Stable label from [`crate::error::Error::metric_label`].
    pub reason: String,
}

/// All operator metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciliations: Family<ResultLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    duration: Histogram,
    spansinks: Family<ConditionLabels, Gauge>,
    leader: Gauge,
    /// Every finished reconciliation (the sum of `reconciliations`' results), unregistered.
    finished: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spansink_operator");
        let reconciliations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "SpanSink reconciliations by result (applied, invalid_pipeline, unmanaged, name_conflict, error)",
            reconciliations.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed SpanSink reconciliations by reason; they are retried with backoff",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register_with_unit(
            "reconcile_duration",
            "Time to reconcile one SpanSink, API calls included",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let spansinks = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "spansinks",
            "SpanSinks in the watched namespaces by condition and status",
            spansinks.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciliations,
            failures,
            duration,
            spansinks,
            leader,
            finished: Counter::default(),
        }
    }

    /// Counts one finished reconciliation.
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciliations
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.finished.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts one failed reconciliation.
    pub fn failed(&self, reason: &str, took: Duration) {
        self.reconciled("error", took);
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Replaces the per-condition SpanSink counts (called before each scrape).
    pub fn set_spansinks_by_condition<'a>(
        &self,
        conditions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.spansinks.clear();
        for (condition, status) in conditions {
            self.spansinks
                .get_or_create(&ConditionLabels {
                    condition: condition.into(),
                    status: status.into(),
                })
                .inc();
        }
    }

    /// Reconciliations finished so far, whatever their result.
    pub fn reconciliations(&self) -> u64 {
        self.finished.get()
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// OpenMetrics text of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_convention() {
        let m = Metrics::new();
        m.reconciled("applied", Duration::from_millis(20));
        m.failed("kube_api", Duration::from_millis(5));
        m.set_spansinks_by_condition([("Ready", "True"), ("Ready", "True"), ("Ready", "False")]);
        m.set_leader(true);
        let text = m.encode().unwrap();
        for line in [
            "spansink_operator_reconciliations_total{result=\"applied\"} 1",
            "spansink_operator_reconciliations_total{result=\"error\"} 1",
            "spansink_operator_reconcile_failures_total{reason=\"kube_api\"} 1",
            "spansink_operator_reconcile_duration_seconds_count 2",
            "spansink_operator_spansinks{condition=\"Ready\",status=\"True\"} 2",
            "spansink_operator_spansinks{condition=\"Ready\",status=\"False\"} 1",
            "spansink_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.set_spansinks_by_condition([]);
        assert!(!m.encode().unwrap().contains("status=\"True\"} 2"));
    }
}

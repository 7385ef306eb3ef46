//! What librdkafka reports on its own threads, made visible: its statistics become the
//! `spansink_kafka_*` metrics and its global errors (broker down, transport failures)
//! become rate-limited warnings. Not delivery reports (`producer` awaits those).
//!
//! Why: librdkafka retries and reconnects inside the producer, so during a broker outage
//! the chain sees no failed export (and `spansink_sink_retried_spans_total` stays 0)
//! until `message_timeout` runs out. These reports are the only early signal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::telemetry::metrics::{Metrics, SinkLabels};

/// At most one warning per this interval for librdkafka's global errors; the ones in
/// between are counted in the next warning (a broker that is down is reported by
/// librdkafka on every reconnect attempt).
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// The librdkafka client context of one sink's producer.
pub struct KafkaClientContext {
    sink: String,
    labels: SinkLabels,
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// librdkafka's cumulative counters by broker name, as last reported: the metrics
    /// are counters, so each report adds what grew since.
    brokers: HashMap<String, BrokerTotals>,
    /// Brokers up in the last report (`None` before the first).
    brokers_up: Option<u64>,
    last_warning: Option<Instant>,
    suppressed_warnings: u64,
}

#[derive(Clone, Copy, Default)]
struct BrokerTotals {
    retries: u64,
    transport_errors: u64,
    request_timeouts: u64,
}

impl KafkaClientContext {
    pub fn new(sink: &str, metrics: &Metrics) -> Self {
        Self {
            sink: sink.to_string(),
            labels: metrics.sink(sink),
            metrics: metrics.clone(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are still usable.
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A cumulative value that went down belongs to a new connection object (librdkafka
/// recreated the broker): all of it is new.
fn growth(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

impl ClientContext for KafkaClientContext {
    fn stats(&self, statistics: Statistics) {
        let m = &self.metrics;
        m.kafka_producer_queue_messages
            .get_or_create(&self.labels)
            .set(i64::try_from(statistics.msg_cnt).unwrap_or(i64::MAX));
        m.kafka_producer_queue_bytes
            .get_or_create(&self.labels)
            .set(i64::try_from(statistics.msg_size).unwrap_or(i64::MAX));

        let mut state = self.state();
        let mut added = BrokerTotals::default();
        let mut up = 0u64;
        for (name, broker) in &statistics.brokers {
            let now = BrokerTotals {
                retries: broker.txretries,
                transport_errors: broker.txerrs.saturating_add(broker.rxerrs),
                request_timeouts: broker.req_timeouts,
            };
            let before = state.brokers.insert(name.clone(), now).unwrap_or_default();
            added.retries += growth(now.retries, before.retries);
            added.transport_errors += growth(now.transport_errors, before.transport_errors);
            added.request_timeouts += growth(now.request_timeouts, before.request_timeouts);
            // Bootstrap and internal entries have no node id; only cluster brokers count.
            if broker.nodeid >= 0 && broker.state == "UP" {
                up += 1;
            }
        }
        // Brokers that left the cluster take their totals with them.
        state
            .brokers
            .retain(|name, _| statistics.brokers.contains_key(name));
        m.kafka_request_retries
            .get_or_create(&self.labels)
            .inc_by(added.retries);
        m.kafka_transport_errors
            .get_or_create(&self.labels)
            .inc_by(added.transport_errors);
        m.kafka_request_timeouts
            .get_or_create(&self.labels)
            .inc_by(added.request_timeouts);
        m.kafka_brokers_up
            .get_or_create(&self.labels)
            .set(i64::try_from(up).unwrap_or(i64::MAX));

        let before = state.brokers_up.replace(up);
        match (before, up) {
            (Some(b), 0) if b > 0 => {
                tracing::warn!(sink = %self.sink, brokers_up = 0, queued_messages = statistics.msg_cnt, "Kafka producer is connected to no broker; messages wait in its queue until message_timeout")
            }
            (Some(0), up) if up > 0 => {
                tracing::info!(sink = %self.sink, brokers_up = up, "Kafka producer is connected to brokers again")
            }
            _ => {}
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut state = self.state();
        let now = Instant::now();
        if state
            .last_warning
            .is_some_and(|last| now.duration_since(last) < WARNING_INTERVAL)
        {
            state.suppressed_warnings += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.suppressed_warnings);
        state.last_warning = Some(now);
        drop(state);
        let code = error
            .rdkafka_error_code()
            .map(|code| code.to_string())
            .unwrap_or_else(|| error.to_string());
        // librdkafka's reason names the broker and what failed; it carries no credentials.
        tracing::warn!(
            sink = %self.sink,
            code = %code,
            reason = %reason,
            suppressed_since_last_warning = suppressed,
            "Kafka client error; librdkafka keeps reconnecting and retrying until message_timeout"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::growth;

    #[test]
    fn cumulative_values_add_their_growth_and_a_reset_counts_whole() {
        assert_eq!(growth(10, 4), 6);
        assert_eq!(growth(4, 4), 0);
        assert_eq!(growth(3, 9), 3);
    }
}

//! The chain the receivers admit into ([`LiveChain`]): the current generation, replaced
//! on reload. Not how a config is read or a chain built (`reload`, `assemble`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::builder::{Chain, DrainReport};
use super::{Admission, Admit, Refusal};

/// The chain the receivers admit into: the current generation, replaced on reload.
pub struct LiveChain {
    current: RwLock<Arc<Chain>>,
    /// Serialises reloads and shutdown so two swaps never interleave.
    swap: Mutex<()>,
}

impl LiveChain {
    pub fn new(chain: Arc<Chain>) -> Self {
        Self {
            current: RwLock::new(chain),
            swap: Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<Chain> {
        // A poisoned lock means a panic while swapping an Arc: the Arc itself is intact.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `next` the chain receivers admit into, drains the previous one within
    /// `deadline`, then starts `next`. Starting only after the drain keeps two
    /// generations from writing to one backend at once (e.g. the same file); meanwhile
    /// `next` queues what arrives (its queue bounds apply).
    pub async fn replace(&self, next: Arc<Chain>, deadline: Duration) {
        let _guard = self.swap.lock().await;
        let previous = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, next.clone())
        };
        let report = previous.drain(deadline).await;
        tracing::info!(
            delivered_spans = report.delivered_spans,
            dropped_spans = report.dropped_spans,
            timed_out = report.timed_out,
            "previous chain drained"
        );
        next.start();
    }

    /// Drains the current chain for shutdown, finishing by `until`. A reload's drain of the
    /// previous chain still under way is waited for first (that chain holds accepted
    /// spans, and two generations must not write to one backend at once); it counts
    /// against the same `until`, so a reload cannot stretch the shutdown past the pod's
    /// grace period.
    pub async fn drain_until(&self, until: tokio::time::Instant) -> DrainReport {
        let _guard = self.swap.lock().await;
        self.current()
            .drain(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
    }
}

#[async_trait]
impl Admit for LiveChain {
    async fn admit(&self, data: crate::otlp::TraceData) -> Result<Admission, Refusal> {
        let chain = self.current();
        match chain.admit(data.clone()).await {
            // The chain was swapped out between our read and the push: the new one takes it.
            Err(Refusal::ShuttingDown { .. }) if !Arc::ptr_eq(&chain, &self.current()) => {
                self.current().admit(data).await
            }
            other => other,
        }
    }
}

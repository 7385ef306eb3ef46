//! Assembles the chain of a config from real backends: at start every sink, at a reload
//! only the sinks that are new or changed (the others keep running as they are).
//! [`ChainFactory`] is the seam where tests put slow or scripted backends. Not the
//! layer order (`builder`) nor the swap (`live`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use spansink_config::ExporterConfig;

use super::builder::Chain;
use crate::sinks::{self, BuildError, SharedSink};
use crate::telemetry::Metrics;

/// Builds the backends of a config's sinks: the real sinks in the exporter, slow or
/// scripted ones in tests.
#[async_trait]
pub trait ChainFactory: Send + Sync {
    /// Builds the backend of each sink of `config` named in `names`. May take long (a
    /// backend that is slow to answer); the caller may drop the future midway.
    async fn backends(
        &self,
        config: &ExporterConfig,
        names: &[String],
        metrics: &Metrics,
    ) -> Result<BTreeMap<String, SharedSink>, BuildError>;
}

/// The exporter's sinks, built by [`sinks::build`].
pub struct SinkChains;

#[async_trait]
impl ChainFactory for SinkChains {
    async fn backends(
        &self,
        config: &ExporterConfig,
        names: &[String],
        metrics: &Metrics,
    ) -> Result<BTreeMap<String, SharedSink>, BuildError> {
        let mut built = BTreeMap::new();
        for name in names {
            let Some(sink) = config.sinks.get(name) else {
                continue;
            };
            built.insert(name.clone(), sinks::build(name, sink, metrics).await?);
        }
        Ok(built)
    }
}

/// Builds every sink of `config`, then the chain around them (not started).
pub async fn build_chain(config: &ExporterConfig, metrics: &Metrics) -> Result<Chain, BuildError> {
    let built = sinks::build_all(config, metrics).await?;
    Chain::build(config, metrics, &|name, _| {
        built.get(name).cloned().ok_or_else(|| BuildError {
            sink: name.to_string(),
            message: "sink was not built".into(),
        })
    })
}

/// Builds the chain of `config` (not started) with the backends `factory` makes. After
/// `previous` (a reload), only the sinks it cannot pass on are built; the others are
/// shared as they run.
pub async fn assemble(
    factory: &dyn ChainFactory,
    config: &ExporterConfig,
    previous: Option<&Chain>,
    metrics: &Metrics,
) -> Result<Chain, BuildError> {
    let names = Chain::sinks_to_build(previous, config);
    let built = factory.backends(config, &names, metrics).await?;
    Chain::build_next(previous, config, metrics, &|name, _| {
        built.get(name).cloned().ok_or_else(|| BuildError {
            sink: name.to_string(),
            message: "sink was not built".into(),
        })
    })
}

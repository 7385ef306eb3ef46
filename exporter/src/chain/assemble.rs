//! Assembles the chain of a config from real backends; [`ChainFactory`] is the seam
//! where tests put slow or scripted ones. Not the layer order (`builder`) nor the swap
//! (`live`).

use async_trait::async_trait;
use spansink_config::ExporterConfig;

use super::builder::Chain;
use crate::sinks::{self, BuildError};
use crate::telemetry::Metrics;

/// Builds the sink chain of a config: the real sinks in the exporter, slow or scripted
/// ones in tests.
#[async_trait]
pub trait ChainFactory: Send + Sync {
    /// Builds every sink of `config` and the chain around them (not started). May take
    /// long (a backend that is slow to answer); the caller may drop the future midway.
    async fn build(&self, config: &ExporterConfig, metrics: &Metrics) -> Result<Chain, BuildError>;
}

/// The exporter's sinks, built by [`build_chain`].
pub struct SinkChains;

#[async_trait]
impl ChainFactory for SinkChains {
    async fn build(&self, config: &ExporterConfig, metrics: &Metrics) -> Result<Chain, BuildError> {
        build_chain(config, metrics).await
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

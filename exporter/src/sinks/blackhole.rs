//! The `blackhole` sink: accepts every batch and keeps nothing, for benchmarks and for
//! muting a pipeline. Not a counter: the chain counts the spans it reports as sent.

use async_trait::async_trait;

use crate::otlp::Batch;

use super::{BuildSink, Sink, SinkContext, SinkError};
use crate::sinks::BuildError;
use spansink_config::BlackholeSinkConfig;

/// Accepts batches without decoding them.
#[derive(Debug, Default)]
pub struct BlackholeSink;

#[async_trait]
impl Sink for BlackholeSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        // The batch has been handed over and is now released; `black_box` keeps the call
        // from being reasoned away in benchmarks that never look at the result.
        std::hint::black_box(batch);
        Ok(())
    }
}

#[async_trait]
impl BuildSink for BlackholeSink {
    type Config = BlackholeSinkConfig;

    async fn build(
        _config: &BlackholeSinkConfig,
        _context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Ok(BlackholeSink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::TraceData;
    use crate::otlp::fixtures;

    #[tokio::test]
    async fn accepts_any_batch() {
        let batch: Batch = [TraceData::from_request(&fixtures::rich_request())]
            .into_iter()
            .collect();
        assert_eq!(BlackholeSink.export(&batch).await, Ok(()));
        assert_eq!(BlackholeSink.export(&Batch::new()).await, Ok(()));
        assert_eq!(BlackholeSink.shutdown().await, Ok(()));
    }
}

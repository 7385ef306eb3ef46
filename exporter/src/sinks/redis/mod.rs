//! The Redis sink: each batch is one MULTI/EXEC pipeline (one round trip) that appends
//! every span to a stream (XADD with MAXLEN ~) or to its trace's list (RPUSH + PEXPIRE).
//! Not batching or retries (the chain's), nor the Redis protocol (the `redis` crate's).
//!
//! Delivery is at least once: when the connection drops after the server ran the
//! transaction but before its reply arrived, the chain retries the batch and its spans
//! are written again (stream entries get new ids; trace lists get the spans twice).

pub mod client;
pub mod encoding;

use async_trait::async_trait;
use spansink_config::RedisSinkConfig;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError};

use self::client::RedisClient;
use self::encoding::{EncodedBatch, stream_pipeline, trace_pipeline};

/// Writes batches to one Redis server.
pub struct RedisSink {
    name: String,
    config: RedisSinkConfig,
    client: RedisClient,
}

impl RedisSink {
    /// Prepares the client; does not connect, so a server that is down at start makes
    /// exports fail transiently (and the chain retry) rather than the build fail.
    pub fn new(name: &str, config: &RedisSinkConfig) -> Result<Self, BuildError> {
        Self::with_env(name, config, &|var| std::env::var(var).ok())
    }

    /// As [`RedisSink::new`], reading `password_env` through `env`.
    pub fn with_env(
        name: &str,
        config: &RedisSinkConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message,
        };
        if config.stream.is_some() == config.trace.is_some() {
            return Err(build_error(
                "set exactly one of redis.stream and redis.trace".to_string(),
            ));
        }
        let client = RedisClient::new(config, env).map_err(build_error)?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            client,
        })
    }

    fn encode(&self, batch: &Batch) -> Result<EncodedBatch, SinkError> {
        let request = batch.decode().map_err(|e| {
            SinkError::permanent("encoding", format!("cannot decode the batch: {e}"))
        })?;
        let hint = batch.encoded_len();
        match (&self.config.stream, &self.config.trace) {
            (Some(stream), _) => Ok(stream_pipeline(&request, stream, hint)),
            (None, Some(trace)) => Ok(trace_pipeline(&request, trace, hint)),
            // Refused by `with_env`; kept as an error rather than a panic.
            (None, None) => Err(SinkError::permanent(
                "config",
                "neither redis.stream nor redis.trace is set",
            )),
        }
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let encoded = self.encode(batch)?;
        if encoded.spans == 0 {
            return Ok(());
        }
        match self.client.run(&encoded.pipeline).await {
            Ok(()) => {
                tracing::debug!(
                    sink = %self.name,
                    spans = encoded.spans,
                    keys_or_entries = encoded.keys_or_entries,
                    "batch written to Redis"
                );
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    sink = %self.name,
                    spans = encoded.spans,
                    reason = %error.reason(),
                    transient = error.is_transient(),
                    error = %error,
                    "Redis did not take the batch"
                );
                Err(error)
            }
        }
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        // Every export awaited its reply: nothing is buffered client-side.
        self.client.close().await;
        Ok(())
    }
}

#[async_trait]
impl BuildSink for RedisSink {
    type Config = RedisSinkConfig;

    async fn build(
        config: &RedisSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.env)
    }
}

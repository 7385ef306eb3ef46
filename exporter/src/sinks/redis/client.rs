//! The Redis connection of the sink (opened lazily, replaced after a failure) and the
//! classification of every Redis error as transient or permanent. Not the commands.
//!
//! Why not redis' `ConnectionManager`: its first connection is a shared future that is
//! only replaced after an I/O error, so a handshake refused with, say, `LOADING` would
//! fail every later export too. Here a failed connection is simply dropped and the next
//! export opens a new one; retries and backoff are the chain's job, not the client's.

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    ServerErrorKind, TlsCertificates,
};
use spansink_config::RedisSinkConfig;
use tokio::sync::Mutex;

use crate::sinks::SinkError;

use crate::sinks::EnvLookup;

/// One multiplexed connection shared by concurrent exports (Redis answers pipelined
/// requests in order, so they need no pool), reopened on demand.
pub struct RedisClient {
    client: Client,
    config: AsyncConnectionConfig,
    slot: Mutex<Slot>,
}

/// The current connection, numbered so that an export whose connection failed drops
/// that one and not a newer one another export already opened.
#[derive(Default)]
struct Slot {
    current: Option<(u64, MultiplexedConnection)>,
    opened: u64,
}

impl RedisClient {
    /// Prepares the client; does not connect (a server that is down now only makes
    /// exports fail, transiently). Fails for a URL or credential setting that can never
    /// work.
    pub fn new(config: &RedisSinkConfig, env: EnvLookup<'_>) -> Result<Self, String> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("redis.url {:?} is not usable: {e}", config.url))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(var) = &config.password_env {
            let password = env(var).ok_or_else(|| {
                format!(
                    "environment variable {var} (redis.password_env) is not set; fill it from a Secret with envFrom"
                )
            })?;
            settings = settings.set_password(password);
        }
        let info = info.set_redis_settings(settings);
        if config.tls.is_some() || config.url.starts_with("rediss://") {
            crate::tls::install_crypto_provider();
        }
        let client = match config.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            // A private CA (e.g. mounted from a Secret) instead of the system's CAs.
            Some(ca_file) => {
                let root_cert = std::fs::read(ca_file)
                    .map_err(|e| format!("cannot read redis.tls.ca_file {ca_file}: {e}"))?;
                let certificates = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::build_with_tls(info, certificates)
            }
            None => Client::open(info),
        }
        .map_err(|e| format!("redis.url {:?} is not usable: {e}", config.url))?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout.get()))
            .set_response_timeout(Some(config.response_timeout.get()));
        Ok(Self {
            client,
            config: connection_config,
            slot: Mutex::new(Slot::default()),
        })
    }

    /// Sends `pipeline` in one round trip and checks every reply.
    pub async fn run(&self, pipeline: &Pipeline) -> Result<(), SinkError> {
        let (generation, mut connection) = self.connection().await?;
        let result = pipeline.exec_async(&mut connection).await;
        if let Err(e) = &result
            && needs_new_connection(e)
        {
            self.forget(generation).await;
        }
        result.map_err(|e| classify(&e))
    }

    /// Drops the connection; the next export opens a new one.
    pub async fn close(&self) {
        self.slot.lock().await.current = None;
    }

    async fn connection(&self) -> Result<(u64, MultiplexedConnection), SinkError> {
        let mut slot = self.slot.lock().await;
        if let Some((generation, connection)) = &slot.current {
            return Ok((*generation, connection.clone()));
        }
        // Opened while holding the lock: concurrent exports wait for this one connection
        // instead of each opening their own.
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| classify(&e))?;
        slot.opened += 1;
        let generation = slot.opened;
        slot.current = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// Forgets the connection that failed, unless another export already replaced it.
    async fn forget(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.current.as_ref().is_some_and(|(g, _)| *g == generation) {
            slot.current = None;
        }
    }
}

/// Whether the connection is no longer trustworthy: dropped, timed out (a late reply
/// would still be in its pipe), or answering garbage.
fn needs_new_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(error.kind(), ErrorKind::Parse)
}

/// What one Redis error code means for the batch.
fn server_error(code: &str, detail: &str) -> SinkError {
    let text = format!("{code} {detail}").trim().to_string();
    match code {
        // The server cannot take writes right now but will: still loading its dataset,
        // running a long script, out of memory until keys expire or trimming catches up,
        // a failover or cluster reconfiguration in progress, snapshot failure, too few
        // replicas.
        "LOADING" => {
            SinkError::transient("loading", format!("Redis is loading its dataset: {text}"))
        }
        "BUSY" => SinkError::transient("busy", format!("Redis is busy running a script: {text}")),
        "OOM" => SinkError::transient(
            "oom",
            format!(
                "Redis is out of memory (maxmemory): {text}; lower stream.maxlen or trace.ttl, or give Redis more memory"
            ),
        ),
        "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "MISCONF" | "NOREPLICAS" => {
            SinkError::transient("unavailable", format!("Redis cannot write now: {text}"))
        }
        "WRONGTYPE" => SinkError::permanent(
            "wrong_type",
            format!(
                "Redis refused the batch: {text}; a key the sink writes holds another type: point stream.key or trace.key_prefix at keys only this sink writes"
            ),
        ),
        "NOAUTH" | "WRONGPASS" => SinkError::permanent(
            "auth",
            format!(
                "Redis refused the credentials: {text}; check redis.username and the variable named by redis.password_env"
            ),
        ),
        // The client's connection setup reports a refused SELECT as plain ERR.
        "NOPERM" => permission_error(&text),
        "ERR" if text.contains("no permissions to run") => permission_error(&text),
        "MOVED" | "ASK" | "CROSSSLOT" => SinkError::permanent(
            "cluster",
            format!(
                "Redis Cluster redirected the batch: {text}; the sink speaks to a standalone server or a primary, not a cluster"
            ),
        ),
        // ERR (unknown command, wrong arguments, ...) and codes we do not know: the same
        // batch would be refused again.
        _ => SinkError::permanent("rejected", format!("Redis refused the batch: {text}")),
    }
}

fn permission_error(text: &str) -> SinkError {
    SinkError::permanent(
        "permission",
        format!(
            "Redis refused the command for this user: {text}; grant the ACL user the commands (+xadd or +rpush +pexpire, +multi +exec, and +select when redis.url names a database other than 0) and the keys it writes"
        ),
    )
}

/// Classifies any error the client returns.
pub fn classify(error: &RedisError) -> SinkError {
    // A pipeline or an aborted transaction carries the server errors of its commands;
    // one permanent error among them means a retry cannot fully succeed.
    if let Some(errors) = error.clone().into_server_errors() {
        let classified: Vec<SinkError> = errors
            .iter()
            .map(|(_, e)| server_error(e.code(), e.details().unwrap_or("")))
            .collect();
        if let Some(worst) = SinkError::decisive(&classified) {
            return worst.clone();
        }
    }
    match error.kind() {
        ErrorKind::Io if error.is_connection_refusal() => SinkError::transient(
            "connect",
            format!("cannot connect to Redis: {error}; is the server up and redis.url right?"),
        ),
        // rustls' verdict on the server's certificate (unknown CA, wrong host name,
        // expired): the same on every retry until the config or the certificate changes.
        ErrorKind::Io if error.to_string().contains("invalid peer certificate") => {
            SinkError::permanent(
                "tls",
                format!(
                    "Redis' TLS certificate is not trusted: {error}; set redis.tls.ca_file to the CA that signed it, and name in redis.url the host its certificate names"
                ),
            )
        }
        ErrorKind::Io if error.is_timeout() => {
            SinkError::transient("timeout", format!("Redis did not answer in time: {error}"))
        }
        ErrorKind::Io | ErrorKind::Parse => {
            SinkError::transient("io", format!("Redis connection failed: {error}"))
        }
        ErrorKind::AuthenticationFailed => SinkError::permanent(
            "auth",
            format!(
                "Redis refused the credentials: {error}; check redis.username and the variable named by redis.password_env"
            ),
        ),
        ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            server_error("LOADING", error.detail().unwrap_or(""))
        }
        ErrorKind::Server(_) | ErrorKind::Extension => {
            server_error(error.code().unwrap_or("ERR"), error.detail().unwrap_or(""))
        }
        _ => SinkError::permanent("rejected", format!("Redis client error: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.to_string()))
    }

    #[test]
    fn busy_servers_are_transient_and_refusals_permanent() {
        for (code, reason) in [
            ("LOADING", "loading"),
            ("BUSY", "busy"),
            ("OOM", "oom"),
            ("TRYAGAIN", "unavailable"),
            ("CLUSTERDOWN", "unavailable"),
            ("MASTERDOWN", "unavailable"),
            ("READONLY", "unavailable"),
        ] {
            let e = classify(&server(code, "x"));
            assert!(e.is_transient(), "{code}: {e}");
            assert_eq!(e.reason(), reason, "{code}");
        }
        for (code, reason) in [
            ("WRONGTYPE", "wrong_type"),
            ("NOAUTH", "auth"),
            ("WRONGPASS", "auth"),
            ("NOPERM", "permission"),
            ("MOVED", "cluster"),
            ("ERR", "rejected"),
            ("SOMETHINGNEW", "rejected"),
        ] {
            let e = classify(&server(code, "x"));
            assert!(!e.is_transient(), "{code}: {e}");
            assert_eq!(e.reason(), reason, "{code}");
        }
        let e = classify(&server("ERR", "unknown command 'XADD'"));
        assert!(e.to_string().contains("unknown command"), "{e}");
    }

    #[test]
    fn io_errors_are_transient_with_their_reason() {
        use std::io;
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused).reason(), "connect");
        assert!(classify(&refused).is_transient());
        let timeout = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify(&timeout).reason(), "timeout");
        assert!(needs_new_connection(&timeout));
        let reset = RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&reset).reason(), "io");
        assert!(needs_new_connection(&reset));
        assert!(!needs_new_connection(&server("WRONGTYPE", "x")));
    }

    #[test]
    fn credentials_come_from_the_named_variable_only() {
        let mut config = RedisSinkConfig::stream("redis://127.0.0.1:1/3");
        config.username = Some("spansink".into());
        config.password_env = Some("REDIS_PASSWORD".into());
        let missing = RedisClient::new(&config, &|_| None).err().unwrap();
        assert!(missing.contains("REDIS_PASSWORD"), "{missing}");
        let client = RedisClient::new(&config, &|_| Some("s3cret".into())).unwrap();
        let info = client.client.get_connection_info().redis_settings();
        assert_eq!(info.username(), Some("spansink"));
        assert_eq!(info.password(), Some("s3cret"));
        assert_eq!(info.db(), 3);
    }
}

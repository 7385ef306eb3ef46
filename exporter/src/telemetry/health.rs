//! Liveness and readiness state behind `/healthz` and `/readyz`: set by the app as
//! receivers bind and chains start or drain; read by the telemetry server.

use std::sync::atomic::{AtomicBool, Ordering};

use super::metrics::Protocol;

/// What must be true for the exporter to take traffic.
#[derive(Debug, Default)]
pub struct Health {
    grpc_listening: AtomicBool,
    http_listening: AtomicBool,
    grpc_enabled: AtomicBool,
    http_enabled: AtomicBool,
    chain_running: AtomicBool,
}

impl Health {
    pub fn new(grpc_enabled: bool, http_enabled: bool) -> Self {
        let h = Self::default();
        h.grpc_enabled.store(grpc_enabled, Ordering::Relaxed);
        h.http_enabled.store(http_enabled, Ordering::Relaxed);
        h
    }

    pub fn set_listening(&self, protocol: Protocol, on: bool) {
        let flag = match protocol {
            Protocol::grpc => &self.grpc_listening,
            Protocol::http => &self.http_listening,
        };
        flag.store(on, Ordering::Relaxed);
    }

    pub fn set_chain_running(&self, on: bool) {
        self.chain_running.store(on, Ordering::Relaxed);
    }

    /// `Ok` when ready, otherwise what is not ready yet (for the `/readyz` body).
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut missing = Vec::new();
        if self.grpc_enabled.load(Ordering::Relaxed) && !self.grpc_listening.load(Ordering::Relaxed)
        {
            missing.push("grpc receiver not listening");
        }
        if self.http_enabled.load(Ordering::Relaxed) && !self.http_listening.load(Ordering::Relaxed)
        {
            missing.push("http receiver not listening");
        }
        if !self.chain_running.load(Ordering::Relaxed) {
            missing.push("sink chain not running");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_enabled_receivers_listen_and_chain_runs() {
        let h = Health::new(true, false);
        assert_eq!(
            h.readiness().unwrap_err(),
            vec!["grpc receiver not listening", "sink chain not running"]
        );
        h.set_listening(Protocol::grpc, true);
        h.set_chain_running(true);
        assert_eq!(h.readiness(), Ok(()));
        h.set_chain_running(false);
        assert!(h.readiness().is_err());
    }
}

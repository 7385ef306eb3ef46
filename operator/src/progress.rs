//! Whether the controllers are making progress, for `/healthz`: a stopped controller loop,
//! a reconcile that never returns, or pending work that nothing picks up is a wedged
//! operator the kubelet should restart. Not readiness, and not metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long without progress counts as wedged. Longer than the longest retry backoff
/// (5 min) plus a reconcile's own API timeouts, so a SpanSink failing for a reason a
/// restart would not fix never restarts the operator.
pub const WEDGED_AFTER: Duration = Duration::from_secs(600);

/// Progress of every controller of the process.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Reconciles running now (`namespace/name` -> since).
    in_flight: HashMap<String, Instant>,
    /// When the last reconcile returned (or the process started).
    last_finished: Instant,
    /// A controller loop that ended without being asked to.
    stopped: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                in_flight: HashMap::new(),
                last_finished: Instant::now(),
                stopped: None,
            }),
        }
    }
}

impl Progress {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reconcile of `key` started.
    pub fn started(&self, key: &str) {
        self.state()
            .in_flight
            .insert(key.to_string(), Instant::now());
    }

    /// A reconcile of `key` returned, whatever its result.
    pub fn finished(&self, key: &str) {
        let mut state = self.state();
        state.in_flight.remove(key);
        state.last_finished = Instant::now();
    }

    /// The controller loop for `scope` ended while the process keeps running.
    pub fn controller_stopped(&self, scope: &str) {
        self.state().stopped = Some(scope.to_string());
    }

    /// `Err(why)` if the operator is wedged; `pending` is how many SpanSinks wait for a
    /// reconcile (their status has not observed their generation).
    pub fn check(&self, pending: usize) -> Result<(), String> {
        let state = self.state();
        if let Some(scope) = &state.stopped {
            return Err(format!("the controller for {scope} has stopped"));
        }
        if let Some((key, since)) = state.in_flight.iter().min_by_key(|(_, since)| **since)
            && since.elapsed() > WEDGED_AFTER
        {
            return Err(format!(
                "the reconcile of SpanSink {key} has run for {}s",
                since.elapsed().as_secs()
            ));
        }
        let idle = state.last_finished.elapsed();
        if pending > 0 && state.in_flight.is_empty() && idle > WEDGED_AFTER {
            return Err(format!(
                "{pending} SpanSinks wait for a reconcile and none has finished for {}s",
                idle.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn healthy_while_reconciles_finish() {
        let p = Progress::default();
        for _ in 0..3 {
            p.started("a/x");
            tokio::time::advance(Duration::from_secs(300)).await;
            p.finished("a/x");
            assert_eq!(p.check(1), Ok(()));
        }
        // Nothing pending: idle for ever is fine.
        tokio::time::advance(WEDGED_AFTER * 3).await;
        assert_eq!(p.check(0), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_never_returns_is_wedged() {
        let p = Progress::default();
        p.started("team-a/traces");
        tokio::time::advance(WEDGED_AFTER - Duration::from_secs(1)).await;
        assert_eq!(p.check(1), Ok(()));
        tokio::time::advance(Duration::from_secs(2)).await;
        let why = p.check(1).unwrap_err();
        assert!(why.contains("team-a/traces"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_work_without_progress_is_wedged() {
        let p = Progress::default();
        tokio::time::advance(WEDGED_AFTER + Duration::from_secs(1)).await;
        let why = p.check(4).unwrap_err();
        assert!(why.starts_with("4 SpanSinks wait"), "{why}");
    }

    #[test]
    fn a_stopped_controller_is_unhealthy() {
        let p = Progress::default();
        p.controller_stopped("namespace team-a");
        assert_eq!(
            p.check(0),
            Err("the controller for namespace team-a has stopped".into())
        );
    }
}

//! The operator's HTTP endpoints: `/metrics` (OpenMetrics when asked for, else the classic
//! Prometheus text format), `/healthz` and `/readyz`.
//! Not the metric definitions (`metrics.rs`) and not the exporter's server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use spansink_exposition as exposition;

use crate::controller::Context;

/// Whether the operator is ready: set once it reached the API server.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
    fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    ctx: Arc<Context>,
    readiness: Readiness,
}

/// The router, separate from binding so tests can call it directly.
pub fn router(ctx: Arc<Context>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { ctx, readiness })
}

/// Serves the router on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<Context>,
    readiness: Readiness,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics and health endpoints listening");
    axum::serve(listener, router(ctx, readiness)).await
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    state.ctx.refresh_condition_metrics();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match state.ctx.metrics().encode() {
        Ok(text) if exposition::wants_openmetrics(accept) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::OPENMETRICS)],
            text,
        )
            .into_response(),
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            exposition::to_prometheus_text(&text),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// 200 while the controllers make progress; 500 with the reason when one has stopped or
/// is wedged, so that the kubelet restarts the operator.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.ctx.health() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the API server yet",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use kube::runtime::events::Reporter;
    use tower::ServiceExt;

    use super::*;
    use crate::fake_apiserver::FakeApiServer;
    use crate::metrics::Metrics;

    fn context() -> Arc<Context> {
        let reporter = Reporter {
            controller: "spansink-operator".into(),
            instance: None,
        };
        Context::new(
            FakeApiServer::default().client(),
            reporter,
            "spansink:test".into(),
            Default::default(),
            Metrics::new(),
        )
    }

    async fn get(router: Router, path: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        let mut req = Request::get(path);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = router
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        crate::fake_apiserver::read(resp).await
    }

    #[tokio::test]
    async fn metrics_are_classic_text_unless_openmetrics_is_asked_for() {
        let ctx = context();
        ctx.metrics()
            .reconciled("applied", std::time::Duration::from_millis(3));
        let router = router(ctx, Readiness::default());
        let (status, ct, body) = get(router.clone(), "/metrics", None).await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::OK, exposition::PROMETHEUS_TEXT)
        );
        assert!(
            body.contains("# TYPE spansink_operator_reconciliations_total counter\n"),
            "{body}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (status, ct, body) = get(router, "/metrics", Some(prometheus)).await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::OK, exposition::OPENMETRICS)
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn healthz_fails_once_a_controller_stops_and_readyz_follows_readiness() {
        let ctx = context();
        let readiness = Readiness::default();
        let router = router(ctx.clone(), readiness.clone());
        assert_eq!(
            get(router.clone(), "/healthz", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(router.clone(), "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_ready();
        assert_eq!(get(router.clone(), "/readyz", None).await.0, StatusCode::OK);
        ctx.progress().controller_stopped("namespace team-a");
        let (status, _, why) = get(router, "/healthz", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(why, "the controller for namespace team-a has stopped");
    }
}

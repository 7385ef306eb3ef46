//! The operator's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` and `/readyz`.
//! Not the metric definitions (`metrics.rs`) and not the exporter's server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

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
        .route("/healthz", get(|| async { "ok" }))
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.ctx.refresh_condition_metrics();
    match state.ctx.metrics().encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
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

//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (receivers listening, exporters not failing) and `/` (a short index).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::export::prometheus::{stream, CONTENT_TYPE};
use crate::queue::SpanQueue;

pub struct AdminState {
    pub registry: Arc<Registry>,
    /// Set once both receivers are listening.
    pub receivers_up: AtomicBool,
    pub queue: Option<SpanQueue>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn index() -> impl IntoResponse {
    "graphgen\n\n/metrics  Prometheus metrics (service graph, span metrics, graphgen_*)\n/healthz  liveness\n/readyz   readiness\n"
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    use tokio_stream::StreamExt;
    let chunks = tokio_stream::wrappers::ReceiverStream::new(stream(state.registry.clone()))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        axum::body::Body::from_stream(chunks),
    )
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if !state.receivers_up.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "receivers not listening yet\n",
        );
    }
    // Failing only while spans are waiting: an idle exporter has nothing to fail at.
    if state
        .queue
        .as_ref()
        .is_some_and(|q| !q.is_healthy() && !q.is_empty())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "exporting to the traces endpoint is failing\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

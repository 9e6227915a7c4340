//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (receivers listening, the queue has room and can be written) and `/` (a short index).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::queue::{NotAccepting, SpanQueue};
use crate::tenants::Tenants;
use engine_metrics::EngineCollector;

pub mod engine_metrics;
pub mod scrape;

use scrape::{stream, CONTENT_TYPE};

pub struct AdminState {
    pub registry: Arc<Registry>,
    /// True from the start (the receivers' listeners are bound before this server starts),
    /// false once shutdown stops intake.
    pub receivers_up: AtomicBool,
    pub queue: Option<SpanQueue>,
    /// For `/metrics?tenant=`: another tenant's series.
    pub tenants: Arc<Tenants>,
    pub inject_tenant_id_as: Option<String>,
}

/// `/metrics?tenant=<id>`.
#[derive(Debug, serde::Deserialize)]
pub struct MetricsQuery {
    tenant: Option<String>,
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
    "graphgen\n\n/metrics    Prometheus metrics (service graph, span metrics, graphgen_*)\n/healthz    liveness\n/readyz     readiness: a request sent now would be taken\n/graph      the live service map (the whole fleet with --peers)\n/api/graph  the service map as JSON\n/api/graph/part  this replica's counts over a window, which peers merge\n"
}

/// The default tenant's series and graphgen's own; with `?tenant=`, that tenant's series only
/// (a scrape job per tenant, `params: {tenant: [...]}`).
async fn metrics(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<MetricsQuery>,
) -> Response {
    use tokio_stream::StreamExt;
    let registry = match query.tenant {
        None => state.registry.clone(),
        Some(id) => match state.tenants.get(&id) {
            Some(tenant) => {
                let mut registry = Registry::default();
                EngineCollector::new(tenant, state.inject_tenant_id_as.clone())
                    .register(&mut registry);
                Arc::new(registry)
            }
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    "no such tenant: it has sent nothing, or went idle and was forgotten\n",
                )
                    .into_response()
            }
        },
    };
    let chunks = tokio_stream::wrappers::ReceiverStream::new(stream(registry))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if !state.receivers_up.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "receivers not listening yet\n",
        );
    }
    // Ready means "a request sent now can be taken". The traces endpoint failing is not a
    // reason to be taken out of rotation: the service-graph metrics do not need it, and the
    // queue absorbs the outage until it is full (then this says so). It shows in
    // `graphgen_exporter_*` and the health dashboard instead.
    match state.queue.as_ref().map(|q| q.accepting()) {
        Some(Err(NotAccepting::Full)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "forwarding queue is full\n",
        ),
        Some(Err(NotAccepting::NotWritable)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "queue directory is not writable (see graphgen_queue_write_errors_total)\n",
        ),
        _ => (StatusCode::OK, "ready\n"),
    }
}

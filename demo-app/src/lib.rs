//! demo-app: an instrumented shop of five services whose traces draw a real service graph.
//!
//! - [`config`]: the role a process plays and where its neighbours are.
//! - [`roles`]: each role's HTTP endpoints (frontend, checkout, inventory, payments, notifications).
//! - [`outbound`]: traced calls to other services (CLIENT spans, `traceparent` injected).
//! - [`messaging`]: order events as PRODUCER/CONSUMER spans with the context in the message.
//! - [`failure`]: the `?fail=<service>` knob, parsed at the edge; [`error`]: what callers see when things fail.
//! - [`telemetry`]: `tracing` + OpenTelemetry set-up, honouring the `OTEL_*` variables; the
//!   current trace id and exception events.

pub mod config;
pub mod error;
pub mod failure;
pub mod messaging;
pub mod outbound;
pub mod roles;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use config::{Config, Role};

/// What every handler can reach.
pub struct App {
    pub config: Config,
    pub client: outbound::Client,
}

/// The role's router, with a SERVER span per request (context extracted from `traceparent`).
pub fn router(config: Config) -> Router {
    let role = config.role;
    let app = Arc::new(App {
        config,
        client: outbound::Client::default(),
    });
    roles::routes(role)
        .with_state(app)
        .layer(
            axum_tracing_opentelemetry::middleware::OtelAxumLayer::default()
                .filter(|path| path != "/healthz" && path != messaging::EVENTS_PATH),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
}

/// Simulated work: sleeps `ms` milliseconds times the latency scale.
pub async fn work(app: &App, ms: u64) {
    let scaled = Duration::from_millis(ms).mul_f64(app.config.latency_scale.max(0.0));
    if !scaled.is_zero() {
        tokio::time::sleep(scaled).await;
    }
}

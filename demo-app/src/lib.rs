//! demo-app: an instrumented shop of five services whose traces draw a real service graph.
//!
//! - [`config`]: the role a process plays and where its neighbours are.
//! - [`roles`]: each role's HTTP endpoints (frontend, checkout, inventory, payments, notifications).
//! - [`outbound`]: traced calls to other services (CLIENT spans, `traceparent` injected).
//! - [`database`]: checkout's orders in PostgreSQL (a pool, one INSERT per order, a CLIENT span).
//! - [`messaging`]: order events over NATS as PRODUCER/CONSUMER spans, the context in the
//!   message's headers.
//! - [`failure`]: the `?fail=<service>` knob, parsed at the edge; [`error`]: what callers see when things fail.
//! - [`telemetry`]: `tracing` + OpenTelemetry set-up, honouring the `OTEL_*` variables; the
//!   current trace id and exception events.

pub mod config;
pub mod database;
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
    /// checkout's database.
    pub orders: Option<database::Orders>,
    /// checkout publishes order events on it; notifications consumes them.
    pub broker: Option<messaging::Broker>,
}

/// Connects the role's backends (checkout: PostgreSQL and NATS; notifications: NATS, and
/// starts consuming) and returns its router. Neither backend has to be up yet: a database
/// that is down fails requests, NATS is retried in the background.
pub async fn app(config: Config) -> anyhow::Result<Router> {
    use anyhow::Context;
    let role = config.role;
    let orders = match role {
        Role::Checkout => {
            let orders = database::Orders::new(&config.database_url)?;
            // The schema at start; if PostgreSQL is not up yet, the first order creates it.
            if let Err(e) = orders.ensure_schema().await {
                tracing::warn!(error = %e, "orders table not created yet; retried with the first order");
            }
            Some(orders)
        }
        _ => None,
    };
    let broker = match role {
        Role::Checkout | Role::Notifications => Some(
            messaging::Broker::connect(&config.nats_url, role.name())
                .await
                .with_context(|| format!("NATS at {}", config.nats_url))?,
        ),
        _ => None,
    };
    let app = Arc::new(App {
        config,
        client: outbound::Client::default(),
        orders,
        broker,
    });
    if role == Role::Notifications {
        roles::notifications::start_consuming(app.clone()).await?;
    }
    Ok(router(app))
}

/// The role's router, with a SERVER span per request (context extracted from `traceparent`).
fn router(app: Arc<App>) -> Router {
    let role = app.config.role;
    roles::routes(role)
        .with_state(app)
        .layer(
            axum_tracing_opentelemetry::middleware::OtelAxumLayer::default()
                .filter(|path| path != "/healthz"),
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

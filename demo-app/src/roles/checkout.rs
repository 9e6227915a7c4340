//! checkout: takes an order — reserves stock, charges, stores the order in PostgreSQL and
//! publishes an order event for notifications.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::Json;
use reqwest::Method;
use serde_json::{json, Value};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry_instrumentation_sdk::otel_trace_span;

use super::inventory::Slow;
use super::{fail_if_targeted, Routes};
use crate::error::AppError;
use crate::failure::{Fail, FailTarget};
use crate::telemetry::trace_id;
use crate::{messaging, work, App, Role};

/// The database checkout writes orders to (a database node in the graph).
const DATABASE: FailTarget = FailTarget::Postgres;

static NEXT_ORDER: AtomicU64 = AtomicU64::new(1000);

pub fn routes() -> Routes {
    Routes::new().route("/checkout", post(checkout))
}

async fn checkout(
    State(app): State<Arc<App>>,
    Query(slow): Query<Slow>,
    fail: Fail,
) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Checkout)?;
    let config = &app.config;
    let reserve = if slow.slow {
        "/reserve?slow=true"
    } else {
        "/reserve"
    };
    let inventory = app
        .client
        .call(config.peer(Role::Inventory), Method::POST, reserve, &fail)
        .await?;
    let payment = app
        .client
        .call(config.peer(Role::Payments), Method::POST, "/charge", &fail)
        .await?;
    let order_id = store_order(&app, &fail).await?;
    messaging::publish(
        app.client.http(),
        config.peer(Role::Notifications).url,
        json!({ "order_id": order_id }),
        fail.target(),
    )
    .await;
    Ok(Json(json!({
        "service": Role::Checkout.name(),
        "order_id": order_id,
        "inventory": inventory,
        "payment": payment,
        "trace_id": trace_id(),
    })))
}

/// The database call: a CLIENT span with the database semantic conventions
/// (`?fail=postgres` makes it fail).
async fn store_order(app: &App, fail: &Fail) -> Result<u64, AppError> {
    let span = otel_trace_span!(
        "db query",
        otel.name = "INSERT orders",
        otel.kind = ?opentelemetry::trace::SpanKind::Client,
        otel.status_code = Empty,
        db.system = "postgresql",
        db.system.name = "postgresql",
        db.name = "orders",
        db.namespace = "orders",
        db.operation.name = "INSERT",
        db.collection.name = "orders",
        db.query.text = "INSERT INTO orders (sku, qty) VALUES ($1, $2) RETURNING id",
        server.address = DATABASE.name(),
        server.port = 5432i64,
    );
    async {
        work(app, 8).await;
        if fail.hits(DATABASE) {
            crate::telemetry::record_exception("PostgresError", "deadlock detected");
            return Err(AppError::Downstream {
                service: DATABASE.name().into(),
                reason: "deadlock detected".into(),
            });
        }
        Ok(NEXT_ORDER.fetch_add(1, Ordering::Relaxed))
    }
    .instrument(span)
    .await
}

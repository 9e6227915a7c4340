//! checkout: takes an order — reserves stock, charges, stores the order in PostgreSQL and
//! publishes an order event for notifications.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::Json;
use reqwest::Method;
use serde_json::{json, Value};

use super::inventory::Slow;
use super::{fail_if_targeted, Routes};
use crate::error::AppError;
use crate::failure::{Fail, FailTarget};
use crate::telemetry::trace_id;
use crate::{database, work, App, Role};

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
    let event = json!({ "order_id": order_id });
    let published = match &app.broker {
        Some(broker) => broker.publish(&event, fail.target()).await.is_ok(),
        None => false,
    };
    Ok(Json(json!({
        "service": Role::Checkout.name(),
        "order_id": order_id,
        "event_published": published,
        "inventory": inventory,
        "payment": payment,
        "trace_id": trace_id(),
    })))
}

/// Stores the order in PostgreSQL. `?fail=postgres` stores a quantity of 0, which the
/// table's CHECK constraint refuses: the error and its message are PostgreSQL's.
async fn store_order(app: &App, fail: &Fail) -> Result<i64, AppError> {
    let Some(orders) = &app.orders else {
        return Err(AppError::Failed {
            service: Role::Checkout.name().into(),
            reason: "no database configured".into(),
        });
    };
    work(app, 2).await;
    let quantity = if fail.hits(FailTarget::Postgres) {
        0
    } else {
        1
    };
    orders
        .insert("demo-widget", quantity)
        .await
        .map_err(|e| AppError::Downstream {
            service: database::PEER_SERVICE.into(),
            reason: e.to_string(),
        })
}

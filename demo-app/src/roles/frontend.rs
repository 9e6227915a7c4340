//! frontend: the landing page and the public scenarios.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Json;
use reqwest::Method;
use serde_json::{json, Value};

use super::{fail_if_targeted, Routes};
use crate::error::AppError;
use crate::failure::{Fail, FailTarget};
use crate::telemetry::trace_id;
use crate::{work, App, Role};

pub fn routes() -> Routes {
    Routes::new()
        .route("/", get(landing))
        .route("/simple", get(simple))
        .route("/nested", get(nested))
        .route("/error", get(error))
        .route("/chain", get(chain))
        .route("/delayed-chain", get(delayed_chain))
        .route("/multi-service", get(multi_service))
}

/// A scenario on the landing page.
pub struct Scenario {
    pub path: &'static str,
    pub title: &'static str,
    pub description: &'static str,
}

pub const SCENARIOS: [Scenario; 6] = [
    Scenario { path: "/simple", title: "Simple", description: "One server span doing a little work." },
    Scenario { path: "/nested", title: "Nested", description: "Parent → two children → a grandchild, all inside frontend." },
    Scenario { path: "/error", title: "Error", description: "The handler fails: ERROR status, an exception event, HTTP 500." },
    Scenario { path: "/chain", title: "Chain", description: "frontend → checkout → inventory, payments (→ payment-gateway), postgres, and an order event to notifications." },
    Scenario { path: "/delayed-chain", title: "Delayed chain", description: "The chain with a slow inventory hop (1.5 s)." },
    Scenario { path: "/multi-service", title: "Multi-service", description: "Fan-out from frontend to every service." },
];

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing<'a> {
    scenarios: &'a [Scenario],
    grafana_url: &'a str,
    graphgen_url: &'a str,
    failable: &'a [&'a str],
    /// Where checkout's database and the broker are (host:port, never credentials).
    database: String,
    nats: String,
}

async fn landing(State(app): State<Arc<App>>) -> Result<Html<String>, AppError> {
    // Every service but the frontend itself (whose failure the Error scenario shows).
    let failable: Vec<&str> = FailTarget::ALL
        .iter()
        .filter(|t| **t != FailTarget::Role(Role::Frontend))
        .map(|t| t.name())
        .collect();
    let page = Landing {
        scenarios: &SCENARIOS,
        grafana_url: app.config.grafana_url.trim_end_matches('/'),
        graphgen_url: app.config.graphgen_url.trim_end_matches('/'),
        failable: &failable,
        database: crate::database::shown_address(&app.config.database_url),
        nats: crate::messaging::shown_address(&app.config.nats_url),
    };
    page.render().map(Html).map_err(|e| AppError::Failed {
        service: Role::Frontend.name().into(),
        reason: format!("template: {e}"),
    })
}

fn ok(scenario: &str, extra: Value) -> Json<Value> {
    let mut body = json!({ "scenario": scenario, "status": "ok", "trace_id": trace_id() });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    Json(body)
}

async fn simple(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Frontend)?;
    work(&app, 20).await;
    Ok(ok("simple", json!({})))
}

async fn nested(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Frontend)?;
    use tracing::Instrument;
    let parent = tracing::info_span!("load cart", cart.id = "c-7", cart.items = 3i64);
    async {
        {
            let _price = tracing::info_span!("price items", pricing.currency = "EUR").entered();
        }
        work(&app, 5).await;
        let discounts = tracing::info_span!("apply discounts", discount.rules = 2i64);
        async {
            work(&app, 5).await;
            let _lookup = tracing::info_span!("lookup coupon", coupon.code = "SPRING").entered();
        }
        .instrument(discounts)
        .await;
    }
    .instrument(parent)
    .await;
    Ok(ok(
        "nested",
        json!({ "spans": ["load cart", "price items", "apply discounts", "lookup coupon"] }),
    ))
}

async fn error() -> Result<Json<Value>, AppError> {
    Err(AppError::Failed {
        service: Role::Frontend.name().into(),
        reason: "simulated failure in /error".into(),
    })
}

async fn chain(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    checkout(&app, &fail, "/checkout", "chain").await
}

async fn delayed_chain(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    checkout(&app, &fail, "/checkout?slow=true", "delayed-chain").await
}

async fn checkout(
    app: &App,
    fail: &Fail,
    path: &str,
    scenario: &str,
) -> Result<Json<Value>, AppError> {
    fail_if_targeted(fail, Role::Frontend)?;
    let order = app
        .client
        .call(app.config.peer(Role::Checkout), Method::POST, path, fail)
        .await?;
    Ok(ok(scenario, json!({ "order": order })))
}

async fn multi_service(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Frontend)?;
    let call = |role| {
        app.client
            .call(app.config.peer(role), Method::GET, "/work", &fail)
    };
    let [checkout, inventory, payments, notifications] = Role::DOWNSTREAM;
    let (a, b, p, n) = tokio::join!(
        call(checkout),
        call(inventory),
        call(payments),
        call(notifications),
    );
    Ok(ok("multi-service", json!({ "services": [a?, b?, p?, n?] })))
}

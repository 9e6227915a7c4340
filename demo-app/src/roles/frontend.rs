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
use crate::failure::Fail;
use crate::{trace_id, work, App};

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
    failable: &'a [&'a str],
}

async fn landing(State(app): State<Arc<App>>) -> Result<Html<String>, AppError> {
    let page = Landing {
        scenarios: &SCENARIOS,
        grafana_url: app.config.grafana_url.trim_end_matches('/'),
        failable: &[
            "checkout",
            "inventory",
            "payments",
            "payment-gateway",
            "postgres",
            "notifications",
        ],
    };
    page.render().map(Html).map_err(|e| AppError::Failed {
        service: "frontend".into(),
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
    fail_if_targeted(&fail, "frontend")?;
    work(&app, 20).await;
    Ok(ok("simple", json!({})))
}

async fn nested(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, "frontend")?;
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
        service: "frontend".into(),
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
    fail_if_targeted(fail, "frontend")?;
    let order = app
        .client
        .call(
            "checkout",
            Method::POST,
            &app.config.checkout_url,
            path,
            fail,
        )
        .await?;
    Ok(ok(scenario, json!({ "order": order })))
}

async fn multi_service(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, "frontend")?;
    let c = &app.config;
    let call = |service, base| app.client.call(service, Method::GET, base, "/work", &fail);
    let (a, b, p, n) = tokio::join!(
        call("checkout", &c.checkout_url),
        call("inventory", &c.inventory_url),
        call("payments", &c.payments_url),
        call("notifications", &c.notifications_url),
    );
    Ok(ok("multi-service", json!({ "services": [a?, b?, p?, n?] })))
}

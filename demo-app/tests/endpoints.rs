//! Every endpoint's status and JSON, with all five roles served in this process.

mod support;

use std::sync::Once;

use demo_app::{Config, Role};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

/// Spans need a tracer for trace ids to exist; nothing is exported.
fn install_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let provider = SdkTracerProvider::builder().build();
        // The answers are what these tests read; keep the error logs of failing scenarios quiet
        // (a filter, not `set_var`, which races with the other test threads).
        demo_app::telemetry::install(Some(&provider), Some("off")).unwrap();
        std::mem::forget(provider);
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    });
}

/// The frontend's base URL, and the backends checkout and notifications use (stopped when
/// dropped).
struct InProcess {
    frontend: String,
    postgres: support::Postgres,
    _nats: support::Nats,
}

impl std::fmt::Display for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.frontend)
    }
}

/// Serves every role on a loopback port, with a real PostgreSQL and NATS; `None` when they
/// are not installed (see `tools`).
async fn start_shop() -> Option<InProcess> {
    install_tracing();
    let (postgres, nats) = tokio::task::spawn_blocking(|| {
        Some((support::Postgres::start()?, support::Nats::start()?))
    })
    .await
    .unwrap()?;
    let roles = [
        Role::Frontend,
        Role::Checkout,
        Role::Inventory,
        Role::Payments,
        Role::Notifications,
    ];
    let mut listeners = Vec::new();
    for _ in roles {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    for (role, listener) in roles.into_iter().zip(listeners) {
        let config = Config {
            checkout_url: urls[1].clone(),
            inventory_url: urls[2].clone(),
            payments_url: urls[3].clone(),
            notifications_url: urls[4].clone(),
            grafana_url: "http://grafana.test:3000".into(),
            graphgen_url: "http://graphgen.test:9464".into(),
            database_url: postgres.url(),
            nats_url: nats.url(),
            ..Config::for_role(role)
        };
        let app = demo_app::app(config).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    Some(InProcess {
        frontend: urls[0].clone(),
        postgres,
        _nats: nats,
    })
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn is_trace_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) && s != "0".repeat(32)
    })
}

#[tokio::test]
async fn every_scenario_answers_json_with_a_trace_id() {
    let Some(shop) = start_shop().await else {
        return;
    };
    // (path, status, a field that must be in the answer)
    let cases = [
        ("/simple", 200, "scenario"),
        ("/nested", 200, "spans"),
        ("/error", 500, "error"),
        ("/chain", 200, "order"),
        ("/delayed-chain", 200, "order"),
        ("/multi-service", 200, "services"),
        ("/chain?fail=checkout", 502, "error"),
        ("/chain?fail=inventory", 502, "error"),
        ("/chain?fail=payments", 502, "error"),
        ("/chain?fail=payment-gateway", 502, "error"),
        ("/chain?fail=postgres", 502, "error"),
        ("/chain?fail=notifications", 200, "order"),
        ("/simple?fail=frontend", 500, "error"),
        ("/multi-service?fail=inventory", 502, "error"),
    ];
    for (path, want, field) in cases {
        let (status, body) = get(format!("{shop}{path}")).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body.get(field).is_some(), "{path}: no {field} in {body}");
        assert!(is_trace_id(&body["trace_id"]), "{path}: trace_id in {body}");
    }

    // The chain's answer carries one trace id through every service.
    let (_, body) = get(format!("{shop}/chain")).await;
    let trace = &body["trace_id"];
    assert_eq!(&body["order"]["trace_id"], trace);
    assert_eq!(&body["order"]["inventory"]["trace_id"], trace);
    assert_eq!(&body["order"]["payment"]["trace_id"], trace);
    let (_, body) = get(format!("{shop}/multi-service")).await;
    let services: Vec<&str> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["checkout", "inventory", "payments", "notifications"]
    );
    // A failure names the service that failed.
    let (_, body) = get(format!("{shop}/chain?fail=payment-gateway")).await;
    assert!(
        body["error"].as_str().unwrap().contains("payment-gateway"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unknown_fail_name_is_a_400_listing_the_valid_ones_and_the_shop_keeps_serving() {
    let Some(shop) = start_shop().await else {
        return;
    };
    let valid = serde_json::json!([
        "frontend",
        "checkout",
        "inventory",
        "payments",
        "payment-gateway",
        "postgres",
        "notifications"
    ]);
    for path in [
        "/chain?fail=%0A",
        "/chain?fail=bogus",
        "/simple?fail=payments&fail=inventory",
        "/multi-service?fail=%3Cscript%3E",
    ] {
        let (status, body) = get(format!("{shop}{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["valid"], valid, "{path}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}"
        );
    }
    // Nothing broke: the next request is served as usual.
    let (status, body) = get(format!("{shop}/chain")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn landing_page_has_a_button_and_a_plain_link_per_scenario() {
    let Some(shop) = start_shop().await else {
        return;
    };
    let response = reqwest::get(format!("{shop}/")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    for path in [
        "/simple",
        "/nested",
        "/error",
        "/chain",
        "/delayed-chain",
        "/multi-service",
    ] {
        assert!(
            html.contains(&format!("data-action=\"run\" data-path=\"{path}\"")),
            "button for {path}"
        );
        assert!(
            html.contains(&format!("data-action=\"burst\" data-path=\"{path}\"")),
            "burst for {path}"
        );
        assert!(
            html.contains(&format!("<form method=\"get\" action=\"{path}\">")),
            "no-JS form for {path}"
        );
    }
    assert!(
        html.contains("http://grafana.test:3000"),
        "Grafana links use GRAFANA_URL"
    );
    assert!(
        html.contains("href=\"http://graphgen.test:9464/graph\">Service map</a>"),
        "the service map link uses GRAPHGEN_URL"
    );
    // The page says which backends it talks to: addresses, never credentials.
    assert!(
        html.contains(&format!(
            "PostgreSQL at <code>127.0.0.1:{}/orders</code>",
            shop.postgres.port
        )),
        "{html}"
    );
    assert!(html.contains("NATS at <code>127.0.0.1:"), "{html}");
    let (status, _) = get(format!("{shop}/healthz")).await;
    assert_eq!(status, 200);
}

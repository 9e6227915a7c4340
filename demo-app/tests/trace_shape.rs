//! The roles as real processes export to an OTLP receiver in the test: one `/chain` request
//! must be one trace across every service with the right parents, kinds, attributes and error
//! statuses; and graphgen's engine must draw the expected graph from those spans.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, Span,
};
use serde_json::Value;
use support::{Receiver, Shop};

/// A span with the service that emitted it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    span: Span,
}

impl Seen {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                Any::IntValue(i) => Some(i.to_string()),
                other => Some(format!("{other:?}")),
            })
    }
    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap()
    }
    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spans_of(batches: &[ResourceSpans], trace_id: &str) -> Vec<Seen> {
    let mut out = Vec::new();
    for rs in batches {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            if hex(&span.trace_id) == trace_id {
                out.push(Seen {
                    service: service.clone(),
                    span: span.clone(),
                });
            }
        }
    }
    out
}

async fn call(shop: &Shop, path: &str) -> (u16, String) {
    let (status, body) = call_json(shop, path).await;
    (status, body["trace_id"].as_str().unwrap().to_string())
}

async fn call_json(shop: &Shop, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}{path}", shop.frontend))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until the receiver holds a span of `service` named `name` in each of `traces`.
async fn wait_for(receiver: &Receiver, service: &str, name: &str, traces: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let batches = receiver.batches();
        let all = traces.iter().all(|t| {
            spans_of(&batches, t)
                .iter()
                .any(|s| s.service == service && s.span.name == name)
        });
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service}/{name} never arrived for {traces:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finds the one span of `service` named `name`.
fn one<'a>(spans: &'a [Seen], service: &str, name: &str) -> &'a Seen {
    let found: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.service == service && s.span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{service}/{name} in {:#?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.span.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn is_child(child: &Seen, parent: &Seen) -> bool {
    child.span.parent_span_id == parent.span.span_id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_is_one_trace_across_every_service_and_draws_the_graph() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let Some(shop) = tokio::task::spawn_blocking(move || Shop::start(Some(&endpoint)))
        .await
        .unwrap()
    else {
        return;
    };

    let (status, chain_body) = call_json(&shop, "/chain").await;
    assert_eq!(status, 200, "{chain_body}");
    let chain = chain_body["trace_id"].as_str().unwrap().to_string();
    // The order is a row in PostgreSQL, and its event was published.
    let order = &chain_body["order"];
    assert_eq!(order["event_published"], true, "{order}");
    let id = order["order_id"].as_i64().unwrap();
    let row = shop
        .postgres
        .query(&format!("SELECT sku, quantity FROM orders WHERE id = {id}"));
    assert_eq!(row, "demo-widget|1");
    let (status, fail_payments) = call(&shop, "/chain?fail=payments").await;
    assert_eq!(status, 502);
    let (status, fail_gateway) = call(&shop, "/chain?fail=payment-gateway").await;
    assert_eq!(status, 502);
    let (status, fail_notifications) = call(&shop, "/chain?fail=notifications").await;
    assert_eq!(status, 200);
    let (status, fail_postgres) = call_json(&shop, "/chain?fail=postgres").await;
    assert_eq!(status, 502, "{fail_postgres}");
    let refused = fail_postgres["error"].as_str().unwrap();
    assert!(
        refused.contains("violates check constraint"),
        "PostgreSQL's own message: {refused}"
    );
    let fail_postgres = fail_postgres["trace_id"].as_str().unwrap().to_string();
    let (status, error) = call(&shop, "/error").await;
    assert_eq!(status, 500);
    assert_eq!(
        shop.postgres.query("SELECT count(*) FROM orders"),
        "2",
        "the plain chain and the failing consumer's; the refused row is not there"
    );
    // The events are consumed asynchronously: wait for both consumers' spans.
    wait_for(
        &receiver,
        "notifications",
        "process orders",
        &[&chain, &fail_notifications],
    )
    .await;
    let (shop_pg_port, shop_nats_port) = (shop.postgres.port, shop.nats.port);
    // Stopping the roles flushes their span batches.
    tokio::task::spawn_blocking(move || shop.stop())
        .await
        .unwrap();
    let batches = receiver.batches();

    // --- the shape of one /chain trace ---
    let spans = spans_of(&batches, &chain);
    let names: Vec<(String, String)> = spans
        .iter()
        .map(|s| (s.service.clone(), s.span.name.clone()))
        .collect();
    assert_eq!(spans.len(), 13, "{names:#?}");
    let root = one(&spans, "frontend", "GET /chain");
    assert!(
        root.span.parent_span_id.is_empty(),
        "the frontend server span is the root"
    );
    assert_eq!(root.kind(), SpanKind::Server);
    for (key, want) in [
        ("http.request.method", "GET"),
        ("http.route", "/chain"),
        ("url.path", "/chain"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(root.attr(key).as_deref(), Some(want), "{key}");
    }
    assert!(root.attr("server.address").is_some());

    let to_checkout = one(&spans, "frontend", "POST /checkout");
    assert_eq!(to_checkout.kind(), SpanKind::Client);
    assert!(is_child(to_checkout, root));
    assert_eq!(
        to_checkout.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    let checkout = spans
        .iter()
        .find(|s| s.service == "checkout" && s.kind() == SpanKind::Server)
        .unwrap();
    assert!(
        is_child(checkout, to_checkout),
        "traceparent carried frontend → checkout"
    );

    let hops = [
        ("checkout", "POST /reserve", "inventory"),
        ("checkout", "POST /charge", "payments"),
    ];
    for (client_service, name, server_service) in hops {
        let client = one(&spans, client_service, name);
        assert_eq!(client.kind(), SpanKind::Client);
        assert!(is_child(client, checkout));
        let server = spans
            .iter()
            .find(|s| s.service == server_service && s.kind() == SpanKind::Server)
            .unwrap();
        assert!(
            is_child(server, client),
            "{client_service} → {server_service}"
        );
    }
    let db = one(&spans, "checkout", "INSERT orders");
    assert_eq!(db.kind(), SpanKind::Client);
    assert!(is_child(db, checkout));
    let port = shop_pg_port.to_string();
    for (key, want) in [
        ("db.system.name", "postgresql"),
        ("db.namespace", "orders"),
        ("db.operation.name", "INSERT"),
        ("db.collection.name", "orders"),
        ("db.query.text", demo_app::database::INSERT),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("peer.service", "postgres"),
    ] {
        assert_eq!(db.attr(key).as_deref(), Some(want), "{key}");
    }
    let gateway = one(&spans, "payments", "POST /v1/charges");
    assert_eq!(gateway.kind(), SpanKind::Client);
    assert_eq!(
        gateway.attr("peer.service").as_deref(),
        Some("payment-gateway")
    );
    let producer = one(&spans, "checkout", "publish orders");
    assert_eq!(producer.kind(), SpanKind::Producer);
    let nats_port = shop_nats_port.to_string();
    for (key, want) in [
        ("messaging.system", "nats"),
        ("messaging.destination.name", "orders"),
        ("server.address", "127.0.0.1"),
        ("server.port", nats_port.as_str()),
    ] {
        assert_eq!(producer.attr(key).as_deref(), Some(want), "{key}");
    }
    // One CONSUMER span per message, in the same trace.
    let consumer = one(&spans, "notifications", "process orders");
    assert_eq!(consumer.kind(), SpanKind::Consumer);
    assert_eq!(
        consumer.attr("messaging.consumer.group.name").as_deref(),
        Some("notifications")
    );
    assert!(
        is_child(consumer, producer),
        "context carried in the message"
    );
    let nested = one(&spans, "inventory", "check stock");
    assert_eq!(nested.kind(), SpanKind::Internal);
    assert!(
        spans.iter().all(|s| !s.failed()),
        "nothing failed in the plain chain"
    );

    // --- errors land on the right spans ---
    let spans = spans_of(&batches, &error);
    let root = one(&spans, "frontend", "GET /error");
    assert!(root.failed());
    assert!(
        root.span.events.iter().any(|e| e.name == "exception"),
        "an exception event: {:?}",
        root.span.events
    );

    let spans = spans_of(&batches, &fail_payments);
    let failed: Vec<(&str, &str)> = spans
        .iter()
        .filter(|s| s.failed())
        .map(|s| (s.service.as_str(), s.span.name.as_str()))
        .collect();
    for want in [
        ("payments", "POST /charge"),
        ("checkout", "POST /charge"),
        ("checkout", "POST /checkout"),
        ("frontend", "POST /checkout"),
        ("frontend", "GET /chain"),
    ] {
        assert!(
            failed.contains(&want),
            "{want:?} should be ERROR; failed: {failed:?}"
        );
    }
    assert!(
        !failed.iter().any(|(s, _)| *s == "inventory"),
        "inventory did not fail: {failed:?}"
    );

    let spans = spans_of(&batches, &fail_gateway);
    assert!(one(&spans, "payments", "POST /v1/charges").failed());
    let spans = spans_of(&batches, &fail_postgres);
    let db = one(&spans, "checkout", "INSERT orders");
    assert!(db.failed());
    assert_eq!(db.attr("db.response.status_code").as_deref(), Some("23514"));
    let exception = db
        .span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event on the database span");
    let message = exception
        .attributes
        .iter()
        .find(|kv| kv.key == "exception.message")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        message.contains("violates check constraint \"orders_quantity_check\""),
        "{message}"
    );
    assert!(
        spans.iter().all(|s| s.span.name != "publish orders"),
        "no event for an order that was not stored"
    );
    let spans = spans_of(&batches, &fail_notifications);
    assert!(one(&spans, "notifications", "process orders").failed());
    assert!(
        !one(&spans, "frontend", "GET /chain").failed(),
        "a failed consumer does not fail the request"
    );

    // --- the graph graphgen draws from these spans ---
    let clock = ManualClock::new(1_000_000_000);
    let mut engine = Engine::new(
        graphgen::graph::Config::default(),
        None,
        Arc::new(clock.clone()),
    )
    .unwrap();
    engine.push_batches(&batches);
    clock.advance(Duration::from_secs(11));
    engine.expire();
    let mut edges: HashMap<(String, String, String), (f64, f64)> = HashMap::new();
    for family in engine.families() {
        for sample in family.samples() {
            let label = |k: &str| {
                sample
                    .labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let key = (label("client"), label("server"), label("connection_type"));
            match sample.name.as_str() {
                "traces_service_graph_request_total" => {
                    edges.entry(key).or_default().0 = sample.value
                }
                "traces_service_graph_request_failed_total" => {
                    edges.entry(key).or_default().1 = sample.value
                }
                _ => {}
            }
        }
    }
    let edge = |c: &str, s: &str, t: &str| {
        edges
            .get(&(c.into(), s.into(), t.into()))
            .copied()
            .unwrap_or_default()
    };
    // 5 chains (failures in payments stop before the database and the event, a refused row
    // before the event) and /error; the failed consumer fails only its messaging edge.
    assert_eq!(edge("user", "frontend", "virtual_node"), (6.0, 4.0));
    assert_eq!(edge("frontend", "checkout", ""), (5.0, 3.0));
    assert_eq!(edge("checkout", "inventory", ""), (5.0, 0.0));
    assert_eq!(edge("checkout", "payments", ""), (5.0, 2.0));
    assert_eq!(
        edge("payments", "payment-gateway", "virtual_node"),
        (4.0, 1.0)
    );
    assert_eq!(edge("checkout", "postgres", "database"), (3.0, 1.0));
    assert_eq!(
        edge("checkout", "notifications", "messaging_system"),
        (2.0, 1.0)
    );
    assert_eq!(edges.len(), 7, "{edges:#?}");
}

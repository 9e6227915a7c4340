//! Order events from checkout to notifications, as over a message broker: a PRODUCER span on
//! the sending side, a CONSUMER span on the receiving side, the trace context carried in the
//! message's headers (not in the HTTP transport, which stands in for the broker).

use std::collections::HashMap;

use opentelemetry::global;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_opentelemetry_instrumentation_sdk::{find_context_from_tracing, otel_trace_span};

use crate::failure::FailTarget;

pub const EVENTS_PATH: &str = "/events";
pub const TOPIC: &str = "orders";

/// A message as the broker would carry it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub headers: HashMap<String, String>,
    pub payload: Value,
    /// The failure knob travels with the message.
    pub fail: Option<FailTarget>,
}

/// Publishes `payload` to the notifications service under a PRODUCER span.
pub async fn publish(
    http: &reqwest::Client,
    notifications_url: &str,
    payload: Value,
    fail: Option<FailTarget>,
) {
    let span = otel_trace_span!(
        "orders publish",
        otel.name = %format!("{TOPIC} publish"),
        otel.kind = ?opentelemetry::trace::SpanKind::Producer,
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.destination.name = TOPIC,
        messaging.operation.type = "send",
    );
    let mut headers = HashMap::new();
    global::get_text_map_propagator(|p| {
        p.inject_context(&find_context_from_tracing(&span), &mut headers)
    });
    let message = Message {
        headers,
        payload,
        fail,
    };
    async {
        let url = format!("{}{EVENTS_PATH}", notifications_url.trim_end_matches('/'));
        let sent = http.post(url).json(&message).send().await;
        if let Err(e) = sent.and_then(|r| r.error_for_status()) {
            tracing::Span::current().record("otel.status_code", "ERROR");
            tracing::warn!(error = %e, "order event not delivered");
        }
    }
    .instrument(span)
    .await
}

/// The CONSUMER span for a received message, continuing the producer's trace.
pub fn consumer_span(message: &Message) -> tracing::Span {
    let parent = global::get_text_map_propagator(|p| p.extract(&message.headers));
    let span = otel_trace_span!(
        "orders process",
        otel.name = %format!("{TOPIC} process"),
        otel.kind = ?opentelemetry::trace::SpanKind::Consumer,
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.destination.name = TOPIC,
        messaging.operation.type = "process",
    );
    let _ = span.set_parent(parent);
    span
}

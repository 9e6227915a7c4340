//! Order events from checkout to notifications over a real NATS server (`async-nats`): a
//! PRODUCER span on publish, the W3C trace context and the failure knob in the message's
//! headers, and on the other side a queue-group subscription (several notifications replicas
//! share the work) that handles each message under a CONSUMER span continuing that trace.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::HeaderMap;
use futures_util::StreamExt;
use opentelemetry::global;
use serde_json::Value;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_opentelemetry_instrumentation_sdk::{find_context_from_tracing, otel_trace_span};

use crate::failure::{FailTarget, FAIL_HEADER};

/// The subject order events are published on.
pub const SUBJECT: &str = "orders";
/// notifications replicas subscribe in this queue group: each message goes to one of them.
pub const QUEUE_GROUP: &str = "notifications";
/// How long a publish may wait for the server to confirm it has the message.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("NATS is not connected (state: {0})")]
    NotConnected(String),
    #[error("NATS publish failed: {0}")]
    Publish(String),
    #[error("NATS did not confirm the publish within {FLUSH_WITHIN:?}")]
    NotConfirmed,
}

/// A connection to NATS, and where it goes (`server.address`/`server.port` of the spans).
#[derive(Clone)]
pub struct Broker {
    client: async_nats::Client,
    address: String,
    port: u16,
}

impl Broker {
    /// Connects to `url`; when the server is not up yet the client keeps trying in the
    /// background (publishes fail visibly meanwhile) and reconnects after an outage.
    pub async fn connect(url: &str, name: &str) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await?;
        let (address, port) = server_of(url);
        Ok(Self {
            client,
            address,
            port,
        })
    }

    /// Publishes `payload` as an order event under a PRODUCER span, the failure knob with it.
    pub async fn publish(
        &self,
        payload: &Value,
        fail: Option<FailTarget>,
    ) -> Result<(), PublishError> {
        let span = otel_trace_span!(
            "orders publish",
            otel.name = %format!("publish {SUBJECT}"),
            otel.kind = ?opentelemetry::trace::SpanKind::Producer,
            otel.status_code = Empty,
            error.type = Empty,
            messaging.system = "nats",
            messaging.destination.name = SUBJECT,
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            server.address = %self.address,
            server.port = self.port as i64,
        );
        let mut headers = HashMap::new();
        global::get_text_map_propagator(|p| {
            p.inject_context(&find_context_from_tracing(&span), &mut headers)
        });
        if let Some(target) = fail {
            headers.insert(FAIL_HEADER.to_string(), target.name().to_string());
        }
        let mut nats_headers = HeaderMap::new();
        for (k, v) in &headers {
            nats_headers.insert(k.as_str(), v.as_str());
        }
        async {
            let sent = self.send(nats_headers, payload).await;
            if let Err(e) = &sent {
                let span = tracing::Span::current();
                span.record("otel.status_code", "ERROR");
                span.record("error.type", e.kind());
                crate::telemetry::record_exception("NatsError", &e.to_string());
                tracing::warn!(error = %e, "order event not published");
            }
            sent
        }
        .instrument(span)
        .await
    }

    async fn send(&self, headers: HeaderMap, payload: &Value) -> Result<(), PublishError> {
        let state = self.client.connection_state();
        if state != State::Connected {
            return Err(PublishError::NotConnected(state.to_string()));
        }
        let body = serde_json::to_vec(payload).unwrap_or_default();
        self.client
            .publish_with_headers(SUBJECT, headers, body.into())
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?;
        match tokio::time::timeout(FLUSH_WITHIN, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishError::Publish(e.to_string())),
            Err(_) => Err(PublishError::NotConfirmed),
        }
    }

    /// Handles every order event of the queue group with `handle`, each under a CONSUMER span
    /// whose parent comes from the message's headers, until the subscription ends.
    pub async fn consume<F, Fut>(&self, handle: F) -> Result<(), async_nats::SubscribeError>
    where
        F: Fn(Option<FailTarget>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let mut messages = self
            .client
            .queue_subscribe(SUBJECT, QUEUE_GROUP.to_string())
            .await?;
        let (address, port) = (self.address.clone(), self.port);
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let headers: HashMap<String, String> = message
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                    .collect();
                let span = consumer_span(&headers, &address, port);
                let fail = headers
                    .get(FAIL_HEADER)
                    .and_then(|name| FailTarget::parse(name));
                async {
                    if let Err(reason) = handle(fail).await {
                        let span = tracing::Span::current();
                        span.record("otel.status_code", "ERROR");
                        span.record("error.type", "processing_failed");
                        crate::telemetry::record_exception("ProcessingError", &reason);
                    }
                }
                .instrument(span)
                .await;
            }
        });
        Ok(())
    }
}

impl PublishError {
    /// `error.type` of the span.
    fn kind(&self) -> &'static str {
        match self {
            Self::NotConnected(_) => "not_connected",
            Self::Publish(_) => "publish_failed",
            Self::NotConfirmed => "timeout",
        }
    }
}

/// The CONSUMER span for a received message, continuing the producer's trace.
fn consumer_span(headers: &HashMap<String, String>, address: &str, port: u16) -> tracing::Span {
    let parent = global::get_text_map_propagator(|p| p.extract(headers));
    let span = otel_trace_span!(
        "orders process",
        otel.name = %format!("process {SUBJECT}"),
        otel.kind = ?opentelemetry::trace::SpanKind::Consumer,
        otel.status_code = Empty,
        error.type = Empty,
        messaging.system = "nats",
        messaging.destination.name = SUBJECT,
        messaging.consumer.group.name = QUEUE_GROUP,
        messaging.operation.type = "process",
        server.address = %address,
        server.port = port as i64,
    );
    let _ = span.set_parent(parent);
    span
}

/// Host and port of a `nats://host:port` URL (4222 when it has none).
fn server_of(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let rest = rest.split(['/', ',']).next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(4222)),
        None => (rest.to_string(), 4222),
    }
}

/// `host:port` of the NATS URL, for the landing page.
pub fn shown_address(url: &str) -> String {
    let (host, port) = server_of(url);
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_comes_from_the_url_without_credentials() {
        assert_eq!(server_of("nats://nats:4222"), ("nats".into(), 4222));
        assert_eq!(
            server_of("nats://user:pw@10.0.0.2:5222"),
            ("10.0.0.2".into(), 5222)
        );
        assert_eq!(server_of("nats://broker"), ("broker".into(), 4222));
        assert_eq!(shown_address("nats://a:b@x:1"), "x:1");
    }
}

//! Calls to other services: each is a CLIENT span with the HTTP semantic-convention attributes,
//! and the W3C `traceparent` of that span travels in the request headers.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::Value;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry_instrumentation_sdk::http::inject_context;
use tracing_opentelemetry_instrumentation_sdk::{find_context_from_tracing, otel_trace_span};

use crate::config::Peer;
use crate::error::AppError;
use crate::failure::{Fail, FAIL_HEADER};

/// One HTTP client for the process (connection pooling), with a sane timeout.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Self { http }
    }
}

impl Client {
    /// The plain client, for transports that carry their context themselves (messaging).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Calls `peer` at its URL + `path`, passing the failure knob along. A 5xx answer or a
    /// transport error becomes [`AppError::Downstream`] and marks the client span as failed.
    pub async fn call(
        &self,
        peer: Peer<'_>,
        method: Method,
        path: &str,
        fail: &Fail,
    ) -> Result<Value, AppError> {
        let service = peer.role.name();
        let url = format!("{}{}", peer.url.trim_end_matches('/'), path);
        let parsed = reqwest::Url::parse(&url).map_err(|e| AppError::Downstream {
            service: service.into(),
            reason: format!("bad url {url}: {e}"),
        })?;
        let span = otel_trace_span!(
            "HTTP client request",
            otel.name = %format!("{method} {path}"),
            otel.kind = ?opentelemetry::trace::SpanKind::Client,
            otel.status_code = Empty,
            http.request.method = %method,
            url.full = %url,
            server.address = parsed.host_str().unwrap_or(""),
            server.port = parsed.port_or_known_default().map(i64::from),
            http.response.status_code = Empty,
            error.type = Empty,
        );
        let mut headers = HeaderMap::new();
        inject_context(&find_context_from_tracing(&span), &mut headers);
        if let Some(target) = fail.target() {
            headers.insert(FAIL_HEADER, HeaderValue::from_static(target.name()));
        }
        let request = self.http.request(method, parsed).headers(headers);
        async {
            let response = request.send().await;
            let current = tracing::Span::current();
            let failed = |reason: String, error_type: &str| {
                current.record("otel.status_code", "ERROR");
                current.record("error.type", error_type);
                AppError::Downstream {
                    service: service.into(),
                    reason,
                }
            };
            let response = response.map_err(|e| failed(e.to_string(), "transport"))?;
            let status = response.status();
            current.record("http.response.status_code", i64::from(status.as_u16()));
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_server_error() {
                let reason = body["error"]
                    .as_str()
                    .map_or_else(|| status.to_string(), String::from);
                return Err(failed(reason, status.as_str()));
            }
            Ok(body)
        }
        .instrument(span)
        .await
    }
}

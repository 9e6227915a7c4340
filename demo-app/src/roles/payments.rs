//! payments: charges through `payment-gateway`, a third party that sends no spans. Its CLIENT
//! span carries `peer.service`, so the graph shows it as a virtual node.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry_instrumentation_sdk::otel_trace_span;

use super::{fail_if_targeted, Routes};
use crate::error::AppError;
use crate::failure::{Fail, FailTarget};
use crate::telemetry::trace_id;
use crate::{work, App, Role};

/// The uninstrumented gateway payments calls (a virtual node in the graph).
const GATEWAY: FailTarget = FailTarget::PaymentGateway;

pub fn routes() -> Routes {
    Routes::new().route("/charge", post(charge))
}

async fn charge(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Payments)?;
    let span = otel_trace_span!(
        "HTTP client request",
        otel.name = "POST /v1/charges",
        otel.kind = ?opentelemetry::trace::SpanKind::Client,
        otel.status_code = Empty,
        peer.service = GATEWAY.name(),
        http.request.method = "POST",
        server.address = "api.payment-gateway.example",
        url.full = "https://api.payment-gateway.example/v1/charges",
        http.response.status_code = Empty,
    );
    async {
        // The gateway is outside this demo: its latency and answer are simulated.
        work(&app, 40).await;
        let current = tracing::Span::current();
        if fail.hits(GATEWAY) {
            current.record("http.response.status_code", 503i64);
            current.record("otel.status_code", "ERROR");
            return Err(AppError::Downstream {
                service: GATEWAY.name().into(),
                reason: "gateway answered 503".into(),
            });
        }
        current.record("http.response.status_code", 201i64);
        Ok(())
    }
    .instrument(span)
    .await?;
    Ok(Json(
        json!({ "service": Role::Payments.name(), "charged": true, "trace_id": trace_id() }),
    ))
}

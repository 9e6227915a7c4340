//! How a scenario fails, and what the caller sees: a JSON body with the trace id, 500 for a
//! failure in this service, 502 when a service further down failed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::telemetry::trace_id;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// This service was told to fail (`?fail=<role>`) or failed on its own.
    #[error("{service} failed: {reason}")]
    Failed { service: String, reason: String },
    /// A call to another service failed or answered 5xx.
    #[error("call to {service} failed: {reason}")]
    Downstream { service: String, reason: String },
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Downstream { .. } => StatusCode::BAD_GATEWAY,
        };
        // An OpenTelemetry "exception" event on the current (server) span; the 5xx status
        // marks that span as failed.
        crate::telemetry::record_exception("AppError", &self.to_string());
        let body = json!({ "status": "error", "error": self.to_string(), "trace_id": trace_id() });
        (status, Json(body)).into_response()
    }
}

//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzipped.
//! Answers in the request's encoding; errors carry a `google.rpc.Status` with a message.
//! The body is read within the size limit and decompressed here; the intake decides the rest.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;

use crate::intake::{Body as OtlpBody, Intake, Refused, RETRY_AFTER};
use crate::receiver::admission::Admission;
use crate::selfmetrics::{Protocol, RequestOutcome};
use crate::tenants::{Tenant, TenantRefused, HEADER as TENANT_HEADER};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The body formats OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    Protobuf,
    Json,
}

pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(intake)
}

/// An error answer: HTTP status, gRPC code for the Status body, message. Whoever decides a
/// refusal counts it: the intake its own ([`Failure::refused`]), this receiver what it finds
/// wrong with a body ([`Failure::body`]).
struct Failure {
    status: StatusCode,
    code: tonic::Code,
    message: String,
    /// Sent as `Retry-After` (429 and 503 only).
    retry_after: Duration,
}

impl Failure {
    /// The answer to a request the intake refused (and counted).
    fn refused(refused: Refused) -> Self {
        let (status, code) = match &refused {
            Refused::Invalid(_) | Refused::Malformed(_) => {
                (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
            }
            Refused::QueueFull(_) | Refused::Busy(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
            ),
            Refused::QueueUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            }
            // 401 as dskit's `middleware.AuthenticateUser` answers a request without an org id.
            Refused::Tenant(TenantRefused::Missing) => {
                (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated)
            }
            Refused::Tenant(TenantRefused::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
            }
            Refused::Tenant(TenantRefused::TooMany { .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
            ),
        };
        Self {
            status,
            code,
            message: refused.to_string(),
            retry_after: refused.retry_after(),
        }
    }

    /// The answer to a body this receiver cannot take, counted here.
    fn body(intake: &Intake, error: BodyError) -> Self {
        let (status, code) = match &error {
            BodyError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                tonic::Code::ResourceExhausted,
            ),
            BodyError::Malformed(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            BodyError::Unsupported(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
            ),
        };
        intake
            .metrics()
            .count_request(Protocol::http, error.outcome());
        Self {
            status,
            code,
            message: error.to_string(),
            retry_after: RETRY_AFTER,
        }
    }

    fn into_response(self, encoding: Encoding) -> Response {
        let status = tonic_types::Status {
            code: self.code as i32,
            message: self.message,
            details: vec![],
        };
        let mut response = encode(
            encoding,
            self.status,
            &status,
            || serde_json::json!({ "code": status.code, "message": status.message }),
        );
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.as_secs()),
            );
        }
        response
    }
}

fn encode<M: Message>(
    encoding: Encoding,
    status: StatusCode,
    message: &M,
    json: impl FnOnce() -> serde_json::Value,
) -> Response {
    match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, PROTOBUF)],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => {
            (status, [(header::CONTENT_TYPE, JSON)], json().to_string()).into_response()
        }
    }
}

async fn export(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Media types are case-insensitive; parameters such as `; charset=utf-8` do not matter.
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match media_type.as_str() {
        PROTOBUF => Encoding::Protobuf,
        JSON => Encoding::Json,
        _ => {
            let error = BodyError::Unsupported(format!(
                "unsupported content type {content_type:?}: use {PROTOBUF} or {JSON}"
            ));
            return Failure::body(&intake, error).into_response(Encoding::Json);
        }
    };
    // Before the body is read: a body that can never fit is a 413 (never a 429, which would
    // be retried), then the in-flight budget, then the queue's room, from the announced size.
    let announced: Option<usize> = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if announced.is_some_and(|n| n > intake.max_message_bytes) {
        let error = BodyError::TooLarge(format!(
            "request body is larger than the limit of {} bytes",
            intake.max_message_bytes
        ));
        return Failure::body(&intake, error).into_response(encoding);
    }
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let compressed = !matches!(
        content_encoding.trim().to_ascii_lowercase().as_str(),
        "identity" | ""
    );
    let tenant = match intake.tenant(
        Protocol::http,
        headers.get(TENANT_HEADER).map(HeaderValue::as_bytes),
    ) {
        Ok(tenant) => tenant,
        Err(refused) => return Failure::refused(refused).into_response(encoding),
    };
    let mut admission = match intake.admit(Protocol::http, announced, compressed) {
        Ok(admission) => admission,
        Err(refused) => return Failure::refused(refused).into_response(encoding),
    };
    if let Some(refused) = intake.refuse_early(Protocol::http, announced) {
        return Failure::refused(refused).into_response(encoding);
    }
    match handle(
        &intake,
        &tenant,
        content_encoding,
        body,
        encoding,
        &mut admission,
    )
    .await
    {
        Ok(response) => response,
        Err(failure) => failure.into_response(encoding),
    }
}

async fn handle(
    intake: &Intake,
    tenant: &Tenant,
    content_encoding: &str,
    body: Body,
    encoding: Encoding,
    admission: &mut Admission,
) -> Result<Response, Failure> {
    let limit = intake.max_message_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // Over the limit, or cut short (shorter than its Content-Length, broken chunking).
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
        let error = if over_limit {
            BodyError::TooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            ))
        } else {
            BodyError::Malformed(format!("request body is incomplete: {e}"))
        };
        Failure::body(intake, error)
    })?;
    let bytes = decompress(bytes, content_encoding, limit).map_err(|e| Failure::body(intake, e))?;
    // The compressed body is gone; what is held from here on is this.
    admission.shrink_to(bytes.len());
    let body = match encoding {
        Encoding::Protobuf => OtlpBody::Protobuf(bytes),
        Encoding::Json => OtlpBody::Json(bytes),
    };
    let refused = match intake.accept(Protocol::http, tenant, body).await {
        Ok(accepted) => {
            let response = accepted.into_response();
            return Ok(encode(
                encoding,
                StatusCode::OK,
                &response,
                || match &response.partial_success {
                    Some(p) => serde_json::json!({
                        "partialSuccess": { "rejectedSpans": p.rejected_spans, "errorMessage": p.error_message }
                    }),
                    None => serde_json::json!({}),
                },
            ));
        }
        Err(refused) => refused,
    };
    Err(Failure::refused(refused))
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Unsupported(String),
}

impl BodyError {
    /// How a request with such a body is counted.
    fn outcome(&self) -> RequestOutcome {
        match self {
            BodyError::TooLarge(_) => RequestOutcome::too_large,
            BodyError::Malformed(_) => RequestOutcome::malformed,
            BodyError::Unsupported(_) => RequestOutcome::unsupported,
        }
    }
}

/// Decompresses (per `content_encoding`), never producing more than `limit` bytes.
pub fn decompress(bytes: Bytes, content_encoding: &str, limit: usize) -> Result<Bytes, BodyError> {
    match content_encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(bytes),
        "gzip" => gunzip(&bytes, limit).map_err(|e| match e {
            Gunzip::TooLarge => BodyError::TooLarge(format!(
                "decompressed body is larger than the limit of {limit} bytes"
            )),
            Gunzip::Corrupt(e) => BodyError::Malformed(format!("body is not valid gzip: {e}")),
        }),
        other => Err(BodyError::Unsupported(format!(
            "unsupported content encoding {other:?}: use gzip or none"
        ))),
    }
}

enum Gunzip {
    TooLarge,
    Corrupt(std::io::Error),
}

/// Decompresses at most `limit` bytes; a gzip bomb stops there.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes, Gunzip> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Gunzip::Corrupt)?;
    if out.len() > limit {
        return Err(Gunzip::TooLarge);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 100 << 10, "compresses well");
        assert!(matches!(gunzip(&bomb, 1 << 20), Err(Gunzip::TooLarge)));
        assert_eq!(gunzip(&gzip(b"hello"), 5).ok().unwrap().as_ref(), b"hello");
        assert!(matches!(gunzip(b"not gzip", 100), Err(Gunzip::Corrupt(_))));
    }
}

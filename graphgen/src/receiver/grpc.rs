//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on tonic.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Intake, Protocol, Refused, RETRY_AFTER};

struct OtlpTraceService {
    intake: Arc<Intake>,
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.intake.accept(Protocol::Grpc, request.into_inner()) {
            Ok(accepted) => Ok(Response::new(accepted.into_response())),
            Err(refused @ Refused::Invalid(_)) => {
                Err(Status::invalid_argument(refused.to_string()))
            }
            // RetryInfo makes RESOURCE_EXHAUSTED retryable for OTLP clients: back-pressure.
            Err(refused @ Refused::QueueFull { .. }) => Err(Status::with_error_details(
                Code::ResourceExhausted,
                refused.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )),
        }
    }
}

/// Tonic reports a too-large message as OUT_OF_RANGE and undecodable protobuf as INTERNAL;
/// OTLP clients retry the first and should not see the second. Rewrite them to
/// RESOURCE_EXHAUSTED (no RetryInfo: not retried) and INVALID_ARGUMENT.
fn otlp_status_codes(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let replacement = match Code::from_i32(code.unwrap_or(0)) {
        Code::OutOfRange if message.contains("too%20large") || message.contains("too large") => {
            Some(Code::ResourceExhausted)
        }
        Code::Internal
            if [
                "decode",
                "decompress",
                "Missing%20request",
                "Missing request",
                "protocol%20error",
                "protocol error",
            ]
            .iter()
            .any(|m| message.contains(m)) =>
        {
            Some(Code::InvalidArgument)
        }
        _ => None,
    };
    if let Some(code) = replacement {
        headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    }
    response
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = intake.max_message_bytes;
    let service = TraceServiceServer::new(OtlpTraceService { intake })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(otlp_status_codes))
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on tonic,
//! with a codec that hands over the request's bytes undecoded (see [`crate::codec`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::body::Body as GrpcBody;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::codec::{ReceiveCodec, TRACE_EXPORT_PATH, TRACE_SERVICE_NAME};
use crate::intake::{Body, Intake, Refused};
use crate::receiver::admission::Admission;
use crate::receiver::read_ahead::{self, ReadAhead};
use crate::selfmetrics::Protocol;
use crate::tenants::{TenantRef, TenantRefused, HEADER as TENANT_HEADER};

/// The answer to a refused request.
fn status_of(refused: Refused) -> Status {
    match refused {
        Refused::Invalid(m) | Refused::Malformed(m) => Status::invalid_argument(m),
        // RetryInfo makes RESOURCE_EXHAUSTED retryable for OTLP clients: back-pressure (and
        // a tenant past --max-tenants: tenants go idle and are forgotten).
        refused @ (Refused::QueueFull(_)
        | Refused::Busy(_)
        | Refused::Tenant(TenantRefused::TooMany { .. })) => Status::with_error_details(
            Code::ResourceExhausted,
            refused.to_string(),
            ErrorDetails::with_retry_info(Some(refused.retry_after())),
        ),
        refused @ Refused::QueueUnavailable(_) => Status::unavailable(refused.to_string()),
        // A missing tenant is UNAUTHENTICATED, as dskit's gRPC auth middleware answers;
        // not retried by OTLP clients.
        Refused::Tenant(e @ TenantRefused::Missing) => Status::unauthenticated(e.to_string()),
        Refused::Tenant(e @ TenantRefused::Invalid(_)) => Status::invalid_argument(e.to_string()),
    }
}

/// What a [`BytesTraceService`] does with a request's bytes.
pub trait Export: Clone + Send + Sync + 'static {
    /// Whose a request is, from its `x-scope-orgid` metadata.
    type Tenant: Clone + Send + Sync + 'static;

    /// The request's tenant (`header`: its `x-scope-orgid`, if any), or a refusal; decided
    /// before the request is read.
    fn tenant(&self, header: Option<&[u8]>) -> Result<Self::Tenant, Status>;

    /// Lets the request in before it is read (its room held until it is answered), or refuses.
    fn admit(&self, _compressed: bool) -> Result<Option<Admission>, Status> {
        Ok(None)
    }

    /// A refusal decided before the request is read, if any.
    fn refuse_early(&self) -> Option<Status> {
        None
    }

    fn export(
        &self,
        tenant: Self::Tenant,
        request: Bytes,
    ) -> impl std::future::Future<Output = Result<ExportTraceServiceResponse, Status>> + Send;
}

impl Export for Arc<Intake> {
    type Tenant = TenantRef;

    fn tenant(&self, header: Option<&[u8]>) -> Result<TenantRef, Status> {
        self.as_ref()
            .tenant(Protocol::grpc, header)
            .map_err(status_of)
    }

    fn admit(&self, compressed: bool) -> Result<Option<Admission>, Status> {
        self.as_ref()
            .admit(Protocol::grpc, None, compressed)
            .map(Some)
            .map_err(status_of)
    }

    fn refuse_early(&self) -> Option<Status> {
        self.as_ref()
            .refuse_early(Protocol::grpc, None)
            .map(status_of)
    }

    async fn export(
        &self,
        tenant: TenantRef,
        request: Bytes,
    ) -> Result<ExportTraceServiceResponse, Status> {
        self.accept(Protocol::grpc, &tenant, Body::Protobuf(request))
            .await
            .map(|accepted| accepted.into_response())
            .map_err(status_of)
    }
}

/// A request's admission, reachable from the export method (request extensions must be
/// `Clone`); dropped with the request.
#[derive(Clone)]
struct Held(Arc<std::sync::Mutex<Option<Admission>>>);

/// The request's tenant, resolved from its metadata before the body was read.
#[derive(Clone)]
struct Resolved<T>(T);

/// The export method as tonic's unary service.
struct Method<E>(E);

impl<E: Export> UnaryService<Bytes> for Method<E> {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let export = self.0.clone();
        // The body is read: the admission keeps only what the request really holds.
        if let Some(held) = request.extensions().get::<Held>() {
            if let Some(admission) = held.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                admission.shrink_to(request.get_ref().len());
            }
        }
        let Some(Resolved(tenant)) = request.extensions().get::<Resolved<E::Tenant>>().cloned()
        else {
            return Box::pin(async { Err(Status::internal("request without its tenant")) });
        };
        Box::pin(async move {
            export
                .export(tenant, request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

/// The OTLP trace service, as tonic's generated server would be, but handing each request's
/// bytes (decompressed, within `max_message_bytes`) to `E` undecoded (see [`ReceiveCodec`]).
#[derive(Clone)]
pub struct BytesTraceService<E> {
    export: E,
    max_message_bytes: usize,
}

impl<E> BytesTraceService<E> {
    pub fn new(export: E, max_message_bytes: usize) -> Self {
        Self {
            export,
            max_message_bytes,
        }
    }
}

impl<E> NamedService for BytesTraceService<E> {
    const NAME: &'static str = TRACE_SERVICE_NAME;
}

impl<E, B> Service<http::Request<B>> for BytesTraceService<E>
where
    E: Export,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let export = self.export.clone();
        let max = self.max_message_bytes;
        Box::pin(async move {
            if request.uri().path() != TRACE_EXPORT_PATH {
                return Ok(Status::unimplemented("only TraceService/Export is served").into_http());
            }
            // Before the body is read or decompressed: the tenant, the in-flight budget, then a
            // full queue.
            let tenant = match export.tenant(
                request
                    .headers()
                    .get(TENANT_HEADER)
                    .map(http::HeaderValue::as_bytes),
            ) {
                Ok(tenant) => Resolved(tenant),
                Err(status) => return Ok(status.into_http()),
            };
            let compressed = request
                .headers()
                .get("grpc-encoding")
                .is_some_and(|v| v.as_bytes() != b"identity");
            let held = match export.admit(compressed) {
                Ok(admission) => Held(Arc::new(std::sync::Mutex::new(admission))),
                Err(status) => return Ok(status.into_http()),
            };
            if let Some(status) = export.refuse_early() {
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(held.clone());
            request.extensions_mut().insert(tenant);
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(ReceiveCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(otlp_status_codes(grpc.unary(Method(export), request).await))
        })
    }
}

/// Tonic answers a message over the size limit with OUT_OF_RANGE and one it cannot read (bad
/// gzip, a truncated frame, no message at all) with INTERNAL. No [`Export`] answers either code
/// (see [`status_of`]), so both can only come from reading the request, and are rewritten by
/// code alone, never by message text: RESOURCE_EXHAUSTED (no RetryInfo, so OTLP clients do not
/// retry it) and INVALID_ARGUMENT, as OTLP asks.
fn otlp_status_codes(mut response: http::Response<GrpcBody>) -> http::Response<GrpcBody> {
    let headers = response.headers_mut();
    let code = headers
        .get(Status::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()));
    let replacement = match code {
        Some(Code::OutOfRange) => Code::ResourceExhausted,
        Some(Code::Internal) => Code::InvalidArgument,
        _ => return response,
    };
    headers.insert(
        Status::GRPC_STATUS,
        http::HeaderValue::from(replacement as i32),
    );
    response
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = intake.max_message_bytes;
    let service = BytesTraceService::new(intake, max);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener).map(|accepted| {
                accepted.map(|stream| ReadAhead::new(stream, read_ahead::GULP_BYTES))
            }),
            shutdown,
        )
        .await
}

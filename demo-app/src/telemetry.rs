//! Tracing and OpenTelemetry set-up. Spans are `tracing` spans, exported over OTLP by the
//! OpenTelemetry SDK; the standard `OTEL_*` variables are honoured by the SDK and the exporter
//! (endpoint, headers, timeout, sampler, batch settings, resource attributes) and here
//! (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SDK_DISABLED`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider; [`Telemetry::shutdown`] flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported: use grpc or http/protobuf")]
    Protocol(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The resource: `service.name` from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` if set,
/// else the role.
pub fn resource(default_service: &str) -> Resource {
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    // The builder's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let builder = Resource::builder();
    if named_by_env {
        builder.build()
    } else {
        builder
            .with_service_name(default_service.to_string())
            .build()
    }
}

/// The exporter `OTEL_EXPORTER_OTLP_PROTOCOL` asks for (default gRPC).
pub fn exporter() -> Result<SpanExporter, TelemetryError> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "grpc".into());
    let exporter = match protocol.as_str() {
        "grpc" => SpanExporter::builder().with_tonic().build()?,
        "http/protobuf" => SpanExporter::builder().with_http().build()?,
        other => return Err(TelemetryError::Protocol(other.into())),
    };
    Ok(exporter)
}

/// Installs the global subscriber: logs to stderr (`RUST_LOG`), spans to OTLP unless
/// `OTEL_SDK_DISABLED=true`.
pub fn init(default_service: &str) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let provider = if disabled {
        None
    } else {
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource(default_service))
                .with_batch_exporter(exporter()?)
                .build(),
        )
    };
    install(provider.as_ref(), None)?;
    Ok(Telemetry { provider })
}

/// Installs the subscriber with spans going to `provider` (tests pass their own). Logs follow
/// `log_filter`, else `RUST_LOG`, else `info`.
pub fn install(
    provider: Option<&SdkTracerProvider>,
    log_filter: Option<&str>,
) -> Result<(), TelemetryError> {
    let filter = match log_filter {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or `docker logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let spans = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("demo-app"))
            .with_error_events_to_exceptions(true)
            .with_error_events_to_status(true)
            // Our spans and the HTTP layer's are INFO; library internals stay out of traces.
            .with_filter(EnvFilter::new(
                "info,h2=off,hyper=off,tonic=off,tower=off,reqwest=off",
            ))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(())
}

impl Telemetry {
    /// Flushes buffered spans; call before exiting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing spans failed: {e}");
            }
        }
    }
}

/// The current trace id (hex), for answers and logs.
pub fn trace_id() -> String {
    tracing_opentelemetry_instrumentation_sdk::find_current_trace_id().unwrap_or_default()
}

/// Marks the current span as failed with an OpenTelemetry `exception` event, and logs it.
pub fn record_exception(kind: &str, message: &str) {
    use opentelemetry::KeyValue;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::Span::current();
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", kind.to_string()),
            KeyValue::new("exception.message", message.to_string()),
        ],
    );
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
    tracing::warn!(exception.type = kind, "{message}");
}

//! graphgen's own metrics (`graphgen_*`): what came in, what was refused, what the queue and
//! the exporters are doing. Exposed on the admin `/metrics` next to the engine's series.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label pairs; values are fixed words, so they are `'static`.
pub type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug, Default)]
pub struct SelfMetrics {
    /// Requests by `protocol` and `outcome` (accepted, partial, invalid, too_large, unsupported, queue_full).
    pub requests: Family<Labels, Counter>,
    /// Spans accepted, by `protocol`.
    pub spans_received: Family<Labels, Counter>,
    /// Spans refused, by `protocol` and `reason` (invalid, queue_full).
    pub spans_refused: Family<Labels, Counter>,
    /// Spans waiting to be forwarded, and how many may wait.
    pub queue_spans: Gauge,
    pub queue_capacity_spans: Gauge,
    /// Export requests to the traces endpoint by `outcome` (success, failure).
    pub export_requests: Family<Labels, Counter>,
    pub export_retries: Counter,
    pub export_sent_spans: Counter,
    /// Spans given up on, by `reason` (non_retryable, retries_exhausted, rejected_by_backend, shutdown).
    pub export_dropped_spans: Family<Labels, Counter>,
    /// OTLP metric pushes by `outcome`.
    pub metrics_pushes: Family<Labels, Counter>,
}

impl SelfMetrics {
    /// Registers every metric under `graphgen_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("graphgen");
        r.register(
            "receiver_requests",
            "OTLP export requests received, by protocol and outcome",
            self.requests.clone(),
        );
        r.register(
            "receiver_spans_received",
            "Spans accepted, by protocol",
            self.spans_received.clone(),
        );
        r.register(
            "receiver_spans_refused",
            "Spans refused, by protocol and reason",
            self.spans_refused.clone(),
        );
        r.register(
            "queue_spans",
            "Spans waiting to be forwarded to the traces endpoint",
            self.queue_spans.clone(),
        );
        r.register(
            "queue_capacity_spans",
            "Most spans that may wait to be forwarded",
            self.queue_capacity_spans.clone(),
        );
        r.register(
            "exporter_requests",
            "Export requests sent to the traces endpoint, by outcome",
            self.export_requests.clone(),
        );
        r.register(
            "exporter_retries",
            "Export attempts that were retried",
            self.export_retries.clone(),
        );
        r.register(
            "exporter_sent_spans",
            "Spans the traces endpoint accepted",
            self.export_sent_spans.clone(),
        );
        r.register(
            "exporter_dropped_spans",
            "Spans given up on, by reason",
            self.export_dropped_spans.clone(),
        );
        r.register(
            "metrics_pushes",
            "OTLP metric pushes to the metrics endpoint, by outcome",
            self.metrics_pushes.clone(),
        );
    }
}

//! graphgen's own metrics (`graphgen_*`): what came in, what was refused, what the queue and
//! the exporters are doing. Exposed on the admin `/metrics` next to the engine's series.
//! Outcomes and reasons are enums; their label values are derived, never typed as strings.
//! The engine's own counters (edges, store, series) are read at scrape time by
//! [`crate::admin::engine_metrics`].

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `ALL`: every value of a label enum, so each label set can exist (at 0) from the start and
/// `increase()` sees the first event. The `match` makes the compiler point here when a value is
/// added to an enum.
macro_rules! every_value {
    ($($ty:ident: [$($v:ident),* $(,)?]);* $(;)?) => {
        $(
            impl $ty {
                pub const ALL: &'static [Self] = &[$(Self::$v),*];
            }
            const _: fn($ty) = |value| match value { $($ty::$v => ()),* };
        )*
    };
}

every_value! {
    Protocol: [grpc, http];
    RequestOutcome: [accepted, partial, invalid, malformed, too_large, unsupported, queue_full, queue_unavailable, busy, tenant_missing, tenant_invalid, tenant_limit];
    RefuseReason: [invalid, queue_full, queue_unavailable];
    DropReason: [non_retryable, retries_exhausted, rejected_by_backend, shutdown, unreadable];
    QueueWriteOp: [segment_start, append, ack, fsync, remove];
    ExportOutcome: [success, failure];
    FailureSide: [server, transport];
    PushOutcome: [success, failure];
    RemoteWriteOutcome: [sent, rejected, expired];
    RemoteWriteRetry: [throttled, server_error, transport];
    ProstDecodeReason: [malformed, duplicate_field, not_canonical, too_deep];
    PeerOutcome: [answered, unresolved, no_answer, bad_answer, unmergeable, same_instance_id, too_many_addresses];
}

/// The OTLP transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    grpc,
    http,
}

/// How a received request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestOutcome {
    accepted,
    /// Accepted without its invalid spans.
    partial,
    invalid,
    malformed,
    too_large,
    unsupported,
    queue_full,
    /// The persistent queue could not be written.
    queue_unavailable,
    /// Refused before reading: too many requests or bytes in flight.
    busy,
    /// No `X-Scope-OrgID` with `--require-tenant`.
    tenant_missing,
    /// An `X-Scope-OrgID` that is not a valid tenant id.
    tenant_invalid,
    /// A new tenant while `--max-tenants` tenants have engines.
    tenant_limit,
}

/// Why spans of a request were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefuseReason {
    invalid,
    queue_full,
    queue_unavailable,
}

/// Why a protobuf request was decoded by prost instead of read in place (the borrowed reader's
/// [`crate::wire::Fallback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ProstDecodeReason {
    malformed,
    duplicate_field,
    not_canonical,
    too_deep,
}

impl From<crate::wire::Fallback> for ProstDecodeReason {
    fn from(fallback: crate::wire::Fallback) -> Self {
        use crate::wire::Fallback;
        match fallback {
            Fallback::Malformed => Self::malformed,
            Fallback::DuplicateField => Self::duplicate_field,
            Fallback::NotCanonical => Self::not_canonical,
            Fallback::TooDeep => Self::too_deep,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProstDecodeLabels {
    pub reason: ProstDecodeReason,
}

/// Why accepted spans were given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// The traces endpoint refused them for good (a non-retryable status).
    non_retryable,
    /// Still failing after `--retry-max-elapsed`.
    retries_exhausted,
    /// The endpoint's partial success named them.
    rejected_by_backend,
    /// Shutdown came before they could be sent (in-memory queue only).
    shutdown,
    /// A queued request could not be read back from disk.
    unreadable,
}

/// A write step of the persistent queue (`graphgen_queue_write_errors_total{op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum QueueWriteOp {
    /// Creating a segment file and writing its header.
    segment_start,
    /// Writing a record.
    append,
    /// Writing an acknowledgement entry.
    ack,
    /// fsync of a segment or of the directory.
    fsync,
    /// Deleting a finished segment.
    remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ExportOutcome {
    success,
    failure,
}

/// Where an export failure happened (see `export::retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FailureSide {
    server,
    transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PushOutcome {
    success,
    failure,
}

/// How a remote-write request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RemoteWriteOutcome {
    /// The endpoint accepted it (2xx).
    sent,
    /// A 4xx other than 429: the endpoint will never take it, so it is not retried.
    rejected,
    /// Still failing (5xx, 429, transport) when the retry budget ran out.
    expired,
}

/// Why a remote-write attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RemoteWriteRetry {
    /// 429 Too Many Requests.
    throttled,
    /// 5xx.
    server_error,
    /// No answer: connection refused or reset, timeout.
    transport,
}

/// How a peer replica answered the service map's request for its part (`--peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PeerOutcome {
    /// Its part is in the fleet's map.
    answered,
    /// Missing from the map (`servicemap::fleet::Missing` says what each means).
    unresolved,
    no_answer,
    bad_answer,
    unmergeable,
    same_instance_id,
    too_many_addresses,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    pub outcome: PeerOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RemoteWriteLabels {
    pub outcome: RemoteWriteOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RemoteWriteRetryLabels {
    pub reason: RemoteWriteRetry,
}

/// The remote-write exporter (`export::remote_write`).
#[derive(Debug, Default)]
pub struct RemoteWriteMetrics {
    /// Requests by how they ended.
    pub requests: Family<RemoteWriteLabels, Counter>,
    /// Samples and native-histogram samples by how their request ended.
    pub samples: Family<RemoteWriteLabels, Counter>,
    /// Attempts retried, by reason.
    pub retries: Family<RemoteWriteRetryLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: Protocol,
    pub outcome: RequestOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusedLabels {
    pub protocol: Protocol,
    pub reason: RefuseReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct QueueWriteLabels {
    pub op: QueueWriteOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ExportLabels {
    pub outcome: ExportOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    pub side: FailureSide,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PushLabels {
    pub outcome: PushOutcome,
}

/// Requests being read and handled (`receiver::admission`).
#[derive(Debug, Default)]
pub struct InflightMetrics {
    pub requests: Gauge,
    pub bytes: Gauge,
    pub capacity_bytes: Gauge,
}

/// The forwarding queue.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    pub spans: Gauge,
    pub bytes: Gauge,
    pub capacity_spans: Gauge,
    pub capacity_bytes: Gauge,
    /// Segment files of the persistent queue.
    pub segments: Gauge,
    /// Spans found in the queue directory at start.
    pub recovered_spans: Counter,
    /// Spans sent again after a restart that had been sent before it (possible duplicates).
    pub resent_spans: Counter,
    pub corrupt_segments: Counter,
    pub unreadable_bytes: Counter,
    /// Failed writes of the persistent queue, by step.
    pub write_errors: Family<QueueWriteLabels, Counter>,
    /// 1 while the persistent queue can take requests (0 while its writes fail).
    pub writable: Gauge,
}

#[derive(Debug, Default)]
pub struct SelfMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub spans_received: Family<ProtocolLabels, Counter>,
    pub spans_refused: Family<RefusedLabels, Counter>,
    pub prost_decodes: Family<ProstDecodeLabels, Counter>,
    pub receiver_inflight: InflightMetrics,
    pub queue: QueueMetrics,
    pub export_requests: Family<ExportLabels, Counter>,
    pub export_failures: Family<FailureLabels, Counter>,
    pub export_retries: Counter,
    pub export_sent_spans: Counter,
    pub export_dropped_spans: Family<DropLabels, Counter>,
    pub metrics_pushes: Family<PushLabels, Counter>,
    pub metrics_push_requests: Family<PushLabels, Counter>,
    pub remote_write: RemoteWriteMetrics,
    pub service_map: ServiceMapMetrics,
    pub overrides: OverridesMetrics,
}

/// The per-tenant overrides file (`--per-tenant-override-config`).
#[derive(Debug, Default)]
pub struct OverridesMetrics {
    /// Changed files applied.
    pub reloads: Counter,
    /// Files (or reads) refused; the overrides in force stayed.
    pub refused: Counter,
}

/// What the service map's history holds (`/graph`).
#[derive(Debug, Default)]
pub struct ServiceMapMetrics {
    pub snapshots: Gauge,
    pub snapshot_series: Gauge,
    pub omitted_edges: Gauge,
    /// Peers asked for their part, by how they answered.
    pub peer_queries: Family<PeerLabels, Counter>,
}

impl SelfMetrics {
    pub fn count_request(&self, protocol: Protocol, outcome: RequestOutcome) {
        self.requests
            .get_or_create(&RequestLabels { protocol, outcome })
            .inc();
    }

    /// A protobuf request prost decoded because the borrowed reader left it to prost.
    pub fn count_fallback(&self, fallback: crate::wire::Fallback) {
        self.prost_decodes
            .get_or_create(&ProstDecodeLabels {
                reason: fallback.into(),
            })
            .inc();
    }

    pub fn count_refused(&self, protocol: Protocol, reason: RefuseReason, spans: usize) {
        if spans > 0 {
            self.spans_refused
                .get_or_create(&RefusedLabels { protocol, reason })
                .inc_by(spans as u64);
        }
    }

    pub fn count_dropped(&self, reason: DropReason, spans: usize) {
        if spans > 0 {
            tracing::error!(
                spans,
                ?reason,
                "spans dropped, not forwarded to the traces endpoint"
            );
            self.export_dropped_spans
                .get_or_create(&DropLabels { reason })
                .inc_by(spans as u64);
        }
    }

    /// Creates every label set of every counter at 0, so a series exists before its first
    /// event: `increase()` counts that event, and "none dropped" is a 0, not a missing series.
    pub fn create_label_sets(&self) {
        for &protocol in Protocol::ALL {
            let _ = self
                .spans_received
                .get_or_create(&ProtocolLabels { protocol });
            for &outcome in RequestOutcome::ALL {
                let _ = self
                    .requests
                    .get_or_create(&RequestLabels { protocol, outcome });
            }
            for &reason in RefuseReason::ALL {
                let _ = self
                    .spans_refused
                    .get_or_create(&RefusedLabels { protocol, reason });
            }
        }
        for &reason in ProstDecodeReason::ALL {
            let _ = self
                .prost_decodes
                .get_or_create(&ProstDecodeLabels { reason });
        }
        for &reason in DropReason::ALL {
            let _ = self
                .export_dropped_spans
                .get_or_create(&DropLabels { reason });
        }
        for &op in QueueWriteOp::ALL {
            let _ = self
                .queue
                .write_errors
                .get_or_create(&QueueWriteLabels { op });
        }
        for &outcome in ExportOutcome::ALL {
            let _ = self
                .export_requests
                .get_or_create(&ExportLabels { outcome });
        }
        for &side in FailureSide::ALL {
            let _ = self.export_failures.get_or_create(&FailureLabels { side });
        }
        for &outcome in PushOutcome::ALL {
            let _ = self.metrics_pushes.get_or_create(&PushLabels { outcome });
            let _ = self
                .metrics_push_requests
                .get_or_create(&PushLabels { outcome });
        }
        let rw = &self.remote_write;
        for &outcome in RemoteWriteOutcome::ALL {
            let _ = rw.requests.get_or_create(&RemoteWriteLabels { outcome });
            let _ = rw.samples.get_or_create(&RemoteWriteLabels { outcome });
        }
        for &reason in RemoteWriteRetry::ALL {
            let _ = rw.retries.get_or_create(&RemoteWriteRetryLabels { reason });
        }
        for &outcome in PeerOutcome::ALL {
            let _ = self
                .service_map
                .peer_queries
                .get_or_create(&PeerLabels { outcome });
        }
    }

    /// Registers every metric under `graphgen_`, every label set from 0.
    pub fn register(&self, registry: &mut Registry) {
        self.create_label_sets();
        let r = registry.sub_registry_with_prefix("graphgen");
        r.register(
            "receiver_requests",
            "OTLP export requests received, by protocol and outcome",
            self.requests.clone(),
        );
        r.register(
            "overrides_reloads",
            "Changes of the per-tenant overrides file applied without a restart",
            self.overrides.reloads.clone(),
        );
        r.register(
            "overrides_refused",
            "Reads of the per-tenant overrides file refused (unreadable or invalid); the overrides in force stayed",
            self.overrides.refused.clone(),
        );
        r.register(
            "receiver_prost_decodes",
            "Protobuf requests decoded by prost instead of read in place by the borrowed reader, by why (malformed ones are then refused by prost)",
            self.prost_decodes.clone(),
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
        let i = &self.receiver_inflight;
        r.register(
            "receiver_inflight_requests",
            "Requests being read and handled",
            i.requests.clone(),
        );
        r.register(
            "receiver_inflight_bytes",
            "Bytes reserved by requests being read and handled",
            i.bytes.clone(),
        );
        r.register(
            "receiver_inflight_capacity_bytes",
            "Most bytes requests being read and handled may reserve (--max-inflight-bytes)",
            i.capacity_bytes.clone(),
        );
        let q = &self.queue;
        r.register(
            "queue_spans",
            "Spans waiting to be forwarded to the traces endpoint or being sent",
            q.spans.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes of requests waiting to be forwarded or being sent",
            q.bytes.clone(),
        );
        r.register(
            "queue_capacity_spans",
            "Most spans that may wait to be forwarded",
            q.capacity_spans.clone(),
        );
        r.register(
            "queue_capacity_bytes",
            "Most bytes that may wait to be forwarded",
            q.capacity_bytes.clone(),
        );
        r.register(
            "queue_segments",
            "Segment files of the persistent queue",
            q.segments.clone(),
        );
        r.register(
            "queue_recovered_spans",
            "Spans found in the queue directory at start, to be sent again",
            q.recovered_spans.clone(),
        );
        r.register(
            "queue_resent_spans",
            "Spans sent again after a restart that had been sent before it (possible duplicates)",
            q.resent_spans.clone(),
        );
        r.register(
            "queue_corrupt_segments",
            "Queue segment files that could not be read at start (bad header or read error), renamed *.corrupt",
            q.corrupt_segments.clone(),
        );
        r.register(
            "queue_unreadable_bytes",
            "Bytes of queue segments after a bad checksum or a truncated record, cut off at start",
            q.unreadable_bytes.clone(),
        );
        r.register(
            "queue_write_errors",
            "Failed writes of the persistent queue, by step (segment_start, append, ack, fsync, remove)",
            q.write_errors.clone(),
        );
        r.register(
            "queue_writable",
            "1 while the persistent queue can take requests, 0 while its writes fail",
            q.writable.clone(),
        );
        r.register(
            "exporter_requests",
            "Export requests sent to the traces endpoint, by outcome",
            self.export_requests.clone(),
        );
        r.register(
            "exporter_failures",
            "Failed export attempts, by side: the server's answer or the transport",
            self.export_failures.clone(),
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
            "OTLP metric pushes to the metrics endpoint, by outcome (failed if any part failed)",
            self.metrics_pushes.clone(),
        );
        let m = &self.service_map;
        r.register(
            "service_map_snapshots",
            "Snapshots of the edges' counters the service map keeps for its windows",
            m.snapshots.clone(),
        );
        r.register(
            "service_map_snapshot_series",
            "Series entries over all service-map snapshots (bounded by snapshots × --service-map-max-series)",
            m.snapshot_series.clone(),
        );
        r.register(
            "service_map_omitted_edges",
            "Edges left off the service map because --service-map-max-series series of busier ones were kept",
            m.omitted_edges.clone(),
        );
        r.register(
            "service_map_peer_queries",
            "Peer replicas asked for their part of the fleet's service map (--peers), by outcome: answered, or why it is missing from the map",
            m.peer_queries.clone(),
        );
        let rw = &self.remote_write;
        r.register(
            "remote_write_requests",
            "Remote-write requests by how they ended: sent, rejected (4xx, not retried) or expired (retry budget spent)",
            rw.requests.clone(),
        );
        r.register(
            "remote_write_samples",
            "Samples (native histograms included) of remote-write requests, by how their request ended",
            rw.samples.clone(),
        );
        r.register(
            "remote_write_retries",
            "Remote-write attempts retried, by reason: throttled (429), server_error (5xx), transport",
            rw.retries.clone(),
        );
        r.register(
            "metrics_push_requests",
            "HTTP requests of OTLP metric pushes (a push is split into parts), by outcome",
            self.metrics_push_requests.clone(),
        );
    }
}

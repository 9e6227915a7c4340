//! graphgen's configuration, one source of truth: every option is a flag, an environment
//! variable and a key of the `--config` TOML file. Flags and variables win over the file, the
//! file over the defaults. Defaults are given in each option's help.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::filter::FilterPolicy;
use crate::native_histogram::{self, HistogramMode, NativeConfig};
use crate::processors::GraphMetrics;
use crate::queue::disk::Fsync;
use crate::queue::Storage;
use crate::series::RegistryLimits;
use crate::tenants::{TenantId, TenantSettings};
use crate::{graph, hostinfo, spanmetrics};

/// `or`: every option the command line left unset, taken from the file.
macro_rules! or_from_file {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $ty {
            fn or(self, file: Self) -> Self {
                Self { $($field: self.$field.or(file.$field)),* }
            }
        }
    };
}

/// Every option, unset unless given. The same struct reads flags/env (clap) and the file (serde).
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(
    name = "graphgen",
    version,
    about = "Receives OTLP traces, builds Tempo-compatible service-graph and span metrics, \
             forwards the spans to Tempo and the metrics to Prometheus."
)]
// Unknown keys are refused by `read_file` (serde cannot with flattened groups).
#[serde(default)]
pub struct Options {
    /// TOML file with any of the options below (keys in snake_case); flags and env override it.
    #[arg(long, env = "GRAPHGEN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub listen: ListenOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub traces: TracesOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub metrics: MetricsOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub graph: GraphOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub registry: RegistryOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub span_metrics_options: SpanMetricsOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub host_info_options: HostInfoOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub tenant_options: TenantOptions,
}

/// Where graphgen listens, and its service map.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Listening")]
#[serde(default)]
pub struct ListenOptions {
    /// OTLP/gRPC listen address [default: 0.0.0.0:4317]
    #[arg(long, env = "GRAPHGEN_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address (POST /v1/traces) [default: 0.0.0.0:4318]
    #[arg(long, env = "GRAPHGEN_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Admin listen address: /metrics, /healthz, /readyz, the service map /graph [default: 0.0.0.0:9464]
    #[arg(long, env = "GRAPHGEN_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Grafana's base URL, e.g. http://localhost:3000: the service map links trace ids to Explore [default: none, no links]
    #[arg(long, env = "GRAPHGEN_GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// Most series the service map keeps in each of its snapshots, the busiest edges first; its memory is bounded by this [default: 2000]
    #[arg(long, env = "GRAPHGEN_SERVICE_MAP_MAX_SERIES")]
    pub service_map_max_series: Option<usize>,
    /// The other replicas' admin addresses, comma-separated host:port, each name resolved to all its addresses at every query (a Compose service, a Kubernetes headless Service): /graph and /api/graph then show the whole fleet [default: none, this replica only]
    #[arg(long, env = "GRAPHGEN_PEERS", value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// How long the service map waits for the peers' names to resolve, then for their answers, before showing a peer as missing [default: 2s]
    #[arg(long, env = "GRAPHGEN_PEER_TIMEOUT")]
    pub peer_timeout: Option<HumanDuration>,
}

or_from_file!(ListenOptions {
    otlp_grpc_addr,
    otlp_http_addr,
    admin_addr,
    grafana_url,
    service_map_max_series,
    peers,
    peer_timeout
});

/// Spans in and out: the intake limits, the forwarding queue and the exporter to the traces endpoint.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Spans in and out")]
#[serde(default)]
pub struct TracesOptions {
    /// OTLP/gRPC endpoint that receives every span, e.g. http://tempo:4317 [default: none, no forwarding]
    #[arg(long, env = "GRAPHGEN_TRACES_ENDPOINT")]
    pub traces_endpoint: Option<String>,
    /// Spans that may wait to be forwarded; when full, clients are told to retry later [default: 50000]
    #[arg(long, env = "GRAPHGEN_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Bytes of requests that may wait to be forwarded; when full, clients are told to retry later [default: 67108864]
    #[arg(long, env = "GRAPHGEN_QUEUE_MAX_BYTES")]
    pub queue_max_bytes: Option<usize>,
    /// Keep the forwarding queue in this directory: accepted spans survive a crash or restart and are sent after it [default: none, in memory]
    #[arg(long, env = "GRAPHGEN_QUEUE_DIR")]
    pub queue_dir: Option<PathBuf>,
    /// When the on-disk queue is flushed to the device: always (before OK, survives power loss), periodic (every second), never (survives a process crash only) [default: periodic]
    #[arg(long, env = "GRAPHGEN_QUEUE_FSYNC", value_enum)]
    pub queue_fsync: Option<Fsync>,
    /// Export requests in flight to the traces endpoint at once [default: 4]
    #[arg(long, env = "GRAPHGEN_EXPORT_CONCURRENCY")]
    pub export_concurrency: Option<usize>,
    /// Largest request accepted, in bytes, also after decompression [default: 4194304]
    #[arg(long, env = "GRAPHGEN_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Memory that requests being read and handled may hold, reserved before a body is read (its announced size, or the largest allowed; twice that if compressed); past it clients are told to retry later [default: 134217728]
    #[arg(long, env = "GRAPHGEN_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// Requests read and handled at once; past it clients are told to retry later [default: 256]
    #[arg(long, env = "GRAPHGEN_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Most spans sent to the traces endpoint in one request [default: 8192]
    #[arg(long, env = "GRAPHGEN_EXPORT_BATCH_SPANS")]
    pub export_batch_spans: Option<usize>,
    /// First retry delay of a failed export; grows 1.5× (±50 % jitter) up to 30s [default: 500ms]
    #[arg(long, env = "GRAPHGEN_RETRY_INITIAL_BACKOFF")]
    pub retry_initial_backoff: Option<HumanDuration>,
    /// Give up on a batch (and count its spans as dropped) after retrying this long; 0s retries forever [default: 5m]
    #[arg(long, env = "GRAPHGEN_RETRY_MAX_ELAPSED")]
    pub retry_max_elapsed: Option<HumanDuration>,
    /// On SIGTERM/SIGINT, the whole time graphgen takes to stop: intake closed, queued spans flushed, the final metrics push; give the orchestrator's grace period a few seconds more [default: 10s]
    #[arg(long, env = "GRAPHGEN_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<HumanDuration>,
    /// Count a span delivered again within this long only once (SDK and load-balancer retries re-send spans graphgen had taken); still forwarded; 0s turns it off [default: 0s]
    #[arg(long, env = "GRAPHGEN_DEDUP_WINDOW")]
    pub dedup_window: Option<HumanDuration>,
    /// Most spans the de-duplication record holds, about 40 bytes each; past it the oldest are forgotten first [default: 1000000]
    #[arg(long, env = "GRAPHGEN_DEDUP_MAX_SPANS")]
    pub dedup_max_spans: Option<usize>,
}

or_from_file!(TracesOptions {
    traces_endpoint,
    queue_size,
    queue_max_bytes,
    queue_dir,
    queue_fsync,
    export_concurrency,
    max_message_bytes,
    max_inflight_bytes,
    max_concurrent_requests,
    export_batch_spans,
    retry_initial_backoff,
    retry_max_elapsed,
    shutdown_grace,
    dedup_window,
    dedup_max_spans
});

/// Metrics out: the OTLP push, remote write, and the histogram kinds written.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Metrics out")]
#[serde(default)]
pub struct MetricsOptions {
    /// OTLP/HTTP metrics endpoint, e.g. http://prometheus:9090/api/v1/otlp/v1/metrics [default: none, no push]
    #[arg(long, env = "GRAPHGEN_METRICS_ENDPOINT")]
    pub metrics_endpoint: Option<String>,
    /// Largest OTLP request of a metrics push, in bytes before gzip; a larger push is split [default: 4194304]
    #[arg(long, env = "GRAPHGEN_METRICS_MAX_REQUEST_BYTES")]
    pub metrics_max_request_bytes: Option<usize>,
    /// Prometheus remote-write endpoint (1.0, protobuf + snappy, as Tempo's generator sends), e.g. http://prometheus:9090/api/v1/write; runs beside or instead of the OTLP push [default: none]
    #[arg(long, env = "GRAPHGEN_REMOTE_WRITE_ENDPOINT")]
    pub remote_write_endpoint: Option<String>,
    /// Extra headers of every remote-write request, comma-separated Name=value, e.g. X-Scope-OrgID=team-a [default: none]
    #[arg(long, env = "GRAPHGEN_REMOTE_WRITE_HEADERS", value_delimiter = ',')]
    pub remote_write_headers: Option<Vec<String>>,
    /// Labels added to every remote-written series, comma-separated name=value, as Tempo's external_labels [default: none]
    #[arg(long, env = "GRAPHGEN_EXTERNAL_LABELS", value_delimiter = ',')]
    pub external_labels: Option<Vec<String>>,
    /// The label of a remote-written exemplar that holds the trace id, as Tempo's trace_id_label_name [default: traceID]
    #[arg(long, env = "GRAPHGEN_TRACE_ID_LABEL_NAME")]
    pub trace_id_label_name: Option<String>,
    /// Latency histograms written: classic (_bucket/_sum/_count), native, or both, as Tempo's generate_native_histograms; /metrics always shows classic buckets [default: classic]
    #[arg(long, env = "GRAPHGEN_HISTOGRAMS", value_enum)]
    pub histograms: Option<HistogramMode>,
    /// Growth factor between native buckets, as Tempo's native_histogram_bucket_factor; must be above 1 [default: 1.1]
    #[arg(long, env = "GRAPHGEN_NATIVE_HISTOGRAM_BUCKET_FACTOR")]
    pub native_histogram_bucket_factor: Option<f64>,
    /// Most populated native buckets per histogram before its resolution is lowered or it is reset; 0 means no limit, as Tempo's native_histogram_max_bucket_number [default: 100]
    #[arg(long, env = "GRAPHGEN_NATIVE_HISTOGRAM_MAX_BUCKET_NUMBER")]
    pub native_histogram_max_bucket_number: Option<u32>,
    /// A native histogram over its bucket limit is reset if this long has passed since its last reset, as Tempo's native_histogram_min_reset_duration; 0s never resets [default: 15m]
    #[arg(long, env = "GRAPHGEN_NATIVE_HISTOGRAM_MIN_RESET_DURATION")]
    pub native_histogram_min_reset_duration: Option<HumanDuration>,
    /// This instance's identity in pushed metrics (service.instance.id, Prometheus' `instance`); unique per replica [default: the host name]
    #[arg(long, env = "GRAPHGEN_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How often metrics are pushed to the metrics endpoint [default: 10s]
    #[arg(long, env = "GRAPHGEN_FLUSH_INTERVAL")]
    pub flush_interval: Option<HumanDuration>,
}

or_from_file!(MetricsOptions {
    metrics_endpoint,
    metrics_max_request_bytes,
    remote_write_endpoint,
    remote_write_headers,
    external_labels,
    trace_id_label_name,
    histograms,
    native_histogram_bucket_factor,
    native_histogram_max_bucket_number,
    native_histogram_min_reset_duration,
    instance_id,
    flush_interval
});

/// The service-graph processor (Tempo's `service_graphs`).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Service graphs")]
#[serde(default)]
pub struct GraphOptions {
    /// The series made, by Tempo's processor names, comma-separated: service-graphs, service-graphs-request, service-graphs-latency, service-graphs-connection-info, span-metrics, span-metrics-count, span-metrics-latency, span-metrics-size, host-info [default: service-graphs,span-metrics]
    #[arg(long, env = "GRAPHGEN_PROCESSORS", value_delimiter = ',')]
    pub processors: Option<Vec<String>>,
    /// Also draw an edge from a span to its child in another service when neither has a kind Tempo pairs (INTERNAL or UNSPECIFIED): parent service → child service, as a client/server pair; not a Tempo option [default: false]
    #[arg(long, env = "GRAPHGEN_EDGES_FROM_PARENT_CHILD", num_args = 0..=1, default_missing_value = "true")]
    pub edges_from_parent_child: Option<bool>,
    /// How long an edge waits for its other side [default: 10s]
    #[arg(long, env = "GRAPHGEN_WAIT")]
    pub wait: Option<HumanDuration>,
    /// Most edges waiting at once; spans beyond are dropped and counted [default: 10000]
    #[arg(long, env = "GRAPHGEN_MAX_ITEMS")]
    pub max_items: Option<usize>,
    /// Attributes added as labels to service-graph series, comma-separated [default: none]
    #[arg(long, env = "GRAPHGEN_DIMENSIONS", value_delimiter = ',')]
    pub dimensions: Option<Vec<String>>,
    /// Label dimensions as client_<dim> and server_<dim> [default: false]
    #[arg(long, env = "GRAPHGEN_ENABLE_CLIENT_SERVER_PREFIX", num_args = 0..=1, default_missing_value = "true")]
    pub enable_client_server_prefix: Option<bool>,
    /// Add virtual_node="client"|"server" to edges with an uninstrumented side [default: false]
    #[arg(long, env = "GRAPHGEN_ENABLE_VIRTUAL_NODE_LABEL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_virtual_node_label: Option<bool>,
    /// Also export traces_service_graph_request_messaging_system_seconds [default: false]
    #[arg(long, env = "GRAPHGEN_ENABLE_MESSAGING_SYSTEM_LATENCY_HISTOGRAM", num_args = 0..=1, default_missing_value = "true")]
    pub enable_messaging_system_latency_histogram: Option<bool>,
    /// Service-graph latency buckets in seconds, comma-separated [default: 0.1,0.2,0.4,0.8,1.6,3.2,6.4,12.8]
    #[arg(long, env = "GRAPHGEN_HISTOGRAM_BUCKETS", value_delimiter = ',')]
    pub histogram_buckets: Option<Vec<f64>>,
    /// Span attributes naming an uninstrumented peer [default: peer.service,db.name,db.system,db.system.name]
    #[arg(long, env = "GRAPHGEN_PEER_ATTRIBUTES", value_delimiter = ',')]
    pub peer_attributes: Option<Vec<String>>,
    /// Attributes marking a client span as a database call [default: db.namespace,db.name,db.system,db.system.name]
    #[arg(long, env = "GRAPHGEN_DATABASE_NAME_ATTRIBUTES", value_delimiter = ',')]
    pub database_name_attributes: Option<Vec<String>>,
    /// Double attribute with the sampling ratio; each span then counts 1/ratio times [default: none]
    #[arg(long, env = "GRAPHGEN_SPAN_MULTIPLIER_KEY")]
    pub span_multiplier_key: Option<String>,
    /// Count a span as many times as the sampling probability in its W3C tracestate (ot=th:…) says, before --span-multiplier-key, as Tempo's enable_tracestate_span_multiplier; both processors [default: false]
    #[arg(long, env = "GRAPHGEN_ENABLE_TRACESTATE_SPAN_MULTIPLIER", num_args = 0..=1, default_missing_value = "true")]
    pub enable_tracestate_span_multiplier: Option<bool>,
    /// Which client and server spans the service graph pairs (Tempo's service_graphs
    /// filter_policies); in the file only, see the README.
    #[arg(skip)]
    pub filter_policies: Option<Vec<FilterPolicy>>,
}

or_from_file!(GraphOptions {
    processors,
    edges_from_parent_child,
    wait,
    max_items,
    dimensions,
    enable_client_server_prefix,
    enable_virtual_node_label,
    enable_messaging_system_latency_histogram,
    histogram_buckets,
    peer_attributes,
    database_name_attributes,
    span_multiplier_key,
    enable_tracestate_span_multiplier,
    filter_policies
});

/// The bounds of both processors' series (Tempo's registry).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Series limits")]
#[serde(default)]
pub struct RegistryOptions {
    /// Most label sets each processor keeps; beyond, updates are counted and not recorded [default: 100000]
    #[arg(long, env = "GRAPHGEN_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// Label values are cut to this many bytes (at a character boundary), as Tempo's max_label_value_length [default: 2048]
    #[arg(long, env = "GRAPHGEN_MAX_LABEL_VALUE_LENGTH")]
    pub max_label_value_length: Option<usize>,
    /// Label names are cut to this many bytes, as Tempo's max_label_name_length [default: 1024]
    #[arg(long, env = "GRAPHGEN_MAX_LABEL_NAME_LENGTH")]
    pub max_label_name_length: Option<usize>,
    /// A label with more distinct values than this (within --stale-duration) has them replaced by __cardinality_overflow__, as Tempo's max_cardinality_per_label; 0 turns it off [default: 0]
    #[arg(long, env = "GRAPHGEN_MAX_CARDINALITY_PER_LABEL")]
    pub max_cardinality_per_label: Option<usize>,
    /// Spans that ended more than this before or after now are not counted (still forwarded), as Tempo's metrics_ingestion_time_range_slack, whose default is 30s; 0s counts every span [default: 0s]
    #[arg(long, env = "GRAPHGEN_INGESTION_TIME_RANGE_SLACK")]
    pub ingestion_time_range_slack: Option<HumanDuration>,
    /// Series not updated for this long are dropped, as Tempo's stale_duration [default: 15m]
    #[arg(long, env = "GRAPHGEN_STALE_DURATION")]
    pub stale_duration: Option<HumanDuration>,
}

or_from_file!(RegistryOptions {
    max_series,
    max_label_value_length,
    max_label_name_length,
    max_cardinality_per_label,
    ingestion_time_range_slack,
    stale_duration
});

/// The span-metrics processor (Tempo's `span_metrics`).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Span metrics")]
#[serde(default)]
pub struct SpanMetricsOptions {
    /// Produce traces_spanmetrics_* (Grafana's service-graph table needs them) [default: true]
    #[arg(long, env = "GRAPHGEN_SPAN_METRICS", num_args = 0..=1, default_missing_value = "true")]
    pub span_metrics: Option<bool>,
    /// Attributes added as labels to span-metrics series, comma-separated [default: none]
    #[arg(long, env = "GRAPHGEN_SPAN_METRICS_DIMENSIONS", value_delimiter = ',')]
    pub span_metrics_dimensions: Option<Vec<String>>,
    /// Span-metrics latency buckets in seconds [default: 0.002 × 2ⁿ, 14 buckets]
    #[arg(
        long,
        env = "GRAPHGEN_SPAN_METRICS_HISTOGRAM_BUCKETS",
        value_delimiter = ','
    )]
    pub span_metrics_histogram_buckets: Option<Vec<f64>>,
    /// Intrinsic labels turned on or off, comma-separated name=true|false (service, span_name, span_kind, status_code, status_message), as Tempo's intrinsic_dimensions; in the file a table [default: service=true,span_name=true,span_kind=true,status_code=true,status_message=false]
    #[arg(
        long,
        env = "GRAPHGEN_SPAN_METRICS_INTRINSIC_DIMENSIONS",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "switches")]
    pub span_metrics_intrinsic_dimensions: Option<Vec<Switch>>,
    /// Also write traces_target_info (one series per resource, its attributes as labels) and add job and instance labels to span metrics, as Tempo's enable_target_info [default: false]
    #[arg(long, env = "GRAPHGEN_SPAN_METRICS_ENABLE_TARGET_INFO", num_args = 0..=1, default_missing_value = "true")]
    pub span_metrics_enable_target_info: Option<bool>,
    /// Resource attributes left out of traces_target_info, comma-separated, as Tempo's target_info_excluded_dimensions [default: none]
    #[arg(
        long,
        env = "GRAPHGEN_SPAN_METRICS_TARGET_INFO_EXCLUDED_DIMENSIONS",
        value_delimiter = ','
    )]
    pub span_metrics_target_info_excluded_dimensions: Option<Vec<String>>,
    /// With target info on, the instance label (service.instance.id) on span metrics and target info, as Tempo's enable_instance_label [default: true]
    #[arg(long, env = "GRAPHGEN_SPAN_METRICS_ENABLE_INSTANCE_LABEL", num_args = 0..=1, default_missing_value = "true")]
    pub span_metrics_enable_instance_label: Option<bool>,
    /// Labels joined from several attributes (Tempo's dimension_mappings); in the file only.
    #[arg(skip)]
    pub span_metrics_dimension_mappings: Option<Vec<spanmetrics::DimensionMapping>>,
    /// Replace the varying parts of span names (ids, numbers) with <_>, learning the patterns from the names seen, as Tempo's span_name_sanitization: disabled, dry_run (only count), enabled [default: disabled]
    #[arg(long, env = "GRAPHGEN_SPAN_NAME_SANITIZATION", value_enum)]
    pub span_name_sanitization: Option<crate::span_names::Sanitization>,
    /// Which spans span metrics count (Tempo's span_metrics filter_policies); in the file only.
    #[arg(skip)]
    pub span_metrics_filter_policies: Option<Vec<FilterPolicy>>,
}

or_from_file!(SpanMetricsOptions {
    span_metrics,
    span_metrics_dimensions,
    span_metrics_histogram_buckets,
    span_metrics_intrinsic_dimensions,
    span_metrics_enable_target_info,
    span_metrics_target_info_excluded_dimensions,
    span_metrics_enable_instance_label,
    span_metrics_dimension_mappings,
    span_name_sanitization,
    span_metrics_filter_policies
});

/// The host-info processor (Tempo's `host_info`), on when `--processors` names `host-info`.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Host info")]
#[serde(default)]
pub struct HostInfoOptions {
    /// Resource attributes naming a host for traces_host_info, comma-separated, the first found wins, as Tempo's host_identifiers [default: k8s.node.name,host.id]
    #[arg(
        long,
        env = "GRAPHGEN_HOST_INFO_HOST_IDENTIFIERS",
        value_delimiter = ','
    )]
    pub host_info_host_identifiers: Option<Vec<String>>,
    /// The host-info gauge's name, as Tempo's metric_name [default: traces_host_info]
    #[arg(long, env = "GRAPHGEN_HOST_INFO_METRIC_NAME")]
    pub host_info_metric_name: Option<String>,
}

or_from_file!(HostInfoOptions {
    host_info_host_identifiers,
    host_info_metric_name
});

/// Tenants, as Tempo has them (`X-Scope-OrgID`), and their overrides.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[command(next_help_heading = "Tenants")]
#[serde(default)]
pub struct TenantOptions {
    /// The tenant of a request without an X-Scope-OrgID header; Tempo's name for it when multi-tenancy is off. Spans and metrics go out with their tenant's X-Scope-OrgID, none for single-tenant (as Tempo) [default: single-tenant]
    #[arg(long, env = "GRAPHGEN_DEFAULT_TENANT")]
    pub default_tenant: Option<String>,
    /// Refuse a request without an X-Scope-OrgID header (gRPC UNAUTHENTICATED, HTTP 401), as Tempo with multitenancy_enabled [default: false]
    #[arg(long, env = "GRAPHGEN_REQUIRE_TENANT", num_args = 0..=1, default_missing_value = "true")]
    pub require_tenant: Option<bool>,
    /// Most tenants with an engine at once, the default tenant included; a new tenant beyond is refused (429, RESOURCE_EXHAUSTED) and counted until an idle one is forgotten [default: 100]
    #[arg(long, env = "GRAPHGEN_MAX_TENANTS")]
    pub max_tenants: Option<usize>,
    /// Per-tenant overrides in Tempo's YAML format (overrides: <tenant>: metrics_generator: …), read again when it changes, as Tempo's per_tenant_override_config [default: none]
    #[arg(long, env = "GRAPHGEN_PER_TENANT_OVERRIDE_CONFIG")]
    pub per_tenant_override_config: Option<PathBuf>,
    /// How often the overrides file is read again, as Tempo's per_tenant_override_period [default: 10s]
    #[arg(long, env = "GRAPHGEN_PER_TENANT_OVERRIDE_PERIOD")]
    pub per_tenant_override_period: Option<HumanDuration>,
    /// Add the tenant as a label of this name to every series, as Tempo's inject_tenant_id_as [default: none]
    #[arg(long, env = "GRAPHGEN_INJECT_TENANT_ID_AS")]
    pub inject_tenant_id_as: Option<String>,
}

or_from_file!(TenantOptions {
    default_tenant,
    require_tenant,
    max_tenants,
    per_tenant_override_config,
    per_tenant_override_period,
    inject_tenant_id_as
});

/// Options of the file that have no flag: structured values, as Tempo writes them.
const FILE_ONLY: [&str; 3] = [
    "filter_policies",
    "span_metrics_dimension_mappings",
    "span_metrics_filter_policies",
];

/// `name=true|false`: one intrinsic dimension turned on or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch(pub String, pub bool);

impl std::str::FromStr for Switch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, on) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: write name=true or name=false"))?;
        let on = on
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: write name=true or name=false"))?;
        Ok(Switch(name.trim().to_string(), on))
    }
}

/// In the file, switches are a table, as in Tempo: `{ status_message = true }`.
pub(crate) fn switches<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Switch>>, D::Error> {
    let table: Option<std::collections::BTreeMap<String, bool>> = Deserialize::deserialize(d)?;
    Ok(table.map(|t| t.into_iter().map(|(k, v)| Switch(k, v)).collect()))
}

/// Every service default in one place (the processors' own are in their `Config::default`,
/// the native-histogram ones in [`crate::native_histogram`]). `--help` states each in its
/// text and a test checks that text, these values and the README's table agree.
mod default {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub const OTLP_GRPC_ADDR: SocketAddr = addr(4317);
    pub const OTLP_HTTP_ADDR: SocketAddr = addr(4318);
    pub const ADMIN_ADDR: SocketAddr = addr(9464);
    pub const SERVICE_MAP_MAX_SERIES: usize = 2000;
    pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
    pub const METRICS_MAX_REQUEST_BYTES: usize = 4 << 20;
    pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
    pub const QUEUE_SIZE: usize = 50_000;
    pub const QUEUE_MAX_BYTES: usize = 64 << 20;
    pub const EXPORT_CONCURRENCY: usize = 4;
    pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
    pub const MAX_INFLIGHT_BYTES: usize = 128 << 20;
    pub const MAX_CONCURRENT_REQUESTS: usize = 256;
    pub const EXPORT_BATCH_SPANS: usize = 8192;
    pub const MAX_TENANTS: usize = 100;
    pub const PER_TENANT_OVERRIDE_PERIOD: Duration = Duration::from_secs(10);
    pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
    pub const RETRY_MAX_ELAPSED: Duration = Duration::from_secs(300);
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Off: Tempo counts every delivery.
    pub const DEDUP_WINDOW: Duration = Duration::ZERO;
    pub const DEDUP_MAX_SPANS: usize = 1_000_000;
    pub const SPAN_METRICS: bool = true;
    pub const PROCESSORS: [&str; 2] = [
        crate::processors::SERVICE_GRAPHS,
        crate::processors::SPAN_METRICS,
    ];

    const fn addr(port: u16) -> SocketAddr {
        SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            port,
        ))
    }
}

/// Size of one segment file of the on-disk queue.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Most requests the on-disk queue writes before one fsync (`--queue-fsync always`).
const QUEUE_MAX_GROUP: usize = 1024;

/// The host name: the container id under Docker, the pod name under Kubernetes.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "graphgen".into())
}

/// Grafana's base URL without a trailing slash; it ends up in links, so only a plain http(s)
/// URL is taken.
fn grafana_url(url: &str) -> Result<String, String> {
    let plain = url
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\'));
    if !(url.starts_with("http://") || url.starts_with("https://")) || !plain {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A duration option, written the usual way (`10s`, `500ms`, `1m`) on the command line, in the
/// environment and in the TOML file alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| format!("{e} (write e.g. 10s, 500ms, 1m)"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A configuration that cannot be used; the message names the option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

/// Where and how series are remote-written.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteSettings {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub external_labels: Vec<(String, String)>,
    pub trace_id_label_name: String,
}

/// `Name=value` pairs; names must be non-empty.
fn pairs(option: &'static str, items: Vec<String>) -> Result<Vec<(String, String)>, ConfigError> {
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(ConfigError::Invalid {
                option,
                message: format!("{item:?} is not name=value"),
            }),
        })
        .collect()
}

/// `--remote-write-headers`, each a valid HTTP header name and value.
fn headers(items: Vec<String>) -> Result<Vec<(String, String)>, ConfigError> {
    let option = "--remote-write-headers";
    let headers = pairs(option, items)?;
    for (name, value) in &headers {
        check_header(name, value).map_err(|message| ConfigError::Invalid { option, message })?;
    }
    Ok(headers)
}

/// A valid HTTP header name and value (remote write's headers, the flag's and a tenant's).
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && reqwest::header::HeaderValue::from_str(value).is_ok();
    match valid {
        true => Ok(()),
        false => Err(format!("{name:?}: {value:?} is not a valid HTTP header")),
    }
}

/// A label name an option gives (`--trace-id-label-name`, `--inject-tenant-id-as`), checked as
/// Tempo checks them (`validation/fields.go`, ValidateTraceIDLabelName): a name Prometheus'
/// sanitizer leaves as it is; empty is refused too.
fn label_name(option: &'static str, name: Option<String>) -> Result<Option<String>, ConfigError> {
    match name {
        Some(name) if name.is_empty() || crate::attributes::sanitize_label_name(&name) != name => {
            Err(ConfigError::Invalid {
                option,
                message: format!("{name:?} is not a valid Prometheus label name"),
            })
        }
        name => Ok(name),
    }
}

/// The resolved configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub grafana_url: Option<String>,
    pub service_map_max_series: usize,
    /// `host:port` of the other replicas' admin listeners (`--peers`).
    pub peers: Vec<String>,
    pub peer_timeout: Duration,
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub metrics_max_request_bytes: usize,
    pub remote_write: Option<RemoteWriteSettings>,
    pub histograms: HistogramMode,
    pub instance_id: String,
    pub flush_interval: Duration,
    pub queue_size: usize,
    pub queue_max_bytes: usize,
    pub queue_storage: Storage,
    pub export_concurrency: usize,
    pub max_message_bytes: usize,
    pub max_inflight_bytes: usize,
    pub max_concurrent_requests: usize,
    pub export_batch_spans: usize,
    pub retry_initial_backoff: Duration,
    pub retry_max_elapsed: Option<Duration>,
    pub shutdown_grace: Duration,
    pub stale_duration: Duration,
    /// `None`: every span counts.
    pub ingestion_time_range_slack: Option<Duration>,
    /// (window, most spans held) when re-delivered spans are counted once.
    pub dedup: Option<(Duration, usize)>,
    pub graph: graph::Config,
    pub span_metrics: Option<spanmetrics::Config>,
    pub host_info: Option<hostinfo::Config>,
    pub tenants: TenantSettings,
    /// `--per-tenant-override-config`, read every `overrides_period`.
    pub overrides_file: Option<PathBuf>,
    pub overrides_period: Duration,
    pub inject_tenant_id_as: Option<String>,
    /// The options these settings were resolved from: tenants' overrides are laid over them.
    pub options: Options,
}

impl Options {
    /// Fills every option the command line left unset from `file`.
    pub(crate) fn or(self, file: Options) -> Options {
        Options {
            config: self.config,
            listen: self.listen.or(file.listen),
            traces: self.traces.or(file.traces),
            metrics: self.metrics.or(file.metrics),
            graph: self.graph.or(file.graph),
            registry: self.registry.or(file.registry),
            span_metrics_options: self.span_metrics_options.or(file.span_metrics_options),
            host_info_options: self.host_info_options.or(file.host_info_options),
            tenant_options: self.tenant_options.or(file.tenant_options),
        }
    }

    /// Reads the `--config` file if any, merges, applies defaults and checks every value.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let merged = match &self.config {
            Some(path) => self.clone().or(read_file(path)?),
            None => self,
        };
        let options = merged.clone();
        Ok(Settings {
            options,
            ..merged.into_settings()?
        })
    }

    /// The settings of these options, every value checked (the `--config` file not read).
    pub(crate) fn into_settings(self) -> Result<Settings, ConfigError> {
        let duration = |value: Option<HumanDuration>| value.map(|d| d.0);
        let invalid =
            |option: &'static str, message: String| ConfigError::Invalid { option, message };
        let graph_defaults = graph::Config::default();
        let registry_defaults = RegistryLimits::default();
        let limits = RegistryLimits {
            max_series: self
                .registry
                .max_series
                .unwrap_or(registry_defaults.max_series),
            max_label_name_length: self
                .registry
                .max_label_name_length
                .unwrap_or(registry_defaults.max_label_name_length),
            max_label_value_length: self
                .registry
                .max_label_value_length
                .unwrap_or(registry_defaults.max_label_value_length),
            max_cardinality_per_label: self
                .registry
                .max_cardinality_per_label
                .unwrap_or(registry_defaults.max_cardinality_per_label),
        };
        for (option, value) in [
            ("--max-label-value-length", limits.max_label_value_length),
            ("--max-label-name-length", limits.max_label_name_length),
        ] {
            if value == 0 {
                return Err(invalid(option, "must be at least 1".into()));
            }
        }
        let histograms = self.metrics.histograms.unwrap_or_default();
        let bucket_factor = self
            .metrics
            .native_histogram_bucket_factor
            .unwrap_or(native_histogram::DEFAULT_BUCKET_FACTOR);
        // Tempo's check (`modules/generator/validation/fields.go:155-158`).
        if !(bucket_factor > 1.0 && bucket_factor.is_finite()) {
            return Err(invalid(
                "--native-histogram-bucket-factor",
                format!("{bucket_factor} must be greater than 1"),
            ));
        }
        let native_histograms = histograms.native().then(|| {
            NativeConfig::new(
                bucket_factor,
                self.metrics
                    .native_histogram_max_bucket_number
                    .unwrap_or(native_histogram::DEFAULT_MAX_BUCKET_NUMBER),
                duration(self.metrics.native_histogram_min_reset_duration)
                    .unwrap_or(native_histogram::DEFAULT_MIN_RESET_DURATION),
            )
        });
        let processors = match &self.graph.processors {
            Some(names) => crate::processors::resolve(names),
            None => crate::processors::resolve(&default::PROCESSORS),
        }
        .map_err(|e| invalid("--processors", e.to_string()))?;
        let graph = graph::Config {
            // Without a service-graphs name no series are written; edges are still paired
            // for the service map.
            metrics: processors.service_graphs.unwrap_or(GraphMetrics {
                request: false,
                latency: false,
                connection_info: false,
            }),
            edges_from_parent_child: self.graph.edges_from_parent_child.unwrap_or(false),
            wait: duration(self.graph.wait).unwrap_or(graph_defaults.wait),
            max_items: self.graph.max_items.unwrap_or(graph_defaults.max_items),
            histogram_buckets: self
                .graph
                .histogram_buckets
                .unwrap_or(graph_defaults.histogram_buckets),
            dimensions: self.graph.dimensions.unwrap_or_default(),
            enable_client_server_prefix: self.graph.enable_client_server_prefix.unwrap_or(false),
            enable_messaging_system_latency_histogram: self
                .graph
                .enable_messaging_system_latency_histogram
                .unwrap_or(false),
            enable_virtual_node_label: self.graph.enable_virtual_node_label.unwrap_or(false),
            peer_attributes: self
                .graph
                .peer_attributes
                .unwrap_or(graph_defaults.peer_attributes),
            database_name_attributes: self
                .graph
                .database_name_attributes
                .unwrap_or(graph_defaults.database_name_attributes),
            span_multiplier_key: self.graph.span_multiplier_key.clone(),
            enable_tracestate_span_multiplier: self
                .graph
                .enable_tracestate_span_multiplier
                .unwrap_or(false),
            filter_policies: self.graph.filter_policies.clone().unwrap_or_default(),
            limits,
            native_histograms,
        };
        graph.validate().map_err(|e| {
            let option = match e {
                graph::ConfigError::Buckets(_) => "--histogram-buckets",
                graph::ConfigError::MaxItems => "--max-items",
                graph::ConfigError::MaxSeries => "--max-series",
                graph::ConfigError::EmptyDimension(_) => "--dimensions",
                graph::ConfigError::Filter(_) => "filter_policies",
            };
            invalid(option, e.to_string())
        })?;
        let span_metrics_on = self
            .span_metrics_options
            .span_metrics
            .unwrap_or(default::SPAN_METRICS);
        let span_metrics = if let (true, Some(set)) = (span_metrics_on, processors.span_metrics) {
            let defaults = spanmetrics::Config::default();
            let sm = self.span_metrics_options;
            let configured = sm
                .span_metrics_histogram_buckets
                .unwrap_or(defaults.histogram_buckets.clone());
            let mut intrinsic_dimensions = defaults.intrinsic_dimensions;
            let switches: Vec<(String, bool)> = sm
                .span_metrics_intrinsic_dimensions
                .unwrap_or_default()
                .into_iter()
                .map(|Switch(name, on)| (name, on))
                .collect();
            intrinsic_dimensions
                .apply(&switches)
                .map_err(|e| invalid("--span-metrics-intrinsic-dimensions", e.to_string()))?;
            let config = spanmetrics::Config {
                metrics: set,
                intrinsic_dimensions,
                dimension_mappings: sm.span_metrics_dimension_mappings.unwrap_or_default(),
                enable_target_info: sm
                    .span_metrics_enable_target_info
                    .unwrap_or(defaults.enable_target_info),
                target_info_excluded_dimensions: sm
                    .span_metrics_target_info_excluded_dimensions
                    .unwrap_or_default(),
                enable_instance_label: sm
                    .span_metrics_enable_instance_label
                    .unwrap_or(defaults.enable_instance_label),
                filter_policies: sm.span_metrics_filter_policies.unwrap_or_default(),
                span_name_sanitization: sm.span_name_sanitization.unwrap_or_default(),
                // As Tempo: span metrics chosen by sub-name use its default buckets.
                histogram_buckets: if processors.span_metrics_default_buckets {
                    defaults.histogram_buckets
                } else {
                    configured
                },
                dimensions: sm.span_metrics_dimensions.unwrap_or_default(),
                span_multiplier_key: self.graph.span_multiplier_key,
                enable_tracestate_span_multiplier: self
                    .graph
                    .enable_tracestate_span_multiplier
                    .unwrap_or(false),
                limits,
                native_histograms,
            };
            // Every check of the processor's own, before any span arrives.
            spanmetrics::SpanMetrics::new(config.clone()).map_err(|e| {
                let option = match e {
                    spanmetrics::ConfigError::Buckets(_) => "--span-metrics-histogram-buckets",
                    spanmetrics::ConfigError::UnknownIntrinsic(_) => {
                        "--span-metrics-intrinsic-dimensions"
                    }
                    spanmetrics::ConfigError::MappingCollides { .. } => {
                        "span_metrics_dimension_mappings"
                    }
                    spanmetrics::ConfigError::Filter(_) => "span_metrics_filter_policies",
                };
                invalid(option, e.to_string())
            })?;
            Some(config)
        } else {
            None
        };
        let host_info = if processors.host_info {
            let defaults = hostinfo::Config::default();
            let hi = self.host_info_options;
            let config = hostinfo::Config {
                host_identifiers: hi
                    .host_info_host_identifiers
                    .unwrap_or(defaults.host_identifiers),
                metric_name: hi.host_info_metric_name.unwrap_or(defaults.metric_name),
                limits,
            };
            hostinfo::HostInfo::new(config.clone()).map_err(|e| {
                let option = match e {
                    hostinfo::ConfigError::NoIdentifiers => "--host-info-host-identifiers",
                    hostinfo::ConfigError::MetricName(_) => "--host-info-metric-name",
                };
                invalid(option, e.to_string())
            })?;
            Some(config)
        } else {
            None
        };
        for (option, endpoint) in [
            ("--traces-endpoint", &self.traces.traces_endpoint),
            ("--metrics-endpoint", &self.metrics.metrics_endpoint),
            (
                "--remote-write-endpoint",
                &self.metrics.remote_write_endpoint,
            ),
        ] {
            if let Some(url) = endpoint {
                // No TLS is built in: inside the stack every hop is plain HTTP.
                if !url.starts_with("http://") {
                    return Err(invalid(
                        option,
                        format!("{url:?} must start with http:// (TLS is not supported)"),
                    ));
                }
            }
        }
        let positive = |option, value: Option<usize>, default: usize| match value.unwrap_or(default)
        {
            0 => Err(invalid(option, "must be at least 1".into())),
            n => Ok(n),
        };
        let nonzero = |option, value: Option<Duration>, default| match value.unwrap_or(default) {
            d if d.is_zero() => Err(invalid(option, "must be longer than 0s".into())),
            d => Ok(d),
        };
        Ok(Settings {
            otlp_grpc_addr: self
                .listen
                .otlp_grpc_addr
                .unwrap_or(default::OTLP_GRPC_ADDR),
            otlp_http_addr: self
                .listen
                .otlp_http_addr
                .unwrap_or(default::OTLP_HTTP_ADDR),
            admin_addr: self.listen.admin_addr.unwrap_or(default::ADMIN_ADDR),
            grafana_url: match self.listen.grafana_url {
                Some(url) => Some(grafana_url(&url).map_err(|m| invalid("--grafana-url", m))?),
                None => None,
            },
            service_map_max_series: positive(
                "--service-map-max-series",
                self.listen.service_map_max_series,
                default::SERVICE_MAP_MAX_SERIES,
            )?,
            peers: self
                .listen
                .peers
                .unwrap_or_default()
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    crate::servicemap::fleet::parse_peer(p)
                        .map_err(|e| invalid("--peers", e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            peer_timeout: nonzero(
                "--peer-timeout",
                duration(self.listen.peer_timeout),
                default::PEER_TIMEOUT,
            )?,
            traces_endpoint: self.traces.traces_endpoint,
            metrics_endpoint: self.metrics.metrics_endpoint,
            remote_write: match self.metrics.remote_write_endpoint {
                Some(endpoint) => Some(RemoteWriteSettings {
                    endpoint,
                    headers: headers(self.metrics.remote_write_headers.unwrap_or_default())?,
                    external_labels: pairs(
                        "--external-labels",
                        self.metrics.external_labels.unwrap_or_default(),
                    )?,
                    trace_id_label_name: label_name(
                        "--trace-id-label-name",
                        self.metrics.trace_id_label_name,
                    )?
                    .unwrap_or_else(|| crate::export::remote_write::TRACE_ID_LABEL.to_string()),
                }),
                None => None,
            },
            histograms,
            metrics_max_request_bytes: positive(
                "--metrics-max-request-bytes",
                self.metrics.metrics_max_request_bytes,
                default::METRICS_MAX_REQUEST_BYTES,
            )?,
            instance_id: match self.metrics.instance_id {
                Some(id) if id.trim().is_empty() => {
                    return Err(invalid("--instance-id", "must not be empty".into()))
                }
                Some(id) => id,
                None => host_name(),
            },
            flush_interval: nonzero(
                "--flush-interval",
                duration(self.metrics.flush_interval),
                default::FLUSH_INTERVAL,
            )?,
            queue_size: positive("--queue-size", self.traces.queue_size, default::QUEUE_SIZE)?,
            queue_max_bytes: positive(
                "--queue-max-bytes",
                self.traces.queue_max_bytes,
                default::QUEUE_MAX_BYTES,
            )?,
            queue_storage: match self.traces.queue_dir {
                Some(dir) => Storage::Disk {
                    dir,
                    fsync: self.traces.queue_fsync.unwrap_or(Fsync::Periodic),
                    segment_bytes: SEGMENT_BYTES,
                    max_group: QUEUE_MAX_GROUP,
                },
                None => Storage::Memory,
            },
            export_concurrency: positive(
                "--export-concurrency",
                self.traces.export_concurrency,
                default::EXPORT_CONCURRENCY,
            )?,
            max_message_bytes: positive(
                "--max-message-bytes",
                self.traces.max_message_bytes,
                default::MAX_MESSAGE_BYTES,
            )?,
            max_inflight_bytes: positive(
                "--max-inflight-bytes",
                self.traces.max_inflight_bytes,
                default::MAX_INFLIGHT_BYTES,
            )?,
            max_concurrent_requests: positive(
                "--max-concurrent-requests",
                self.traces.max_concurrent_requests,
                default::MAX_CONCURRENT_REQUESTS,
            )?,
            export_batch_spans: positive(
                "--export-batch-spans",
                self.traces.export_batch_spans,
                default::EXPORT_BATCH_SPANS,
            )?,
            retry_initial_backoff: nonzero(
                "--retry-initial-backoff",
                duration(self.traces.retry_initial_backoff),
                default::RETRY_INITIAL_BACKOFF,
            )?,
            retry_max_elapsed: Some(
                duration(self.traces.retry_max_elapsed).unwrap_or(default::RETRY_MAX_ELAPSED),
            )
            .filter(|d| !d.is_zero()),
            shutdown_grace: duration(self.traces.shutdown_grace).unwrap_or(default::SHUTDOWN_GRACE),
            ingestion_time_range_slack: duration(self.registry.ingestion_time_range_slack)
                .filter(|d| !d.is_zero()),
            stale_duration: nonzero(
                "--stale-duration",
                duration(self.registry.stale_duration),
                crate::engine::DEFAULT_STALE_AFTER,
            )?,
            dedup: match duration(self.traces.dedup_window).unwrap_or(default::DEDUP_WINDOW) {
                window if window.is_zero() => None,
                window => Some((
                    window,
                    positive(
                        "--dedup-max-spans",
                        self.traces.dedup_max_spans,
                        default::DEDUP_MAX_SPANS,
                    )?,
                )),
            },
            tenants: TenantSettings {
                default_tenant: TenantId::parse(
                    self.tenant_options
                        .default_tenant
                        .as_deref()
                        .unwrap_or(crate::tenants::SINGLE_TENANT),
                )
                .map_err(|e| invalid("--default-tenant", e.to_string()))?,
                require_tenant: self.tenant_options.require_tenant.unwrap_or(false),
                max_tenants: positive(
                    "--max-tenants",
                    self.tenant_options.max_tenants,
                    default::MAX_TENANTS,
                )?,
            },
            overrides_file: self.tenant_options.per_tenant_override_config,
            overrides_period: nonzero(
                "--per-tenant-override-period",
                duration(self.tenant_options.per_tenant_override_period),
                default::PER_TENANT_OVERRIDE_PERIOD,
            )?,
            inject_tenant_id_as: label_name(
                "--inject-tenant-id-as",
                self.tenant_options.inject_tenant_id_as,
            )?,
            graph,
            span_metrics,
            host_info,
            options: Options::default(),
        })
    }
}

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    // The keys are the long flags in snake_case; serde cannot refuse unknown keys across
    // flattened groups, so they are checked here, against the flags themselves.
    let table: toml::Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
    let known: Vec<String> = <Options as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| *long != "config")
        .map(|long| long.replace('-', "_"))
        .collect();
    if let Some(key) = table
        .keys()
        .find(|k| !known.contains(k) && !FILE_ONLY.contains(&k.as_str()))
    {
        return Err(parse_error(format!(
            "unknown option `{key}` (keys are the long flags in snake_case, e.g. `flush_interval`)"
        )));
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| parse_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let options =
            Options::try_parse_from(std::iter::once("graphgen").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        // The options they came from are kept for tenants' overrides; what is compared here
        // is what they resolve to.
        options
            .resolve()
            .map(|s| Settings {
                options: Options::default(),
                ..s
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.otlp_grpc_addr.to_string(), "0.0.0.0:4317");
        assert_eq!(s.otlp_http_addr.to_string(), "0.0.0.0:4318");
        assert_eq!(s.admin_addr.to_string(), "0.0.0.0:9464");
        assert_eq!(s.flush_interval, Duration::from_secs(10));
        assert_eq!(s.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(s.graph, graph::Config::default());
        assert_eq!(s.span_metrics, Some(spanmetrics::Config::default()));
        assert!(s.traces_endpoint.is_none());
    }

    #[test]
    fn flags_set_every_engine_option() {
        let s = parse(&[
            "--wait=3s",
            "--max-items=5",
            "--dimensions=http.request.method,db.system",
            "--enable-client-server-prefix",
            "--enable-virtual-node-label=true",
            "--enable-messaging-system-latency-histogram",
            "--histogram-buckets=0.01,0.1,1",
            "--peer-attributes=peer.service",
            "--database-name-attributes=db.name",
            "--flush-interval=500ms",
        ])
        .unwrap();
        assert_eq!(s.graph.wait, Duration::from_secs(3));
        assert_eq!(s.graph.max_items, 5);
        assert_eq!(s.graph.dimensions, ["http.request.method", "db.system"]);
        assert!(s.graph.enable_client_server_prefix);
        assert!(s.graph.enable_virtual_node_label);
        assert!(s.graph.enable_messaging_system_latency_histogram);
        assert_eq!(s.graph.histogram_buckets, [0.01, 0.1, 1.0]);
        assert_eq!(s.graph.peer_attributes, ["peer.service"]);
        assert_eq!(s.graph.database_name_attributes, ["db.name"]);
        assert_eq!(s.flush_interval, Duration::from_millis(500));
    }

    #[test]
    fn processors_choose_the_series_as_tempo_names_them() {
        let s = parse(&[
            "--processors=service-graphs-request,service-graphs-connection-info,span-metrics-count",
            "--span-metrics-histogram-buckets=0.5,1",
        ])
        .unwrap();
        let graph = s.graph.metrics;
        assert!(graph.request && !graph.latency && graph.connection_info);
        let spans = s.span_metrics.unwrap();
        assert!(spans.metrics.count && !spans.metrics.latency && !spans.metrics.size);
        // Sub-names bring Tempo's default span-metrics buckets, whatever was configured.
        assert_eq!(
            spans.histogram_buckets,
            spanmetrics::Config::default().histogram_buckets
        );
        // No span-metrics name: no span metrics; no service-graphs name: no graph series.
        let s = parse(&["--processors=service-graphs"]).unwrap();
        assert!(s.span_metrics.is_none());
        let s = parse(&["--processors=span-metrics"]).unwrap();
        assert!(!s.graph.metrics.request && !s.graph.metrics.latency);
        // --span-metrics=false still turns span metrics off.
        let s = parse(&["--span-metrics=false"]).unwrap();
        assert!(s.span_metrics.is_none() && s.graph.metrics.request);
    }

    #[test]
    fn remote_write_and_native_histogram_options() {
        let s = parse(&[
            "--remote-write-endpoint=http://mimir:8080/api/v1/push",
            "--remote-write-headers=X-Scope-OrgID=team-a,Authorization=Bearer x=y",
            "--external-labels=cluster=eu-1",
            "--histograms=both",
            "--native-histogram-bucket-factor=1.2",
            "--native-histogram-max-bucket-number=50",
            "--native-histogram-min-reset-duration=0s",
        ])
        .unwrap();
        let rw = s.remote_write.unwrap();
        assert_eq!(
            rw.headers,
            [
                ("X-Scope-OrgID".to_string(), "team-a".to_string()),
                ("Authorization".to_string(), "Bearer x=y".to_string())
            ]
        );
        assert_eq!(
            rw.external_labels,
            [("cluster".to_string(), "eu-1".to_string())]
        );
        assert_eq!(s.histograms, HistogramMode::Both);
        let native = NativeConfig {
            schema: 2,
            max_bucket_number: 50,
            min_reset_nanos: 0,
        };
        assert_eq!(s.graph.native_histograms, Some(native));
        assert_eq!(s.span_metrics.unwrap().native_histograms, Some(native));
        // Classic (the default) keeps no native buckets.
        assert_eq!(parse(&[]).unwrap().graph.native_histograms, None);
        for (args, option) in [
            (
                &["--native-histogram-bucket-factor=1"][..],
                "--native-histogram-bucket-factor",
            ),
            (
                &[
                    "--remote-write-endpoint=http://x",
                    "--remote-write-headers=bad header=1",
                ],
                "--remote-write-headers",
            ),
            (
                &[
                    "--remote-write-endpoint=http://x",
                    "--external-labels=novalue",
                ],
                "--external-labels",
            ),
            (
                &["--remote-write-endpoint=https://x"],
                "--remote-write-endpoint",
            ),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.starts_with(option), "{args:?}: {error}");
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("graphgen-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("graphgen.toml");
        std::fs::write(
            &file,
            "wait = \"2s\"\nmax_items = 7\ndimensions = [\"a\"]\nqueue_size = 9\n\
             flush_interval = \"3s\"\nmax_series = 11\nspan_metrics = false\n\
             admin_addr = \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        let s = parse(&["--config", file.to_str().unwrap(), "--max-items=8"]).unwrap();
        // One key of every option group.
        assert_eq!(s.graph.wait, Duration::from_secs(2));
        assert_eq!(s.graph.max_items, 8);
        assert_eq!(s.graph.dimensions, ["a"]);
        assert_eq!(s.queue_size, 9);
        assert_eq!(s.flush_interval, Duration::from_secs(3));
        assert_eq!(s.graph.limits.max_series, 11);
        assert_eq!(s.span_metrics, None);
        assert_eq!(s.admin_addr.to_string(), "127.0.0.1:9999");

        std::fs::write(&file, "wiat = \"2s\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("unknown option `wiat`"), "{err}");
        std::fs::write(&file, "wait = \"soon\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("write e.g."), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tempo_structured_options_come_from_the_file_as_tempo_writes_them() {
        let dir =
            std::env::temp_dir().join(format!("graphgen-tempo-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("graphgen.toml");
        std::fs::write(
            &file,
            r#"
span_metrics_intrinsic_dimensions = { status_message = true, span_kind = false }
span_metrics_enable_target_info = true
span_metrics_target_info_excluded_dimensions = ["k8s.pod.name"]

[[filter_policies]]
exclude = { match_type = "regex", attributes = [{ key = "span.http.route", value = "^/health" }] }

[[span_metrics_filter_policies]]
include = { match_type = "strict", attributes = [{ key = "kind", value = "SPAN_KIND_SERVER" }, { key = "span.http.status_code", value = 500 }] }

[[span_metrics_dimension_mappings]]
name = "target"
source_labels = ["http.request.method", "server.address"]
join = " "
"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path]).unwrap();
        assert_eq!(s.graph.filter_policies.len(), 1);
        let sm = s.span_metrics.clone().unwrap();
        assert!(sm.intrinsic_dimensions.status_message && !sm.intrinsic_dimensions.span_kind);
        assert!(
            sm.intrinsic_dimensions.service,
            "the others keep their defaults"
        );
        assert!(sm.enable_target_info && sm.enable_instance_label);
        assert_eq!(sm.target_info_excluded_dimensions, ["k8s.pod.name"]);
        assert_eq!(sm.dimension_mappings[0].source_labels.len(), 2);
        assert_eq!(sm.filter_policies.len(), 1);
        // The flag form of the switches, over the file's.
        let s = parse(&[
            "--config",
            path,
            "--span-metrics-intrinsic-dimensions=status_message=false",
        ])
        .unwrap();
        let sm = s.span_metrics.unwrap();
        assert!(!sm.intrinsic_dimensions.status_message && sm.intrinsic_dimensions.span_kind);

        // What Tempo refuses is refused at start, naming the option.
        for (text, want) in [
            (
                "[[filter_policies]]\ninclude = { match_type = \"regex\", attributes = [{ key = \"name\", value = \"(\" }] }\n",
                "filter_policies",
            ),
            (
                "[[span_metrics_filter_policies]]\nexclude = { match_type = \"strict\", attributes = [{ key = \"duration\", value = \"1s\" }] }\n",
                "span_metrics_filter_policies",
            ),
            (
                "span_metrics_dimensions = [\"target\"]\n[[span_metrics_dimension_mappings]]\nname = \"target\"\n",
                "span_metrics_dimension_mappings",
            ),
            (
                "span_metrics_intrinsic_dimensions = { duration = true }\n",
                "--span-metrics-intrinsic-dimensions",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = parse(&["--config", path]).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_the_option_named() {
        for (args, want) in [
            (&["--wait=soon"][..], "--wait"),
            (&["--histogram-buckets=1,0.5"], "--histogram-buckets"),
            (&["--max-items=0"], "--max-items"),
            (&["--max-series=0"], "--max-series"),
            (&["--queue-size=0"], "--queue-size"),
            (&["--traces-endpoint=tempo:4317"], "--traces-endpoint"),
            (
                &["--metrics-endpoint=https://p:9090/x"],
                "--metrics-endpoint",
            ),
            (&["--otlp-grpc-addr=nowhere"], "--otlp-grpc-addr"),
            (&["--flush-interval=0s"], "--flush-interval"),
            (&["--processors=service-graph"], "--processors"),
            (
                &[
                    "--remote-write-endpoint=http://p/w",
                    "--trace-id-label-name=trace.id",
                ],
                "--trace-id-label-name",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    /// `(--flag, default)` for every option, from its help text: the one place a default is
    /// written for users.
    fn help_defaults() -> Vec<(String, String)> {
        Options::command()
            .get_arguments()
            .filter_map(|arg| {
                let help = arg.get_help()?.to_string();
                let default = help.rsplit_once("[default: ")?.1.strip_suffix(']')?;
                Some((format!("--{}", arg.get_long()?), default.to_string()))
            })
            .collect()
    }

    /// Defaults described in words rather than given as a value.
    const DESCRIBED: [&str; 2] = ["--instance-id", "--span-metrics-histogram-buckets"];

    #[test]
    fn every_default_is_the_same_in_help_settings_and_readme() {
        let defaults = help_defaults();
        let options: Vec<String> = Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "config")
            .map(|l| format!("--{l}"))
            .collect();
        let documented: Vec<String> = defaults.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(documented, options, "every option's help gives its default");

        // The settings: giving each default explicitly changes nothing. (A queue directory in
        // both, so that the fsync policy is part of what is compared.)
        let base_args = ["--queue-dir=/graphgen-test-not-created"];
        let base = format!("{:?}", parse(&base_args).unwrap());
        let mut wrong = Vec::new();
        for (flag, default) in &defaults {
            if default.starts_with("none") || DESCRIBED.contains(&flag.as_str()) {
                continue;
            }
            let arg = format!("{flag}={default}");
            match parse(&[base_args[0], &arg]) {
                Ok(s) if format!("{s:?}") == base => {}
                Ok(_) => wrong.push(format!(
                    "{flag}: --help says {default}, the settings differ"
                )),
                Err(e) => wrong.push(format!(
                    "{flag}: --help's default {default} does not parse: {e}"
                )),
            }
        }

        // The README's table says the same.
        let readme = include_str!("../../README.md");
        for (flag, default) in &defaults {
            let row = readme.lines().find(|l| {
                l.starts_with(&format!("| `{flag}`")) || l.starts_with(&format!("| `{flag} "))
            });
            match row.and_then(|r| r.split('|').nth(3)) {
                Some(cell) if cell.trim().trim_matches('`') == default => {}
                Some(cell) => wrong.push(format!(
                    "README {flag}: {:?}, --help: {default:?}",
                    cell.trim()
                )),
                None => wrong.push(format!("README has no row for {flag}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}

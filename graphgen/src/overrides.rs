//! Per-tenant overrides, in Tempo's file format (`per_tenant_override_config`, the structured
//! form of `modules/overrides/config.go`), for the keys graphgen has:
//!
//! ```yaml
//! overrides:
//!   team-a:
//!     metrics_generator:
//!       processors: [service-graphs, span-metrics]
//!       max_active_series: 1000
//!       ingestion_time_range_slack: 30s
//!       span_name_sanitization: enabled
//!       generate_native_histograms: both
//!       remote_write_headers: {Authorization: "Bearer …"}
//!       processor:
//!         service_graphs:
//!           dimensions: [http.method]
//!           histogram_buckets: [0.1, 1]
//!         span_metrics:
//!           dimensions: [http.route]
//!           intrinsic_dimensions: {status_message: true}
//!         host_info:
//!           host_identifiers: [host.id]
//!   "*":          # every tenant without an entry of its own
//!     metrics_generator:
//!       processors: [service-graphs]
//! ```
//!
//! Each tenant's entry is turned into graphgen's own options ([`Options`]) and laid over the
//! settings, so it is checked exactly as the flags are. Keys graphgen does not have (Tempo's
//! ingestion limits and the like) are listed in a warning and otherwise left alone, so a
//! Tempo file can be used as it is. The file is read again every `--overrides-reload-period`;
//! a file that cannot be read or applied is refused with a message and the overrides in force
//! stay ([`watch`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{
    GraphOptions, HostInfoOptions, HumanDuration, MetricsOptions, Options, RegistryOptions,
    SpanMetricsOptions, Switch,
};
use crate::filter::FilterPolicy;
use crate::selfmetrics::SelfMetrics;
use crate::spanmetrics::DimensionMapping;
use crate::tenants::Tenants;

/// Tempo's wildcard tenant: its overrides apply to every tenant without its own.
pub const WILDCARD: &str = "*";

/// The overrides in force: each tenant's options (over the settings), and the part of its
/// entry they were read from (`metrics_generator`), to tell which tenants a new file changes.
#[derive(Debug, Default)]
pub struct Overrides {
    tenants: BTreeMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Its `metrics_generator`, as read.
    raw: serde_json::Value,
    options: Options,
    push: TenantPush,
}

/// A tenant's overrides that are not options of graphgen's: they shape only its pushes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPush {
    /// Tempo's `remote_write_headers`, laid over `--remote-write-headers` by name.
    pub remote_write_headers: Vec<(String, String)>,
    /// Tempo's `disable_collection`: nothing is pushed for the tenant.
    pub disable_collection: bool,
}

impl Overrides {
    /// A tenant's options, its own or the wildcard's; `None` when neither exists.
    pub fn options_for(&self, tenant: &str) -> Option<&Options> {
        self.entry(tenant).map(|e| &e.options)
    }

    /// A tenant's push overrides, its own or the wildcard's.
    pub fn push_for(&self, tenant: &str) -> TenantPush {
        self.entry(tenant)
            .map(|e| e.push.clone())
            .unwrap_or_default()
    }

    fn entry(&self, tenant: &str) -> Option<&Entry> {
        self.tenants
            .get(tenant)
            .or_else(|| self.tenants.get(WILDCARD))
    }

    /// What `tenant`'s options are read from (`Null`: nothing, the settings as they are);
    /// equal values give equal options.
    pub fn raw_for(&self, tenant: &str) -> serde_json::Value {
        self.entry(tenant)
            .map_or(serde_json::Value::Null, |e| e.raw.clone())
    }

    /// Every tenant named (the wildcard too), with its options.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Options)> {
        self.tenants.iter().map(|(t, e)| (t.as_str(), &e.options))
    }

    /// Parses a file's text. Unknown keys are returned, to be logged.
    pub fn parse(text: &str) -> Result<(Self, Vec<String>), OverridesError> {
        let file: File = serde_norway::from_str(text).map_err(|e| OverridesError::Parse {
            message: e.to_string(),
        })?;
        let mut unknown = Vec::new();
        let mut tenants = BTreeMap::new();
        for (tenant, raw) in file.overrides {
            let refuse = |message: String| OverridesError::Tenant {
                tenant: tenant.clone(),
                message,
            };
            if tenant != WILDCARD {
                crate::tenants::TenantId::parse(&tenant).map_err(|e| refuse(e.to_string()))?;
            }
            // Tempo's legacy layout has flat keys (`metrics_generator_processors`); Tempo
            // itself reads it only with `enable_legacy_overrides`.
            if let Some(key) = raw.as_object().and_then(|o| {
                o.keys()
                    .find(|k| k.starts_with("metrics_generator_"))
                    .cloned()
            }) {
                return Err(refuse(format!(
                    "`{key}` is Tempo's legacy overrides layout; write it as metrics_generator: {{ ... }}"
                )));
            }
            let entry: TenantEntry = match &raw {
                // `tenant:` with nothing under it: Tempo's zero overrides.
                serde_json::Value::Null => TenantEntry::default(),
                raw => serde_json::from_value(raw.clone()).map_err(|e| refuse(e.to_string()))?,
            };
            entry.unknown_keys(&tenant, &mut unknown);
            // Only what graphgen reads: an edit elsewhere (Tempo's ingestion limits) or an
            // empty entry changes no tenant's engine.
            let read = raw
                .get("metrics_generator")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let push = entry.push().map_err(refuse)?;
            tenants.insert(
                tenant,
                Entry {
                    raw: read,
                    options: entry.into_options(),
                    push,
                },
            );
        }
        unknown.extend(file.other.keys().map(|k| format!("top-level `{k}`")));
        Ok((Self { tenants }, unknown))
    }

    /// Reads and parses the file; its text too, to tell later whether it changed.
    pub fn read(path: &Path) -> Result<(Self, Vec<String>, String), OverridesError> {
        let text = std::fs::read_to_string(path).map_err(|e| OverridesError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let (overrides, unknown) = Self::parse(&text)?;
        Ok((overrides, unknown, text))
    }
}

/// Why an overrides file was refused.
#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("cannot read the overrides file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the overrides file is not valid: {message}")]
    Parse { message: String },
    #[error("the overrides file names tenant {tenant:?}: {message}")]
    Tenant { tenant: String, message: String },
}

/// The file: `overrides:` with one entry a tenant.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    overrides: BTreeMap<String, serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// One tenant's entry. Only `metrics_generator` matters to graphgen.
#[derive(Debug, Default, Deserialize)]
struct TenantEntry {
    #[serde(default)]
    metrics_generator: Option<Generator>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Generator {
    processors: Option<Vec<String>>,
    max_active_series: Option<usize>,
    max_cardinality_per_label: Option<usize>,
    generate_native_histograms: Option<crate::native_histogram::HistogramMode>,
    native_histogram_bucket_factor: Option<f64>,
    native_histogram_max_bucket_number: Option<u32>,
    native_histogram_min_reset_duration: Option<HumanDuration>,
    trace_id_label_name: Option<String>,
    remote_write_headers: Option<BTreeMap<String, String>>,
    disable_collection: Option<bool>,
    ingestion_time_range_slack: Option<HumanDuration>,
    span_name_sanitization: Option<crate::span_names::Sanitization>,
    #[serde(default)]
    processor: Processors,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Processors {
    service_graphs: Option<ServiceGraphs>,
    span_metrics: Option<SpanMetrics>,
    host_info: Option<HostInfo>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ServiceGraphs {
    dimensions: Option<Vec<String>>,
    enable_client_server_prefix: Option<bool>,
    enable_messaging_system_latency_histogram: Option<bool>,
    enable_virtual_node_label: Option<bool>,
    peer_attributes: Option<Vec<String>>,
    histogram_buckets: Option<Vec<f64>>,
    span_multiplier_key: Option<String>,
    enable_tracestate_span_multiplier: Option<bool>,
    filter_policies: Option<Vec<FilterPolicy>>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct SpanMetrics {
    dimensions: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::switches")]
    intrinsic_dimensions: Option<Vec<Switch>>,
    histogram_buckets: Option<Vec<f64>>,
    filter_policies: Option<Vec<FilterPolicy>>,
    dimension_mappings: Option<Vec<DimensionMapping>>,
    enable_target_info: Option<bool>,
    target_info_excluded_dimensions: Option<Vec<String>>,
    enable_instance_label: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct HostInfo {
    host_identifiers: Option<Vec<String>>,
    metric_name: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

impl TenantEntry {
    fn unknown_keys(&self, tenant: &str, out: &mut Vec<String>) {
        let mut add = |path: &str, other: &BTreeMap<String, serde_json::Value>| {
            out.extend(other.keys().map(|k| format!("{tenant}: {path}{k}")));
        };
        add("", &self.other);
        if let Some(g) = &self.metrics_generator {
            add("metrics_generator.", &g.other);
            add("metrics_generator.processor.", &g.processor.other);
            if let Some(sg) = &g.processor.service_graphs {
                add("metrics_generator.processor.service_graphs.", &sg.other);
            }
            if let Some(sm) = &g.processor.span_metrics {
                add("metrics_generator.processor.span_metrics.", &sm.other);
            }
            if let Some(hi) = &g.processor.host_info {
                add("metrics_generator.processor.host_info.", &hi.other);
            }
        }
    }

    /// The entry's keys that shape only its pushes; a header that is not one is refused.
    fn push(&self) -> Result<TenantPush, String> {
        let g = self.metrics_generator.as_ref();
        let headers: Vec<(String, String)> = g
            .and_then(|g| g.remote_write_headers.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (name, value) in &headers {
            crate::config::check_header(name, value)
                .map_err(|e| format!("remote_write_headers: {e}"))?;
        }
        Ok(TenantPush {
            remote_write_headers: headers,
            disable_collection: g.and_then(|g| g.disable_collection).unwrap_or(false),
        })
    }

    /// Tempo's keys as graphgen's options; whatever the entry leaves out stays as the
    /// settings have it.
    fn into_options(self) -> Options {
        let g = self.metrics_generator.unwrap_or_default();
        let sg = g.processor.service_graphs.unwrap_or_default();
        let sm = g.processor.span_metrics.unwrap_or_default();
        let hi = g.processor.host_info.unwrap_or_default();
        Options {
            metrics: MetricsOptions {
                histograms: g.generate_native_histograms,
                native_histogram_bucket_factor: g.native_histogram_bucket_factor,
                native_histogram_max_bucket_number: g.native_histogram_max_bucket_number,
                native_histogram_min_reset_duration: g.native_histogram_min_reset_duration,
                trace_id_label_name: g.trace_id_label_name,
                ..MetricsOptions::default()
            },
            graph: GraphOptions {
                processors: g.processors,
                dimensions: sg.dimensions,
                enable_client_server_prefix: sg.enable_client_server_prefix,
                enable_messaging_system_latency_histogram: sg
                    .enable_messaging_system_latency_histogram,
                enable_virtual_node_label: sg.enable_virtual_node_label,
                peer_attributes: sg.peer_attributes,
                histogram_buckets: sg.histogram_buckets,
                span_multiplier_key: sg.span_multiplier_key,
                enable_tracestate_span_multiplier: sg.enable_tracestate_span_multiplier,
                filter_policies: sg.filter_policies,
                ..GraphOptions::default()
            },
            registry: RegistryOptions {
                max_series: g.max_active_series,
                max_cardinality_per_label: g.max_cardinality_per_label,
                ingestion_time_range_slack: g.ingestion_time_range_slack,
                ..RegistryOptions::default()
            },
            span_metrics_options: SpanMetricsOptions {
                span_metrics_dimensions: sm.dimensions,
                span_metrics_histogram_buckets: sm.histogram_buckets,
                span_metrics_intrinsic_dimensions: sm.intrinsic_dimensions,
                span_metrics_enable_target_info: sm.enable_target_info,
                span_metrics_target_info_excluded_dimensions: sm.target_info_excluded_dimensions,
                span_metrics_enable_instance_label: sm.enable_instance_label,
                span_metrics_dimension_mappings: sm.dimension_mappings,
                span_name_sanitization: g.span_name_sanitization,
                span_metrics_filter_policies: sm.filter_policies,
                ..SpanMetricsOptions::default()
            },
            host_info_options: HostInfoOptions {
                host_info_host_identifiers: hi.host_identifiers,
                host_info_metric_name: hi.metric_name,
            },
            ..Options::default()
        }
    }
}

/// Reads `path` every `period` and applies it when it differs from `applied` (the text the
/// start applied, then the last one read); a file that cannot be read, parsed or applied is
/// logged and counted, and the overrides in force stay.
pub async fn watch(
    path: PathBuf,
    period: Duration,
    applied: String,
    tenants: Arc<Tenants>,
    metrics: Arc<SelfMetrics>,
) {
    let mut last = Some(applied);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the start has just applied the file
    loop {
        tick.tick().await;
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read_to_string(path)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let text = match read {
            Ok(text) => text,
            Err(e) => {
                refused(
                    &metrics,
                    &OverridesError::Read {
                        path: path.clone(),
                        message: e.to_string(),
                    }
                    .to_string(),
                );
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        let tenants = tenants.clone();
        let applied = tokio::task::spawn_blocking({
            let text = text.clone();
            move || apply(&tenants, &text)
        })
        .await;
        match applied {
            Ok(Ok(rebuilt)) => {
                metrics.overrides.reloads.inc();
                tracing::info!(tenants_rebuilt = ?rebuilt, "per-tenant overrides reloaded");
            }
            Ok(Err(message)) => refused(&metrics, &message),
            Err(e) => refused(&metrics, &e.to_string()),
        }
        // A refused file is not tried again until it changes.
        last = Some(text);
    }
}

/// Parses and applies a file's text; the tenants whose engines were rebuilt.
pub fn apply(tenants: &Tenants, text: &str) -> Result<Vec<String>, String> {
    let (overrides, unknown) = Overrides::parse(text).map_err(|e| e.to_string())?;
    warn_unknown(&unknown);
    tenants
        .apply_overrides(overrides)
        .map(|ids| ids.iter().map(|t| t.to_string()).collect())
        .map_err(|e| format!("the overrides file is not valid: {e}"))
}

/// Logs the keys graphgen does not have (left alone).
pub fn warn_unknown(unknown: &[String]) {
    if !unknown.is_empty() {
        tracing::warn!(keys = ?unknown, "overrides graphgen does not have are ignored");
    }
}

fn refused(metrics: &SelfMetrics, message: &str) {
    metrics.overrides.refused.inc();
    tracing::error!(
        error = message,
        "per-tenant overrides not reloaded; the ones in force stay"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
overrides:
  team-a:
    ingestion: {rate_limit_bytes: 1000}
    metrics_generator:
      processors: [service-graphs]
      max_active_series: 10
      span_name_sanitization: ""
      generate_native_histograms: both
      native_histogram_bucket_factor: 1.5
      trace_id_label_name: trace_id
      remote_write_headers: {X-Team: a}
      disable_collection: true
      ring_size: 3
      processor:
        service_graphs:
          dimensions: [region]
        span_metrics:
          intrinsic_dimensions: {status_message: true}
          dimension_mappings: [{name: ep, source_labels: [a, b], join: " "}]
  "*":
    metrics_generator:
      processors: [span-metrics]
  quiet:
"#;

    #[test]
    fn tempo_s_keys_become_graphgen_s_options_and_the_rest_is_listed() {
        let (overrides, unknown) = Overrides::parse(FILE).unwrap();
        let a = overrides.options_for("team-a").unwrap();
        assert_eq!(a.graph.processors, Some(vec!["service-graphs".into()]));
        assert_eq!(a.graph.dimensions, Some(vec!["region".into()]));
        assert_eq!(a.registry.max_series, Some(10));
        assert_eq!(
            a.span_metrics_options.span_name_sanitization,
            Some(crate::span_names::Sanitization::Disabled),
            "Tempo writes disabled as \"\""
        );
        assert_eq!(
            a.span_metrics_options.span_metrics_intrinsic_dimensions,
            Some(vec![Switch("status_message".into(), true)])
        );
        assert_eq!(
            a.span_metrics_options
                .span_metrics_dimension_mappings
                .as_ref()
                .map(|m| m[0].source_labels.len()),
            Some(2)
        );
        assert_eq!(
            a.metrics.histograms,
            Some(crate::native_histogram::HistogramMode::Both)
        );
        assert_eq!(a.metrics.native_histogram_bucket_factor, Some(1.5));
        assert_eq!(a.metrics.trace_id_label_name.as_deref(), Some("trace_id"));
        assert_eq!(
            overrides.push_for("team-a"),
            TenantPush {
                remote_write_headers: vec![("X-Team".into(), "a".into())],
                disable_collection: true,
            }
        );
        assert_eq!(overrides.push_for("someone"), TenantPush::default());
        // A tenant without an entry gets the wildcard's; an empty entry is an entry.
        let other = overrides.options_for("someone").unwrap();
        assert_eq!(other.graph.processors, Some(vec!["span-metrics".into()]));
        assert_eq!(
            overrides.options_for("quiet").unwrap().graph.processors,
            None
        );
        assert_eq!(
            unknown,
            vec![
                "team-a: ingestion".to_string(),
                "team-a: metrics_generator.ring_size".to_string()
            ]
        );
        assert!(Overrides::default().options_for("x").is_none());
    }

    #[test]
    fn a_file_graphgen_cannot_read_as_tempo_means_it_is_refused_with_why() {
        for (text, want) in [
            ("overrides: [", "not valid"),
            ("overrides:\n  a/b: {}\n", "a/b"),
            (
                "overrides:\n  t:\n    metrics_generator:\n      processors: service-graphs\n",
                "\"t\"",
            ),
            (
                "overrides:\n  t:\n    metrics_generator_processors: [service-graphs]\n",
                "legacy",
            ),
            (
                "overrides:\n  t:\n    metrics_generator:\n      remote_write_headers: {\"a b\": x}\n",
                "not a valid HTTP header",
            ),
        ] {
            let err = Overrides::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn only_a_change_graphgen_reads_counts_as_a_change() {
        let (before, _) = Overrides::parse(FILE).unwrap();
        let changed = |from: &str, to: &str| Overrides::parse(&FILE.replace(from, to)).unwrap().0;
        let zone = changed("dimensions: [region]", "dimensions: [zone]");
        assert_ne!(before.raw_for("team-a"), zone.raw_for("team-a"));
        assert_eq!(
            before.raw_for("someone"),
            zone.raw_for("someone"),
            "the wildcard did not change"
        );
        let ingestion = changed("rate_limit_bytes: 1000", "rate_limit_bytes: 2000");
        assert_eq!(
            before.raw_for("team-a"),
            ingestion.raw_for("team-a"),
            "not a key graphgen reads"
        );
        assert_eq!(
            before.raw_for("quiet"),
            serde_json::Value::Null,
            "an empty entry"
        );
        assert_eq!(
            Overrides::default().raw_for("quiet"),
            serde_json::Value::Null
        );
    }
}

//! The span-metrics processor: calls, latency and size per service, span name, kind and status,
//! as Tempo's metrics-generator `span-metrics` processor makes them. Grafana's service-graph
//! table reads these.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::attributes::{self, copy_into, sanitize_label_name};
use crate::label_limits::truncate_label;
use crate::native_histogram::NativeConfig;
use crate::processors::SpanMetricsSet;
use crate::series::{
    exponential_buckets, Family, FamilyKind, Histogram, HistogramLayout, Series, SeriesMap,
    SeriesValue,
};
use crate::series::{Cardinality, InvalidBuckets, RegistryLimits};
use crate::spans::{duration_sec, span_kind_name, status_code_name};

/// Labels Tempo sets itself; a dimension that sanitizes to one of them is prefixed with `__`.
const INTRINSIC_LABELS: [&str; 5] = [
    "service",
    "span_name",
    "span_kind",
    "status_code",
    "status_message",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Latency histogram bounds, in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Attributes (resource first, then span) copied into labels.
    pub dimensions: Vec<String>,
    /// A double attribute holding the sampling ratio; calls and latency count `1/ratio` times.
    pub span_multiplier_key: Option<String>,
    /// The bounds of the series; generator-wide.
    #[serde(skip)]
    pub limits: RegistryLimits,
    /// Native buckets for the latency histogram (the generator-wide `--histograms`).
    #[serde(skip)]
    pub native_histograms: Option<NativeConfig>,
    /// Which series are written (the `span-metrics*` names of `processors`).
    #[serde(skip)]
    pub metrics: SpanMetricsSet,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            histogram_buckets: exponential_buckets(0.002, 2.0, 14),
            dimensions: Vec::new(),
            span_multiplier_key: None,
            limits: RegistryLimits::default(),
            native_histograms: None,
            metrics: SpanMetricsSet::default(),
        }
    }
}

#[derive(Debug)]
struct SpanSeries {
    calls: f64,
    latency: Histogram,
    size: f64,
}

/// A problem with the span-metrics options, found before any span is processed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(transparent)]
    Buckets(#[from] InvalidBuckets),
}

#[derive(Debug)]
pub struct SpanMetrics {
    config: Config,
    histograms: HistogramLayout,
    series: SeriesMap<SpanSeries>,
    scratch: Vec<String>,
}

impl SpanMetrics {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        crate::series::validate_buckets(&config.histogram_buckets)?;
        let label_names: Vec<String> = INTRINSIC_LABELS[..4]
            .iter()
            .map(|s| s.to_string())
            .chain(config.dimensions.iter().map(|d| {
                let mut label = sanitize_label_name(d);
                truncate_label(&mut label, config.limits.max_label_name_length);
                if INTRINSIC_LABELS.contains(&label.as_str()) {
                    format!("__{label}")
                } else {
                    label
                }
            }))
            .collect();
        Ok(Self {
            histograms: HistogramLayout {
                bounds: config.histogram_buckets.as_slice().into(),
                native: config.native_histograms,
            },
            scratch: vec![String::new(); label_names.len()],
            series: SeriesMap::new(
                RegistryLimits {
                    max_series: config.limits.max_series.max(1),
                    ..config.limits
                },
                label_names,
            ),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts every span of every kind, including resources without `service.name`; `now`
    /// timestamps the latency exemplars.
    pub fn push(&mut self, batches: &[ResourceSpans], now: u64) {
        let Self {
            config,
            histograms,
            series,
            scratch,
            ..
        } = self;
        for rs in batches {
            let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            scratch[0].clear();
            if let Some(service) = attributes::service_name(resource) {
                attributes::write_value(service.value.as_ref(), &mut scratch[0]);
            }
            for span in rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()) {
                set(&mut scratch[1], &span.name);
                set(&mut scratch[2], span_kind_name(span.kind));
                set(
                    &mut scratch[3],
                    &status_code_name(span.status.as_ref().map_or(0, |s| s.code)),
                );
                let lists: [&[KeyValue]; 2] = [resource, &span.attributes];
                for (value, dimension) in scratch[4..].iter_mut().zip(&config.dimensions) {
                    if !copy_into(dimension, &lists, value) {
                        value.clear();
                    }
                }
                let multiplier = attributes::span_multiplier(
                    config.span_multiplier_key.as_deref(),
                    &span.attributes,
                    resource,
                );
                let Some(s) = series.get_or_insert_with(scratch, now, || SpanSeries {
                    calls: 0.0,
                    latency: Histogram::new(histograms, now),
                    size: 0.0,
                }) else {
                    continue;
                };
                s.calls += multiplier;
                let latency = duration_sec(span.start_time_unix_nano, span.end_time_unix_nano);
                s.latency
                    .observe_traced(histograms, latency, multiplier, &span.trace_id, now);
                s.size += span.encoded_len() as f64;
            }
        }
    }

    /// Drops the series no span has updated since `cutoff` (nanoseconds since the epoch).
    pub fn purge_series_older_than(&mut self, cutoff: u64) -> usize {
        self.series.purge_older_than(cutoff)
    }

    /// (label sets held, spans not recorded because `max_series` was reached)
    pub fn cardinality(&self) -> Cardinality {
        self.series.cardinality()
    }

    pub fn families(&self, now: u64) -> Vec<Family> {
        let (mut calls, mut latency, mut size) = (vec![], vec![], vec![]);
        for (labels, s, start_nanos) in self.series.iter() {
            calls.push(Series {
                labels: labels.clone(),
                value: SeriesValue::Counter(s.calls),
                start_nanos,
            });
            size.push(Series {
                labels: labels.clone(),
                value: SeriesValue::Counter(s.size),
                start_nanos,
            });
            latency.push(Series {
                labels,
                value: s.latency.value(&self.histograms, now),
                start_nanos: s.latency.start_nanos(start_nanos, now),
            });
        }
        let m = self.config.metrics;
        let mut families = Vec::new();
        if m.count {
            families.push(Family {
                name: "traces_spanmetrics_calls_total",
                help: "Spans seen, by service, span name, kind and status",
                unit: "",
                kind: FamilyKind::Counter,
                series: calls,
            });
        }
        if m.latency {
            families.push(Family {
                name: "traces_spanmetrics_latency",
                help: "Span duration in seconds",
                // No unit: Prometheus' OTLP translation would append `_seconds`, and Tempo's
                // name has none.
                unit: "",
                kind: FamilyKind::Histogram,
                series: latency,
            });
        }
        if m.size {
            families.push(Family {
                name: "traces_spanmetrics_size_total",
                help: "Protobuf-encoded size of the spans, in bytes",
                unit: "",
                kind: FamilyKind::Counter,
                series: size,
            });
        }
        families
    }
}

fn set(target: &mut String, value: &str) {
    target.clear();
    target.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};

    use crate::attributes::string_attribute as kv;

    #[test]
    fn spans_of_every_kind_are_counted_with_intrinsic_and_extra_labels() {
        let span = |kind, code, ms: u64| Span {
            name: "GET /cart".into(),
            kind,
            start_time_unix_nano: 0,
            end_time_unix_nano: ms * 1_000_000,
            attributes: vec![kv("http.request.method", "GET"), kv("service", "x")],
            status: Some(Status {
                code,
                ..Default::default()
            }),
            ..Default::default()
        };
        let spans = vec![span(2, 2, 3), span(2, 2, 5), span(1, 0, 1)];
        let size: usize = spans[..2].iter().map(|s| s.encoded_len()).sum();
        let batch = vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "cart")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut sm = SpanMetrics::new(Config {
            dimensions: vec!["http.request.method".into(), "service".into()],
            ..Config::default()
        })
        .unwrap();
        sm.push(&batch, 1);
        let samples: Vec<_> = sm.families(0).iter().flat_map(|f| f.samples()).collect();
        let find = |name: &str, kind: &str| {
            samples
                .iter()
                .find(|s| {
                    s.name == name && s.labels.iter().any(|(k, v)| k == "span_kind" && v == kind)
                })
                .unwrap_or_else(|| panic!("{name} {kind} missing"))
        };
        let calls = find("traces_spanmetrics_calls_total", "SPAN_KIND_SERVER");
        assert_eq!(calls.value, 2.0);
        let labels: Vec<(&str, &str)> = calls
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("service", "cart"),
                ("span_name", "GET /cart"),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("status_code", "STATUS_CODE_ERROR"),
                ("http_request_method", "GET"),
                ("__service", "x"),
            ]
        );
        assert_eq!(
            find("traces_spanmetrics_size_total", "SPAN_KIND_SERVER").value,
            size as f64
        );
        assert!(
            (find("traces_spanmetrics_latency_sum", "SPAN_KIND_SERVER").value - 0.008).abs()
                < 1e-12
        );
        assert_eq!(
            find("traces_spanmetrics_calls_total", "SPAN_KIND_INTERNAL").value,
            1.0
        );
    }
}

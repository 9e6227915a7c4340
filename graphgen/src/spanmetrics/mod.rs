//! The span-metrics processor: calls, latency and size per service, span name, kind and status,
//! as Tempo's metrics-generator `span-metrics` processor makes them. Grafana's service-graph
//! table reads these.

use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::attributes::{
    self, copy_into, copy_scanned_into, find_scanned, sanitize_label_name, Found, KeyId, KeySet,
};
use crate::filter::{FilterError, FilterPolicy, SpanFilter};
use crate::label_limits::truncate_label;
use crate::native_histogram::NativeConfig;
use crate::processors::SpanMetricsSet;
use crate::series::{
    exponential_buckets, Family, FamilyKind, Histogram, HistogramLayout, Labels, Series, SeriesMap,
    SeriesValue,
};
use crate::series::{Cardinality, InvalidBuckets, RegistryLimits};
use crate::span_names::{Sanitization, SpanNames};
use crate::spans::{duration_sec, span_kind_name, status_code_name};
use crate::wire::{Attributes, Batch};

/// Labels Tempo sets itself; a dimension that sanitizes to one of them is prefixed with `__`.
const INTRINSIC_LABELS: [&str; 5] = [
    "service",
    "span_name",
    "span_kind",
    "status_code",
    "status_message",
];
/// target_info also prefixes resource attributes named like these.
const JOB: &str = "job";
const INSTANCE: &str = "instance";

/// Which intrinsic labels span metrics carry (Tempo's `intrinsic_dimensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrinsicDimensions {
    pub service: bool,
    pub span_name: bool,
    pub span_kind: bool,
    pub status_code: bool,
    pub status_message: bool,
}

impl Default for IntrinsicDimensions {
    fn default() -> Self {
        Self {
            service: true,
            span_name: true,
            span_kind: true,
            status_code: true,
            status_message: false,
        }
    }
}

impl IntrinsicDimensions {
    /// Applies `name=true|false` settings over the defaults, as Tempo's `ApplyFromMap`.
    pub fn apply(&mut self, settings: &[(String, bool)]) -> Result<(), ConfigError> {
        for (name, on) in settings {
            match name.as_str() {
                "service" => self.service = *on,
                "span_name" => self.span_name = *on,
                "span_kind" => self.span_kind = *on,
                "status_code" => self.status_code = *on,
                "status_message" => self.status_message = *on,
                _ => return Err(ConfigError::UnknownIntrinsic(name.clone())),
            }
        }
        Ok(())
    }

    fn enabled(&self) -> [bool; 5] {
        [
            self.service,
            self.span_name,
            self.span_kind,
            self.status_code,
            self.status_message,
        ]
    }
}

/// Several attributes joined into one label (Tempo's `dimension_mappings`): the non-empty
/// values of `source_labels`, in order, joined by `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionMapping {
    pub name: String,
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub join: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Latency histogram bounds, in seconds.
    pub histogram_buckets: Vec<f64>,
    /// The intrinsic labels written.
    pub intrinsic_dimensions: IntrinsicDimensions,
    /// Attributes (resource first, then span) copied into labels.
    pub dimensions: Vec<String>,
    /// Labels made of several attributes.
    pub dimension_mappings: Vec<DimensionMapping>,
    /// Also write `traces_target_info` (one series per resource, its attributes as labels) and
    /// give span metrics `job` and `instance` labels to join it on.
    pub enable_target_info: bool,
    /// Resource attributes left out of `traces_target_info`.
    pub target_info_excluded_dimensions: Vec<String>,
    /// With target info on: the `instance` label (from `service.instance.id`).
    pub enable_instance_label: bool,
    /// Which spans are counted.
    pub filter_policies: Vec<FilterPolicy>,
    /// A double attribute holding the sampling ratio; calls and latency count `1/ratio` times.
    pub span_multiplier_key: Option<String>,
    /// Take the multiplier from the tracestate's `ot=th:…` sampling threshold first.
    pub enable_tracestate_span_multiplier: bool,
    /// Span names with ids in them replaced by their pattern (generator-wide in Tempo).
    #[serde(skip)]
    pub span_name_sanitization: Sanitization,
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
            intrinsic_dimensions: IntrinsicDimensions::default(),
            dimensions: Vec::new(),
            dimension_mappings: Vec::new(),
            enable_target_info: false,
            target_info_excluded_dimensions: Vec::new(),
            enable_instance_label: true,
            filter_policies: Vec::new(),
            span_multiplier_key: None,
            enable_tracestate_span_multiplier: false,
            span_name_sanitization: Sanitization::Disabled,
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
    #[error("{0:?} is not an intrinsic dimension (service, span_name, span_kind, status_code, status_message)")]
    UnknownIntrinsic(String),
    #[error("dimension mapping {name:?} makes the label {label:?}, which another label has")]
    MappingCollides { name: String, label: String },
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// Where a label's value comes from. Several sources may write one label (two dimensions that
/// sanitize alike, a `job` dimension with target info on): in this order, the last write wins
/// and an empty one removes the label, as Tempo's label builder does.
#[derive(Debug, Clone)]
enum Source {
    Service,
    SpanName,
    SpanKind,
    StatusCode,
    StatusMessage,
    Dimension(KeyId),
    /// A mapping's index, and the keys of its source attributes.
    Mapping(usize, Vec<KeyId>),
    /// Written only when not empty, as Tempo adds them.
    Job,
    Instance,
}

#[derive(Debug, Clone)]
struct Writer {
    label: usize,
    source: Source,
    /// The first writer of its label, which clears it when it has nothing to write.
    first: bool,
}

/// `traces_target_info`: one series per distinct resource, made once per resource of a request
/// (Tempo's `buildAndSetTargetInfoLabels`).
#[derive(Debug, Default)]
struct TargetInfo {
    /// Sorted label pairs → when the series was made. Tempo does not refresh an existing
    /// target_info series, so it goes stale `stale_duration` after it was made and is made
    /// again by the next span; kept so here.
    series: HashMap<Vec<(String, String)>, u64>,
    refused: u64,
    excluded: HashSet<String>,
    instance_label: bool,
    /// Resources seen before, by a hash of their attributes: the labels of their series, or
    /// `None` when they make none. A resource seen again then costs a hash, not a label set
    /// built and sorted (nothing is allocated). At most `2 × max_series` are remembered.
    known: HashMap<u64, Option<Vec<(String, String)>>>,
    hasher: ahash::RandomState,
    /// An attribute value as a string, reused.
    value: String,
}

#[derive(Debug)]
pub struct SpanMetrics {
    config: Config,
    histograms: HistogramLayout,
    series: SeriesMap<SpanSeries>,
    writers: Vec<Writer>,
    filter: SpanFilter,
    filtered: u64,
    target_info: Option<TargetInfo>,
    /// Each label's value for the current span, written by its writers.
    scratch: Vec<String>,
    /// Every label has one writer, none a mapping or a sanitized span name: the values are
    /// then packed into the series key straight from the request, not copied to `scratch`
    /// first (only dimensions are, as attribute values are written out as strings).
    packs_borrowed: bool,
    /// The labels copied to be cut or limited when they cannot be packed as they are.
    cut_scratch: Vec<String>,
    /// The current resource's service labels, reused across pushes.
    service_labels: ServiceLabels,
    /// The span-name patterns, and the `span_name` label they rewrite.
    span_names: SpanNames,
    span_name_label: Option<usize>,
    /// The attribute keys the dimensions read, and where the current resource and span have
    /// them.
    keys: KeySet,
    resource_found: Found,
    span_found: Found,
}

/// A dimension's label name as Tempo makes it: sanitized, cut, `__`-prefixed when it is
/// named like one of `reserved`.
fn label_name(name: &str, reserved: &[&str], max_len: usize) -> String {
    let mut label = sanitize_label_name(name);
    truncate_label(&mut label, max_len);
    if reserved.contains(&label.as_str()) {
        format!("__{label}")
    } else {
        label
    }
}

impl SpanMetrics {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        crate::series::validate_buckets(&config.histogram_buckets)?;
        let filter = SpanFilter::new(&config.filter_policies)?;
        let max_name = config.limits.max_label_name_length;
        let mut names: Vec<String> = Vec::new();
        let mut writers = Vec::new();
        let mut keys = KeySet::default();
        let mut add = |names: &mut Vec<String>, name: String, source: Source| {
            let (label, first) = match names.iter().position(|n| *n == name) {
                Some(label) => (label, false),
                None => {
                    names.push(name);
                    (names.len() - 1, true)
                }
            };
            writers.push(Writer {
                label,
                source,
                first,
            });
        };
        let intrinsic_sources = [
            Source::Service,
            Source::SpanName,
            Source::SpanKind,
            Source::StatusCode,
            Source::StatusMessage,
        ];
        for ((name, on), source) in INTRINSIC_LABELS
            .iter()
            .zip(config.intrinsic_dimensions.enabled())
            .zip(intrinsic_sources)
        {
            if on {
                add(&mut names, name.to_string(), source);
            }
        }
        for d in &config.dimensions {
            let name = label_name(d, &INTRINSIC_LABELS, max_name);
            add(&mut names, name, Source::Dimension(keys.add(d)));
        }
        for (i, m) in config.dimension_mappings.iter().enumerate() {
            let label = label_name(&m.name, &INTRINSIC_LABELS, max_name);
            // Tempo refuses a mapping that collides with any other label (validation.ValidateDimensions).
            if names.contains(&label) {
                return Err(ConfigError::MappingCollides {
                    name: m.name.clone(),
                    label,
                });
            }
            let sources = keys.add_all(&m.source_labels);
            add(&mut names, label, Source::Mapping(i, sources));
        }
        if config.enable_target_info {
            add(&mut names, JOB.into(), Source::Job);
            if config.enable_instance_label {
                add(&mut names, INSTANCE.into(), Source::Instance);
            }
        }
        // Only looked at when sanitization is on: off, the hot path skips it.
        let span_name_label = (config.span_name_sanitization != Sanitization::Disabled)
            .then(|| names.iter().position(|n| n == "span_name"))
            .flatten();
        let packs_borrowed = span_name_label.is_none()
            && writers
                .iter()
                .all(|w| w.first && !matches!(w.source, Source::Mapping(..)));
        let target_info = config.enable_target_info.then(|| TargetInfo {
            excluded: config
                .target_info_excluded_dimensions
                .iter()
                .cloned()
                .collect(),
            instance_label: config.enable_instance_label,
            ..TargetInfo::default()
        });
        Ok(Self {
            histograms: HistogramLayout {
                bounds: config.histogram_buckets.as_slice().into(),
                native: config.native_histograms,
            },
            scratch: vec![String::new(); names.len()],
            packs_borrowed,
            cut_scratch: vec![String::new(); names.len()],
            series: SeriesMap::new(
                RegistryLimits {
                    max_series: config.limits.max_series.max(1),
                    ..config.limits
                },
                names,
            ),
            writers,
            filter,
            filtered: 0,
            target_info,
            service_labels: ServiceLabels::default(),
            span_names: SpanNames::new(config.span_name_sanitization),
            span_name_label,
            keys,
            resource_found: Found::default(),
            span_found: Found::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Spans left out by `filter_policies`.
    pub fn filtered_spans(&self) -> u64 {
        self.filtered
    }

    /// The span-name patterns (`span_name_sanitization`).
    pub fn span_names(&self) -> &SpanNames {
        &self.span_names
    }

    /// Counts every span of every kind the filter keeps, including resources without
    /// `service.name`; `now` timestamps the latency exemplars.
    pub fn push(&mut self, batch: &Batch<'_>, now: u64) {
        let Self {
            config,
            histograms,
            series,
            writers,
            filter,
            filtered,
            target_info,
            scratch,
            packs_borrowed,
            cut_scratch,
            service_labels,
            span_names,
            span_name_label,
            keys,
            resource_found,
            span_found,
        } = self;
        for (resource, spans) in batch.resources() {
            service_labels.read(resource, target_info.is_some());
            keys.scan(resource, resource_found);
            let mut target_info_done = false;
            for span in spans {
                let span = &span;
                if !filter.keeps(resource, span) {
                    *filtered += 1;
                    continue;
                }
                let lists = keys.scan_span(resource, resource_found, span.attributes, span_found);
                let multiplier = attributes::multiplier(
                    config.span_multiplier_key.as_deref(),
                    config.enable_tracestate_span_multiplier,
                    span,
                    resource,
                );
                let new = || SpanSeries {
                    calls: 0.0,
                    latency: Histogram::new(histograms, now),
                    size: 0.0,
                };
                let found = if *packs_borrowed {
                    for w in writers.iter() {
                        if let Source::Dimension(key) = w.source {
                            let value = &mut scratch[w.label];
                            if !copy_scanned_into(key, &lists, value) {
                                value.clear();
                            }
                        }
                    }
                    let status = status_code_name(span.status_code);
                    // One writer a label, in label order (see `packs_borrowed`). This match and the
                    // writers' below stay apart on purpose: one function shared by both measured
                    // 2.5 % more instructions a span (callgrind, steady state).
                    let values = writers.iter().map(|w| match &w.source {
                        Source::Service => service_labels.service.as_str(),
                        Source::SpanName => span.name,
                        Source::SpanKind => span_kind_name(span.kind),
                        Source::StatusCode => &status,
                        Source::StatusMessage => span.status_message,
                        Source::Dimension(_) | Source::Mapping(..) => scratch[w.label].as_str(),
                        Source::Job => service_labels.job.as_str(),
                        Source::Instance => service_labels.instance.as_str(),
                    });
                    series.get_or_insert_with_values(values, cut_scratch, now, new)
                } else {
                    // Every writer sets its label whole, so nothing of the previous span is left.
                    for w in writers.iter() {
                        let value = &mut scratch[w.label];
                        match &w.source {
                            Source::Service => set(value, &service_labels.service),
                            Source::SpanName => set(value, span.name),
                            Source::SpanKind => set(value, span_kind_name(span.kind)),
                            Source::StatusCode => set(value, &status_code_name(span.status_code)),
                            Source::StatusMessage => set(value, span.status_message),
                            Source::Dimension(key) => {
                                if !copy_scanned_into(*key, &lists, value) {
                                    value.clear();
                                }
                            }
                            Source::Mapping(i, sources) => {
                                let m = &config.dimension_mappings[*i];
                                value.clear();
                                for source in sources {
                                    if let Some(kv) = find_scanned(*source, &lists) {
                                        let mark = value.len();
                                        if mark > 0 {
                                            value.push_str(&m.join);
                                        }
                                        let start = value.len();
                                        attributes::write_value(kv.value(), value);
                                        if value.len() == start {
                                            value.truncate(mark);
                                        }
                                    }
                                }
                            }
                            Source::Job if !service_labels.job.is_empty() => {
                                set(value, &service_labels.job)
                            }
                            Source::Instance if !service_labels.instance.is_empty() => {
                                set(value, &service_labels.instance)
                            }
                            Source::Job | Source::Instance if w.first => value.clear(),
                            Source::Job | Source::Instance => {}
                        }
                    }
                    if let Some(label) = *span_name_label {
                        span_names.sanitize(&mut scratch[label]);
                    }
                    series.get_or_insert_with(scratch, now, new)
                };
                if let Some(s) = found {
                    s.calls += multiplier;
                    let latency = duration_sec(span.start_time_unix_nano, span.end_time_unix_nano);
                    s.latency
                        .observe_traced(histograms, latency, multiplier, span.trace_id, now);
                    // Through i64, exact (a length is below 2^63) and one instruction: x86-64's baseline
                    // converts an unsigned 64-bit integer with two constants from memory.
                    s.size += span.encoded_len as i64 as f64;
                }
                if let (Some(info), false) = (target_info.as_mut(), target_info_done) {
                    target_info_done = true;
                    info.record(resource, service_labels, &config.limits, series.len(), now);
                }
            }
        }
    }

    /// [`SpanMetrics::push`] for requests built as prost structs.
    #[cfg(test)]
    pub(crate) fn push_batches(
        &mut self,
        batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
        now: u64,
    ) {
        Batch::of_batches(batches, |batch| self.push(batch, now));
    }

    /// Drops the series no span has updated since `cutoff` (nanoseconds since the epoch).
    pub fn purge_series_older_than(&mut self, cutoff: u64) -> usize {
        let info = self.target_info.as_mut().map_or(0, |info| {
            let before = info.series.len();
            info.series.retain(|_, made| *made >= cutoff);
            let series = &info.series;
            info.known
                .retain(|_, key| key.as_ref().is_none_or(|k| series.contains_key(k)));
            before - info.series.len()
        });
        self.series.purge_older_than(cutoff) + info
    }

    /// (label sets held, spans not recorded because `max_series` was reached); target_info
    /// series count in both.
    pub fn cardinality(&self) -> Cardinality {
        let mut c = self.series.cardinality();
        if let Some(info) = &self.target_info {
            c.series += info.series.len();
            c.refused += info.refused;
        }
        c
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
        if let Some(info) = &self.target_info {
            families.push(Family {
                name: "traces_target_info",
                help: "One series per resource that sent spans, its attributes as labels; join on job and instance",
                unit: "",
                kind: FamilyKind::Gauge,
                series: info
                    .series
                    .iter()
                    .map(|(labels, made)| Series {
                        labels: Labels::from_pairs(labels.iter().map(|(n, v)| (n.as_str(), v))),
                        value: SeriesValue::Gauge(1.0),
                        start_nanos: *made,
                    })
                    .collect(),
            });
        }
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

/// A resource's `service`, `job` and `instance` values, as Tempo's `FindServiceLabels`: the
/// first `service.name`, `service.namespace` and `service.instance.id`; `job` is
/// `namespace/service`, or the service alone.
#[derive(Debug, Default)]
struct ServiceLabels {
    service: String,
    job: String,
    instance: String,
}

impl ServiceLabels {
    /// Reads `service`, and `job` and `instance` when they are used (target info on).
    fn read(&mut self, resource: Attributes<'_>, job_and_instance: bool) {
        self.service.clear();
        copy_into("service.name", &[resource], &mut self.service);
        if !job_and_instance {
            return;
        }
        self.instance.clear();
        copy_into("service.instance.id", &[resource], &mut self.instance);
        self.job.clear();
        if !self.service.is_empty() {
            if copy_into("service.namespace", &[resource], &mut self.job) && !self.job.is_empty() {
                self.job.push('/');
            }
            self.job.push_str(&self.service);
        }
    }
}

impl TargetInfo {
    /// The target_info series of `resource`, made if new and if room is left beside the
    /// `span_series` (one `max_series` for the processor, as Tempo's one registry limit).
    fn record(
        &mut self,
        resource: Attributes<'_>,
        service: &ServiceLabels,
        limits: &RegistryLimits,
        span_series: usize,
        now: u64,
    ) {
        const RESERVED: [&str; 7] = [
            "service",
            "span_name",
            "span_kind",
            "status_code",
            "status_message",
            JOB,
            INSTANCE,
        ];
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut hasher = self.hasher.build_hasher();
        for kv in resource.iter() {
            kv.key().hash(&mut hasher);
            self.value.clear();
            attributes::write_value(kv.value(), &mut self.value);
            self.value.hash(&mut hasher);
        }
        let fingerprint = hasher.finish();
        match self.known.get(&fingerprint) {
            Some(None) => return,
            Some(Some(key)) if self.series.contains_key(key) => return,
            _ => {}
        }
        let remember = self.known.len() < 2 * limits.max_series.max(1);
        // Last write wins, an empty value removes the label (Tempo's label builder).
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        let mut set = |name: String, mut value: String| {
            truncate_label(&mut value, limits.max_label_value_length);
            if value.is_empty() {
                labels.remove(&name);
            } else {
                labels.insert(name, value);
            }
        };
        for kv in resource.iter() {
            let key = kv.key();
            // Out-of-spec keys Tempo skips, and the service attributes job and instance carry.
            if key.is_empty()
                || key.starts_with(|c: char| c.is_ascii_digit())
                || matches!(
                    key,
                    "service.name" | "service.namespace" | "service.instance.id"
                )
                || self.excluded.contains(key)
            {
                continue;
            }
            let mut value = String::new();
            attributes::write_value(kv.value(), &mut value);
            set(
                label_name(key, &RESERVED, limits.max_label_name_length),
                value,
            );
        }
        let mut identifying = 0;
        if !service.job.is_empty() {
            set(JOB.into(), service.job.clone());
            identifying += 1;
        }
        if !service.instance.is_empty() && self.instance_label {
            set(INSTANCE.into(), service.instance.clone());
            identifying += 1;
        }
        // Only a resource with an identity and something more to say.
        if identifying == 0 || labels.len() <= identifying {
            if remember {
                self.known.insert(fingerprint, None);
            }
            return;
        }
        let key: Vec<(String, String)> = labels.into_iter().collect();
        if !self.series.contains_key(&key) {
            if span_series + self.series.len() >= limits.max_series.max(1) {
                self.refused += 1;
                return;
            }
            self.series.insert(key.clone(), now);
        }
        if remember {
            self.known.insert(fingerprint, Some(key));
        }
    }
}

fn set(target: &mut String, value: &str) {
    target.clear();
    target.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

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
        sm.push_batches(&batch, 1);
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

    fn batch(resource: Vec<KeyValue>, spans: Vec<Span>) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn error_span(name: &str, attributes: Vec<KeyValue>) -> Span {
        Span {
            name: name.into(),
            kind: 2,
            attributes,
            status: Some(Status {
                code: 2,
                message: "timeout".into(),
            }),
            ..Default::default()
        }
    }

    /// Every series of `family`, as sorted `name=value` label lists with their values.
    fn series_of(sm: &SpanMetrics, family: &str) -> Vec<(Vec<String>, f64)> {
        let mut out: Vec<(Vec<String>, f64)> = sm
            .families(0)
            .iter()
            .flat_map(|f| f.samples())
            .filter(|s| s.name == family)
            .map(|s| {
                let mut labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                (labels, s.value)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn intrinsic_dimensions_turn_labels_on_and_off() {
        let mut intrinsic = IntrinsicDimensions::default();
        intrinsic
            .apply(&[("span_kind".into(), false), ("status_message".into(), true)])
            .unwrap();
        let mut sm = SpanMetrics::new(Config {
            intrinsic_dimensions: intrinsic,
            ..Config::default()
        })
        .unwrap();
        sm.push_batches(
            &batch(
                vec![kv("service.name", "cart")],
                vec![error_span("GET", vec![])],
            ),
            1,
        );
        assert_eq!(
            series_of(&sm, "traces_spanmetrics_calls_total"),
            vec![(
                strings(&[
                    "service=cart",
                    "span_name=GET",
                    "status_code=STATUS_CODE_ERROR",
                    "status_message=timeout"
                ]),
                1.0
            )]
        );
        assert_eq!(
            intrinsic.apply(&[("duration".into(), true)]),
            Err(ConfigError::UnknownIntrinsic("duration".into()))
        );
    }

    #[test]
    fn dimension_mappings_join_the_values_found_and_may_not_collide() {
        let mapping = |name: &str| DimensionMapping {
            name: name.into(),
            source_labels: strings(&["http.request.method", "missing", "server.address"]),
            join: " ".into(),
        };
        let mut sm = SpanMetrics::new(Config {
            dimension_mappings: vec![mapping("http.endpoint")],
            ..Config::default()
        })
        .unwrap();
        let spans = vec![
            error_span(
                "a",
                vec![
                    kv("http.request.method", "GET"),
                    kv("server.address", "api"),
                ],
            ),
            // Only one value: no separator; none: an absent label.
            error_span("b", vec![kv("server.address", "api")]),
            error_span("c", vec![kv("http.request.method", "")]),
        ];
        sm.push_batches(&batch(vec![kv("service.name", "cart")], spans), 1);
        let endpoints: Vec<Vec<String>> = series_of(&sm, "traces_spanmetrics_calls_total")
            .into_iter()
            .map(|(labels, _)| {
                labels
                    .into_iter()
                    .filter(|l| l.starts_with("http_"))
                    .collect()
            })
            .collect();
        assert_eq!(
            endpoints,
            vec![
                strings(&["http_endpoint=GET api"]),
                strings(&["http_endpoint=api"]),
                strings(&[])
            ]
        );
        for (dimensions, mappings) in [
            (strings(&["endpoint"]), vec![mapping("endpoint")]),
            (vec![], vec![mapping("a.b"), mapping("a_b")]),
        ] {
            let err = SpanMetrics::new(Config {
                dimensions,
                dimension_mappings: mappings,
                ..Config::default()
            })
            .unwrap_err();
            assert!(matches!(err, ConfigError::MappingCollides { .. }), "{err}");
        }
        // Named like an intrinsic label, it is prefixed, as a dimension is, and so does not.
        assert!(SpanMetrics::new(Config {
            dimension_mappings: vec![mapping("span.name")],
            ..Config::default()
        })
        .is_ok());
    }

    #[test]
    fn target_info_joins_resource_attributes_on_job_and_instance() {
        let resource = vec![
            kv("service.name", "cart"),
            kv("service.namespace", "shop"),
            kv("service.instance.id", "cart-1"),
            kv("deployment.environment", "prod"),
            kv("k8s.pod.name", "cart-7f"),
            crate::attributes::int_attribute("process.pid", 42),
            kv("9lives", "skipped"),
            kv("job", "batch"),
            kv("empty", ""),
        ];
        for (instance_label, excluded, want_info, want_span_labels) in [
            (
                true,
                vec![],
                vec![
                    "__job=batch",
                    "deployment_environment=prod",
                    "instance=cart-1",
                    "job=shop/cart",
                    "k8s_pod_name=cart-7f",
                    "process_pid=42",
                ],
                vec!["instance=cart-1", "job=shop/cart"],
            ),
            (
                false,
                strings(&["k8s.pod.name", "job"]),
                vec![
                    "deployment_environment=prod",
                    "job=shop/cart",
                    "process_pid=42",
                ],
                vec!["job=shop/cart"],
            ),
        ] {
            let mut sm = SpanMetrics::new(Config {
                enable_target_info: true,
                enable_instance_label: instance_label,
                target_info_excluded_dimensions: excluded,
                ..Config::default()
            })
            .unwrap();
            let spans = vec![error_span("a", vec![]), error_span("b", vec![])];
            sm.push_batches(&batch(resource.clone(), spans), 1);
            assert_eq!(
                series_of(&sm, "traces_target_info"),
                vec![(strings(&want_info), 1.0)],
                "one series for the resource, value 1"
            );
            let calls = series_of(&sm, "traces_spanmetrics_calls_total");
            assert_eq!(calls.len(), 2);
            for (labels, _) in calls {
                let joined: Vec<&String> = labels
                    .iter()
                    .filter(|l| l.starts_with("job=") || l.starts_with("instance="))
                    .collect();
                assert_eq!(joined, want_span_labels.iter().collect::<Vec<_>>());
            }
        }
        // Nothing but its identity: no target_info.
        let mut sm = SpanMetrics::new(Config {
            enable_target_info: true,
            ..Config::default()
        })
        .unwrap();
        sm.push_batches(
            &batch(
                vec![kv("service.name", "cart")],
                vec![error_span("a", vec![])],
            ),
            1,
        );
        assert!(series_of(&sm, "traces_target_info").is_empty());
    }

    #[test]
    fn target_info_is_bounded_and_goes_stale_from_when_it_was_made() {
        let mut sm = SpanMetrics::new(Config {
            enable_target_info: true,
            limits: RegistryLimits {
                max_series: 2,
                ..RegistryLimits::default()
            },
            ..Config::default()
        })
        .unwrap();
        for (i, now) in [(1, 10), (2, 20)] {
            let resource = vec![kv("service.name", "cart"), kv("pod", &format!("p{i}"))];
            sm.push_batches(&batch(resource, vec![error_span("a", vec![])]), now);
        }
        // One span series is held: room for one target_info; the second is refused.
        let c = sm.cardinality();
        assert_eq!((c.series, c.refused), (2, 1));
        // Seen again later, it is not refreshed (as Tempo): stale from when it was made.
        sm.push_batches(
            &batch(
                vec![kv("service.name", "cart"), kv("pod", "p1")],
                vec![error_span("a", vec![])],
            ),
            30,
        );
        assert_eq!(sm.purge_series_older_than(11), 1);
        assert!(series_of(&sm, "traces_target_info").is_empty());
        // The next span of that resource makes it again (the resource was known, its series gone).
        sm.push_batches(
            &batch(
                vec![kv("service.name", "cart"), kv("pod", "p1")],
                vec![error_span("a", vec![])],
            ),
            40,
        );
        assert_eq!(
            series_of(&sm, "traces_target_info"),
            vec![(strings(&["job=cart", "pod=p1"]), 1.0)]
        );
    }

    #[test]
    fn filter_policies_leave_spans_out_and_count_them() {
        let policies: Vec<FilterPolicy> = serde_json::from_str(
            r#"[{"exclude": {"match_type": "regex", "attributes": [{"key": "span.http.route", "value": "^/health"}]}}]"#,
        )
        .unwrap();
        let mut sm = SpanMetrics::new(Config {
            filter_policies: policies,
            enable_target_info: true,
            ..Config::default()
        })
        .unwrap();
        let spans = vec![
            error_span("health", vec![kv("http.route", "/healthz")]),
            error_span("order", vec![kv("http.route", "/orders")]),
        ];
        sm.push_batches(
            &batch(vec![kv("service.name", "cart"), kv("pod", "p")], spans),
            1,
        );
        let calls = series_of(&sm, "traces_spanmetrics_calls_total");
        assert_eq!(calls.len(), 1);
        assert!(calls[0].0.contains(&"span_name=order".to_string()));
        assert_eq!(sm.filtered_spans(), 1);
        // A resource whose spans are all filtered out has no target_info.
        sm.push_batches(
            &batch(
                vec![kv("service.name", "probe"), kv("pod", "q")],
                vec![error_span("health", vec![kv("http.route", "/health")])],
            ),
            2,
        );
        assert_eq!(series_of(&sm, "traces_target_info").len(), 1);
    }

    #[test]
    fn values_packed_from_the_request_make_the_same_series_as_values_written_first() {
        let span = |name: &str, code: i32, attributes: Vec<KeyValue>| Span {
            name: name.into(),
            kind: 3,
            end_time_unix_nano: 2_000_000,
            attributes,
            status: Some(Status {
                code,
                message: "upstream reset".into(),
            }),
            ..Default::default()
        };
        let resource = |attributes: Vec<KeyValue>, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        let batch = vec![
            resource(
                vec![
                    kv("service.name", "cart"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "cart-1"),
                ],
                vec![
                    span("GET", 1, vec![kv("db.system", "postgresql")]),
                    // An int attribute, written out; an unknown status code, spelled out.
                    span(
                        "GET",
                        7,
                        vec![crate::attributes::int_attribute("retries", 3)],
                    ),
                    // Over the value length limit: cut, by the copying path.
                    span("a span name far over twenty bytes", 2, vec![]),
                ],
            ),
            // No instance, no namespace: `job` is the service alone, `instance` empty.
            resource(
                vec![kv("service.name", "pay")],
                vec![span("POST", 0, vec![kv("retries", "x")])],
            ),
        ];
        let config = || Config {
            intrinsic_dimensions: IntrinsicDimensions {
                status_message: true,
                ..IntrinsicDimensions::default()
            },
            dimensions: vec!["db.system".into(), "retries".into()],
            enable_target_info: true,
            enable_instance_label: true,
            limits: RegistryLimits {
                max_label_value_length: 20,
                ..Config::default().limits
            },
            ..Config::default()
        };
        let mut packed = SpanMetrics::new(config()).unwrap();
        assert!(packed.packs_borrowed);
        let mut written = SpanMetrics::new(config()).unwrap();
        written.packs_borrowed = false;
        for _ in 0..2 {
            packed.push_batches(&batch, 1);
            written.push_batches(&batch, 1);
        }
        let calls = series_of(&packed, "traces_spanmetrics_calls_total");
        assert_eq!(calls.len(), 4);
        assert!(calls.iter().all(|(_, n)| *n == 2.0));
        for family in [
            "traces_spanmetrics_calls_total",
            "traces_spanmetrics_size_total",
            "traces_spanmetrics_latency_count",
        ] {
            assert_eq!(
                series_of(&packed, family),
                series_of(&written, family),
                "{family}"
            );
        }
        assert!(calls
            .iter()
            .any(|(labels, _)| labels.contains(&"retries=3".to_string())
                && labels.contains(&"status_code=7".to_string())
                && labels.contains(&"job=shop/cart".to_string())));
        assert_eq!(packed.series.truncated(), 2);
        assert_eq!(written.series.truncated(), 2);
        // A label written by a mapping (or a sanitized span name) is made in `scratch`.
        let mapped = SpanMetrics::new(Config {
            dimension_mappings: vec![DimensionMapping {
                name: "route".into(),
                source_labels: vec!["db.system".into()],
                join: "/".into(),
            }],
            ..config()
        })
        .unwrap();
        assert!(!mapped.packs_borrowed);
    }
}

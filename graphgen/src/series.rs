//! The metric series the processors keep, and the snapshot they hand to exporters.
//!
//! A family has fixed label names; a series is identified by its label values in that order.
//! An empty value means "label absent", as Prometheus treats it.

use hashbrown::hash_table::{self, HashTable};

use crate::label_limits::{truncate_label, PerLabelLimiter};
use crate::native_histogram::{
    HistogramMode, NativeBuckets, NativeConfig, SparseBuckets, ZERO_THRESHOLD,
};
use std::sync::Arc;

/// How a processor's latency histograms are kept: classic bounds, and native buckets when
/// native histograms are written.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramLayout {
    pub bounds: Arc<[f64]>,
    pub native: Option<NativeConfig>,
}

impl HistogramLayout {
    pub fn classic(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.into(),
            native: None,
        }
    }

    pub fn new(bounds: &[f64], mode: HistogramMode, native: NativeConfig) -> Self {
        Self {
            bounds: bounds.into(),
            native: mode.native().then_some(native),
        }
    }
}

/// A latency histogram: classic buckets with float counts (so span multipliers can weigh
/// observations), and native buckets when its layout asks for them.
///
/// With native buckets it behaves as client_golang's histogram inside Tempo's
/// `nativeHistogram` (see [`crate::native_histogram`]): a span of multiplier `m` is observed
/// `ceil(m)` times (Tempo's loop `for i := 0.0; i < multiplier; i++`,
/// `native_histogram.go:218-233`), and a reset clears the classic buckets, count and sum too.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last entry is the `+Inf` bucket.
    counts: Vec<f64>,
    pub sum: f64,
    pub count: f64,
    /// The latest observation with the trace it came from, for Grafana's exemplar links.
    pub exemplar: Option<Exemplar>,
    /// Boxed: classic-only histograms (the default) stay as small as before.
    native: Option<Box<NativeState>>,
}

#[derive(Debug, Clone, PartialEq)]
struct NativeState {
    buckets: NativeBuckets,
    /// When the histogram was created or last reset.
    last_reset: u64,
    /// A reset scheduled after the resolution was lowered (client_golang's `afterFunc`),
    /// applied when the clock passes it.
    reset_at: Option<u64>,
}

/// How many whole observations Tempo's loop `for i := 0.0; i < multiplier; i++` makes:
/// ⌈m⌉, none for m ≤ 0 or NaN; capped at 2^53, where that loop would never end (`i + 1 == i`).
fn whole_observations(multiplier: f64) -> u64 {
    if multiplier > 0.0 {
        multiplier.ceil().min(9_007_199_254_740_992.0) as u64
    } else {
        0
    }
}

/// One observation tied to its trace (OTLP exemplar; Prometheus stores it with `trace_id`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub value: f64,
    pub time_nanos: u64,
}

/// The native buckets of a histogram snapshot; count and sum are the histogram's.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeValue {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub positive: SparseBuckets,
    pub negative: SparseBuckets,
}

/// The classic bucket of `value`: how many of the (ascending) `bounds` are below it. Up to 32
/// bounds (Tempo's defaults have 8 and 14) they are all compared, with no branch and no chain
/// of dependent compares, which a binary search is (a third of `observe`'s time); beyond,
/// the binary search.
fn bucket_of(bounds: &[f64], value: f64) -> usize {
    if bounds.len() <= 32 {
        bounds.iter().map(|bound| usize::from(*bound < value)).sum()
    } else {
        bounds.partition_point(|bound| *bound < value)
    }
}

impl Histogram {
    pub fn new(layout: &HistogramLayout, now: u64) -> Self {
        Self {
            counts: vec![0.0; layout.bounds.len() + 1],
            sum: 0.0,
            count: 0.0,
            exemplar: None,
            native: layout.native.map(|config| {
                Box::new(NativeState {
                    buckets: NativeBuckets::new(config.schema),
                    last_reset: now,
                    reset_at: None,
                })
            }),
        }
    }

    /// Records `value` with weight `weight` (1 for an unsampled span) in the classic buckets.
    fn observe_classic(&mut self, bounds: &[f64], value: f64, weight: f64) {
        let bucket = bucket_of(bounds, value);
        self.counts[bucket] += weight;
        self.sum += value * weight;
        self.count += weight;
    }

    /// Records `value` with weight `weight` (1 for an unsampled span).
    pub fn observe(&mut self, layout: &HistogramLayout, value: f64, weight: f64, now: u64) {
        let Some(config) = &layout.native else {
            return self.observe_classic(&layout.bounds, value, weight);
        };
        self.apply_due_reset(layout, now);
        let times = whole_observations(weight);
        if times == 0 {
            return;
        }
        self.observe_native(layout, config, value, now);
        // Every observation after the first lands in a bucket that now exists (kept, merged
        // or observed again after a reset), so the limit cannot act again: the rest is added
        // at once, and a huge multiplier costs no more than 1.
        let more = times - 1;
        if more > 0 {
            self.observe_classic(&layout.bounds, value, more as f64);
            if let Some(native) = &mut self.native {
                native.buckets.observe_n(value, more);
            }
        }
    }

    /// One observation with native buckets, then client_golang's bucket limit.
    fn observe_native(
        &mut self,
        layout: &HistogramLayout,
        config: &NativeConfig,
        value: f64,
        now: u64,
    ) {
        self.observe_classic(&layout.bounds, value, 1.0);
        let native = self
            .native
            .as_mut()
            .expect("a native layout has native buckets");
        native.buckets.observe(value);
        let limit = config.max_bucket_number as usize;
        if limit == 0 || native.buckets.populated() <= limit {
            return;
        }
        let min_reset = config.min_reset_nanos;
        if min_reset > 0
            && native.reset_at.is_none()
            && now.saturating_sub(native.last_reset) >= min_reset
        {
            // `maybeReset`: start over, keeping the latest observation.
            self.reset(layout, now);
            return self.observe_classic_and_native(&layout.bounds, value);
        }
        let native = self.native.as_mut().expect("checked above");
        if min_reset > 0 && native.reset_at.is_none() {
            native.reset_at = Some(native.last_reset.saturating_add(min_reset));
        }
        native.buckets.halve_resolution();
    }

    fn observe_classic_and_native(&mut self, bounds: &[f64], value: f64) {
        self.observe_classic(bounds, value, 1.0);
        if let Some(native) = &mut self.native {
            native.buckets.observe(value);
        }
    }

    /// Clears everything as of `at`, back to the configured schema (the exemplar stays).
    fn reset(&mut self, layout: &HistogramLayout, at: u64) {
        let exemplar = self.exemplar;
        *self = Self::new(layout, at);
        self.exemplar = exemplar;
    }

    /// The time of a scheduled reset the clock has passed.
    fn due_reset(&self, now: u64) -> Option<u64> {
        let at = self.native.as_ref()?.reset_at?;
        (now >= at).then_some(at)
    }

    fn apply_due_reset(&mut self, layout: &HistogramLayout, now: u64) {
        if let Some(at) = self.due_reset(now) {
            self.reset(layout, at);
        }
    }

    /// Records `value` and keeps it as the exemplar of `trace_id` (if that is a valid id).
    pub fn observe_traced(
        &mut self,
        layout: &HistogramLayout,
        value: f64,
        weight: f64,
        trace_id: &[u8],
        now: u64,
    ) {
        self.observe(layout, value, weight, now);
        if let Ok(trace_id) = <[u8; 16]>::try_from(trace_id) {
            self.exemplar = Some(Exemplar {
                trace_id,
                value,
                time_nanos: now,
            });
        }
    }

    /// Since when the values count: `created`, or the last reset of a native histogram.
    pub fn start_nanos(&self, created: u64, now: u64) -> u64 {
        match (&self.native, self.due_reset(now)) {
            (_, Some(at)) => at,
            (Some(native), None) => native.last_reset.max(created),
            (None, None) => created,
        }
    }

    /// The snapshot of this histogram for exporters, as of `now` (a reset the clock has passed
    /// shows as an empty histogram).
    pub fn value(&self, layout: &HistogramLayout, now: u64) -> SeriesValue {
        if let Some(at) = self.due_reset(now) {
            let mut empty = self.clone();
            empty.reset(layout, at);
            return empty.value(layout, now);
        }
        SeriesValue::Histogram {
            bounds: layout.bounds.clone(),
            cumulative: self.cumulative(),
            sum: self.sum,
            count: self.count,
            exemplar: self.exemplar,
            native: self.native.as_ref().map(|n| NativeValue {
                schema: n.buckets.schema,
                zero_threshold: ZERO_THRESHOLD,
                zero_count: n.buckets.zero_count,
                positive: n.buckets.positive.clone(),
                negative: n.buckets.negative.clone(),
            }),
        }
    }

    /// Per-bucket (not cumulative) counts, one per bound plus `+Inf`.
    pub fn bucket_counts(&self) -> &[f64] {
        &self.counts
    }

    /// Cumulative counts per bound, `+Inf` last, as Prometheus exposes `_bucket`.
    pub fn cumulative(&self) -> Vec<f64> {
        self.counts
            .iter()
            .scan(0.0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

/// Series keyed by their label values, at most `max` of them: a new label set beyond that is
/// refused and counted, so label cardinality cannot grow memory without bound. Series not
/// updated for a while can be purged, as Tempo's registry drops stale series. Look-ups borrow
/// a slice, so a hit allocates nothing.
#[derive(Debug)]
pub struct SeriesMap<V> {
    /// Keyed by the label values packed into one byte string (each value length-prefixed), so
    /// a look-up hashes and compares one slice instead of one per label; a `HashTable` so that
    /// a hit costs one hash and one compare (a `HashMap` needs a second look-up to insert
    /// without building an owned key first).
    series: HashTable<Entry<V>>,
    hasher: ahash::RandomState,
    /// The packed key of the current look-up, reused.
    key: Vec<u8>,
    /// Label values longer than this are cut (a hostile 900 KB attribute must not become a
    /// 900 KB label), and counted in `truncated`.
    max_value_length: usize,
    truncated: u64,
    limiter: PerLabelLimiter,
    /// The label names, shared with every listed series' [`Labels`].
    names: Arc<[String]>,
    max: usize,
    refused: u64,
}

#[derive(Debug)]
struct Entry<V> {
    /// The label values, packed (see `pack`); shared with the [`Labels`] of listed series,
    /// so a listing copies no label bytes.
    key: Arc<[u8]>,
    value: V,
    /// When the series was created: the start of its cumulative values.
    created: u64,
    updated: u64,
}

/// Packs label values into one byte string, each value length-prefixed (so values may hold
/// any byte, and one slice is hashed and compared per look-up).
fn pack(values: &[String], out: &mut Vec<u8>) {
    out.clear();
    for value in values {
        pack_value(value, out);
    }
}

#[inline]
fn pack_value(value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// The label values of a packed key, in order.
fn unpack(mut key: &[u8]) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        let (len, rest) = key.split_first_chunk::<4>()?;
        let (value, rest) = rest.split_at(u32::from_le_bytes(*len) as usize);
        key = rest;
        // Packed from `String`s, so always UTF-8.
        Some(std::str::from_utf8(value).unwrap_or_default())
    })
}

/// A series' labels as its map holds them: the map's label names and the series' packed
/// values, both shared. Listing every series (for `/metrics` or a push) therefore copies no
/// label bytes: a page full of 2048-byte values is encoded from the engine's only copy.
#[derive(Debug, Clone)]
pub struct Labels {
    names: Arc<[String]>,
    packed: Arc<[u8]>,
}

impl Labels {
    /// Labels from `(name, value)` pairs (tests and hand-made series).
    pub fn from_pairs<N: Into<String>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let (names, values): (Vec<String>, Vec<String>) = pairs
            .into_iter()
            .map(|(n, v)| (n.into(), v.as_ref().to_string()))
            .unzip();
        let mut packed = Vec::new();
        pack(&values, &mut packed);
        Self {
            names: names.into(),
            packed: packed.into(),
        }
    }

    /// `(name, value)` of every label with a non-empty value (an empty value is an absent label,
    /// as Prometheus treats it), in the family's label order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(unpack(&self.packed))
            .filter(|(_, v)| !v.is_empty())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for (n, v) in self.iter() {
            n.hash(state);
            v.hash(state);
        }
    }
}

impl prometheus_client::encoding::EncodeLabelSet for Labels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        for label in self.iter() {
            label.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl<V> SeriesMap<V> {
    pub fn new(limits: RegistryLimits, names: Vec<String>) -> Self {
        Self {
            max_value_length: limits.max_label_value_length,
            truncated: 0,
            limiter: PerLabelLimiter::new(names.len(), limits.max_cardinality_per_label),
            names: names.into(),
            series: HashTable::new(),
            hasher: ahash::RandomState::new(),
            key: Vec::new(),
            max: limits.max_series,
            refused: 0,
        }
    }

    /// The series for `labels` (values over the length limit are cut in place first), updated
    /// at `now`, created with `new` if there is room; `None` when the limit refuses a new series.
    pub fn get_or_insert_with(
        &mut self,
        labels: &mut [String],
        now: u64,
        new: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        for value in labels.iter_mut() {
            if truncate_label(value, self.max_value_length) {
                self.truncated += 1;
            }
        }
        self.limiter.limit(labels, now);
        pack(labels, &mut self.key);
        self.get_or_insert_packed(now, new)
    }

    /// [`Self::get_or_insert_with`] for label values borrowed from elsewhere. In the steady
    /// state, with no value over the length limit and no per-label limit, they are packed
    /// into the key straight away; otherwise they are copied into `scratch` (one `String` a
    /// label) and cut and limited there.
    pub fn get_or_insert_with_values<'v>(
        &mut self,
        values: impl Iterator<Item = &'v str> + Clone,
        scratch: &mut [String],
        now: u64,
        new: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if self.limiter.is_off() {
            let max = self.max_value_length;
            let mut fits = true;
            self.key.clear();
            for value in values.clone() {
                fits &= value.len() <= max;
                pack_value(value, &mut self.key);
            }
            if fits {
                return self.get_or_insert_packed(now, new);
            }
        }
        for (label, value) in scratch.iter_mut().zip(values) {
            label.clear();
            label.push_str(value);
        }
        self.get_or_insert_with(scratch, now, new)
    }

    /// The series of the labels packed in `self.key`.
    fn get_or_insert_packed(&mut self, now: u64, new: impl FnOnce() -> V) -> Option<&mut V> {
        let key = &self.key[..];
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let full = self.series.len() >= self.max;
        let entry =
            match self
                .series
                .entry(hash, |e| &e.key[..] == key, |e| hasher.hash_one(&e.key[..]))
            {
                hash_table::Entry::Occupied(e) => e.into_mut(),
                hash_table::Entry::Vacant(_) if full => {
                    self.refused += 1;
                    return None;
                }
                hash_table::Entry::Vacant(e) => e
                    .insert(Entry {
                        key: Arc::from(key),
                        value: new(),
                        created: now,
                        updated: now,
                    })
                    .into_mut(),
            };
        entry.updated = now;
        Some(&mut entry.value)
    }

    /// `(labels, value, creation time)` of every series.
    pub fn iter(&self) -> impl Iterator<Item = (Labels, &V, u64)> {
        self.series.iter().map(|e| {
            let labels = Labels {
                names: self.names.clone(),
                packed: e.key.clone(),
            };
            (labels, &e.value, e.created)
        })
    }

    /// Removes the series last updated before `cutoff`; returns how many.
    pub fn purge_older_than(&mut self, cutoff: u64) -> usize {
        // The per-label limiter forgets values over the same window and decides again.
        self.limiter.maintain(cutoff, &self.names);
        let before = self.series.len();
        self.series.retain(|e| e.updated >= cutoff);
        before - self.series.len()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Updates refused because the map was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Label values cut to the length limit.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    pub fn cardinality(&self) -> Cardinality {
        Cardinality {
            series: self.len(),
            refused: self.refused,
            truncated_values: self.truncated,
            limited_values: self
                .names
                .iter()
                .cloned()
                .zip(self.limiter.limited())
                .collect(),
        }
    }
}

/// What kind of metric a family is; counters' names end in `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    Counter,
    Histogram,
    /// A value that is set, not accumulated (`traces_service_graph_connection_info`).
    Gauge,
}

/// The sum of the counters of family `name` (for tests).
#[cfg(test)]
pub(crate) fn counter_total(families: &[Family], name: &str) -> f64 {
    families
        .iter()
        .filter(|f| f.name == name)
        .flat_map(|f| &f.series)
        .map(|s| match s.value {
            SeriesValue::Counter(v) => v,
            _ => unreachable!("{name} is a counter"),
        })
        .sum()
}

/// One metric family, ready to be exposed or pushed.
#[derive(Debug, Clone)]
pub struct Family {
    /// The Prometheus name: `..._total` for counters, the base name for histograms.
    pub name: &'static str,
    pub help: &'static str,
    /// The UCUM unit for OTLP (`s`), only where Prometheus' OTLP translation keeps the name as is.
    pub unit: &'static str,
    pub kind: FamilyKind,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub value: SeriesValue,
    /// Since when the cumulative value counts (nanoseconds since the epoch).
    pub start_nanos: u64,
}

#[derive(Debug, Clone)]
pub enum SeriesValue {
    Counter(f64),
    Gauge(f64),
    Histogram {
        bounds: Arc<[f64]>,
        /// Cumulative, one per bound plus `+Inf`.
        cumulative: Vec<f64>,
        sum: f64,
        count: f64,
        exemplar: Option<Exemplar>,
        /// Native buckets, when native histograms are kept.
        native: Option<NativeValue>,
    },
}

/// A flat Prometheus sample (`_bucket`, `_sum`, `_count` spelled out), as a query would return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Family {
    /// The samples this family shows to a Prometheus query.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for series in &self.series {
            match &series.value {
                SeriesValue::Counter(v) | SeriesValue::Gauge(v) => out.push(Sample {
                    name: self.name.to_string(),
                    labels: series.labels.to_vec(),
                    value: *v,
                }),
                SeriesValue::Histogram {
                    bounds,
                    cumulative,
                    sum,
                    count,
                    ..
                } => {
                    let les = bounds
                        .iter()
                        .map(|b| format_bound(*b))
                        .chain(["+Inf".to_string()]);
                    for (le, value) in les.zip(cumulative) {
                        let mut labels = series.labels.to_vec();
                        labels.push(("le".into(), le));
                        out.push(Sample {
                            name: format!("{}_bucket", self.name),
                            labels,
                            value: *value,
                        });
                    }
                    out.push(Sample {
                        name: format!("{}_sum", self.name),
                        labels: series.labels.to_vec(),
                        value: *sum,
                    });
                    out.push(Sample {
                        name: format!("{}_count", self.name),
                        labels: series.labels.to_vec(),
                        value: *count,
                    });
                }
            }
        }
        out
    }
}

/// Whole per-bucket counts and total for formats with integer counts (OTLP, Prometheus text).
/// Rounds the cumulative counts before differencing, so buckets stay monotonic and add up to
/// the count even when span multipliers make fractional weights.
pub fn whole_bucket_counts(cumulative: &[f64]) -> (Vec<u64>, u64) {
    let rounded: Vec<u64> = cumulative.iter().map(|c| c.round() as u64).collect();
    let per_bucket = rounded
        .iter()
        .scan(0u64, |prev, c| {
            let n = c.saturating_sub(*prev);
            *prev = *c;
            Some(n)
        })
        .collect();
    (per_bucket, rounded.last().copied().unwrap_or(0))
}

/// How full a processor's series map is, for graphgen's own metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cardinality {
    /// Label sets held (bounded by `max_series`).
    pub series: usize,
    /// Updates not recorded because `max_series` label sets existed.
    pub refused: u64,
    /// Label values cut to `max_label_value_length`.
    pub truncated_values: u64,
    /// Values replaced by the overflow value, per label name.
    pub limited_values: Vec<(String, u64)>,
}

/// Sets label `name` to `value` on every series, replacing a label of that name (Tempo's
/// `inject_tenant_id_as`, `modules/generator/registry/registry.go:156-158` at ad33aa8, applied
/// with `labels.Builder.Set` in `registry/util.go`).
pub fn set_label(families: &mut [Family], name: &str, value: &str) {
    for series in families.iter_mut().flat_map(|f| f.series.iter_mut()) {
        let pairs: Vec<(String, &str)> = series
            .labels
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, v)| (n.to_string(), v))
            .chain([(name.to_string(), value)])
            .collect();
        series.labels = Labels::from_pairs(pairs);
    }
}

impl Cardinality {
    /// Adds another engine's figures (another tenant's) to these.
    pub fn add(&mut self, other: &Cardinality) {
        self.series += other.series;
        self.refused += other.refused;
        self.truncated_values += other.truncated_values;
        for (label, n) in &other.limited_values {
            match self.limited_values.iter_mut().find(|(l, _)| l == label) {
                Some((_, mine)) => *mine += n,
                None => self.limited_values.push((label.clone(), *n)),
            }
        }
    }
}

/// The bounds of a processor's series, as Tempo's registry has them (generator-wide, one value
/// for both processors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Most label sets kept; updates of new label sets beyond are counted, not recorded.
    pub max_series: usize,
    /// Label names and values are cut to these many bytes (Tempo's registry limits).
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// A label with more distinct values than this (over `stale_duration`) has them replaced
    /// by `__cardinality_overflow__`; 0 turns the limit off (Tempo's default).
    pub max_cardinality_per_label: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_label_name_length: crate::label_limits::MAX_LABEL_NAME_LENGTH,
            max_label_value_length: crate::label_limits::MAX_LABEL_VALUE_LENGTH,
            max_cardinality_per_label: 0,
        }
    }
}

/// Histogram bounds that are not finite and strictly increasing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("histogram buckets must be finite and strictly increasing, got {0:?}")]
pub struct InvalidBuckets(pub Vec<f64>);

/// Checks histogram bounds (both processors' `histogram_buckets`).
pub fn validate_buckets(buckets: &[f64]) -> Result<(), InvalidBuckets> {
    let increasing = buckets.windows(2).all(|w| w[0] < w[1]);
    if buckets.is_empty() || !increasing || buckets.iter().any(|b| !b.is_finite()) {
        return Err(InvalidBuckets(buckets.to_vec()));
    }
    Ok(())
}

/// Formats a bucket bound the way Prometheus prints `le` (shortest float form).
pub fn format_bound(bound: f64) -> String {
    format!("{bound}")
}

/// `start, start*factor, …` — `count` buckets, as Prometheus' `ExponentialBuckets`.
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    std::iter::successors(Some(start), |b| Some(b * factor))
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_series: usize, max_label_value_length: usize) -> RegistryLimits {
        RegistryLimits {
            max_series,
            max_label_value_length,
            ..RegistryLimits::default()
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("l{i}")).collect()
    }

    /// Prometheus' rule: a value lands in the first bucket whose upper bound is at least it
    /// (`le`); a value on a bound belongs to that bound's bucket. (Durations and sizes are
    /// never NaN.)
    #[test]
    fn a_value_lands_in_the_first_bucket_whose_bound_is_at_least_it() {
        for len in [0, 1, 8, 14, 32, 33, 100] {
            let bounds: Vec<f64> = (0..len).map(|i| 0.002 * 2f64.powi(i)).collect();
            let mut values = vec![f64::NEG_INFINITY, f64::INFINITY, -1.0, 0.0, 1e9];
            for b in &bounds {
                values.extend([*b, b * 0.999, b * 1.001]);
            }
            for value in values {
                let expected = bounds
                    .iter()
                    .position(|b| value <= *b)
                    .unwrap_or(len as usize);
                assert_eq!(
                    bucket_of(&bounds, value),
                    expected,
                    "{value} in {len} buckets"
                );
            }
        }
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let layout = HistogramLayout::classic(&[0.1, 1.0]);
        let mut h = Histogram::new(&layout, 0);
        for (v, w) in [(0.1, 1.0), (0.5, 2.0), (5.0, 1.0)] {
            h.observe(&layout, v, w, 0);
        }
        assert_eq!(h.cumulative(), vec![1.0, 3.0, 4.0]);
        assert_eq!(h.count, 4.0);
        assert!((h.sum - 6.1).abs() < 1e-9);
    }

    const MINUTE: u64 = 60_000_000_000;

    fn native_layout(max_buckets: u32, min_reset_minutes: u64) -> HistogramLayout {
        HistogramLayout::new(
            &[0.1, 1.0],
            HistogramMode::Both,
            NativeConfig::new(
                1.1,
                max_buckets,
                std::time::Duration::from_secs(60 * min_reset_minutes),
            ),
        )
    }

    fn native_of(h: &Histogram, layout: &HistogramLayout, now: u64) -> (NativeValue, f64) {
        match h.value(layout, now) {
            SeriesValue::Histogram {
                native: Some(n),
                count,
                ..
            } => (n, count),
            other => panic!("no native buckets in {other:?}"),
        }
    }

    #[test]
    fn native_histograms_observe_a_multiplier_as_whole_observations_as_tempo_does() {
        let layout = native_layout(100, 15);
        let mut h = Histogram::new(&layout, 0);
        h.observe(&layout, 0.5, 2.5, 0); // Tempo's loop runs 3 times
        h.observe(&layout, 0.5, 0.0, 0); // and not at all
        let (native, count) = native_of(&h, &layout, 0);
        assert_eq!(count, 3.0);
        assert_eq!(h.cumulative(), vec![0.0, 3.0, 3.0]);
        assert_eq!(native.schema, 3);
        assert_eq!(
            native.positive.iter().collect::<Vec<_>>(),
            vec![(crate::native_histogram::bucket_key(0.5, 3), 3)]
        );
        // Classic-only histograms keep fractional weights.
        let classic = HistogramLayout::classic(&[1.0]);
        let mut c = Histogram::new(&classic, 0);
        c.observe(&classic, 0.5, 2.5, 0);
        assert_eq!(c.count, 2.5);
    }

    #[test]
    fn a_huge_multiplier_is_added_at_once() {
        let layout = native_layout(100, 15);
        let mut h = Histogram::new(&layout, 0);
        h.observe(&layout, 0.5, 1e12, 0);
        h.observe(&layout, 0.5, f64::INFINITY, 0);
        h.observe(&layout, 0.5, f64::NAN, 0);
        let (native, count) = native_of(&h, &layout, 0);
        assert_eq!(count, 1e12 + 2f64.powi(53));
        assert_eq!(
            native.positive.iter().map(|(_, n)| n).sum::<u64>() as f64,
            count
        );
        assert_eq!(whole_observations(0.0), 0);
        assert_eq!(whole_observations(1.0), 1);
        assert_eq!(whole_observations(1.000_1), 2);
    }

    #[test]
    fn over_the_bucket_limit_resolution_drops_and_a_reset_is_scheduled() {
        let layout = native_layout(4, 15);
        let mut h = Histogram::new(&layout, 0);
        // Six values a factor 1.5 apart: six buckets at schema 3, more than 4.
        let values: Vec<f64> = (0..6).map(|i| 1.5f64.powi(i)).collect();
        for v in &values {
            h.observe(&layout, *v, 1.0, MINUTE);
        }
        let (native, count) = native_of(&h, &layout, 2 * MINUTE);
        // One halving per observation over the limit, as client_golang (best effort): the 5th
        // value (5 buckets) takes schema 3 to 2, the 6th (6 buckets at schema 2) to 1, where
        // the six values still fill six buckets.
        assert_eq!((native.schema, native.positive.len()), (1, 6));
        assert_eq!(native.positive.iter().map(|(_, n)| n).sum::<u64>(), 6);
        assert_eq!(count, 6.0, "nothing lost");
        // The reset is due 15 minutes after creation: from then on the histogram is empty...
        let (native, count) = native_of(&h, &layout, 15 * MINUTE);
        assert_eq!((count, native.schema, native.positive.len()), (0.0, 3, 0));
        assert_eq!(h.start_nanos(0, 15 * MINUTE), 15 * MINUTE);
        assert_eq!(h.start_nanos(0, 14 * MINUTE), 0);
        // ...and counts again at full resolution.
        h.observe(&layout, 2.0, 1.0, 16 * MINUTE);
        let (native, count) = native_of(&h, &layout, 16 * MINUTE);
        assert_eq!((count, native.schema), (1.0, 3));
        assert_eq!(h.cumulative(), vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn over_the_bucket_limit_long_after_the_last_reset_starts_over_with_the_latest_value() {
        let layout = native_layout(4, 15);
        let mut h = Histogram::new(&layout, 0);
        for i in 0..4 {
            h.observe(&layout, 1.5f64.powi(i), 1.0, MINUTE);
        }
        // The fifth bucket comes 20 minutes after creation, with no reset scheduled.
        h.observe(&layout, 100.0, 1.0, 20 * MINUTE);
        let (native, count) = native_of(&h, &layout, 20 * MINUTE);
        assert_eq!(count, 1.0);
        assert_eq!(h.sum, 100.0);
        assert_eq!(native.schema, 3);
        assert_eq!(native.positive.len(), 1);
        assert_eq!(h.start_nanos(0, 20 * MINUTE), 20 * MINUTE);
    }

    #[test]
    fn without_a_reset_duration_only_the_resolution_drops() {
        let layout = native_layout(2, 0);
        let mut h = Histogram::new(&layout, 0);
        for i in 0..40 {
            h.observe(&layout, 2f64.powi(i - 20), 1.0, i as u64 * MINUTE);
        }
        let (native, count) = native_of(&h, &layout, 100 * MINUTE);
        assert_eq!(count, 40.0);
        assert_eq!(native.schema, -4, "lowest resolution reached");
        assert_eq!(native.positive.iter().map(|(_, n)| n).sum::<u64>(), 40);
    }

    #[test]
    fn a_full_series_map_refuses_new_label_sets_and_counts_them() {
        let mut map = SeriesMap::new(limits(1, 2048), names(1));
        let mut a = ["a".to_string()];
        let mut b = ["b".to_string()];
        *map.get_or_insert_with(&mut a, 1, || 0).unwrap() += 1;
        assert!(map.get_or_insert_with(&mut b, 2, || 0).is_none());
        *map.get_or_insert_with(&mut a, 3, || 0).unwrap() += 1;
        assert_eq!(map.len(), 1);
        assert_eq!(map.refused(), 1);
        assert_eq!(
            map.iter().next().map(|(_, v, created)| (*v, created)),
            Some((2, 1))
        );
    }

    #[test]
    fn stale_series_are_purged_and_start_again_from_zero() {
        let mut map = SeriesMap::new(limits(10, 2048), names(1));
        let (mut a, mut b) = (["a".to_string()], ["b".to_string()]);
        *map.get_or_insert_with(&mut a, 10, || 0).unwrap() += 5;
        *map.get_or_insert_with(&mut b, 10, || 0).unwrap() += 1;
        *map.get_or_insert_with(&mut b, 20, || 0).unwrap() += 1;
        assert_eq!(map.purge_older_than(15), 1, "a was last updated at 10");
        assert_eq!(map.len(), 1);
        *map.get_or_insert_with(&mut a, 30, || 0).unwrap() += 1;
        let mut seen: Vec<(String, i32, u64)> = map
            .iter()
            .map(|(k, v, c)| (k.to_vec()[0].1.clone(), *v, c))
            .collect();
        seen.sort();
        assert_eq!(seen, vec![("a".into(), 1, 30), ("b".into(), 2, 10)]);
    }

    #[test]
    fn whole_bucket_counts_add_up_to_the_count() {
        // Three observations of weight 0.4 in three buckets: cumulative 0.4, 0.8, 1.2.
        assert_eq!(whole_bucket_counts(&[0.4, 0.8, 1.2]), (vec![0, 1, 0], 1));
        assert_eq!(whole_bucket_counts(&[1.0, 3.0, 3.0]), (vec![1, 2, 0], 3));
    }

    #[test]
    fn exponential_buckets_match_prometheus() {
        assert_eq!(
            exponential_buckets(0.1, 2.0, 8),
            vec![0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8]
        );
        assert_eq!(exponential_buckets(0.002, 2.0, 14).len(), 14);
    }

    #[test]
    fn empty_label_values_are_dropped() {
        let labels = Labels::from_pairs([("client", "a"), ("connection_type", "")]);
        assert_eq!(
            labels.to_vec(),
            vec![("client".to_string(), "a".to_string())]
        );
        assert_eq!(labels.get("connection_type"), None);
    }

    #[test]
    fn borrowed_values_land_on_the_series_their_copies_do() {
        for max_cardinality_per_label in [0, 1] {
            let limits = RegistryLimits {
                max_series: 10,
                max_label_value_length: 8,
                max_cardinality_per_label,
                ..RegistryLimits::default()
            };
            let (mut borrowed, mut copied) = (
                SeriesMap::new(limits, names(2)),
                SeriesMap::new(limits, names(2)),
            );
            let mut scratch = vec![String::new(); 2];
            let sets = [
                ["a", "short"],
                ["b", "a value cut to eight"],
                ["a", "short"],
            ];
            for (now, set) in sets.iter().enumerate() {
                let now = now as u64;
                *borrowed
                    .get_or_insert_with_values(set.iter().copied(), &mut scratch, now, || 0)
                    .unwrap() += 1;
                let mut copy = set.map(String::from);
                *copied.get_or_insert_with(&mut copy, now, || 0).unwrap() += 1;
                // Reading a new label's value again each time, as `maintain` does every tick.
                borrowed.purge_older_than(0);
                copied.purge_older_than(0);
            }
            let series = |map: &SeriesMap<i32>| {
                let mut all: Vec<(Vec<(String, String)>, i32)> =
                    map.iter().map(|(l, v, _)| (l.to_vec(), *v)).collect();
                all.sort();
                all
            };
            assert_eq!(series(&borrowed), series(&copied));
            assert_eq!(borrowed.truncated(), copied.truncated());
            if max_cardinality_per_label == 0 {
                assert_eq!((borrowed.len(), borrowed.truncated()), (2, 1));
            } else {
                // `b` put the first label over its limit: the third set is another series.
                assert_eq!(borrowed.len(), 3);
            }
        }
    }

    #[test]
    fn long_label_values_are_cut_at_a_character_boundary_and_counted() {
        let mut map = SeriesMap::new(limits(10, 8), names(3));
        let mut labels = [
            "x".repeat(900_000),
            "ééééé".to_string(),
            "short".to_string(),
        ];
        *map.get_or_insert_with(&mut labels, 1, || 0).unwrap() += 1;
        // 10 bytes of "é" (2 bytes each) cut to 8 bytes is 4 characters, never half of one.
        assert_eq!(
            labels,
            ["x".repeat(8), "éééé".to_string(), "short".to_string()]
        );
        assert_eq!(map.truncated(), 2);
        let stored: Vec<Vec<(String, String)>> = map.iter().map(|(l, _, _)| l.to_vec()).collect();
        let expected: Vec<(String, String)> = names(3).into_iter().zip(labels.clone()).collect();
        assert_eq!(stored, [expected]);
        // The same long value again lands on the same series.
        let mut again = ["x".repeat(50), "éééééé".to_string(), "short".to_string()];
        *map.get_or_insert_with(&mut again, 2, || 0).unwrap() += 1;
        assert_eq!(map.len(), 1);
    }
}

//! Native (sparse, exponential) histogram buckets, kept as Tempo's metrics-generator keeps them.
//!
//! Tempo builds its native histograms with Prometheus' client_golang
//! (`modules/generator/registry/native_histogram.go:171-190` at grafana/tempo ad33aa8:
//! `prometheus.NewHistogram` with `NativeHistogramBucketFactor`, `…MaxBucketNumber`,
//! `…MinResetDuration` from the overrides, defaults 1.1, 100 and 15 m in
//! `modules/overrides/config.go:412-415`). The rules below are client_golang's
//! (`prometheus/histogram.go`, as vendored there):
//! - the schema is the largest `n` in -4..=8 with `2^(2^-n) <= factor` (`pickSchema`): 1.1 → 3;
//! - bucket `k` holds `(base^(k-1), base^k]`, `base = 2^(2^-schema)`; values within the zero
//!   threshold (2^-128, `DefNativeHistogramZeroThreshold`) go to the zero bucket;
//! - when more than `max_bucket_number` buckets are populated (`limitBuckets`): if the last reset
//!   is at least `min_reset_duration` ago and none is scheduled, everything is reset and the
//!   latest observation kept (`maybeReset`); otherwise a reset is scheduled for `min_reset_duration`
//!   after the last one, and the resolution halved (`doubleBucketWidth`; Tempo sets no
//!   `NativeHistogramMaxZeroThreshold`, so the zero bucket never widens).
//!
//! This module keeps the buckets; [`crate::series::Histogram`] applies the reset rules, since a
//! reset clears its count, sum and classic buckets too, as client_golang's does.

use std::sync::OnceLock;

/// Which latency histograms are written: Tempo's `generate_native_histograms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramMode {
    /// Fixed buckets (`_bucket`, `_sum`, `_count`), as Tempo's default.
    #[default]
    Classic,
    /// Native histograms only.
    Native,
    /// Both, under their own series names.
    Both,
}

impl HistogramMode {
    pub fn classic(self) -> bool {
        matches!(self, Self::Classic | Self::Both)
    }

    pub fn native(self) -> bool {
        matches!(self, Self::Native | Self::Both)
    }
}

/// Tempo's defaults (`modules/overrides/config.go:412-415`).
pub const DEFAULT_BUCKET_FACTOR: f64 = 1.1;
pub const DEFAULT_MAX_BUCKET_NUMBER: u32 = 100;
pub const DEFAULT_MIN_RESET_DURATION: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// client_golang's `DefNativeHistogramZeroThreshold`: 2^-128.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
const MIN_SCHEMA: i32 = -4;
const MAX_SCHEMA: i32 = 8;

/// How native buckets are kept, shared by every histogram of a processor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NativeConfig {
    /// The schema a histogram starts with (and returns to after a reset).
    pub schema: i32,
    /// 0: no limit.
    pub max_bucket_number: u32,
    /// 0: never reset.
    pub min_reset_nanos: u64,
}

impl NativeConfig {
    /// `bucket_factor` must be greater than 1 (checked by the configuration).
    pub fn new(bucket_factor: f64, max_bucket_number: u32, min_reset: std::time::Duration) -> Self {
        Self {
            schema: pick_schema(bucket_factor),
            max_bucket_number,
            min_reset_nanos: u64::try_from(min_reset.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self::new(
            DEFAULT_BUCKET_FACTOR,
            DEFAULT_MAX_BUCKET_NUMBER,
            DEFAULT_MIN_RESET_DURATION,
        )
    }
}

/// The largest schema in -4..=8 whose growth factor does not exceed `bucket_factor`.
pub fn pick_schema(bucket_factor: f64) -> i32 {
    let floor = bucket_factor.log2().log2().floor();
    if floor <= -(MAX_SCHEMA as f64) {
        MAX_SCHEMA
    } else if floor >= -(MIN_SCHEMA as f64) {
        MIN_SCHEMA
    } else {
        -(floor as i32)
    }
}

/// For schemas 1..=8, the lower bounds of the `2^schema` buckets within one power of two, as
/// fractions in [0.5, 1). (client_golang hard-codes these; they may differ from ours in the last
/// bit, which only moves a value lying within one ulp of a bucket boundary.)
fn fraction_bounds(schema: i32) -> &'static [f64] {
    static TABLES: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        (0..=MAX_SCHEMA)
            .map(|s| {
                let n = 1u32 << s;
                (0..n).map(|j| 0.5 * (j as f64 / n as f64).exp2()).collect()
            })
            .collect()
    });
    &tables[schema as usize]
}

/// The bucket of a finite |value| > 0 (or an infinite one) under `schema`: `k` with
/// `base^(k-1) < |value| <= base^k`.
pub fn bucket_key(value: f64, schema: i32) -> i32 {
    let (mut v, inf) = if value.is_infinite() {
        (f64::MAX, true)
    } else {
        (value.abs(), false)
    };
    v = v.abs();
    let (frac, exp) = frexp(v);
    let mut key = if schema > 0 {
        let bounds = fraction_bounds(schema);
        bounds.partition_point(|b| *b < frac) as i32 + (exp - 1) * bounds.len() as i32
    } else {
        let mut key = exp;
        if frac == 0.5 {
            key -= 1;
        }
        let offset = (1 << -schema) - 1;
        (key + offset) >> -schema
    };
    if inf {
        key += 1;
    }
    key
}

/// `v = frac * 2^exp` with `frac` in [0.5, 1), for finite `v > 0` (as Go's `math.Frexp`).
fn frexp(v: f64) -> (f64, i32) {
    if v == 0.0 || !v.is_finite() {
        return (v, 0);
    }
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(v * 2f64.powi(54));
        return (f, e - 54);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// Populated buckets of one sign, sorted by key: at most `max_bucket_number` (+1 briefly)
/// entries, so a look-up is a short binary search and memory stays bounded however wide the
/// values spread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseBuckets(Vec<(i32, u64)>);

impl SparseBuckets {
    /// Adds `n` to bucket `key`; returns whether the bucket is new.
    fn add(&mut self, key: i32, n: u64) -> bool {
        match self.0.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => {
                self.0[i].1 = self.0[i].1.saturating_add(n);
                false
            }
            Err(i) => {
                self.0.insert(i, (key, n));
                true
            }
        }
    }

    /// Merges pairs of buckets into the buckets of the next lower schema.
    fn halve(&mut self) {
        let mut merged: Vec<(i32, u64)> = Vec::with_capacity(self.0.len());
        for &(key, n) in &self.0 {
            // Bucket k of schema s lies in bucket ceil(k/2) of schema s-1.
            let key = if key > 0 { (key + 1) / 2 } else { key / 2 };
            match merged.last_mut() {
                Some((k, count)) if *k == key => *count += n,
                _ => merged.push((key, n)),
            }
        }
        self.0 = merged;
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(key, count)` of every populated bucket, by key.
    pub fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.0.iter().copied()
    }

    /// Dense counts from the lowest populated key: (that key, counts), as OTLP wants them.
    pub fn dense(&self) -> (i32, Vec<u64>) {
        let (Some(first), Some(last)) = (self.0.first(), self.0.last()) else {
            return (0, Vec::new());
        };
        let mut counts = vec![0; (last.0 - first.0) as usize + 1];
        for &(key, n) in &self.0 {
            counts[(key - first.0) as usize] = n;
        }
        (first.0, counts)
    }

    /// Prometheus' sparse layout: spans (offset, length) and per-bucket deltas. As
    /// client_golang's `makeBuckets`, a gap of up to two empty buckets stays inside a span.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::with_capacity(self.0.len());
        let (mut previous, mut next_key) = (0i64, 0i32);
        for (n, &(key, count)) in self.0.iter().enumerate() {
            let gap = key - next_key;
            if n == 0 || gap > 2 {
                spans.push((gap, 0));
            } else {
                for _ in 0..gap {
                    spans.last_mut().expect("opened above").1 += 1;
                    deltas.push(-previous);
                    previous = 0;
                }
            }
            spans.last_mut().expect("opened above").1 += 1;
            deltas.push(count as i64 - previous);
            previous = count as i64;
            next_key = key + 1;
        }
        (spans, deltas)
    }
}

/// The native buckets of one histogram (count and sum are the histogram's own).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBuckets {
    pub schema: i32,
    pub zero_count: u64,
    pub positive: SparseBuckets,
    pub negative: SparseBuckets,
}

impl NativeBuckets {
    pub fn new(schema: i32) -> Self {
        Self {
            schema,
            zero_count: 0,
            positive: SparseBuckets::default(),
            negative: SparseBuckets::default(),
        }
    }

    /// Counts one observation of `value` (NaN is not counted in buckets, as client_golang).
    pub fn observe(&mut self, value: f64) {
        self.observe_n(value, 1);
    }

    /// Counts `n` observations of `value`.
    pub fn observe_n(&mut self, value: f64, n: u64) {
        if value.is_nan() {
            return;
        }
        if value > ZERO_THRESHOLD {
            self.positive.add(bucket_key(value, self.schema), n);
        } else if value < -ZERO_THRESHOLD {
            self.negative.add(bucket_key(value, self.schema), n);
        } else {
            self.zero_count = self.zero_count.saturating_add(n);
        }
    }

    pub fn populated(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    /// Halves the resolution (one schema lower), unless already at the lowest.
    pub fn halve_resolution(&mut self) {
        if self.schema > MIN_SCHEMA {
            self.schema -= 1;
            self.positive.halve();
            self.negative.halve();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_picked_from_the_bucket_factor_as_client_golang_does() {
        for (factor, schema) in [
            (1.1, 3),
            (1.09, 4),
            (1.0906, 3), // 2^(1/8) = 1.09051
            (1.2, 2),
            (1.5, 1),
            (2.0, 0),
            (4.0, -1),
            (65536.0, -4),
            (1e9, -4),
            (1.0001, 8),
        ] {
            assert_eq!(pick_schema(factor), schema, "factor {factor}");
        }
    }

    #[test]
    fn a_bucket_holds_values_above_its_lower_and_up_to_its_upper_bound() {
        // (value, schema, key): bucket k is (base^(k-1), base^k].
        for (value, schema, key) in [
            (1.0, 0, 0),
            (1.5, 0, 1),
            (2.0, 0, 1),
            (2.0001, 0, 2),
            (0.5, 0, -1),
            (0.3, 0, -1),
            (1.0, 3, 0),
            (1.0001, 3, 1),
            (2.0, 3, 8),
            (0.25, 3, -16),
            (4.0, -1, 1),
            (4.0001, -1, 2),
            (1.0, -1, 0),
            (1.5, -2, 1),
            (16.0, -2, 1),
            (17.0, -2, 2),
        ] {
            assert_eq!(bucket_key(value, schema), key, "{value} at schema {schema}");
        }
        // Every key's bounds hold: at schema 3, base^(k-1) < v <= base^k.
        let base = 2f64.powf(1.0 / 8.0);
        for i in 1..2000 {
            let v = i as f64 * 0.001_37;
            let k = bucket_key(v, 3);
            assert!(base.powi(k - 1) < v * (1.0 + 1e-12) && v <= base.powi(k) * (1.0 + 1e-12));
        }
    }

    #[test]
    fn frexp_matches_go() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(8.0), (0.5, 4));
        let tiny = f64::MIN_POSITIVE / 4.0;
        let (f, e) = frexp(tiny);
        assert_eq!((f, e), (0.5, -1023));
    }

    #[test]
    fn halving_merges_bucket_pairs_into_the_next_lower_schema() {
        let mut b = NativeBuckets::new(3);
        for v in [0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 3.0] {
            b.observe(v);
        }
        let before: Vec<_> = b.positive.iter().collect();
        b.halve_resolution();
        assert_eq!(b.schema, 2);
        let expected = {
            let mut again = NativeBuckets::new(2);
            for v in [0.9, 1.0, 1.05, 1.1, 1.2, 1.3, 3.0] {
                again.observe(v);
            }
            again.positive
        };
        assert_eq!(b.positive, expected, "from {before:?}");
    }

    #[test]
    fn spans_keep_gaps_of_up_to_two_buckets_inside() {
        let buckets = SparseBuckets(vec![(-2, 3), (-1, 1), (2, 4), (6, 1)]);
        let (spans, deltas) = buckets.spans_and_deltas();
        // -2,-1 then a gap of 2 (0, 1) kept inside, then 2; gap of 3 opens a span at 6.
        assert_eq!(spans, vec![(-2, 5), (3, 1)]);
        assert_eq!(deltas, vec![3, -2, -1, 0, 4, -3]);
        assert_eq!(buckets.dense(), (-2, vec![3, 1, 0, 0, 4, 0, 0, 0, 1]));
    }

    #[test]
    fn zero_and_negative_values_have_their_own_buckets() {
        let mut b = NativeBuckets::new(0);
        for v in [0.0, 1e-40, -3.0, 3.0, f64::NAN] {
            b.observe(v);
        }
        assert_eq!(b.zero_count, 2);
        assert_eq!(b.negative.iter().collect::<Vec<_>>(), vec![(2, 1)]);
        assert_eq!(b.positive.iter().collect::<Vec<_>>(), vec![(2, 1)]);
    }
}

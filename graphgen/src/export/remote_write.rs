//! Writing the engine's series by Prometheus remote write 1.0 (protobuf, snappy), the way
//! Tempo's metrics-generator delivers them to Prometheus, Mimir, Cortex, Thanos or
//! VictoriaMetrics. Runs beside the OTLP push or instead of it.
//!
//! What it keeps from Tempo (grafana/tempo ad33aa8):
//! - series labels plus the external labels and `__metrics_gen_instance` (this instance's id),
//!   `modules/generator/registry/registry.go:149-158`; a series' own label wins over an external
//!   one, as Prometheus' `external_labels` do;
//! - a zero sample before a new series' first value, so `rate()` counts the first requests
//!   (`registry/counter.go:140-151`, `registry/histogram.go:230-260`);
//! - classic histograms as `_bucket{le}`, `_sum`, `_count`, native ones as one histogram
//!   series named as the metric (`registry/native_histogram.go:281-320`), per `--histograms`;
//! - exemplars under Tempo's default label `traceID` (`native_histogram.go:103-105`).
//!
//! Delivery follows the remote-write spec: 5xx, 429 and lost connections are retried with
//! backoff (429 after its `Retry-After`) until the retry budget is spent; any other 4xx is
//! dropped at once. Every outcome is counted in `graphgen_remote_write_*`. Values are
//! cumulative, so a dropped request loses points, never counts: the next push carries them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::time::Instant;

use super::push::{field_len, http_client, Cursor, Flavor, Item, PushedSeries};
use super::retry::{classify_http, parse_retry_after, Backoff, Verdict};
use crate::native_histogram::{HistogramMode, SparseBuckets};
use crate::selfmetrics::{
    RemoteWriteLabels, RemoteWriteOutcome, RemoteWriteRetry, RemoteWriteRetryLabels, SelfMetrics,
};
use crate::series::{format_bound, Exemplar, Family, NativeValue, Series, SeriesValue};
use crate::tenants::{Tenant, TenantId, Tenants};

/// Prometheus' remote-write protobuf, the parts graphgen writes (`prompb/remote.proto`,
/// `prompb/types.proto` at v3.13.1; unchanged since v2.40 for these fields).
pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }

    #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    /// A native histogram with integer counts.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub count_int: u64,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "6")]
        pub zero_count_int: u64,
        #[prost(message, repeated, tag = "8")]
        pub negative_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "9")]
        pub negative_deltas: Vec<i64>,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        /// 0: UNKNOWN, Prometheus checks for a counter reset itself.
        #[prost(int32, tag = "14")]
        pub reset_hint: i32,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }
}

use prompb::{BucketSpan, Label, Sample, TimeSeries, WriteRequest};

/// The exemplar label Tempo writes by default (`trace_id_label_name`).
pub const TRACE_ID_LABEL: &str = "traceID";

/// Labels every series of this instance gets, after its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// External labels, then `__metrics_gen_instance`.
    pub labels: Vec<(String, String)>,
    /// The exemplars' trace-id label (`--trace-id-label-name`).
    pub trace_id_label: String,
}

impl Target {
    pub fn new(external_labels: &[(String, String)], instance_id: &str) -> Self {
        let mut labels = external_labels.to_vec();
        labels.retain(|(name, _)| name != "__metrics_gen_instance");
        labels.push(("__metrics_gen_instance".into(), instance_id.into()));
        Self {
            labels,
            trace_id_label: TRACE_ID_LABEL.into(),
        }
    }

    pub fn with_trace_id_label(mut self, name: &str) -> Self {
        self.trace_id_label = name.into();
        self
    }
}

fn millis(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

/// The labels of one written series, sorted by name (as the spec requires): the series' own,
/// `__name__`, then the target's where the series has no label of that name.
fn labels_of(
    name: &str,
    series: &Series,
    extra: Option<(&str, &str)>,
    target: &Target,
) -> Vec<Label> {
    let mut labels: Vec<Label> = series
        .labels
        .iter()
        .chain(extra)
        .map(|(n, v)| Label {
            name: n.into(),
            value: v.into(),
        })
        .collect();
    labels.push(Label {
        name: "__name__".into(),
        value: name.into(),
    });
    for (n, v) in &target.labels {
        if !labels.iter().any(|l| &l.name == n) {
            labels.push(Label {
                name: n.clone(),
                value: v.clone(),
            });
        }
    }
    labels.sort();
    labels
}

fn exemplar_of(x: &Exemplar, trace_id_label: &str) -> prompb::Exemplar {
    let hex: String = x.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    prompb::Exemplar {
        labels: vec![Label {
            name: trace_id_label.into(),
            value: hex,
        }],
        value: x.value,
        timestamp: millis(x.time_nanos),
    }
}

fn spans(layout: &SparseBuckets) -> (Vec<BucketSpan>, Vec<i64>) {
    let (spans, deltas) = layout.spans_and_deltas();
    let spans = spans
        .into_iter()
        .map(|(offset, length)| BucketSpan { offset, length })
        .collect();
    (spans, deltas)
}

/// The time series of one series in one flavor: zero samples first if it is new (strictly
/// before the real one, in milliseconds too), then its value at `now_nanos`.
pub fn series_of(
    family: &Family,
    flavor: Flavor,
    series: &Series,
    now_nanos: u64,
    zero_at_nanos: Option<u64>,
    target: &Target,
) -> Vec<TimeSeries> {
    let now = millis(now_nanos);
    let zero_at = zero_at_nanos.map(millis);
    let samples = |value: f64| {
        let mut samples = Vec::with_capacity(2);
        if let Some(timestamp) = zero_at {
            samples.push(Sample {
                value: 0.0,
                timestamp,
            });
        }
        samples.push(Sample {
            value,
            timestamp: now,
        });
        samples
    };
    let plain = |name: &str, extra: Option<(&str, &str)>, value: f64| TimeSeries {
        labels: labels_of(name, series, extra, target),
        samples: samples(value),
        ..Default::default()
    };
    match (&series.value, flavor) {
        (SeriesValue::Counter(value) | SeriesValue::Gauge(value), _) => {
            vec![plain(family.name, None, *value)]
        }
        (
            SeriesValue::Histogram {
                bounds,
                cumulative,
                sum,
                count,
                exemplar,
                ..
            },
            // A histogram is never written in a number flavor; the classic arm covers them.
            Flavor::Classic | Flavor::Counter | Flavor::Gauge,
        ) => {
            let bucket_name = format!("{}_bucket", family.name);
            // The exemplar goes on the bucket its value falls in, as Prometheus' client does.
            let exemplar_bucket = exemplar
                .map(|x| bounds.partition_point(|b| *b < x.value))
                .unwrap_or(usize::MAX);
            let les = bounds
                .iter()
                .map(|b| format_bound(*b))
                .chain(["+Inf".to_string()]);
            let mut out: Vec<TimeSeries> = les
                .zip(cumulative)
                .enumerate()
                .map(|(i, (le, value))| {
                    let mut ts = plain(&bucket_name, Some(("le", &le)), *value);
                    if i == exemplar_bucket {
                        ts.exemplars.extend(
                            exemplar
                                .as_ref()
                                .map(|x| exemplar_of(x, &target.trace_id_label)),
                        );
                    }
                    ts
                })
                .collect();
            out.push(plain(&format!("{}_sum", family.name), None, *sum));
            // Float counts, as Tempo's classic histograms write them (span multipliers).
            out.push(plain(&format!("{}_count", family.name), None, *count));
            out
        }
        (
            SeriesValue::Histogram {
                sum,
                count,
                exemplar,
                native: Some(native),
                ..
            },
            Flavor::Native,
        ) => {
            let NativeValue {
                schema,
                zero_threshold,
                ..
            } = native;
            let mut histograms = Vec::with_capacity(2);
            if let Some(timestamp) = zero_at {
                histograms.push(prompb::Histogram {
                    schema: *schema,
                    zero_threshold: *zero_threshold,
                    timestamp,
                    ..Default::default()
                });
            }
            let (positive_spans, positive_deltas) = spans(&native.positive);
            let (negative_spans, negative_deltas) = spans(&native.negative);
            histograms.push(prompb::Histogram {
                count_int: count.round() as u64,
                sum: *sum,
                schema: *schema,
                zero_threshold: *zero_threshold,
                zero_count_int: native.zero_count,
                negative_spans,
                negative_deltas,
                positive_spans,
                positive_deltas,
                reset_hint: 0,
                timestamp: now,
            });
            vec![TimeSeries {
                labels: labels_of(family.name, series, None, target),
                exemplars: exemplar
                    .as_ref()
                    .map(|x| exemplar_of(x, &target.trace_id_label))
                    .into_iter()
                    .collect(),
                histograms,
                ..Default::default()
            }]
        }
        (SeriesValue::Histogram { native: None, .. }, Flavor::Native) => Vec::new(),
    }
}

/// One request of a push, with the keys of the series it carries.
pub struct Part {
    pub request: WriteRequest,
    pub samples: u64,
    keys: Vec<u64>,
}

/// Splits a push into requests of at most `max_bytes` encoded bytes (before snappy), each
/// series (all its `_bucket`, `_sum`, `_count`) in exactly one; built as they are taken.
pub struct Parts<'a> {
    cursor: Cursor<'a>,
    now_nanos: u64,
    target: &'a Target,
    max_bytes: usize,
}

impl Iterator for Parts<'_> {
    type Item = Part;

    fn next(&mut self) -> Option<Part> {
        let mut part = Part {
            request: WriteRequest::default(),
            samples: 0,
            keys: Vec::new(),
        };
        let mut size = 0;
        while let Some(Item {
            family,
            flavor,
            series,
            key,
            new,
            zero_at_nanos,
        }) = self.cursor.peek()
        {
            let zero_at = new.then_some(zero_at_nanos);
            let timeseries =
                series_of(family, flavor, series, self.now_nanos, zero_at, self.target);
            let added: usize = timeseries.iter().map(|t| field_len(t.encoded_len())).sum();
            if !part.keys.is_empty() && size + added > self.max_bytes {
                break; // this series opens the next part
            }
            part.samples += timeseries
                .iter()
                .map(|t| (t.samples.len() + t.histograms.len()) as u64)
                .sum::<u64>();
            part.request.timeseries.extend(timeseries);
            part.keys.push(key);
            size += added;
            self.cursor.advance();
        }
        (!part.keys.is_empty()).then_some(part)
    }
}

/// The push of `families` at `now_nanos` as bounded requests.
pub fn to_parts<'a>(
    families: &'a [Family],
    histograms: HistogramMode,
    now_nanos: u64,
    target: &'a Target,
    pushed: &'a PushedSeries,
    max_bytes: usize,
) -> Parts<'a> {
    Parts {
        cursor: Cursor::new(families, histograms, pushed, now_nanos),
        now_nanos,
        target,
        max_bytes,
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// A 4xx other than 429, with the start of the endpoint's message.
    Rejected {
        status: u16,
        message: String,
    },
    /// Still failing when the budget ran out; `answered`: the last attempt got an HTTP answer
    /// (so nothing was stored), not a lost connection or a timeout (it may have been).
    Expired {
        last_error: String,
        answered: bool,
    },
}

/// How long a push may retry.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Each request for at most this long (regular pushes).
    PerRequest(Duration),
    /// Everything, attempts included, done by then (the last push at shutdown).
    Until(Instant),
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub target: Target,
    /// `--inject-tenant-id-as`.
    pub inject_tenant_id_as: Option<String>,
    pub max_request_bytes: usize,
    pub backoff: Backoff,
    /// How long one request is retried during a regular push.
    pub retry_budget: Duration,
}

/// The headers of one tenant's requests besides the configured ones.
struct Headers<'a> {
    org_id: Option<&'a str>,
    tenant: &'a [(String, String)],
}

/// Writes the engine's series to the endpoint every flush, and once more at shutdown.
#[derive(Clone)]
pub struct RemoteWriter {
    config: Arc<RemoteWriteConfig>,
    client: reqwest::Client,
    tenants: Arc<Tenants>,
    metrics: Arc<SelfMetrics>,
    /// Each tenant's series written so far.
    pushed: Arc<tokio::sync::Mutex<BTreeMap<TenantId, PushedSeries>>>,
}

impl RemoteWriter {
    pub fn new(
        config: RemoteWriteConfig,
        tenants: Arc<Tenants>,
        metrics: Arc<SelfMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = http_client()?;
        Ok(Self {
            config: Arc::new(config),
            client,
            tenants,
            metrics,
            pushed: Default::default(),
        })
    }

    pub async fn run_every(self, period: Duration) {
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        // A push retrying through an outage delays the next one instead of piling them up.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.push_once(Budget::PerRequest(self.config.retry_budget))
                .await;
        }
    }

    /// One push within `budget`, every tenant's series in requests of their own (with its
    /// `X-Scope-OrgID`). Returns whether every request was sent.
    pub async fn push_once(&self, budget: Budget) -> bool {
        let mut pushed = self.pushed.lock().await;
        let tenants = self.tenants.all();
        pushed.retain(|id, _| tenants.iter().any(|t| &t.id == id));
        let mut all_sent = true;
        for tenant in tenants {
            let pushed = pushed.entry(tenant.id.clone()).or_default();
            all_sent &= self.push_tenant(&tenant, pushed, budget).await;
        }
        all_sent
    }

    async fn push_tenant(
        &self,
        tenant: &Tenant,
        pushed: &mut PushedSeries,
        budget: Budget,
    ) -> bool {
        let settings = tenant.push_settings();
        if settings.disable_collection {
            return true;
        }
        let (families, now) = tenant.families(self.config.inject_tenant_id_as.as_deref());
        let org_id = crate::tenants::org_id_header(&tenant.id);
        let c = &self.config;
        let mut outcome_of_push = pushed.begin();
        let mut all_sent = true;
        let target = match &settings.trace_id_label {
            Some(label) => c.target.clone().with_trace_id_label(label),
            None => c.target.clone(),
        };
        let parts = to_parts(
            &families,
            settings.histograms,
            now,
            &target,
            pushed,
            c.max_request_bytes,
        );
        let headers = Headers {
            org_id,
            tenant: &settings.remote_write_headers,
        };
        for part in parts {
            let delivery = self.deliver(&part.request, &headers, budget).await;
            // How it ended, and whether its series may now be stored.
            let outcome = match delivery {
                Delivery::Sent => {
                    outcome_of_push.stored(part.keys);
                    RemoteWriteOutcome::sent
                }
                Delivery::Rejected { status, message } => {
                    tracing::error!(
                        status,
                        message,
                        samples = part.samples,
                        "remote write rejected the request; dropped, not retried"
                    );
                    outcome_of_push.not_stored(part.keys, pushed);
                    RemoteWriteOutcome::rejected
                }
                Delivery::Expired {
                    last_error,
                    answered,
                } => {
                    tracing::warn!(error = %last_error, samples = part.samples, "remote write still failing after the retry budget; the next push carries the same cumulative values");
                    if answered {
                        outcome_of_push.not_stored(part.keys, pushed);
                    } else {
                        outcome_of_push.stored(part.keys);
                    }
                    RemoteWriteOutcome::expired
                }
            };
            all_sent &= outcome == RemoteWriteOutcome::sent;
            let labels = RemoteWriteLabels { outcome };
            let rw = &self.metrics.remote_write;
            rw.requests.get_or_create(&labels).inc();
            rw.samples.get_or_create(&labels).inc_by(part.samples);
        }
        pushed.finish(outcome_of_push, now);
        all_sent
    }

    /// Sends one request, retrying as the spec says within `budget`.
    async fn deliver(
        &self,
        request: &WriteRequest,
        headers: &Headers<'_>,
        budget: Budget,
    ) -> Delivery {
        let body = bytes::Bytes::from(
            snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .expect("snappy compresses any buffer in memory"),
        );
        let (deadline, hard) = match budget {
            Budget::PerRequest(d) => (Instant::now() + d, false),
            Budget::Until(t) => (t, true),
        };
        let mut attempt = 0u32;
        loop {
            let sent = self.send(body.clone(), headers);
            let answer = if hard {
                match tokio::time::timeout_at(deadline, sent).await {
                    Ok(answer) => answer.map_err(|e| e.to_string()),
                    Err(_) => Err("the shutdown grace period ran out".to_string()),
                }
            } else {
                sent.await.map_err(|e| e.to_string())
            };
            let (status, retry_after, error) = match answer {
                Ok(response) if response.status().is_success() => return Delivery::Sent,
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let text = response.text().await.unwrap_or_default();
                    let message: String = text.trim().chars().take(300).collect();
                    (Some(status), retry_after, format!("{status}: {message}"))
                }
                Err(e) => (None, None, e),
            };
            let server_delay = match classify_http(status, retry_after) {
                Verdict::GiveUp => {
                    return Delivery::Rejected {
                        status: status.unwrap_or_default(),
                        message: error,
                    }
                }
                Verdict::Retry { server_delay } => server_delay,
            };
            // At least what the server asked for, never less than our own backoff (a
            // `Retry-After: 0` must not make a busy loop).
            let backoff = self.config.backoff.delay(attempt, fastrand::f64());
            let delay = server_delay.map_or(backoff, |d| d.max(backoff));
            if Instant::now() + delay > deadline {
                return Delivery::Expired {
                    last_error: error,
                    answered: status.is_some(),
                };
            }
            let reason = match status {
                Some(429) => RemoteWriteRetry::throttled,
                Some(_) => RemoteWriteRetry::server_error,
                None => RemoteWriteRetry::transport,
            };
            self.metrics
                .remote_write
                .retries
                .get_or_create(&RemoteWriteRetryLabels { reason })
                .inc();
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn send(
        &self,
        body: bytes::Bytes,
        headers: &Headers<'_>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self
            .client
            .post(&self.config.endpoint)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0");
        // As Tempo's generator (`storage/config_util.go:25-50`): the configured headers, the
        // tenant's laid over them by name, then its X-Scope-OrgID unless one was set.
        let tenant_sets = |name: &str| {
            headers
                .tenant
                .iter()
                .any(|(h, _)| h.eq_ignore_ascii_case(name))
        };
        for (name, value) in self.config.headers.iter().filter(|(h, _)| !tenant_sets(h)) {
            request = request.header(name, value);
        }
        for (name, value) in headers.tenant {
            request = request.header(name, value);
        }
        let set = |name: &str| {
            tenant_sets(name)
                || self
                    .config
                    .headers
                    .iter()
                    .any(|(h, _)| h.eq_ignore_ascii_case(name))
        };
        if let Some(org_id) = headers.org_id.filter(|_| !set(crate::tenants::HEADER)) {
            request = request.header(crate::tenants::HEADER, org_id);
        }
        request.body(body).send().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native_histogram::NativeConfig;
    use crate::series::{Histogram, HistogramLayout, Labels};

    fn target() -> Target {
        Target::new(
            &[
                ("cluster".into(), "eu-1".into()),
                ("client".into(), "not-this".into()),
            ],
            "graphgen-0",
        )
    }

    fn names_values(labels: &[Label]) -> Vec<(&str, &str)> {
        labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    fn counter(start: u64) -> (Family, Series) {
        let series = Series {
            labels: Labels::from_pairs([("server", "db"), ("client", "shop")]),
            value: SeriesValue::Counter(7.0),
            start_nanos: start,
        };
        let family = Family {
            name: "traces_service_graph_request_total",
            help: "",
            unit: "",
            kind: crate::series::FamilyKind::Counter,
            series: vec![series.clone()],
        };
        (family, series)
    }

    #[test]
    fn a_new_counter_gets_sorted_labels_and_a_zero_sample_first() {
        let (family, series) = counter(5_000_000_000);
        let now = 5_000_000_000; // pushed in the millisecond it started
        let [ts] = &series_of(
            &family,
            Flavor::Counter,
            &series,
            now,
            Some(now - 1_000_000),
            &target(),
        )[..] else {
            panic!("one series")
        };
        assert_eq!(
            names_values(&ts.labels),
            [
                ("__metrics_gen_instance", "graphgen-0"),
                ("__name__", "traces_service_graph_request_total"),
                ("client", "shop"), // the series' own label wins over an external one
                ("cluster", "eu-1"),
                ("server", "db"),
            ]
        );
        let samples: Vec<(f64, i64)> = ts.samples.iter().map(|s| (s.value, s.timestamp)).collect();
        assert_eq!(samples, [(0.0, 4_999), (7.0, 5_000)]);
        let again = series_of(&family, Flavor::Counter, &series, now, None, &target());
        assert_eq!(again[0].samples.len(), 1, "no zero once written");
    }

    fn histogram_series(mode: crate::native_histogram::HistogramMode) -> (Family, Series) {
        let layout = HistogramLayout::new(&[0.1, 1.0], mode, NativeConfig::default());
        let mut h = Histogram::new(&layout, 0);
        for v in [0.05, 0.5, 0.5, 3.0] {
            h.observe_traced(&layout, v, 1.0, &[0xab; 16], 1_000_000_000);
        }
        let series = Series {
            labels: Labels::from_pairs([("client", "shop"), ("server", "db")]),
            value: h.value(&layout, 2_000_000_000),
            start_nanos: 0,
        };
        let family = Family {
            name: "traces_service_graph_request_server_seconds",
            help: "",
            unit: "s",
            kind: crate::series::FamilyKind::Histogram,
            series: vec![series.clone()],
        };
        (family, series)
    }

    #[test]
    fn a_classic_histogram_is_buckets_sum_and_count_with_the_exemplar_on_its_bucket() {
        let (family, series) = histogram_series(HistogramMode::Classic);
        let written = series_of(
            &family,
            Flavor::Classic,
            &series,
            2_000_000_000,
            None,
            &target(),
        );
        let rows: Vec<(String, Option<String>, f64, usize)> = written
            .iter()
            .map(|t| {
                let name = t.labels.iter().find(|l| l.name == "__name__").unwrap();
                let le = t
                    .labels
                    .iter()
                    .find(|l| l.name == "le")
                    .map(|l| l.value.clone());
                (
                    name.value.clone(),
                    le,
                    t.samples[0].value,
                    t.exemplars.len(),
                )
            })
            .collect();
        let bucket = "traces_service_graph_request_server_seconds_bucket".to_string();
        assert_eq!(
            rows,
            [
                (bucket.clone(), Some("0.1".into()), 1.0, 0),
                (bucket.clone(), Some("1".into()), 3.0, 0),
                (bucket, Some("+Inf".into()), 4.0, 1), // the latest value, 3.0
                (
                    "traces_service_graph_request_server_seconds_sum".into(),
                    None,
                    4.05,
                    0
                ),
                (
                    "traces_service_graph_request_server_seconds_count".into(),
                    None,
                    4.0,
                    0
                ),
            ]
        );
        let exemplar = &written[2].exemplars[0];
        assert_eq!(
            names_values(&exemplar.labels),
            [(TRACE_ID_LABEL, "abababababababababababababababab")]
        );
        assert_eq!((exemplar.value, exemplar.timestamp), (3.0, 1_000));
        // Under the label `--trace-id-label-name` names.
        let renamed = series_of(
            &family,
            Flavor::Classic,
            &series,
            2_000_000_000,
            None,
            &target().with_trace_id_label("trace_id"),
        );
        assert_eq!(
            names_values(&renamed[2].exemplars[0].labels),
            [("trace_id", "abababababababababababababababab")]
        );
    }

    #[test]
    fn a_native_histogram_is_one_series_with_a_zero_histogram_first() {
        let (family, series) = histogram_series(HistogramMode::Native);
        assert!(series_of(
            &family,
            Flavor::Classic,
            &series,
            2_000_000_000,
            Some(0),
            &target()
        )
        .iter()
        .all(|t| t.histograms.is_empty()));
        let [ts] = &series_of(
            &family,
            Flavor::Native,
            &series,
            2_000_000_000,
            Some(0),
            &target(),
        )[..] else {
            panic!("one series")
        };
        assert!(ts.samples.is_empty());
        let [zero, real] = &ts.histograms[..] else {
            panic!("two histograms")
        };
        assert_eq!((zero.count_int, zero.sum, zero.schema), (0, 0.0, 3));
        assert!(zero.timestamp < real.timestamp);
        assert_eq!(
            (real.count_int, real.schema, real.zero_count_int),
            (4, 3, 0)
        );
        // Three populated buckets (0.05, 0.5 twice, 3.0), far apart: three spans.
        let counts: Vec<u32> = real.positive_spans.iter().map(|s| s.length).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(real.positive_deltas, [1, 1, -1]);
        let first = real.positive_spans[0].offset;
        assert_eq!(first, crate::native_histogram::bucket_key(0.05, 3));
        assert_eq!(ts.exemplars.len(), 1);
    }

    #[test]
    fn a_large_push_is_split_into_bounded_requests_with_every_series_once() {
        let families: Vec<Family> = (0..3)
            .map(|f| Family {
                name: ["a_total", "b_total", "c_total"][f],
                help: "",
                unit: "",
                kind: crate::series::FamilyKind::Counter,
                series: (0..20_000)
                    .map(|i| Series {
                        labels: Labels::from_pairs([("client", format!("c{i}"))]),
                        value: SeriesValue::Counter(1.0),
                        start_nanos: 0,
                    })
                    .collect(),
            })
            .collect();
        let pushed = PushedSeries::default();
        let max = 256 << 10;
        let parts: Vec<Part> = to_parts(
            &families,
            HistogramMode::Classic,
            10_000_000_000,
            &target(),
            &pushed,
            max,
        )
        .collect();
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.request.encoded_len() <= max));
        let series: std::collections::BTreeSet<Vec<Label>> = parts
            .iter()
            .flat_map(|p| p.request.timeseries.iter().map(|t| t.labels.clone()))
            .collect();
        assert_eq!(series.len(), 60_000);
        assert_eq!(
            parts.iter().map(|p| p.samples).sum::<u64>(),
            120_000,
            "each with its zero"
        );
    }
}

//! Pushing the engine's series as OTLP/HTTP protobuf (cumulative temporality), e.g. to
//! Prometheus' OTLP receiver. Prometheus translates names: monotonic sums keep their `_total`,
//! and a unit is only set where the name already ends with it, so the stored names are exactly
//! Tempo's. A failed push loses nothing: the next one carries the same cumulative values.
//!
//! What a Prometheus 3 receiver needs from a writer (v3.13.1, `storage/remote/`):
//! - Identity: `service.name` becomes `job` and `service.instance.id` becomes `instance`
//!   (`otlptranslator/prometheusremotewrite/metrics_to_prw.go:420-430`). Without an instance
//!   id, two graphgen processes write the same series and their samples interleave.
//! - Bounded requests: at most 32 MiB is read after decompression (`codec.go:43`, `:1011`); a
//!   longer body is cut and the whole push refused. Pushes are split into gzip parts of at most
//!   `--metrics-max-request-bytes` each, every series in exactly one part.
//! - A zero before the first value: start times are ignored unless the experimental
//!   `created-timestamp-zero-ingestion` feature is on (`tsdb/head_append_v2.go:145`), so a new
//!   series' first value would be invisible to `rate()`/`increase()`. As Tempo's registry does
//!   (`modules/generator/registry/counter.go:140-151`, `histogram.go:230-260`), a series' first
//!   push carries a 0 point before its first real one.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::time::Instant;

use super::push::{field_len, http_client, Cursor, Flavor, Item, PushedSeries};
use crate::native_histogram::{HistogramMode, SparseBuckets};
use crate::selfmetrics::{PushLabels, PushOutcome, SelfMetrics};
use crate::series::{
    whole_bucket_counts, Exemplar as SeriesExemplar, Family, NativeValue, Series, SeriesValue,
};
use crate::tenants::{Tenant, TenantId, Tenants};

/// Who is pushing: becomes `job` and `instance` in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub service_name: String,
    pub instance_id: String,
    pub version: String,
}

impl Identity {
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            service_name: "graphgen".into(),
            instance_id: instance_id.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            string_kv("service.name", &self.service_name),
            string_kv("service.instance.id", &self.instance_id),
            string_kv("service.version", &self.version),
        ]
    }
}

use crate::attributes::string_attribute as string_kv;

/// One data point of either kind, before it is placed in a request.
enum Point {
    Number(NumberDataPoint),
    Histogram(HistogramDataPoint),
    Exponential(ExponentialHistogramDataPoint),
}

impl Point {
    fn encoded_len(&self) -> usize {
        match self {
            Point::Number(p) => p.encoded_len(),
            Point::Histogram(p) => p.encoded_len(),
            Point::Exponential(p) => p.encoded_len(),
        }
    }
}

fn otlp_exemplars(exemplar: &Option<SeriesExemplar>) -> Vec<Exemplar> {
    exemplar
        .iter()
        .map(|x| Exemplar {
            time_unix_nano: x.time_nanos,
            trace_id: x.trace_id.to_vec(),
            value: Some(exemplar::Value::AsDouble(x.value)),
            ..Default::default()
        })
        .collect()
}

/// OTLP's bucket `i` holds `(base^i, base^(i+1)]`, Prometheus' (and client_golang's) key `k`
/// holds `(base^(k-1), base^k]`: the offset is one lower. Prometheus 3.13.1 adds the one back
/// (`storage/remote/otlptranslator/prometheusremotewrite/histograms.go:192-200`).
fn otlp_buckets(buckets: &SparseBuckets) -> Option<Buckets> {
    if buckets.is_empty() {
        return None;
    }
    let (first_key, bucket_counts) = buckets.dense();
    Some(Buckets {
        offset: first_key - 1,
        bucket_counts,
    })
}

/// The points of one series in one flavor: a zero point first if it is new, then its value
/// at `now_nanos`.
fn points_of(series: &Series, flavor: Flavor, now_nanos: u64, zero_at: Option<u64>) -> Vec<Point> {
    let attributes: Vec<KeyValue> = series.labels.iter().map(|(k, v)| string_kv(k, v)).collect();
    // Strictly before the real point, in Prometheus' milliseconds too.
    let mut points = Vec::with_capacity(2);
    match (&series.value, flavor) {
        (SeriesValue::Gauge(value), _) => points.push(Point::Number(NumberDataPoint {
            attributes,
            time_unix_nano: now_nanos,
            value: Some(number_data_point::Value::AsDouble(*value)),
            ..Default::default()
        })),
        (SeriesValue::Counter(value), _) => {
            let point = |time_unix_nano, value| {
                Point::Number(NumberDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano: series.start_nanos,
                    time_unix_nano,
                    value: Some(number_data_point::Value::AsDouble(value)),
                    ..Default::default()
                })
            };
            if let Some(zero_at) = zero_at {
                points.push(point(zero_at, 0.0));
            }
            points.push(point(now_nanos, *value));
        }
        (
            SeriesValue::Histogram {
                bounds,
                cumulative,
                sum,
                exemplar,
                ..
            },
            // A histogram is never written in a number flavor; the classic arm covers them.
            Flavor::Classic | Flavor::Counter | Flavor::Gauge,
        ) => {
            // OTLP wants whole per-bucket counts, one more than bounds.
            let (bucket_counts, count) = whole_bucket_counts(cumulative);
            if let Some(zero_at) = zero_at {
                points.push(Point::Histogram(HistogramDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano: series.start_nanos,
                    time_unix_nano: zero_at,
                    sum: Some(0.0),
                    count: 0,
                    bucket_counts: vec![0; bucket_counts.len()],
                    explicit_bounds: bounds.to_vec(),
                    ..Default::default()
                }));
            }
            points.push(Point::Histogram(HistogramDataPoint {
                attributes,
                start_time_unix_nano: series.start_nanos,
                time_unix_nano: now_nanos,
                sum: Some(*sum),
                count,
                bucket_counts,
                explicit_bounds: bounds.to_vec(),
                // The trace behind the latest observation: Grafana links to it.
                exemplars: otlp_exemplars(exemplar),
                ..Default::default()
            }));
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
            if let Some(zero_at) = zero_at {
                points.push(Point::Exponential(ExponentialHistogramDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano: series.start_nanos,
                    time_unix_nano: zero_at,
                    sum: Some(0.0),
                    scale: *schema,
                    zero_threshold: *zero_threshold,
                    ..Default::default()
                }));
            }
            points.push(Point::Exponential(ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano: series.start_nanos,
                time_unix_nano: now_nanos,
                // Whole observations: native histograms count each span as Tempo does.
                count: count.round() as u64,
                sum: Some(*sum),
                scale: *schema,
                zero_count: native.zero_count,
                positive: otlp_buckets(&native.positive),
                negative: otlp_buckets(&native.negative),
                zero_threshold: *zero_threshold,
                exemplars: otlp_exemplars(exemplar),
                ..Default::default()
            }));
        }
        // A histogram without native buckets has nothing to write as native.
        (SeriesValue::Histogram { native: None, .. }, Flavor::Native) => {}
    }
    points
}

/// One request of a push, with the keys of the series it carries.
pub struct Part {
    pub request: ExportMetricsServiceRequest,
    keys: Vec<u64>,
}

/// Builds the requests of one push one at a time, so a push holds one request in memory
/// however many series there are: each part is filled series by series until the next series
/// would pass `max_bytes` (a single series larger than that still gets a part of its own).
/// Series not in `pushed` get a zero point first.
pub struct Parts<'a> {
    cursor: Cursor<'a>,
    now_nanos: u64,
    identity: &'a Identity,
    max_bytes: usize,
}

/// Headroom for the length prefixes of the four enclosing messages, which grow with them.
const NESTING: usize = 4 * 10;

fn empty_request(identity: &Identity) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: identity.attributes(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "graphgen".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: Vec::new(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl Iterator for Parts<'_> {
    type Item = Part;

    fn next(&mut self) -> Option<Part> {
        let mut part = Part {
            request: empty_request(self.identity),
            keys: Vec::new(),
        };
        let mut size = part.request.encoded_len() + NESTING;
        while let Some(Item {
            family,
            flavor,
            series,
            key,
            new,
            zero_at_nanos,
        }) = self.cursor.peek()
        {
            let points = points_of(series, flavor, self.now_nanos, new.then_some(zero_at_nanos));
            if points.is_empty() {
                self.cursor.advance();
                continue;
            }
            let points_len: usize = points.iter().map(|p| field_len(p.encoded_len())).sum();
            let metrics = &mut part.request.resource_metrics[0].scope_metrics[0].metrics;
            let same_metric = metrics
                .last()
                .is_some_and(|m| m.name == family.name && same_flavor(m, flavor));
            let header = (!same_metric).then(|| Metric {
                name: family.name.to_string(),
                description: family.help.to_string(),
                unit: family.unit.to_string(),
                data: Some(empty_data(flavor)),
                ..Default::default()
            });
            let added = match &header {
                None => points_len,
                Some(h) => field_len(h.encoded_len() + points_len),
            };
            if !part.keys.is_empty() && size + added > self.max_bytes {
                break; // this series opens the next part
            }
            metrics.extend(header);
            let metric = metrics.last_mut().expect("pushed above");
            for point in points {
                match (&mut metric.data, point) {
                    (Some(Data::Sum(s)), Point::Number(p)) => s.data_points.push(p),
                    (Some(Data::Gauge(g)), Point::Number(p)) => g.data_points.push(p),
                    (Some(Data::Histogram(h)), Point::Histogram(p)) => h.data_points.push(p),
                    (Some(Data::ExponentialHistogram(h)), Point::Exponential(p)) => {
                        h.data_points.push(p)
                    }
                    _ => unreachable!("a family's points are of its kind"),
                }
            }
            size += added;
            part.keys.push(key);
            self.cursor.advance();
        }
        (!part.keys.is_empty()).then_some(part)
    }
}

fn empty_data(flavor: Flavor) -> Data {
    let cumulative = AggregationTemporality::Cumulative as i32;
    match flavor {
        Flavor::Counter => Data::Sum(Sum {
            aggregation_temporality: cumulative,
            is_monotonic: true,
            data_points: Vec::new(),
        }),
        Flavor::Gauge => Data::Gauge(Gauge {
            data_points: Vec::new(),
        }),
        Flavor::Classic => Data::Histogram(Histogram {
            aggregation_temporality: cumulative,
            data_points: Vec::new(),
        }),
        Flavor::Native => Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: cumulative,
            data_points: Vec::new(),
        }),
    }
}

fn same_flavor(metric: &Metric, flavor: Flavor) -> bool {
    matches!(
        (&metric.data, flavor),
        (Some(Data::Sum(_)), Flavor::Counter)
            | (Some(Data::Gauge(_)), Flavor::Gauge)
            | (Some(Data::Histogram(_)), Flavor::Classic)
            | (Some(Data::ExponentialHistogram(_)), Flavor::Native)
    )
}

/// The push of `families` observed at `now_nanos`, as parts of at most `max_bytes` encoded
/// bytes each, built as they are taken (see [`Parts`]).
pub fn to_parts<'a>(
    families: &'a [Family],
    histograms: HistogramMode,
    now_nanos: u64,
    identity: &'a Identity,
    pushed: &'a PushedSeries,
    max_bytes: usize,
) -> Parts<'a> {
    Parts {
        cursor: Cursor::new(families, histograms, pushed, now_nanos),
        now_nanos,
        identity,
        max_bytes,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("metrics push failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("metrics endpoint answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// POSTs one request as gzip-compressed protobuf.
pub async fn push(
    client: &reqwest::Client,
    endpoint: &str,
    org_id: Option<&str>,
    request: &ExportMetricsServiceRequest,
) -> Result<(), PushError> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&request.encode_to_vec())
        .expect("writing to memory");
    let body = gzip.finish().expect("writing to memory");
    let mut post = client
        .post(endpoint)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip");
    if let Some(org_id) = org_id {
        post = post.header(crate::tenants::HEADER, org_id);
    }
    let response = post.body(body).send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(PushError::Refused {
        status: status.as_u16(),
        body: body.chars().take(500).collect(),
    })
}

/// Pushes the engine's series to the metrics endpoint every flush, and once more at shutdown.
#[derive(Clone)]
pub struct MetricsPusher {
    endpoint: String,
    client: reqwest::Client,
    tenants: Arc<Tenants>,
    /// `--inject-tenant-id-as`.
    inject_tenant_id_as: Option<String>,
    metrics: Arc<SelfMetrics>,
    identity: Identity,
    max_request_bytes: usize,
    /// Each tenant's series pushed so far.
    pushed: Arc<tokio::sync::Mutex<BTreeMap<TenantId, PushedSeries>>>,
}

impl MetricsPusher {
    pub fn new(
        endpoint: String,
        tenants: Arc<Tenants>,
        inject_tenant_id_as: Option<String>,
        metrics: Arc<SelfMetrics>,
        identity: Identity,
        max_request_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let client = http_client()?;
        Ok(Self {
            endpoint,
            client,
            tenants,
            inject_tenant_id_as,
            metrics,
            identity,
            max_request_bytes,
            pushed: Default::default(),
        })
    }

    pub async fn run_every(self, period: Duration) {
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tick.tick().await;
            self.push_once().await;
        }
    }

    /// One push: every part is sent on its own; a part that fails is counted and its series
    /// keep their zero point for the next push. Returns whether every part went through.
    pub async fn push_once(&self) -> bool {
        // One push at a time, so the set of pushed series stays consistent.
        let mut pushed = self.pushed.lock().await;
        let tenants = self.tenants.all();
        pushed.retain(|id, _| tenants.iter().any(|t| &t.id == id));
        let mut all_ok = true;
        for tenant in tenants {
            let pushed = pushed.entry(tenant.id.clone()).or_default();
            all_ok &= self.push_tenant(&tenant, pushed).await;
        }
        let outcome = if all_ok {
            PushOutcome::success
        } else {
            PushOutcome::failure
        };
        self.metrics
            .metrics_pushes
            .get_or_create(&PushLabels { outcome })
            .inc();
        all_ok
    }

    /// A tenant's series, in requests of their own with its `X-Scope-OrgID`.
    async fn push_tenant(&self, tenant: &Tenant, pushed: &mut PushedSeries) -> bool {
        let settings = tenant.push_settings();
        if settings.disable_collection {
            return true;
        }
        let (families, now) = tenant.families(self.inject_tenant_id_as.as_deref());
        let org_id = crate::tenants::org_id_header(&tenant.id);
        let mut outcome_of_push = pushed.begin();
        let mut all_ok = true;
        let parts = to_parts(
            &families,
            settings.histograms,
            now,
            &self.identity,
            pushed,
            self.max_request_bytes,
        );
        for part in parts {
            let outcome = match push(&self.client, &self.endpoint, org_id, &part.request).await {
                Ok(()) => {
                    outcome_of_push.stored(part.keys);
                    PushOutcome::success
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics push failed; the next one carries the same cumulative values");
                    // Keep what was pushed before: its zero point is already stored.
                    match e {
                        // No answer: it may have been stored.
                        PushError::Transport(_) => outcome_of_push.stored(part.keys),
                        PushError::Refused { .. } => outcome_of_push.not_stored(part.keys, pushed),
                    }
                    all_ok = false;
                    PushOutcome::failure
                }
            };
            self.metrics
                .metrics_push_requests
                .get_or_create(&PushLabels { outcome })
                .inc();
        }
        pushed.finish(outcome_of_push, now);
        all_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{Exemplar as SeriesExemplar, FamilyKind, Labels};
    use std::collections::HashSet;

    fn counter_family(n: usize, start: u64) -> Family {
        Family {
            name: "traces_service_graph_request_total",
            help: "requests",
            unit: "",
            kind: FamilyKind::Counter,
            series: (0..n)
                .map(|i| Series {
                    labels: Labels::from_pairs([
                        ("client", format!("client-{i}")),
                        ("server", "server".into()),
                    ]),
                    value: SeriesValue::Counter(5.0),
                    start_nanos: start,
                })
                .collect(),
        }
    }

    fn histogram_family(n: usize, start: u64) -> Family {
        Family {
            name: "traces_service_graph_request_server_seconds",
            help: "latency",
            unit: "s",
            kind: FamilyKind::Histogram,
            series: (0..n)
                .map(|i| Series {
                    labels: Labels::from_pairs([("client", format!("client-{i}"))]),
                    value: SeriesValue::Histogram {
                        bounds: Arc::from(vec![0.1, 1.0]),
                        cumulative: vec![1.0, 2.0, 3.0],
                        sum: 2.5,
                        count: 3.0,
                        exemplar: Some(SeriesExemplar {
                            trace_id: [7; 16],
                            value: 0.5,
                            time_nanos: start,
                        }),
                        native: None,
                    },
                    start_nanos: start,
                })
                .collect(),
        }
    }

    /// (name, labels) of every series with a non-zero point, and how many zero points.
    fn contents(parts: &[Part]) -> (Vec<(String, Vec<String>)>, usize) {
        let mut series = Vec::new();
        let mut zeros = 0;
        for part in parts {
            for m in &part.request.resource_metrics[0].scope_metrics[0].metrics {
                let points: Vec<(Vec<KeyValue>, bool)> = match &m.data {
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| {
                            let zero = p.value == Some(number_data_point::Value::AsDouble(0.0));
                            (p.attributes.clone(), zero)
                        })
                        .collect(),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| (p.attributes.clone(), p.count == 0))
                        .collect(),
                    _ => unreachable!(),
                };
                for (attributes, zero) in points {
                    if zero {
                        zeros += 1;
                    } else {
                        let labels = attributes
                            .iter()
                            .map(|kv| format!("{}={:?}", kv.key, kv.value))
                            .collect();
                        series.push((m.name.clone(), labels));
                    }
                }
            }
        }
        (series, zeros)
    }

    #[test]
    fn a_large_push_is_split_into_bounded_parts_with_every_series_exactly_once() {
        let families = [
            counter_family(60_000, 1_000),
            histogram_family(50_000, 1_000),
        ];
        let identity = Identity::new("host-a");
        let mut pushed = PushedSeries::default();
        let max = 4 << 20;
        let parts: Vec<Part> = to_parts(
            &families,
            HistogramMode::Classic,
            10_000_000_000,
            &identity,
            &pushed,
            max,
        )
        .collect();
        assert!(parts.len() > 1);
        let sizes: Vec<usize> = parts.iter().map(|p| p.request.encoded_len()).collect();
        assert!(sizes.iter().all(|s| *s <= max), "{sizes:?}");
        let (series, zeros) = contents(&parts);
        assert_eq!(series.len(), 110_000, "every series present");
        let distinct: HashSet<_> = series.iter().collect();
        assert_eq!(distinct.len(), 110_000, "each exactly once");
        assert_eq!(
            zeros, 110_000,
            "a zero point before every new series' first value"
        );
        for part in &parts {
            let resource = part.request.resource_metrics[0].resource.as_ref().unwrap();
            let keys: Vec<&str> = resource
                .attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .collect();
            assert_eq!(
                keys,
                ["service.name", "service.instance.id", "service.version"]
            );
        }
        println!(
            "110,000 series: {} parts, largest {} bytes",
            parts.len(),
            sizes.iter().max().unwrap()
        );

        // Once pushed, no more zero points; a series that started over gets one again.
        let mut outcome = pushed.begin();
        for part in parts {
            outcome.stored(part.keys);
        }
        pushed.finish(outcome, 10_000_000_000);
        let parts: Vec<Part> = to_parts(
            &families,
            HistogramMode::Classic,
            20_000_000_000,
            &identity,
            &pushed,
            max,
        )
        .collect();
        assert_eq!(contents(&parts).1, 0);
        let restarted = [counter_family(1, 15_000_000_000)];
        let parts: Vec<Part> = to_parts(
            &restarted,
            HistogramMode::Classic,
            20_000_000_000,
            &identity,
            &pushed,
            max,
        )
        .collect();
        assert_eq!(contents(&parts).1, 1);
    }

    #[test]
    fn zero_points_come_strictly_before_the_first_value_and_are_all_zero() {
        let families = [
            counter_family(1, 5_000_000_000),
            histogram_family(1, 5_000_000_000),
        ];
        let now = 5_000_000_000; // a series pushed in the millisecond it started
        let parts = to_parts(
            &families,
            HistogramMode::Classic,
            now,
            &Identity::new("a"),
            &PushedSeries::default(),
            1 << 20,
        )
        .collect::<Vec<_>>();
        let metrics = &parts[0].request.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            unreachable!()
        };
        let [zero, real] = &sum.data_points[..] else {
            panic!("two points")
        };
        assert_eq!(zero.value, Some(number_data_point::Value::AsDouble(0.0)));
        assert_eq!(real.value, Some(number_data_point::Value::AsDouble(5.0)));
        assert!(zero.time_unix_nano / 1_000_000 < real.time_unix_nano / 1_000_000);
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            unreachable!()
        };
        let [zero, real] = &h.data_points[..] else {
            panic!("two points")
        };
        assert_eq!((zero.count, zero.sum), (0, Some(0.0)));
        assert_eq!(zero.bucket_counts, vec![0, 0, 0]);
        assert!(zero.exemplars.is_empty());
        assert_eq!((real.count, real.bucket_counts.clone()), (3, vec![1, 1, 1]));
        assert!(zero.time_unix_nano < real.time_unix_nano);
    }

    #[test]
    fn a_gauge_is_one_gauge_point_with_no_zero_before_it() {
        let mut info = counter_family(1, 5_000_000_000);
        info.name = "traces_service_graph_connection_info";
        info.kind = FamilyKind::Gauge;
        info.series[0].value = SeriesValue::Gauge(1.0);
        let parts = to_parts(
            &[info],
            HistogramMode::Classic,
            6_000_000_000,
            &Identity::new("a"),
            &PushedSeries::default(),
            1 << 20,
        )
        .collect::<Vec<_>>();
        let metric = &parts[0].request.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "traces_service_graph_connection_info");
        let Some(Data::Gauge(gauge)) = &metric.data else {
            panic!("a gauge: {:?}", metric.data)
        };
        let [point] = &gauge.data_points[..] else {
            panic!("one point")
        };
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(1.0)));
        assert_eq!(point.time_unix_nano, 6_000_000_000);
    }

    /// Prometheus 3.13.1's `convertBucketsLayout` for OTLP exponential buckets without
    /// down-scaling (graphgen's scale is at most 8), re-stated from
    /// `storage/remote/otlptranslator/prometheusremotewrite/histograms.go:170-256`: the offset
    /// moves up by one, zero buckets become gaps, a gap of up to two stays inside a span.
    fn prometheus_layout(offset: i32, counts: &[u64]) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::new();
        let mut previous = 0i64;
        let mut last_index: Option<i32> = None;
        for (i, count) in counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let index = offset + i as i32 + 1;
            match last_index {
                None => spans.push((index, 0)),
                Some(last) if index - last - 1 > 2 => spans.push((index - last - 1, 0)),
                Some(last) => {
                    for _ in 0..index - last - 1 {
                        spans.last_mut().unwrap().1 += 1;
                        deltas.push(-previous);
                        previous = 0;
                    }
                }
            }
            spans.last_mut().unwrap().1 += 1;
            deltas.push(*count as i64 - previous);
            previous = *count as i64;
            last_index = Some(index);
        }
        (spans, deltas)
    }

    #[test]
    fn exponential_histograms_translate_to_the_native_histogram_remote_write_sends() {
        use crate::export::remote_write::{series_of, Target};
        use crate::native_histogram::NativeConfig;
        use crate::series::{Histogram as SeriesHistogram, HistogramLayout};
        let layout =
            HistogramLayout::new(&[0.1, 1.0], HistogramMode::Both, NativeConfig::default());
        let mut h = SeriesHistogram::new(&layout, 0);
        // A spread with close and far buckets: spans with and without inner gaps.
        for v in [
            0.0, 0.001, 0.0011, 0.0013, 0.05, 0.052, 0.5, 0.5, 0.61, 3.0, 40.0,
        ] {
            h.observe_traced(&layout, v, 1.0, &[1; 16], 1_000_000_000);
        }
        let series = Series {
            labels: Labels::from_pairs([("client", "shop"), ("server", "db")]),
            value: h.value(&layout, 2_000_000_000),
            start_nanos: 0,
        };
        let family = Family {
            name: "traces_service_graph_request_server_seconds",
            help: "latency",
            unit: "s",
            kind: FamilyKind::Histogram,
            series: vec![series.clone()],
        };
        let families = [family.clone()];
        let pushed = PushedSeries::default();
        let identity = Identity::new("a");
        let part = to_parts(
            &families,
            HistogramMode::Both,
            2_000_000_000,
            &identity,
            &pushed,
            1 << 20,
        )
        .next()
        .unwrap();
        // Decoded from the bytes sent.
        let decoded =
            ExportMetricsServiceRequest::decode(&part.request.encode_to_vec()[..]).unwrap();
        let metrics = &decoded.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(
            metrics.len(),
            2,
            "both: a classic and an exponential histogram"
        );
        assert!(metrics.iter().all(|m| m.name == family.name));
        let Some(Data::ExponentialHistogram(exp)) = &metrics[1].data else {
            panic!("exponential second: {:?}", metrics[1].data)
        };
        assert_eq!(
            exp.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let [zero, point] = &exp.data_points[..] else {
            panic!("a zero point and the value")
        };
        assert_eq!(
            (zero.count, zero.scale, zero.positive.is_none()),
            (0, 3, true)
        );
        // Prometheus accepts scales -4..=8 (`histograms.go:92-102`) and counts as given.
        assert!((-4..=8).contains(&point.scale));
        let positive = point.positive.as_ref().unwrap();
        assert_eq!(
            point.count,
            point.zero_count + positive.bucket_counts.iter().sum::<u64>()
        );
        assert_eq!((point.count, point.zero_count), (11, 1));
        assert_eq!(point.exemplars.len(), 1);

        // What Prometheus makes of it equals what remote write sends for the same series.
        let (spans, deltas) = prometheus_layout(positive.offset, &positive.bucket_counts);
        let written = series_of(
            &family,
            Flavor::Native,
            &series,
            2_000_000_000,
            None,
            &Target::new(&[], "a"),
        );
        let native = &written[0].histograms[0];
        let sent: Vec<(i32, u32)> = native
            .positive_spans
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!((spans, deltas), (sent, native.positive_deltas.clone()));
        assert_eq!(
            (point.scale, point.zero_count, point.count, point.sum),
            (
                native.schema,
                native.zero_count_int,
                native.count_int,
                Some(native.sum)
            )
        );

        // `native` writes no classic histogram, `classic` no exponential one.
        for (mode, kind) in [
            (HistogramMode::Native, "exponential"),
            (HistogramMode::Classic, "classic"),
        ] {
            let part = to_parts(&families, mode, 2_000_000_000, &identity, &pushed, 1 << 20)
                .next()
                .unwrap();
            let metrics = &part.request.resource_metrics[0].scope_metrics[0].metrics;
            let kinds: Vec<&str> = metrics
                .iter()
                .map(|m| match m.data {
                    Some(Data::ExponentialHistogram(_)) => "exponential",
                    Some(Data::Histogram(_)) => "classic",
                    _ => "other",
                })
                .collect();
            assert_eq!(kinds, [kind]);
        }
    }
}

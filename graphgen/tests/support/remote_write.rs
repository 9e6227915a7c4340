//! Stands in for Prometheus 3's OTLP receiver, which cannot run here: an HTTP endpoint that
//! takes graphgen's OTLP metric pushes, translates them the way Prometheus v3.13.1 does for
//! the metrics graphgen writes, and remote-writes the samples into a real Prometheus 2.42
//! (`--web.enable-remote-write-receiver`). Prometheus' answer is passed back to graphgen, so
//! a duplicate or out-of-order sample fails the push as it would in Prometheus 3.
//!
//! The translation, as in v3.13.1 (`storage/remote/otlptranslator/prometheusremotewrite/`):
//! - `service.name` → `job`, `service.instance.id` → `instance` (`metrics_to_prw.go:420-430`);
//!   other resource attributes are not put on series;
//! - a cumulative monotonic sum → one series named as the metric (graphgen's names already end
//!   in `_total`, which the translator keeps once, `otlptranslator` `metric_namer.go:225-240`);
//! - a cumulative histogram → `_bucket{le}` (cumulative counts, `+Inf` = count), `_sum`,
//!   `_count` (`helper.go:219-317`); a unit is appended only if the name lacks it, and
//!   graphgen sets `s` only on names ending in `_seconds`;
//! - timestamps in milliseconds; start times ignored (no `created-timestamp-zero-ingestion`).
//!
//! Anything else in a push (another temporality, a unit that would rename) panics the relay,
//! so the stand-in never silently differs from the real receiver.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality,
};
use prost::Message;

/// Prometheus' remote-write protobuf, as graphgen's remote-write exporter defines it.
pub use graphgen::export::remote_write::prompb::{Label, Sample, TimeSeries, WriteRequest};

fn string_value(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{}: not a string: {other:?}", kv.key),
    }
}

/// The samples Prometheus 3 would store for `request`.
pub fn translate(request: &ExportMetricsServiceRequest) -> WriteRequest {
    let mut timeseries = Vec::new();
    let cumulative = AggregationTemporality::Cumulative as i32;
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let find = |key: &str| resource.iter().find(|kv| kv.key == key).map(string_value);
        let mut target = Vec::new();
        if let Some(job) = find("service.name") {
            let job = match find("service.namespace") {
                Some(ns) => format!("{ns}/{job}"),
                None => job,
            };
            target.push(("job".to_string(), job));
        }
        if let Some(instance) = find("service.instance.id") {
            target.push(("instance".to_string(), instance));
        }
        for metric in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            assert!(
                metric.unit.is_empty() || (metric.unit == "s" && metric.name.ends_with("_seconds")),
                "{}: unit {:?} would change the name in Prometheus",
                metric.name,
                metric.unit
            );
            let mut push = |name: String,
                            attributes: &[KeyValue],
                            extra: Option<(&str, String)>,
                            value: f64,
                            time: u64| {
                let mut labels: Vec<(String, String)> = attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), string_value(kv)))
                    .chain(target.iter().cloned())
                    .chain(extra.map(|(k, v)| (k.to_string(), v)))
                    .collect();
                labels.push(("__name__".into(), name));
                labels.sort();
                timeseries.push(TimeSeries {
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    samples: vec![Sample {
                        value,
                        timestamp: (time / 1_000_000) as i64,
                    }],
                    ..Default::default()
                });
            };
            match &metric.data {
                Some(Data::Sum(sum)) => {
                    assert!(sum.is_monotonic && sum.aggregation_temporality == cumulative);
                    assert!(metric.name.ends_with("_total"), "{}", metric.name);
                    for p in &sum.data_points {
                        let value = match p.value {
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            None => continue,
                        };
                        push(
                            metric.name.clone(),
                            &p.attributes,
                            None,
                            value,
                            p.time_unix_nano,
                        );
                    }
                }
                Some(Data::Histogram(h)) => {
                    assert_eq!(h.aggregation_temporality, cumulative);
                    for p in &h.data_points {
                        let name = &metric.name;
                        let t = p.time_unix_nano;
                        if let Some(sum) = p.sum {
                            push(format!("{name}_sum"), &p.attributes, None, sum, t);
                        }
                        push(
                            format!("{name}_count"),
                            &p.attributes,
                            None,
                            p.count as f64,
                            t,
                        );
                        let mut cumulative_count = 0u64;
                        for (bound, count) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
                            cumulative_count += count;
                            let le = format!("{bound}");
                            push(
                                format!("{name}_bucket"),
                                &p.attributes,
                                Some(("le", le)),
                                cumulative_count as f64,
                                t,
                            );
                        }
                        push(
                            format!("{name}_bucket"),
                            &p.attributes,
                            Some(("le", "+Inf".into())),
                            p.count as f64,
                            t,
                        );
                    }
                }
                other => panic!("{}: unexpected data {other:?}", metric.name),
            }
        }
    }
    WriteRequest { timeseries }
}

/// The relay: graphgen pushes to `url()`, samples land in `prometheus_url`.
pub struct OtlpRelay {
    pub addr: std::net::SocketAddr,
    /// Pushes Prometheus refused.
    pub refused: Arc<AtomicU64>,
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpRelay {
    pub async fn start(prometheus_url: &str) -> Self {
        let write_url = format!("{prometheus_url}/api/v1/write");
        let client = reqwest::Client::new();
        let refused = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (r, a) = (refused.clone(), accepted.clone());
        let app = axum::Router::new().route(
            "/api/v1/otlp/v1/metrics",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (client, write_url, refused, accepted) =
                        (client.clone(), write_url.clone(), r.clone(), a.clone());
                    async move {
                        let gzip = headers
                            .get("content-encoding")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
                        let body = if gzip {
                            let mut out = Vec::new();
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_end(&mut out)
                                .expect("valid gzip");
                            out
                        } else {
                            body.to_vec()
                        };
                        let request =
                            ExportMetricsServiceRequest::decode(&body[..]).expect("OTLP protobuf");
                        let write = translate(&request);
                        let compressed = snap::raw::Encoder::new()
                            .compress_vec(&write.encode_to_vec())
                            .unwrap();
                        let response = client
                            .post(&write_url)
                            .header("content-encoding", "snappy")
                            .header("content-type", "application/x-protobuf")
                            .header("x-prometheus-remote-write-version", "0.1.0")
                            .body(compressed)
                            .send()
                            .await
                            .expect("prometheus answers");
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        if status.is_success() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            (axum::http::StatusCode::OK, String::new())
                        } else {
                            eprintln!("prometheus refused a push: {status} {text}");
                            refused.fetch_add(1, Ordering::Relaxed);
                            (
                                axum::http::StatusCode::from_u16(status.as_u16()).unwrap(),
                                text,
                            )
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            refused,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/otlp/v1/metrics", self.addr)
    }
}

impl Drop for OtlpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

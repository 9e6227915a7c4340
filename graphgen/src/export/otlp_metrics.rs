//! Pushing the engine's series as OTLP/HTTP protobuf (cumulative temporality), e.g. to
//! Prometheus' OTLP receiver. Prometheus translates names: monotonic sums keep their `_total`,
//! and a unit is only set where the name already ends with it, so the stored names are exactly
//! Tempo's. A failed push loses nothing: the next one carries the same cumulative values.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, AggregationTemporality, Exemplar, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::series::{whole_bucket_counts, Family, FamilyKind, SeriesValue};

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The OTLP request for `families` observed at `now_nanos`; each series is cumulative since
/// its own start (a series dropped as stale and seen again starts over).
pub fn to_request(families: &[Family], now_nanos: u64) -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let attributes = |labels: &[(String, String)]| -> Vec<KeyValue> {
        labels.iter().map(|(k, v)| string_kv(k, v)).collect()
    };
    let metrics = families
        .iter()
        .filter(|f| !f.series.is_empty())
        .map(|family| {
            let data = match family.kind {
                FamilyKind::Counter => Data::Sum(Sum {
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                    data_points: family
                        .series
                        .iter()
                        .filter_map(|s| match s.value {
                            SeriesValue::Counter(v) => Some(NumberDataPoint {
                                attributes: attributes(&s.labels),
                                start_time_unix_nano: s.start_nanos,
                                time_unix_nano: now_nanos,
                                value: Some(number_data_point::Value::AsDouble(v)),
                                ..Default::default()
                            }),
                            _ => None,
                        })
                        .collect(),
                }),
                FamilyKind::Histogram => Data::Histogram(Histogram {
                    aggregation_temporality: cumulative,
                    data_points: family
                        .series
                        .iter()
                        .filter_map(|s| match &s.value {
                            SeriesValue::Histogram {
                                bounds,
                                cumulative,
                                sum,
                                exemplar,
                                ..
                            } => Some({
                                // OTLP wants whole per-bucket counts, one more than bounds.
                                let (bucket_counts, count) = whole_bucket_counts(cumulative);
                                HistogramDataPoint {
                                    attributes: attributes(&s.labels),
                                    start_time_unix_nano: s.start_nanos,
                                    time_unix_nano: now_nanos,
                                    sum: Some(*sum),
                                    count,
                                    bucket_counts,
                                    explicit_bounds: bounds.to_vec(),
                                    // The trace behind the latest observation: Grafana links to it.
                                    exemplars: exemplar
                                        .iter()
                                        .map(|x| Exemplar {
                                            time_unix_nano: x.time_nanos,
                                            trace_id: x.trace_id.to_vec(),
                                            value: Some(exemplar::Value::AsDouble(x.value)),
                                            ..Default::default()
                                        })
                                        .collect(),
                                    ..Default::default()
                                }
                            }),
                            _ => None,
                        })
                        .collect(),
                }),
            };
            Metric {
                name: family.name.to_string(),
                description: family.help.to_string(),
                unit: family.unit.to_string(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "graphgen")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "graphgen".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("metrics push failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("metrics endpoint answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// POSTs one request as protobuf.
pub async fn push(
    client: &reqwest::Client,
    endpoint: &str,
    request: &ExportMetricsServiceRequest,
) -> Result<(), PushError> {
    let response = client
        .post(endpoint)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await?;
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

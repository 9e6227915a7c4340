//! Prometheus text exposition of the engine's series and its own counters, read at scrape time.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::series::{whole_bucket_counts, FamilyKind, SeriesValue};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes the engine at every scrape.
#[derive(Debug)]
pub struct EngineCollector {
    engine: Arc<Mutex<Engine>>,
}

impl EngineCollector {
    pub fn register(engine: Arc<Mutex<Engine>>, registry: &mut Registry) {
        registry.register_collector(Box::new(Self { engine }));
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (families, stats, pending, max_items, cardinality) = {
            let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            let graph = engine.graph();
            let mut cardinality = vec![("service_graph", graph.cardinality())];
            if let Some(sm) = engine.span_metrics() {
                cardinality.push(("span_metrics", sm.cardinality()));
            }
            (
                engine.families(),
                graph.stats().clone(),
                graph.pending_edges(),
                graph.config().max_items,
                cardinality,
            )
        };
        for family in &families {
            match family.kind {
                FamilyKind::Counter => {
                    let name = family.name.strip_suffix("_total").unwrap_or(family.name);
                    let mut metric =
                        encoder.encode_descriptor(name, family.help, None, MetricType::Counter)?;
                    for series in &family.series {
                        if let SeriesValue::Counter(v) = series.value {
                            metric
                                .encode_family(&series.labels)?
                                .encode_counter::<NoLabelSet, f64, f64>(&v, None)?;
                        }
                    }
                }
                FamilyKind::Histogram => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        None,
                        MetricType::Histogram,
                    )?;
                    for series in &family.series {
                        if let SeriesValue::Histogram {
                            bounds,
                            cumulative,
                            sum,
                            ..
                        } = &series.value
                        {
                            // The encoder accumulates per-bucket counts itself.
                            let (per_bucket, whole_count) = whole_bucket_counts(cumulative);
                            let buckets: Vec<(f64, u64)> = bounds
                                .iter()
                                .copied()
                                .chain([f64::INFINITY])
                                .zip(per_bucket)
                                .collect();
                            metric
                                .encode_family(&series.labels)?
                                .encode_histogram::<NoLabelSet>(
                                    *sum,
                                    whole_count,
                                    &buckets,
                                    None,
                                )?;
                        }
                    }
                }
            }
        }

        let counter =
            |encoder: &mut DescriptorEncoder, name, help, value: u64| -> std::fmt::Result {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                m.encode_counter::<NoLabelSet, u64, u64>(&value, None)
            };
        let gauge = |encoder: &mut DescriptorEncoder, name, help, value: i64| -> std::fmt::Result {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&value)
        };
        counter(
            &mut encoder,
            "graphgen_edges_completed",
            "Edges recorded as service-graph metrics (paired or virtual)",
            stats.edges_completed,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_edges_expired",
                "Edges that expired unmatched, by the kind of the span that was seen",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in stats.expired_by_kind() {
                m.encode_family(&[("unmatched_span_kind", kind)])?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
        counter(
            &mut encoder,
            "graphgen_store_dropped_spans",
            "Spans dropped because max_items edges were already waiting",
            stats.spans_dropped,
        )?;
        counter(
            &mut encoder,
            "graphgen_engine_invalid_spans",
            "Spans the engine skipped for ids longer than OTLP allows",
            stats.spans_invalid,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_series",
                "Label sets held, by processor (bounded by max_series)",
                None,
                MetricType::Gauge,
            )?;
            for (processor, (held, _)) in &cardinality {
                m.encode_family(&[("processor", *processor)])?
                    .encode_gauge(&(*held as i64))?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_series_refused",
                "Updates not recorded because max_series label sets already exist, by processor",
                None,
                MetricType::Counter,
            )?;
            for (processor, (_, refused)) in &cardinality {
                m.encode_family(&[("processor", *processor)])?
                    .encode_counter::<NoLabelSet, u64, u64>(refused, None)?;
            }
        }
        gauge(
            &mut encoder,
            "graphgen_store_edges",
            "Edges waiting for their other side",
            pending as i64,
        )?;
        gauge(
            &mut encoder,
            "graphgen_store_capacity_edges",
            "Most edges that may wait (max_items)",
            max_items as i64,
        )?;
        Ok(())
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

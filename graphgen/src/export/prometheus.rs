//! Prometheus text exposition of the engine's series (`traces_*`), read at scrape time. The
//! `graphgen_*` series are defined in [`crate::selfmetrics`].

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
        let families = self
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .families();
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

//! The engine's metrics, read from it at every scrape: its series (`traces_*`, streamed from
//! the engine's own copies, see [`crate::series::Labels`]) and its own counters and gauges
//! (`graphgen_edges_*`, `graphgen_store_*`, `graphgen_series*`). The service's other
//! `graphgen_*` series are in [`crate::selfmetrics`].

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::series::{whole_bucket_counts, Cardinality, FamilyKind, SeriesValue};

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
                FamilyKind::Gauge => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        None,
                        MetricType::Gauge,
                    )?;
                    for series in &family.series {
                        if let SeriesValue::Gauge(v) = series.value {
                            metric.encode_family(&series.labels)?.encode_gauge(&v)?;
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

/// The engine's own counters and gauges (`graphgen_edges_*`, `graphgen_store_*`,
/// `graphgen_series*`), read from the engine at every scrape.
#[derive(Debug)]
pub struct EngineStats {
    engine: Arc<Mutex<Engine>>,
}

impl EngineStats {
    pub fn register(engine: Arc<Mutex<Engine>>, registry: &mut Registry) {
        registry.register_collector(Box::new(Self { engine }));
    }
}

impl Collector for EngineStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (
            stats,
            pending,
            max_items,
            cardinality,
            dedup,
            filtered,
            filtered_sides,
            span_names,
            outside_time_range,
        ) = {
            let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            let now = engine.now_nanos();
            // (duplicates, spans held, how far back the record reaches), zeros when off.
            let dedup = engine.dedup().map_or((0, 0, 0), |d| {
                (d.duplicates(), d.len(), d.oldest_age_nanos(now))
            });
            let graph = engine.graph();
            let mut cardinality = vec![("service_graph", graph.cardinality())];
            if let Some(sm) = engine.span_metrics() {
                cardinality.push(("span_metrics", sm.cardinality()));
            }
            if let Some(hi) = engine.host_info() {
                cardinality.push(("host_info", hi.cardinality()));
            }
            let span_names = engine.span_metrics().map_or((0, 0), |sm| {
                (sm.span_names().sanitized(), sm.span_names().patterns())
            });
            let mut filtered = vec![("service_graph", graph.stats().spans_filtered)];
            if let Some(sm) = engine.span_metrics() {
                filtered.push(("span_metrics", sm.filtered_spans()));
            }
            (
                graph.stats().clone(),
                graph.pending_edges(),
                graph.config().max_items,
                cardinality,
                dedup,
                filtered,
                graph.filtered_sides(),
                span_names,
                engine.spans_outside_time_range(),
            )
        };
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
            "graphgen_dedup_duplicate_spans",
            "Spans delivered again within --dedup-window, not counted a second time (still forwarded)",
            dedup.0,
        )?;
        gauge(
            &mut encoder,
            "graphgen_dedup_tracked_spans",
            "Spans the de-duplication record holds (at most --dedup-max-spans)",
            dedup.1 as i64,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_dedup_reach_seconds",
                "How far back the de-duplication record reaches: --dedup-window, or less when --dedup-max-spans cuts it short",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(dedup.2 as f64 / 1e9))?;
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
        // One series per processor, from its `Cardinality`.
        let per_processor = |encoder: &mut DescriptorEncoder,
                             name,
                             help,
                             kind,
                             value: fn(&Cardinality) -> u64|
         -> std::fmt::Result {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            for (processor, c) in &cardinality {
                let labels = [("processor", *processor)];
                let mut family = m.encode_family(&labels)?;
                match kind {
                    MetricType::Gauge => family.encode_gauge(&(value(c) as i64))?,
                    _ => family.encode_counter::<NoLabelSet, u64, u64>(&value(c), None)?,
                }
            }
            Ok(())
        };
        per_processor(
            &mut encoder,
            "graphgen_series",
            "Label sets held, by processor (bounded by max_series)",
            MetricType::Gauge,
            |c| c.series as u64,
        )?;
        per_processor(
            &mut encoder,
            "graphgen_series_refused",
            "Updates not recorded because max_series label sets already exist, by processor",
            MetricType::Counter,
            |c| c.refused,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_label_values_limited",
                "Label values replaced by __cardinality_overflow__ (--max-cardinality-per-label), by processor and label",
                None,
                MetricType::Counter,
            )?;
            for (processor, c) in &cardinality {
                for (label, n) in c.limited_values.iter().filter(|(_, n)| *n > 0) {
                    let labels = [("processor", *processor), ("label", label.as_str())];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, u64, u64>(n, None)?;
                }
            }
        }
        per_processor(
            &mut encoder,
            "graphgen_label_values_truncated",
            "Label values cut to --max-label-value-length bytes, by processor",
            MetricType::Counter,
            |c| c.truncated_values,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_spans_filtered",
                "Spans left out by a processor's filter_policies, by processor",
                None,
                MetricType::Counter,
            )?;
            for (processor, n) in &filtered {
                m.encode_family(&[("processor", *processor)])?
                    .encode_counter::<NoLabelSet, u64, u64>(n, None)?;
            }
        }
        counter(
            &mut encoder,
            "graphgen_edges_filtered",
            "Edges dropped because one of their sides was filtered out (the other side is then dropped too)",
            stats.edges_filtered,
        )?;
        counter(
            &mut encoder,
            "graphgen_filtered_sides_overflow",
            "Filtered sides not remembered because max_items were (their other side then waits and expires)",
            filtered_sides.1,
        )?;
        counter(
            &mut encoder,
            "graphgen_spans_outside_time_range",
            "Spans not counted because they ended outside now ± --ingestion-time-range-slack (still forwarded)",
            outside_time_range,
        )?;
        counter(
            &mut encoder,
            "graphgen_span_names_sanitized",
            "Span names a learnt pattern replaced (--span-name-sanitization; in dry_run, would have)",
            span_names.0,
        )?;
        gauge(
            &mut encoder,
            "graphgen_span_name_patterns",
            "Span-name patterns learnt (at most 100000)",
            span_names.1 as i64,
        )?;
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

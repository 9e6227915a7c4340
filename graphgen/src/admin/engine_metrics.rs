//! The engine's metrics, read from it at every scrape: its series (`traces_*`, streamed from
//! the engine's own copies, see [`crate::series::Labels`]) and its own counters and gauges
//! (`graphgen_edges_*`, `graphgen_store_*`, `graphgen_series*`). The service's other
//! `graphgen_*` series are in [`crate::selfmetrics`].

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::graph::Stats;
use crate::series::{whole_bucket_counts, Cardinality, FamilyKind, SeriesValue};
use crate::tenants::{Tenant, Tenants};

/// Encodes a tenant's engine at every scrape (`/metrics`: the default tenant;
/// `/metrics?tenant=`: another).
#[derive(Debug)]
pub struct EngineCollector {
    tenant: Arc<Tenant>,
    /// `--inject-tenant-id-as`.
    inject: Option<String>,
}

impl EngineCollector {
    pub fn new(tenant: Arc<Tenant>, inject: Option<String>) -> Self {
        Self { tenant, inject }
    }

    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (families, _) = self.tenant.families(self.inject.as_deref());
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

/// The engines' own counters and gauges (`graphgen_edges_*`, `graphgen_store_*`,
/// `graphgen_series*`), read at every scrape: every tenant's added together, and a few per
/// tenant (`graphgen_tenant_*`, `graphgen_tenants*`).
pub struct EngineStats {
    tenants: Arc<Tenants>,
}

impl std::fmt::Debug for EngineStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineStats").finish_non_exhaustive()
    }
}

impl EngineStats {
    pub fn register(tenants: Arc<Tenants>, registry: &mut Registry) {
        registry.register_collector(Box::new(Self { tenants }));
    }
}

/// One engine's figures for [`EngineStats`]; every tenant's are added together.
#[derive(Default)]
struct Reading {
    stats: Stats,
    pending: usize,
    max_items: usize,
    cardinality: Vec<(&'static str, Cardinality)>,
    /// (duplicates, spans held, how far back the record reaches), zeros when off.
    dedup: (u64, usize, u64),
    /// Spans span metrics' filter left out, when span metrics are on (the service graph's are
    /// in `stats`).
    span_metrics_filtered: Option<u64>,
    filtered_sides_overflow: u64,
    span_names: (u64, usize),
    outside_time_range: u64,
    stage_wait: std::time::Duration,
}

impl Reading {
    fn of(engine: &mut Engine) -> Self {
        let now = engine.now_nanos();
        let parts = engine.parts();
        let dedup = parts.dedup.map_or((0, 0, 0), |d| {
            (d.duplicates(), d.len(), d.oldest_age_nanos(now))
        });
        let graph = parts.graph;
        let mut cardinality = vec![("service_graph", graph.cardinality())];
        if let Some(sm) = parts.span_metrics {
            cardinality.push(("span_metrics", sm.cardinality()));
        }
        if let Some(hi) = parts.host_info {
            cardinality.push(("host_info", hi.cardinality()));
        }
        let span_names = parts.span_metrics.map_or((0, 0), |sm| {
            (sm.span_names().sanitized(), sm.span_names().patterns())
        });
        Self {
            stats: graph.stats().clone(),
            pending: graph.pending_edges(),
            max_items: graph.config().max_items,
            cardinality,
            dedup,
            span_metrics_filtered: parts.span_metrics.map(|sm| sm.filtered_spans()),
            filtered_sides_overflow: graph.filtered_sides().1,
            span_names,
            outside_time_range: parts.spans_outside_time_range,
            stage_wait: parts.stage_wait,
        }
    }

    fn add(&mut self, other: Reading) {
        self.stats.add(&other.stats);
        self.pending += other.pending;
        self.max_items += other.max_items;
        for (processor, c) in other.cardinality {
            match self.cardinality.iter_mut().find(|(p, _)| *p == processor) {
                Some((_, mine)) => mine.add(&c),
                None => self.cardinality.push((processor, c)),
            }
        }
        if let Some(n) = other.span_metrics_filtered {
            *self.span_metrics_filtered.get_or_insert(0) += n;
        }
        self.dedup = (
            self.dedup.0 + other.dedup.0,
            self.dedup.1 + other.dedup.1,
            self.dedup.2.max(other.dedup.2),
        );
        self.filtered_sides_overflow += other.filtered_sides_overflow;
        self.span_names = (
            self.span_names.0 + other.span_names.0,
            self.span_names.1 + other.span_names.1,
        );
        self.outside_time_range += other.outside_time_range;
        self.stage_wait += other.stage_wait;
    }
}

impl Collector for EngineStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tenants = self.tenants.all();
        let mut per_tenant = Vec::with_capacity(tenants.len());
        let mut total = Reading::default();
        for tenant in &tenants {
            let reading = Reading::of(&mut tenant.engine());
            let series: usize = reading.cardinality.iter().map(|(_, c)| c.series).sum();
            per_tenant.push((tenant.id.as_str(), tenant.spans_received(), series));
            total.add(reading);
        }
        let Reading {
            stats,
            pending,
            max_items,
            cardinality,
            dedup,
            span_metrics_filtered,
            filtered_sides_overflow,
            span_names,
            outside_time_range,
            stage_wait,
        } = total;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_tenant_spans_received",
                "Spans taken in, by tenant, since the tenant got its engine (Tempo's tempo_metrics_generator_spans_received_total)",
                None,
                MetricType::Counter,
            )?;
            for (tenant, spans, _) in &per_tenant {
                m.encode_family(&[("tenant", *tenant)])?
                    .encode_counter::<NoLabelSet, u64, u64>(spans, None)?;
            }
            let mut m = encoder.encode_descriptor(
                "graphgen_tenant_series",
                "Label sets held by every processor of a tenant (Tempo's tempo_metrics_generator_registry_active_series)",
                None,
                MetricType::Gauge,
            )?;
            for (tenant, _, series) in &per_tenant {
                m.encode_family(&[("tenant", *tenant)])?
                    .encode_gauge(&(*series as i64))?;
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
            let filtered = [
                ("service_graph", Some(stats.spans_filtered)),
                ("span_metrics", span_metrics_filtered),
            ];
            for (processor, n) in filtered.iter().filter_map(|(p, n)| Some((p, (*n)?))) {
                m.encode_family(&[("processor", *processor)])?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
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
            filtered_sides_overflow,
        )?;
        counter(
            &mut encoder,
            "graphgen_spans_outside_time_range",
            "Spans not counted because they ended outside now ± --ingestion-time-range-slack (still forwarded)",
            outside_time_range,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "graphgen_engine_stage_wait_seconds",
                "Time requests waited for an engine stage (service graph, span metrics) another request held",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, f64, f64>(&stage_wait.as_secs_f64(), None)?;
        }
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
            "Most edges that may wait (max_items, every tenant's)",
            max_items as i64,
        )?;
        gauge(
            &mut encoder,
            "graphgen_tenants",
            "Tenants with an engine (at most --max-tenants)",
            per_tenant.len() as i64,
        )?;
        counter(
            &mut encoder,
            "graphgen_tenants_refused",
            "Requests of a new tenant refused because --max-tenants tenants had engines",
            self.tenants.refused(),
        )?;
        Ok(())
    }
}

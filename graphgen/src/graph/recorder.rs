//! Turns completed edges into series: request and failure counters, server/client (and
//! messaging) latency histograms, labelled `client`, `server`, `connection_type` + dimensions.

use std::hash::{Hash, Hasher};

use super::edge::{ConnectionType, Edge};
use crate::processors::GraphMetrics;
use crate::series::{
    Cardinality, Family, FamilyKind, Histogram, HistogramLayout, RegistryLimits, Series, SeriesMap,
    SeriesValue,
};
use crate::spans::duration_sec;

/// One edge series' cumulative figures, as the service map reads them (several series share
/// a client and server when dimensions are configured).
#[derive(Debug, Clone, Copy)]
pub struct EdgeFigures<'a> {
    pub client: &'a str,
    pub server: &'a str,
    /// Empty for a plain service-to-service edge.
    pub connection_type: &'a str,
    /// `client` or `server` when `enable_virtual_node_label` names the uninstrumented side.
    pub virtual_node: &'a str,
    pub total: f64,
    pub failed: f64,
    /// Tells this series from the edge's others (they differ in dimensions), the same for the
    /// same labels at every visit.
    pub series_key: u64,
    /// When the series started counting (its counters' start time).
    pub created_nanos: u64,
    /// `traces_service_graph_request_server_seconds`, with its latest exemplar.
    pub server_latency: &'a Histogram,
}

/// Per-edge series; failed and messaging series only exist once observed, as in Tempo.
#[derive(Debug)]
struct EdgeSeries {
    total: f64,
    failed: Option<f64>,
    server: Histogram,
    client: Histogram,
    messaging: Option<Histogram>,
}

#[derive(Debug)]
pub(super) struct Recorder {
    histograms: HistogramLayout,
    /// For each dimension label, the `Edge::dimensions` slot it reads.
    dimension_slots: Vec<usize>,
    messaging_histogram: bool,
    /// Which families are written (`processors`); every figure is kept for the service map.
    metrics: GraphMetrics,
    /// Labelled `client`, `server`, `connection_type`, then the dimension labels.
    series: SeriesMap<EdgeSeries>,
    /// Label values of the edge being recorded, when one must be cut or limited (the steady
    /// state packs them from the edge); reused so recording allocates nothing.
    scratch: Vec<String>,
}

impl Recorder {
    /// `dimensions`: each dimension label with the slot it reads.
    pub(super) fn new(
        histograms: HistogramLayout,
        dimensions: &[(String, usize)],
        messaging_histogram: bool,
        metrics: GraphMetrics,
        limits: RegistryLimits,
    ) -> Self {
        let label_names: Vec<String> = ["client", "server", "connection_type"]
            .into_iter()
            .map(String::from)
            .chain(dimensions.iter().map(|(name, _)| name.clone()))
            .collect();
        Self {
            histograms,
            scratch: vec![String::new(); label_names.len()],
            dimension_slots: dimensions.iter().map(|(_, slot)| *slot).collect(),
            messaging_histogram,
            metrics,
            series: SeriesMap::new(limits, label_names),
        }
    }

    /// Adds a completed edge to its series, at `now` (for the exemplars).
    pub(super) fn record(&mut self, e: &Edge, now: u64) {
        let labels = [
            e.client_service.as_str(),
            &e.server_service,
            e.connection_type.as_label(),
        ]
        .into_iter()
        .chain(
            self.dimension_slots
                .iter()
                .map(|slot| e.dimensions[*slot].as_str()),
        );
        let layout = &self.histograms;
        let new = || EdgeSeries {
            total: 0.0,
            failed: None,
            server: Histogram::new(layout, now),
            client: Histogram::new(layout, now),
            messaging: None,
        };
        let Some(s) = self
            .series
            .get_or_insert_with_values(labels, &mut self.scratch, now, new)
        else {
            return;
        };
        let m = e.span_multiplier;
        s.total += m;
        if e.failed {
            *s.failed.get_or_insert(0.0) += m;
        }
        let trace = e.key.trace_id();
        s.server
            .observe_traced(layout, e.server_latency_sec, m, trace, now);
        s.client
            .observe_traced(layout, e.client_latency_sec, m, trace, now);
        if self.messaging_histogram && e.connection_type == ConnectionType::MessagingSystem {
            let latency = duration_sec(e.client_end_nanos, e.server_start_nanos);
            // Zero means the consumer started before the producer ended (clock skew): not observed.
            if latency != 0.0 {
                s.messaging
                    .get_or_insert_with(|| Histogram::new(layout, now))
                    .observe_traced(layout, latency, m, trace, now);
            }
        }
    }

    /// Drops the series not updated since `cutoff`.
    pub(super) fn purge_older_than(&mut self, cutoff: u64) -> usize {
        self.series.purge_older_than(cutoff)
    }

    /// (edge label sets held, edges not recorded because `max_series` was reached)
    pub(super) fn cardinality(&self) -> Cardinality {
        self.series.cardinality()
    }

    /// Visits every edge series with its cumulative figures.
    pub(super) fn for_each_edge(&self, mut visit: impl FnMut(EdgeFigures<'_>)) {
        for (labels, s, created) in self.series.iter() {
            // Stable within the process (fixed keys), so snapshots can match a series.
            let mut hasher = std::hash::DefaultHasher::new();
            labels.hash(&mut hasher);
            visit(EdgeFigures {
                series_key: hasher.finish(),
                created_nanos: created,
                client: labels.get("client").unwrap_or_default(),
                server: labels.get("server").unwrap_or_default(),
                connection_type: labels.get("connection_type").unwrap_or_default(),
                virtual_node: labels.get("virtual_node").unwrap_or_default(),
                total: s.total,
                failed: s.failed.unwrap_or(0.0),
                server_latency: &s.server,
            });
        }
    }

    /// Every series, as metric families.
    pub(super) fn families(&self, now: u64) -> Vec<Family> {
        let hist = |h: &Histogram, labels, created| Series {
            labels,
            value: h.value(&self.histograms, now),
            start_nanos: h.start_nanos(created, now),
        };
        let counter = |v: f64, labels, start_nanos| Series {
            labels,
            value: SeriesValue::Counter(v),
            start_nanos,
        };
        let (mut total, mut failed, mut server, mut client, mut messaging, mut info) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let m = self.metrics;
        for (labels, s, start) in self.series.iter() {
            if m.request {
                total.push(counter(s.total, labels.clone(), start));
                if let Some(f) = s.failed {
                    failed.push(counter(f, labels.clone(), start));
                }
            }
            if m.latency {
                server.push(hist(&s.server, labels.clone(), start));
                if let Some(h) = &s.messaging {
                    messaging.push(hist(h, labels.clone(), start));
                }
                client.push(hist(&s.client, labels.clone(), start));
            }
            if m.connection_info {
                // Present while the edge is: it goes when the edge's series go stale.
                info.push(Series {
                    labels,
                    value: SeriesValue::Gauge(1.0),
                    start_nanos: start,
                });
            }
        }
        let counter_family = |name, help, series| Family {
            name,
            help,
            unit: "",
            kind: FamilyKind::Counter,
            series,
        };
        let seconds_family = |name, help, series| Family {
            name,
            help,
            unit: "s",
            kind: FamilyKind::Histogram,
            series,
        };
        let mut families = Vec::new();
        if m.request {
            families.push(counter_family(
                "traces_service_graph_request_total",
                "Requests between two nodes",
                total,
            ));
            families.push(counter_family(
                "traces_service_graph_request_failed_total",
                "Failed requests between two nodes",
                failed,
            ));
        }
        if m.latency {
            families.push(seconds_family(
                "traces_service_graph_request_server_seconds",
                "Time for a request between two nodes as seen from the server",
                server,
            ));
            families.push(seconds_family(
                "traces_service_graph_request_client_seconds",
                "Time for a request between two nodes as seen from the client",
                client,
            ));
            if self.messaging_histogram {
                families.push(seconds_family(
                    "traces_service_graph_request_messaging_system_seconds",
                    "Time between publisher and consumer for services communicating through a messaging system",
                    messaging,
                ));
            }
        }
        if m.connection_info {
            families.push(Family {
                name: "traces_service_graph_connection_info",
                help: "1 while requests between two nodes are seen (presence only)",
                unit: "",
                kind: FamilyKind::Gauge,
                series: info,
            });
        }
        families
    }
}

//! Which metrics each processor makes, chosen by name as in Tempo's `processors` list
//! (grafana/tempo `modules/generator/processor/processor_names.go`): the bare names keep the
//! usual sets, the sub-names pick parts of them. Resolved as Tempo's generator resolves them
//! (`modules/generator/instance.go`, `updateSpanMetricsSubprocessors` and
//! `updateServiceGraphsSubprocessors`, at ad33aa8). Pure.

use serde::{Deserialize, Serialize};

pub const SERVICE_GRAPHS: &str = "service-graphs";
pub const SERVICE_GRAPHS_REQUEST: &str = "service-graphs-request";
pub const SERVICE_GRAPHS_LATENCY: &str = "service-graphs-latency";
pub const SERVICE_GRAPHS_CONNECTION_INFO: &str = "service-graphs-connection-info";
pub const SPAN_METRICS: &str = "span-metrics";
pub const SPAN_METRICS_LATENCY: &str = "span-metrics-latency";
pub const SPAN_METRICS_COUNT: &str = "span-metrics-count";
pub const SPAN_METRICS_SIZE: &str = "span-metrics-size";
pub const HOST_INFO: &str = "host-info";

/// Every name `processors` takes.
pub const NAMES: [&str; 9] = [
    SERVICE_GRAPHS,
    SERVICE_GRAPHS_REQUEST,
    SERVICE_GRAPHS_LATENCY,
    SERVICE_GRAPHS_CONNECTION_INFO,
    SPAN_METRICS,
    SPAN_METRICS_LATENCY,
    SPAN_METRICS_COUNT,
    SPAN_METRICS_SIZE,
    HOST_INFO,
];

/// The service-graph series made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphMetrics {
    /// `traces_service_graph_request_total` and `…_failed_total`.
    pub request: bool,
    /// `traces_service_graph_request_{server,client,messaging_system}_seconds`.
    pub latency: bool,
    /// `traces_service_graph_connection_info`, held at 1 while the edge is seen.
    pub connection_info: bool,
}

impl Default for GraphMetrics {
    /// Bare `service-graphs`: request and latency; connection info is opt-in.
    fn default() -> Self {
        Self {
            request: true,
            latency: true,
            connection_info: false,
        }
    }
}

/// The span-metrics series made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanMetricsSet {
    /// `traces_spanmetrics_calls_total`.
    pub count: bool,
    /// `traces_spanmetrics_latency`.
    pub latency: bool,
    /// `traces_spanmetrics_size_total`.
    pub size: bool,
}

impl Default for SpanMetricsSet {
    fn default() -> Self {
        Self {
            count: true,
            latency: true,
            size: true,
        }
    }
}

/// What a `processors` list turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processors {
    /// `None`: no service-graph name listed, so no service-graph series (graphgen still pairs
    /// edges for its own map).
    pub service_graphs: Option<GraphMetrics>,
    pub span_metrics: Option<SpanMetricsSet>,
    /// Span metrics chosen by sub-name: Tempo then replaces the configured latency buckets
    /// with its default ones (`prometheus.ExponentialBuckets(0.002, 2, 14)`).
    pub span_metrics_default_buckets: bool,
    /// `traces_host_info` (`host-info`).
    pub host_info: bool,
}

impl Default for Processors {
    /// graphgen's default: `service-graphs` and `span-metrics`.
    fn default() -> Self {
        Self {
            service_graphs: Some(GraphMetrics::default()),
            span_metrics: Some(SpanMetricsSet::default()),
            span_metrics_default_buckets: false,
            host_info: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown processor {0:?}; the names are {names}", names = NAMES.join(", "))]
pub struct UnknownProcessor(pub String);

/// Resolves a `processors` list.
pub fn resolve<S: AsRef<str>>(names: &[S]) -> Result<Processors, UnknownProcessor> {
    let listed = |name: &str| names.iter().any(|n| n.as_ref() == name);
    if let Some(unknown) = names.iter().find(|n| !NAMES.contains(&n.as_ref())) {
        return Err(UnknownProcessor(unknown.as_ref().to_string()));
    }
    let service_graphs = if listed(SERVICE_GRAPHS) {
        // Connection info adds to the bare name's set.
        Some(GraphMetrics {
            connection_info: listed(SERVICE_GRAPHS_CONNECTION_INFO),
            ..GraphMetrics::default()
        })
    } else {
        let picked = GraphMetrics {
            request: listed(SERVICE_GRAPHS_REQUEST),
            latency: listed(SERVICE_GRAPHS_LATENCY),
            connection_info: listed(SERVICE_GRAPHS_CONNECTION_INFO),
        };
        (picked.request || picked.latency || picked.connection_info).then_some(picked)
    };
    let (span_metrics, span_metrics_default_buckets) = if listed(SPAN_METRICS) {
        (Some(SpanMetricsSet::default()), false)
    } else {
        let picked = SpanMetricsSet {
            count: listed(SPAN_METRICS_COUNT),
            latency: listed(SPAN_METRICS_LATENCY),
            size: listed(SPAN_METRICS_SIZE),
        };
        let any = picked.count || picked.latency || picked.size;
        (any.then_some(picked), any)
    };
    Ok(Processors {
        service_graphs,
        span_metrics,
        span_metrics_default_buckets,
        host_info: listed(HOST_INFO),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(request: bool, latency: bool, connection_info: bool) -> Option<GraphMetrics> {
        Some(GraphMetrics {
            request,
            latency,
            connection_info,
        })
    }

    fn spans(count: bool, latency: bool, size: bool) -> Option<SpanMetricsSet> {
        Some(SpanMetricsSet {
            count,
            latency,
            size,
        })
    }

    #[test]
    fn lists_resolve_as_tempo_resolves_them() {
        // (names, service-graph series, span-metrics series, span metrics' default buckets)
        type Case<'a> = (
            &'a [&'a str],
            Option<GraphMetrics>,
            Option<SpanMetricsSet>,
            bool,
        );
        let cases: &[Case] = &[
            (
                &["service-graphs", "span-metrics"],
                graph(true, true, false),
                spans(true, true, true),
                false,
            ),
            (&["service-graphs"], graph(true, true, false), None, false),
            (&["span-metrics"], None, spans(true, true, true), false),
            (&[], None, None, false),
            // Connection info adds to the bare set, or stands alone.
            (
                &["service-graphs", "service-graphs-connection-info"],
                graph(true, true, true),
                None,
                false,
            ),
            (
                &["service-graphs-connection-info"],
                graph(false, false, true),
                None,
                false,
            ),
            // Latency off: requests only.
            (
                &["service-graphs-request"],
                graph(true, false, false),
                None,
                false,
            ),
            (
                &["service-graphs-request", "service-graphs-connection-info"],
                graph(true, false, true),
                None,
                false,
            ),
            // The bare name wins over its sub-names.
            (
                &["service-graphs", "service-graphs-request"],
                graph(true, true, false),
                None,
                false,
            ),
            // Span metrics by sub-name: only those, with Tempo's default latency buckets.
            (
                &["span-metrics-count", "span-metrics-size"],
                None,
                spans(true, false, true),
                true,
            ),
            (
                &["span-metrics-latency"],
                None,
                spans(false, true, false),
                true,
            ),
            (
                &["span-metrics", "span-metrics-count"],
                None,
                spans(true, true, true),
                false,
            ),
        ];
        for (names, graphs, span, default_buckets) in cases {
            let got = resolve(names).unwrap();
            assert_eq!(
                (
                    got.service_graphs,
                    got.span_metrics,
                    got.span_metrics_default_buckets
                ),
                (*graphs, *span, *default_buckets),
                "{names:?}"
            );
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_valid_ones() {
        let e = resolve(&["service-graph"]).unwrap_err();
        assert_eq!(e, UnknownProcessor("service-graph".into()));
        assert!(e.to_string().contains("service-graphs-connection-info"));
        assert!(
            resolve(&["Service-Graphs"]).is_err(),
            "names are exact, as Tempo's map keys"
        );
    }
}

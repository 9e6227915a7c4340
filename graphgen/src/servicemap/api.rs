//! `/api/graph`: the map as JSON, each node and edge a row of Grafana's node-graph data frames.
//! Field names are the string values of Grafana's `NodeGraphDataFrameFieldNames` (@grafana/data
//! 13.1.0, `src/utils/nodeGraph.ts` lines 1-50: `id`, `title`, `subtitle`, `mainstat`,
//! `secondarystat`, `arc__*`, `detail__*`, `color`, `strokedasharray`, `isinstrumented`,
//! `source`, `target`), so the rows can be fed to the node graph panel by a JSON data source.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::fleet::{Replica, ReplicaState};
use super::history::Connection;
use super::model::{Figures, NodeKind, ServiceMap};
use crate::series::Exemplar;

#[derive(Debug, Serialize)]
pub struct GraphResponse {
    /// The window, as given (`5m`).
    pub window: String,
    pub window_seconds: f64,
    /// When the figures were computed (RFC 3339, UTC), the end of the window.
    pub computed_at: String,
    pub computed_at_unix_ms: u64,
    pub nodes: Vec<NodeRow>,
    pub edges: Vec<EdgeRow>,
    /// Edges left out of the snapshots because `--service-map-max-series` series of busier
    /// ones were kept, summed over the replicas (each replica's row has its own): not shown,
    /// or undercounted where another replica kept them.
    pub omitted_edges: usize,
    /// The replicas whose parts were asked for: this one first, then each peer (`--peers`)
    /// with its state. The map lacks the share of every `missing` one.
    pub replicas: Vec<Replica>,
    /// How many replicas are missing from the map.
    pub missing_replicas: usize,
}

/// A node: `mainstat` is the p90 server latency in ms and `secondarystat` requests per second
/// into it (Grafana's own service graph shows the mean there; p90 matches this page), `arc__*`
/// the share of failed and successful requests.
#[derive(Debug, Serialize)]
#[allow(non_snake_case)] // `arc__`/`detail__` are Grafana's field-name prefixes
pub struct NodeRow {
    pub id: String,
    pub title: String,
    /// `service`, `database` or `virtual`.
    pub subtitle: &'static str,
    pub mainstat: Option<f64>,
    pub secondarystat: Option<f64>,
    pub arc__success: f64,
    pub arc__failed: f64,
    pub isinstrumented: bool,
    pub detail__requests_per_second: Option<f64>,
    pub detail__errors_per_second: Option<f64>,
    pub detail__error_percent: Option<f64>,
    pub detail__p90_ms: Option<f64>,
    /// Space-separated trace ids (hex) of recent requests into the node.
    pub detail__recent_trace_ids: String,
}

/// An edge, client → server: `mainstat` p90 server latency in ms, `secondarystat` requests per
/// second; failing edges are coloured red, uninstrumented and messaging ones dashed.
#[derive(Debug, Serialize)]
#[allow(non_snake_case)] // `detail__` is Grafana's field-name prefix
pub struct EdgeRow {
    pub id: String,
    pub source: String,
    pub target: String,
    pub mainstat: Option<f64>,
    pub secondarystat: f64,
    pub color: Option<&'static str>,
    pub strokedasharray: Option<&'static str>,
    /// Tempo's `connection_type`: empty, `database`, `messaging_system` or `virtual_node`.
    pub detail__connection_type: &'static str,
    pub detail__requests_per_second: f64,
    pub detail__errors_per_second: f64,
    pub detail__error_percent: Option<f64>,
    pub detail__p90_ms: Option<f64>,
    pub detail__recent_trace_ids: String,
}

pub const FAILING_COLOR: &str = "red";

/// How an edge of this kind is dashed (SVG `stroke-dasharray`).
pub fn dashes(connection: Connection) -> Option<&'static str> {
    match connection {
        Connection::Virtual => Some("6 4"),
        Connection::Messaging => Some("2 3"),
        Connection::Direct | Connection::Database => None,
    }
}

pub fn trace_ids(recent: &[Exemplar]) -> String {
    recent
        .iter()
        .map(|x| hex(&x.trace_id))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ms(seconds: Option<f64>) -> Option<f64> {
    seconds.filter(|s| s.is_finite()).map(|s| s * 1000.0)
}

fn percent(f: &Figures) -> Option<f64> {
    f.error_ratio.map(|r| r * 100.0)
}

impl GraphResponse {
    pub fn new(map: &ServiceMap, replicas: &[Replica], window_text: &str) -> Self {
        let nodes = map
            .nodes
            .iter()
            .map(|n| {
                let f = n.incoming.as_ref();
                let failed = f.and_then(|f| f.error_ratio).unwrap_or(0.0);
                NodeRow {
                    id: n.id.to_string(),
                    title: n.id.to_string(),
                    subtitle: n.kind.as_str(),
                    mainstat: f.and_then(|f| ms(f.p90_seconds)),
                    secondarystat: f.map(|f| f.requests_per_second),
                    arc__success: if f.is_some_and(|f| f.requests > 0.0) {
                        1.0 - failed
                    } else {
                        0.0
                    },
                    arc__failed: failed,
                    isinstrumented: n.kind == NodeKind::Service,
                    detail__requests_per_second: f.map(|f| f.requests_per_second),
                    detail__errors_per_second: f.map(|f| f.errors_per_second),
                    detail__error_percent: f.and_then(percent),
                    detail__p90_ms: f.and_then(|f| ms(f.p90_seconds)),
                    detail__recent_trace_ids: trace_ids(&n.recent),
                }
            })
            .collect();
        let mut ids = HashSet::new();
        let edges = map
            .edges
            .iter()
            .enumerate()
            .map(|(n, e)| {
                // Unique even if names contain the separator: the edge's index makes it so.
                let mut id = format!("{}->{}", e.id.client, e.id.server);
                if !ids.insert(id.clone()) {
                    id = format!("{id}#{n}");
                }
                let f = &e.figures;
                EdgeRow {
                    id,
                    source: e.id.client.to_string(),
                    target: e.id.server.to_string(),
                    mainstat: ms(f.p90_seconds),
                    secondarystat: f.requests_per_second,
                    color: e.failing().then_some(FAILING_COLOR),
                    strokedasharray: dashes(e.connection),
                    detail__connection_type: e.connection.label(),
                    detail__requests_per_second: f.requests_per_second,
                    detail__errors_per_second: f.errors_per_second,
                    detail__error_percent: percent(f),
                    detail__p90_ms: ms(f.p90_seconds),
                    detail__recent_trace_ids: trace_ids(&e.recent),
                }
            })
            .collect();
        let at = UNIX_EPOCH + Duration::from_nanos(map.computed_at_nanos);
        Self {
            window: window_text.to_string(),
            window_seconds: map.window.as_secs_f64(),
            computed_at: humantime::format_rfc3339_millis(at).to_string(),
            computed_at_unix_ms: map.computed_at_nanos / 1_000_000,
            nodes,
            edges,
            omitted_edges: map.omitted_edges,
            replicas: replicas.to_vec(),
            missing_replicas: replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Missing)
                .count(),
        }
    }
}

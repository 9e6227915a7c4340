//! `/graph`: the map as a server-rendered page — an inline SVG laid out by [`super::layout`],
//! figures as text, a details panel for the selected node or edge — that works with JavaScript
//! off; a small inline script only refreshes it in place and copies trace ids. Every name is
//! rendered by askama, which escapes it: a service called `<script>` is text.

use std::sync::{Arc, Mutex};

use askama::Template;

use super::api::{dashes, hex};
use super::fleet::{Replica, ReplicaState};
use super::history::Connection;
use super::layout::{layered, Layout, LAYER_GAP};
use super::model::{Edge, Figures, Node, ServiceMap};
use super::query::MapQuery;
use crate::processors::GraphMetrics;
use crate::series::Exemplar;

/// Node radius in the drawing.
const RADIUS: f64 = 30.0;
/// Names longer than this are shortened on the drawing (the full name is in the tooltip and
/// the details).
const LABEL_CHARS: usize = 24;
/// How often the page refreshes itself.
pub const REFRESH_SECONDS: u32 = 5;
/// The windows offered.
const WINDOWS: [&str; 3] = ["1m", "5m", "15m"];
/// Most edges drawn (the busiest in the window): beyond, a drawing is neither legible nor quick
/// to lay out; `/api/graph` lists them all.
pub const MOST_EDGES_DRAWN: usize = 300;

/// The last few layouts, reused while the graph's shape stays the same: a page refreshing
/// every few seconds lays its graph out once (one per window when the windows draw different
/// busiest edges).
#[derive(Debug, Default)]
pub struct LayoutCache(Mutex<Vec<(Shape, Arc<Layout>)>>);

/// What a layout depends on: the nodes and the links between them.
type Shape = (Vec<String>, Vec<(usize, usize)>);

const LAYOUTS_KEPT: usize = 4;

impl LayoutCache {
    fn layout(&self, nodes: &[&str], links: &[(usize, usize)]) -> Arc<Layout> {
        let same = |(n, l): &Shape| {
            l.as_slice() == links && n.iter().map(String::as_str).eq(nodes.iter().copied())
        };
        // Held while laying out, so concurrent pages wait for one layout instead of each making it.
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cached.iter().position(|(shape, _)| same(shape)) {
            let hit = cached.remove(i);
            let layout = hit.1.clone();
            cached.push(hit); // the most recently used last
            return layout;
        }
        let layout = Arc::new(layered(nodes.len(), links));
        if cached.len() >= LAYOUTS_KEPT {
            cached.remove(0);
        }
        let shape = (
            nodes.iter().map(|n| n.to_string()).collect(),
            links.to_vec(),
        );
        cached.push((shape, layout.clone()));
        layout
    }
}

/// What is drawn: every edge, or the busiest [`MOST_EDGES_DRAWN`] and their nodes; and how
/// many edges were left out.
fn drawn(map: &ServiceMap) -> (Vec<&Node>, Vec<&Edge>, usize) {
    if map.edges.len() <= MOST_EDGES_DRAWN {
        return (map.nodes.iter().collect(), map.edges.iter().collect(), 0);
    }
    let mut edges: Vec<&Edge> = map.edges.iter().collect();
    edges.sort_by(|a, b| {
        b.figures
            .requests
            .total_cmp(&a.figures.requests)
            .then_with(|| a.id.cmp(&b.id))
    });
    edges.truncate(MOST_EDGES_DRAWN);
    edges.sort_by(|a, b| a.id.cmp(&b.id));
    let nodes = map
        .nodes
        .iter()
        .filter(|n| {
            edges
                .iter()
                .any(|e| e.id.client == n.id || e.id.server == n.id)
        })
        .collect();
    (nodes, edges, map.edges.len() - MOST_EDGES_DRAWN)
}

#[derive(Template)]
#[template(path = "graph.html")]
struct Page {
    window: String,
    windows: Vec<Choice>,
    refresh_on: bool,
    refresh_seconds: u32,
    /// The same page with the refresh toggled.
    toggle_refresh_href: String,
    api_href: String,
    computed_at: String,
    width: f64,
    height: f64,
    nodes: Vec<NodeView>,
    edges: Vec<EdgeView>,
    omitted_edges: usize,
    undrawn_edges: usize,
    details: Option<Details>,
    /// Set when a selection names nothing on the map.
    not_found: Option<String>,
    /// With `--peers`: whose parts the map holds.
    fleet: Option<FleetView>,
    /// Whether Prometheus gets these figures too (`processors`): the map always has them.
    latency_exported: bool,
    requests_exported: bool,
}

/// The replicas behind a fleet's map.
struct FleetView {
    answered: usize,
    replicas: usize,
    /// Address and reason of each replica missing from the map.
    missing: Vec<(String, String)>,
}

impl FleetView {
    fn of(replicas: &[Replica]) -> Option<Self> {
        if replicas.len() < 2 {
            return None;
        }
        let missing: Vec<(String, String)> = replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Missing)
            .map(|r| (r.address.clone(), r.error.clone().unwrap_or_default()))
            .collect();
        Some(Self {
            answered: replicas.len() - missing.len(),
            replicas: replicas.len(),
            missing,
        })
    }
}

struct Choice {
    label: &'static str,
    href: String,
    selected: bool,
}

struct NodeView {
    name: String,
    label: String,
    kind: &'static str,
    x: f64,
    y: f64,
    /// Length of the red part of the ring (SVG dash), the failed share of its requests.
    failed_dash: f64,
    circumference: f64,
    has_requests: bool,
    rate: String,
    errors_and_p90: String,
    href: String,
    selected: bool,
}

struct EdgeView {
    client: String,
    server: String,
    path: String,
    label_x: f64,
    label_y: f64,
    rate: String,
    errors_and_p90: String,
    connection: &'static str,
    failing: bool,
    class: String,
    dashes: &'static str,
    href: String,
    selected: bool,
}

struct Details {
    kind: &'static str,
    title: String,
    rows: Vec<(&'static str, String)>,
    traces: Vec<TraceView>,
    close_href: String,
}

struct TraceView {
    id: String,
    grafana_href: Option<String>,
}

/// The query string of this page with its tenant, `window`, the selection and the refresh
/// state.
fn href(tenant: Option<&str>, window: &str, select: &Selection, refresh_on: bool) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![("window", window)];
    match select {
        Selection::None => {}
        Selection::Node(n) => pairs.push(("node", n)),
        Selection::Edge(c, s) => pairs.extend([("client", c.as_str()), ("server", s.as_str())]),
    }
    if !refresh_on {
        pairs.push(("refresh", "off"));
    }
    format!("?{}", super::query::query_string(tenant, pairs))
}

enum Selection {
    None,
    Node(String),
    Edge(String, String),
}

impl Selection {
    fn of(q: &MapQuery) -> Self {
        match (&q.node, &q.client, &q.server) {
            (Some(n), _, _) => Self::Node(n.clone()),
            (None, Some(c), Some(s)) => Self::Edge(c.clone(), s.clone()),
            _ => Self::None,
        }
    }
}

/// `name`, shortened to [`LABEL_CHARS`] characters.
fn short(name: &str) -> String {
    match name.char_indices().nth(LABEL_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_string(),
    }
}

/// Three significant figures at most, never rounding a trickle down to zero.
pub fn rate_text(per_second: f64) -> String {
    match per_second {
        r if r >= 100.0 => format!("{r:.0} req/s"),
        r if r >= 10.0 => format!("{r:.1} req/s"),
        r if r >= 0.1 => format!("{r:.2} req/s"),
        r if r > 0.0 => format!("{r:.3} req/s"),
        _ => "0 req/s".into(),
    }
}

pub fn latency_text(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() && s >= 1.0 => format!("{s:.2} s"),
        Some(s) if s.is_finite() => format!("{:.0} ms", s * 1000.0),
        _ => "–".into(),
    }
}

pub fn percent_text(ratio: Option<f64>) -> String {
    ratio.map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
}

fn errors_and_p90(f: &Figures) -> String {
    format!(
        "{} err · p90 {}",
        percent_text(f.error_ratio),
        latency_text(f.p90_seconds)
    )
}

fn figure_rows(f: &Figures) -> Vec<(&'static str, String)> {
    vec![
        (
            "Requests",
            format!(
                "{} ({:.0} in the window)",
                rate_text(f.requests_per_second),
                f.requests
            ),
        ),
        (
            "Errors",
            format!(
                "{:.2}/s ({:.0} in the window)",
                f.errors_per_second, f.failed
            ),
        ),
        ("Error share", percent_text(f.error_ratio)),
        ("p90 latency (server)", latency_text(f.p90_seconds)),
    ]
}

/// Grafana Explore showing one trace from the provisioned Tempo data source (uid `tempo`).
fn explore_href(grafana: &str, trace_id: &str) -> String {
    let panes = serde_json::json!({"a": {
        "datasource": "tempo",
        "queries": [{"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"},
                     "queryType": "traceql", "query": trace_id}],
        "range": {"from": "now-1h", "to": "now"}}});
    let query = serde_urlencoded::to_string([
        ("schemaVersion", "1"),
        ("orgId", "1"),
        ("panes", &panes.to_string()),
    ])
    .unwrap_or_default();
    format!("{grafana}/explore?{query}")
}

fn traces(recent: &[Exemplar], grafana: Option<&str>) -> Vec<TraceView> {
    recent
        .iter()
        .map(|x| {
            let id = hex(&x.trace_id);
            TraceView {
                grafana_href: grafana.map(|g| explore_href(g, &id)),
                id,
            }
        })
        .collect()
}

/// A cubic curve from the caller's right side to the callee's left side; a call back to an
/// earlier layer (or within one) arcs over both nodes; a self-call loops above its node.
/// Returns the path and its midpoint, where the label goes.
fn edge_path(from: (f64, f64), to: (f64, f64), self_call: bool) -> (String, (f64, f64)) {
    let (x1, y1) = from;
    let (x2, y2) = to;
    let forward = !self_call && x2 > x1 + 1.0;
    let points = if self_call {
        [
            (x1 - 12.0, y1 - RADIUS),
            (x1 - 50.0, y1 - RADIUS - 70.0),
            (x1 + 50.0, y1 - RADIUS - 70.0),
            (x1 + 12.0, y1 - RADIUS),
        ]
    } else if forward {
        let mid = (x1 + x2) / 2.0;
        [
            (x1 + RADIUS, y1),
            (mid, y1),
            (mid, y2),
            (x2 - RADIUS - 6.0, y2),
        ]
    } else {
        let lift = 90.0 + (x1 - x2).abs() / 6.0;
        let top = y1.min(y2) - RADIUS - lift;
        [
            (x1, y1 - RADIUS),
            (x1, top),
            (x2, top),
            (x2, y2 - RADIUS - 6.0),
        ]
    };
    let [p0, p1, p2, p3] = points;
    let at = |t: f64| {
        let u = 1.0 - t;
        let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
        (
            a * p0.0 + b * p1.0 + c * p2.0 + d * p3.0,
            a * p0.1 + b * p1.1 + c * p2.1 + d * p3.1,
        )
    };
    // A forward edge's label sits in the gap just before its callee, so an edge that skips
    // layers does not write over the nodes it passes; other edges label their middle.
    let mid = if forward {
        let want = x2 - LAYER_GAP / 2.0;
        (10..=19)
            .map(|i| at(f64::from(i) / 20.0))
            .min_by(|a, b| (a.0 - want).abs().total_cmp(&(b.0 - want).abs()))
            .unwrap_or(at(0.5))
    } else {
        at(0.5)
    };
    let d = format!(
        "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
        p0.0, p0.1, p1.0, p1.1, p2.0, p2.1, p3.0, p3.1
    );
    (d, mid)
}

/// Room an edge label takes (two or three lines of small text).
const LABEL_WIDTH: f64 = 150.0;
const LABEL_HEIGHT: f64 = 40.0;

/// Moves edge labels down until no two overlap (edges into one node put theirs side by side).
fn separate_labels(edges: &mut [EdgeView]) {
    let mut order: Vec<usize> = (0..edges.len()).collect();
    order.sort_by(|&a, &b| edges[a].label_y.total_cmp(&edges[b].label_y));
    let mut placed: Vec<(f64, f64)> = Vec::with_capacity(edges.len());
    for i in order {
        let (x, mut y) = (edges[i].label_x, edges[i].label_y);
        while let Some(&(_, other_y)) = placed
            .iter()
            .find(|(px, py)| (px - x).abs() < LABEL_WIDTH && (py - y).abs() < LABEL_HEIGHT)
        {
            y = other_y + LABEL_HEIGHT;
        }
        edges[i].label_y = y;
        placed.push((x, y));
    }
}

/// The whole page for `map`.
pub fn render(
    map: &ServiceMap,
    replicas: &[Replica],
    exported: GraphMetrics,
    window: &str,
    q: &MapQuery,
    grafana: Option<&str>,
    layouts: &LayoutCache,
) -> Result<String, askama::Error> {
    let refresh_on = q.refresh.as_deref() != Some("off");
    let tenant = q.tenant.as_deref();
    let selection = Selection::of(q);
    let (draw_nodes, draw_edges, undrawn_edges) = drawn(map);
    let index_of = |name: &str| draw_nodes.iter().position(|n| &*n.id == name);
    let links: Vec<(usize, usize)> = draw_edges
        .iter()
        .filter_map(|e| Some((index_of(&e.id.client)?, index_of(&e.id.server)?)))
        .collect();
    let names: Vec<&str> = draw_nodes.iter().map(|n| &*n.id).collect();
    let layout = layouts.layout(&names, &links);
    let Layout {
        positions,
        width,
        height,
    } = &*layout;
    let (width, height) = (*width, *height);
    let circumference = 2.0 * std::f64::consts::PI * RADIUS;

    let nodes = draw_nodes
        .iter()
        .zip(positions)
        .map(|(n, &(x, y))| {
            let f = n.incoming.as_ref();
            NodeView {
                name: n.id.to_string(),
                label: short(&n.id),
                kind: n.kind.as_str(),
                x,
                y,
                failed_dash: f.and_then(|f| f.error_ratio).unwrap_or(0.0) * circumference,
                circumference,
                has_requests: f.is_some_and(|f| f.requests > 0.0),
                rate: f.map_or(String::new(), |f| rate_text(f.requests_per_second)),
                errors_and_p90: f.map_or(String::new(), errors_and_p90),
                href: href(
                    tenant,
                    window,
                    &Selection::Node(n.id.to_string()),
                    refresh_on,
                ),
                selected: matches!(&selection, Selection::Node(s) if **s == *n.id),
            }
        })
        .collect();

    let mut edges: Vec<EdgeView> = draw_edges
        .iter()
        .zip(&links)
        .map(|(e, &(a, b))| {
            let (path, (label_x, label_y)) = edge_path(positions[a], positions[b], a == b);
            let mut class = String::from("edge");
            if e.failing() {
                class.push_str(" failing");
            }
            if e.connection != Connection::Direct {
                class.push(' ');
                class.push_str(e.connection.label());
            }
            let (client, server) = (e.id.client.to_string(), e.id.server.to_string());
            EdgeView {
                path,
                label_x,
                label_y,
                rate: rate_text(e.figures.requests_per_second),
                errors_and_p90: errors_and_p90(&e.figures),
                connection: e.connection.label(),
                failing: e.failing(),
                class,
                dashes: dashes(e.connection).unwrap_or(""),
                href: href(tenant, window, &Selection::Edge(client.clone(), server.clone()), refresh_on),
                selected: matches!(&selection, Selection::Edge(c, s) if *c == client && *s == server),
                client,
                server,
            }
        })
        .collect();

    separate_labels(&mut edges);
    let close_href = href(tenant, window, &Selection::None, refresh_on);
    let mut not_found = None;
    let details = match &selection {
        Selection::None => None,
        Selection::Node(name) => match map.node(name) {
            Some(n) => {
                let mut rows = vec![("Kind", n.kind.as_str().to_string())];
                match &n.incoming {
                    Some(f) => rows.extend(figure_rows(f)),
                    None => rows.push(("Requests", "nothing calls it (a caller only)".into())),
                }
                let calls = map.edges.iter().filter(|e| e.id.client == n.id).count();
                rows.push(("Calls", format!("{calls} other node(s)")));
                Some(Details {
                    kind: "node",
                    title: n.id.to_string(),
                    rows,
                    traces: traces(&n.recent, grafana),
                    close_href: close_href.clone(),
                })
            }
            None => {
                not_found = Some(format!("no node {name:?} on the map"));
                None
            }
        },
        Selection::Edge(c, s) => match map.edge(c, s) {
            Some(e) => {
                let mut rows = vec![(
                    "Connection",
                    match e.connection {
                        Connection::Direct => "service to service".to_string(),
                        other => other.label().to_string(),
                    },
                )];
                rows.extend(figure_rows(&e.figures));
                Some(Details {
                    kind: "edge",
                    title: format!("{c} → {s}"),
                    rows,
                    traces: traces(&e.recent, grafana),
                    close_href: close_href.clone(),
                })
            }
            None => {
                not_found = Some(format!("no edge {c:?} → {s:?} on the map"));
                None
            }
        },
    };

    Page {
        window: window.to_string(),
        windows: WINDOWS
            .iter()
            .map(|w| Choice {
                label: w,
                href: href(tenant, w, &selection, refresh_on),
                selected: *w == window,
            })
            .collect(),
        refresh_on,
        refresh_seconds: REFRESH_SECONDS,
        toggle_refresh_href: href(tenant, window, &selection, !refresh_on),
        api_href: format!(
            "api/graph?{}",
            super::query::query_string(tenant, [("window", window)])
        ),
        computed_at: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(map.computed_at_nanos),
        )
        .to_string(),
        width,
        height,
        nodes,
        edges,
        omitted_edges: map.omitted_edges,
        undrawn_edges,
        details,
        not_found,
        fleet: FleetView::of(replicas),
        latency_exported: exported.latency,
        requests_exported: exported.request,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::servicemap::fleet::Missing;
    use crate::servicemap::history::{EdgeCounts, EdgeId, SeriesCounts, Snapshot};

    fn map_of(edges: &[(&str, &str, Connection, f64, f64)]) -> ServiceMap {
        let current = Snapshot {
            at_nanos: 2_000_000_000_000,
            edges: edges
                .iter()
                .map(|(c, s, connection, total, failed)| {
                    let id = EdgeId {
                        client: Arc::from(*c),
                        server: Arc::from(*s),
                    };
                    let counts = EdgeCounts {
                        series: vec![(
                            1,
                            SeriesCounts {
                                total: *total,
                                failed: *failed,
                                latency: vec![*total; 4],
                                created_nanos: 1_000_000_000_000,
                            },
                        )],
                        connection: *connection,
                        exemplar: Some(Exemplar {
                            trace_id: [0xab; 16],
                            value: 0.01,
                            time_nanos: 1_999_000_000_000,
                        }),
                        ..Default::default()
                    };
                    (id, counts)
                })
                .collect::<HashMap<_, _>>(),
            omitted: 0,
        };
        ServiceMap::compute(
            &[],
            1_000_000_000_000,
            &current,
            Duration::from_secs(300),
            &[0.1, 0.2, 0.4],
        )
    }

    #[test]
    fn an_empty_map_says_what_to_do() {
        let html = render(
            &map_of(&[]),
            &[],
            GraphMetrics::default(),
            "5m",
            &MapQuery::default(),
            None,
            &LayoutCache::default(),
        )
        .unwrap();
        assert!(html.contains("No edges yet"));
        assert!(html.contains(":4317") && html.contains("--wait"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn the_fleet_line_names_missing_replicas_as_text() {
        let map = map_of(&[("a", "b", Connection::Direct, 1.0, 0.0)]);
        let q = MapQuery::default();
        let cache = LayoutCache::default();
        let this = Replica {
            address: "this replica".into(),
            instance: Some("x".into()),
            state: ReplicaState::This,
            reason: None,
            error: None,
            omitted_edges: 0,
        };
        let alone = render(
            &map,
            std::slice::from_ref(&this),
            GraphMetrics::default(),
            "5m",
            &q,
            None,
            &cache,
        )
        .unwrap();
        assert!(
            !alone.contains("id=\"fleet\""),
            "one replica: no fleet line"
        );
        let rows = [
            this,
            Replica {
                address: "10.0.0.2:9464".into(),
                instance: Some("y".into()),
                state: ReplicaState::Answered,
                reason: None,
                error: None,
                omitted_edges: 0,
            },
            Replica {
                address: "<b>10.0.0.3:9464".into(),
                instance: None,
                state: ReplicaState::Missing,
                reason: Some(Missing::NoAnswer),
                error: Some("no answer: <script>alert(1)</script>".into()),
                omitted_edges: 0,
            },
        ];
        let html = render(&map, &rows, GraphMetrics::default(), "5m", &q, None, &cache).unwrap();
        assert!(
            html.contains("Fleet: 2 of 3 graphgen instances in this map"),
            "{html}"
        );
        assert!(html.contains("class=\"warning\""));
        assert!(
            html.contains("&#60;b&#62;10.0.0.3:9464") || html.contains("&lt;b&gt;10.0.0.3:9464")
        );
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn hostile_names_are_text_never_markup() {
        let evil = "<script>alert(\"x\")</script>' onload='alert(1)";
        let html = render(
            &map_of(&[(evil, "b&b", Connection::Direct, 3.0, 1.0)]),
            &[],
            GraphMetrics::default(),
            "5m",
            &MapQuery {
                node: Some(evil.into()),
                ..Default::default()
            },
            Some("http://localhost:3000"),
            &LayoutCache::default(),
        )
        .unwrap();
        assert!(!html.contains("<script>alert"), "the name escaped");
        assert!(!html.contains("' onload='"), "no attribute breaks out");
        // askama escapes with numeric references.
        assert!(
            html.contains("&#60;script&#62;alert"),
            "the name shown as text"
        );
        assert!(html.contains("b&#38;b"));
        // The page's own script is the only one.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn a_selected_edge_lists_its_traces_with_grafana_links() {
        let map = map_of(&[
            ("checkout", "payment-gateway", Connection::Virtual, 4.0, 4.0),
            ("checkout", "postgres", Connection::Database, 2.0, 0.0),
        ]);
        let q = MapQuery {
            client: Some("checkout".into()),
            server: Some("payment-gateway".into()),
            ..Default::default()
        };
        let html = render(
            &map,
            &[],
            GraphMetrics::default(),
            "5m",
            &q,
            Some("http://localhost:3000"),
            &LayoutCache::default(),
        )
        .unwrap();
        let trace = "ab".repeat(16);
        assert!(html.contains(&format!("<code class=\"trace-id\">{trace}</code>")));
        assert!(html.contains("http://localhost:3000/explore?schemaVersion=1"));
        assert!(html.contains(&trace), "the link names the trace");
        assert!(html.contains("class=\"edge failing virtual_node selected\""));
        assert!(html.contains("data-kind=\"database\""));
        // Without --grafana-url, ids only, no links.
        let bare = render(
            &map,
            &[],
            GraphMetrics::default(),
            "5m",
            &q,
            None,
            &LayoutCache::default(),
        )
        .unwrap();
        assert!(bare.contains(&trace) && !bare.contains("/explore?"));
    }

    #[test]
    fn a_long_name_is_shortened_on_the_drawing_only() {
        let long = "ü".repeat(60);
        let html = render(
            &map_of(&[(&long, "b", Connection::Direct, 1.0, 0.0)]),
            &[],
            GraphMetrics::default(),
            "5m",
            &MapQuery::default(),
            None,
            &LayoutCache::default(),
        )
        .unwrap();
        assert!(html.contains(&format!("{}…", "ü".repeat(LABEL_CHARS))));
        assert!(html.contains(&format!("<title>{long} (service)</title>")));
    }

    #[test]
    fn beyond_the_drawing_limit_the_busiest_edges_are_drawn_and_the_rest_said() {
        let names: Vec<String> = (0..=400).map(|i| format!("s{i:03}")).collect();
        let edges: Vec<(&str, &str, Connection, f64, f64)> = (0..400)
            .map(|i| {
                (
                    names[i].as_str(),
                    names[i + 1].as_str(),
                    Connection::Direct,
                    (i + 1) as f64,
                    0.0,
                )
            })
            .collect();
        let map = map_of(&edges);
        let cache = LayoutCache::default();
        let html = render(
            &map,
            &[],
            GraphMetrics::default(),
            "5m",
            &MapQuery::default(),
            None,
            &cache,
        )
        .unwrap();
        assert_eq!(html.matches("<g class=\"edge").count(), MOST_EDGES_DRAWN);
        assert!(html.contains("100 quieter edge(s) not drawn"));
        assert!(
            html.contains("data-server=\"s400\""),
            "the busiest is drawn"
        );
        assert!(
            !html.contains("data-server=\"s001\""),
            "the quietest is not"
        );
        // The same shape again: the layout is reused, not made twice.
        let first = cache.0.lock().unwrap()[0].1.clone();
        render(
            &map,
            &[],
            GraphMetrics::default(),
            "1m",
            &MapQuery::default(),
            None,
            &cache,
        )
        .unwrap();
        let second = cache.0.lock().unwrap()[0].1.clone();
        assert!(Arc::ptr_eq(&first, &second));
    }
}

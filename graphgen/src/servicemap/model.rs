//! The service map over one window: nodes and edges with their figures, computed from the
//! current counts and the history's counts at the window's start. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::history::{Connection, EdgeId, Snapshot, VirtualSide};
use super::part::{merge, MapPart, RECENT_TRACES};
use super::quantile::histogram_quantile;
use crate::series::Exemplar;

/// What happened on an edge (or into a node) over the window, as Grafana's queries compute it:
/// `rate(…[window])` of the counters and `histogram_quantile(0.9, rate(…_bucket[window]))`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests counted in the window (the counters' increase).
    pub requests: f64,
    pub failed: f64,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    /// failed / requests; `None` without requests.
    pub error_ratio: Option<f64>,
    /// p90 of the server-side latency in seconds; `None` without requests.
    pub p90_seconds: Option<f64>,
    /// Cumulative bucket increases, kept to sum nodes' figures.
    latency: Vec<f64>,
}

impl Figures {
    fn from_increases(
        requests: f64,
        failed: f64,
        latency: Vec<f64>,
        window: Duration,
        bounds: &[f64],
    ) -> Self {
        let seconds = window.as_secs_f64();
        Self {
            requests,
            failed,
            requests_per_second: requests / seconds,
            errors_per_second: failed / seconds,
            error_ratio: (requests > 0.0).then(|| (failed / requests).min(1.0)),
            p90_seconds: histogram_quantile(0.9, bounds, &latency),
            latency,
        }
    }

    /// The figures of several edges together (a node's incoming edges).
    fn sum<'a>(
        all: impl IntoIterator<Item = &'a Figures>,
        window: Duration,
        bounds: &[f64],
    ) -> Self {
        let (mut requests, mut failed, mut latency) = (0.0, 0.0, vec![0.0; bounds.len() + 1]);
        for f in all {
            requests += f.requests;
            failed += f.failed;
            for (sum, c) in latency.iter_mut().zip(&f.latency) {
                *sum += c;
            }
        }
        Self::from_increases(requests, failed, latency, window, bounds)
    }
}

/// What a node stands for, to draw it as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Service,
    Database,
    /// Seen only through the other side of its edges (a caller outside, or a peer named by
    /// `peer.service`): drawn dashed, as Grafana draws uninstrumented nodes.
    Virtual,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Database => "database",
            Self::Virtual => "virtual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: Arc<str>,
    pub kind: NodeKind,
    /// Requests into the node (it is the server), credited as Grafana credits them; `None`
    /// when nothing calls it.
    pub incoming: Option<Figures>,
    pub recent: Vec<Exemplar>,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub id: EdgeId,
    pub connection: Connection,
    pub figures: Figures,
    pub recent: Vec<Exemplar>,
}

impl Edge {
    pub fn failing(&self) -> bool {
        self.figures.failed > 0.0
    }
}

/// The map over one window.
#[derive(Debug, Clone)]
pub struct ServiceMap {
    pub window: Duration,
    pub computed_at_nanos: u64,
    /// Sorted by id.
    pub nodes: Vec<Node>,
    /// Sorted by (client, server).
    pub edges: Vec<Edge>,
    /// Edges left out beyond `--service-map-max-edges`.
    pub omitted_edges: usize,
}

impl ServiceMap {
    /// The map of `current` over the `window` before it, from `snapshots` (oldest first) of a
    /// process that started counting at `started_at`: one replica's part, alone.
    pub fn compute(
        snapshots: &[Arc<Snapshot>],
        started_at: u64,
        current: &Snapshot,
        window: Duration,
        bounds: &[f64],
    ) -> Self {
        let part = MapPart::of("", 0, snapshots, started_at, current, window, bounds);
        Self::from_parts(&[part], window, bounds)
    }

    /// The map of several replicas' parts over the same `window`: increases summed edge by
    /// edge, then rates and p90 taken from the sums.
    pub fn from_parts(parts: &[MapPart], window: Duration, bounds: &[f64]) -> Self {
        let merged = merge(parts);
        let kinds = node_kinds(
            merged
                .iter()
                .map(|(id, m)| (id, m.connection, m.virtual_side)),
        );
        let edges: Vec<Edge> = merged
            .into_iter()
            .map(|(id, m)| Edge {
                connection: m.connection,
                figures: Figures::from_increases(m.requests, m.failed, m.latency, window, bounds),
                recent: m.recent,
                id,
            })
            .collect();

        let mut incoming: HashMap<&str, Vec<&Edge>> = HashMap::new();
        for e in &edges {
            incoming.entry(&*e.id.server).or_default().push(e);
        }
        let nodes = kinds
            .into_iter()
            .map(|(id, kind)| {
                let into = incoming.get(&*id).map(Vec::as_slice).unwrap_or_default();
                let mut all: Vec<Exemplar> =
                    into.iter().flat_map(|e| e.recent.iter().copied()).collect();
                all.sort_by_key(|x| std::cmp::Reverse(x.time_nanos));
                let mut recent: Vec<Exemplar> = Vec::new();
                for x in all {
                    if recent.len() < RECENT_TRACES
                        && !recent.iter().any(|r| r.trace_id == x.trace_id)
                    {
                        recent.push(x);
                    }
                }
                Node {
                    kind,
                    incoming: (!into.is_empty())
                        .then(|| Figures::sum(into.iter().map(|e| &e.figures), window, bounds)),
                    recent,
                    id,
                }
            })
            .collect();
        Self {
            window,
            computed_at_nanos: parts.iter().map(|p| p.at_nanos).max().unwrap_or(0),
            nodes,
            edges,
            omitted_edges: parts.iter().map(|p| p.omitted_edges).sum(),
        }
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| &*n.id == id)
    }

    pub fn edge(&self, client: &str, server: &str) -> Option<&Edge> {
        self.edges
            .iter()
            .find(|e| &*e.id.client == client && &*e.id.server == server)
    }
}

/// Decides what each node is. Only a span's own service is instrumented: both sides of a plain
/// or messaging edge, the client of a database edge. A virtual edge has one uninstrumented side:
/// the one Tempo's `virtual_node` label names, else the side not known from other edges, else
/// the client (a request from outside, such as Tempo's `user`).
fn node_kinds<'a>(
    edges: impl Iterator<Item = (&'a EdgeId, Connection, Option<VirtualSide>)> + Clone,
) -> BTreeMap<Arc<str>, NodeKind> {
    let mut instrumented: BTreeSet<&Arc<str>> = BTreeSet::new();
    let mut databases: BTreeSet<&Arc<str>> = BTreeSet::new();
    for (id, connection, virtual_side) in edges.clone() {
        match (connection, virtual_side) {
            (Connection::Direct | Connection::Messaging, _) => {
                instrumented.extend([&id.client, &id.server]);
            }
            (Connection::Database, _) => {
                instrumented.insert(&id.client);
                databases.insert(&id.server);
            }
            (Connection::Virtual, Some(VirtualSide::Client)) => {
                instrumented.insert(&id.server);
            }
            (Connection::Virtual, Some(VirtualSide::Server)) => {
                instrumented.insert(&id.client);
            }
            (Connection::Virtual, None) => {}
        }
    }
    // Virtual edges without the label: one with a side known instrumented needs nothing more
    // (the other side is the uninstrumented one). Of the rest, the client of one whose client
    // nobody calls is an outside caller, so its server is instrumented, which may settle
    // others; repeat. Sorted, so the same graph always gets the same kinds.
    let servers: BTreeSet<&Arc<str>> = edges.clone().map(|(id, ..)| &id.server).collect();
    let mut open: Vec<&EdgeId> = edges
        .clone()
        .filter(|&(_, c, side)| c == Connection::Virtual && side.is_none())
        .map(|(id, ..)| id)
        .collect();
    open.sort();
    loop {
        open.retain(|id| !instrumented.contains(&id.client) && !instrumented.contains(&id.server));
        if open.is_empty() {
            break;
        }
        let pick = open
            .iter()
            .position(|id| !servers.contains(&id.client))
            .unwrap_or(0);
        instrumented.insert(&open.remove(pick).server);
    }
    let mut kinds = BTreeMap::new();
    for (id, ..) in edges {
        for node in [&id.client, &id.server] {
            let kind = if instrumented.contains(node) {
                NodeKind::Service
            } else if databases.contains(node) {
                NodeKind::Database
            } else {
                NodeKind::Virtual
            };
            kinds.insert(node.clone(), kind);
        }
    }
    kinds
}

//! Snapshots of every edge's cumulative counts, so figures over a window can be computed from
//! counters: a ring every [`FINE_EVERY`] covering the shortest window, and a coarser ring
//! covering the longest. Pure: the caller says when "now" is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::graph::ServiceGraph;
use crate::series::Exemplar;

/// How often a snapshot is taken.
pub const FINE_EVERY: Duration = Duration::from_secs(5);
/// Every snapshot is kept this long (the 1m window at 5 s resolution).
const FINE_SPAN: Duration = Duration::from_secs(60);
/// One snapshot in this period is kept longer, for the longer windows.
const COARSE_EVERY: Duration = Duration::from_secs(30);
/// The longest window offered.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An edge as Grafana's service graph groups it: `sum by (client, server)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId {
    pub client: Arc<str>,
    pub server: Arc<str>,
}

/// How the two sides of an edge are connected (Tempo's `connection_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connection {
    /// Two instrumented services (an empty `connection_type`).
    #[default]
    Direct,
    Database,
    Messaging,
    /// One side is not instrumented.
    Virtual,
}

impl Connection {
    fn from_label(label: &str) -> Self {
        match label {
            "database" => Self::Database,
            "messaging_system" => Self::Messaging,
            "virtual_node" => Self::Virtual,
            _ => Self::Direct,
        }
    }

    /// The `connection_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "",
            Self::Database => "database",
            Self::Messaging => "messaging_system",
            Self::Virtual => "virtual_node",
        }
    }
}

/// Which side of a virtual edge is uninstrumented (Tempo's `virtual_node` label, when on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualSide {
    Client,
    Server,
}

/// What an edge's series add up to at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeCounts {
    pub total: f64,
    pub failed: f64,
    /// Cumulative server-latency bucket counts: one per bound, then `+Inf`.
    pub latency: Vec<f64>,
    pub connection: Connection,
    pub virtual_side: Option<VirtualSide>,
    /// When the newest of the edge's series started counting: before that, it counted nothing
    /// (a new edge, or one dropped as stale and started again).
    pub created_nanos: u64,
    /// The newest exemplar among the edge's series.
    pub exemplar: Option<Exemplar>,
}

/// Every edge's counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub at_nanos: u64,
    pub edges: HashMap<EdgeId, EdgeCounts>,
    /// Edges left out because `max_edges` were already kept (the busiest are kept).
    pub omitted: usize,
}

/// Shares one `Arc<str>` per distinct service name among all snapshots, so that a name is
/// held once however many snapshots mention it.
#[derive(Debug, Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.0.insert(n.clone());
        n
    }

    /// Forgets names no snapshot holds any more.
    fn collect(&mut self) {
        self.0.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// The snapshots kept, and the name pool they share.
#[derive(Debug)]
pub struct History {
    names: Names,
    /// Every snapshot of the last [`FINE_SPAN`], oldest first.
    fine: VecDeque<Arc<Snapshot>>,
    /// One snapshot per [`COARSE_EVERY`] of the last [`LONGEST_WINDOW`], oldest first.
    coarse: VecDeque<Arc<Snapshot>>,
    /// Before this, nothing was counted: every counter was zero.
    started_at_nanos: u64,
    max_edges: usize,
}

/// Sizes of what the history holds, for `graphgen_service_map_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    pub snapshots: usize,
    /// Edge entries over all snapshots held.
    pub edge_entries: usize,
    /// Edges left out of the newest snapshot.
    pub omitted_edges: usize,
}

impl History {
    pub fn new(started_at_nanos: u64, max_edges: usize) -> Self {
        Self {
            names: Names::default(),
            fine: VecDeque::new(),
            coarse: VecDeque::new(),
            started_at_nanos,
            max_edges: max_edges.max(1),
        }
    }

    /// Reads every edge of `graph` at `now_nanos`, summed by (client, server).
    pub fn read(&mut self, graph: &ServiceGraph, now_nanos: u64) -> Snapshot {
        let mut edges: HashMap<EdgeId, EdgeCounts> = HashMap::new();
        graph.for_each_edge(|e| {
            let id = EdgeId {
                client: self.names.get(e.client),
                server: self.names.get(e.server),
            };
            let counts = edges.entry(id).or_default();
            counts.total += e.total;
            counts.created_nanos = counts.created_nanos.max(e.created_nanos);
            counts.failed += e.failed;
            let buckets = e.server_latency.bucket_counts();
            if counts.latency.len() != buckets.len() {
                counts.latency = vec![0.0; buckets.len()];
            }
            // Summed cumulatively, without a vector per series.
            let mut below = 0.0;
            for (sum, c) in counts.latency.iter_mut().zip(buckets) {
                below += c;
                *sum += below;
            }
            // Series of one edge normally agree; a typed one wins over a plain one.
            if counts.connection == Connection::Direct {
                counts.connection = Connection::from_label(e.connection_type);
            }
            counts.virtual_side = counts.virtual_side.or(match e.virtual_node {
                "client" => Some(VirtualSide::Client),
                "server" => Some(VirtualSide::Server),
                _ => None,
            });
            if let Some(x) = e.server_latency.exemplar {
                if counts
                    .exemplar
                    .is_none_or(|old| old.time_nanos < x.time_nanos)
                {
                    counts.exemplar = Some(x);
                }
            }
        });
        let mut omitted = 0;
        if edges.len() > self.max_edges {
            let mut by_total: Vec<(EdgeId, f64)> =
                edges.iter().map(|(id, c)| (id.clone(), c.total)).collect();
            by_total.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (id, _) in &by_total[self.max_edges..] {
                edges.remove(id);
            }
            omitted = by_total.len() - self.max_edges;
        }
        Snapshot {
            at_nanos: now_nanos,
            edges,
            omitted,
        }
    }

    /// Keeps `snapshot` (taken every [`FINE_EVERY`]) and drops what no window needs any more.
    pub fn record(&mut self, snapshot: Snapshot) {
        let at = snapshot.at_nanos;
        let snapshot = Arc::new(snapshot);
        let coarse_due = self.coarse.back().is_none_or(|last| {
            // A little slack, so a tick that fires a few ms early is not skipped.
            at.saturating_sub(last.at_nanos) + nanos(FINE_EVERY) / 2 >= nanos(COARSE_EVERY)
        });
        if coarse_due {
            self.coarse.push_back(snapshot.clone());
        }
        self.fine.push_back(snapshot);
        // Keep one snapshot at or before the start of each ring's span, to interpolate from.
        let keep_after = |ring: &mut VecDeque<Arc<Snapshot>>, span: Duration| {
            let start = at.saturating_sub(nanos(span));
            while ring.len() > 1 && ring[1].at_nanos <= start {
                ring.pop_front();
            }
        };
        keep_after(&mut self.fine, FINE_SPAN);
        keep_after(&mut self.coarse, LONGEST_WINDOW);
        self.names.collect();
    }

    pub fn stats(&self) -> HistoryStats {
        let mut distinct: Vec<&Arc<Snapshot>> = self.fine.iter().chain(&self.coarse).collect();
        distinct.sort_by_key(|s| Arc::as_ptr(s));
        distinct.dedup_by_key(|s| Arc::as_ptr(s));
        HistoryStats {
            snapshots: distinct.len(),
            edge_entries: distinct.iter().map(|s| s.edges.len()).sum(),
            omitted_edges: self.fine.back().map_or(0, |s| s.omitted),
        }
    }

    /// Every snapshot held, oldest first, each once.
    fn snapshots(&self) -> Vec<&Snapshot> {
        let mut all: Vec<&Snapshot> = self
            .fine
            .iter()
            .chain(&self.coarse)
            .map(|s| s.as_ref())
            .collect();
        all.sort_by_key(|s| s.at_nanos);
        all.dedup_by_key(|s| s.at_nanos);
        all
    }

    /// The counts at `at_nanos`, interpolated between the snapshots around it (counters grow
    /// linearly between two snapshots as far as anyone can tell). Before the process started
    /// every counter was zero; an edge missing from a snapshot had not started yet.
    pub fn counts_at(&self, at_nanos: u64, current: &Snapshot) -> HashMap<EdgeId, EdgeCounts> {
        if at_nanos <= self.started_at_nanos {
            return HashMap::new();
        }
        let all = self.snapshots();
        let empty = Snapshot {
            at_nanos: self.started_at_nanos,
            ..Default::default()
        };
        let before = all
            .iter()
            .rev()
            .find(|s| s.at_nanos <= at_nanos)
            .copied()
            .unwrap_or(&empty);
        let after = all
            .iter()
            .find(|s| s.at_nanos > at_nanos)
            .copied()
            .unwrap_or(current);
        if after.at_nanos <= before.at_nanos {
            return before.edges.clone();
        }
        let weight =
            (at_nanos - before.at_nanos) as f64 / (after.at_nanos - before.at_nanos) as f64;
        let mut out = before.edges.clone();
        for (id, later) in &after.edges {
            let earlier = before.edges.get(id);
            let between = |a: f64, b: f64| if b >= a { a + (b - a) * weight } else { a };
            let counts = out.entry(id.clone()).or_insert_with(|| EdgeCounts {
                latency: vec![0.0; later.latency.len()],
                ..later.clone()
            });
            let zero = EdgeCounts::default();
            let earlier = earlier.unwrap_or(&zero);
            counts.total = between(earlier.total, later.total);
            counts.failed = between(earlier.failed, later.failed);
            if earlier.latency.len() == later.latency.len() {
                for ((c, a), b) in counts
                    .latency
                    .iter_mut()
                    .zip(&earlier.latency)
                    .zip(&later.latency)
                {
                    *c = between(*a, *b);
                }
            } else {
                for (c, b) in counts.latency.iter_mut().zip(&later.latency) {
                    *c = between(0.0, *b);
                }
            }
        }
        out
    }

    /// The exemplars of `edge` seen at or after `since_nanos` in the snapshots and `current`,
    /// newest first, each trace once, at most `max`.
    pub fn recent_exemplars(
        &self,
        edge: &EdgeId,
        since_nanos: u64,
        current: &Snapshot,
        max: usize,
    ) -> Vec<Exemplar> {
        let mut out: Vec<Exemplar> = Vec::new();
        let all = self.snapshots();
        for snapshot in std::iter::once(current).chain(all.into_iter().rev()) {
            if out.len() >= max {
                break;
            }
            let Some(x) = snapshot.edges.get(edge).and_then(|c| c.exemplar) else {
                continue;
            };
            if x.time_nanos >= since_nanos && !out.iter().any(|o| o.trace_id == x.trace_id) {
                out.push(x);
            }
        }
        out
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

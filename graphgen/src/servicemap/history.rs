//! Snapshots of every edge's cumulative counts, so figures over a window can be computed from
//! counters: a ring every [`FINE_EVERY`] covering the shortest window, and a coarser ring
//! covering the longest. Pure: the caller says when "now" is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
/// Snapshots each ring holds at most: its span at its period, plus the one before and slack.
const FINE_MOST: usize = (FINE_SPAN.as_secs() / FINE_EVERY.as_secs()) as usize + 3;
const COARSE_MOST: usize = (LONGEST_WINDOW.as_secs() / COARSE_EVERY.as_secs()) as usize + 3;

/// An edge as Grafana's service graph groups it: `sum by (client, server)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId {
    pub client: Arc<str>,
    pub server: Arc<str>,
}

/// How the two sides of an edge are connected (Tempo's `connection_type`). Ordered: where
/// replicas' parts disagree, the greater wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualSide {
    Client,
    Server,
}

/// One series' counters at one moment (an edge has several when dimensions are on).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesCounts {
    pub total: f64,
    pub failed: f64,
    /// Cumulative server-latency bucket counts: one per bound, then `+Inf`.
    pub latency: Vec<f64>,
    /// When the series started counting: before that it counted nothing (a new series, or one
    /// dropped as stale and started again).
    pub created_nanos: u64,
}

/// An edge's series at one moment. Kept apart, not summed, so that increases and resets are
/// taken per series and then added up, as `sum by (client, server)(rate(…))` does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeCounts {
    /// By series key, sorted.
    pub series: Vec<(u64, SeriesCounts)>,
    pub connection: Connection,
    pub virtual_side: Option<VirtualSide>,
    /// The newest exemplar among the edge's series.
    pub exemplar: Option<Exemplar>,
}

impl EdgeCounts {
    pub fn series(&self, key: u64) -> Option<&SeriesCounts> {
        self.series
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &self.series[i].1)
    }

    /// Requests over all the edge's series, since each started.
    pub fn total(&self) -> f64 {
        self.series.iter().map(|(_, s)| s.total).sum()
    }
}

/// Every edge's counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub at_nanos: u64,
    pub edges: HashMap<EdgeId, EdgeCounts>,
    /// Edges left out because `max_series` series of busier edges were already kept. An edge
    /// missing from a snapshot that has some left out may have existed: see [`Baseline`].
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
    /// Most series a snapshot holds (`--service-map-max-series`).
    max_series: usize,
}

/// Sizes of what the history holds, for `graphgen_service_map_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    pub snapshots: usize,
    /// Series entries over all snapshots held.
    pub series_entries: usize,
    /// Edges left out of the newest snapshot.
    pub omitted_edges: usize,
}

impl History {
    pub fn new(started_at_nanos: u64, max_series: usize) -> Self {
        Self {
            names: Names::default(),
            fine: VecDeque::new(),
            coarse: VecDeque::new(),
            started_at_nanos,
            max_series: max_series.max(1),
        }
    }

    /// When counting started.
    pub fn started_at_nanos(&self) -> u64 {
        self.started_at_nanos
    }

    /// Reads every edge of `graph` at `now_nanos`, its series grouped by (client, server).
    pub fn read(&mut self, graph: &ServiceGraph, now_nanos: u64) -> Snapshot {
        let mut edges: HashMap<EdgeId, EdgeCounts> = HashMap::new();
        graph.for_each_edge(|e| {
            let id = EdgeId {
                client: self.names.get(e.client),
                server: self.names.get(e.server),
            };
            let counts = edges.entry(id).or_default();
            let mut below = 0.0;
            let latency = e
                .server_latency
                .bucket_counts()
                .iter()
                .map(|c| {
                    below += c;
                    below
                })
                .collect();
            counts.series.push((
                e.series_key,
                SeriesCounts {
                    total: e.total,
                    failed: e.failed,
                    latency,
                    created_nanos: e.created_nanos,
                },
            ));
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
        for counts in edges.values_mut() {
            counts.series.sort_by_key(|(k, _)| *k);
        }
        // Within the budget, the busiest edges are kept whole.
        let mut omitted = 0;
        let all: usize = edges.values().map(|c| c.series.len()).sum();
        if all > self.max_series {
            let mut by_total: Vec<(EdgeId, f64, usize)> = edges
                .iter()
                .map(|(id, c)| (id.clone(), c.total(), c.series.len()))
                .collect();
            by_total.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let mut budget = self.max_series;
            for (id, _, series) in by_total {
                if series <= budget {
                    budget -= series;
                } else {
                    edges.remove(&id);
                    omitted += 1;
                }
            }
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
        // The wall clock went back (NTP stepping it): the snapshots no longer line up with
        // time, and the rings would keep them until the clock caught up. Start over.
        if self.fine.back().is_some_and(|last| last.at_nanos > at) {
            tracing::warn!("the clock went back; the service map's history starts over");
            self.fine.clear();
            self.coarse.clear();
            self.started_at_nanos = at;
        }
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
        // Whatever the clock does, never more than the spans need at the expected periods.
        for (ring, most) in [(&mut self.fine, FINE_MOST), (&mut self.coarse, COARSE_MOST)] {
            while ring.len() > most {
                ring.pop_front();
            }
        }
        self.names.collect();
    }

    pub fn stats(&self) -> HistoryStats {
        let distinct = self.snapshots();
        HistoryStats {
            snapshots: distinct.len(),
            series_entries: distinct
                .iter()
                .flat_map(|s| s.edges.values())
                .map(|e| e.series.len())
                .sum(),
            omitted_edges: self.fine.back().map_or(0, |s| s.omitted),
        }
    }

    /// Every snapshot held, oldest first, each once: shared, so figures can be computed
    /// without holding the history.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        let mut all: Vec<Arc<Snapshot>> = self.fine.iter().chain(&self.coarse).cloned().collect();
        all.sort_by_key(|s| s.at_nanos);
        all.dedup_by_key(|s| s.at_nanos);
        all
    }
}

/// Where a series stood when a window started.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub total: f64,
    pub failed: f64,
    pub latency: Vec<f64>,
    /// What the increase from here must be multiplied by to cover the window: 1, unless the
    /// series was not tracked at the window's start (left out of full snapshots) and the
    /// baseline is the first snapshot that has it, later.
    pub scale: f64,
}

impl Baseline {
    fn zero(len: usize) -> Self {
        Self {
            total: 0.0,
            failed: 0.0,
            latency: vec![0.0; len],
            scale: 1.0,
        }
    }

    fn of(s: &SeriesCounts, scale: f64) -> Self {
        Self {
            total: s.total,
            failed: s.failed,
            latency: s.latency.clone(),
            scale,
        }
    }
}

/// The snapshots around one window's start, to find each series' baseline.
#[derive(Debug)]
pub struct WindowStart<'a> {
    snapshots: &'a [Arc<Snapshot>],
    /// The window's start and end (now).
    start: u64,
    end: u64,
    started_at: u64,
    /// Index of the last snapshot at or before `start`, and of the first after it.
    before: Option<usize>,
    after: usize,
}

impl<'a> WindowStart<'a> {
    pub fn new(snapshots: &'a [Arc<Snapshot>], started_at: u64, start: u64, end: u64) -> Self {
        let after = snapshots.partition_point(|s| s.at_nanos <= start);
        Self {
            snapshots,
            start,
            end,
            started_at,
            before: after.checked_sub(1),
            after,
        }
    }

    /// `series` (now `now`) of `edge` at the window's start: interpolated between the
    /// snapshots around it (a counter grows linearly between two readings as far as anyone can
    /// tell); zero if it started counting after that, or if the process had not started.
    pub fn baseline(&self, edge: &EdgeId, key: u64, now: &SeriesCounts) -> Baseline {
        let len = now.latency.len();
        if now.created_nanos > self.start || self.start <= self.started_at {
            return Baseline::zero(len);
        }
        let series_in = |s: &'a Arc<Snapshot>| {
            s.edges
                .get(edge)
                .and_then(|e| e.series(key))
                .filter(|c| c.created_nanos == now.created_nanos)
        };
        // The reading before the start: the snapshot's, else zero when the series (or the
        // process) started between that snapshot and the start.
        let zero = SeriesCounts {
            latency: vec![0.0; len],
            ..Default::default()
        };
        let before: Option<(u64, &SeriesCounts)> = match self.before.map(|i| &self.snapshots[i]) {
            Some(s) => match series_in(s) {
                Some(c) => Some((s.at_nanos, c)),
                None if now.created_nanos > s.at_nanos => Some((now.created_nanos, &zero)),
                // The series existed but the snapshot left it out.
                None => None,
            },
            None => Some((self.started_at.max(now.created_nanos), &zero)),
        };
        let later = self.snapshots[self.after..]
            .iter()
            .find_map(|s| Some((s.at_nanos, series_in(s)?)));
        let Some((before_at, before)) = before else {
            // Not tracked at the start: measure from the first snapshot that has it, scaled.
            return match later {
                Some((at, c)) if at < self.end => {
                    let covered = (self.end - at) as f64;
                    Baseline::of(c, (self.end - self.start) as f64 / covered)
                }
                _ => Baseline::of(now, 1.0),
            };
        };
        let (after_at, after) = later.unwrap_or((self.end, now));
        if after_at <= before_at {
            return Baseline::of(before, 1.0);
        }
        let w = (self.start - before_at) as f64 / (after_at - before_at) as f64;
        let between = |a: f64, b: f64| if b >= a { a + (b - a) * w } else { a };
        Baseline {
            total: between(before.total, after.total),
            failed: between(before.failed, after.failed),
            latency: (0..len)
                .map(|i| {
                    let at = |c: &SeriesCounts| c.latency.get(i).copied().unwrap_or(0.0);
                    between(at(before), at(after))
                })
                .collect(),
            scale: 1.0,
        }
    }

    /// The exemplars of `edge` seen from the window's start on, in `current` and the
    /// snapshots, newest first, each trace once, at most `max`.
    pub fn recent_exemplars(&self, edge: &EdgeId, current: &Snapshot, max: usize) -> Vec<Exemplar> {
        let mut out: Vec<Exemplar> = Vec::new();
        let newest_first =
            std::iter::once(current).chain(self.snapshots.iter().rev().map(|s| s.as_ref()));
        for snapshot in newest_first {
            if out.len() >= max {
                break;
            }
            let Some(x) = snapshot.edges.get(edge).and_then(|c| c.exemplar) else {
                continue;
            };
            if x.time_nanos >= self.start && !out.iter().any(|o| o.trace_id == x.trace_id) {
                out.push(x);
            }
        }
        out
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

//! One replica's share of the map over a window: each edge's counter increases, before any rate
//! or quantile is taken. Replicas behind a load balancer each see a share of the traces; their
//! parts add up (increases sum, bucket by bucket), and the map is computed from the sum, so a
//! fleet's p90 comes from the merged buckets, never from averaging replicas' p90s. Pure.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::history::{Connection, EdgeId, Snapshot, VirtualSide, WindowStart};
use super::quantile::increase;
use crate::series::Exemplar;

/// Trace ids kept per edge.
pub const RECENT_TRACES: usize = 5;

/// What one replica counted over one window. Also the JSON of `GET /api/graph/part`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapPart {
    /// The replica's `--instance-id`, and a number drawn when its process started: a process
    /// reached at two addresses counts once, two processes given one id are told apart.
    pub instance: String,
    pub boot: u64,
    /// The end of the window (Unix nanoseconds).
    pub at_nanos: u64,
    pub window_seconds: f64,
    /// The latency histogram's bucket bounds; parts merge only with equal bounds.
    pub bounds: Vec<f64>,
    pub edges: Vec<EdgePart>,
    /// Edges the replica's snapshots left out (`--service-map-max-series`).
    pub omitted_edges: usize,
}

/// One edge's increases over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgePart {
    pub client: String,
    pub server: String,
    pub connection: Connection,
    pub virtual_side: Option<VirtualSide>,
    pub requests: f64,
    pub failed: f64,
    /// Cumulative server-latency bucket increases: one per bound, then `+Inf`.
    pub latency: Vec<f64>,
    /// Recent requests' trace ids, newest first.
    pub recent: Vec<RecentTrace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecentTrace {
    #[serde(with = "hex_trace_id")]
    pub trace_id: [u8; 16],
    /// Server latency in seconds.
    pub value: f64,
    pub time_nanos: u64,
}

impl From<Exemplar> for RecentTrace {
    fn from(x: Exemplar) -> Self {
        Self {
            trace_id: x.trace_id,
            value: x.value,
            time_nanos: x.time_nanos,
        }
    }
}

impl From<RecentTrace> for Exemplar {
    fn from(x: RecentTrace) -> Self {
        Self {
            trace_id: x.trace_id,
            value: x.value,
            time_nanos: x.time_nanos,
        }
    }
}

/// Why a peer's part cannot be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartError {
    #[error("its latency buckets {theirs:?} differ from this replica's {ours:?}; give every replica the same --service-graphs-histogram-buckets")]
    Bounds { theirs: Vec<f64>, ours: Vec<f64> },
    #[error("its window is {theirs} s, not {ours} s")]
    Window { theirs: f64, ours: f64 },
    #[error("edge {client:?} → {server:?} has {got} latency buckets, not {want}")]
    Buckets {
        client: String,
        server: String,
        got: usize,
        want: usize,
    },
    #[error("edge {client:?} → {server:?} has a count that is negative, too large, or failures above requests")]
    Count { client: String, server: String },
    #[error("edge {client:?} → {server:?} is listed twice")]
    Duplicate { client: String, server: String },
}

/// Larger than any count a process makes (2^53, where f64 stops counting by ones).
const MOST_COUNT: f64 = 9_007_199_254_740_992.0;

impl MapPart {
    /// `current`'s increases over the `window` before it, from `snapshots` (oldest first) of a
    /// process that started counting at `started_at`.
    pub fn of(
        instance: &str,
        boot: u64,
        snapshots: &[Arc<Snapshot>],
        started_at: u64,
        current: &Snapshot,
        window: Duration,
        bounds: &[f64],
    ) -> Self {
        let start_nanos = current.at_nanos.saturating_sub(window.as_nanos() as u64);
        let start = WindowStart::new(snapshots, started_at, start_nanos, current.at_nanos);
        let mut edges: Vec<EdgePart> = current
            .edges
            .iter()
            .map(|(id, now)| {
                let (mut requests, mut failed) = (0.0, 0.0);
                let mut latency = vec![0.0; bounds.len() + 1];
                // Each series' increase (PromQL's reset rule, scaled where its baseline came
                // late), then summed, as `sum by (client, server)(increase(…))` does.
                for (key, series) in &now.series {
                    let base = start.baseline(id, *key, series);
                    requests += increase(base.total, series.total) * base.scale;
                    failed += increase(base.failed, series.failed) * base.scale;
                    for (i, sum) in latency.iter_mut().enumerate() {
                        let at = |l: &[f64]| l.get(i).copied().unwrap_or(0.0);
                        *sum += increase(at(&base.latency), at(&series.latency)) * base.scale;
                    }
                }
                EdgePart {
                    client: id.client.to_string(),
                    server: id.server.to_string(),
                    connection: now.connection,
                    virtual_side: now.virtual_side,
                    requests,
                    failed,
                    latency,
                    recent: start
                        .recent_exemplars(id, current, RECENT_TRACES)
                        .into_iter()
                        .map(RecentTrace::from)
                        .collect(),
                }
            })
            .collect();
        edges.sort_by(|a, b| (&a.client, &a.server).cmp(&(&b.client, &b.server)));
        Self {
            instance: instance.to_string(),
            boot,
            at_nanos: current.at_nanos,
            window_seconds: window.as_secs_f64(),
            bounds: bounds.to_vec(),
            edges,
            omitted_edges: current.omitted,
        }
    }

    /// Whether a peer's part can be added to ours: same buckets and window, counts that are
    /// counts. A peer is another process: what it sends is checked, not trusted.
    pub fn check(&self, bounds: &[f64], window: Duration) -> Result<(), PartError> {
        if self.bounds != bounds {
            return Err(PartError::Bounds {
                theirs: self.bounds.clone(),
                ours: bounds.to_vec(),
            });
        }
        if (self.window_seconds - window.as_secs_f64()).abs() > 1e-9 {
            return Err(PartError::Window {
                theirs: self.window_seconds,
                ours: window.as_secs_f64(),
            });
        }
        let count = |x: f64| (0.0..=MOST_COUNT).contains(&x);
        let mut seen = std::collections::HashSet::new();
        for e in &self.edges {
            if !seen.insert((&e.client, &e.server)) {
                return Err(PartError::Duplicate {
                    client: e.client.clone(),
                    server: e.server.clone(),
                });
            }
            if e.latency.len() != bounds.len() + 1 {
                return Err(PartError::Buckets {
                    client: e.client.clone(),
                    server: e.server.clone(),
                    got: e.latency.len(),
                    want: bounds.len() + 1,
                });
            }
            // Failures are requests too (with a little room for rounding).
            let failed_ok = e.failed <= e.requests * (1.0 + 1e-9) + 1e-9;
            if !(count(e.requests)
                && count(e.failed)
                && failed_ok
                && e.latency.iter().all(|&x| count(x)))
            {
                return Err(PartError::Count {
                    client: e.client.clone(),
                    server: e.server.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Several parts' edges added up by (client, server).
#[derive(Debug, Default)]
pub struct MergedEdge {
    pub connection: Connection,
    pub virtual_side: Option<VirtualSide>,
    pub requests: f64,
    pub failed: f64,
    pub latency: Vec<f64>,
    pub recent: Vec<Exemplar>,
}

/// Adds up `parts` edge by edge: counts and buckets summed, a typed connection winning over a
/// plain one (as among one edge's series; between typed ones, by [`Connection`]'s order),
/// recent traces newest first, each once.
pub fn merge(parts: &[MapPart]) -> Vec<(EdgeId, MergedEdge)> {
    // One `Arc<str>` per name, shared by its edges.
    let mut names: std::collections::HashMap<&str, Arc<str>> = Default::default();
    fn name<'a>(names: &mut std::collections::HashMap<&'a str, Arc<str>>, s: &'a str) -> Arc<str> {
        names.entry(s).or_insert_with(|| Arc::from(s)).clone()
    }
    let mut edges: std::collections::BTreeMap<EdgeId, MergedEdge> = Default::default();
    for part in parts {
        for e in &part.edges {
            let id = EdgeId {
                client: name(&mut names, &e.client),
                server: name(&mut names, &e.server),
            };
            let m = edges.entry(id).or_default();
            // The same answer in any order of the parts: a fixed precedence, not the first.
            m.connection = m.connection.max(e.connection);
            m.virtual_side = match (m.virtual_side, e.virtual_side) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            m.requests += e.requests;
            m.failed += e.failed;
            if m.latency.len() < e.latency.len() {
                m.latency.resize(e.latency.len(), 0.0);
            }
            for (sum, c) in m.latency.iter_mut().zip(&e.latency) {
                *sum += c;
            }
            m.recent.extend(e.recent.iter().map(|&x| Exemplar::from(x)));
        }
    }
    for m in edges.values_mut() {
        // Stable: one part's order (newest snapshot first) is kept among equal times.
        m.recent.sort_by_key(|x| std::cmp::Reverse(x.time_nanos));
        let mut seen = Vec::with_capacity(RECENT_TRACES);
        m.recent.retain(|x| {
            let keep = seen.len() < RECENT_TRACES && !seen.contains(&x.trace_id);
            if keep {
                seen.push(x.trace_id);
            }
            keep
        });
    }
    edges.into_iter().collect()
}

/// Trace ids as 32 hex digits in the JSON, as everywhere else they are shown.
mod hex_trace_id {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::servicemap::api::hex(id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        let mut id = [0u8; 16];
        if text.len() != 32 || !text.is_ascii() {
            return Err(D::Error::custom("a trace id is 32 hex digits"));
        }
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| D::Error::custom("a trace id is 32 hex digits"))?;
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(client: &str, server: &str, requests: f64, latency: [f64; 3]) -> EdgePart {
        EdgePart {
            client: client.into(),
            server: server.into(),
            connection: Connection::Direct,
            virtual_side: None,
            requests,
            failed: 1.0,
            latency: latency.to_vec(),
            recent: vec![],
        }
    }

    fn part(instance: &str, edges: Vec<EdgePart>) -> MapPart {
        MapPart {
            instance: instance.into(),
            boot: 1,
            at_nanos: 7,
            window_seconds: 60.0,
            bounds: vec![0.1, 1.0],
            edges,
            omitted_edges: 1,
        }
    }

    fn trace(n: u8, time_nanos: u64) -> RecentTrace {
        RecentTrace {
            trace_id: [n; 16],
            value: 0.5,
            time_nanos,
        }
    }

    #[test]
    fn parts_add_up_edge_by_edge_bucket_by_bucket() {
        let mut db = edge("a", "db", 2.0, [1.0, 2.0, 2.0]);
        db.connection = Connection::Database;
        db.recent = vec![trace(1, 10), trace(2, 5)];
        let mut plain_db = edge("a", "db", 3.0, [0.0, 3.0, 3.0]);
        plain_db.recent = vec![trace(3, 20), trace(1, 10)];
        let merged = merge(&[
            part("x", vec![db, edge("a", "b", 4.0, [4.0, 4.0, 4.0])]),
            part("y", vec![plain_db]),
        ]);
        let ids: Vec<String> = merged
            .iter()
            .map(|(id, _)| format!("{}->{}", id.client, id.server))
            .collect();
        assert_eq!(ids, ["a->b", "a->db"]);
        let db = &merged[1].1;
        assert_eq!(db.requests, 5.0);
        assert_eq!(db.failed, 2.0);
        assert_eq!(db.latency, [1.0, 5.0, 5.0]);
        assert_eq!(db.connection, Connection::Database, "a typed part wins");
        // Parts that disagree give the same edge in either order.
        let mut virtual_db = edge("a", "db", 1.0, [1.0, 1.0, 1.0]);
        virtual_db.connection = Connection::Virtual;
        virtual_db.virtual_side = Some(VirtualSide::Server);
        let mut typed = edge("a", "db", 1.0, [1.0, 1.0, 1.0]);
        typed.connection = Connection::Database;
        typed.virtual_side = Some(VirtualSide::Client);
        let one = merge(&[
            part("x", vec![virtual_db.clone()]),
            part("y", vec![typed.clone()]),
        ]);
        let other = merge(&[part("y", vec![typed]), part("x", vec![virtual_db])]);
        assert_eq!(
            (one[0].1.connection, one[0].1.virtual_side),
            (other[0].1.connection, other[0].1.virtual_side)
        );
        let recent: Vec<u8> = db.recent.iter().map(|x| x.trace_id[0]).collect();
        assert_eq!(recent, [3, 1, 2], "newest first, each trace once");
    }

    #[test]
    fn a_part_survives_its_json_and_a_bad_one_is_named() {
        let mut e = edge("a", "b", 4.0, [1.0, 2.0, 4.0]);
        e.recent = vec![trace(0xab, 3)];
        let p = part("x", vec![e]);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(&"ab".repeat(16)), "{json}");
        assert_eq!(serde_json::from_str::<MapPart>(&json).unwrap(), p);
        assert_eq!(p.check(&[0.1, 1.0], Duration::from_secs(60)), Ok(()));

        let bounds = p.check(&[0.2, 1.0], Duration::from_secs(60)).unwrap_err();
        assert!(matches!(bounds, PartError::Bounds { .. }));
        let window = p.check(&[0.1, 1.0], Duration::from_secs(300)).unwrap_err();
        assert!(matches!(window, PartError::Window { .. }));
        let mut short = p.clone();
        short.edges[0].latency.pop();
        assert!(matches!(
            short.check(&[0.1, 1.0], Duration::from_secs(60)),
            Err(PartError::Buckets {
                got: 2,
                want: 3,
                ..
            })
        ));
        let mut negative = p.clone();
        negative.edges[0].failed = -1.0;
        assert!(matches!(
            negative.check(&[0.1, 1.0], Duration::from_secs(60)),
            Err(PartError::Count { .. })
        ));
        let mut more_failed = p.clone();
        more_failed.edges[0].failed = 5.0;
        assert!(matches!(
            more_failed.check(&[0.1, 1.0], Duration::from_secs(60)),
            Err(PartError::Count { .. })
        ));
        let mut huge = p.clone();
        huge.edges[0].requests = 1e300;
        assert!(huge.check(&[0.1, 1.0], Duration::from_secs(60)).is_err());
        let mut twice = p.clone();
        twice.edges.push(twice.edges[0].clone());
        assert!(matches!(
            twice.check(&[0.1, 1.0], Duration::from_secs(60)),
            Err(PartError::Duplicate { .. })
        ));
        let bad_id = json.replace(&"ab".repeat(16), "not-hex");
        assert!(serde_json::from_str::<MapPart>(&bad_id)
            .unwrap_err()
            .to_string()
            .contains("32 hex digits"));
    }
}

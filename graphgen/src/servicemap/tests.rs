//! The windowed figures, worked out by hand: counters read from snapshots, interpolated at the
//! window's start, first values of new edges counted, resets, p90 from bucket increases, node
//! kinds and credit, recent trace ids, and the bounds on what the history keeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::history::{Connection, EdgeCounts, EdgeId, History, Snapshot, VirtualSide};
use super::model::{NodeKind, ServiceMap};
use crate::series::Exemplar;

const S: u64 = 1_000_000_000;
/// The process started at t = 1000 s.
const START: u64 = 1_000 * S;
const BOUNDS: [f64; 3] = [0.1, 0.2, 0.4];

fn id(client: &str, server: &str) -> EdgeId {
    EdgeId {
        client: Arc::from(client),
        server: Arc::from(server),
    }
}

/// An edge's cumulative counts: `latency` is per bucket (made cumulative here).
fn counts(total: f64, failed: f64, latency: [f64; 4], connection: Connection) -> EdgeCounts {
    let mut cumulative = latency.to_vec();
    for i in 1..cumulative.len() {
        cumulative[i] += cumulative[i - 1];
    }
    EdgeCounts {
        total,
        failed,
        latency: cumulative,
        connection,
        virtual_side: None,
        created_nanos: START,
        exemplar: None,
    }
}

/// A snapshot at `START + secs`.
fn at(secs: u64, edges: Vec<(EdgeId, EdgeCounts)>) -> Snapshot {
    Snapshot {
        at_nanos: START + secs * S,
        edges: edges.into_iter().collect::<HashMap<_, _>>(),
        omitted: 0,
    }
}

fn plain(total: f64, failed: f64) -> EdgeCounts {
    counts(total, failed, [total, 0.0, 0.0, 0.0], Connection::Direct)
}

#[test]
fn rates_over_a_window_are_increases_divided_by_the_window() {
    // (what, snapshots kept, current, window s, expected requests in the window, failed)
    type Case = (&'static str, Vec<Snapshot>, Snapshot, u64, f64, f64);
    let ab = || id("a", "b");
    let cases: Vec<Case> = vec![
        (
            "a snapshot exactly at the window's start",
            vec![at(5, vec![(ab(), plain(10.0, 1.0))])],
            at(65, vec![(ab(), plain(70.0, 4.0))]),
            60,
            60.0,
            3.0,
        ),
        (
            "between two snapshots the counter is interpolated",
            // At 0 s: 0 (the edge did not exist), at 10 s: 100; the window starts at 5 s.
            vec![at(0, vec![]), at(10, vec![(ab(), plain(100.0, 0.0))])],
            at(65, vec![(ab(), plain(150.0, 0.0))]),
            60,
            100.0,
            0.0,
        ),
        (
            "a new edge counts from zero: its first value is not lost",
            // Created at 38 s, after the window's start at 35 s: nothing of it came before.
            vec![at(30, vec![])],
            at(
                40,
                vec![(
                    ab(),
                    EdgeCounts {
                        created_nanos: START + 38 * S,
                        ..plain(7.0, 2.0)
                    },
                )],
            ),
            5,
            7.0,
            2.0,
        ),
        (
            "a series started again within the window (stale, then back) counts from zero",
            vec![at(5, vec![(ab(), plain(50.0, 5.0))])],
            at(
                65,
                vec![(
                    ab(),
                    EdgeCounts {
                        created_nanos: START + 30 * S,
                        ..plain(60.0, 1.0)
                    },
                )],
            ),
            60,
            60.0,
            1.0,
        ),
        (
            "an edge younger than the process, window longer than the process",
            vec![],
            at(20, vec![(ab(), plain(9.0, 0.0))]),
            60,
            9.0,
            0.0,
        ),
        (
            "a counter that went down was reset: all of it is new",
            vec![at(5, vec![(ab(), plain(50.0, 5.0))])],
            at(65, vec![(ab(), plain(8.0, 1.0))]),
            60,
            8.0,
            1.0,
        ),
        (
            "nothing happened in the window",
            vec![
                at(5, vec![(ab(), plain(50.0, 5.0))]),
                at(10, vec![(ab(), plain(50.0, 5.0))]),
            ],
            at(65, vec![(ab(), plain(50.0, 5.0))]),
            60,
            0.0,
            0.0,
        ),
    ];
    for (what, kept, current, window, requests, failed) in cases {
        let mut history = History::new(START, 100);
        for s in kept {
            history.record(s);
        }
        let map = ServiceMap::compute(&history, &current, Duration::from_secs(window), &BOUNDS);
        let f = &map
            .edge("a", "b")
            .unwrap_or_else(|| panic!("{what}: no edge"))
            .figures;
        assert!(
            (f.requests - requests).abs() < 1e-9,
            "{what}: {} requests",
            f.requests
        );
        assert!(
            (f.failed - failed).abs() < 1e-9,
            "{what}: {} failed",
            f.failed
        );
        let rate = requests / window as f64;
        assert!(
            (f.requests_per_second - rate).abs() < 1e-9,
            "{what}: rate {}",
            f.requests_per_second
        );
        let ratio = (requests > 0.0).then(|| failed / requests);
        assert_eq!(f.error_ratio, ratio, "{what}");
    }
}

#[test]
fn p90_comes_from_the_buckets_increase_in_the_window_only() {
    let mut history = History::new(START, 100);
    // Before the window: 100 slow requests (all in (0.2, 0.4]).
    history.record(at(
        5,
        vec![(
            id("a", "b"),
            counts(100.0, 0.0, [0.0, 0.0, 100.0, 0.0], Connection::Direct),
        )],
    ));
    // In the window: 10 more, all ≤ 0.1 → p90 = 0.09 (rank 9 of 10 in (0, 0.1]).
    let current = at(
        65,
        vec![(
            id("a", "b"),
            counts(110.0, 0.0, [10.0, 0.0, 100.0, 0.0], Connection::Direct),
        )],
    );
    let map = ServiceMap::compute(&history, &current, Duration::from_secs(60), &BOUNDS);
    let p90 = map.edge("a", "b").unwrap().figures.p90_seconds.unwrap();
    assert!((p90 - 0.09).abs() < 1e-12, "{p90}");
    // Over 15 minutes the slow ones count too: rank 99 of 110 is 89 of the 100 in (0.2, 0.4].
    let map = ServiceMap::compute(&history, &current, Duration::from_secs(900), &BOUNDS);
    let p90 = map.edge("a", "b").unwrap().figures.p90_seconds.unwrap();
    assert!((p90 - (0.2 + 0.2 * 89.0 / 100.0)).abs() < 1e-12, "{p90}");
}

#[test]
fn nodes_are_credited_with_their_incoming_edges_and_drawn_by_kind() {
    let current = at(
        100,
        vec![
            (
                id("user", "frontend"),
                counts(10.0, 1.0, [10.0, 0.0, 0.0, 0.0], Connection::Virtual),
            ),
            (
                id("frontend", "checkout"),
                counts(8.0, 2.0, [0.0, 8.0, 0.0, 0.0], Connection::Direct),
            ),
            (
                id("batch", "checkout"),
                counts(2.0, 0.0, [0.0, 2.0, 0.0, 0.0], Connection::Direct),
            ),
            (
                id("checkout", "postgres"),
                counts(5.0, 0.0, [5.0, 0.0, 0.0, 0.0], Connection::Database),
            ),
            (
                id("checkout", "payment-gateway"),
                counts(3.0, 3.0, [0.0, 0.0, 3.0, 0.0], Connection::Virtual),
            ),
            (
                id("checkout", "notifications"),
                counts(4.0, 0.0, [4.0, 0.0, 0.0, 0.0], Connection::Messaging),
            ),
        ],
    );
    let history = History::new(START, 100);
    let map = ServiceMap::compute(&history, &current, Duration::from_secs(300), &BOUNDS);
    let kind = |n: &str| map.node(n).unwrap().kind;
    assert_eq!(kind("user"), NodeKind::Virtual, "a caller from outside");
    assert_eq!(kind("payment-gateway"), NodeKind::Virtual, "a peer.service");
    assert_eq!(kind("postgres"), NodeKind::Database);
    for service in ["frontend", "checkout", "notifications", "batch"] {
        assert_eq!(kind(service), NodeKind::Service, "{service}");
    }
    // checkout is the server of two edges: 10 requests, 2 failed, all in (0.1, 0.2].
    let checkout = map.node("checkout").unwrap().incoming.as_ref().unwrap();
    assert_eq!((checkout.requests, checkout.failed), (10.0, 2.0));
    assert!((checkout.p90_seconds.unwrap() - 0.19).abs() < 1e-12);
    assert!(
        map.node("user").unwrap().incoming.is_none(),
        "nothing calls user"
    );
    assert!(map.edge("checkout", "payment-gateway").unwrap().failing());
    assert!(!map.edge("checkout", "postgres").unwrap().failing());
}

#[test]
fn the_virtual_node_label_decides_which_side_is_uninstrumented() {
    // Without the label, a lone virtual edge's client is taken for the outside caller.
    let mut edge = counts(1.0, 0.0, [1.0, 0.0, 0.0, 0.0], Connection::Virtual);
    let map = |e: &EdgeCounts| {
        ServiceMap::compute(
            &History::new(START, 10),
            &at(10, vec![(id("a", "b"), e.clone())]),
            Duration::from_secs(60),
            &BOUNDS,
        )
    };
    assert_eq!(map(&edge).node("a").unwrap().kind, NodeKind::Virtual);
    edge.virtual_side = Some(VirtualSide::Server);
    let m = map(&edge);
    assert_eq!(
        (m.node("a").unwrap().kind, m.node("b").unwrap().kind),
        (NodeKind::Service, NodeKind::Virtual)
    );
}

#[test]
fn recent_trace_ids_are_the_window_s_exemplars_newest_first() {
    let exemplar = |byte: u8, secs: u64| Exemplar {
        trace_id: [byte; 16],
        value: 0.05,
        time_nanos: START + secs * S,
    };
    let with = |x: Exemplar| EdgeCounts {
        exemplar: Some(x),
        ..plain(1.0, 0.0)
    };
    let mut history = History::new(START, 100);
    history.record(at(10, vec![(id("a", "b"), with(exemplar(1, 9)))]));
    history.record(at(50, vec![(id("a", "b"), with(exemplar(2, 48)))]));
    history.record(at(55, vec![(id("a", "b"), with(exemplar(2, 48)))]));
    let current = at(60, vec![(id("a", "b"), with(exemplar(3, 59)))]);
    let recent = |window| {
        let map = ServiceMap::compute(&history, &current, Duration::from_secs(window), &BOUNDS);
        map.edge("a", "b")
            .unwrap()
            .recent
            .iter()
            .map(|x| x.trace_id[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(
        recent(30),
        vec![3, 2],
        "trace 1 is older than the window; 2 once"
    );
    assert_eq!(recent(60), vec![3, 2, 1]);
}

#[test]
fn the_history_keeps_what_the_windows_need_and_no_more() {
    let mut history = History::new(START, 100);
    let edge = |n: u64| vec![(id("a", "b"), plain(n as f64, 0.0))];
    // An hour of snapshots every 5 s.
    for tick in 0..720 {
        history.record(at(tick * 5, edge(tick)));
    }
    let stats = history.stats();
    // 13 fine snapshots (60 s, plus the one before) and 31 coarse (15 min), 2 shared.
    assert!(stats.snapshots <= 14 + 32, "{stats:?}");
    assert!(stats.snapshots >= 40, "{stats:?}");
    assert_eq!(stats.edge_entries, stats.snapshots, "one edge in each");
    // Each window still has a snapshot at or before its start: rates are exact.
    let current = at(720 * 5, edge(720));
    for window in [60, 300, 900] {
        let map = ServiceMap::compute(&history, &current, Duration::from_secs(window), &BOUNDS);
        let f = &map.edge("a", "b").unwrap().figures;
        assert!(
            (f.requests - window as f64 / 5.0).abs() < 1e-9,
            "{window}s: {}",
            f.requests
        );
    }
}

#[test]
fn beyond_max_edges_the_busiest_are_kept_and_the_rest_counted() {
    use crate::clock::ManualClock;
    use crate::engine::Engine;
    use crate::graph;

    let clock = ManualClock::new(START);
    let mut engine = Engine::new(graph::Config::default(), None, Arc::new(clock.clone())).unwrap();
    // Four client → server edges through one engine; "client-0" busiest.
    for (n, service) in [(4, "a"), (3, "b"), (2, "c"), (1, "d")] {
        // One client → server request, the client service renamed.
        let mut request = crate::workload::client_server_request(1);
        request[0].resource.as_mut().unwrap().attributes[0] =
            crate::attributes::string_attribute("service.name", service);
        for _ in 0..n {
            engine.push(&request);
        }
    }
    let mut history = History::new(START, 2);
    let snapshot = history.read(engine.graph(), START);
    assert_eq!(snapshot.omitted, 2);
    let mut kept: Vec<&str> = snapshot.edges.keys().map(|k| &*k.client).collect();
    kept.sort();
    assert_eq!(kept, ["a", "b"]);
    assert_eq!(snapshot.edges[&id("a", "server")].total, 4.0);
}

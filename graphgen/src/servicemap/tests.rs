//! The windowed figures, worked out by hand: counters read from snapshots, interpolated at the
//! window's start, increases and resets taken per series then summed, first values of new
//! series counted, series left out of snapshots, p90 from bucket increases, node kinds and
//! credit, recent trace ids, and the bounds on what the history keeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::history::{
    Connection, EdgeCounts, EdgeId, History, SeriesCounts, Snapshot, VirtualSide,
};
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

/// One series' counters, created at `START + created` s; `latency` per bucket (made cumulative).
fn series(total: f64, failed: f64, latency: [f64; 4], created: u64) -> SeriesCounts {
    let mut cumulative = latency.to_vec();
    for i in 1..cumulative.len() {
        cumulative[i] += cumulative[i - 1];
    }
    SeriesCounts {
        total,
        failed,
        latency: cumulative,
        created_nanos: START + created * S,
    }
}

/// An edge of the given series (keys 1, 2, …).
fn edge(connection: Connection, all: Vec<SeriesCounts>) -> EdgeCounts {
    EdgeCounts {
        series: all
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, s))
            .collect(),
        connection,
        virtual_side: None,
        exemplar: None,
    }
}

/// A plain edge of one series, created when the process started, all requests fast.
fn plain(total: f64, failed: f64) -> EdgeCounts {
    edge(
        Connection::Direct,
        vec![series(total, failed, [total, 0.0, 0.0, 0.0], 0)],
    )
}

/// A snapshot at `START + secs`.
fn at(secs: u64, edges: Vec<(EdgeId, EdgeCounts)>) -> Snapshot {
    Snapshot {
        at_nanos: START + secs * S,
        edges: edges.into_iter().collect::<HashMap<_, _>>(),
        omitted: 0,
    }
}

fn compute(kept: Vec<Snapshot>, current: &Snapshot, window: u64) -> ServiceMap {
    let mut history = History::new(START, 1000);
    for s in kept {
        history.record(s);
    }
    ServiceMap::compute(
        &history.snapshots(),
        START,
        current,
        Duration::from_secs(window),
        &BOUNDS,
    )
}

#[test]
fn rates_over_a_window_are_increases_divided_by_the_window() {
    // (what, snapshots kept, current, window s, expected requests in the window, failed)
    type Case = (&'static str, Vec<Snapshot>, Snapshot, u64, f64, f64);
    let ab = || id("a", "b");
    let one = |total, failed, created| {
        edge(
            Connection::Direct,
            vec![series(total, failed, [total, 0.0, 0.0, 0.0], created)],
        )
    };
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
            // 40 at 0 s, 100 at 10 s; the window starts at 5 s: 70 then.
            vec![at(0, vec![(ab(), plain(40.0, 0.0))]), at(10, vec![(ab(), plain(100.0, 0.0))])],
            at(65, vec![(ab(), plain(150.0, 0.0))]),
            60,
            80.0,
            0.0,
        ),
        (
            "a series created after the window's start counts from zero: its first value is not lost",
            vec![at(30, vec![])],
            at(40, vec![(ab(), one(7.0, 2.0, 38))]),
            5,
            7.0,
            2.0,
        ),
        (
            "created between the last snapshot and the window's start: interpolated from zero at its creation",
            // Created at 32 s with 0, 20 at 42 s (the next reading): 10 at the start, 37 s.
            vec![at(30, vec![]), at(42, vec![(ab(), one(20.0, 0.0, 32))])],
            at(97, vec![(ab(), one(50.0, 0.0, 32))]),
            60,
            40.0,
            0.0,
        ),
        (
            "an edge younger than the process, window longer than the process",
            vec![],
            at(20, vec![(ab(), one(9.0, 0.0, 3))]),
            60,
            9.0,
            0.0,
        ),
        (
            "a series started again within the window (stale, then back) counts from zero",
            vec![at(5, vec![(ab(), plain(50.0, 5.0))])],
            at(65, vec![(ab(), one(60.0, 1.0, 30))]),
            60,
            60.0,
            1.0,
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
            vec![at(5, vec![(ab(), plain(50.0, 5.0))]), at(10, vec![(ab(), plain(50.0, 5.0))])],
            at(65, vec![(ab(), plain(50.0, 5.0))]),
            60,
            0.0,
            0.0,
        ),
    ];
    for (what, kept, current, window, requests, failed) in cases {
        let map = compute(kept, &current, window);
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
fn increases_are_taken_per_series_then_summed() {
    // An edge with an hour-old GET series (3,600 requests) gets its first POST in the window,
    // then a third series is dropped as stale: only the window's own requests count.
    let get = |n| series(n, 0.0, [n, 0.0, 0.0, 0.0], 0);
    let stale = series(500.0, 0.0, [0.0, 0.0, 500.0, 0.0], 0);
    let before = edge(Connection::Direct, vec![get(3_600.0), stale]);
    let mut now = edge(
        Connection::Direct,
        vec![get(3_660.0), series(5.0, 5.0, [0.0, 5.0, 0.0, 0.0], 50)],
    );
    now.series[1].0 = 9; // the POST series' own key
    let map = compute(
        vec![at(5, vec![(id("a", "b"), before)])],
        &at(65, vec![(id("a", "b"), now)]),
        60,
    );
    let f = &map.edge("a", "b").unwrap().figures;
    assert_eq!(
        (f.requests, f.failed),
        (65.0, 5.0),
        "60 GETs and 5 POSTs; the stale series adds nothing"
    );
    // p90 of the 65: rank 58.5, past the 60 fast ones? No: 60 in (0, 0.1], 5 in (0.1, 0.2] →
    // rank 58.5 lies in the first bucket: 0.1 × 58.5 / 60.
    assert!((f.p90_seconds.unwrap() - 0.1 * 58.5 / 60.0).abs() < 1e-12);
}

#[test]
fn a_series_left_out_of_earlier_snapshots_is_measured_from_its_first_and_scaled() {
    // The edge had 50,000 requests before any snapshot kept it (snapshots were full); it is in
    // the snapshot at 35 s with 50,000 and now, at 65 s, has 50,030: 30 in 30 s, so 60 over
    // the 60 s window — not 50,030.
    let full = Snapshot {
        omitted: 1,
        ..at(5, vec![])
    };
    let map = compute(
        vec![full, at(35, vec![(id("a", "b"), plain(50_000.0, 0.0))])],
        &at(65, vec![(id("a", "b"), plain(50_030.0, 0.0))]),
        60,
    );
    let f = &map.edge("a", "b").unwrap().figures;
    assert!((f.requests - 60.0).abs() < 1e-9, "{}", f.requests);
}

#[test]
fn p90_comes_from_the_buckets_increase_in_the_window_only() {
    let slow = |n: f64, fast: f64| {
        edge(
            Connection::Direct,
            vec![series(n + fast, 0.0, [fast, 0.0, n, 0.0], 0)],
        )
    };
    // Before the window: 100 slow requests (all in (0.2, 0.4]); in it, 10 more, all ≤ 0.1:
    // p90 = 0.09 (rank 9 of 10 in (0, 0.1]).
    let kept = || vec![at(5, vec![(id("a", "b"), slow(100.0, 0.0))])];
    let current = at(65, vec![(id("a", "b"), slow(100.0, 10.0))]);
    let p90 = compute(kept(), &current, 60)
        .edge("a", "b")
        .unwrap()
        .figures
        .p90_seconds
        .unwrap();
    assert!((p90 - 0.09).abs() < 1e-12, "{p90}");
    // Over 15 minutes the slow ones count too: rank 99 of 110 is 89 of the 100 in (0.2, 0.4].
    let p90 = compute(kept(), &current, 900)
        .edge("a", "b")
        .unwrap()
        .figures
        .p90_seconds
        .unwrap();
    assert!((p90 - (0.2 + 0.2 * 89.0 / 100.0)).abs() < 1e-12, "{p90}");
}

#[test]
fn nodes_are_credited_with_their_incoming_edges_and_drawn_by_kind() {
    let e = |total: f64, failed: f64, bucket: usize, connection| {
        let mut latency = [0.0; 4];
        latency[bucket] = total;
        edge(connection, vec![series(total, failed, latency, 0)])
    };
    let current = at(
        100,
        vec![
            (id("user", "frontend"), e(10.0, 1.0, 0, Connection::Virtual)),
            (
                id("frontend", "checkout"),
                e(8.0, 2.0, 1, Connection::Direct),
            ),
            (id("batch", "checkout"), e(2.0, 0.0, 1, Connection::Direct)),
            (
                id("checkout", "postgres"),
                e(5.0, 0.0, 0, Connection::Database),
            ),
            (
                id("checkout", "payment-gateway"),
                e(3.0, 3.0, 2, Connection::Virtual),
            ),
            (
                id("checkout", "notifications"),
                e(4.0, 0.0, 0, Connection::Messaging),
            ),
        ],
    );
    let map = compute(vec![], &current, 300);
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
fn virtual_sides_without_the_label_are_settled_the_same_way_every_time() {
    // user → frontend and frontend → ext are both virtual, frontend has no plain edge: user is
    // the outside caller, so frontend is instrumented, so ext is the peer — whatever order
    // the snapshot's map yields.
    let v = || {
        edge(
            Connection::Virtual,
            vec![series(1.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0)],
        )
    };
    for _ in 0..20 {
        let current = at(
            10,
            vec![(id("user", "frontend"), v()), (id("frontend", "ext"), v())],
        );
        let map = compute(vec![], &current, 60);
        let kinds: Vec<_> = ["user", "frontend", "ext"]
            .iter()
            .map(|n| map.node(n).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [NodeKind::Virtual, NodeKind::Service, NodeKind::Virtual]
        );
    }
    // With Tempo's virtual_node label, the label decides.
    let mut labelled = v();
    labelled.virtual_side = Some(VirtualSide::Server);
    let map = compute(vec![], &at(10, vec![(id("a", "b"), labelled)]), 60);
    assert_eq!(
        (map.node("a").unwrap().kind, map.node("b").unwrap().kind),
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
    let kept = || {
        vec![
            at(10, vec![(id("a", "b"), with(exemplar(1, 9)))]),
            at(50, vec![(id("a", "b"), with(exemplar(2, 48)))]),
            at(55, vec![(id("a", "b"), with(exemplar(2, 48)))]),
        ]
    };
    let current = at(60, vec![(id("a", "b"), with(exemplar(3, 59)))]);
    let recent = |window| {
        let map = compute(kept(), &current, window);
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
    let e = |n: u64| vec![(id("a", "b"), plain(n as f64, 0.0))];
    // An hour of snapshots every 5 s.
    for tick in 0..720 {
        history.record(at(tick * 5, e(tick)));
    }
    let stats = history.stats();
    // 13 fine snapshots (60 s, plus the one before) and 31 coarse (15 min), 2 shared.
    assert!((40..=14 + 32).contains(&stats.snapshots), "{stats:?}");
    assert_eq!(stats.series_entries, stats.snapshots, "one series in each");
    // Each window still has a snapshot at or before its start: rates are exact.
    let current = at(720 * 5, e(720));
    for window in [10, 60, 300, 900] {
        let map = ServiceMap::compute(
            &history.snapshots(),
            START,
            &current,
            Duration::from_secs(window),
            &BOUNDS,
        );
        let f = &map.edge("a", "b").unwrap().figures;
        assert!(
            (f.requests - window as f64 / 5.0).abs() < 1e-9,
            "{window}s: {}",
            f.requests
        );
    }
    // The clock stepping back an hour does not make the rings grow: they start over.
    for tick in 0..100 {
        history.record(at(tick * 5, e(tick)));
    }
    assert!(
        history.stats().snapshots <= 14 + 32,
        "{:?}",
        history.stats()
    );
}

#[test]
fn beyond_max_series_the_busiest_edges_are_kept_and_the_rest_counted() {
    use crate::clock::ManualClock;
    use crate::engine::Engine;
    use crate::graph;

    let clock = ManualClock::new(START);
    let mut engine = Engine::new(graph::Config::default(), None, Arc::new(clock.clone())).unwrap();
    // Four client → server edges through one engine; "a" busiest.
    for (n, service) in [(4, "a"), (3, "b"), (2, "c"), (1, "d")] {
        // One client → server request, the client service renamed.
        let mut request = crate::workload::client_server_request(1);
        request[0].resource.as_mut().unwrap().attributes[0] =
            crate::attributes::string_attribute("service.name", service);
        for _ in 0..n {
            engine.push_batches(&request);
        }
    }
    let mut history = History::new(START, 2);
    let snapshot = history.read(engine.graph(), START);
    assert_eq!(snapshot.omitted, 2);
    let mut kept: Vec<&str> = snapshot.edges.keys().map(|k| &*k.client).collect();
    kept.sort();
    assert_eq!(kept, ["a", "b"]);
    assert_eq!(snapshot.edges[&id("a", "server")].total(), 4.0);
}

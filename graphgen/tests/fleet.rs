//! A fleet that counts once and shows one map, with graphgen as real processes:
//! - three replicas with `--peers`, traces split by trace id as the Collector's load_balancing
//!   exporter splits them: any replica's `/api/graph` equals one graphgen's over the same
//!   traces, and with one replica stopped the map says so (also in Chromium);
//! - batches re-sent whole after a partial failure, as the load balancer does at contrib
//!   v0.159.0, and requests delivered twice: with `--dedup-window`, every series equals that of
//!   a single delivery.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use support::*;

async fn send(g: &Graphgen, requests: &[ExportTraceServiceRequest]) {
    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    for request in requests {
        client.export(request.clone()).await.expect("accepted");
    }
}

/// Makes every span of `trace` `factor` times longer.
fn stretch(trace: &mut ExportTraceServiceRequest, factor: u64) {
    for r in &mut trace.resource_spans {
        for s in &mut r.scope_spans {
            for span in &mut s.spans {
                let took = span.end_time_unix_nano - span.start_time_unix_nano;
                span.end_time_unix_nano = span.start_time_unix_nano + took * factor;
            }
        }
    }
}

async fn graph_json(admin: SocketAddr, path: &str) -> Value {
    let body = reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("the service map answers")
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).expect("JSON")
}

/// What Grafana would show of a map: each edge's and node's figures.
#[derive(Debug, PartialEq)]
struct Shown {
    edges: BTreeMap<String, [Option<f64>; 4]>,
    nodes: BTreeMap<String, (String, [Option<f64>; 3])>,
}

impl Shown {
    fn of(map: &Value) -> Self {
        let f = |v: &Value, k: &str| v[k].as_f64();
        let edges = map["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    format!(
                        "{} -> {}",
                        e["source"].as_str().unwrap(),
                        e["target"].as_str().unwrap()
                    ),
                    [
                        f(e, "secondarystat"),
                        f(e, "detail__errors_per_second"),
                        f(e, "detail__p90_ms"),
                        f(e, "detail__error_percent"),
                    ],
                )
            })
            .collect();
        let nodes = map["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    (
                        n["subtitle"].as_str().unwrap().to_string(),
                        [f(n, "mainstat"), f(n, "secondarystat"), f(n, "arc__failed")],
                    ),
                )
            })
            .collect();
        Self { edges, nodes }
    }

    /// Equal, rates within rounding (sums of the same counts in another order), p90s equal.
    fn same_as(&self, other: &Self) -> bool {
        let close = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (a, b) => a == b,
        };
        let all = |a: &[Option<f64>], b: &[Option<f64>]| a.iter().zip(b).all(|(a, b)| close(a, b));
        self.edges.len() == other.edges.len()
            && self.nodes.len() == other.nodes.len()
            && self
                .edges
                .iter()
                .all(|(k, v)| other.edges.get(k).is_some_and(|o| all(v, o)))
            && self.nodes.iter().all(|(k, (kind, v))| {
                other
                    .nodes
                    .get(k)
                    .is_some_and(|(o_kind, o)| kind == o_kind && all(v, o))
            })
    }

    fn requests_per_second(&self) -> f64 {
        self.edges.values().filter_map(|v| v[0]).sum()
    }
}

/// The edges of `mixed_trace`: paired ones, and virtual ones once `--wait` has passed.
const EDGES: [&str; 5] = [
    "user -> frontend",
    "frontend -> checkout",
    "checkout -> orders",
    "checkout -> payment-gateway",
    "checkout -> notifications",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_shows_the_fleet_map_of_one_graphgen_and_names_a_missing_one() {
    let admins: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let peers = format!(
        "--peers={}",
        admins
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut replicas: Vec<Graphgen> = admins
        .iter()
        .enumerate()
        .map(|(i, admin)| {
            Graphgen::start_with_admin(
                *admin,
                &["--wait=1s", &format!("--instance-id=replica-{i}"), &peers],
            )
        })
        .collect();
    let single = Graphgen::start(&["--wait=1s"]);

    const TRACES: usize = 90;
    let mut traces: Vec<ExportTraceServiceRequest> = (0..TRACES).map(mixed_trace).collect();
    let mut shares = vec![Vec::new(); replicas.len()];
    for trace in &mut traces {
        let replica = instance_for(&trace_id_of(trace), replicas.len());
        // Each replica's requests 4× slower than the previous one's: the fleet's p90 then
        // differs from any replica's and from their mean; only merged buckets give it.
        stretch(trace, 4u64.pow(replica as u32));
        shares[replica].push(trace.clone());
    }
    assert!(
        shares.iter().all(|s| !s.is_empty()),
        "every replica has traces"
    );
    for (replica, share) in replicas.iter().zip(&shares) {
        send(replica, share).await;
    }
    send(&single, &traces).await;

    // Until the maps stop changing (virtual edges wait --wait=1s for their other side) and
    // every replica's equals the single graphgen's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut before = None;
    let reference = loop {
        let reference = Shown::of(&graph_json(single.admin, "/api/graph").await);
        let mut all_equal = true;
        for r in &replicas {
            all_equal &= Shown::of(&graph_json(r.admin, "/api/graph").await).same_as(&reference);
        }
        let complete = EDGES.iter().all(|e| reference.edges.contains_key(*e));
        if complete && all_equal && before.as_ref() == Some(&reference) {
            break reference;
        }
        if tokio::time::Instant::now() > deadline {
            for r in &replicas {
                let fleet = Shown::of(&graph_json(r.admin, "/api/graph").await);
                assert_eq!(fleet, reference, "replica {} vs one graphgen", r.admin);
            }
            panic!("the single graphgen's map kept changing");
        }
        before = Some(reference);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    assert_eq!(reference.edges.len(), EDGES.len(), "{reference:?}");
    let p90s: Vec<f64> = reference.edges.values().filter_map(|v| v[2]).collect();
    assert!(
        p90s.iter().any(|&p| p > 100.0),
        "the slow replica's share shows in the p90: {p90s:?}"
    );
    assert!(
        reference.edges.values().any(|v| v[1].unwrap_or(0.0) > 0.0),
        "some edge fails, so error figures are compared too"
    );

    // Each replica counted only its share, and says whose parts it merged.
    let mut shares_summed = 0.0;
    for (i, r) in replicas.iter().enumerate() {
        let map = graph_json(r.admin, "/api/graph").await;
        let rows = map["replicas"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0]["state"], "this");
        assert_eq!(rows[0]["instance"], format!("replica-{i}"));
        assert_eq!(
            rows[0]["address"],
            admins[i].to_string(),
            "reached as a peer too"
        );
        assert!(
            rows[1..].iter().all(|r| r["state"] == "answered"),
            "{rows:?}"
        );
        assert_eq!(map["missing_replicas"], 0);
        let part = graph_json(r.admin, "/api/graph/part").await;
        assert_eq!(part["instance"], format!("replica-{i}"));
        shares_summed += part["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["requests"].as_f64().unwrap())
            .sum::<f64>();
    }
    let single_requests = reference.requests_per_second() * 300.0;
    assert!(
        (shares_summed - single_requests).abs() < 1e-6,
        "the parts add up: {shares_summed} vs {single_requests}"
    );

    // One replica stops: the others' maps lack its share and say so.
    let gone = admins[2];
    replicas.pop().unwrap().kill();
    let map = graph_json(replicas[0].admin, "/api/graph").await;
    assert_eq!(map["missing_replicas"], 1, "{}", map["replicas"]);
    let missing = map["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "missing")
        .unwrap();
    assert_eq!(missing["address"], gone.to_string());
    assert_eq!(missing["reason"], "no_answer");
    assert!(!missing["error"].as_str().unwrap().is_empty());
    let partial = Shown::of(&map);
    assert!(partial.requests_per_second() < reference.requests_per_second());
    let page = reqwest::get(format!("http://{}/graph", replicas[0].admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("2 of 3 graphgen instances"), "{page}");
    assert!(page.contains(&gone.to_string()));
    assert!(
        replicas[0]
            .value(
                "graphgen_service_map_peer_queries_total",
                &[("outcome", "no_answer")]
            )
            .await
            >= 1.0
    );

    // The same in a real browser.
    let (Some(python), Some(())) = (tools::python(), tools::chromium()) else {
        return;
    };
    let screenshot = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/fleet-map.png"
    ));
    let admin = replicas[0].admin;
    let args = vec![
        format!("http://{admin}/graph"),
        format!("http://{admin}/api/graph"),
        gone.to_string(),
        screenshot.to_str().unwrap().to_string(),
    ];
    let printed = tokio::task::spawn_blocking(move || {
        tools::run_browser_script(&python, "fleet_map.py", &args)
    })
    .await
    .unwrap();
    println!("{printed}");
}

/// Every `traces_*` series graphgen exposes, by name and labels.
async fn series(g: &Graphgen) -> BTreeMap<String, f64> {
    g.metrics()
        .await
        .into_iter()
        .filter(|s| s.name.starts_with("traces_"))
        .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
        .collect()
}

/// Requests as one batch, as a load balancer or a collector's batch processor sends them.
fn batch(traces: &[ExportTraceServiceRequest]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: traces
            .iter()
            .flat_map(|t| t.resource_spans.clone())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_resent_after_a_partial_failure_count_once_with_dedup() {
    let deduplicating = Graphgen::start(&["--wait=1s", "--dedup-window=5m"]);
    let reference = Graphgen::start(&["--wait=1s"]);
    let traces: Vec<ExportTraceServiceRequest> = (0..40).map(mixed_trace).collect();

    send(&reference, &[batch(&traces[..20]), batch(&traces[20..])]).await;
    // The load balancer sent the first batch, one backend failed its part, and the whole batch
    // came again (contrib v0.159.0 re-sends accepted parts too); then an SDK timed out on a
    // request graphgen had taken and sent it again.
    send(
        &deduplicating,
        &[
            batch(&traces[..20]),
            batch(&traces[..20]),
            batch(&traces[10..30]),
            batch(&traces[20..]),
            batch(&traces[35..]),
        ],
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut before = BTreeMap::new();
    let want = loop {
        let want = series(&reference).await;
        // Complete once the virtual edges have waited out --wait.
        let complete = want
            .keys()
            .any(|k| k.contains(r#""server": "payment-gateway""#));
        if complete && want == before && series(&deduplicating).await == want {
            break want;
        }
        if tokio::time::Instant::now() > deadline {
            let got = series(&deduplicating).await;
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("{k}: extra")),
                )
                .collect();
            panic!("series differ:\n{}", differ.join("\n"));
        }
        before = want;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    assert!(
        want.keys()
            .any(|k| k.starts_with("traces_spanmetrics_calls_total")),
        "span metrics compared too"
    );
    assert!(want.len() > 50, "{} series", want.len());
    let spans: usize = traces.iter().map(span_count).sum();
    let resent: usize = [&traces[..20], &traces[10..30], &traces[35..]]
        .iter()
        .map(|t| t.iter().map(span_count).sum::<usize>())
        .sum();
    let dup = deduplicating
        .value("graphgen_dedup_duplicate_spans_total", &[])
        .await;
    assert_eq!(
        dup, resent as f64,
        "every re-sent span dropped once counted"
    );
    assert_eq!(
        deduplicating
            .value("graphgen_dedup_tracked_spans", &[])
            .await,
        spans as f64
    );
}

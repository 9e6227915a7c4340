//! graphgen as a member of a scaled-out deployment, checked through a real Prometheus (2.42,
//! fed by `support::remote_write`, which stands in for Prometheus 3's OTLP receiver):
//! - the first value of a new series counts in `increase()` (the zero point before it);
//! - the same traces split by trace id over 3 instances (as the Collector's load_balancing
//!   exporter routes them) add up to exactly what one instance makes, each instance under its
//!   own `instance` label, with no push refused.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use support::prometheus::Prometheus;
use support::remote_write::OtlpRelay;
use support::*;

/// A real Prometheus (remote-write receiver) behind the OTLP stand-in; `None` when
/// Prometheus is not installed (see `tools`).
async fn prometheus_with_relay() -> Option<(Prometheus, OtlpRelay)> {
    let prometheus = Prometheus::start_receiver()?;
    let relay = OtlpRelay::start(&prometheus.url).await;
    Some((prometheus, relay))
}

fn start_pushing(relay: &OtlpRelay, instance: &str) -> Graphgen {
    Graphgen::start(&[
        &format!("--metrics-endpoint={}", relay.url()),
        &format!("--instance-id={instance}"),
        "--flush-interval=1s",
        "--wait=1s",
    ])
}

async fn send(g: &Graphgen, requests: Vec<ExportTraceServiceRequest>) {
    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    for request in requests {
        client.export(request).await.expect("accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_value_of_a_new_series_counts_in_increase() {
    let Some((prometheus, relay)) = prometheus_with_relay().await else {
        return;
    };
    let g = start_pushing(&relay, "only");
    const N: usize = 37;
    // All N within one flush: the series is born with the value N.
    send(&g, (0..N).map(|_| topology_trace(false)).collect()).await;

    let query = r#"sum(increase(traces_service_graph_request_total{client="frontend", server="checkout"}[5m]))"#;
    // Wait for a few pushes after the first, as Grafana would see the edge.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = prometheus.query(query).await.first().map_or(0.0, |r| r.1);
        if relay.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 4 && seen > 0.0 {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never reached Prometheus"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ratio = seen / N as f64;
    println!("increase() over the edge's birth: {seen:.2} for {N} requests");
    assert!(
        (0.9..1.35).contains(&ratio),
        "increase() = {seen}, want {N} within Prometheus' extrapolation"
    );
    let raw = prometheus
        .query(r#"traces_service_graph_request_total{client="frontend", server="checkout"}"#)
        .await;
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].0["job"], "graphgen");
    assert_eq!(raw[0].0["instance"], "only");
    assert_eq!(relay.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
}

type Totals = BTreeMap<String, f64>;

async fn totals(prometheus: &Prometheus, selector: &str) -> Totals {
    let mut out = Totals::new();
    for (what, by) in [
        (
            "traces_service_graph_request_total",
            "client, server, connection_type",
        ),
        (
            "traces_service_graph_request_failed_total",
            "client, server, connection_type",
        ),
        (
            "traces_service_graph_request_server_seconds_bucket",
            "client, server, le",
        ),
        (
            "traces_service_graph_request_client_seconds_count",
            "client, server",
        ),
        (
            "traces_spanmetrics_calls_total",
            "service, span_name, span_kind, status_code",
        ),
        (
            "traces_spanmetrics_latency_bucket",
            "service, span_name, le",
        ),
    ] {
        let query = format!("sum by ({by}) ({what}{{{selector}}})");
        for (labels, value) in prometheus.query(&query).await {
            out.insert(format!("{what}{labels:?}"), value);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_split_by_trace_id_over_three_instances_add_up_to_one_instance() {
    let Some((prometheus, relay)) = prometheus_with_relay().await else {
        return;
    };
    let single = start_pushing(&relay, "single");
    let shards: Vec<Graphgen> = ["shard-a", "shard-b", "shard-c"]
        .iter()
        .map(|id| start_pushing(&relay, id))
        .collect();

    const TRACES: usize = 2_100;
    let traces: Vec<ExportTraceServiceRequest> = (0..TRACES).map(mixed_trace).collect();
    let mut per_shard: Vec<Vec<ExportTraceServiceRequest>> = vec![Vec::new(); shards.len()];
    for trace in &traces {
        per_shard[instance_for(&trace_id_of(trace), shards.len())].push(trace.clone());
    }
    assert!(
        per_shard.iter().all(|s| s.len() > TRACES / 5),
        "every shard gets traces"
    );
    send(&single, traces).await;
    for (g, requests) in shards.iter().zip(per_shard) {
        send(g, requests).await;
    }

    // Every edge completes or expires (--wait 1s), then the next pushes carry the totals.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (one, three) = loop {
        let one = totals(&prometheus, r#"instance="single""#).await;
        let three = totals(&prometheus, r#"instance=~"shard-.*""#).await;
        let frontend_checkout: f64 = one
            .iter()
            .filter(|(k, _)| {
                k.starts_with("traces_service_graph_request_total")
                    && k.contains("\"checkout\"")
                    && k.contains("\"frontend\"")
            })
            .map(|(_, v)| *v)
            .sum();
        if frontend_checkout == TRACES as f64 && one == three {
            break (one, three);
        }
        if tokio::time::Instant::now() > deadline {
            let differ: Vec<_> = one
                .keys()
                .chain(three.keys())
                .filter(|k| one.get(*k) != three.get(*k))
                .take(10)
                .map(|k| format!("{k}: one {:?}, three {:?}", one.get(k), three.get(k)))
                .collect();
            panic!(
                "frontend→checkout {frontend_checkout}, want {TRACES}; differences:\n{}",
                differ.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(one.len() > 40, "{} series compared", one.len());
    for key in ["messaging_system", "database", "virtual_node"] {
        assert!(
            one.keys().any(|k| k.contains(key)),
            "the trace set has {key} edges"
        );
    }
    assert!(one.keys().any(|k| k.contains("failed")), "and failures");
    assert_eq!(one, three);

    let instances = prometheus
        .query("count by (instance) (traces_spanmetrics_calls_total)")
        .await;
    let mut names: Vec<String> = instances
        .iter()
        .map(|(l, _)| l["instance"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["shard-a", "shard-b", "shard-c", "single"]);
    assert_eq!(
        relay.refused.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no push refused (no duplicate samples between instances)"
    );
    println!(
        "{TRACES} traces: {} series compared, equal between 1 instance and 3 shards",
        one.len()
    );
}

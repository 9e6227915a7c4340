//! A real Prometheus scrapes graphgen's `/metrics`; the service-graph series come back through
//! its query API with Tempo's names and labels.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use support::prometheus::Prometheus;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_stores_the_edges_graphgen_exposes() {
    let g = Graphgen::start(&["--wait=1s"]);
    let prometheus = tokio::task::spawn_blocking({
        let target = g.admin.to_string();
        move || Prometheus::start(&[target])
    })
    .await
    .unwrap();
    let Some(prometheus) = prometheus else {
        return;
    };
    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    for fail in [false, true, false] {
        client.export(topology_trace(fail)).await.unwrap();
    }

    let query = "sum by (client, server, connection_type) (traces_service_graph_request_total)";
    let expected = [
        ("user", "frontend", "virtual_node", 3.0),
        ("frontend", "checkout", "", 3.0),
        ("checkout", "orders", "database", 3.0),
        ("checkout", "payment-gateway", "virtual_node", 3.0),
    ];
    let stored = |result: &[(serde_json::Map<String, serde_json::Value>, f64)]| {
        let mut edges: Vec<(String, String, String, f64)> = result
            .iter()
            .map(|(labels, v)| {
                let get = |k: &str| {
                    labels
                        .get(k)
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                (get("client"), get("server"), get("connection_type"), *v)
            })
            .collect();
        edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
        edges
    };
    let mut want: Vec<(String, String, String, f64)> = expected
        .iter()
        .map(|(c, s, t, n)| (c.to_string(), s.to_string(), t.to_string(), *n))
        .collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Exactly these edges with these counts, or the test fails when the time is up.
    eventually(
        Duration::from_secs(30),
        "Prometheus to store the edges",
        || async { stored(&prometheus.query(query).await) == want },
    )
    .await;

    let failed = prometheus
        .query("sum by (client, server) (traces_service_graph_request_failed_total)")
        .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].1, 1.0);
    let buckets = prometheus
        .query("count(traces_service_graph_request_server_seconds_bucket{client=\"frontend\",server=\"checkout\"})")
        .await;
    assert_eq!(buckets[0].1, 9.0, "8 default buckets plus +Inf");
    let calls = prometheus
        .query("sum by (service) (traces_spanmetrics_calls_total{span_kind=\"SPAN_KIND_SERVER\"})")
        .await;
    let mut services: Vec<(String, f64)> = calls
        .iter()
        .map(|(labels, v)| (labels["service"].as_str().unwrap().to_string(), *v))
        .collect();
    services.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Per trace: frontend serves GET /checkout, checkout serves POST /order.
    assert_eq!(
        services,
        [("checkout".to_string(), 3.0), ("frontend".to_string(), 3.0)]
    );
    let own = prometheus
        .query("sum(graphgen_receiver_spans_received_total)")
        .await;
    assert_eq!(own[0].1, 18.0);
}

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
    let mut last = Vec::new();
    for _ in 0..60 {
        last = prometheus.query(query).await;
        let all = expected.iter().all(|(c, s, t, n)| {
            last.iter().any(|(labels, v)| {
                labels.get("client").and_then(|x| x.as_str()) == Some(c)
                    && labels.get("server").and_then(|x| x.as_str()) == Some(s)
                    && labels
                        .get("connection_type")
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        == *t
                    && v == n
            })
        });
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last.len(),
        expected.len(),
        "edges stored by Prometheus: {last:?}"
    );

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
    assert_eq!(calls.len(), 2, "{calls:?}");
    let own = prometheus
        .query("graphgen_receiver_spans_received_total")
        .await;
    assert_eq!(own[0].1, 18.0);
}

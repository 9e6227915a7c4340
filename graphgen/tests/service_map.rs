//! The service map over real sockets: graphgen as a process, traces in over OTLP/gRPC,
//! `/api/graph` and `/graph` read back.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use support::*;

async fn api(g: &Graphgen, query: &str) -> reqwest::Response {
    reqwest::get(format!("http://{}/api/graph{query}", g.admin))
        .await
        .unwrap()
}

/// The edges of `topology_trace`, with their connection types.
const EDGES: [(&str, &str, &str); 4] = [
    ("user", "frontend", "virtual_node"),
    ("frontend", "checkout", ""),
    ("checkout", "orders", "database"),
    ("checkout", "payment-gateway", "virtual_node"),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_map_shows_every_node_and_edge_with_figures_and_trace_ids() {
    let g = Graphgen::start(&["--wait=1s", "--grafana-url=http://grafana.example:3000/"]);
    // An empty map first: a page that says what to do.
    let empty = reqwest::get(format!("http://{}/graph", g.admin))
        .await
        .unwrap();
    assert_eq!(empty.status(), 200);
    assert!(empty.text().await.unwrap().contains("No edges yet"));

    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    let mut traces = Vec::new();
    for fail in [true, false, false] {
        let request = topology_trace(fail);
        traces.push(hex(
            &request.resource_spans[0].scope_spans[0].spans[0].trace_id
        ));
        client.export(request).await.unwrap();
    }
    // Virtual edges complete once --wait has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let graph: Value = loop {
        let graph: Value =
            serde_json::from_str(&api(&g, "?window=1m").await.text().await.unwrap()).unwrap();
        if graph["edges"].as_array().is_some_and(|e| e.len() == 4) {
            break graph;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "four edges never showed: {graph:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(graph["window"], "1m");
    assert_eq!(graph["window_seconds"], 60.0);
    let nodes: Vec<(String, String)> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().into(),
                n["subtitle"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("checkout", "service"),
            ("frontend", "service"),
            ("orders", "database"),
            ("payment-gateway", "virtual"),
            ("user", "virtual"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let edge = |client: &str, server: &str| -> Value {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == client && e["target"] == server)
            .unwrap_or_else(|| panic!("no edge {client} → {server} in {graph:#}"))
            .clone()
    };
    for (client, server, connection) in EDGES {
        let e = edge(client, server);
        assert_eq!(
            e["detail__connection_type"], connection,
            "{client} → {server}"
        );
        // Three requests in the last minute, every first value counted.
        let rate = e["secondarystat"].as_f64().unwrap();
        assert!(
            (rate - 3.0 / 60.0).abs() < 1e-9,
            "{client} → {server}: {rate}"
        );
        let ids: Vec<&str> = e["detail__recent_trace_ids"]
            .as_str()
            .unwrap()
            .split(' ')
            .collect();
        assert!(
            !ids.is_empty() && ids.iter().all(|id| traces.contains(&id.to_string())),
            "{ids:?} not among {traces:?}"
        );
    }
    let failing = edge("frontend", "checkout");
    assert_eq!(failing["color"], "red");
    let share = failing["detail__error_percent"].as_f64().unwrap();
    assert!((share - 100.0 / 3.0).abs() < 1e-9, "{share}");
    assert!(edge("checkout", "orders")["color"].is_null());
    let checkout = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "checkout")
        .unwrap();
    assert!((checkout["arc__failed"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!(checkout["mainstat"].as_f64().unwrap() > 0.0, "a p90 in ms");

    // The page: every node drawn, the selection's details with links to Grafana.
    let page = reqwest::get(format!(
        "http://{}/graph?window=1m&client=frontend&server=checkout",
        g.admin
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for (name, _) in &nodes {
        assert!(
            page.contains(&format!("data-name=\"{name}\"")),
            "{name} drawn"
        );
    }
    assert!(page.contains("class=\"edge failing selected\""));
    assert!(
        page.contains("http://grafana.example:3000/explore?"),
        "the trailing / is trimmed"
    );

    // Bad input: a clear 400.
    let bad = api(&g, "?window=2h").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("between 10s and 15m"));
    let bad = reqwest::get(format!("http://{}/graph?window=soon", g.admin))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // What the history holds is counted.
    eventually(Duration::from_secs(10), "a snapshot counted", || async {
        g.value("graphgen_service_map_snapshots", &[]).await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn a_bad_grafana_url_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graphgen"))
        .arg("--grafana-url=javascript:alert(1)")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--grafana-url") && err.contains("http://"),
        "{err}"
    );
}

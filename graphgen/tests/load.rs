//! Correctness under load: the load generator drives graphgen (forwarding to a sink) for a
//! bounded run; what the generator says was accepted, what graphgen counted and what the sink
//! received agree exactly — no loss, no duplicates.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_load_generator_had_accepted_is_what_the_sink_received() {
    let sink = Sink::default();
    let sink_port = free_port();
    let server = sink.serve(sink_port).await;
    let g = Graphgen::start(&[&format!("--traces-endpoint=http://127.0.0.1:{sink_port}")]);
    let mut totals = 0.0;
    // Different seeds: every span id of the two runs is distinct.
    for (protocol, endpoint, seed) in [
        ("grpc", g.grpc_url(), "1"),
        ("http", format!("http://{}", g.http), "1000"),
    ] {
        let load = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_graphgen-load"))
                .args(["send", "--endpoint", &endpoint, "--protocol", protocol])
                .args(["--duration", "3s", "--concurrency", "4", "--json"])
                .args(["--traces-per-request", "40", "--seed", seed])
                .output()
                .expect("run graphgen-load")
        })
        .await
        .unwrap();
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let stdout = String::from_utf8(load.stdout).unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).expect("JSON summary");
        let accepted = summary["accepted_spans"].as_f64().unwrap();
        assert!(accepted > 1000.0, "{summary}");
        assert_eq!(summary["failed"], serde_json::json!({}), "{summary}");
        assert_eq!(
            g.value(
                "graphgen_receiver_spans_received_total",
                &[("protocol", protocol)]
            )
            .await,
            accepted,
            "graphgen counted what the generator had accepted over {protocol}"
        );
        totals += accepted;
    }
    eventually(
        Duration::from_secs(30),
        "every span at the sink",
        || async { sink.distinct().len() as f64 >= totals },
    )
    .await;
    assert_eq!(sink.distinct().len() as f64, totals, "no loss");
    assert_eq!(sink.count() as f64, totals, "no duplicates");
    assert_eq!(
        g.value("graphgen_exporter_sent_spans_total", &[]).await,
        totals
    );
    server.stop().await;
}

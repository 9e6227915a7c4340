//! graphgen's remote write into a real Prometheus 2.42 (`--web.enable-remote-write-receiver`,
//! `--enable-feature=native-histograms`): classic and native histograms as Grafana reads them,
//! and delivery through a receiver outage, a 429 and a 400.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use support::prometheus::{percent_encode, Prometheus};
use support::*;

/// One call client → server whose server span lasts `server_ms` (the client's 1 ms longer).
fn call(client: &str, server: &str, server_ms: f64, fail: bool) -> ExportTraceServiceRequest {
    let trace: Vec<u8> = [next_id().to_be_bytes(), next_id().to_be_bytes()].concat();
    let (outgoing, incoming) = (next_id(), next_id());
    let mut c = span(&trace, outgoing, None, 3, "call", vec![], false);
    let mut s = span(&trace, incoming, Some(outgoing), 2, "serve", vec![], fail);
    let server_ns = (server_ms * 1e6) as u64;
    s.start_time_unix_nano = s.end_time_unix_nano - server_ns;
    c.start_time_unix_nano = s.start_time_unix_nano - 500_000;
    c.end_time_unix_nano = s.end_time_unix_nano + 500_000;
    ExportTraceServiceRequest {
        resource_spans: vec![resource(client, vec![c]), resource(server, vec![s])],
    }
}

/// Server latencies spread evenly on a log scale from 10 ms to 1 s.
fn latencies(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 10.0 * 100f64.powf(i as f64 / (n - 1) as f64))
        .collect()
}

/// The p90 Prometheus' `histogram_quantile` finds: by rank 0.9·n, the value's bucket.
fn true_p90(latencies_ms: &[f64]) -> f64 {
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(0.9 * sorted.len() as f64).ceil() as usize - 1] / 1000.0
}

fn scalar(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_and_native_histograms_reach_prometheus_as_the_mode_says() {
    let Some(prometheus) = tokio::task::spawn_blocking(|| {
        Prometheus::start_with(
            &[],
            &[
                "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms",
                "--enable-feature=exemplar-storage",
            ],
        )
    })
    .await
    .unwrap() else {
        return;
    };
    let endpoint = format!("--remote-write-endpoint={}/api/v1/write", prometheus.url);
    // Classic bounds on native bucket boundaries (2^(k/8), schema 3 = bucket factor 1.1), so
    // both p90s interpolate inside the same bucket.
    let bounds: Vec<String> = (-56..=8)
        .map(|k| format!("{}", 2f64.powf(k as f64 / 8.0)))
        .collect();
    let bounds = format!("--histogram-buckets={}", bounds.join(","));
    let mut graphgens = Vec::new();
    for mode in ["classic", "native", "both"] {
        let g = Graphgen::start(&[
            &endpoint,
            &format!("--histograms={mode}"),
            &format!("--external-labels=mode={mode}"),
            &format!("--instance-id={mode}"),
            &bounds,
            "--flush-interval=1s",
            "--wait=1s",
        ]);
        graphgens.push(g);
    }
    let latencies = latencies(200);
    for g in &graphgens {
        let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
        for (i, ms) in latencies.iter().enumerate() {
            client
                .export(call("shop", "db", *ms, i % 10 == 0))
                .await
                .unwrap();
        }
    }
    for mode in ["classic", "native", "both"] {
        let query = format!("sum(traces_service_graph_request_total{{mode=\"{mode}\"}})");
        eventually(Duration::from_secs(30), &query, || async {
            scalar(&prometheus.query_raw(&query).await) == Some(200.0)
        })
        .await;
    }
    // The histograms were written in the same pushes as the counters; one more to be sure.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Grafana's test for native histograms (`datasource.ts` getNativeHistograms): any series
    // of the bare name. Only `native` and `both` write one.
    let series = prometheus
        .api(&format!(
            "/api/v1/series?match[]={}",
            percent_encode("traces_service_graph_request_server_seconds")
        ))
        .await;
    let mut modes: Vec<&str> = series
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mode"].as_str().unwrap())
        .collect();
    modes.sort();
    assert_eq!(modes, ["both", "native"], "native series: {series}");
    for s in series.as_array().unwrap() {
        assert_eq!(
            s["__metrics_gen_instance"], s["mode"],
            "Tempo's instance label"
        );
    }
    let classic = prometheus
        .query_raw("group by (mode) (traces_service_graph_request_server_seconds_bucket)")
        .await;
    let mut modes: Vec<&str> = classic
        .iter()
        .map(|r| r["metric"]["mode"].as_str().unwrap())
        .collect();
    modes.sort();
    assert_eq!(modes, ["both", "classic"], "classic series");

    // The native series is a histogram of every observation.
    let native = prometheus
        .query_raw("traces_service_graph_request_server_seconds{mode=\"native\"}")
        .await;
    let histogram = &native[0]["histogram"][1];
    assert_eq!(histogram["count"], "200", "{histogram}");
    let sum: f64 = histogram["sum"].as_str().unwrap().parse().unwrap();
    let expected_sum: f64 = latencies.iter().sum::<f64>() / 1000.0;
    assert!((sum - expected_sum).abs() < 1e-6, "{sum} vs {expected_sum}");

    // Grafana's p90, native and classic, agree within one native bucket (factor 2^(1/8)) and
    // both hold the true p90 within that resolution.
    let factor = 2f64.powf(1.0 / 8.0);
    let truth = true_p90(&latencies);
    for mode in ["native", "both"] {
        let native_p90 = scalar(
            &prometheus
                .query_raw(&format!(
                    "histogram_quantile(0.9, sum by (client, server) (rate(traces_service_graph_request_server_seconds{{mode=\"{mode}\"}}[1m])))"
                ))
                .await,
        )
        .expect("a native p90");
        assert!(
            native_p90 / truth < factor && truth / native_p90 < factor,
            "{mode}: native p90 {native_p90} vs true {truth}"
        );
        if mode == "both" {
            let classic_p90 = scalar(
                &prometheus
                    .query_raw("histogram_quantile(0.9, sum by (le, client, server) (rate(traces_service_graph_request_server_seconds_bucket{mode=\"both\"}[1m])))")
                    .await,
            )
            .expect("a classic p90");
            assert!(
                native_p90 / classic_p90 < factor && classic_p90 / native_p90 < factor,
                "native {native_p90} vs classic {classic_p90}"
            );
        }
    }
    // Failures and exemplars arrive too.
    let failed = prometheus
        .query_raw("sum by (mode) (traces_service_graph_request_failed_total)")
        .await;
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|r| r["value"][1] == "20"), "{failed:?}");
    let exemplars = prometheus
        .api(&format!(
            "/api/v1/query_exemplars?query={}&start=0&end=9999999999",
            percent_encode("traces_service_graph_request_server_seconds_bucket{mode=\"classic\"}")
        ))
        .await;
    let text = exemplars.to_string();
    assert!(text.contains("\"traceID\""), "exemplars: {text}");
}

/// In front of Prometheus' receiver: passes requests on, or answers what the test says.
struct Front {
    port: u16,
    /// 0 pass, else the status to answer.
    answer: Arc<AtomicU64>,
    /// Requests answered with something else than Prometheus' answer.
    refused: Arc<AtomicU64>,
    /// Samples and histograms of requests Prometheus accepted.
    delivered_samples: Arc<AtomicU64>,
    /// Requests that carried `X-Scope-OrgID: team-a`.
    with_tenant: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start(upstream: String) -> Self {
        let answer = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(AtomicU64::new(0));
        let with_tenant = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::new();
        let state = (
            answer.clone(),
            refused.clone(),
            delivered.clone(),
            with_tenant.clone(),
        );
        let app = axum::Router::new().route(
            "/api/v1/write",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (answer, refused, delivered, with_tenant) = state.clone();
                    if headers.get("x-scope-orgid").is_some_and(|v| v == "team-a") {
                        with_tenant.fetch_add(1, Ordering::SeqCst);
                    }
                    let client = client.clone();
                    let upstream = upstream.clone();
                    async move {
                        let status = answer.load(Ordering::SeqCst) as u16;
                        if status != 0 {
                            refused.fetch_add(1, Ordering::SeqCst);
                            let mut response = axum::http::Response::builder().status(status);
                            if status == 429 {
                                response = response.header("retry-after", "1");
                            }
                            return response.body(axum::body::Body::from("not now")).unwrap();
                        }
                        let decoded = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                        let request = graphgen::export::remote_write::prompb::WriteRequest::decode(
                            &decoded[..],
                        )
                        .unwrap();
                        let mut forward = client.post(&upstream).body(body.to_vec());
                        for (name, value) in &headers {
                            if name != "host" && name != "content-length" {
                                forward = forward.header(name, value);
                            }
                        }
                        let upstream = forward.send().await.unwrap();
                        let status = upstream.status().as_u16();
                        if status < 300 {
                            let samples: usize = request
                                .timeseries
                                .iter()
                                .map(|t| t.samples.len() + t.histograms.len())
                                .sum();
                            delivered.fetch_add(samples as u64, Ordering::SeqCst);
                        }
                        let text = upstream.text().await.unwrap_or_default();
                        axum::http::Response::builder()
                            .status(status)
                            .body(axum::body::Body::from(text))
                            .unwrap()
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            answer,
            refused,
            delivered_samples: delivered,
            with_tenant,
            task,
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_rides_out_an_outage_and_a_429_and_drops_a_400() {
    let Some(prometheus) = tokio::task::spawn_blocking(Prometheus::start_receiver)
        .await
        .unwrap()
    else {
        return;
    };
    let front = Front::start(format!("{}/api/v1/write", prometheus.url)).await;
    let g = Graphgen::start(&[
        &format!(
            "--remote-write-endpoint=http://127.0.0.1:{}/api/v1/write",
            front.port
        ),
        "--remote-write-headers=X-Scope-OrgID=team-a",
        "--flush-interval=1s",
        "--wait=1s",
        "--retry-initial-backoff=100ms",
    ]);
    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    let total = "sum(traces_service_graph_request_total)";
    let mut sent = 0;
    let mut send = async |n: usize| {
        for _ in 0..n {
            client
                .export(call("shop", "db", 20.0, false))
                .await
                .unwrap();
        }
    };
    let stored = |expected: f64| {
        let prometheus = &prometheus;
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("{total} = {expected}"),
                || async { scalar(&prometheus.query_raw(total).await) == Some(expected) },
            )
            .await
        }
    };
    send(5).await;
    sent += 5;
    stored(sent as f64).await;
    assert!(
        front.with_tenant.load(Ordering::SeqCst) > 0,
        "the extra header is sent"
    );

    // An outage (503) and throttling (429, Retry-After: 1) while spans keep coming: every
    // request is retried until it is taken, nothing expires.
    for status in [503, 429] {
        front.answer.store(status, Ordering::SeqCst);
        send(5).await;
        sent += 5;
        tokio::time::sleep(Duration::from_secs(3)).await;
        front.answer.store(0, Ordering::SeqCst);
        stored(sent as f64).await;
    }
    let value = |name: &'static str, label: &'static str, v: &'static str| {
        let g = &g;
        async move { g.value(name, &[(label, v)]).await }
    };
    assert!(
        value(
            "graphgen_remote_write_retries_total",
            "reason",
            "server_error"
        )
        .await
            >= 2.0
    );
    assert!(value("graphgen_remote_write_retries_total", "reason", "throttled").await >= 2.0);
    assert_eq!(
        value("graphgen_remote_write_requests_total", "outcome", "expired").await,
        0.0
    );
    assert_eq!(
        value(
            "graphgen_remote_write_requests_total",
            "outcome",
            "rejected"
        )
        .await,
        0.0
    );
    // Nothing lost: every sample graphgen counts as sent went through to Prometheus, and the
    // series holds one sample per request sent, plus its zero.
    eventually(Duration::from_secs(5), "sent samples delivered", || async {
        value("graphgen_remote_write_samples_total", "outcome", "sent").await
            == front.delivered_samples.load(Ordering::SeqCst) as f64
    })
    .await;
    let requests = value("graphgen_remote_write_requests_total", "outcome", "sent").await;
    let samples = scalar(
        &prometheus
            .query_raw("count_over_time(traces_service_graph_request_total[10m])")
            .await,
    )
    .unwrap();
    assert!(
        (samples - (requests + 1.0)).abs() <= 1.0,
        "{samples} samples stored for {requests} requests sent"
    );

    // A 400 is final: dropped and counted at once, never retried.
    let retries_before = value(
        "graphgen_remote_write_retries_total",
        "reason",
        "server_error",
    )
    .await
        + value("graphgen_remote_write_retries_total", "reason", "throttled").await;
    let refused_before = front.refused.load(Ordering::SeqCst);
    front.answer.store(400, Ordering::SeqCst);
    send(5).await;
    sent += 5;
    eventually(Duration::from_secs(10), "two requests rejected", || async {
        value(
            "graphgen_remote_write_requests_total",
            "outcome",
            "rejected",
        )
        .await
            >= 2.0
    })
    .await;
    front.answer.store(0, Ordering::SeqCst);
    let rejected = value(
        "graphgen_remote_write_requests_total",
        "outcome",
        "rejected",
    )
    .await;
    let refused = front.refused.load(Ordering::SeqCst) - refused_before;
    assert!(
        refused as f64 <= rejected + 1.0,
        "{refused} attempts for {rejected} rejected requests: retried"
    );
    let retries_after = value(
        "graphgen_remote_write_retries_total",
        "reason",
        "server_error",
    )
    .await
        + value("graphgen_remote_write_retries_total", "reason", "throttled").await;
    assert_eq!(retries_before, retries_after, "a 400 is not retried");
    assert!(value("graphgen_remote_write_samples_total", "outcome", "rejected").await > 0.0);
    // The values are cumulative: the next accepted push brings Prometheus up to date.
    stored(sent as f64).await;
}

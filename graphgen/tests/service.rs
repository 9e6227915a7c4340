//! graphgen as a real process over real sockets: receivers, forwarding, back-pressure, bad
//! input, shutdown and the OTLP metrics push.

mod support;

use std::io::Read;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, AggregationTemporality};
use prost::Message;
use support::*;
use tonic::codec::CompressionEncoding;
use tonic_types::StatusExt;

const EDGES: [(&str, &str, &str); 4] = [
    ("user", "frontend", "virtual_node"),
    ("frontend", "checkout", ""),
    ("checkout", "orders", "database"),
    ("checkout", "payment-gateway", "virtual_node"),
];

fn edge_labels<'a>(
    client: &'a str,
    server: &'a str,
    connection_type: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("client", client), ("server", server)];
    if !connection_type.is_empty() {
        labels.push(("connection_type", connection_type));
    }
    labels
}

/// Waits until each of `EDGES` has counted `requests`.
async fn every_edge_counted(g: &Graphgen, requests: f64) {
    eventually(Duration::from_secs(10), "every edge", || async {
        let m = g.metrics().await;
        EDGES.iter().all(|(c, s, t)| {
            find_optional(
                &m,
                "traces_service_graph_request_total",
                &edge_labels(c, s, t),
            ) == Some(requests)
        })
    })
    .await;
}

async fn grpc_client(g: &Graphgen) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(g.grpc_url())
        .await
        .expect("connect")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(g: &Graphgen, content_type: &str, gzipped: bool, body: Vec<u8>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(g.http_url())
        .header("content-type", content_type);
    if gzipped {
        request = request.header("content-encoding", "gzip");
    }
    request.body(body).send().await.expect("http request")
}

#[tokio::test]
async fn every_counter_label_set_exists_from_the_start_at_zero() {
    let g = Graphgen::start(&[]);
    let m = g.metrics().await;
    let mut checked = 0;
    for (name, label, values) in [
        (
            "graphgen_exporter_dropped_spans_total",
            "reason",
            &[
                "non_retryable",
                "retries_exhausted",
                "rejected_by_backend",
                "shutdown",
                "unreadable",
            ][..],
        ),
        (
            "graphgen_queue_write_errors_total",
            "op",
            &["segment_start", "append", "ack", "fsync", "remove"],
        ),
        (
            "graphgen_exporter_requests_total",
            "outcome",
            &["success", "failure"],
        ),
        (
            "graphgen_metrics_pushes_total",
            "outcome",
            &["success", "failure"],
        ),
        (
            "graphgen_remote_write_requests_total",
            "outcome",
            &["sent", "rejected", "expired"],
        ),
        (
            "graphgen_edges_expired_total",
            "unmatched_span_kind",
            &[
                "SPAN_KIND_CLIENT",
                "SPAN_KIND_SERVER",
                "SPAN_KIND_PRODUCER",
                "SPAN_KIND_CONSUMER",
            ],
        ),
    ] {
        for value in values {
            assert_eq!(
                find(&m, name, &[(label, value)]),
                0.0,
                "{name}{{{label}={value}}}"
            );
            checked += 1;
        }
    }
    for protocol in ["grpc", "http"] {
        for outcome in [
            "accepted",
            "partial",
            "invalid",
            "malformed",
            "too_large",
            "unsupported",
            "queue_full",
            "queue_unavailable",
            "busy",
        ] {
            let labels = [("protocol", protocol), ("outcome", outcome)];
            assert_eq!(find(&m, "graphgen_receiver_requests_total", &labels), 0.0);
            checked += 1;
        }
    }
    assert_eq!(checked, 39);
}

#[tokio::test]
async fn a_request_delivered_twice_is_counted_once_with_dedup_on() {
    let g = Graphgen::start(&["--wait=1s", "--dedup-window=1m"]);
    let mut client = grpc_client(&g).await;
    let request = topology_trace(true);
    let spans = span_count(&request);
    // An SDK's retry of a request graphgen had taken, and an HTTP re-send of it.
    client.export(request.clone()).await.unwrap();
    client.export(request.clone()).await.unwrap();
    let body = prost::Message::encode_to_vec(&request);
    let r = post(&g, "application/x-protobuf", false, body).await;
    assert_eq!(r.status(), 200);
    every_edge_counted(&g, 1.0).await;
    let m = g.metrics().await;
    assert_eq!(
        find(&m, "graphgen_dedup_duplicate_spans_total", &[]),
        2.0 * spans as f64
    );
    assert_eq!(find(&m, "graphgen_dedup_tracked_spans", &[]), spans as f64);
    // Counted once: the failed request too.
    let failed = find_optional(
        &m,
        "traces_service_graph_request_failed_total",
        &edge_labels("frontend", "checkout", ""),
    );
    assert_eq!(failed, Some(1.0));
}

#[tokio::test]
async fn grpc_and_http_clients_build_the_expected_edges() {
    let g = Graphgen::start(&["--wait=1s"]);
    let ready = reqwest::get(format!("http://{}/readyz", g.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready: receivers up, nothing queued");
    // The admin index lists every admin route.
    let index = reqwest::get(format!("http://{}/", g.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for route in ["/metrics", "/healthz", "/readyz", "/graph", "/api/graph"] {
        assert!(index.contains(route), "{route} in {index}");
    }
    // 2 traces over gRPC (gzip), 2 over HTTP protobuf, 2 over HTTP JSON+gzip; one of each fails.
    let mut client = grpc_client(&g)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    for fail in [false, true] {
        let response = client
            .export(topology_trace(fail))
            .await
            .expect("grpc export")
            .into_inner();
        assert_eq!(response.partial_success, None);
    }
    for fail in [false, true] {
        let r = post(
            &g,
            "application/x-protobuf",
            false,
            topology_trace(fail).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-protobuf");
        let body = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
        assert_eq!(body.partial_success, None);

        let json = serde_json::to_vec(&topology_trace(fail)).unwrap();
        let r = post(&g, "application/json", true, gzip(&json)).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    every_edge_counted(&g, 6.0).await;
    let m = g.metrics().await;
    assert_eq!(
        find(
            &m,
            "traces_service_graph_request_failed_total",
            &edge_labels("frontend", "checkout", "")
        ),
        3.0
    );
    assert_eq!(
        find(
            &m,
            "traces_service_graph_request_server_seconds_count",
            &edge_labels("frontend", "checkout", "")
        ),
        6.0
    );
    assert_eq!(
        find(
            &m,
            "traces_spanmetrics_calls_total",
            &[
                ("service", "checkout"),
                ("span_name", "POST /order"),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("status_code", "STATUS_CODE_ERROR")
            ]
        ),
        3.0
    );
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_spans_received_total",
            &[("protocol", "grpc")]
        ),
        12.0
    );
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_spans_received_total",
            &[("protocol", "http")]
        ),
        24.0
    );
}

#[tokio::test]
async fn forwarding_survives_a_sink_outage_without_losing_a_span() {
    let sink = Sink::default();
    let port = free_port();
    let server = sink.serve(port).await;
    let g = Graphgen::start(&[
        &format!("--traces-endpoint=http://127.0.0.1:{port}"),
        "--retry-initial-backoff=100ms",
        "--queue-size=100000",
    ]);
    let mut client = grpc_client(&g).await;
    let mut sent = std::collections::HashSet::new();
    let mut send = |request: ExportTraceServiceRequest| {
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            sent.insert(span.span_id.clone());
        }
        request
    };
    for _ in 0..50 {
        client
            .export(send(topology_trace(false)))
            .await
            .expect("export");
    }
    eventually(Duration::from_secs(10), "first spans forwarded", || async {
        sink.count() >= 300
    })
    .await;

    server.stop().await;
    let outage = tokio::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        client
            .export(send(topology_trace(false)))
            .await
            .expect("accepted while the sink is down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Exports are failing, but a request sent now is taken: still ready, so a load balancer
    // keeps routing here and the service-graph metrics go on (the failures are in metrics).
    assert!(g.value("graphgen_exporter_retries_total", &[]).await > 0.0);
    let ready = reqwest::get(format!("http://{}/readyz", g.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "an exporter outage is not unreadiness");
    let server = sink.serve(port).await;
    for _ in 0..50 {
        client
            .export(send(topology_trace(false)))
            .await
            .expect("export");
    }
    eventually(Duration::from_secs(30), "every span forwarded", || async {
        sink.distinct().len() >= sent.len()
    })
    .await;
    assert_eq!(sink.distinct(), sent, "the sink got exactly the spans sent");
    let retries = g.value("graphgen_exporter_retries_total", &[]).await;
    assert!(retries > 0.0, "retries visible in self-metrics");
    // At-least-once: a batch the sink took but whose answer was lost as it stopped is sent
    // again and counted again, so the count lies between what was sent and what arrived.
    let counted = g.value("graphgen_exporter_sent_spans_total", &[]).await;
    assert!(
        counted >= sent.len() as f64 && counted <= sink.count() as f64,
        "sent_spans_total {counted}, sent {}, sink received {}",
        sent.len(),
        sink.count()
    );
    println!(
        "forwarded {} spans across a 3 s sink outage, {} retries, {} duplicates",
        sent.len(),
        retries,
        sink.count() - sent.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_pushes_back_instead_of_dropping() {
    // The traces endpoint is down, so nothing leaves the 12-span queue.
    let dead = free_port();
    let g = Graphgen::start(&[
        &format!("--traces-endpoint=http://127.0.0.1:{dead}"),
        "--queue-size=12",
    ]);
    let mut client = grpc_client(&g).await;
    for _ in 0..2 {
        client
            .export(topology_trace(false))
            .await
            .expect("room for 2 × 6 spans");
    }
    let status = client
        .export(topology_trace(false))
        .await
        .expect_err("queue full");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo makes the client retry");
    assert!(retry.retry_delay.is_some());

    let r = post(
        &g,
        "application/x-protobuf",
        false,
        topology_trace(false).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = post(
        &g,
        "application/json",
        false,
        serde_json::to_vec(&topology_trace(false)).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("queue is full"));

    let m = g.metrics().await;
    // Refused before decoding (cheap under overload): requests are counted, spans unknown.
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", "grpc"), ("outcome", "queue_full")]
        ),
        1.0
    );
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", "http"), ("outcome", "queue_full")]
        ),
        2.0
    );
    assert_eq!(find(&m, "graphgen_queue_spans", &[]), 12.0);
    // The queue is full: alive, but not ready (a request sent now would be refused).
    let admin = format!("http://{}", g.admin);
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("queue is full"));
    assert_eq!(
        reqwest::get(format!("{admin}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Refused spans were not counted into the graph either: the client will send them again.
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_spans_received_total",
            &[("protocol", "grpc")]
        ),
        12.0
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let g = Graphgen::start(&["--max-message-bytes=65536"]);
    let good = topology_trace(false).encode_to_vec();
    let mut random = vec![0u8; 4096];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8;
    }
    let mut bad_ids = topology_trace(false);
    for rs in &mut bad_ids.resource_spans {
        for span in &mut rs.scope_spans[0].spans {
            span.trace_id.truncate(5);
        }
    }
    let mut some_bad_ids = topology_trace(false);
    some_bad_ids.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];

    // (what, content type, gzipped, body, expected HTTP status, expected message part)
    type Case<'a> = (&'a str, &'a str, bool, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated protobuf",
            "application/x-protobuf",
            false,
            good[..good.len() / 2].to_vec(),
            400,
            "",
        ),
        (
            "random bytes",
            "application/x-protobuf",
            false,
            random.clone(),
            400,
            "",
        ),
        (
            "wrong content type",
            "text/plain",
            false,
            b"hello".to_vec(),
            415,
            "unsupported content type",
        ),
        (
            "oversized body",
            "application/x-protobuf",
            false,
            vec![0u8; 100_000],
            413,
            "larger than the limit",
        ),
        (
            "gzip bomb",
            "application/x-protobuf",
            true,
            gzip(&vec![0u8; 50 << 20]),
            413,
            "larger than the limit",
        ),
        (
            "not gzip",
            "application/x-protobuf",
            true,
            b"plain".to_vec(),
            400,
            "not valid gzip",
        ),
        (
            "invalid id lengths",
            "application/json",
            false,
            serde_json::to_vec(&bad_ids).unwrap(),
            400,
            "trace id must be 16",
        ),
        (
            "JSON with wrong types",
            "application/json",
            false,
            br#"{"resourceSpans": 7}"#.to_vec(),
            400,
            "invalid OTLP/JSON",
        ),
        (
            "JSON that is not JSON",
            "application/json",
            false,
            b"{".to_vec(),
            400,
            "invalid OTLP/JSON",
        ),
        (
            "empty request",
            "application/x-protobuf",
            false,
            vec![],
            200,
            "",
        ),
        (
            "media type in capitals, with parameters",
            "Application/JSON; charset=UTF-8",
            false,
            b"{}".to_vec(),
            200,
            "",
        ),
    ];
    for (name, content_type, gzipped, body, want, message) in cases {
        let r = post(&g, content_type, gzipped, body).await;
        assert_eq!(r.status().as_u16(), want, "{name}");
        let body = r.bytes().await.unwrap();
        if want != 200 {
            let text = String::from_utf8_lossy(&body).to_string();
            let decoded = tonic_types::Status::decode(body.as_ref())
                .map(|s| s.message)
                .unwrap_or_default();
            assert!(
                text.contains(message) || decoded.contains(message),
                "{name}: {text}"
            );
        }
    }

    // Some invalid spans: a partial success, in the request's encoding.
    let r = post(
        &g,
        "application/x-protobuf",
        false,
        some_bad_ids.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let partial = ExportTraceServiceResponse::decode(r.bytes().await.unwrap())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("span id must be 8"),
        "{}",
        partial.error_message
    );

    // gRPC: oversized → RESOURCE_EXHAUSTED (not retryable), invalid ids → INVALID_ARGUMENT.
    let mut client = grpc_client(&g).await;
    let mut huge = topology_trace(false);
    huge.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(100_000);
    let status = client.export(huge).await.expect_err("too large");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none());
    let status = client.export(bad_ids).await.expect_err("invalid ids");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let partial = client
        .export(some_bad_ids)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 1);
    let mut client = client.send_compressed(CompressionEncoding::Gzip);
    let mut bomb = topology_trace(false);
    bomb.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(10 << 20);
    let status = client.export(bomb).await.expect_err("gzip bomb");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // Still serving well-formed clients on both protocols.
    grpc_client(&g)
        .await
        .export(topology_trace(false))
        .await
        .expect("grpc still works");
    assert_eq!(
        post(&g, "application/x-protobuf", false, good)
            .await
            .status(),
        200
    );
    let m = g.metrics().await;
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_spans_refused_total",
            &[("protocol", "http"), ("reason", "invalid")]
        ),
        7.0
    );
    assert!(
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", "http"), ("outcome", "too_large")]
        ) >= 2.0
    );
    // The borrowed reader left the malformed bodies to prost, which refused them; the
    // well-formed ones it read itself.
    assert!(
        find(
            &m,
            "graphgen_receiver_prost_decodes_total",
            &[("reason", "malformed")]
        ) >= 2.0
    );
    for reason in ["duplicate_field", "not_canonical", "too_deep"] {
        let decodes = find(
            &m,
            "graphgen_receiver_prost_decodes_total",
            &[("reason", reason)],
        );
        assert_eq!(decodes, 0.0, "{reason}");
    }
}

#[tokio::test]
async fn sigterm_flushes_queued_spans_before_exit() {
    let sink = Sink::default();
    let port = free_port();
    let mut g = Graphgen::start(&[
        &format!("--traces-endpoint=http://127.0.0.1:{port}"),
        "--retry-initial-backoff=100ms",
        "--shutdown-grace=20s",
    ]);
    // The sink is down while the spans arrive, so they wait in the queue.
    let mut client = grpc_client(&g).await;
    let mut sent = 0;
    for _ in 0..100 {
        let request = topology_trace(false);
        sent += span_count(&request);
        client.export(request).await.expect("export");
    }
    assert_eq!(g.value("graphgen_queue_spans", &[]).await, sent as f64);
    let server = sink.serve(port).await;
    let status = tokio::task::spawn_blocking(move || g.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        sink.distinct().len(),
        sent,
        "every queued span reached the sink before exit"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_pushed_as_otlp_with_tempo_names() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Vec<u8>)>();
    let app = axum::Router::new().route(
        "/api/v1/otlp/v1/metrics",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let header = |h: &str| {
                        headers
                            .get(h)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    let _ = tx.send((
                        header("content-type"),
                        header("content-encoding"),
                        body.to_vec(),
                    ));
                    ""
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let g = Graphgen::start(&[
        &format!("--metrics-endpoint=http://{addr}/api/v1/otlp/v1/metrics"),
        "--instance-id=graphgen-test-7",
        "--flush-interval=500ms",
        "--wait=1s",
    ]);
    let trace = topology_trace(true);
    let trace_id = trace.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    grpc_client(&g).await.export(trace).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let request = loop {
        let (content_type, content_encoding, body) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a push")
            .unwrap();
        assert_eq!(content_type, "application/x-protobuf");
        assert_eq!(content_encoding, "gzip");
        let mut decompressed = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut decompressed)
            .expect("gzip");
        let request =
            ExportMetricsServiceRequest::decode(decompressed.as_slice()).expect("OTLP protobuf");
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        // A push after the one that introduced the virtual edges: one point per series (the
        // first push of a series also carries its zero point).
        let has_virtual = metrics.iter().any(|m| {
            m.name == "traces_service_graph_request_total"
                && matches!(&m.data, Some(Data::Sum(s)) if s.data_points.len() == 4
                    && s.data_points.iter().all(|p| p.value != Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(0.0))))
        });
        if has_virtual {
            break request;
        }
    };
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    let attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
    };
    let string = |s: &str| {
        Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s.into()),
            ),
        })
    };
    assert_eq!(attribute("service.name"), string("graphgen"));
    assert_eq!(attribute("service.instance.id"), string("graphgen-test-7"));
    assert_eq!(
        attribute("service.version"),
        string(env!("CARGO_PKG_VERSION"))
    );
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let by_name = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let cumulative = AggregationTemporality::Cumulative as i32;

    for name in [
        "traces_service_graph_request_total",
        "traces_service_graph_request_failed_total",
        "traces_spanmetrics_calls_total",
        "traces_spanmetrics_size_total",
    ] {
        let m = by_name(name);
        assert_eq!(m.unit, "", "{name}");
        match &m.data {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic, "{name}");
                assert_eq!(s.aggregation_temporality, cumulative, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    for (name, unit) in [
        ("traces_service_graph_request_server_seconds", "s"),
        ("traces_service_graph_request_client_seconds", "s"),
        ("traces_spanmetrics_latency", ""),
    ] {
        let m = by_name(name);
        assert_eq!(
            m.unit, unit,
            "{name}: a unit Prometheus would append to the name must not be set"
        );
        match &m.data {
            Some(Data::Histogram(h)) => {
                assert_eq!(h.aggregation_temporality, cumulative);
                for p in &h.data_points {
                    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
                    assert!(
                        p.start_time_unix_nano > 0 && p.start_time_unix_nano <= p.time_unix_nano
                    );
                }
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Histograms carry the trace behind their latest observation, for Grafana's exemplar links.
    for name in [
        "traces_service_graph_request_server_seconds",
        "traces_spanmetrics_latency",
    ] {
        let Some(Data::Histogram(h)) = &by_name(name).data else {
            unreachable!()
        };
        for point in &h.data_points {
            let exemplar = point
                .exemplars
                .first()
                .unwrap_or_else(|| panic!("{name}: no exemplar"));
            assert_eq!(exemplar.trace_id, trace_id, "{name}");
            assert!(exemplar.time_unix_nano > 0);
        }
    }
    let failed = by_name("traces_service_graph_request_failed_total");
    let Some(Data::Sum(s)) = &failed.data else {
        unreachable!()
    };
    let point = &s.data_points[0];
    let attr = |k: &str| {
        point
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
    };
    assert!(
        attr("client").unwrap().contains("frontend")
            && attr("server").unwrap().contains("checkout")
    );
    assert_eq!(
        point.value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(1.0))
    );
}

/// A TCP endpoint that takes connections and never answers (a hung Prometheus).
async fn silent_endpoint() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

#[tokio::test]
async fn sigterm_with_every_endpoint_down_or_hung_exits_within_the_grace_period() {
    let dead = free_port();
    let hung = silent_endpoint().await;
    let grace = Duration::from_secs(3);
    let mut g = Graphgen::start(&[
        &format!("--traces-endpoint=http://127.0.0.1:{dead}"),
        "--retry-initial-backoff=100ms",
        "--retry-max-elapsed=0s", // retry forever: only the shutdown deadline stops it
        &format!("--shutdown-grace={}s", grace.as_secs()),
        // Both metrics pushes hang, each far longer than the grace period.
        &format!("--metrics-endpoint=http://{hung}/v1/metrics"),
        &format!("--remote-write-endpoint=http://{hung}/api/v1/write"),
        "--flush-interval=1h",
    ]);
    // A client that keeps its connection open through the shutdown.
    let mut client = grpc_client(&g).await;
    client.export(topology_trace(false)).await.unwrap();
    eventually(Duration::from_secs(10), "the exporter to retry", || async {
        g.value("graphgen_exporter_failures_total", &[("side", "transport")])
            .await
            >= 1.0
    })
    .await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = g.terminate();
        (status, g.logs())
    })
    .await
    .unwrap();
    let took = started.elapsed();
    drop(client);
    assert!(status.0.success(), "exit status {:?}", status.0);
    // The budget is the whole shutdown (plus the admin server's close and the process exit),
    // so an orchestrator's grace period a few seconds longer is never cut short.
    assert!(
        took < grace + Duration::from_millis(1500),
        "shutdown took {took:?}:\n{}",
        status.1
    );
    // The queued trace's 6 spans are given up on, with the reason.
    assert!(
        status.1.lines().any(|line| line.contains("spans dropped")
            && line.contains("spans=6")
            && line.contains("reason=shutdown")),
        "the spans given up on are reported:\n{}",
        status.1
    );
    assert!(
        status
            .1
            .contains("final metrics push did not end within --shutdown-grace"),
        "{}",
        status.1
    );
}

#[tokio::test]
async fn a_hostile_label_value_is_cut_and_an_incomplete_body_is_a_400() {
    let g = Graphgen::start(&["--wait=1s"]);
    // As in the report: five JSON requests of about 900 KB, each a database call whose db.name
    // (it names the database node, and the db_system-like labels) is 900 KB long. Before the
    // limit they made a 207 MB /metrics page.
    for i in 0..5u8 {
        let mut request = topology_trace(false);
        let huge = format!("{}", (b'a' + i) as char).repeat(900_000);
        for span in request
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
        {
            for kv in span.attributes.iter_mut().filter(|kv| kv.key == "db.name") {
                *kv = support::kv("db.name", &huge);
            }
        }
        let r = post(
            &g,
            "application/json",
            false,
            serde_json::to_vec(&request).unwrap(),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let page = || async {
        reqwest::get(format!("http://{}/metrics", g.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = page().await;
    let rss_before = g.rss_bytes();
    for _ in 0..10 {
        page().await;
    }
    let rss_growth = g.rss_bytes().saturating_sub(rss_before);
    println!(
        "/metrics after 5 × 900 KB values: {} bytes; RSS {} MiB, +{} KiB after serving it 10 times",
        text.len(),
        rss_before >> 20,
        rss_growth >> 10
    );
    assert!(text.len() < 3 << 20, "a page of {} bytes", text.len());
    assert!(
        rss_growth < 16 << 20,
        "RSS grew {rss_growth} bytes serving the page"
    );
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 3 * 2048, "a /metrics line of {longest} bytes");
    assert!(
        text.contains(&format!("server=\"{}\"", "a".repeat(2048))),
        "the database node's name cut to 2048 bytes"
    );
    let m = parse_exposition(&text);
    assert_eq!(
        find(
            &m,
            "graphgen_label_values_truncated_total",
            &[("processor", "service_graph")]
        ),
        5.0,
        "one value cut per database edge recorded"
    );

    // A body shorter than its Content-Length is incomplete, not too large.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(g.http).await.unwrap();
    stream
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nonly this",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("incomplete"), "{answer}");
}

#[tokio::test]
async fn an_exploding_attribute_overflows_its_own_label_only() {
    // user.id as a span-metrics dimension: a new value on every request.
    let g = Graphgen::start(&[
        "--span-metrics-dimensions=user.id",
        "--max-cardinality-per-label=5",
    ]);
    let mut client = grpc_client(&g).await;
    let send = |n: usize| {
        let requests: Vec<_> = (0..n)
            .map(|i| {
                let mut request = topology_trace(false);
                for rs in &mut request.resource_spans {
                    for span in rs.scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
                        span.attributes.push(support::kv(
                            "user.id",
                            &format!("user-{i}-{}", rand_suffix()),
                        ));
                    }
                }
                request
            })
            .collect();
        requests
    };
    for request in send(20) {
        client.export(request).await.unwrap();
    }
    let overflowed = |m: &[Sample]| {
        m.iter()
            .filter(|s| s.name == "traces_spanmetrics_calls_total")
            .filter(|s| {
                s.labels.get("user_id").map(String::as_str) == Some("__cardinality_overflow__")
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    let limited = |m: &[Sample]| {
        find(
            m,
            "graphgen_label_values_limited_total",
            &[("processor", "span_metrics"), ("label", "user_id")],
        )
    };
    // The limit is decided on an expiry tick (every second): probe until a request overflows.
    eventually(Duration::from_secs(10), "the limit to apply", || {
        let mut probe = client.clone();
        let requests = send(1);
        let g = &g;
        async move {
            for request in requests {
                probe.export(request).await.unwrap();
            }
            overflowed(&g.metrics().await) > 0.0
        }
    })
    .await;
    let before = g.metrics().await;
    for request in send(5) {
        client.export(request).await.unwrap();
    }
    let m = g.metrics().await;
    assert_eq!(
        overflowed(&m) - overflowed(&before),
        30.0,
        "the 5 later requests' 6 spans each"
    );
    assert!(
        m.iter()
            .filter(|s| s.name == "traces_spanmetrics_calls_total"
                && s.labels.get("user_id").map(String::as_str) == Some("__cardinality_overflow__"))
            .all(|s| s
                .labels
                .get("service")
                .is_some_and(|v| v == "frontend" || v == "checkout")),
        "other labels keep their values"
    );
    assert_eq!(limited(&m) - limited(&before), 30.0);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn serving_metrics_full_of_maximum_length_labels_holds_no_second_copy() {
    // Every series at the limit: 2048-byte service and span names, --max-series edges.
    const EDGES: usize = 400;
    // The OTLP push of the same series runs every second meanwhile, into a sink that counts,
    // in parts of 1 MiB: a push is 10-20 parts, built one at a time.
    let pushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pushed_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p, b) = (pushes.clone(), pushed_bytes.clone());
    let sink = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b.fetch_add(body.len(), std::sync::atomic::Ordering::Relaxed);
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });
    let g = Graphgen::start(&[
        "--wait=1s",
        &format!("--max-series={EDGES}"),
        &format!("--metrics-endpoint=http://{sink_addr}/v1/metrics"),
        "--flush-interval=1s",
        "--metrics-max-request-bytes=1048576",
    ]);
    let long = |prefix: &str, i: usize| format!("{prefix}{i:06}-").repeat(400)[..2048].to_string();
    let mut client = grpc_client(&g).await;
    for chunk in (0..EDGES).collect::<Vec<_>>().chunks(50) {
        let mut resource_spans = Vec::new();
        for &i in chunk {
            let trace: Vec<u8> = [next_id().to_be_bytes(), next_id().to_be_bytes()].concat();
            let (call, served) = (next_id(), next_id());
            let name = long("operation", i);
            resource_spans.push(support::resource(
                &long("client", i),
                vec![support::span(&trace, call, None, 3, &name, vec![], false)],
            ));
            resource_spans.push(support::resource(
                &long("server", i),
                vec![support::span(
                    &trace,
                    served,
                    Some(call),
                    2,
                    &name,
                    vec![],
                    false,
                )],
            ));
        }
        client
            .export(ExportTraceServiceRequest { resource_spans })
            .await
            .unwrap();
    }
    let page_len = || async {
        let mut response = reqwest::get(format!("http://{}/metrics", g.admin))
            .await
            .unwrap();
        let mut len = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            len += chunk.len();
        }
        len
    };
    let rss_before = g.rss_bytes();
    let mut peak = rss_before;
    let mut first = 0;
    for _ in 0..3 {
        let serving = page_len();
        tokio::pin!(serving);
        first = loop {
            tokio::select! {
                len = &mut serving => break len,
                _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(g.rss_bytes()),
            }
        };
    }
    // Two more seconds of pushes alone.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(g.rss_bytes());
    }
    let growth = peak.saturating_sub(rss_before);
    let pushes = pushes.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "/metrics with {EDGES} edges of 2048-byte labels: {} MB page; RSS {} MiB, peak +{} MiB while serving it 3 times and pushing {pushes} requests ({} MB gzip)",
        first >> 20,
        rss_before >> 20,
        growth >> 20,
        pushed_bytes.load(std::sync::atomic::Ordering::Relaxed) >> 20,
    );
    assert!(pushes >= 2, "the push ran meanwhile");
    assert!(first > 50 << 20, "the page is large: {first} bytes");
    // Before: +260 MiB for the scrapes alone (every series' labels copied five times, then the
    // whole text), and every part of a push built before the first was sent. Measured after:
    // +3 MiB for the scrapes alone, +13 MiB for the pushes alone, ~+30 MiB for both at once.
    assert!(
        growth < 48 << 20,
        "RSS grew {growth} bytes while serving it"
    );
}

/// A client that sends a request's headers and then nothing: its body is never read.
fn stalled_request(g: &Graphgen, content_length: usize, gzip: bool) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(g.http).unwrap();
    let encoding = if gzip {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        socket,
        "POST /v1/traces HTTP/1.1\r\nHost: graphgen\r\nContent-Type: application/x-protobuf\r\n{encoding}Content-Length: {content_length}\r\n\r\n"
    )
    .unwrap();
    socket
}

async fn inflight_requests_reach(g: &Graphgen, n: f64) {
    eventually(
        Duration::from_secs(5),
        "stalled requests counted",
        || async { g.value("graphgen_receiver_inflight_requests", &[]).await == n },
    )
    .await;
}

async fn post_protobuf(g: &Graphgen, body: &[u8]) -> u16 {
    post(g, "application/x-protobuf", false, body.to_vec())
        .await
        .status()
        .as_u16()
}

/// Room for requests is reserved before their bodies are read: slow clients that announce a
/// body and never send it hold a concurrency slot and their announced bytes (a compressed
/// one, the whole limit again for what it may inflate to), and once those are held other
/// clients are told to retry later — while a body that can never fit is a 413 whatever else
/// is going on, never a retryable 429.
#[tokio::test]
async fn requests_in_flight_are_bounded_before_their_bodies_are_read() {
    let g = Graphgen::start(&[
        "--max-concurrent-requests=2",
        "--max-inflight-bytes=1048576",
        "--max-message-bytes=524288",
    ]);
    let body = topology_trace(false).encode_to_vec();
    assert_eq!(post_protobuf(&g, &body).await, 200);

    // A gzip body may inflate to the limit: 1000 + 512 KiB of the 1 MiB are held.
    let first = stalled_request(&g, 1000, true);
    inflight_requests_reach(&g, 1.0).await;
    assert_eq!(
        g.value("graphgen_receiver_inflight_bytes", &[]).await,
        (1024 + (512 << 10)) as f64
    );
    let r = post(&g, "application/x-protobuf", true, gzip(&body)).await;
    assert_eq!(r.status(), 429, "a second gzip body cannot be held");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("--max-inflight-bytes"));
    // An uncompressed body of known size still fits.
    assert_eq!(post_protobuf(&g, &body).await, 200);

    // Two requests at once at most.
    let second = stalled_request(&g, 10, false);
    inflight_requests_reach(&g, 2.0).await;
    let r = post(&g, "application/x-protobuf", false, body.clone()).await;
    assert_eq!(r.status(), 429);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("--max-concurrent-requests"));
    // Too large for ever: 413 at once, even now.
    let mut socket = std::net::TcpStream::connect(g.http).unwrap();
    write!(
        socket,
        "POST /v1/traces HTTP/1.1\r\nHost: graphgen\r\nContent-Type: application/x-protobuf\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let m = g.metrics().await;
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", "http"), ("outcome", "busy")]
        ),
        2.0
    );
    assert_eq!(
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", "http"), ("outcome", "too_large")]
        ),
        1.0
    );
    // The slow clients leave: their room comes back.
    drop((first, second));
    eventually(Duration::from_secs(5), "room given back", || async {
        g.value("graphgen_receiver_inflight_bytes", &[]).await == 0.0
    })
    .await;
    assert_eq!(
        post(&g, "application/x-protobuf", true, gzip(&body))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn processors_by_tempo_names_choose_the_series_and_the_page_says_what_prometheus_lacks() {
    let g = Graphgen::start(&[
        "--wait=1s",
        "--processors=service-graphs-request,service-graphs-connection-info,span-metrics-count",
    ]);
    let mut client = grpc_client(&g).await;
    client.export(topology_trace(false)).await.unwrap();
    every_edge_counted(&g, 1.0).await;
    let m = g.metrics().await;
    // The presence gauge: 1 for every edge, with the request counter's labels.
    for (c, s, t) in EDGES {
        assert_eq!(
            find(
                &m,
                "traces_service_graph_connection_info",
                &edge_labels(c, s, t)
            ),
            1.0,
            "{c} -> {s}"
        );
    }
    let names: std::collections::BTreeSet<&str> = m.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains("traces_spanmetrics_calls_total"));
    for absent in [
        "traces_service_graph_request_server_seconds_bucket",
        "traces_service_graph_request_client_seconds_count",
        "traces_spanmetrics_latency_bucket",
        "traces_spanmetrics_size_total",
    ] {
        assert!(!names.contains(absent), "{absent} is not made");
    }
    // The service map still has its figures, and says Grafana will not.
    let page = reqwest::get(format!("http://{}/graph", g.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("service-graphs-latency is off"), "{page}");
    assert!(!page.contains("service-graphs-request is off"));
}

/// Tempo's processor options through the whole service: a config file with filter policies,
/// flags for target info, host info, span-name sanitization and the ingestion time range, and
/// what a scrape shows after one request over gRPC.
#[tokio::test]
async fn tempo_options_shape_the_series_a_scrape_shows() {
    let dir = std::env::temp_dir().join(format!("graphgen-tempo-options-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("graphgen.toml");
    std::fs::write(
        &file,
        r#"
[[span_metrics_filter_policies]]
exclude = { match_type = "regex", attributes = [{ key = "span.http.route", value = "^/health" }] }
"#,
    )
    .unwrap();
    let g = Graphgen::start(&[
        "--config",
        file.to_str().unwrap(),
        "--processors=service-graphs,span-metrics,host-info",
        "--span-metrics-enable-target-info",
        "--span-name-sanitization=enabled",
        "--ingestion-time-range-slack=30s",
    ]);
    let trace: Vec<u8> = [next_id().to_be_bytes(), next_id().to_be_bytes()].concat();
    let server = |name: &str, attrs| span(&trace, next_id(), Some(1), 2, name, attrs, false);
    let mut old = server("GET /users/3/orders", vec![]);
    old.end_time_unix_nano -= 3_600_000_000_000; // an hour ago
    old.start_time_unix_nano -= 3_600_000_000_000;
    let mut shop = resource(
        "shop",
        vec![
            server("GET /users/1/orders", vec![]),
            server("GET /users/2/orders", vec![]),
            server("GET /healthz", vec![kv("http.route", "/healthz")]),
            old,
        ],
    );
    let attributes = &mut shop.resource.as_mut().unwrap().attributes;
    attributes.push(kv("host.id", "h-1"));
    attributes.push(kv("deployment.environment", "prod"));
    let request = ExportTraceServiceRequest {
        resource_spans: vec![shop],
    };
    grpc_client(&g).await.export(request).await.unwrap();

    let m = g.metrics().await;
    let calls = |name: &str| {
        find_optional(
            &m,
            "traces_spanmetrics_calls_total",
            &[
                ("service", "shop"),
                ("span_name", name),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("status_code", "STATUS_CODE_UNSET"),
                ("job", "shop"),
            ],
        )
    };
    // The first name of a pattern keeps its spelling; the second is its pattern's.
    assert_eq!(calls("GET /users/1/orders"), Some(1.0));
    assert_eq!(calls("GET /users/<_>/orders"), Some(1.0));
    assert_eq!(calls("GET /healthz"), None, "filtered out");
    assert_eq!(
        find(
            &m,
            "traces_target_info",
            &[
                ("job", "shop"),
                ("deployment_environment", "prod"),
                ("host_id", "h-1")
            ]
        ),
        1.0
    );
    assert_eq!(
        find(
            &m,
            "traces_host_info",
            &[("grafana_host_id", "h-1"), ("host_source", "host.id")]
        ),
        1.0
    );
    assert_eq!(
        find(
            &m,
            "graphgen_spans_filtered_total",
            &[("processor", "span_metrics")]
        ),
        1.0
    );
    assert_eq!(
        find(&m, "graphgen_spans_outside_time_range_total", &[]),
        1.0
    );
    assert_eq!(find(&m, "graphgen_span_names_sanitized_total", &[]), 1.0);
    // One client: no request waited for an engine stage another held.
    assert_eq!(
        find(&m, "graphgen_engine_stage_wait_seconds_total", &[]),
        0.0
    );
    std::fs::remove_dir_all(dir).unwrap();
}

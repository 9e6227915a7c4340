//! Independent OTLP clients against graphgen: the official OpenTelemetry Python SDK (gRPC and
//! HTTP exporters) and the Rust SDK's `opentelemetry-otlp` exporter.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn send_with_python(python: &Path, protocol: &str, endpoint: &str, traces: u32) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/send_topology.py"
    );
    let out = Command::new(python)
        .args([script, protocol, endpoint, &traces.to_string()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python SDK client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn assert_python_topology(g: &Graphgen, traces: f64) {
    let edges: [(&[(&str, &str)], f64); 3] = [
        (&[("client", "web"), ("server", "api")], traces),
        (
            &[
                ("client", "api"),
                ("server", "inventory-db"),
                ("connection_type", "database"),
            ],
            traces,
        ),
        (
            &[
                ("client", "api"),
                ("server", "worker"),
                ("connection_type", "messaging_system"),
            ],
            traces,
        ),
    ];
    eventually(
        Duration::from_secs(15),
        "the Python SDK's edges",
        || async {
            let m = g.metrics().await;
            edges.iter().all(|(labels, n)| {
                find_optional(&m, "traces_service_graph_request_total", labels) == Some(*n)
            }) && find_optional(
                &m,
                "traces_service_graph_request_total",
                &[
                    ("client", "user"),
                    ("server", "web"),
                    ("connection_type", "virtual_node"),
                ],
            ) == Some(traces)
        },
    )
    .await;
    let failed = g
        .value(
            "traces_service_graph_request_failed_total",
            &[("client", "web"), ("server", "api")],
        )
        .await;
    assert_eq!(failed, (traces / 2.0).floor());
}

/// Runs the Python SDK client over `protocol` against a fresh graphgen and checks the graph.
async fn python_sdk_over(protocol: &'static str) {
    let Some(python) = tools::python() else {
        return;
    };
    let g = Graphgen::start(&["--wait=1s"]);
    let endpoint = if protocol == "grpc" {
        g.grpc_url()
    } else {
        g.http_url()
    };
    tokio::task::spawn_blocking(move || send_with_python(&python, protocol, &endpoint, 10))
        .await
        .unwrap();
    assert_python_topology(&g, 10.0).await;
    let received = g
        .value(
            "graphgen_receiver_spans_received_total",
            &[("protocol", protocol)],
        )
        .await;
    assert_eq!(received, 60.0, "6 spans a trace");
    assert_read_in_place(&g).await;
}

/// Every request the SDK sent was read in place by the borrowed reader, none left to prost.
async fn assert_read_in_place(g: &Graphgen) {
    for reason in ["malformed", "duplicate_field", "not_canonical", "too_deep"] {
        let decodes = g
            .value(
                "graphgen_receiver_prost_decodes_total",
                &[("reason", reason)],
            )
            .await;
        assert_eq!(decodes, 0.0, "requests left to prost: {reason}");
    }
}

#[tokio::test]
async fn python_sdk_over_grpc() {
    python_sdk_over("grpc").await;
}

#[tokio::test]
async fn python_sdk_over_http() {
    python_sdk_over("http").await;
}

/// Two services instrumented with the Rust SDK, exporting through `opentelemetry-otlp`.
async fn send_with_rust_sdk(
    exporter: impl Fn() -> opentelemetry_otlp::SpanExporter,
    traces: usize,
) {
    use opentelemetry::trace::{
        Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    let provider = |service: &'static str| {
        SdkTracerProvider::builder()
            .with_resource(Resource::builder_empty().with_service_name(service).build())
            .with_batch_exporter(exporter())
            .build()
    };
    let (shop, stock) = (provider("shop"), provider("stock"));
    let (shop_tracer, stock_tracer) = (shop.tracer("test"), stock.tracer("test"));
    for i in 0..traces {
        let root = shop_tracer
            .span_builder("GET /buy")
            .with_kind(SpanKind::Server)
            .start(&shop_tracer);
        let root_cx = Context::current_with_span(root);
        let call = shop_tracer
            .span_builder("GET /stock")
            .with_kind(SpanKind::Client)
            .start_with_context(&shop_tracer, &root_cx);
        let call_cx = root_cx.with_span(call);
        // The remote side continues from the client's span context, as after propagation.
        let remote = Context::new().with_remote_span_context(call_cx.span().span_context().clone());
        let mut served = stock_tracer
            .span_builder("GET /stock")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", "GET")])
            .start_with_context(&stock_tracer, &remote);
        if i % 2 == 0 {
            served.set_status(Status::error("out of stock"));
        }
        served.end();
        call_cx.span().end();
        root_cx.span().end();
    }
    tokio::task::spawn_blocking(move || {
        for p in [shop, stock] {
            p.force_flush().expect("flush");
            p.shutdown().expect("shutdown");
        }
    })
    .await
    .unwrap();
}

async fn assert_rust_topology(g: &Graphgen) {
    eventually(Duration::from_secs(15), "the Rust SDK's edges", || async {
        let m = g.metrics().await;
        find_optional(
            &m,
            "traces_service_graph_request_total",
            &[("client", "shop"), ("server", "stock")],
        ) == Some(4.0)
            && find_optional(
                &m,
                "traces_service_graph_request_total",
                &[
                    ("client", "user"),
                    ("server", "shop"),
                    ("connection_type", "virtual_node"),
                ],
            ) == Some(4.0)
    })
    .await;
    let failed = g
        .value(
            "traces_service_graph_request_failed_total",
            &[("client", "shop"), ("server", "stock")],
        )
        .await;
    assert_eq!(failed, 2.0);
}

/// The exporter `opentelemetry-otlp` builds for `protocol`, aimed at `g`.
fn rust_exporter(g: &Graphgen, protocol: &str) -> impl Fn() -> opentelemetry_otlp::SpanExporter {
    use opentelemetry_otlp::WithExportConfig;
    let (protocol, endpoint) = match protocol {
        "grpc" => ("grpc", g.grpc_url()),
        _ => ("http", g.http_url()),
    };
    move || {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        match protocol {
            "grpc" => builder.with_tonic().with_endpoint(endpoint.clone()).build(),
            _ => builder.with_http().with_endpoint(endpoint.clone()).build(),
        }
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_sdk_over_grpc() {
    let g = Graphgen::start(&["--wait=1s"]);
    send_with_rust_sdk(rust_exporter(&g, "grpc"), 4).await;
    assert_rust_topology(&g).await;
    assert_read_in_place(&g).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_sdk_over_http() {
    let g = Graphgen::start(&["--wait=1s"]);
    send_with_rust_sdk(rust_exporter(&g, "http"), 4).await;
    assert_rust_topology(&g).await;
    assert_read_in_place(&g).await;
}

//! Tenants through a real graphgen process: `X-Scope-OrgID` on both receivers, each tenant's
//! spans forwarded in requests of their own with its header, each tenant's series apart, the
//! bounds and refusals, and the per-tenant overrides file changed while graphgen runs.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use support::*;
use tonic_types::StatusExt;

/// One client → server call of `prefix`-client to `prefix`-server, the server span carrying
/// `attrs`.
fn call(
    prefix: &str,
    attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> ExportTraceServiceRequest {
    let trace: Vec<u8> = [next_id().to_be_bytes(), next_id().to_be_bytes()].concat();
    let (client, server) = (next_id(), next_id());
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                &format!("{prefix}-client"),
                vec![span(&trace, client, None, 3, "GET /", vec![], false)],
            ),
            resource(
                &format!("{prefix}-server"),
                vec![span(&trace, server, Some(client), 2, "GET /", attrs, false)],
            ),
        ],
    }
}

async fn export(
    g: &Graphgen,
    tenant: Option<&str>,
    request: ExportTraceServiceRequest,
) -> Result<(), tonic::Status> {
    let mut client = TraceServiceClient::connect(g.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(request);
    if let Some(tenant) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", tenant.parse().unwrap());
    }
    client.export(request).await.map(drop)
}

async fn post(
    g: &Graphgen,
    tenant: Option<&str>,
    request: &ExportTraceServiceRequest,
) -> reqwest::Response {
    let mut post = reqwest::Client::new()
        .post(g.http_url())
        .header("content-type", "application/x-protobuf");
    if let Some(tenant) = tenant {
        post = post.header("X-Scope-OrgID", tenant);
    }
    post.body(request.encode_to_vec()).send().await.unwrap()
}

/// The scrape of one tenant (`/metrics?tenant=`), or the default one's (`/metrics`).
async fn scrape(g: &Graphgen, tenant: Option<&str>) -> (u16, Vec<Sample>) {
    let query = tenant.map_or(String::new(), |t| format!("?tenant={t}"));
    let response = reqwest::get(format!("http://{}/metrics{query}", g.admin))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, parse_exposition(&response.text().await.unwrap()))
}

fn edges(samples: &[Sample]) -> Vec<(String, String)> {
    let mut edges: Vec<(String, String)> = samples
        .iter()
        .filter(|s| s.name == "traces_service_graph_request_total")
        .map(|s| (s.labels["client"].clone(), s.labels["server"].clone()))
        .collect();
    edges.sort();
    edges
}

#[tokio::test]
async fn each_tenant_is_forwarded_with_its_header_and_counted_apart() {
    let sink = Sink::default();
    let port = free_port();
    let _server = sink.serve(port).await;
    let g = Graphgen::start(&[
        &format!("--traces-endpoint=http://127.0.0.1:{port}"),
        "--inject-tenant-id-as=tenant",
        // Large batches: only the tenant boundary keeps requests apart.
        "--export-batch-spans=100000",
    ]);
    for _ in 0..5 {
        export(&g, Some("team-a"), call("a", vec![])).await.unwrap();
        assert_eq!(
            post(&g, Some("team-b"), &call("b", vec![])).await.status(),
            200
        );
        export(&g, None, call("plain", vec![])).await.unwrap();
    }
    eventually(Duration::from_secs(10), "every span forwarded", || async {
        sink.count() == 30
    })
    .await;

    // Each forwarded request is one tenant's, with that tenant's header (none for the
    // default tenant, `single-tenant`, as Tempo's own generator leaves it out).
    let forwarded = sink.tenants.lock().unwrap().clone();
    assert!(!forwarded.is_empty());
    for (header, services) in &forwarded {
        let prefix = match header.as_deref() {
            Some("team-a") => "a-",
            Some("team-b") => "b-",
            None => "plain-",
            other => panic!("unexpected header {other:?}"),
        };
        assert!(
            services.iter().all(|s| s.starts_with(prefix)),
            "a request with header {header:?} holds {services:?}"
        );
    }

    // Each tenant's series: only its own edge, with the injected label.
    let (_, a) = scrape(&g, Some("team-a")).await;
    assert_eq!(edges(&a), vec![("a-client".into(), "a-server".into())]);
    assert_eq!(
        find(
            &a,
            "traces_service_graph_request_total",
            &[
                ("client", "a-client"),
                ("server", "a-server"),
                ("tenant", "team-a")
            ]
        ),
        5.0
    );
    let (_, b) = scrape(&g, Some("team-b")).await;
    assert_eq!(edges(&b), vec![("b-client".into(), "b-server".into())]);
    let (_, plain) = scrape(&g, None).await;
    assert_eq!(
        edges(&plain),
        vec![("plain-client".into(), "plain-server".into())]
    );
    assert_eq!(
        find(
            &plain,
            "graphgen_tenant_spans_received_total",
            &[("tenant", "team-a")]
        ),
        10.0
    );
    assert_eq!(find(&plain, "graphgen_tenants", &[]), 3.0);
    let (status, _) = scrape(&g, Some("team-z")).await;
    assert_eq!(status, 404, "a tenant that sent nothing");

    // The live map, per tenant: `?tenant=` on the API and the page, its links keeping it.
    let map_edges = |graph: serde_json::Value| -> Vec<(String, String)> {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["source"].as_str().unwrap().to_string(),
                    e["target"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let api = |query: &'static str| {
        let admin = g.admin;
        async move {
            let response = reqwest::get(format!("http://{admin}/api/graph{query}"))
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (_, a) = api("?tenant=team-a&window=1m").await;
    assert_eq!(
        map_edges(serde_json::from_str(&a).unwrap()),
        vec![("a-client".into(), "a-server".into())]
    );
    let (_, plain) = api("?window=1m").await;
    assert_eq!(
        map_edges(serde_json::from_str(&plain).unwrap()),
        vec![("plain-client".into(), "plain-server".into())]
    );
    // A tenant without an engine here has an empty map (its edges may be on peers); an id
    // that cannot be a tenant's is a 400.
    let (status, nobody) = api("?tenant=team-z").await;
    assert_eq!(status, 200);
    assert!(map_edges(serde_json::from_str(&nobody).unwrap()).is_empty());
    assert_eq!(api("?tenant=a%2Fb").await.0, 400);
    let page = reqwest::get(format!("http://{}/graph?tenant=team-b", g.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("b-server") && !page.contains("\"a-server"),
        "{page}"
    );
    assert!(
        page.contains("api/graph?tenant=team-b&#38;window=5m"),
        "links keep the tenant: {page}"
    );
}

/// What a push carried: its `X-Scope-OrgID` and the `(client, server, tenant label)` of its
/// service-graph request counters.
type Pushed = (Option<String>, Vec<(String, String, String)>);

/// Every push's way (`otlp`, `remote_write`), its `X-Team` header (set by a tenant's
/// `remote_write_headers`), and what it carried.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Option<String>, Pushed)>>>;

/// A metrics endpoint for both pushes (OTLP and remote write) that records what each carried.
async fn metrics_sink() -> (String, Seen) {
    use std::io::Read;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let header = |h: &axum::http::HeaderMap, name: &str| {
        h.get(name).map(|v| v.to_str().unwrap().to_string())
    };
    let otlp = {
        let seen = seen.clone();
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let mut raw = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut raw)
                    .unwrap();
                let request = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(&raw[..]).unwrap();
                use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                let mut edges = Vec::new();
                for m in request
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .filter(|m| m.name == "traces_service_graph_request_total")
                {
                    if let Some(Data::Sum(sum)) = &m.data {
                        for p in &sum.data_points {
                            let get = |k: &str| {
                                p.attributes
                                    .iter()
                                    .find(|a| a.key == k)
                                    .and_then(|a| a.value.as_ref()?.value.as_ref())
                                    .map(|v| match v {
                                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => s.clone(),
                                        _ => String::new(),
                                    })
                                    .unwrap_or_default()
                            };
                            edges.push((get("client"), get("server"), get("tenant")));
                        }
                    }
                }
                seen.lock().unwrap().push((
                    "otlp",
                    header(&headers, "x-team"),
                    (header(&headers, "x-scope-orgid"), edges),
                ));
                ""
            }
        }
    };
    let write = {
        let seen = seen.clone();
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                let request =
                    graphgen::export::remote_write::prompb::WriteRequest::decode(&raw[..]).unwrap();
                let edges = request
                    .timeseries
                    .iter()
                    .filter(|ts| {
                        ts.labels.iter().any(|l| {
                            l.name == "__name__" && l.value == "traces_service_graph_request_total"
                        })
                    })
                    .map(|ts| {
                        let get = |k: &str| {
                            ts.labels
                                .iter()
                                .find(|l| l.name == k)
                                .map(|l| l.value.clone())
                                .unwrap_or_default()
                        };
                        (get("client"), get("server"), get("tenant"))
                    })
                    .collect();
                seen.lock().unwrap().push((
                    "remote_write",
                    header(&headers, "x-team"),
                    (header(&headers, "x-scope-orgid"), edges),
                ));
                ""
            }
        }
    };
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(otlp))
        .route("/api/v1/write", axum::routing::post(write));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

/// Both pushes send each tenant's series in requests of their own, with its header (none for
/// `single-tenant`) and, with `--inject-tenant-id-as`, its label.
#[tokio::test]
async fn each_tenant_s_metrics_are_pushed_apart_with_its_header_and_label() {
    let (base, seen) = metrics_sink().await;
    let g = Graphgen::start(&[
        &format!("--metrics-endpoint={base}/v1/metrics"),
        &format!("--remote-write-endpoint={base}/api/v1/write"),
        "--flush-interval=200ms",
        "--inject-tenant-id-as=tenant",
    ]);
    export(&g, Some("team-a"), call("a", vec![])).await.unwrap();
    export(&g, Some("team-b"), call("b", vec![])).await.unwrap();
    export(&g, None, call("plain", vec![])).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "every tenant pushed both ways",
        || async {
            let seen = seen.lock().unwrap();
            ["otlp", "remote_write"].iter().all(|way| {
                seen.iter()
                    .filter(|(w, _, (_, edges))| w == way && !edges.is_empty())
                    .count()
                    >= 3
            })
        },
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    let mut tenants_seen = std::collections::BTreeSet::new();
    for (way, _, (header, edges)) in seen.iter().filter(|(_, _, (_, e))| !e.is_empty()) {
        let (prefix, tenant) = match header.as_deref() {
            Some("team-a") => ("a-", "team-a"),
            Some("team-b") => ("b-", "team-b"),
            None => ("plain-", "single-tenant"),
            other => panic!("{way}: unexpected header {other:?}"),
        };
        for (client, server, label) in edges {
            assert!(
                client.starts_with(prefix) && server.starts_with(prefix),
                "{way}: {header:?} carried {client} → {server}"
            );
            assert_eq!(label, tenant, "{way}: the injected label");
        }
        tenants_seen.insert((*way, tenant));
    }
    assert_eq!(tenants_seen.len(), 6, "{tenants_seen:?}");
}

/// Tempo's per-tenant push overrides: a tenant's `remote_write_headers` go with its remote
/// writes only, and `disable_collection` pushes nothing of it.
#[tokio::test]
async fn a_tenant_s_push_overrides_shape_only_its_pushes() {
    let (base, seen) = metrics_sink().await;
    let dir = std::env::temp_dir().join(format!("graphgen-push-overrides-{}", next_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("overrides.yaml");
    std::fs::write(
        &file,
        "overrides:\n  team-a:\n    metrics_generator:\n      remote_write_headers: {X-Team: a}\n  team-b:\n    metrics_generator:\n      disable_collection: true\n",
    )
    .unwrap();
    let g = Graphgen::start(&[
        &format!("--metrics-endpoint={base}/v1/metrics"),
        &format!("--remote-write-endpoint={base}/api/v1/write"),
        "--remote-write-headers=X-Team=everyone",
        "--flush-interval=200ms",
        "--per-tenant-override-config",
        file.to_str().unwrap(),
    ]);
    export(&g, Some("team-a"), call("a", vec![])).await.unwrap();
    export(&g, Some("team-b"), call("b", vec![])).await.unwrap();
    export(&g, None, call("plain", vec![])).await.unwrap();
    let carried = |seen: &[(&str, Option<String>, Pushed)], way: &str, prefix: &str| {
        seen.iter()
            .filter(|(w, _, (_, edges))| {
                *w == way && edges.iter().any(|(c, _, _)| c.starts_with(prefix))
            })
            .map(|(_, team, _)| team.clone())
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(10),
        "team-a and the default pushed",
        || async {
            let seen = seen.lock().unwrap();
            ["otlp", "remote_write"].iter().all(|way| {
                !carried(&seen, way, "a-").is_empty() && !carried(&seen, way, "plain-").is_empty()
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    let a = carried(&seen, "remote_write", "a-");
    assert!(
        a.iter().all(|t| t.as_deref() == Some("a")),
        "team-a's header wins: {a:?}"
    );
    let plain = carried(&seen, "remote_write", "plain-");
    assert!(
        plain.iter().all(|t| t.as_deref() == Some("everyone")),
        "{plain:?}"
    );
    assert!(
        carried(&seen, "otlp", "b-").is_empty() && carried(&seen, "remote_write", "b-").is_empty(),
        "team-b's collection is disabled"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_invalid_or_one_too_many_tenant_is_refused_with_a_clear_error() {
    let g = Graphgen::start(&["--require-tenant", "--max-tenants=2"]);
    // No header: UNAUTHENTICATED / 401, as Tempo's auth middleware.
    let status = export(&g, None, call("x", vec![])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("X-Scope-OrgID") || status.message().contains("x-scope-orgid")
    );
    let response = post(&g, None, &call("x", vec![])).await;
    assert_eq!(response.status(), 401);
    // Not a tenant id: INVALID_ARGUMENT / 400, naming the character.
    let status = export(&g, Some("a/b"), call("x", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let response = post(&g, Some("<b>"), &call("x", vec![])).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("'<'"));
    // The default tenant and team-a fill --max-tenants=2: team-b waits, told when to retry.
    export(&g, Some("team-a"), call("a", vec![])).await.unwrap();
    let status = export(&g, Some("team-b"), call("b", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "retryable");
    let response = post(&g, Some("team-b"), &call("b", vec![])).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    export(&g, Some("team-a"), call("a", vec![])).await.unwrap();

    let m = g.metrics().await;
    let requests = |protocol: &str, outcome: &str| {
        find(
            &m,
            "graphgen_receiver_requests_total",
            &[("protocol", protocol), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("grpc", "tenant_missing"), 1.0);
    assert_eq!(requests("http", "tenant_missing"), 1.0);
    assert_eq!(requests("grpc", "tenant_invalid"), 1.0);
    assert_eq!(requests("http", "tenant_invalid"), 1.0);
    assert_eq!(requests("grpc", "tenant_limit"), 1.0);
    assert_eq!(requests("http", "tenant_limit"), 1.0);
    assert_eq!(find(&m, "graphgen_tenants_refused_total", &[]), 2.0);
    assert_eq!(
        find(
            &m,
            "graphgen_tenant_spans_received_total",
            &[("tenant", "team-a")]
        ),
        4.0
    );
}

#[tokio::test]
async fn an_overrides_file_changed_while_running_applies_and_a_broken_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("graphgen-overrides-{}", next_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("overrides.yaml");
    let region = "overrides:\n  team-a:\n    metrics_generator:\n      processor:\n        service_graphs:\n          dimensions: [region]\n";
    std::fs::write(&file, region).unwrap();
    let g = Graphgen::start(&[
        "--per-tenant-override-config",
        file.to_str().unwrap(),
        "--per-tenant-override-period=200ms",
    ]);
    let attrs = || vec![kv("region", "eu"), kv("zone", "eu-1a")];
    export(&g, Some("team-a"), call("a", attrs()))
        .await
        .unwrap();
    export(&g, Some("team-b"), call("b", attrs()))
        .await
        .unwrap();
    let labelled = |samples: &[Sample], label: &str| {
        samples
            .iter()
            .filter(|s| s.name == "traces_service_graph_request_total")
            .any(|s| s.labels.contains_key(label))
    };
    eventually(Duration::from_secs(10), "team-a's edge", || async {
        labelled(&scrape(&g, Some("team-a")).await.1, "region")
    })
    .await;
    assert!(
        !labelled(&scrape(&g, Some("team-b")).await.1, "region"),
        "team-b has no overrides"
    );

    // Read again every 200 ms, the unchanged file changes nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(g.value("graphgen_overrides_reloads_total", &[]).await, 0.0);

    // Another dimension and a series bound for team-a; the file is read again, no restart.
    let zone = "overrides:\n  team-a:\n    metrics_generator:\n      max_active_series: 1\n      processor:\n        service_graphs:\n          dimensions: [zone]\n";
    std::fs::write(&file, zone).unwrap();
    eventually(Duration::from_secs(10), "the reload", || async {
        g.value("graphgen_overrides_reloads_total", &[]).await == 1.0
    })
    .await;
    for _ in 0..3 {
        export(&g, Some("team-a"), call("a", attrs()))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "team-a's new label", || async {
        labelled(&scrape(&g, Some("team-a")).await.1, "zone")
    })
    .await;
    let (_, a) = scrape(&g, Some("team-a")).await;
    assert!(!labelled(&a, "region"), "its engine was rebuilt");
    // One label set a processor: span metrics keep one of the two services, the other's
    // updates are refused and counted.
    let services: std::collections::BTreeSet<&str> = a
        .iter()
        .filter(|s| s.name == "traces_spanmetrics_calls_total")
        .map(|s| s.labels["service"].as_str())
        .collect();
    assert_eq!(services.len(), 1, "{services:?}");
    assert!(
        g.value(
            "graphgen_series_refused_total",
            &[("processor", "span_metrics")]
        )
        .await
            > 0.0
    );

    // A broken file is refused with a message; the overrides in force stay.
    std::fs::write(&file, "overrides:\n  team-a: [not, a, map\n").unwrap();
    eventually(Duration::from_secs(10), "the refusal", || async {
        g.value("graphgen_overrides_refused_total", &[]).await == 1.0
    })
    .await;
    assert!(
        g.logs().contains("per-tenant overrides not reloaded"),
        "{}",
        g.logs()
    );
    // One that names a dimension mapping colliding with a dimension: refused too.
    std::fs::write(&file, "overrides:\n  team-a:\n    metrics_generator:\n      processor:\n        span_metrics:\n          dimensions: [target]\n          dimension_mappings: [{name: target, source_labels: [a]}]\n").unwrap();
    eventually(Duration::from_secs(10), "the second refusal", || async {
        g.value("graphgen_overrides_refused_total", &[]).await == 2.0
    })
    .await;
    export(&g, Some("team-a"), call("a2", attrs()))
        .await
        .unwrap();
    assert_eq!(g.value("graphgen_overrides_reloads_total", &[]).await, 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_broken_overrides_file_stops_the_start_with_its_reason() {
    let dir = std::env::temp_dir().join(format!("graphgen-overrides-bad-{}", next_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("overrides.yaml");
    std::fs::write(&file, "overrides:\n  \"a/b\":\n    metrics_generator: {}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graphgen"))
        .args(["--per-tenant-override-config", file.to_str().unwrap()])
        .args([
            "--otlp-grpc-addr=127.0.0.1:0",
            "--otlp-http-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a/b") && stderr.contains("'/'"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

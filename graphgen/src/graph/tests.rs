//! One table row per rule of the service-graph processor.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

const MS: u64 = 1_000_000;
const NOW: u64 = 1_000_000 * 1_000 * MS;

fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.to_string())),
            }),
            ..Default::default()
        })
        .collect()
}

/// A span: `kind` 2 server, 3 client, 4 producer, 5 consumer; ids are single bytes repeated.
struct S {
    service: Option<&'static str>,
    resource: &'static [(&'static str, &'static str)],
    kind: i32,
    span: u8,
    parent: u8,
    start_ms: u64,
    end_ms: u64,
    error: bool,
    attrs: &'static [(&'static str, &'static str)],
}

const fn s(service: &'static str, kind: i32, span: u8, parent: u8) -> S {
    S {
        service: Some(service),
        resource: &[],
        kind,
        span,
        parent,
        start_ms: 0,
        end_ms: 100,
        error: false,
        attrs: &[],
    }
}

fn batch(spans: &[S]) -> Vec<ResourceSpans> {
    spans
        .iter()
        .map(|sp| {
            let mut resource = attrs(sp.resource);
            if let Some(name) = sp.service {
                resource.extend(attrs(&[("service.name", name)]));
            }
            ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![sp.span; 8],
                        parent_span_id: if sp.parent == 0 {
                            vec![]
                        } else {
                            vec![sp.parent; 8]
                        },
                        kind: sp.kind,
                        start_time_unix_nano: NOW + sp.start_ms * MS,
                        end_time_unix_nano: NOW + sp.end_ms * MS,
                        attributes: attrs(sp.attrs),
                        status: Some(Status {
                            code: if sp.error { 2 } else { 0 },
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect()
}

/// `(metric, labels, value)`.
type Want = (&'static str, Vec<(&'static str, &'static str)>, f64);

struct Case {
    name: &'static str,
    config: fn(&mut Config),
    spans: Vec<S>,
    /// `(metric, labels, value)` that must be present.
    want: Vec<Want>,
    /// Series of `traces_service_graph_request_total` in all.
    edges: usize,
    expired: &'static [(&'static str, u64)],
}

fn none(_: &mut Config) {}

fn policies(json: &str) -> Vec<crate::filter::FilterPolicy> {
    serde_json::from_str(json).expect("valid policies")
}

fn exclude_health_checks() -> Vec<crate::filter::FilterPolicy> {
    policies(
        r#"[{"exclude": {"match_type": "regex", "attributes": [{"key": "span.http.route", "value": "^/health"}]}}]"#,
    )
}

fn run(case: &Case) -> (Vec<crate::series::Sample>, ServiceGraph) {
    let mut config = Config::default();
    (case.config)(&mut config);
    let wait = config.wait.as_nanos() as u64;
    let mut graph = ServiceGraph::new(config).unwrap();
    graph.push_batches(&batch(&case.spans), NOW);
    graph.expire(NOW + wait);
    let samples = graph.families(0).iter().flat_map(|f| f.samples()).collect();
    (samples, graph)
}

#[test]
fn service_graph_rules() {
    let cases = vec![
        Case {
            name: "client and server spans pair into one edge",
            config: none,
            spans: vec![s("shop", 3, 1, 9), s("cart", 2, 2, 1)],
            want: vec![
                (
                    "traces_service_graph_request_total",
                    vec![("client", "shop"), ("server", "cart")],
                    1.0,
                ),
                (
                    "traces_service_graph_request_server_seconds_sum",
                    vec![("client", "shop"), ("server", "cart")],
                    0.1,
                ),
            ],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "the server span may arrive first",
            config: none,
            spans: vec![s("cart", 2, 2, 1), s("shop", 3, 1, 9)],
            want: vec![(
                "traces_service_graph_request_total",
                vec![("client", "shop"), ("server", "cart")],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "producer and consumer make a messaging edge with its own latency",
            config: |c| c.enable_messaging_system_latency_histogram = true,
            spans: vec![
                S {
                    end_ms: 100,
                    ..s("shop", 4, 1, 9)
                },
                S {
                    start_ms: 350,
                    end_ms: 400,
                    ..s("mailer", 5, 2, 1)
                },
            ],
            want: vec![
                (
                    "traces_service_graph_request_total",
                    vec![
                        ("client", "shop"),
                        ("server", "mailer"),
                        ("connection_type", "messaging_system"),
                    ],
                    1.0,
                ),
                (
                    "traces_service_graph_request_messaging_system_seconds_sum",
                    vec![
                        ("client", "shop"),
                        ("server", "mailer"),
                        ("connection_type", "messaging_system"),
                    ],
                    0.25,
                ),
            ],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "a database client span completes alone, named by peer.service first",
            config: none,
            spans: vec![S {
                attrs: &[
                    ("db.name", "orders"),
                    ("server.address", "db1"),
                    ("peer.service", "pg"),
                ],
                ..s("shop", 3, 1, 9)
            }],
            want: vec![(
                "traces_service_graph_request_server_seconds_count",
                vec![
                    ("client", "shop"),
                    ("server", "pg"),
                    ("connection_type", "database"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "database named by server.address",
            config: none,
            spans: vec![S {
                attrs: &[
                    ("db.system", "postgresql"),
                    ("server.address", "db1"),
                    ("network.peer.address", "10.0.0.1"),
                ],
                ..s("shop", 3, 1, 9)
            }],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "shop"),
                    ("server", "db1"),
                    ("connection_type", "database"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "database named by network peer address and port",
            config: none,
            spans: vec![S {
                attrs: &[
                    ("db.system", "postgresql"),
                    ("network.peer.address", "10.0.0.1"),
                    ("network.peer.port", "5432"),
                ],
                ..s("shop", 3, 1, 9)
            }],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "shop"),
                    ("server", "10.0.0.1:5432"),
                    ("connection_type", "database"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "database named by its name, db.namespace before db.system",
            config: none,
            spans: vec![S {
                attrs: &[("db.system", "postgresql"), ("db.namespace", "orders")],
                ..s("shop", 3, 1, 9)
            }],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "shop"),
                    ("server", "orders"),
                    ("connection_type", "database"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "an unmatched root server span gets the virtual client user",
            config: |c| c.enable_virtual_node_label = true,
            spans: vec![s("web", 2, 1, 0)],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "user"),
                    ("server", "web"),
                    ("connection_type", "virtual_node"),
                    ("virtual_node", "client"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "a root server span with a peer attribute names its client",
            config: none,
            spans: vec![S {
                attrs: &[("peer.service", "mobile-app")],
                ..s("web", 2, 1, 0)
            }],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "mobile-app"),
                    ("server", "web"),
                    ("connection_type", "virtual_node"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "an unmatched client span with a peer attribute gets a virtual server",
            config: |c| c.enable_virtual_node_label = true,
            spans: vec![S {
                attrs: &[("peer.service", "stripe")],
                ..s("pay", 3, 1, 9)
            }],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "pay"),
                    ("server", "stripe"),
                    ("connection_type", "virtual_node"),
                    ("virtual_node", "server"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "peer attributes are read from span attributes only",
            config: none,
            spans: vec![S {
                resource: &[("peer.service", "stripe")],
                ..s("pay", 3, 1, 9)
            }],
            want: vec![],
            edges: 0,
            expired: &[("SPAN_KIND_CLIENT", 1)],
        },
        Case {
            name: "unmatched spans without hints expire, counted by kind",
            config: none,
            spans: vec![s("pay", 3, 1, 9), s("cart", 2, 2, 5), s("mq", 5, 3, 6)],
            want: vec![],
            edges: 0,
            expired: &[
                ("SPAN_KIND_SERVER", 1),
                ("SPAN_KIND_CLIENT", 1),
                ("SPAN_KIND_CONSUMER", 1),
            ],
        },
        Case {
            name: "an edge fails if either side failed",
            config: none,
            spans: vec![
                s("shop", 3, 1, 9),
                S {
                    error: true,
                    ..s("cart", 2, 2, 1)
                },
                S {
                    error: true,
                    ..s("shop", 3, 3, 9)
                },
                s("cart", 2, 4, 3),
                s("shop", 3, 5, 9),
                s("cart", 2, 6, 5),
            ],
            want: vec![
                (
                    "traces_service_graph_request_total",
                    vec![("client", "shop"), ("server", "cart")],
                    3.0,
                ),
                (
                    "traces_service_graph_request_failed_total",
                    vec![("client", "shop"), ("server", "cart")],
                    2.0,
                ),
            ],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "resources without service.name and internal spans are skipped",
            config: none,
            spans: vec![
                S {
                    service: None,
                    ..s("x", 3, 1, 9)
                },
                s("cart", 2, 2, 1),
                s("shop", 1, 3, 9),
            ],
            want: vec![],
            edges: 0,
            expired: &[("SPAN_KIND_SERVER", 1)],
        },
        Case {
            name: "dimensions: resource attributes win, names are sanitized, later span overwrites",
            config: |c| c.dimensions = vec!["http.request.method".into(), "tier".into()],
            spans: vec![
                S {
                    resource: &[("tier", "edge")],
                    attrs: &[("tier", "x"), ("http.request.method", "GET")],
                    ..s("shop", 3, 1, 9)
                },
                S {
                    attrs: &[("http.request.method", "POST")],
                    ..s("cart", 2, 2, 1)
                },
            ],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "shop"),
                    ("server", "cart"),
                    ("http_request_method", "POST"),
                    ("tier", "edge"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "client/server prefix keeps both sides' values",
            config: |c| {
                c.dimensions = vec!["http.request.method".into()];
                c.enable_client_server_prefix = true;
            },
            spans: vec![
                S {
                    attrs: &[("http.request.method", "GET")],
                    ..s("shop", 3, 1, 9)
                },
                S {
                    attrs: &[("http.request.method", "POST")],
                    ..s("cart", 2, 2, 1)
                },
            ],
            want: vec![(
                "traces_service_graph_request_total",
                vec![
                    ("client", "shop"),
                    ("server", "cart"),
                    ("client_http_request_method", "GET"),
                    ("server_http_request_method", "POST"),
                ],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "histogram buckets are configurable",
            config: |c| c.histogram_buckets = vec![0.05, 0.5],
            spans: vec![s("shop", 3, 1, 9), s("cart", 2, 2, 1)],
            want: vec![
                (
                    "traces_service_graph_request_client_seconds_bucket",
                    vec![("client", "shop"), ("server", "cart"), ("le", "0.05")],
                    0.0,
                ),
                (
                    "traces_service_graph_request_client_seconds_bucket",
                    vec![("client", "shop"), ("server", "cart"), ("le", "0.5")],
                    1.0,
                ),
                (
                    "traces_service_graph_request_client_seconds_bucket",
                    vec![("client", "shop"), ("server", "cart"), ("le", "+Inf")],
                    1.0,
                ),
            ],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "kind-less spans across three services make parent → child edges",
            config: |c| c.edges_from_parent_child = true,
            spans: vec![
                // ingest (INTERNAL root) → parse (UNSPECIFIED) → store (INTERNAL, failing);
                // ingest → store again (a fan-out); ingest → ingest makes nothing.
                s("ingest", 1, 1, 0),
                S {
                    start_ms: 10,
                    end_ms: 60,
                    ..s("parse", 0, 2, 1)
                },
                S {
                    error: true,
                    start_ms: 20,
                    end_ms: 40,
                    ..s("store", 1, 3, 2)
                },
                S {
                    end_ms: 30,
                    ..s("store", 1, 4, 1)
                },
                s("ingest", 1, 5, 1),
            ],
            want: vec![
                (
                    "traces_service_graph_request_total",
                    vec![("client", "ingest"), ("server", "parse")],
                    1.0,
                ),
                (
                    "traces_service_graph_request_total",
                    vec![("client", "parse"), ("server", "store")],
                    1.0,
                ),
                (
                    "traces_service_graph_request_failed_total",
                    vec![("client", "parse"), ("server", "store")],
                    1.0,
                ),
                (
                    "traces_service_graph_request_total",
                    vec![("client", "ingest"), ("server", "store")],
                    1.0,
                ),
                // The child is the server side, the parent the client side.
                (
                    "traces_service_graph_request_server_seconds_sum",
                    vec![("client", "ingest"), ("server", "parse")],
                    0.05,
                ),
                (
                    "traces_service_graph_request_client_seconds_sum",
                    vec![("client", "ingest"), ("server", "parse")],
                    0.1,
                ),
            ],
            edges: 3,
            expired: &[],
        },
        Case {
            name: "a kind-less child may come before its parent",
            config: |c| c.edges_from_parent_child = true,
            spans: vec![s("worker", 1, 2, 1), s("scheduler", 1, 1, 0)],
            want: vec![(
                "traces_service_graph_request_total",
                vec![("client", "scheduler"), ("server", "worker")],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "without the option kind-less spans make nothing, as in Tempo",
            config: none,
            spans: vec![s("scheduler", 1, 1, 0), s("worker", 1, 2, 1)],
            want: vec![],
            edges: 0,
            expired: &[],
        },
        Case {
            name: "with client and server spans around, nothing is counted twice",
            config: |c| c.edges_from_parent_child = true,
            spans: vec![
                s("shop", 3, 1, 9),
                s("cart", 2, 2, 1),
                // Kind-less children of a server span, in its service and in another: Tempo
                // pairs the server, so neither is a parent–child edge.
                s("cart", 1, 3, 2),
                s("pricing", 1, 4, 2),
                // A kind-less span under a client span of another service: no edge either.
                s("audit", 1, 5, 1),
            ],
            want: vec![(
                "traces_service_graph_request_total",
                vec![("client", "shop"), ("server", "cart")],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
        Case {
            name: "a filtered client span drops its server span too: no edge, nothing expires",
            config: |c| c.filter_policies = exclude_health_checks(),
            spans: vec![
                S {
                    attrs: &[("http.route", "/healthz")],
                    ..s("probe", 3, 1, 9)
                },
                s("cart", 2, 2, 1),
            ],
            want: vec![],
            edges: 0,
            expired: &[],
        },
        Case {
            name: "a server span waiting for a client that is then filtered is dropped",
            config: |c| c.filter_policies = exclude_health_checks(),
            spans: vec![
                s("cart", 2, 2, 1),
                S {
                    attrs: &[("http.route", "/healthz")],
                    ..s("probe", 3, 1, 9)
                },
            ],
            want: vec![],
            edges: 0,
            expired: &[],
        },
        Case {
            name: "a filtered root server span is left out: no virtual-node edge",
            config: |c| {
                c.enable_virtual_node_label = true;
                c.filter_policies = exclude_health_checks();
            },
            spans: vec![S {
                attrs: &[("http.route", "/healthz")],
                ..s("cart", 2, 2, 0)
            }],
            want: vec![],
            edges: 0,
            expired: &[],
        },
        Case {
            name:
                "include by resource attribute: a side from elsewhere drops the edge; others pair",
            config: |c| {
                c.filter_policies = policies(
                    r#"[{"include": {"match_type": "strict", "attributes": [{"key": "resource.env", "value": "prod"}]}}]"#,
                )
            },
            spans: vec![
                S {
                    resource: &[("env", "prod")],
                    ..s("shop", 3, 1, 9)
                },
                S {
                    resource: &[("env", "dev")],
                    ..s("cart", 2, 2, 1)
                },
                S {
                    resource: &[("env", "prod")],
                    ..s("shop", 3, 3, 9)
                },
                S {
                    resource: &[("env", "prod")],
                    ..s("cart", 2, 4, 3)
                },
            ],
            want: vec![(
                "traces_service_graph_request_total",
                vec![("client", "shop"), ("server", "cart")],
                1.0,
            )],
            edges: 1,
            expired: &[],
        },
    ];

    // Every case runs; every mismatch is reported, not only the first.
    let mut problems = Vec::new();
    for case in &cases {
        let (samples, graph) = run(case);
        for (name, labels, value) in &case.want {
            let labels: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let found = samples.iter().find(|s| {
                s.name == *name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|l| s.labels.contains(l))
            });
            match found {
                Some(s) if (s.value - value).abs() < 1e-9 => {}
                Some(s) => {
                    problems.push(format!("{}: {name} = {}, want {value}", case.name, s.value))
                }
                None => problems.push(format!(
                    "{}: no {name}{labels:?} in {samples:#?}",
                    case.name
                )),
            }
        }
        let edges = samples
            .iter()
            .filter(|s| s.name == "traces_service_graph_request_total")
            .count();
        if edges != case.edges {
            problems.push(format!(
                "{}: {edges} edge series, want {}",
                case.name, case.edges
            ));
        }
        let mut want_expired = case.expired.to_vec();
        want_expired.sort();
        // Every pairing kind is listed (from 0); the cases name the non-zero ones.
        let mut got_expired: Vec<(&str, u64)> = graph
            .stats()
            .expired_by_kind()
            .filter(|(_, n)| *n > 0)
            .collect();
        got_expired.sort();
        if got_expired != want_expired {
            problems.push(format!(
                "{}: expired edges {got_expired:?}, want {want_expired:?}",
                case.name
            ));
        }
        if graph.pending_edges() != 0 {
            problems.push(format!("{}: edges left waiting", case.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn span_multiplier_counts_each_span_as_one_over_ratio() {
    let mut graph = ServiceGraph::new(Config {
        span_multiplier_key: Some("ratio".into()),
        ..Config::default()
    })
    .unwrap();
    let mut spans = batch(&[s("shop", 3, 1, 9), s("cart", 2, 2, 1)]);
    for rs in &mut spans {
        rs.scope_spans[0].spans[0].attributes.push(KeyValue {
            key: "ratio".into(),
            value: Some(AnyValue {
                value: Some(Value::DoubleValue(0.1)),
            }),
            ..Default::default()
        });
    }
    graph.push_batches(&spans, NOW);
    let total = graph.families(0)[0].samples()[0].value;
    assert!((total - 10.0).abs() < 1e-9, "total {total}");
}

#[test]
fn a_full_store_drops_and_counts_spans() {
    let mut graph = ServiceGraph::new(Config {
        max_items: 2,
        ..Config::default()
    })
    .unwrap();
    graph.push_batches(
        &batch(&[
            s("a", 3, 1, 9),
            s("a", 3, 2, 9),
            s("a", 3, 3, 9),
            s("a", 3, 4, 9),
        ]),
        NOW,
    );
    assert_eq!(graph.pending_edges(), 2);
    assert_eq!(graph.stats().spans_dropped, 2);
    // Full: a server span of no waiting edge is dropped too (before its attributes are read),
    // and a database call still completes alone.
    let database_call = S {
        attrs: &[("db.name", "orders")],
        ..s("a", 3, 7, 9)
    };
    graph.push_batches(&batch(&[s("b", 2, 8, 3), database_call]), NOW);
    assert_eq!(graph.stats().spans_dropped, 3);
    assert_eq!(graph.stats().edges_completed, 1);
    // The stored ones still complete.
    graph.push_batches(&batch(&[s("b", 2, 5, 1), s("b", 2, 6, 2)]), NOW);
    assert_eq!(graph.stats().edges_completed, 3);
    assert_eq!(graph.pending_edges(), 0);
}

#[test]
fn label_sets_beyond_max_series_are_counted_not_recorded() {
    let mut graph = ServiceGraph::new(Config {
        limits: crate::series::RegistryLimits {
            max_series: 2,
            ..Default::default()
        },
        ..Config::default()
    })
    .unwrap();
    let spans = [
        s("a", 3, 1, 9),
        s("b", 2, 2, 1),
        s("a", 3, 3, 9),
        s("c", 2, 4, 3),
        s("a", 3, 5, 9),
        s("d", 2, 6, 5),
        s("a", 3, 7, 9),
        s("b", 2, 8, 7),
    ];
    graph.push_batches(&batch(&spans), NOW);
    assert_eq!(graph.stats().edges_completed, 4);
    let c = graph.cardinality();
    assert_eq!((c.series, c.refused), (2, 1), "a→d refused; a→b twice fits");
    let totals: Vec<f64> = graph.families(0)[0]
        .samples()
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(totals.iter().sum::<f64>(), 3.0);
}

#[test]
fn edges_wait_exactly_wait_before_expiring() {
    let mut graph = ServiceGraph::new(Config::default()).unwrap();
    graph.push_batches(&batch(&[s("a", 3, 1, 9)]), NOW);
    let wait = Config::default().wait.as_nanos() as u64;
    graph.expire(NOW + wait - 1);
    assert_eq!(graph.pending_edges(), 1);
    graph.expire(NOW + wait);
    assert_eq!(graph.pending_edges(), 0);
    assert_eq!(graph.stats().edges_expired.get(SpanKind::Client), 1);
}

#[test]
fn ids_longer_than_otlp_allows_are_skipped_and_counted() {
    let mut graph = ServiceGraph::new(Config::default()).unwrap();
    let mut spans = batch(&[s("a", 3, 1, 9)]);
    spans[0].scope_spans[0].spans[0].trace_id = vec![1; 17];
    graph.push_batches(&spans, NOW);
    assert_eq!(graph.stats().spans_invalid, 1);
    assert_eq!(graph.pending_edges(), 0);
}

#[test]
fn bad_configs_are_refused() {
    for (config, want) in [
        (
            Config {
                histogram_buckets: vec![1.0, 0.5],
                ..Config::default()
            },
            "strictly increasing",
        ),
        (
            Config {
                histogram_buckets: vec![],
                ..Config::default()
            },
            "strictly increasing",
        ),
        (
            Config {
                max_items: 0,
                ..Config::default()
            },
            "max_items",
        ),
        (
            Config {
                limits: crate::series::RegistryLimits {
                    max_series: 0,
                    ..Default::default()
                },
                ..Config::default()
            },
            "max_series",
        ),
        (
            Config {
                dimensions: vec![" ".into()],
                ..Config::default()
            },
            "empty",
        ),
    ] {
        let err = ServiceGraph::new(config).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn filtered_spans_and_the_edges_they_drop_are_counted_and_forgotten_after_wait() {
    let mut graph = ServiceGraph::new(Config {
        filter_policies: exclude_health_checks(),
        ..Config::default()
    })
    .unwrap();
    let health = S {
        attrs: &[("http.route", "/healthz")],
        ..s("probe", 3, 1, 9)
    };
    graph.push_batches(&batch(&[s("cart", 2, 2, 1), health]), NOW);
    assert_eq!(graph.stats().spans_filtered, 1);
    assert_eq!(graph.stats().edges_filtered, 1, "the waiting server side");
    assert_eq!(graph.filtered_sides(), (1, 0));
    // A retried server span within `wait` is dropped too...
    graph.push_batches(&batch(&[s("cart", 2, 2, 1)]), NOW);
    assert_eq!(graph.stats().edges_filtered, 2);
    assert_eq!(graph.pending_edges(), 0);
    // ...and after it, the filtered side is forgotten: the span waits (and expires) as usual.
    let wait = Config::default().wait.as_nanos() as u64;
    graph.expire(NOW + wait);
    assert_eq!(graph.filtered_sides(), (0, 0));
    graph.push_batches(&batch(&[s("cart", 2, 2, 1)]), NOW + wait);
    assert_eq!(graph.pending_edges(), 1);
}

#[test]
fn filtered_sides_are_bounded_by_max_items() {
    let mut graph = ServiceGraph::new(Config {
        filter_policies: exclude_health_checks(),
        max_items: 2,
        ..Config::default()
    })
    .unwrap();
    let spans: Vec<S> = (1..=3)
        .map(|id| S {
            attrs: &[("http.route", "/healthz")],
            ..s("probe", 3, id, 9)
        })
        .collect();
    graph.push_batches(&batch(&spans), NOW);
    assert_eq!(graph.filtered_sides(), (2, 1));
}

#[test]
fn a_tracestate_sampling_threshold_multiplies_before_the_ratio_attribute() {
    for (tracestate_on, trace_state, want) in [
        (true, "ot=th:c", 4.0),   // sampled with probability 1/4
        (true, "ot=th:zz", 10.0), // malformed: the ratio attribute's 1/0.1
        (false, "ot=th:c", 10.0), // off: Tempo's default
    ] {
        let mut graph = ServiceGraph::new(Config {
            span_multiplier_key: Some("ratio".into()),
            enable_tracestate_span_multiplier: tracestate_on,
            ..Config::default()
        })
        .unwrap();
        let mut spans = batch(&[s("shop", 3, 1, 9), s("cart", 2, 2, 1)]);
        for rs in &mut spans {
            let span = &mut rs.scope_spans[0].spans[0];
            span.trace_state = trace_state.into();
            span.attributes.push(KeyValue {
                key: "ratio".into(),
                value: Some(AnyValue {
                    value: Some(Value::DoubleValue(0.1)),
                }),
                ..Default::default()
            });
        }
        graph.push_batches(&spans, NOW);
        let total = graph.families(0)[0].samples()[0].value;
        assert!((total - want).abs() < 1e-9, "{trace_state}: total {total}");
    }
}

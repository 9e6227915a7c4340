//! The steady-state workload of Tempo's `BenchmarkServiceGraphsPushSpansSteadyState`, shared by
//! our benchmark and the allocation test so both measure the same thing.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::attributes::string_attribute as kv;

fn trace_id(i: u64) -> Vec<u8> {
    let mut id = (0x1020304050607080u64 + i).to_be_bytes().to_vec();
    id.extend((i + 1).to_be_bytes());
    id
}

fn span_id(i: u64) -> Vec<u8> {
    (i + 1).to_be_bytes().to_vec()
}

/// One request of two resources: service `client` with `edges` CLIENT spans (50 ms, peer
/// `server`) and service `server` with one SERVER child (30 ms) of each.
pub fn client_server_request(edges: u64) -> Vec<ResourceSpans> {
    let resource = |name: &str, attr: (&str, &str)| Resource {
        attributes: vec![kv("service.name", name), kv(attr.0, attr.1)],
        ..Default::default()
    };
    let ok = Some(Status {
        code: 1,
        ..Default::default()
    });
    let base = 1_700_000_000_000_000_000u64;
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for i in 0..edges {
        clients.push(Span {
            trace_id: trace_id(i),
            span_id: span_id(i * 2 + 1),
            name: "GET /api/:id".into(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: base + i,
            end_time_unix_nano: base + 50_000_000 + i,
            status: ok.clone(),
            attributes: vec![
                kv("peer.service", "server"),
                kv("beast", &format!("client-{}", i % 4)),
            ],
            ..Default::default()
        });
        servers.push(Span {
            trace_id: trace_id(i),
            span_id: span_id(i * 2 + 2),
            parent_span_id: span_id(i * 2 + 1),
            name: "GET /api/:id".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: base + 10_000_000 + i,
            end_time_unix_nano: base + 40_000_000 + i,
            status: ok.clone(),
            attributes: vec![kv("god", &format!("server-{}", i % 4))],
            ..Default::default()
        });
    }
    let scope = |spans| {
        vec![ScopeSpans {
            spans,
            ..Default::default()
        }]
    };
    vec![
        ResourceSpans {
            resource: Some(resource("client", ("beast", "manticore"))),
            scope_spans: scope(clients),
            ..Default::default()
        },
        ResourceSpans {
            resource: Some(resource("server", ("god", "athena"))),
            scope_spans: scope(servers),
            ..Default::default()
        },
    ]
}

/// The services of the load generator's shop: six, each trace visits some of them.
pub const SHOP_SERVICES: [&str; 6] = [
    "frontend",
    "checkout",
    "cart",
    "payments",
    "inventory",
    "shipping",
];

/// Realistic traces for the load generator: 5 spans a trace across the shop's services, with
/// HTTP and database attributes and fresh random ids. Requests group spans by service, as an
/// SDK's batch does.
pub struct ShopTraces {
    rng: fastrand::Rng,
}

impl ShopTraces {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut id = [0u8; N];
        self.rng.fill(&mut id);
        id[0] |= 1; // never all zero
        id.to_vec()
    }

    /// One request of `traces` traces (`5 × traces` spans), timed just before `now_nanos`.
    pub fn request(&mut self, traces: usize, now_nanos: u64) -> Vec<ResourceSpans> {
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SHOP_SERVICES.len()];
        for _ in 0..traces {
            self.trace(now_nanos, &mut by_service);
        }
        by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(i, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", SHOP_SERVICES[i]),
                        kv("service.version", "1.4.2"),
                        kv("deployment.environment.name", "load"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect()
    }

    /// frontend SERVER → CLIENT → callee SERVER → callee's database CLIENT and a CLIENT call to
    /// an uninstrumented peer (a virtual node); one request in twenty fails.
    fn trace(&mut self, now: u64, by_service: &mut [Vec<Span>]) {
        let trace_id = self.id::<16>();
        let callee = 1 + self.rng.usize(..SHOP_SERVICES.len() - 1);
        let (root, call, served, db, peer) = (
            self.id::<8>(),
            self.id::<8>(),
            self.id::<8>(),
            self.id::<8>(),
            self.id::<8>(),
        );
        let failed = self.rng.u32(..20) == 0;
        let start = now - 200_000_000 + self.rng.u64(..50_000_000);
        let span = |span_id: &[u8],
                    parent: &[u8],
                    kind: SpanKind,
                    name: &str,
                    from: u64,
                    to: u64,
                    attributes: Vec<KeyValue>,
                    error: bool| Span {
            trace_id: trace_id.clone(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start + from,
            end_time_unix_nano: start + to,
            attributes,
            status: Some(Status {
                code: if error { 2 } else { 1 },
                ..Default::default()
            }),
            ..Default::default()
        };
        let route = ["/checkout", "/cart", "/pay", "/stock", "/ship"][callee - 1];
        by_service[0].push(span(
            &root,
            &[],
            SpanKind::Server,
            "GET /shop",
            0,
            120_000_000,
            vec![
                kv("http.request.method", "GET"),
                kv("http.route", "/shop"),
                kv("url.scheme", "https"),
                kv(
                    "http.response.status_code",
                    if failed { "500" } else { "200" },
                ),
            ],
            failed,
        ));
        by_service[0].push(span(
            &call,
            &root,
            SpanKind::Client,
            "POST",
            10_000_000,
            100_000_000,
            vec![
                kv("http.request.method", "POST"),
                kv("server.address", SHOP_SERVICES[callee]),
                kv(
                    "url.full",
                    &format!("http://{}{route}", SHOP_SERVICES[callee]),
                ),
            ],
            failed,
        ));
        by_service[callee].push(span(
            &served,
            &call,
            SpanKind::Server,
            &format!("POST {route}"),
            15_000_000,
            95_000_000,
            vec![
                kv("http.request.method", "POST"),
                kv("http.route", route),
                kv(
                    "http.response.status_code",
                    if failed { "500" } else { "200" },
                ),
            ],
            failed,
        ));
        by_service[callee].push(span(
            &db,
            &served,
            SpanKind::Client,
            "SELECT orders",
            20_000_000,
            40_000_000,
            vec![
                kv("db.system.name", "postgresql"),
                kv("db.namespace", "shop"),
                kv("db.operation.name", "SELECT"),
                kv(
                    "db.query.text",
                    "SELECT id, total FROM orders WHERE customer_id = $1",
                ),
            ],
            false,
        ));
        by_service[callee].push(span(
            &peer,
            &served,
            SpanKind::Client,
            "POST /v1/notify",
            45_000_000,
            90_000_000,
            vec![
                kv("http.request.method", "POST"),
                kv("peer.service", "mailer"),
                kv("url.full", "https://mailer.example/v1/notify"),
            ],
            false,
        ));
    }
}

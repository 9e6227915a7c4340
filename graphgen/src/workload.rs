//! The steady-state workload of Tempo's `BenchmarkServiceGraphsPushSpansSteadyState`, shared by
//! our benchmark and the allocation test so both measure the same thing.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, ResourceSpans, ScopeSpans, Span, Status,
};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

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

//! The borrowed reader against prost, the reference: every view of an accepted request equals
//! prost's decode, and every request the reader accepts prost accepts too.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue as PKeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::reference::assert_agrees_with_prost;
use super::*;

fn kv(key: &str, value: any_value::Value) -> PKeyValue {
    PKeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("a".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn a_span() -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![kv("http.route", any_value::Value::StringValue("/".into()))],
        status: Some(Status {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn every_conformance_request_is_read_in_place_as_prost_decodes_it() {
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut requests = 0;
    for case in std::fs::read_dir(&cases).expect("conformance cases") {
        let input = case.unwrap().path().join("input.json");
        let Ok(text) = std::fs::read_to_string(&input) else {
            continue;
        };
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        for request in file["requests"].as_array().expect("requests") {
            let decoded: ExportTraceServiceRequest =
                serde_json::from_value(request.clone()).unwrap();
            let bytes = decoded.encode_to_vec();
            assert_eq!(assert_agrees_with_prost(&bytes), Ok(()), "{input:?}");
            requests += 1;
        }
    }
    assert!(requests > 100, "only {requests} requests found");
}

/// A field written by hand: `tag`, wire type 2, `body`.
fn length_delimited(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A request of one resource-spans whose only span is `span_bytes`.
fn request_with_span_bytes(span_bytes: &[u8]) -> Vec<u8> {
    let scope_spans = length_delimited(2, span_bytes);
    let resource_spans = length_delimited(2, &scope_spans);
    length_delimited(1, &resource_spans)
}

#[test]
fn what_the_reader_leaves_to_prost_and_why() {
    let span = a_span().encode_to_vec();
    let append = |extra: &[u8]| [span.as_slice(), extra].concat();
    let mut deep = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    };
    for _ in 0..40 {
        deep = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![deep],
            })),
        };
    }
    let mut deep_span = a_span();
    deep_span.attributes.push(PKeyValue {
        key: "deep".into(),
        value: Some(deep),
        ..Default::default()
    });
    let cases: Vec<(&str, Vec<u8>, Fallback)> = vec![
        (
            "a span field prost does not know (prost drops it)",
            request_with_span_bytes(&append(&[0xa8, 0x06, 0x01])), // field 101, varint 1
            Fallback::NotCanonical,
        ),
        (
            "a dropped-attributes count of 0 written out (prost leaves it out)",
            request_with_span_bytes(&append(&[0x50, 0x00])),
            Fallback::NotCanonical,
        ),
        (
            "a length not in its shortest form",
            request_with_span_bytes(&append(&[0x1a, 0x81, 0x00, b'x'])),
            Fallback::NotCanonical,
        ),
        (
            "the name given twice (prost keeps the last)",
            request_with_span_bytes(&append(&[0x2a, 0x01, b'x'])),
            Fallback::DuplicateField,
        ),
        (
            "a span's status given twice (prost merges them)",
            request_with_span_bytes(&append(&length_delimited(15, &[0x18, 0x01]))),
            Fallback::DuplicateField,
        ),
        (
            "a trace state that is not UTF-8",
            request_with_span_bytes(&append(&[0x1a, 0x01, 0xff])),
            Fallback::Malformed,
        ),
        (
            "the trace state as a varint (a wire type prost refuses for a string)",
            request_with_span_bytes(&append(&[0x18, 0x01])),
            Fallback::Malformed,
        ),
        (
            "a span cut short",
            request_with_span_bytes(&span[..span.len() - 3]),
            Fallback::Malformed,
        ),
        (
            "an unknown group (prost skips it)",
            request_with_span_bytes(&append(&[0xa3, 0x06, 0xa4, 0x06])),
            Fallback::Malformed,
        ),
        (
            "attributes nested 40 deep",
            request_of(vec![deep_span]).encode_to_vec(),
            Fallback::TooDeep,
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(assert_agrees_with_prost(&bytes), Err(want), "{what}");
    }

    // Outside spans, what prost drops changes nothing the engine reads: read in place.
    let mut request = request_of(vec![a_span()]).encode_to_vec();
    request.extend_from_slice(&[0xa8, 0x06, 0x01]);
    assert_eq!(assert_agrees_with_prost(&request), Ok(()));
    // A resource attribute whose value has an unknown field before the string: the string.
    let value = [&[0xa8, 0x06, 0x01][..], &length_delimited(1, b"shop")].concat();
    let attribute = [
        length_delimited(1, b"service.name"),
        length_delimited(2, &value),
    ]
    .concat();
    let resource = length_delimited(1, &attribute);
    let span = length_delimited(2, &a_span().encode_to_vec());
    let resource_spans = [length_delimited(1, &resource), length_delimited(2, &span)].concat();
    let request = length_delimited(1, &resource_spans);
    assert_eq!(assert_agrees_with_prost(&request), Ok(()));
    let (batch, _) = BatchBuffers::default().read(&request).unwrap();
    let (resource, _) = batch.resources().next().unwrap();
    let mut service = String::new();
    crate::attributes::copy_into("service.name", &[resource], &mut service);
    assert_eq!(service, "shop");
}

#[test]
fn spans_are_read_in_place_whatever_order_their_fields_come_in() {
    // Attributes apart, with other fields between them: still one list, in order.
    let one = kv("a", any_value::Value::IntValue(1)).encode_to_vec();
    let two = kv("b", any_value::Value::BoolValue(true)).encode_to_vec();
    let span = [
        length_delimited(9, &one),
        length_delimited(1, &[7; 16]),
        length_delimited(9, &two),
        length_delimited(2, &[8; 8]),
    ]
    .concat();
    let bytes = request_with_span_bytes(&span);
    assert_eq!(assert_agrees_with_prost(&bytes), Ok(()));
    let (batch, _) = BatchBuffers::default().read(&bytes).unwrap();
    let keys: Vec<&str> = batch
        .resources()
        .flat_map(|(_, spans)| spans)
        .flat_map(|s| s.attributes.iter().map(|kv| kv.key()))
        .collect();
    assert_eq!(keys, ["a", "b"]);
    // The run of bytes a span's attributes are read from when the index is full.
    let encoded: Vec<&str> = batch.spans[0]
        .0
        .attributes
        .iter()
        .map(|kv| kv.key())
        .collect();
    assert_eq!(encoded, ["a", "b"]);
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        ".{0,8}".prop_map(V::StringValue),
        any::<bool>().prop_map(V::BoolValue),
        any::<i64>().prop_map(V::IntValue),
        any::<f64>().prop_map(V::DoubleValue),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(V::BytesValue),
    ];
    let leaf = prop::option::of(leaf).prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|values| V::ArrayValue(ArrayValue { values })),
            prop::collection::vec(("[a-c]{0,2}", prop::option::of(inner)), 0..3).prop_map(|kvs| {
                V::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| PKeyValue {
                            key,
                            value,
                            ..Default::default()
                        })
                        .collect(),
                })
            }),
        ]
        .prop_map(|v| AnyValue { value: Some(v) })
    })
}

fn attributes() -> impl Strategy<Value = Vec<PKeyValue>> {
    prop::collection::vec(
        ("[a-c.]{0,3}", prop::option::of(any_value())).prop_map(|(key, value)| PKeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..4,
    )
}

fn a_random_span() -> impl Strategy<Value = Span> {
    (
        prop::collection::vec(any::<u8>(), 0..17),
        prop::collection::vec(any::<u8>(), 0..9),
        prop::collection::vec(any::<u8>(), 0..9),
        ".{0,6}",
        -1i32..7,
        any::<u64>(),
        any::<u64>(),
        attributes(),
        prop::option::of((-1i32..4, ".{0,4}")),
        prop::collection::vec(
            (any::<u64>(), ".{0,3}", attributes()).prop_map(|(time, name, attributes)| {
                span::Event {
                    time_unix_nano: time,
                    name,
                    attributes,
                    dropped_attributes_count: 0,
                }
            }),
            0..2,
        ),
    )
        .prop_map(
            |(trace_id, span_id, parent, name, kind, start, end, attributes, status, events)| {
                Span {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    trace_state: if kind == 3 {
                        "ot=th:8".into()
                    } else {
                        String::new()
                    },
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    status: status.map(|(code, message)| Status { code, message }),
                    events,
                    ..Default::default()
                }
            },
        )
}

fn a_random_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    prop::collection::vec(
        (
            prop::option::of(attributes()),
            prop::collection::vec(prop::collection::vec(a_random_span(), 0..3), 0..3),
        )
            .prop_map(|(resource, scopes)| ResourceSpans {
                resource: resource.map(|attributes| Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|spans| ScopeSpans {
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        0..3,
    )
    .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random requests, as prost encodes them: read in place, and seen as prost sees them.
    #[test]
    fn random_requests_are_read_as_prost_decodes_them(request in a_random_request()) {
        let bytes = request.encode_to_vec();
        prop_assert_eq!(assert_agrees_with_prost(&bytes), Ok(()));
    }

    /// The same requests damaged: a byte changed, or cut short. Whatever the reader still
    /// reads, prost decodes, and both see the same.
    #[test]
    fn damaged_requests_are_read_only_when_prost_agrees(
        request in a_random_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = request.encode_to_vec();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
        }
        let _ = assert_agrees_with_prost(&bytes);
    }
}

#[test]
fn a_batch_keeps_every_resource_and_the_spans_retained_in_order() {
    // Each span carries its name as an attribute too, so the index must follow its span.
    let named = |name: &str| Span {
        name: name.into(),
        attributes: vec![
            kv("id", any_value::Value::StringValue(name.into())),
            kv("n", any_value::Value::IntValue(name.len() as i64)),
        ],
        ..a_span()
    };
    let resource = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue(service.into()),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = encode(&[
        resource("a", vec![named("a1"), named("a2")]),
        resource("b", vec![]),
        resource("c", vec![named("c1"), named("c2"), named("c3")]),
    ]);
    let mut buffers = BatchBuffers::default();
    let mut batch = buffers.parse(&Request::trusted(&bytes));
    batch.retain(|span| !matches!(span.name, "a2" | "c1" | "c2"));
    let seen: Vec<(String, Vec<&str>)> = batch
        .resources()
        .map(|(resource, spans)| {
            let mut service = String::new();
            crate::attributes::copy_into("service.name", &[resource], &mut service);
            let names = spans
                .map(|s| {
                    let mut id = String::new();
                    crate::attributes::copy_into("id", &[s.attributes], &mut id);
                    assert_eq!(id, s.name, "the attributes of another span");
                    assert_eq!(s.attributes.iter().count(), 2);
                    s.name
                })
                .collect();
            (service, names)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a".to_string(), vec!["a1"]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec!["c3"]),
        ]
    );
    buffers.recycle(batch);
}

#[test]
fn a_request_of_more_attributes_than_the_index_holds_is_read_the_same_and_the_index_stays_bounded()
{
    // Three spans of 30,000 attributes each and a resource of 10: the third span, and the
    // resource after it, no longer fit in the index and are read from their bytes.
    let many = |n: usize, tag: &str| -> Vec<PKeyValue> {
        (0..n)
            .map(|i| kv(&format!("{tag}{i}"), any_value::Value::IntValue(i as i64)))
            .collect()
    };
    let spans = (0..3)
        .map(|s| Span {
            span_id: vec![1, 2, 3, 4, 5, 6, 7, s + 1],
            attributes: many(30_000, &format!("s{s}.")),
            ..a_span()
        })
        .collect();
    let bytes = encode(&[ResourceSpans {
        resource: Some(Resource {
            attributes: many(10, "r."),
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]);
    assert_agrees_with_prost(&bytes).expect("read in place");
    // Parsed without a check, and read by the check: the same lists indexed.
    for read in [false, true] {
        let mut buffers = BatchBuffers::default();
        let batch = if read {
            buffers.read(&bytes).expect("read in place").0
        } else {
            buffers.parse(&Request::trusted(&bytes))
        };
        let lists: Vec<Attributes<'_>> = batch
            .resources()
            .flat_map(|(resource, spans)| spans.map(|s| s.attributes).chain([resource]))
            .collect();
        let indexed = |list: &Attributes<'_>| matches!(list.0, Repr::Indexed(_));
        assert_eq!(
            lists.iter().map(indexed).collect::<Vec<_>>(),
            [true, true, false, true],
            "read: {read}"
        );
        let mut found = String::new();
        crate::attributes::copy_into("s2.29999", &lists[2..3], &mut found);
        assert_eq!(found, "29999");
        assert!(batch.attributes.capacity() <= BatchBuffers::INDEX_LIMIT);
        buffers.recycle(batch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The inline reading of short fields gives what the general field reader gives, and ends
    /// where it fails, whatever the bytes.
    #[test]
    fn fields_are_read_as_the_general_reader_reads_them(
        parts in prop::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                (0usize..300).prop_map(|n| length_delimited(1, &vec![b'x'; n])),
                (1u32..20, 0usize..200).prop_map(|(tag, n)| length_delimited(tag, &vec![0x80; n])),
                any::<u64>().prop_map(|v| {
                    let mut out = vec![0x18];
                    prost::encoding::encode_varint(v, &mut out);
                    out
                }),
            ],
            0..6,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = parts.concat();
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        let inline: Vec<String> = Fields::new(&bytes).map(|f| format!("{f:?}")).collect();
        let mut general = vec![];
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match check::next_field(&mut rest) {
                Ok(field) => general.push(format!("{:?}", (field.tag, field.raw))),
                Err(_) => break,
            }
        }
        prop_assert_eq!(inline, general);
    }
}

//! The reader checked against prost, the reference: what the tests and the fuzz target
//! (`fuzz/fuzz_targets/wire_reader.rs`) assert of any bytes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as PKeyValue};
use prost::Message;

use super::{id_problem, Attributes, Batch, BatchBuffers, Fallback, Request, Tally, Value};

/// An attribute value as a tree both sides can be compared by.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    String(String),
    Bool(bool),
    Int(i64),
    /// The bits, so NaN equals itself.
    Double(u64),
    Array(Vec<Option<Tree>>),
    KvList(Vec<(String, Option<Tree>)>),
    Bytes(Vec<u8>),
    Index(i32),
}

/// Everything the processors can read of one span, with its resource's attributes.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    resource: Vec<(String, Option<Tree>)>,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    trace_state: String,
    name: String,
    kind: i32,
    start: u64,
    end: u64,
    attributes: Vec<(String, Option<Tree>)>,
    status_code: i32,
    status_message: String,
    encoded_len: usize,
}

fn prost_tree(value: Option<&AnyValue>) -> Option<Tree> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    Some(match value?.value.as_ref()? {
        V::StringValue(s) => Tree::String(s.clone()),
        V::BoolValue(b) => Tree::Bool(*b),
        V::IntValue(i) => Tree::Int(*i),
        V::DoubleValue(d) => Tree::Double(d.to_bits()),
        V::ArrayValue(a) => Tree::Array(a.values.iter().map(|v| prost_tree(Some(v))).collect()),
        V::KvlistValue(l) => Tree::KvList(prost_list(&l.values)),
        V::BytesValue(b) => Tree::Bytes(b.clone()),
        V::StringValueStrindex(i) => Tree::Index(*i),
    })
}

fn prost_list(list: &[PKeyValue]) -> Vec<(String, Option<Tree>)> {
    list.iter()
        .map(|kv| (kv.key.clone(), prost_tree(kv.value.as_ref())))
        .collect()
}

fn view_tree(value: Option<Value<'_>>) -> Option<Tree> {
    Some(match value? {
        Value::String(s) => Tree::String(s.into()),
        Value::Bool(b) => Tree::Bool(b),
        Value::Int(i) => Tree::Int(i),
        Value::Double(d) => Tree::Double(d.to_bits()),
        Value::Array(a) => Tree::Array(a.iter().map(view_tree).collect()),
        Value::KvList(l) => Tree::KvList(view_list(l)),
        Value::Bytes(b) => Tree::Bytes(b.into()),
        Value::StringIndex(i) => Tree::Index(i),
    })
}

fn view_list(list: Attributes<'_>) -> Vec<(String, Option<Tree>)> {
    let seen: Vec<(String, Option<Tree>)> = list
        .iter()
        .map(|kv| (kv.key().into(), view_tree(kv.value())))
        .collect();
    // A look-up finds the first attribute of its key, as a search of prost's list would
    // (every key of a short list; of a long one, its first and last 16, so the check stays
    // linear).
    let sample = if seen.len() <= 256 {
        &seen[..]
    } else {
        &[&seen[..16], &seen[seen.len() - 16..]].concat()[..]
    };
    for (key, _) in sample {
        let first = seen.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let found = list.find(key).map(|kv| view_tree(kv.value()));
        assert_eq!(found.as_ref(), first, "find({key:?})");
    }
    seen
}

fn seen_by_prost(request: &ExportTraceServiceRequest) -> Vec<Seen> {
    let mut seen = vec![];
    for rs in &request.resource_spans {
        let resource = prost_list(rs.resource.as_ref().map_or(&[], |r| &r.attributes));
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            seen.push(Seen {
                resource: resource.clone(),
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                parent_span_id: span.parent_span_id.clone(),
                trace_state: span.trace_state.clone(),
                name: span.name.clone(),
                kind: span.kind,
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
                attributes: prost_list(&span.attributes),
                status_code: span.status.as_ref().map_or(0, |s| s.code),
                status_message: span.status.as_ref().map_or("", |s| &s.message).into(),
                encoded_len: span.encoded_len(),
            });
        }
    }
    seen
}

/// What the processors see of a request read without checking: the batch the engine parses.
fn seen_by_views(request: &Request<'_>) -> Vec<Seen> {
    seen_in(&BatchBuffers::default().parse(request))
}

/// What the processors see of `batch`.
fn seen_in(batch: &Batch<'_>) -> Vec<Seen> {
    let mut seen = vec![];
    for (resource, spans) in batch.resources() {
        let resource = view_list(resource);
        for span in spans {
            seen.push(Seen {
                resource: resource.clone(),
                trace_id: span.trace_id.into(),
                span_id: span.span_id.into(),
                parent_span_id: span.parent_span_id.into(),
                trace_state: span.trace_state.into(),
                name: span.name.into(),
                kind: span.kind,
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
                attributes: view_list(span.attributes),
                status_code: span.status_code,
                status_message: span.status_message.into(),
                encoded_len: span.encoded_len,
            });
        }
    }
    seen
}

/// The reader's promise for any bytes, asserted (it panics where the promise is broken): when
/// it reads them, prost decodes them too and both see the same; prost's re-encoding of whatever
/// prost decodes is read the same as prost. Returns why the reader left `bytes` to prost.
pub fn assert_agrees_with_prost(bytes: &[u8]) -> Result<(), Fallback> {
    let by_prost = ExportTraceServiceRequest::decode(bytes);
    if let Ok(decoded) = &by_prost {
        let canonical = decoded.encode_to_vec();
        // prost's own encoding is read in place, unless nested past the reader's depth.
        match BatchBuffers::default().read(&canonical) {
            Ok((reread, tally)) => {
                assert_eq!(seen_in(&reread), seen_by_prost(decoded));
                assert_eq!(tally, tally_by_prost(decoded));
            }
            Err(fallback) => assert_eq!(fallback, Fallback::TooDeep),
        }
        assert_eq!(
            seen_by_views(&Request::trusted(&canonical)),
            seen_by_prost(decoded)
        );
    }
    let mut buffers = BatchBuffers::default();
    let (read, tally) = buffers.read(bytes)?;
    let decoded = by_prost.expect("what the reader accepts, prost accepts");
    let seen = seen_in(&read);
    assert_eq!(seen, seen_by_prost(&decoded));
    assert_eq!(tally, tally_by_prost(&decoded));
    // The batch the read built is the one a parse of the same bytes builds.
    assert_eq!(seen_by_views(&Request::trusted(bytes)), seen);
    buffers.recycle(read);
    Ok(())
}

fn tally_by_prost(request: &ExportTraceServiceRequest) -> Tally {
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans);
    Tally {
        spans: spans.clone().count(),
        bad_ids: spans
            .filter(|s| id_problem(&s.trace_id, &s.span_id, &s.parent_span_id).is_some())
            .count(),
    }
}

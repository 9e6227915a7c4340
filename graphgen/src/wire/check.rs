//! The one walk over a request that decides whether its views are exact: the schema of every
//! message of `ExportTraceServiceRequest` (opentelemetry-proto 0.33, the types prost decodes)
//! and the rules a request must keep to be read without prost.

use super::{as_str, tag, Attributes, Batch, IndexedList, KeyValue, Raw, Span};

/// Why a request goes to prost instead of being read in place. prost then decides: it decodes
/// the request (and graphgen reads prost's re-encoding), or refuses it with its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// Not protobuf the reader accepts: a truncated or overlong field, a wire type that does
    /// not fit the field, a string that is not UTF-8, or a group.
    Malformed,
    /// A field that is not repeated given twice: prost would merge or overwrite.
    DuplicateField,
    /// Inside a span, something prost's re-encoding would not write the same way: an unknown
    /// field, a default value written out, a number not in its shortest form.
    NotCanonical,
    /// Values nested deeper than the reader follows.
    TooDeep,
}

/// Deepest nesting the reader follows (prost's limit is 100; real attributes nest a few levels).
const MAX_DEPTH: u32 = 32;

/// One field of a message.
pub(super) struct Field<'a> {
    pub tag: u32,
    pub raw: Raw<'a>,
    /// Its key, and its value or length, each in their shortest form.
    pub minimal: bool,
}

/// A varint, and whether it is in its shortest form; the same bounds as prost (at most 10
/// bytes, the tenth at most 1).
#[inline(always)]
fn varint(rest: &mut &[u8]) -> Result<(u64, bool), Fallback> {
    // Most keys and lengths are one byte.
    if let Some((&byte, after)) = rest.split_first() {
        if byte < 0x80 {
            *rest = after;
            return Ok((u64::from(byte), true));
        }
    }
    varint_long(rest)
}

#[inline(never)]
fn varint_long(rest: &mut &[u8]) -> Result<(u64, bool), Fallback> {
    let mut value = 0u64;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(Fallback::Malformed);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *rest = &rest[i + 1..];
            return Ok((value, i == 0 || byte != 0));
        }
    }
    Err(Fallback::Malformed)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], Fallback> {
    if rest.len() < n {
        return Err(Fallback::Malformed);
    }
    let (taken, after) = rest.split_at(n);
    *rest = after;
    Ok(taken)
}

/// Reads the next field off `rest`.
#[inline(always)]
pub(super) fn next_field<'a>(rest: &mut &'a [u8]) -> Result<Field<'a>, Fallback> {
    let (key, key_minimal) = varint(rest)?;
    if key > u64::from(u32::MAX) || key >> 3 == 0 {
        return Err(Fallback::Malformed);
    }
    let tag = (key >> 3) as u32;
    let (raw, minimal) = match key & 7 {
        0 => {
            let (v, minimal) = varint(rest)?;
            (Raw::Varint(v), minimal)
        }
        1 => {
            let b = take(rest, 8)?;
            (
                Raw::Fixed64(u64::from_le_bytes(b.try_into().unwrap())),
                true,
            )
        }
        2 => {
            let (len, minimal) = varint(rest)?;
            let len = usize::try_from(len).map_err(|_| Fallback::Malformed)?;
            (Raw::Bytes(take(rest, len)?), minimal)
        }
        5 => {
            let b = take(rest, 4)?;
            (
                Raw::Fixed32(u32::from_le_bytes(b.try_into().unwrap())),
                true,
            )
        }
        // Groups (3, 4) are left to prost; 6 and 7 are no wire type.
        _ => return Err(Fallback::Malformed),
    };
    Ok(Field {
        tag,
        raw,
        minimal: minimal && key_minimal,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    const ALL: [Msg; 14] = [
        Msg::Request,
        Msg::ResourceSpans,
        Msg::Resource,
        Msg::EntityRef,
        Msg::ScopeSpans,
        Msg::Scope,
        Msg::Span,
        Msg::Event,
        Msg::Link,
        Msg::Status,
        Msg::KeyValue,
        Msg::AnyValue,
        Msg::ArrayValue,
        Msg::KeyValueList,
    ];
    const COUNT: usize = Msg::ALL.len();
}

// `SCHEMA` is indexed by `Msg as usize`: `ALL` must list the messages in their order.
const _: () = {
    let mut i = 0;
    while i < Msg::COUNT {
        assert!(Msg::ALL[i] as usize == i);
        i += 1;
    }
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Bytes,
    Int32,
    Int64,
    Uint32,
    Bool,
    Fixed32,
    Fixed64,
    Double,
    Nested(Msg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cardinality {
    Singular,
    Repeated,
    /// A member of `AnyValue`'s `value` oneof: written even when its value is the default.
    OneOf,
}

/// Every message's fields by tag (all below 17), looked up by index on the hot path.
static SCHEMA: [[Option<(Kind, Cardinality)>; 17]; Msg::COUNT] = {
    let mut table = [[None; 17]; Msg::COUNT];
    let mut m = 0;
    while m < Msg::COUNT {
        let mut tag = 0;
        while tag < 17 {
            table[m][tag] = schema(Msg::ALL[m], tag as u32);
            tag += 1;
        }
        m += 1;
    }
    table
};

/// What field `tag` of `message` is; `None` for a field prost does not know.
#[inline(always)]
fn field_schema(message: Msg, tag: u32) -> Option<(Kind, Cardinality)> {
    SCHEMA[message as usize]
        .get(tag as usize)
        .copied()
        .flatten()
}

/// What field `tag` of `message` is; `None` for a field prost does not know.
const fn schema(message: Msg, tag: u32) -> Option<(Kind, Cardinality)> {
    use Cardinality::{OneOf, Repeated, Singular};
    use Kind::*;
    Some(match (message, tag) {
        (Msg::Request, 1) => (Nested(Msg::ResourceSpans), Repeated),
        (Msg::ResourceSpans, 1) => (Nested(Msg::Resource), Singular),
        (Msg::ResourceSpans, 2) => (Nested(Msg::ScopeSpans), Repeated),
        (Msg::ResourceSpans | Msg::ScopeSpans, 3) => (String, Singular),
        (Msg::Resource, 1) => (Nested(Msg::KeyValue), Repeated),
        (Msg::Resource, 2) => (Uint32, Singular),
        (Msg::Resource, 3) => (Nested(Msg::EntityRef), Repeated),
        (Msg::EntityRef, 1 | 2) => (String, Singular),
        (Msg::EntityRef, 3 | 4) => (String, Repeated),
        (Msg::ScopeSpans, 1) => (Nested(Msg::Scope), Singular),
        (Msg::ScopeSpans, 2) => (Nested(Msg::Span), Repeated),
        (Msg::Scope, 1 | 2) => (String, Singular),
        (Msg::Scope, 3) => (Nested(Msg::KeyValue), Repeated),
        (Msg::Scope, 4) => (Uint32, Singular),
        (Msg::Span, 1 | 2 | 4) => (Bytes, Singular),
        (Msg::Span, 3 | 5) => (String, Singular),
        (Msg::Span, 6) => (Int32, Singular),
        (Msg::Span, 7 | 8) => (Fixed64, Singular),
        (Msg::Span, 9) => (Nested(Msg::KeyValue), Repeated),
        (Msg::Span, 10 | 12 | 14) => (Uint32, Singular),
        (Msg::Span, 11) => (Nested(Msg::Event), Repeated),
        (Msg::Span, 13) => (Nested(Msg::Link), Repeated),
        (Msg::Span, 15) => (Nested(Msg::Status), Singular),
        (Msg::Span, 16) => (Fixed32, Singular),
        (Msg::Event, 1) => (Fixed64, Singular),
        (Msg::Event, 2) => (String, Singular),
        (Msg::Event, 3) => (Nested(Msg::KeyValue), Repeated),
        (Msg::Event, 4) => (Uint32, Singular),
        (Msg::Link, 1 | 2) => (Bytes, Singular),
        (Msg::Link, 3) => (String, Singular),
        (Msg::Link, 4) => (Nested(Msg::KeyValue), Repeated),
        (Msg::Link, 5) => (Uint32, Singular),
        (Msg::Link, 6) => (Fixed32, Singular),
        (Msg::Status, 2) => (String, Singular),
        (Msg::Status, 3) => (Int32, Singular),
        (Msg::KeyValue, 1) => (String, Singular),
        (Msg::KeyValue, 2) => (Nested(Msg::AnyValue), Singular),
        (Msg::KeyValue, 3) => (Int32, Singular),
        (Msg::AnyValue, 1) => (String, OneOf),
        (Msg::AnyValue, 2) => (Bool, OneOf),
        (Msg::AnyValue, 3) => (Int64, OneOf),
        (Msg::AnyValue, 4) => (Double, OneOf),
        (Msg::AnyValue, 5) => (Nested(Msg::ArrayValue), OneOf),
        (Msg::AnyValue, 6) => (Nested(Msg::KeyValueList), OneOf),
        (Msg::AnyValue, 7) => (Bytes, OneOf),
        (Msg::AnyValue, 8) => (Int32, OneOf),
        (Msg::ArrayValue, 1) => (Nested(Msg::AnyValue), Repeated),
        (Msg::KeyValueList, 1) => (Nested(Msg::KeyValue), Repeated),
        _ => return None,
    })
}

/// `bytes` as a `KeyValue`, when the walk of [`message`] would accept it and it is of the
/// commonest shape: a non-empty key, then a value of one string or one integer, every length
/// one byte. `None` says nothing: the message is walked field by field, which decides.
///
/// Why it is exact: keys `0x0a`, `0x12`, `0x0a`/`0x18` are fields 1 and 2 of `KeyValue` and
/// fields 1 (string) and 3 (int64) of `AnyValue`, each once and in their shortest form; one-byte
/// lengths are shortest; the key is not empty (a default written out); a oneof member may be
/// its default. So the message is canonical, with no duplicate, whether in a span or not.
#[inline(always)]
fn short_key_value(bytes: &[u8]) -> Option<KeyValue<'_>> {
    let [0x0a, key_len, rest @ ..] = bytes else {
        return None;
    };
    let key_len = usize::from(*key_len);
    if key_len == 0 || key_len >= 0x80 || rest.len() < key_len {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let [0x12, value_len, value @ ..] = rest else {
        return None;
    };
    if *value_len >= 0x80 || usize::from(*value_len) != value.len() {
        return None;
    }
    let value_ok = match value {
        [0x0a, string_len, string @ ..] => {
            *string_len < 0x80 && usize::from(*string_len) == string.len() && is_utf8(string)
        }
        [0x18, int @ ..] => is_shortest_varint(int),
        _ => false,
    };
    (value_ok && is_utf8(key)).then_some(KeyValue { key, value })
}

/// Checks a `Span` (at `depth`) and reads it in one pass when it is of the commonest shape,
/// handing its attributes to `attributes`; `None` says nothing (and leaves in `attributes`
/// what was handed), and the span is walked by [`message`], which decides. It accepts only
/// what that walk accepts:
/// - every key is one byte (flags' two) and every length one byte, so all are shortest;
/// - every field is one `Span` knows, with the wire type of its kind, and no singular field
///   comes twice;
/// - no singular field holds its default (an empty string or id, a zero): prost would leave it
///   out;
/// - strings are UTF-8; nested messages are checked by [`short_key_value`], or by the walk.
///
/// What it reads is what [`Span::read`] reads of the same bytes.
///
/// It writes into `span` (a default span), where the batch keeps it: a span is too large to
/// copy for nothing.
#[inline(never)]
fn short_span<'a>(
    bytes: &'a [u8],
    depth: u32,
    span: &mut Span<'a>,
    attributes: &mut IndexedList<'_, 'a>,
) -> Option<()> {
    // Spans are at depth 3; a short attribute's value is two deeper.
    if depth + 2 > MAX_DEPTH {
        return None;
    }
    // Where the span's attributes start and end: one run, as in `Span::read`.
    let mut run: Option<(usize, usize)> = None;
    let mut seen = 0u32;
    let mut rest = bytes;
    while let [key, after @ ..] = rest {
        let start = bytes.len() - rest.len();
        rest = after;
        let tag = u32::from(*key >> 3);
        match *key {
            // trace_id, span_id, trace_state, parent_span_id, name, attributes, events, links,
            // status: a length of one byte.
            0x0a | 0x12 | 0x1a | 0x22 | 0x2a | 0x4a | 0x5a | 0x6a | 0x7a => {
                let [len, after @ ..] = rest else {
                    return None;
                };
                let len = usize::from(*len);
                if len >= 0x80 || len > after.len() {
                    return None;
                }
                let (value, after) = after.split_at(len);
                rest = after;
                let ok = match *key {
                    0x0a => {
                        span.trace_id = value;
                        !value.is_empty()
                    }
                    0x12 => {
                        span.span_id = value;
                        !value.is_empty()
                    }
                    0x22 => {
                        span.parent_span_id = value;
                        !value.is_empty()
                    }
                    0x1a | 0x2a => match as_str(value) {
                        Some(text) if !text.is_empty() => {
                            if *key == 0x1a {
                                span.trace_state = text;
                            } else {
                                span.name = text;
                            }
                            true
                        }
                        _ => false,
                    },
                    0x4a => {
                        // The other shapes are pushed out of line: merged here with the short
                        // one, the attribute went through the stack and was read back in loads
                        // the CPU could not forward from its stores (a stall an attribute).
                        if let Some(kv) = short_key_value(value) {
                            attributes.push(kv);
                        } else if walks(value, Msg::KeyValue, depth + 1) {
                            attributes.push_read(value);
                        } else {
                            return None;
                        }
                        let end = bytes.len() - rest.len();
                        run = Some(run.map_or((start, end), |(start, _)| (start, end)));
                        true
                    }
                    0x5a => walks(value, Msg::Event, depth + 1),
                    0x6a => walks(value, Msg::Link, depth + 1),
                    // A status of code 1 or 2 and no message is the commonest.
                    _ => match value {
                        [0x18, code @ (1 | 2)] => {
                            span.status_code = i32::from(*code);
                            true
                        }
                        _ if walks(value, Msg::Status, depth + 1) => {
                            span.read_status(value);
                            true
                        }
                        _ => false,
                    },
                };
                if !ok {
                    return None;
                }
            }
            // kind, dropped attributes, events and links counts: one byte, not zero.
            0x30 | 0x50 | 0x60 | 0x70 => {
                let [value @ 1..0x80, after @ ..] = rest else {
                    return None;
                };
                if *key == 0x30 {
                    span.kind = i32::from(*value);
                }
                rest = after;
            }
            // start and end times: eight bytes, not zero.
            0x39 | 0x41 => {
                let (value, after) = rest.split_first_chunk::<8>()?;
                let time = u64::from_le_bytes(*value);
                if time == 0 {
                    return None;
                }
                if *key == 0x39 {
                    span.start_time_unix_nano = time;
                } else {
                    span.end_time_unix_nano = time;
                }
                rest = after;
            }
            // flags, field 16 (a two-byte key): four bytes, not zero.
            0x85 => {
                let [0x01, after @ ..] = rest else {
                    return None;
                };
                let (value, after) = after.split_first_chunk::<4>()?;
                if *value == [0; 4] {
                    return None;
                }
                rest = after;
            }
            _ => return None,
        }
        let singular = !matches!(*key, 0x4a | 0x5a | 0x6a);
        let bit = if *key == 0x85 {
            1 << 16
        } else {
            u32::from(singular) << tag
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
    }
    if let Some((start, end)) = run {
        span.attributes = Attributes::new(&bytes[start..end], tag::SPAN_ATTRIBUTES);
    }
    span.encoded_len = bytes.len();
    Some(())
}

/// Checks the span in `bytes` (at `depth`) and adds it to `batch`, counting it.
fn span<'a>(
    bytes: &'a [u8],
    depth: u32,
    batch: &mut Batch<'a>,
    tally: &mut Tally,
) -> Result<(), Fallback> {
    batch.spans.push(Default::default());
    let (span, at) = batch.spans.last_mut().expect("just pushed");
    let mut attributes = IndexedList::start(&mut batch.attributes);
    if short_span(bytes, depth, span, &mut attributes).is_some() {
        *at = attributes.finish();
        tally.count_span(span);
    } else {
        attributes.abandon();
        batch.spans.pop();
        message(bytes, Msg::Span, true, depth, batch, tally)?;
        let span = batch.push_read_span(bytes);
        tally.count_span(&span);
    }
    Ok(())
}

/// Whether the walk accepts `bytes` as a `message_type` inside a span, at `depth`.
fn walks(bytes: &[u8], message_type: Msg, depth: u32) -> bool {
    walk_alone(bytes, message_type, true, depth).is_ok()
}

/// The walk of `bytes` as a `message_type` at `depth`, what it reads dropped (it reads only
/// the spans and resources nested in it).
fn walk_alone(bytes: &[u8], message_type: Msg, in_span: bool, depth: u32) -> Result<(), Fallback> {
    message(
        bytes,
        message_type,
        in_span,
        depth,
        &mut Batch::empty(),
        &mut Tally::default(),
    )
}

/// Whether `bytes` is exactly one varint in its shortest form, within prost's bounds.
#[inline(always)]
fn is_shortest_varint(bytes: &[u8]) -> bool {
    match bytes {
        [byte] => *byte < 0x80,
        [init @ .., last] => {
            init.len() < 10
                && *last != 0
                && *last < 0x80
                && (init.len() < 9 || *last <= 1)
                && init.iter().all(|byte| *byte >= 0x80)
        }
        [] => false,
    }
}

/// Whether `bytes` is UTF-8; ASCII, the common case, is tested eight bytes at a time inline,
/// which for the short strings of spans is cheaper than the library's call.
#[inline(always)]
pub(super) fn is_utf8(bytes: &[u8]) -> bool {
    is_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// Whether every byte of `bytes` is below 0x80, eight bytes at a time.
#[inline(always)]
pub(super) fn is_ascii(bytes: &[u8]) -> bool {
    let high = match bytes.as_chunks::<8>() {
        // The tail is the last eight bytes, overlapping the words before it.
        (words @ [.., last], tail) => {
            let last = if tail.is_empty() {
                *last
            } else {
                *bytes.last_chunk::<8>().expect("eight bytes at least")
            };
            words.iter().fold(u64::from_ne_bytes(last), |high, word| {
                high | u64::from_ne_bytes(*word)
            }) & 0x8080_8080_8080_8080
        }
        // Four to seven bytes: the first four and the last four.
        ([], short) => match (short.first_chunk::<4>(), short.last_chunk::<4>()) {
            (Some(first), Some(last)) => {
                u64::from((u32::from_ne_bytes(*first) | u32::from_ne_bytes(*last)) & 0x8080_8080)
            }
            _ => short
                .iter()
                .fold(0, |high, byte| high | u64::from(*byte & 0x80)),
        },
    };
    high == 0
}

/// What the walk counted of a request's spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub spans: usize,
    /// Spans whose ids break OTLP's rules ([`super::id_problem`]).
    pub bad_ids: usize,
}

impl Tally {
    fn count_span(&mut self, span: &Span<'_>) {
        self.spans += 1;
        if super::id_problem(span.trace_id, span.span_id, span.parent_span_id).is_some() {
            self.bad_ids += 1;
        }
    }
}

/// Checks a whole `ExportTraceServiceRequest`, adding its resources and spans to `batch`.
pub(super) fn request<'a>(bytes: &'a [u8], batch: &mut Batch<'a>) -> Result<Tally, Fallback> {
    let mut tally = Tally::default();
    message(bytes, Msg::Request, false, 0, batch, &mut tally)?;
    Ok(tally)
}

/// Walks a `message_type` at `depth`: each span ([`span`]) and each resource's attributes are
/// added to `batch` as they are met.
fn message<'a>(
    bytes: &'a [u8],
    message_type: Msg,
    in_span: bool,
    depth: u32,
    batch: &mut Batch<'a>,
    tally: &mut Tally,
) -> Result<(), Fallback> {
    if depth > MAX_DEPTH {
        return Err(Fallback::TooDeep);
    }
    // Spans and everything in them must be canonical: their size is counted.
    let in_span = in_span || message_type == Msg::Span;
    // Singular fields seen (every tag is below 31); bit 31 is the oneof.
    let mut seen = 0u32;
    // A resource-spans' resource.
    let mut resource: &[u8] = &[];
    let mut rest = bytes;
    while !rest.is_empty() {
        let field = next_field(&mut rest)?;
        if in_span && !field.minimal {
            return Err(Fallback::NotCanonical);
        }
        let Some((kind, cardinality)) = field_schema(message_type, field.tag) else {
            if in_span {
                return Err(Fallback::NotCanonical);
            }
            continue;
        };
        let bit = match cardinality {
            Cardinality::Singular => 1 << field.tag,
            Cardinality::OneOf => 1 << 31,
            Cardinality::Repeated => 0,
        };
        if seen & bit != 0 {
            return Err(Fallback::DuplicateField);
        }
        seen |= bit;
        // prost leaves a singular field at its default value out of its encoding.
        let default_written =
            |is_default: bool| in_span && cardinality == Cardinality::Singular && is_default;
        let canonical = match (kind, field.raw) {
            (Kind::String, Raw::Bytes(b)) => {
                if !is_utf8(b) {
                    return Err(Fallback::Malformed);
                }
                !default_written(b.is_empty())
            }
            (Kind::Bytes, Raw::Bytes(b)) => !default_written(b.is_empty()),
            (Kind::Nested(inner), Raw::Bytes(b)) => {
                match inner {
                    Msg::Span => span(b, depth + 1, batch, tally)?,
                    // Most nested messages are attributes of one short string or integer:
                    // they are checked in one go (the key-value at depth + 1, its value at
                    // depth + 2).
                    Msg::KeyValue if depth + 2 <= MAX_DEPTH && short_key_value(b).is_some() => {}
                    _ => {
                        if inner == Msg::Resource {
                            resource = b;
                        }
                        self::message(b, inner, in_span, depth + 1, batch, tally)?;
                    }
                }
                true
            }
            (Kind::Int32, Raw::Varint(v)) => {
                !default_written(v == 0) && (!in_span || v == (v as i32) as i64 as u64)
            }
            (Kind::Int64, Raw::Varint(v)) => !default_written(v == 0),
            (Kind::Uint32, Raw::Varint(v)) => {
                !default_written(v == 0) && (!in_span || v <= u64::from(u32::MAX))
            }
            (Kind::Bool, Raw::Varint(v)) => !default_written(v == 0) && (!in_span || v <= 1),
            (Kind::Fixed64, Raw::Fixed64(v)) => !default_written(v == 0),
            (Kind::Double, Raw::Fixed64(v)) => !default_written(f64::from_bits(v) == 0.0),
            (Kind::Fixed32, Raw::Fixed32(v)) => !default_written(v == 0),
            // A known field with the wrong wire type: prost refuses it.
            _ => return Err(Fallback::Malformed),
        };
        if !canonical {
            return Err(Fallback::NotCanonical);
        }
    }
    if message_type == Msg::ResourceSpans {
        batch.push_resource(Attributes::new(resource, tag::RESOURCE_ATTRIBUTES));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{span::Link, Span, Status};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn walk(bytes: &[u8], in_span: bool) -> Result<(), Fallback> {
        walk_alone(bytes, Msg::KeyValue, in_span, 0)
    }

    fn attribute(key: &str, value: any_value::Value) -> Vec<u8> {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn short_key_values_take_the_short_way_and_the_rest_are_walked() {
        use any_value::Value::{BoolValue, IntValue, StringValue};
        let long = "x".repeat(200);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "a string",
                attribute("http.route", StringValue("/a".into())),
                true,
            ),
            (
                "an empty string",
                attribute("k", StringValue(String::new())),
                true,
            ),
            (
                "a UTF-8 string",
                attribute("k", StringValue("é✓".into())),
                true,
            ),
            ("an integer", attribute("k", IntValue(200)), true),
            ("a zero", attribute("k", IntValue(0)), true),
            ("a negative integer", attribute("k", IntValue(-1)), true),
            ("a bool", attribute("k", BoolValue(true)), false),
            (
                "an empty key",
                attribute("", StringValue("v".into())),
                false,
            ),
            (
                "a long string",
                attribute("k", StringValue(long.clone())),
                false,
            ),
            ("a long key", attribute(&long, IntValue(1)), false),
            (
                "a key not UTF-8",
                vec![0x0a, 1, 0xff, 0x12, 2, 0x18, 1],
                false,
            ),
            (
                "a string not UTF-8",
                vec![0x0a, 1, b'k', 0x12, 3, 0x0a, 1, 0xff],
                false,
            ),
            (
                "an integer not shortest",
                vec![0x0a, 1, b'k', 0x12, 3, 0x18, 0x81, 0],
                false,
            ),
            (
                "an integer cut short",
                vec![0x0a, 1, b'k', 0x12, 2, 0x18, 0x81],
                false,
            ),
            (
                "a value with trailing bytes",
                vec![0x0a, 1, b'k', 0x12, 4, 0x18, 1, 0x18, 1],
                false,
            ),
            ("no value", vec![0x0a, 1, b'k'], false),
            (
                "the value first",
                vec![0x12, 2, 0x18, 1, 0x0a, 1, b'k'],
                false,
            ),
        ];
        for (what, bytes, short) in cases {
            assert_eq!(short_key_value(&bytes).is_some(), short, "{what}");
        }
    }

    #[test]
    fn varints_in_their_shortest_form() {
        let shortest = |v: u64| {
            let mut out = vec![];
            prost::encoding::encode_varint(v, &mut out);
            out
        };
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX / 2,
            u64::MAX,
        ] {
            assert!(is_shortest_varint(&shortest(v)), "{v}");
        }
        let cases: [&[u8]; 6] = [
            &[],
            &[0x80, 0x00],                                                 // padded
            &[0x80],                                                       // cut short
            &[0x01, 0x01],                                                 // two varints
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // past 64 bits
            &[0xff; 11],
        ];
        for bytes in cases {
            assert!(!is_shortest_varint(bytes), "{bytes:?}");
        }
    }

    fn a_span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue {
                key: "http.route".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("/".into())),
                }),
                ..Default::default()
            }],
            status: Some(Status {
                code: 2,
                message: String::new(),
            }),
            flags: 0x301,
            ..Default::default()
        }
    }

    /// What the short way reads of a span at depth 3, where spans are: the span and the
    /// attributes it hands on, printed.
    fn short_read(bytes: &[u8]) -> Option<String> {
        let mut index = vec![];
        let mut list = IndexedList::start(&mut index);
        let mut span = crate::wire::Span::default();
        short_span(bytes, 3, &mut span, &mut list)?;
        list.finish();
        Some(format!("{span:?} {index:?}"))
    }

    /// What the walk of a span at depth 3 decides, and then `Span::read` reads, printed.
    fn walked_read(bytes: &[u8]) -> Result<String, Fallback> {
        walk_alone(bytes, Msg::Span, false, 3)?;
        let mut index = vec![];
        let span = crate::wire::Span::read(bytes, |kv| index.push(kv));
        Ok(format!("{span:?} {index:?}"))
    }

    #[test]
    fn spans_of_the_commonest_shape_take_the_short_way() {
        let with = |change: fn(&mut Span)| {
            let mut span = a_span();
            change(&mut span);
            span.encode_to_vec()
        };
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("every common field", with(|_| {}), true),
            ("a root span", with(|s| s.parent_span_id.clear()), true),
            (
                "no status, kind or flags",
                with(|s| (s.status, s.kind, s.flags) = (None, 0, 0)),
                true,
            ),
            (
                "a status message",
                with(|s| s.status.as_mut().unwrap().message = "boom".into()),
                true,
            ),
            (
                "an event",
                with(|s| s.events.push(Default::default())),
                true,
            ),
            (
                "a link",
                with(|s| {
                    s.links.push(Link {
                        trace_id: vec![1; 16],
                        ..Default::default()
                    })
                }),
                true,
            ),
            (
                "a bool attribute",
                with(|s| {
                    s.attributes[0].value = Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    })
                }),
                true,
            ),
            ("bad ids", with(|s| s.trace_id = vec![0; 16]), true),
            (
                "dropped counts",
                with(|s| {
                    (
                        s.dropped_attributes_count,
                        s.dropped_events_count,
                        s.dropped_links_count,
                    ) = (1, 2, 3)
                }),
                true,
            ),
            ("a long name", with(|s| s.name = "x".repeat(200)), false),
            ("a kind past one byte", with(|s| s.kind = 200), false),
            (
                "an empty name written out",
                [with(|_| {}), vec![0x2a, 0]].concat(),
                false,
            ),
            (
                "the name twice",
                [with(|_| {}), vec![0x2a, 1, b'x']].concat(),
                false,
            ),
            (
                "an unknown field",
                [with(|_| {}), vec![0xa8, 0x06, 0x01]].concat(),
                false,
            ),
            (
                "a zero end time written out",
                [
                    with(|s| s.end_time_unix_nano = 0),
                    vec![0x41, 0, 0, 0, 0, 0, 0, 0, 0],
                ]
                .concat(),
                false,
            ),
            (
                "a name not UTF-8",
                [with(|s| s.name.clear()), vec![0x2a, 1, 0xff]].concat(),
                false,
            ),
            (
                "cut short",
                {
                    let b = with(|_| {});
                    b[..b.len() - 1].to_vec()
                },
                false,
            ),
        ];
        for (what, bytes, short) in cases {
            let read = short_read(&bytes);
            assert_eq!(read.is_some(), short, "{what}");
            if let Some(read) = read {
                assert_eq!(walked_read(&bytes), Ok(read), "{what}");
            }
        }
    }

    #[test]
    fn a_span_the_short_way_gives_up_on_is_walked_then_read_once() {
        // The short way hands on the attribute, then meets a status longer than a one-byte
        // length: the span is walked, and read again from its bytes. The attribute it handed
        // on is taken back out of the index, not counted twice.
        let mut long_status = a_span();
        long_status.status = Some(Status {
            code: 2,
            message: "m".repeat(200),
        });
        let bytes = long_status.encode_to_vec();
        assert_eq!(short_read(&bytes), None);
        let mut batch = Batch::empty();
        let mut tally = Tally::default();
        super::span(&bytes, 3, &mut batch, &mut tally).expect("a valid span");
        assert_eq!(tally.spans, 1);
        assert_eq!(batch.spans.len(), 1);
        assert_eq!(batch.attributes.len(), long_status.attributes.len());
        let (read, at) = batch.spans[0];
        let at = at.expect("indexed");
        assert_eq!((at.start, at.end), (0, 1));
        assert_eq!(read.status_message.len(), 200);
        let mut index = vec![];
        let by_span_read = crate::wire::Span::read(&bytes, |kv| index.push(kv));
        assert_eq!(format!("{read:?}"), format!("{by_span_read:?}"));
        assert_eq!(format!("{:?}", batch.attributes), format!("{index:?}"));
    }

    #[test]
    fn utf8_as_the_standard_library_decides_at_every_length_and_position() {
        for len in 0..40 {
            let ascii = vec![b'a'; len];
            assert!(is_utf8(&ascii) && is_ascii(&ascii), "{len}");
            for at in 0..len {
                for byte in [0x80, 0xff, 0xc3] {
                    let mut bytes = ascii.clone();
                    bytes[at] = byte;
                    assert!(!is_ascii(&bytes), "{bytes:?}");
                    assert_eq!(
                        is_utf8(&bytes),
                        std::str::from_utf8(&bytes).is_ok(),
                        "{bytes:?}"
                    );
                }
                if at + 1 < len {
                    let mut bytes = ascii.clone();
                    bytes[at..at + 2].copy_from_slice("é".as_bytes());
                    assert!(is_utf8(&bytes), "{bytes:?}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn utf8_of_any_bytes_as_the_standard_library_decides(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(is_utf8(&bytes), std::str::from_utf8(&bytes).is_ok());
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
        }

        /// A damaged span: the short way accepts it only when the walk does, and reads what
        /// `Span::read` reads.
        #[test]
        fn the_short_way_accepts_a_damaged_span_only_when_the_walk_does(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mut bytes = a_span().encode_to_vec();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if cut_it {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Some(read) = short_read(&bytes) {
                prop_assert_eq!(walked_read(&bytes), Ok(read));
            }
        }

        /// The short way accepts only what the walk accepts, in a span or not, whatever the bytes.
        #[test]
        fn the_short_way_never_accepts_what_the_walk_refuses(
            key in prop::collection::vec(prop_oneof![Just(b'k'), Just(0xc3), Just(0xa9), Just(0xff), Just(0x80)], 0..4),
            value in prop::collection::vec(prop_oneof![Just(0x0a), Just(0x18), Just(0x10), Just(0x00), Just(0x01), Just(0x80), Just(0xff), Just(b'v'), Just(0xc3), Just(0xa9)], 0..12),
            value_len_delta in -2i32..3,
            key_len_delta in -1i32..2,
        ) {
            let mut bytes = vec![0x0a, (key.len() as i32 + key_len_delta).max(0) as u8];
            bytes.extend_from_slice(&key);
            bytes.extend_from_slice(&[0x12, (value.len() as i32 + value_len_delta).max(0) as u8]);
            bytes.extend_from_slice(&value);
            if short_key_value(&bytes).is_some() {
                prop_assert_eq!(walk(&bytes, true), Ok(()));
                prop_assert_eq!(walk(&bytes, false), Ok(()));
            }
        }
    }
}

//! The one walk over a request that decides whether its views are exact: the schema of every
//! message of `ExportTraceServiceRequest` (opentelemetry-proto 0.33, the types prost decodes)
//! and the rules a request must keep to be read without prost.

use super::Raw;

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

/// What the walk counted of a request's spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub spans: usize,
    /// Spans whose ids break OTLP's rules ([`super::id_problem`]).
    pub bad_ids: usize,
}

/// Checks a whole `ExportTraceServiceRequest`.
pub(super) fn request(bytes: &[u8]) -> Result<Tally, Fallback> {
    let mut tally = Tally::default();
    message(bytes, Msg::Request, false, 0, &mut tally)?;
    Ok(tally)
}

fn message(
    bytes: &[u8],
    message_type: Msg,
    in_span: bool,
    depth: u32,
    tally: &mut Tally,
) -> Result<(), Fallback> {
    if depth > MAX_DEPTH {
        return Err(Fallback::TooDeep);
    }
    // Spans and everything in them must be canonical: their size is counted.
    let in_span = in_span || message_type == Msg::Span;
    // Singular fields seen (every tag is below 31); bit 31 is the oneof.
    let mut seen = 0u32;
    // A span's trace, span and parent span ids.
    let mut ids: [&[u8]; 3] = [&[]; 3];
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
                // Most strings are ASCII: a cheap test first.
                if !b.is_ascii() {
                    std::str::from_utf8(b).map_err(|_| Fallback::Malformed)?;
                }
                !default_written(b.is_empty())
            }
            (Kind::Bytes, Raw::Bytes(b)) => {
                if message_type == Msg::Span {
                    match field.tag {
                        1 => ids[0] = b,
                        2 => ids[1] = b,
                        4 => ids[2] = b,
                        _ => {}
                    }
                }
                !default_written(b.is_empty())
            }
            (Kind::Nested(inner), Raw::Bytes(b)) => {
                self::message(b, inner, in_span, depth + 1, tally)?;
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
    if message_type == Msg::Span {
        tally.spans += 1;
        if super::id_problem(ids[0], ids[1], ids[2]).is_some() {
            tally.bad_ids += 1;
        }
    }
    Ok(())
}

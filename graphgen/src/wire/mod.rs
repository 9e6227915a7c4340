//! A borrowed reader of OTLP trace requests: the engine's view of a request, read straight from
//! its protobuf bytes without materialising it.
//!
//! [`Request::read`] walks the whole request once ([`check`]) and accepts it only when the views
//! are certain to see what a full prost decode would: valid protobuf, every string UTF-8, no
//! singular field twice (prost would merge or overwrite), and inside each span nothing prost
//! would drop or re-encode differently (so a span's byte length is its encoded size, which
//! span metrics count). Anything else is a [`Fallback`]: the caller decodes with prost, which
//! gives the same answer or the same error, and reads the re-encoded request with
//! [`Request::trusted`]. The views then decode lazily: ids, names and attribute values are
//! slices of the request, and the fields the processors never read (events, links, the scope)
//! are skipped by their length.

mod check;
#[cfg(test)]
mod tests;

pub use check::Fallback;

/// Field numbers of `opentelemetry.proto.trace.v1` and `common.v1` (opentelemetry-proto 0.33).
mod tag {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RS_RESOURCE: u32 = 1;
    pub const RS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SS_SPANS: u32 = 2;
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_TRACE_STATE: u32 = 3;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START: u32 = 7;
    pub const SPAN_END: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_STATUS: u32 = 15;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const KV_KEY: u32 = 1;
    pub const KV_VALUE: u32 = 2;
    pub const KVLIST_VALUES: u32 = 1;
    pub const ARRAY_VALUES: u32 = 1;
}

/// One field's value as the wire format carries it.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one message, in order. Views iterate checked bytes, so a malformed field
/// (never met there) ends the iteration.
#[derive(Clone)]
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Raw<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match check::next_field(&mut self.rest) {
            Ok(field) => Some((field.tag, field.raw)),
            Err(_) => {
                self.rest = &[];
                None
            }
        }
    }
}

fn str_of(bytes: &[u8]) -> &str {
    // Checked as UTF-8 when the request was read (or encoded from a `String` by prost).
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// A whole `ExportTraceServiceRequest`, checked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    bytes: &'a [u8],
}

impl<'a> Request<'a> {
    /// Checks `bytes` and reads it, or says why prost must decode it instead.
    pub fn read(bytes: &'a [u8]) -> Result<Self, Fallback> {
        check::request(bytes)?;
        Ok(Self { bytes })
    }

    /// A request prost itself encoded (canonical, valid), read without checking again.
    pub fn trusted(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn resource_spans(&self) -> impl Iterator<Item = ResourceSpans<'a>> + 'a {
        Fields::new(self.bytes).filter_map(|(tag, raw)| match (tag, raw) {
            (tag::REQUEST_RESOURCE_SPANS, Raw::Bytes(b)) => Some(ResourceSpans::new(b)),
            _ => None,
        })
    }

    /// Every span, in order.
    pub fn spans(&self) -> impl Iterator<Item = Span<'a>> + 'a {
        self.resource_spans().flat_map(|rs| rs.spans())
    }
}

/// A resource's spans: `ResourceSpans`.
#[derive(Debug, Clone, Copy)]
pub struct ResourceSpans<'a> {
    bytes: &'a [u8],
    resource: Attributes<'a>,
}

impl<'a> ResourceSpans<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let resource = Fields::new(bytes)
            .find_map(|(tag, raw)| match (tag, raw) {
                (tag::RS_RESOURCE, Raw::Bytes(b)) => Some(b),
                _ => None,
            })
            .unwrap_or_default();
        Self {
            bytes,
            resource: Attributes::new(resource, tag::RESOURCE_ATTRIBUTES),
        }
    }

    /// The resource's attributes (none without a resource).
    pub fn attributes(&self) -> Attributes<'a> {
        self.resource
    }

    /// The spans of every scope, in order.
    pub fn spans(&self) -> impl Iterator<Item = Span<'a>> + 'a {
        Fields::new(self.bytes)
            .filter_map(|(tag, raw)| match (tag, raw) {
                (tag::RS_SCOPE_SPANS, Raw::Bytes(b)) => Some(b),
                _ => None,
            })
            .flat_map(|scope_spans| {
                Fields::new(scope_spans).filter_map(|(tag, raw)| match (tag, raw) {
                    (tag::SS_SPANS, Raw::Bytes(b)) => Some(Span::new(b)),
                    _ => None,
                })
            })
    }
}

/// The fields of a span the processors read; the rest are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Attributes<'a>,
    /// The status code, 0 (unset) without a status.
    pub status_code: i32,
    pub status_message: &'a str,
    /// Its size as protobuf (what prost's `encoded_len` gives; Tempo's span size).
    pub encoded_len: usize,
    /// Where it sits in memory: which span of its request it is, for [`Uncounted`].
    position: usize,
}

impl<'a> Span<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut span = Span {
            encoded_len: bytes.len(),
            position: bytes.as_ptr() as usize,
            ..Span::default()
        };
        // Attributes are one run in a canonical encoding; the views look only inside it.
        let mut attributes: Option<(usize, usize)> = None;
        let mut fields = Fields::new(bytes);
        loop {
            let start = bytes.len() - fields.rest.len();
            let Some((tag, raw)) = fields.next() else {
                break;
            };
            match (tag, raw) {
                (tag::SPAN_TRACE_ID, Raw::Bytes(b)) => span.trace_id = b,
                (tag::SPAN_SPAN_ID, Raw::Bytes(b)) => span.span_id = b,
                (tag::SPAN_TRACE_STATE, Raw::Bytes(b)) => span.trace_state = str_of(b),
                (tag::SPAN_PARENT_SPAN_ID, Raw::Bytes(b)) => span.parent_span_id = b,
                (tag::SPAN_NAME, Raw::Bytes(b)) => span.name = str_of(b),
                (tag::SPAN_KIND, Raw::Varint(v)) => span.kind = v as i32,
                (tag::SPAN_START, Raw::Fixed64(v)) => span.start_time_unix_nano = v,
                (tag::SPAN_END, Raw::Fixed64(v)) => span.end_time_unix_nano = v,
                (tag::SPAN_ATTRIBUTES, Raw::Bytes(_)) => {
                    let end = bytes.len() - fields.rest.len();
                    attributes = Some(attributes.map_or((start, end), |(s, _)| (s, end)));
                }
                (tag::SPAN_STATUS, Raw::Bytes(status)) => {
                    for (tag, raw) in Fields::new(status) {
                        match (tag, raw) {
                            (tag::STATUS_CODE, Raw::Varint(v)) => span.status_code = v as i32,
                            (tag::STATUS_MESSAGE, Raw::Bytes(b)) => span.status_message = str_of(b),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((start, end)) = attributes {
            span.attributes = Attributes::new(&bytes[start..end], tag::SPAN_ATTRIBUTES);
        }
        span
    }
}

/// The spans of a request left out of the counts (ended outside the ingestion time range, or
/// counted before); none by default. Kept by the caller in request order, so it is sorted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uncounted<'m>(&'m [usize]);

impl<'m> Uncounted<'m> {
    pub const NONE: Uncounted<'static> = Uncounted(&[]);

    /// Marks `span` (of the request being collected) as not counted, in request order.
    pub fn add(collected: &mut Vec<usize>, span: &Span<'_>) {
        collected.push(span.position);
    }

    pub fn new(collected: &'m [usize]) -> Self {
        Self(collected)
    }

    #[inline]
    pub fn counts(&self, span: &Span<'_>) -> bool {
        self.0.is_empty() || self.0.binary_search(&span.position).is_err()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A list of attributes (`repeated KeyValue`): the fields numbered `tag` of a message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    tag: u32,
}

impl<'a> Attributes<'a> {
    fn new(bytes: &'a [u8], tag: u32) -> Self {
        Self { bytes, tag }
    }

    pub fn iter(&self) -> impl Iterator<Item = KeyValue<'a>> + 'a {
        let want = self.tag;
        Fields::new(self.bytes).filter_map(move |(tag, raw)| match raw {
            Raw::Bytes(b) if tag == want => Some(KeyValue::new(b)),
            _ => None,
        })
    }

    /// The first attribute named `key`.
    #[inline]
    pub fn find(&self, key: &str) -> Option<KeyValue<'a>> {
        self.iter().find(|kv| kv.key == key)
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// One attribute.
#[derive(Debug, Clone, Copy)]
pub struct KeyValue<'a> {
    pub key: &'a str,
    value: &'a [u8],
}

impl<'a> KeyValue<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut kv = KeyValue {
            key: "",
            value: &[],
        };
        for (tag, raw) in Fields::new(bytes) {
            match (tag, raw) {
                (tag::KV_KEY, Raw::Bytes(b)) => kv.key = str_of(b),
                (tag::KV_VALUE, Raw::Bytes(b)) => kv.value = b,
                _ => {}
            }
        }
        kv
    }

    /// Its value; `None` when it has none (no `AnyValue`, or an empty one).
    pub fn value(&self) -> Option<Value<'a>> {
        Value::read(self.value)
    }
}

/// An attribute's value (`AnyValue`).
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Array<'a>),
    KvList(Attributes<'a>),
    Bytes(&'a [u8]),
    /// A profiles string-table reference, meaningless in traces.
    StringIndex(i32),
}

impl<'a> Value<'a> {
    fn read(any_value: &'a [u8]) -> Option<Self> {
        // At most one field in a checked `AnyValue`.
        let (tag, raw) = Fields::new(any_value).next()?;
        Some(match (tag, raw) {
            (1, Raw::Bytes(b)) => Value::String(str_of(b)),
            (2, Raw::Varint(v)) => Value::Bool(v != 0),
            (3, Raw::Varint(v)) => Value::Int(v as i64),
            (4, Raw::Fixed64(v)) => Value::Double(f64::from_bits(v)),
            (5, Raw::Bytes(b)) => Value::Array(Array { bytes: b }),
            (6, Raw::Bytes(b)) => Value::KvList(Attributes::new(b, tag::KVLIST_VALUES)),
            (7, Raw::Bytes(b)) => Value::Bytes(b),
            (8, Raw::Varint(v)) => Value::StringIndex(v as i32),
            _ => return None,
        })
    }
}

/// An `ArrayValue`'s values.
#[derive(Debug, Clone, Copy)]
pub struct Array<'a> {
    bytes: &'a [u8],
}

impl<'a> Array<'a> {
    /// Each element; `None` for an empty `AnyValue`.
    pub fn iter(&self) -> impl Iterator<Item = Option<Value<'a>>> + 'a {
        Fields::new(self.bytes).filter_map(|(tag, raw)| match (tag, raw) {
            (tag::ARRAY_VALUES, Raw::Bytes(b)) => Some(Value::read(b)),
            _ => None,
        })
    }
}

/// `batches` as an `ExportTraceServiceRequest`'s bytes, for [`Request::trusted`]: how tests,
/// benchmarks and tools that build requests as prost structs hand them to the engine.
pub fn encode(batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: batches.to_vec(),
    }
    .encode_to_vec()
}

/// Attributes encoded on their own (as a `Resource`'s), for tests and tools that build them as
/// prost structs.
pub struct EncodedAttributes(Vec<u8>);

impl EncodedAttributes {
    pub fn new(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Self {
        use prost::Message;
        Self(
            opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: attributes.to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    pub fn view(&self) -> Attributes<'_> {
        Attributes::new(&self.0, tag::RESOURCE_ATTRIBUTES)
    }
}

/// A span encoded on its own, for tests and tools that build spans as prost structs.
pub struct EncodedSpan(Vec<u8>);

impl EncodedSpan {
    pub fn new(span: &opentelemetry_proto::tonic::trace::v1::Span) -> Self {
        use prost::Message;
        Self(span.encode_to_vec())
    }

    pub fn view(&self) -> Span<'_> {
        Span::new(&self.0)
    }
}

//! A borrowed reader of OTLP trace requests: the engine's view of a request, read straight from
//! its protobuf bytes without materialising it.
//!
//! [`BatchBuffers::read`] walks the whole request once ([`check`]) and accepts it only when the
//! views are certain to see what a full prost decode would: valid protobuf, every string
//! UTF-8, no singular field twice (prost would merge or overwrite), and inside each span
//! nothing prost would drop or re-encode differently (so a span's byte length is its encoded
//! size, which span metrics count). In the same walk it parses each span into a [`Batch`]: ids,
//! names and attribute values are slices of the request, and the fields the processors never
//! read (events, links, the scope) are skipped by their length. Anything else is a
//! [`Fallback`]: the caller decodes with prost, which gives the same answer or the same error,
//! and parses the re-encoded request, read without a check ([`Request::trusted`],
//! [`BatchBuffers::parse`]).

mod check;
pub mod reference;
#[cfg(test)]
mod tests;

pub use check::{Fallback, Tally};

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

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        // A key of one byte, and a varint or length of one byte: most fields, read inline.
        if let [key @ 0x08..0x80, first, after @ ..] = self.rest {
            let tag = u32::from(key >> 3);
            match key & 7 {
                0 if *first < 0x80 => {
                    self.rest = after;
                    return Some((tag, Raw::Varint(u64::from(*first))));
                }
                2 if *first < 0x80 && usize::from(*first) <= after.len() => {
                    let (bytes, after) = after.split_at(usize::from(*first));
                    self.rest = after;
                    return Some((tag, Raw::Bytes(bytes)));
                }
                // A length of two bytes: spans, most resource-spans and scope-spans.
                2 if *first >= 0x80 => {
                    if let [second @ ..0x80, after @ ..] = after {
                        let len = usize::from(first & 0x7f) | usize::from(*second) << 7;
                        if let Some((bytes, after)) = after.split_at_checked(len) {
                            self.rest = after;
                            return Some((tag, Raw::Bytes(bytes)));
                        }
                    }
                }
                _ => {}
            }
        }
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
    as_str(bytes).unwrap_or_default()
}

/// `bytes` as a `str` if they are UTF-8; ASCII (most names and values) is taken as it is,
/// without a second walk.
#[inline(always)]
fn as_str(bytes: &[u8]) -> Option<&str> {
    if check::is_ascii(bytes) {
        // SAFETY: every byte was just found below 0x80, and ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// What is wrong with a span's ids, by OTLP's rules: a 16-byte trace id and an 8-byte span
/// id, neither all zeros, and a parent span id empty or of 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    #[error("trace id must be 16 non-zero bytes, got {0} bytes")]
    TraceId(usize),
    #[error("span id must be 8 non-zero bytes, got {0} bytes")]
    SpanId(usize),
    #[error("parent span id must be empty or 8 bytes, got {0} bytes")]
    ParentSpanId(usize),
}

pub fn id_problem(trace_id: &[u8], span_id: &[u8], parent_span_id: &[u8]) -> Option<IdProblem> {
    if trace_id.len() != 16 || trace_id.iter().all(|b| *b == 0) {
        return Some(IdProblem::TraceId(trace_id.len()));
    }
    if span_id.len() != 8 || span_id.iter().all(|b| *b == 0) {
        return Some(IdProblem::SpanId(span_id.len()));
    }
    if !(parent_span_id.is_empty() || parent_span_id.len() == 8) {
        return Some(IdProblem::ParentSpanId(parent_span_id.len()));
    }
    None
}

/// A whole `ExportTraceServiceRequest`, checked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    bytes: &'a [u8],
}

impl<'a> Request<'a> {
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
        self.encoded_spans().map(Span::new)
    }

    /// Each span's bytes.
    fn encoded_spans(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        Fields::new(self.bytes)
            .filter_map(|(tag, raw)| match (tag, raw) {
                (tag::RS_SCOPE_SPANS, Raw::Bytes(b)) => Some(b),
                _ => None,
            })
            .flat_map(|scope_spans| {
                Fields::new(scope_spans).filter_map(|(tag, raw)| match (tag, raw) {
                    (tag::SS_SPANS, Raw::Bytes(b)) => Some(b),
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
}

impl<'a> Span<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self::read(bytes, |_| {})
    }

    /// Reads the span, handing each of its attributes to `attribute` on the way.
    #[inline]
    fn read(bytes: &'a [u8], mut attribute: impl FnMut(KeyValue<'a>)) -> Self {
        let mut span = Span {
            encoded_len: bytes.len(),
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
                (tag::SPAN_ATTRIBUTES, Raw::Bytes(kv)) => {
                    attribute(KeyValue::new(kv));
                    let end = bytes.len() - fields.rest.len();
                    attributes = Some(attributes.map_or((start, end), |(s, _)| (s, end)));
                }
                (tag::SPAN_STATUS, Raw::Bytes(status)) => span.read_status(status),
                _ => {}
            }
        }
        if let Some((start, end)) = attributes {
            span.attributes = Attributes::new(&bytes[start..end], tag::SPAN_ATTRIBUTES);
        }
        span
    }

    fn read_status(&mut self, status: &'a [u8]) {
        for (tag, raw) in Fields::new(status) {
            match (tag, raw) {
                (tag::STATUS_CODE, Raw::Varint(v)) => self.status_code = v as i32,
                (tag::STATUS_MESSAGE, Raw::Bytes(b)) => self.status_message = str_of(b),
                _ => {}
            }
        }
    }
}

/// A request's counted spans parsed once and grouped by resource: what the processors read.
/// Every attribute list is read once into an index of keys and values, so that the
/// processors' many look-ups compare keys instead of reading protobuf again.
/// Made by [`BatchBuffers::parse`] in buffers reused from request to request.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Each resource's attributes (read from its bytes, and in `attributes` unless the index
    /// was full) and the end of its spans in `spans`.
    resources: Vec<(Attributes<'a>, Option<Indexed>, usize)>,
    /// Each span with its attributes in `attributes`, unless the index was full.
    spans: Vec<(Span<'a>, Option<Indexed>)>,
    /// The attributes of every resource and span, in order: at most
    /// [`BatchBuffers::INDEX_LIMIT`], so that a request of many tiny attributes cannot make
    /// the index many times its own size. The lists past it are read from their bytes.
    attributes: Vec<KeyValue<'a>>,
}

/// Where an attribute list sits in [`Batch::attributes`].
#[derive(Debug, Clone, Copy)]
struct Indexed {
    start: u32,
    end: u32,
}

impl<'a> Batch<'a> {
    /// Every resource of the request (also those none of whose spans count), with its
    /// counted spans.
    pub fn resources(&self) -> impl Iterator<Item = (Attributes<'_>, BatchSpans<'_, 'a>)> + '_ {
        let mut start = 0;
        self.resources.iter().map(move |&(encoded, at, end)| {
            let spans = BatchSpans {
                spans: self.spans[start..end].iter(),
                attributes: &self.attributes,
            };
            start = end;
            (indexed(&self.attributes, encoded, at), spans)
        })
    }

    /// Resource-spans built as prost structs, encoded and parsed: `f` gets the batch.
    #[cfg(test)]
    pub(crate) fn of_batches<R>(
        batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
        f: impl FnOnce(&Batch<'_>) -> R,
    ) -> R {
        let bytes = encode(batches);
        let batch = BatchBuffers::default().parse(&Request::trusted(&bytes));
        f(&batch)
    }

    /// Keeps only the spans `keep` says to, in order; every resource stays.
    pub fn retain(&mut self, mut keep: impl FnMut(&Span<'a>) -> bool) {
        let mut kept = 0;
        let mut next = 0;
        for (_, _, end) in &mut self.resources {
            while next < *end {
                if keep(&self.spans[next].0) {
                    self.spans.swap(kept, next);
                    kept += 1;
                }
                next += 1;
            }
            *end = kept;
        }
        self.spans.truncate(kept);
    }

    /// The memory its buffers hold, in bytes.
    pub fn bytes_held(&self) -> usize {
        held(&self.resources) + held(&self.spans) + held(&self.attributes)
    }

    /// A batch of nothing, in no buffers.
    fn empty() -> Self {
        Self {
            resources: Vec::new(),
            spans: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Reads the span in `bytes` and adds it, with its attributes indexed; returns it.
    fn push_read_span(&mut self, bytes: &'a [u8]) -> Span<'a> {
        let mut list = IndexedList::start(&mut self.attributes);
        let span = Span::read(bytes, |kv| list.push(kv));
        let at = list.finish();
        self.spans.push((span, at));
        span
    }

    /// Ends a resource: the spans added since the last one are its spans.
    fn push_resource(&mut self, attributes: Attributes<'a>) {
        let mut list = IndexedList::start(&mut self.attributes);
        for kv in attributes.iter() {
            list.push(kv);
        }
        let at = list.finish();
        self.resources.push((attributes, at, self.spans.len()));
    }
}

/// A resource's spans in a [`Batch`], each with its indexed attributes.
pub struct BatchSpans<'b, 'a> {
    spans: std::slice::Iter<'b, (Span<'a>, Option<Indexed>)>,
    attributes: &'b [KeyValue<'a>],
}

impl<'b> Iterator for BatchSpans<'b, '_> {
    type Item = Span<'b>;

    #[inline]
    fn next(&mut self) -> Option<Span<'b>> {
        let &(span, at) = self.spans.next()?;
        Some(Span {
            attributes: indexed(self.attributes, span.attributes, at),
            ..span
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for BatchSpans<'_, '_> {}

/// The storage of [`Batch`]es, kept between requests so that parsing one allocates nothing
/// once the buffers have grown.
#[derive(Debug, Default)]
pub struct BatchBuffers {
    resources: Vec<(Attributes<'static>, Option<Indexed>, usize)>,
    spans: Vec<(Span<'static>, Option<Indexed>)>,
    attributes: Vec<KeyValue<'static>>,
}

impl BatchBuffers {
    /// The most attributes a batch indexes (32 bytes each: 2 MiB), whatever the request.
    pub const INDEX_LIMIT: usize = 1 << 16;

    /// Checks `bytes` and parses it in the same walk: the batch, with a count of its spans and
    /// of those with bad ids, or why prost must decode it instead (the buffers are kept).
    pub fn read<'a>(&mut self, bytes: &'a [u8]) -> Result<(Batch<'a>, Tally), Fallback> {
        let mut batch = self.batch();
        match check::request(bytes, &mut batch) {
            Ok(tally) => Ok((batch, tally)),
            Err(fallback) => {
                self.recycle(batch);
                Err(fallback)
            }
        }
    }

    /// Parses each span of `request` once.
    pub fn parse<'a>(&mut self, request: &Request<'a>) -> Batch<'a> {
        let mut batch = self.batch();
        for rs in request.resource_spans() {
            for bytes in rs.encoded_spans() {
                batch.push_read_span(bytes);
            }
            batch.push_resource(rs.attributes());
        }
        batch
    }

    /// An empty batch in these buffers.
    fn batch<'a>(&mut self) -> Batch<'a> {
        // Empty buffers of 'static views serve as buffers of shorter-lived ones.
        Batch {
            resources: emptied(std::mem::take(&mut self.resources)),
            spans: emptied(std::mem::take(&mut self.spans)),
            attributes: emptied(std::mem::take(&mut self.attributes)),
        }
    }

    /// The memory the buffers hold, in bytes.
    pub fn bytes_held(&self) -> usize {
        held(&self.resources) + held(&self.spans) + held(&self.attributes)
    }

    /// Takes the batch's buffers back, emptied.
    pub fn recycle(&mut self, batch: Batch<'_>) {
        self.resources = emptied(batch.resources);
        self.spans = emptied(batch.spans);
        self.attributes = emptied(batch.attributes);
    }
}

/// One list being added to a batch's index: all of it, or none when the index is full.
struct IndexedList<'i, 'a> {
    index: &'i mut Vec<KeyValue<'a>>,
    start: usize,
    full: bool,
}

impl<'i, 'a> IndexedList<'i, 'a> {
    fn start(index: &'i mut Vec<KeyValue<'a>>) -> Self {
        let start = index.len();
        Self {
            index,
            start,
            full: false,
        }
    }

    #[inline]
    fn push(&mut self, kv: KeyValue<'a>) {
        if self.index.len() < BatchBuffers::INDEX_LIMIT {
            self.index.push(kv);
        } else {
            self.full = true;
        }
    }

    /// Pushes the attribute encoded in `bytes` (checked), whatever its shape.
    #[inline(never)]
    fn push_read(&mut self, bytes: &'a [u8]) {
        self.push(KeyValue::new(bytes));
    }

    fn finish(self) -> Option<Indexed> {
        if self.full {
            self.abandon();
            return None;
        }
        Some(Indexed {
            start: self.start as u32,
            end: self.index.len() as u32,
        })
    }

    /// Takes the list's attributes back out of the index.
    fn abandon(self) {
        self.index.truncate(self.start);
    }
}

/// A list's attributes: from the index when it is there, else from its bytes.
#[inline]
fn indexed<'b>(
    index: &'b [KeyValue<'_>],
    encoded: Attributes<'b>,
    at: Option<Indexed>,
) -> Attributes<'b> {
    match at {
        Some(at) => Attributes(Repr::Indexed(&index[at.start as usize..at.end as usize])),
        None => encoded,
    }
}

/// The bytes `v`'s allocation holds.
fn held<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// `v`'s allocation, emptied, as a buffer of another type of the same layout (the standard
/// library collects a mapped `IntoIter` in place).
fn emptied<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// A list of attributes (`repeated KeyValue`): the fields numbered `tag` of a message, or,
/// in a [`Batch`], those fields read once into an index of keys and values.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a>(Repr<'a>);

#[derive(Debug, Clone, Copy)]
enum Repr<'a> {
    Encoded { bytes: &'a [u8], tag: u32 },
    Indexed(&'a [KeyValue<'a>]),
}

impl Default for Attributes<'_> {
    fn default() -> Self {
        Self(Repr::Indexed(&[]))
    }
}

impl<'a> Attributes<'a> {
    fn new(bytes: &'a [u8], tag: u32) -> Self {
        Self(Repr::Encoded { bytes, tag })
    }

    #[inline]
    pub fn iter(&self) -> AttributesIter<'a> {
        AttributesIter(match self.0 {
            Repr::Encoded { bytes, tag } => {
                IterRepr::Encoded(EncodedKeyValues { rest: bytes, tag })
            }
            Repr::Indexed(list) => IterRepr::Indexed(list.iter()),
        })
    }

    /// The list as the batch's index holds it; `None` when it is read from its bytes.
    #[inline]
    pub fn indexed(&self) -> Option<&'a [KeyValue<'a>]> {
        match self.0 {
            Repr::Indexed(list) => Some(list),
            Repr::Encoded { .. } => None,
        }
    }

    /// The first attribute named `key`.
    #[inline]
    pub fn find(&self, key: &str) -> Option<KeyValue<'a>> {
        let key = key.as_bytes();
        match self.0 {
            Repr::Indexed(list) => list.iter().find(|kv| kv.key == key).copied(),
            Repr::Encoded { bytes, tag } => EncodedKeyValues { rest: bytes, tag }
                .find(|kv| KeyValue::key_of(kv) == key)
                .map(KeyValue::new),
        }
    }

    /// The attribute at `position` in the list.
    #[inline]
    pub fn get(&self, position: usize) -> Option<KeyValue<'a>> {
        match self.0 {
            Repr::Indexed(list) => list.get(position).copied(),
            Repr::Encoded { .. } => self.iter().nth(position),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self.0 {
            Repr::Indexed(list) => list.is_empty(),
            Repr::Encoded { .. } => self.iter().next().is_none(),
        }
    }
}

/// The attributes of a list, in order.
pub struct AttributesIter<'a>(IterRepr<'a>);

enum IterRepr<'a> {
    Encoded(EncodedKeyValues<'a>),
    Indexed(std::slice::Iter<'a, KeyValue<'a>>),
}

impl<'a> Iterator for AttributesIter<'a> {
    type Item = KeyValue<'a>;

    #[inline]
    fn next(&mut self) -> Option<KeyValue<'a>> {
        match &mut self.0 {
            IterRepr::Indexed(list) => list.next().copied(),
            IterRepr::Encoded(encoded) => encoded.next().map(KeyValue::new),
        }
    }
}

/// The `KeyValue`s of an attribute list, as bytes.
struct EncodedKeyValues<'a> {
    rest: &'a [u8],
    tag: u32,
}

impl<'a> Iterator for EncodedKeyValues<'a> {
    type Item = &'a [u8];

    #[inline(always)]
    fn next(&mut self) -> Option<&'a [u8]> {
        // Every tag of an attribute list is below 16: its field key is one byte.
        let list_key = (self.tag << 3) as u8 | 2;
        while !self.rest.is_empty() {
            // The common case, an attribute shorter than 128 bytes, read without the general
            // field reader.
            if let [k, len, after @ ..] = self.rest {
                if *k == list_key && *len < 0x80 {
                    let Some(kv) = after.get(..usize::from(*len)) else {
                        break;
                    };
                    self.rest = &after[kv.len()..];
                    return Some(kv);
                }
            }
            match check::next_field(&mut self.rest) {
                Ok(field) => match (field.tag, field.raw) {
                    (tag, Raw::Bytes(kv)) if tag == self.tag => return Some(kv),
                    _ => continue,
                },
                Err(_) => break,
            }
        }
        self.rest = &[];
        None
    }
}

/// One attribute.
#[derive(Debug, Clone, Copy)]
pub struct KeyValue<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> KeyValue<'a> {
    #[inline]
    fn new(bytes: &'a [u8]) -> Self {
        const KEY_FIELD: u8 = (tag::KV_KEY << 3) as u8 | 2;
        const VALUE_FIELD: u8 = (tag::KV_VALUE << 3) as u8 | 2;
        // As every encoder writes it: the key, then the value, each shorter than 128 bytes.
        // (A checked request has neither field twice, so the general reader would agree.)
        if let [KEY_FIELD, key_len, rest @ ..] = bytes {
            if *key_len < 0x80 {
                if let Some((key, after)) = rest.split_at_checked(usize::from(*key_len)) {
                    match after {
                        [] => return Self { key, value: &[] },
                        [VALUE_FIELD, len, value @ ..]
                            if *len < 0x80 && usize::from(*len) == value.len() =>
                        {
                            return Self { key, value }
                        }
                        _ => {}
                    }
                }
            }
        }
        Self::read(bytes)
    }

    fn read(bytes: &'a [u8]) -> Self {
        let mut kv = KeyValue {
            key: &[],
            value: &[],
        };
        for (tag, raw) in Fields::new(bytes) {
            match (tag, raw) {
                (tag::KV_KEY, Raw::Bytes(b)) => kv.key = b,
                (tag::KV_VALUE, Raw::Bytes(b)) => kv.value = b,
                _ => {}
            }
        }
        kv
    }

    /// The key of the `KeyValue` encoded in `bytes`, read without the rest of it when the key
    /// comes first, as every encoder writes it.
    #[inline(always)]
    fn key_of(bytes: &[u8]) -> &[u8] {
        const KEY_FIELD: u8 = (tag::KV_KEY << 3) as u8 | 2;
        match bytes {
            [KEY_FIELD, len, rest @ ..] if *len < 0x80 => {
                rest.get(..usize::from(*len)).unwrap_or_default()
            }
            _ => KeyValue::read(bytes).key,
        }
    }

    pub fn key(&self) -> &'a str {
        str_of(self.key)
    }

    /// The key's bytes, compared without reading them as UTF-8.
    #[inline]
    pub fn key_bytes(&self) -> &'a [u8] {
        self.key
    }

    /// Its value; `None` when it has none (no `AnyValue`, or an empty one).
    #[inline]
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
    #[inline]
    fn read(any_value: &'a [u8]) -> Option<Self> {
        const STRING_FIELD: u8 = 1 << 3 | 2;
        // The common case: a string shorter than 128 bytes, alone.
        if let [STRING_FIELD, len, s @ ..] = any_value {
            if *len < 0x80 && usize::from(*len) == s.len() {
                return Some(Value::String(str_of(s)));
            }
        }
        // At most one known field in a checked `AnyValue` (outside spans, unknown ones may sit
        // beside it).
        Fields::new(any_value).find_map(|(tag, raw)| Self::of_field(tag, raw))
    }

    fn of_field(tag: u32, raw: Raw<'a>) -> Option<Self> {
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

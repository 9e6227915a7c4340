//! What both processors read from a span the same way: its kind and status as Tempo labels
//! them, and durations.

use std::borrow::Cow;

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

/// Seconds from `start` to `end`, 0 when `end` is earlier.
pub fn duration_sec(start: u64, end: u64) -> f64 {
    end.saturating_sub(start) as f64 / 1e9
}

/// `SPAN_KIND_SERVER` etc., as Tempo labels span kinds.
pub fn span_kind_name(kind: i32) -> &'static str {
    SpanKind::try_from(kind).map_or("SPAN_KIND_UNSPECIFIED", |k| k.as_str_name())
}

/// `SPAN_KIND_SERVER` etc., unknown kinds spelled as their number, as Go's enum `String` does
/// (what Tempo's filter policies match a kind regex against).
pub fn span_kind_string(kind: i32) -> Cow<'static, str> {
    SpanKind::try_from(kind)
        .map_or_else(|_| Cow::Owned(kind.to_string()), |k| k.as_str_name().into())
}

/// `STATUS_CODE_OK` etc.; unknown codes are spelled as their number, as Go's enum `String` does.
pub fn status_code_name(code: i32) -> Cow<'static, str> {
    StatusCode::try_from(code)
        .map_or_else(|_| Cow::Owned(code.to_string()), |c| c.as_str_name().into())
}

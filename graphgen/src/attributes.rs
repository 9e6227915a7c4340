//! Attribute look-ups and label-name rules shared by the service-graph and span-metrics
//! processors. They follow Tempo's `processor/util` so label values match byte for byte.

use std::fmt::Write;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::wire::{self, Attributes, Value};

/// A string attribute, as OTLP carries `service.name` and most span attributes.
pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// The first attribute named `key`, searching `lists` in order (resource before span).
/// An attribute that is present with an empty value still counts as found, as in Tempo.
#[inline]
pub fn find<'a>(key: &str, lists: &[Attributes<'a>]) -> Option<wire::KeyValue<'a>> {
    lists.iter().find_map(|attrs| attrs.find(key))
}

/// Appends an attribute value to `out` the way Tempo stringifies it
/// (strings verbatim, numbers in shortest form, arrays as `[..]`, maps as `{k:v..}`, bytes as nothing).
pub fn write_value(value: Option<Value<'_>>, out: &mut String) {
    let Some(value) = value else {
        return;
    };
    match value {
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Array(array) => {
            out.push('[');
            for v in array.iter() {
                write_value(v, out);
            }
            out.push(']');
        }
        Value::KvList(list) => {
            out.push('{');
            for kv in list.iter() {
                out.push_str(kv.key());
                out.push(':');
                write_value(kv.value(), out);
            }
            out.push('}');
        }
        // Bytes and profile string-table references have no string form in Tempo.
        Value::Bytes(_) | Value::StringIndex(_) => {}
    }
}

/// Looks `key` up and, when found, replaces `out` with its string form. Returns whether it was found.
#[inline]
pub fn copy_into(key: &str, lists: &[Attributes<'_>], out: &mut String) -> bool {
    replace_with_value(find(key, lists), out)
}

/// When `found`, replaces `out` with its value's string form. Returns whether it was found.
#[inline]
pub fn replace_with_value(found: Option<wire::KeyValue<'_>>, out: &mut String) -> bool {
    match found {
        Some(kv) => {
            out.clear();
            write_value(kv.value(), out);
            true
        }
        None => false,
    }
}

/// The `service.name` resource attribute, if present.
pub fn service_name<'a>(resource: Attributes<'a>) -> Option<wire::KeyValue<'a>> {
    resource.find("service.name")
}

/// The attribute keys a processor reads, each with an id. [`KeySet::scan`] finds all of them
/// in a list in one pass over it, so that a span's many look-ups (dimensions, peer and
/// database attributes) cost one pass over its attributes instead of one per key.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<String>,
    /// The ids of the keys sorted by length, and where each length starts among them, so
    /// that an attribute is compared only with the keys as long as its own.
    by_length: Vec<u16>,
    length_starts: Vec<u32>,
    /// Each key's first eight bytes ([`prefix`]): most keys that differ differ there, so the
    /// whole keys are compared only when these agree.
    prefixes: Vec<u64>,
}

/// The first eight bytes of `key`, zero-padded.
#[inline(always)]
fn prefix(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => {
            let mut padded = [0u8; 8];
            padded[..key.len()].copy_from_slice(key);
            u64::from_le_bytes(padded)
        }
    }
}

/// A key of a [`KeySet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(u16);

/// Where each key of a [`KeySet`] first occurs in one list: the answer of one
/// [`KeySet::scan`], reused from list to list.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// For each key, the scan that found it and where. A position from an earlier scan means
    /// not found, so a scan need not clear what the last one found.
    positions: Vec<(u32, u32)>,
    /// The number of the latest scan.
    scan: u32,
}

impl KeySet {
    /// The id of `key`, added to the set if new.
    pub fn add(&mut self, key: &str) -> KeyId {
        let id = match self.keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.keys.push(key.to_string());
                self.index_lengths();
                self.keys.len() - 1
            }
        };
        KeyId(u16::try_from(id).expect("fewer than 65,536 configured attribute keys"))
    }

    /// The ids of `keys`, in order.
    pub fn add_all<S: AsRef<str>>(&mut self, keys: &[S]) -> Vec<KeyId> {
        keys.iter().map(|k| self.add(k.as_ref())).collect()
    }

    fn index_lengths(&mut self) {
        let mut ids: Vec<u16> = (0..self.keys.len() as u16).collect();
        ids.sort_by_key(|id| self.keys[usize::from(*id)].len());
        let longest = self.keys.iter().map(String::len).max().unwrap_or(0);
        // length_starts[n]..length_starts[n + 1]: the keys n bytes long.
        self.length_starts = (0..=longest + 1)
            .map(|n| ids.partition_point(|id| self.keys[usize::from(*id)].len() < n) as u32)
            .collect();
        self.by_length = ids;
        self.prefixes = self.keys.iter().map(|k| prefix(k.as_bytes())).collect();
    }

    /// The ids of the keys `len` bytes long.
    #[inline]
    fn of_length(&self, len: usize) -> &[u16] {
        match (self.length_starts.get(len), self.length_starts.get(len + 1)) {
            (Some(&start), Some(&end)) => &self.by_length[start as usize..end as usize],
            _ => &[],
        }
    }

    /// Finds the first attribute of each key in `list`.
    #[inline]
    pub fn scan(&self, list: Attributes<'_>, found: &mut Found) {
        found.scan = found.scan.wrapping_add(1);
        if found.scan == 0 || found.positions.len() != self.keys.len() {
            // A new `Found`, or 2³² scans on: every old position is forgotten at once.
            found.positions.clear();
            found.positions.resize(self.keys.len(), (0, 0));
            found.scan = 1;
        }
        if self.keys.is_empty() {
            return;
        }
        // The same loop twice: over the index's slice directly (the batch's lists, the hot
        // path), or through `Attributes::iter`, which reads encoded lists too.
        match list.indexed() {
            Some(list) => {
                for (position, kv) in list.iter().enumerate() {
                    self.scan_key(kv.key_bytes(), position, found);
                }
            }
            None => {
                for (position, kv) in list.iter().enumerate() {
                    self.scan_key(kv.key_bytes(), position, found);
                }
            }
        }
    }

    #[inline(always)]
    fn scan_key(&self, key: &[u8], position: usize, found: &mut Found) {
        let ids = self.of_length(key.len());
        if ids.is_empty() {
            return;
        }
        let key_prefix = prefix(key);
        for &id in ids {
            let id = usize::from(id);
            if self.prefixes[id] == key_prefix
                && found.positions[id].0 != found.scan
                && self.keys[id].as_bytes() == key
            {
                found.positions[id] = (found.scan, position as u32);
            }
        }
    }

    /// Scans `span` into `in_span`: the lists a span's attributes are looked up in, its
    /// resource's (scanned once for all its spans into `in_resource`) first.
    #[inline]
    pub fn scan_span<'s, 'a>(
        &self,
        resource: Attributes<'a>,
        in_resource: &'s Found,
        span: Attributes<'a>,
        in_span: &'s mut Found,
    ) -> [Scanned<'s, 'a>; 2] {
        self.scan(span, in_span);
        [
            Scanned {
                list: resource,
                found: in_resource,
            },
            Scanned {
                list: span,
                found: in_span,
            },
        ]
    }
}

/// A list with the answer of its [`KeySet::scan`].
#[derive(Debug, Clone, Copy)]
pub struct Scanned<'s, 'a> {
    pub list: Attributes<'a>,
    pub found: &'s Found,
}

impl<'a> Scanned<'_, 'a> {
    /// The first attribute of the key `id`.
    #[inline]
    pub fn find(&self, id: KeyId) -> Option<wire::KeyValue<'a>> {
        match self.found.positions.get(usize::from(id.0)) {
            Some(&(scan, position)) if scan == self.found.scan => self.list.get(position as usize),
            _ => None,
        }
    }
}

/// [`find`] over scanned lists: the first attribute of the key `id`, searching `lists` in order.
#[inline]
pub fn find_scanned<'a>(id: KeyId, lists: &[Scanned<'_, 'a>]) -> Option<wire::KeyValue<'a>> {
    lists.iter().find_map(|list| list.find(id))
}

/// The attribute of the first of `ids` that any of `lists` has, searching `lists` in order for
/// each key.
#[inline]
pub fn find_first_scanned<'a>(
    ids: &[KeyId],
    lists: &[Scanned<'_, 'a>],
) -> Option<wire::KeyValue<'a>> {
    ids.iter().find_map(|id| find_scanned(*id, lists))
}

/// [`copy_into`] over scanned lists.
#[inline]
pub fn copy_scanned_into(id: KeyId, lists: &[Scanned<'_, '_>], out: &mut String) -> bool {
    replace_with_value(find_scanned(id, lists), out)
}

/// Replaces every character Prometheus does not allow in a label name with `_`
/// (`http.request.method` → `http_request_method`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How many spans `span` stands for: the tracestate's sampling multiplier when `tracestate`
/// is on and it has one, else the ratio attribute `key`'s (Tempo's `GetSpanMultiplier`).
#[inline]
pub fn multiplier(
    key: Option<&str>,
    tracestate: bool,
    span: &wire::Span<'_>,
    resource: Attributes<'_>,
) -> f64 {
    if tracestate {
        let m = crate::sampling::multiplier_from_tracestate(span.trace_state);
        if m > 0.0 {
            return m;
        }
    }
    span_multiplier(key, span.attributes, resource)
}

/// The sampling multiplier carried by `key` (span attributes first, then resource):
/// a double `ratio` > 0 counts the span as `1 / ratio` spans.
#[inline]
pub fn span_multiplier(key: Option<&str>, span: Attributes<'_>, resource: Attributes<'_>) -> f64 {
    let Some(key) = key else { return 1.0 };
    for attrs in [span, resource] {
        for kv in attrs.iter().filter(|kv| kv.key() == key) {
            if let Some(Value::Double(ratio)) = kv.value() {
                if ratio > 0.0 {
                    return 1.0 / ratio;
                }
            }
        }
    }
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EncodedAttributes;
    use any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn values_are_stringified_like_tempo() {
        let cases = [
            (Value::StringValue("GET".into()), "GET"),
            (Value::BoolValue(true), "true"),
            (Value::IntValue(-42), "-42"),
            (Value::DoubleValue(0.5), "0.5"),
            (Value::DoubleValue(1e21), "1000000000000000000000"),
            (
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(Value::StringValue("a".into())),
                        },
                    ],
                }),
                "[1a]",
            ),
            (
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", Value::IntValue(7))],
                }),
                "{k:7}",
            ),
            (Value::BytesValue(vec![1, 2]), ""),
        ];
        for (value, want) in cases {
            let mut out = String::new();
            let encoded = EncodedAttributes::new(&[kv("v", value.clone())]);
            write_value(encoded.view().find("v").unwrap().value(), &mut out);
            assert_eq!(out, want, "{value:?}");
        }
    }

    #[test]
    fn resource_attributes_win_over_span_attributes() {
        let resource =
            EncodedAttributes::new(&[kv("beast", Value::StringValue("manticore".into()))]);
        let span = EncodedAttributes::new(&[kv("beast", Value::StringValue("griffin".into()))]);
        let (resource, span) = (resource.view(), span.view());
        let mut out = String::new();
        assert!(copy_into("beast", &[resource, span], &mut out));
        assert_eq!(out, "manticore");
        assert!(copy_into("beast", &[span], &mut out));
        assert_eq!(out, "griffin");
        assert!(!copy_into("god", &[resource, span], &mut out));
    }

    #[test]
    fn a_key_set_finds_what_looking_each_key_up_finds() {
        let string = |s: &str| Value::StringValue(s.into());
        let resource = EncodedAttributes::new(&[
            kv("service.name", string("shop")),
            kv("db.name", string("orders")),
        ]);
        let span = EncodedAttributes::new(&[
            // As long as a key and alike in its first eight bytes, or all of its bytes but one.
            kv("peer.servicE", string("not peer.service")),
            kv("absenT", string("not absent")),
            kv("peer.service", string("first")),
            kv("db.system", string("postgresql")),
            kv("peer.service", string("second")),
            kv("", string("empty key")),
            kv("db.namespace", string("same length as peer.service")),
        ]);
        let mut keys = KeySet::default();
        let names = [
            "peer.service",
            "db.namespace",
            "db.name",
            "db.system",
            "absent",
            "",
            "a key longer than any attribute's",
        ];
        let ids = keys.add_all(&names);
        assert_eq!(keys.add("db.name"), ids[2], "a key is added once");
        let (resource, span) = (resource.view(), span.view());
        let (mut in_resource, mut in_span) = (Found::default(), Found::default());
        keys.scan(resource, &mut in_resource);
        keys.scan(span, &mut in_span);
        let scanned = [
            Scanned {
                list: resource,
                found: &in_resource,
            },
            Scanned {
                list: span,
                found: &in_span,
            },
        ];
        let text = |kv: Option<wire::KeyValue<'_>>| {
            kv.map(|kv| {
                let mut out = String::new();
                write_value(kv.value(), &mut out);
                out
            })
        };
        for (name, id) in names.iter().zip(&ids) {
            for lists in [&scanned[..], &scanned[1..]] {
                let plain: Vec<Attributes<'_>> = lists.iter().map(|l| l.list).collect();
                assert_eq!(
                    text(find_scanned(*id, lists)),
                    text(find(name, &plain)),
                    "{name:?} in {} lists",
                    lists.len()
                );
            }
        }
        assert_eq!(
            text(find_scanned(ids[0], &scanned)).as_deref(),
            Some("first")
        );
        for order in [[2, 3], [3, 2], [4, 0]] {
            let ids = order.map(|i| ids[i]);
            let names = order.map(|i| names[i]);
            let plain = [resource, span];
            let each_key_in_turn = names.iter().find_map(|name| find(name, &plain));
            assert_eq!(
                text(find_first_scanned(&ids, &scanned)),
                text(each_key_in_turn),
                "{names:?}"
            );
        }
        // A `Found` reused for another list forgets the last one's, also when its count of
        // scans wraps around.
        for last_scan in [7, u32::MAX - 1, u32::MAX] {
            let mut found = Found::default();
            keys.scan(resource, &mut found);
            found.scan = last_scan;
            keys.scan(resource, &mut found);
            let in_resource = Scanned {
                list: resource,
                found: &found,
            };
            assert_eq!(text(in_resource.find(ids[2])).as_deref(), Some("orders"));
            // db.name was the resource's second attribute; the span has none.
            keys.scan(span, &mut found);
            let in_span = Scanned {
                list: span,
                found: &found,
            };
            assert!(in_span.find(ids[2]).is_none(), "after scan {last_scan}");
            assert_eq!(text(in_span.find(ids[0])).as_deref(), Some("first"));
        }
        // An empty set finds nothing and reads no list.
        let none = KeySet::default();
        none.scan(span, &mut in_span);
        let scanned_by_none = Scanned {
            list: span,
            found: &in_span,
        };
        assert!(scanned_by_none.find(ids[0]).is_none());
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(
            sanitize_label_name("http.request.method"),
            "http_request_method"
        );
        assert_eq!(sanitize_label_name("k8s-pod/name"), "k8s_pod_name");
        assert_eq!(sanitize_label_name("plain_name1"), "plain_name1");
    }

    #[test]
    fn span_multiplier_reads_positive_ratios_only() {
        let list = |kvs: &[KeyValue]| EncodedAttributes::new(kvs);
        let span = list(&[kv("ratio", Value::DoubleValue(0.25))]);
        let resource = list(&[kv("ratio", Value::DoubleValue(0.5))]);
        let (none, zero, int) = (
            list(&[]),
            list(&[kv("ratio", Value::DoubleValue(0.0))]),
            list(&[kv("ratio", Value::IntValue(2))]),
        );
        let ratio = Some("ratio");
        assert_eq!(span_multiplier(ratio, span.view(), resource.view()), 4.0);
        assert_eq!(span_multiplier(ratio, none.view(), resource.view()), 2.0);
        assert_eq!(span_multiplier(ratio, zero.view(), none.view()), 1.0);
        assert_eq!(span_multiplier(ratio, int.view(), none.view()), 1.0);
        assert_eq!(span_multiplier(None, span.view(), resource.view()), 1.0);
    }
}

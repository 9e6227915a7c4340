//! Tempo's `filter_policies`: which spans a processor counts. Both processors take a list of
//! policies, each with an `include`, `include_any` and/or `exclude` match; a match names
//! intrinsics (`name`, `status`, `kind`) or attributes (`span.<key>`, `resource.<key>`) and a
//! value, compared exactly (`strict`) or by an unanchored regular expression (`regex`).
//!
//! Semantics as Tempo's `pkg/spanfilter` (ad33aa8): a span is dropped if any `exclude` matches;
//! else kept if any `include_any` matches; else, if there are `include`s, kept only if all of
//! them match; else kept unless there were `include_any`s. A match holds when all its
//! attributes hold; an attribute is compared at its first occurrence only, a strict value by its
//! type (a string only equals a string attribute, and so on), a regex against the string value.
//! One difference: `\d`, `\w` and `\s` in a regex also match non-ASCII digits, letters and
//! spaces here (Rust's `regex`), where Go's RE2 is ASCII-only.

use crate::wire::{Attributes, Span, Value};
use serde::{Deserialize, Serialize};

use crate::spans::{span_kind_string, status_code_name};

/// One policy, as Tempo's `FilterPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<PolicyMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_any: Option<PolicyMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<PolicyMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMatch {
    pub match_type: MatchType,
    #[serde(default)]
    pub attributes: Vec<MatchAttribute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    Strict,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchAttribute {
    /// `name`, `status`, `kind` (or `span:name` …), `span.<attribute>`, `resource.<attribute>`.
    pub key: String,
    pub value: MatchValue,
}

/// The value a strict match compares with, by type; a regex match takes a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MatchValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

/// A policy that cannot be applied; Tempo refuses the same ones.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("a filter policy needs an include, include_any or exclude")]
    Empty,
    #[error("filter policy attribute {key:?}: {reason}")]
    Attribute { key: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intrinsic {
    Name,
    Status,
    Kind,
}

#[derive(Debug, Clone)]
enum Compare {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct AttributeTest {
    key: String,
    compare: Compare,
}

#[derive(Debug, Clone)]
enum IntrinsicTest {
    Name(String),
    /// A status or kind, by its number.
    Code(Intrinsic, i32),
    Regex(Intrinsic, regex::Regex),
}

/// One match, split by where it looks, as Tempo's `splitPolicy`.
#[derive(Debug, Clone, Default)]
struct Match {
    intrinsic: Vec<IntrinsicTest>,
    resource: Vec<AttributeTest>,
    span: Vec<AttributeTest>,
}

/// The compiled policies of one processor; no policies keep every span.
#[derive(Debug, Clone, Default)]
pub struct SpanFilter {
    include: Vec<Match>,
    include_any: Vec<Match>,
    exclude: Vec<Match>,
}

impl SpanFilter {
    pub fn new(policies: &[FilterPolicy]) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for policy in policies {
            if policy.include.is_none() && policy.include_any.is_none() && policy.exclude.is_none()
            {
                return Err(FilterError::Empty);
            }
            for (m, list) in [
                (&policy.include, &mut filter.include),
                (&policy.include_any, &mut filter.include_any),
                (&policy.exclude, &mut filter.exclude),
            ] {
                if let Some(m) = m {
                    list.push(Match::new(m)?);
                }
            }
        }
        Ok(filter)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.include_any.is_empty() && self.exclude.is_empty()
    }

    /// Whether the processor counts `span` of a resource with `resource` attributes.
    #[inline]
    pub fn keeps(&self, resource: Attributes<'_>, span: &Span<'_>) -> bool {
        self.is_empty() || self.applies(resource, span)
    }

    fn applies(&self, resource: Attributes<'_>, span: &Span<'_>) -> bool {
        if self.exclude.iter().any(|m| m.matches(resource, span)) {
            return false;
        }
        if self.include_any.iter().any(|m| m.matches(resource, span)) {
            return true;
        }
        if !self.include.is_empty() {
            return self.include.iter().all(|m| m.matches(resource, span));
        }
        self.include_any.is_empty()
    }
}

impl Match {
    fn new(policy: &PolicyMatch) -> Result<Self, FilterError> {
        let mut m = Match::default();
        for attribute in &policy.attributes {
            let error = |reason: String| FilterError::Attribute {
                key: attribute.key.clone(),
                reason,
            };
            let regex = || match &attribute.value {
                MatchValue::String(pattern) => {
                    regex::Regex::new(pattern).map_err(|e| error(format!("invalid regex: {e}")))
                }
                other => Err(error(format!("a regex must be a string, not {other:?}"))),
            };
            match Key::parse(&attribute.key).map_err(error)? {
                Key::Intrinsic(which) => m.intrinsic.push(match policy.match_type {
                    MatchType::Regex => IntrinsicTest::Regex(which, regex()?),
                    MatchType::Strict => {
                        strict_intrinsic(which, &attribute.value).map_err(error)?
                    }
                }),
                Key::Attribute { resource, name } => {
                    let compare = match (policy.match_type, &attribute.value) {
                        (MatchType::Regex, _) => Compare::Regex(regex()?),
                        (MatchType::Strict, MatchValue::String(s)) => Compare::String(s.clone()),
                        (MatchType::Strict, MatchValue::Int(i)) => Compare::Int(*i),
                        (MatchType::Strict, MatchValue::Float(f)) => Compare::Float(*f),
                        (MatchType::Strict, MatchValue::Bool(b)) => Compare::Bool(*b),
                    };
                    let test = AttributeTest { key: name, compare };
                    if resource {
                        m.resource.push(test);
                    } else {
                        m.span.push(test);
                    }
                }
            }
        }
        Ok(m)
    }

    fn matches(&self, resource: Attributes<'_>, span: &Span<'_>) -> bool {
        self.intrinsic.iter().all(|t| t.matches(span))
            && attributes_match(&self.resource, resource)
            && attributes_match(&self.span, span.attributes)
    }
}

/// Tempo's `AttributePolicyMatch`: with tests, an empty attribute list never matches.
fn attributes_match(tests: &[AttributeTest], attributes: Attributes<'_>) -> bool {
    if tests.is_empty() {
        return true;
    }
    if attributes.is_empty() {
        return false;
    }
    tests.iter().all(|test| {
        let Some(kv) = attributes.find(&test.key) else {
            return false;
        };
        match (&test.compare, kv.value()) {
            (Compare::String(s), Some(Value::String(v))) => s == v,
            (Compare::String(s), _) => s.is_empty(),
            (Compare::Int(i), Some(Value::Int(v))) => *i == v,
            (Compare::Int(i), _) => *i == 0,
            (Compare::Float(f), Some(Value::Double(v))) => *f == v,
            (Compare::Float(f), _) => *f == 0.0,
            (Compare::Bool(b), Some(Value::Bool(v))) => *b == v,
            (Compare::Bool(b), _) => !*b,
            (Compare::Regex(r), Some(Value::String(v))) => r.is_match(v),
            (Compare::Regex(r), _) => r.is_match(""),
        }
    })
}

impl IntrinsicTest {
    fn matches(&self, span: &Span<'_>) -> bool {
        let status = span.status_code;
        match self {
            IntrinsicTest::Name(name) => span.name == name,
            IntrinsicTest::Code(Intrinsic::Kind, kind) => span.kind == *kind,
            IntrinsicTest::Code(_, code) => status == *code,
            IntrinsicTest::Regex(Intrinsic::Name, r) => r.is_match(span.name),
            IntrinsicTest::Regex(Intrinsic::Status, r) => r.is_match(&status_code_name(status)),
            IntrinsicTest::Regex(Intrinsic::Kind, r) => r.is_match(&span_kind_string(span.kind)),
        }
    }
}

fn strict_intrinsic(which: Intrinsic, value: &MatchValue) -> Result<IntrinsicTest, String> {
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    let MatchValue::String(text) = value else {
        return Err(format!(
            "an intrinsic's value must be a string, not {value:?}"
        ));
    };
    match which {
        Intrinsic::Name => Ok(IntrinsicTest::Name(text.clone())),
        Intrinsic::Kind => SpanKind::from_str_name(text)
            .map(|k| IntrinsicTest::Code(which, k as i32))
            .ok_or_else(|| format!("unknown span kind {text:?} (write e.g. SPAN_KIND_SERVER)")),
        Intrinsic::Status => StatusCode::from_str_name(text)
            .map(|c| IntrinsicTest::Code(which, c as i32))
            .ok_or_else(|| format!("unknown status {text:?} (write e.g. STATUS_CODE_ERROR)")),
    }
}

/// A policy attribute's key, as TraceQL names it.
#[derive(Debug, PartialEq)]
enum Key {
    Intrinsic(Intrinsic),
    Attribute { resource: bool, name: String },
}

impl Key {
    fn parse(key: &str) -> Result<Key, String> {
        let intrinsic = |name: &str| match name {
            "name" => Some(Intrinsic::Name),
            "status" => Some(Intrinsic::Status),
            "kind" => Some(Intrinsic::Kind),
            _ => None,
        };
        if let Some(which) =
            intrinsic(key).or_else(|| key.strip_prefix("span:").and_then(intrinsic))
        {
            return Ok(Key::Intrinsic(which));
        }
        let (resource, name) = if let Some(name) = key.strip_prefix("span.") {
            (false, name)
        } else if let Some(name) = key.strip_prefix("resource.") {
            (true, name)
        } else {
            return Err(
                "supported: name, status, kind, span.<attribute>, resource.<attribute>".into(),
            );
        };
        // TraceQL quotes names with spaces or other special characters: span."my key".
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => name.to_string(),
        };
        if name.is_empty() {
            return Err("an attribute name is missing".into());
        }
        Ok(Key::Attribute { resource, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{int_attribute, string_attribute};
    use crate::wire::{EncodedAttributes, EncodedSpan};
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

    fn span(name: &str, kind: SpanKind, code: StatusCode, attributes: Vec<KeyValue>) -> Span {
        Span {
            name: name.into(),
            kind: kind as i32,
            status: Some(Status {
                code: code as i32,
                ..Default::default()
            }),
            attributes,
            ..Default::default()
        }
    }

    fn policies(toml_text: &str) -> Vec<FilterPolicy> {
        #[derive(Deserialize)]
        struct File {
            filter_policies: Vec<FilterPolicy>,
        }
        toml::from_str::<File>(toml_text)
            .expect("valid TOML")
            .filter_policies
    }

    #[test]
    fn policies_keep_and_drop_spans_as_tempo_does() {
        let health = span(
            "GET /healthz",
            SpanKind::Server,
            StatusCode::Unset,
            vec![
                string_attribute("http.route", "/healthz"),
                int_attribute("http.status_code", 200),
            ],
        );
        let order = span(
            "POST /orders",
            SpanKind::Server,
            StatusCode::Error,
            vec![
                string_attribute("http.route", "/orders"),
                int_attribute("http.status_code", 500),
            ],
        );
        let call = span("SELECT", SpanKind::Client, StatusCode::Ok, vec![]);
        let prod = [string_attribute("deployment.environment", "prod")];
        let dev = [string_attribute("deployment.environment", "dev")];
        // (policies, resource, span, kept)
        let cases: Vec<(&str, &[KeyValue], &Span, bool)> = vec![
            ("", &prod, &health, true),
            // The usual one: drop health checks.
            (
                r#"[[filter_policies]]
                   exclude = { match_type = "regex", attributes = [{ key = "span.http.route", value = "^/health" }] }"#,
                &prod,
                &health,
                false,
            ),
            (
                r#"[[filter_policies]]
                   exclude = { match_type = "regex", attributes = [{ key = "span.http.route", value = "^/health" }] }"#,
                &prod,
                &order,
                true,
            ),
            // Strict by type: an int only equals an int attribute.
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "span.http.status_code", value = 500 }] }"#,
                &prod,
                &order,
                true,
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "span.http.status_code", value = "500" }] }"#,
                &prod,
                &order,
                false,
            ),
            // Intrinsics, and every attribute of a match must hold.
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "kind", value = "SPAN_KIND_SERVER" }, { key = "status", value = "STATUS_CODE_ERROR" }] }"#,
                &prod,
                &order,
                true,
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "kind", value = "SPAN_KIND_SERVER" }, { key = "status", value = "STATUS_CODE_ERROR" }] }"#,
                &prod,
                &health,
                false,
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "regex", attributes = [{ key = "kind", value = "SPAN_KIND_(CLIENT|PRODUCER)" }] }"#,
                &prod,
                &call,
                true,
            ),
            // Resource attributes; a span with no attributes fails a span-attribute test.
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "resource.deployment.environment", value = "prod" }] }"#,
                &dev,
                &order,
                false,
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "regex", attributes = [{ key = "span.http.route", value = ".*" }] }"#,
                &prod,
                &call,
                false,
            ),
            // Includes must all hold; one include_any is enough and wins over a failed include.
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "kind", value = "SPAN_KIND_SERVER" }] }
                   [[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "name", value = "POST /orders" }] }"#,
                &prod,
                &health,
                false,
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "name", value = "POST /orders" }] }
                   [[filter_policies]]
                   include_any = { match_type = "strict", attributes = [{ key = "span:name", value = "SELECT" }] }"#,
                &prod,
                &call,
                true,
            ),
            // Only include_any, and none matches: dropped.
            (
                r#"[[filter_policies]]
                   include_any = { match_type = "strict", attributes = [{ key = "span:name", value = "SELECT" }] }"#,
                &prod,
                &order,
                false,
            ),
            // Exclude wins over everything.
            (
                r#"[[filter_policies]]
                   include_any = { match_type = "strict", attributes = [{ key = "name", value = "SELECT" }] }
                   exclude = { match_type = "strict", attributes = [{ key = "status", value = "STATUS_CODE_OK" }] }"#,
                &prod,
                &call,
                false,
            ),
        ];
        for (text, resource, span, kept) in cases {
            let list = if text.is_empty() {
                vec![]
            } else {
                policies(text)
            };
            let filter = SpanFilter::new(&list).expect(text);
            let (encoded_resource, encoded_span) =
                (EncodedAttributes::new(resource), EncodedSpan::new(span));
            assert_eq!(
                filter.keeps(encoded_resource.view(), &encoded_span.view()),
                kept,
                "{text} on {}",
                span.name
            );
        }
    }

    #[test]
    fn only_the_first_attribute_of_a_name_is_compared() {
        let twice = span(
            "x",
            SpanKind::Server,
            StatusCode::Unset,
            vec![string_attribute("a", "one"), string_attribute("a", "two")],
        );
        let filter = SpanFilter::new(&policies(
            r#"[[filter_policies]]
               include = { match_type = "strict", attributes = [{ key = "span.a", value = "two" }] }"#,
        ))
        .unwrap();
        let (none, twice) = (EncodedAttributes::new(&[]), EncodedSpan::new(&twice));
        assert!(!filter.keeps(none.view(), &twice.view()));
    }

    #[test]
    fn policies_tempo_refuses_are_refused_with_a_reason() {
        for (text, wanted) in [
            ("[[filter_policies]]", "needs an include"),
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "duration", value = "1s" }] }"#,
                "supported: name, status, kind",
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "strict", attributes = [{ key = "kind", value = "SERVER" }] }"#,
                "unknown span kind",
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "regex", attributes = [{ key = "name", value = "(" }] }"#,
                "invalid regex",
            ),
            (
                r#"[[filter_policies]]
                   include = { match_type = "regex", attributes = [{ key = "span.a", value = 3 }] }"#,
                "must be a string",
            ),
        ] {
            let error = SpanFilter::new(&policies(text)).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
        }
        assert!(toml::from_str::<FilterPolicy>(
            r#"include = { match_type = "exact", attributes = [] }"#
        )
        .is_err());
    }

    #[test]
    fn quoted_attribute_names() {
        assert_eq!(
            Key::parse(r#"span."my key""#),
            Ok(Key::Attribute {
                resource: false,
                name: "my key".into()
            })
        );
        assert_eq!(
            Key::parse("resource.service.name"),
            Ok(Key::Attribute {
                resource: true,
                name: "service.name".into()
            })
        );
    }
}

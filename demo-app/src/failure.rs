//! The failure knob: `?fail=<name>` on a frontend endpoint makes that service fail, so errors
//! can be made to appear on a chosen edge of the graph. It travels downstream in a header (and
//! in order events). The name is parsed at the edge into a [`FailTarget`]; anything else is a
//! 400 that lists the valid names.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Role;

pub const FAIL_HEADER: &str = "x-demo-fail";

/// A service that can be told to fail: one of the roles, or a peer a role calls that has no
/// process of its own (the payment gateway, the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FailTarget {
    Role(Role),
    PaymentGateway,
    Postgres,
}

impl FailTarget {
    /// Every target, in the order the landing page offers them.
    pub const ALL: [FailTarget; 7] = [
        FailTarget::Role(Role::Frontend),
        FailTarget::Role(Role::Checkout),
        FailTarget::Role(Role::Inventory),
        FailTarget::Role(Role::Payments),
        FailTarget::PaymentGateway,
        FailTarget::Postgres,
        FailTarget::Role(Role::Notifications),
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailTarget::Role(role) => role.name(),
            FailTarget::PaymentGateway => "payment-gateway",
            FailTarget::Postgres => "postgres",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    fn valid_names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.name()).collect()
    }
}

impl TryFrom<String> for FailTarget {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        Self::parse(&name).ok_or_else(|| format!("unknown failure target {name:?}"))
    }
}

impl From<FailTarget> for String {
    fn from(target: FailTarget) -> String {
        target.name().into()
    }
}

/// Which service (if any) should fail while serving this request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fail(Option<FailTarget>);

impl Fail {
    pub fn new(target: Option<FailTarget>) -> Self {
        Self(target)
    }

    pub fn target(&self) -> Option<FailTarget> {
        self.0
    }

    /// Whether `target` is the one that should fail.
    pub fn hits(&self, target: FailTarget) -> bool {
        self.0 == Some(target)
    }

    /// Whether this role should fail.
    pub fn hits_role(&self, role: Role) -> bool {
        self.hits(FailTarget::Role(role))
    }
}

/// A `?fail=` (or `x-demo-fail`) value that names no known service: 400 with the valid names.
#[derive(Debug, PartialEq)]
pub struct InvalidFail {
    pub message: String,
}

impl IntoResponse for InvalidFail {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "valid": FailTarget::valid_names() });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// Longest value quoted back in an error message.
const QUOTE_AT_MOST: usize = 40;

/// Parses one `fail` value; empty means "no failure" (the landing page's default).
fn parse_value(value: &str) -> Result<Option<FailTarget>, InvalidFail> {
    if value.is_empty() {
        return Ok(None);
    }
    FailTarget::parse(value).map(Some).ok_or_else(|| {
        // Quoted with escapes ({:?}) and cut: control characters and huge values stay inert.
        let shown: String = value.chars().take(QUOTE_AT_MOST).collect();
        let cut = if value.chars().count() > QUOTE_AT_MOST {
            "…"
        } else {
            ""
        };
        InvalidFail {
            message: format!("fail={shown:?}{cut} names no service"),
        }
    })
}

/// The knob from a request's query string (`?fail=`), else from the header other services set.
pub fn from_parts(parts: &Parts) -> Result<Fail, InvalidFail> {
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "fail")
        .map(|(_, v)| v.as_str())
        .collect();
    match values[..] {
        [] => {}
        [value] => return parse_value(value).map(Fail),
        _ => {
            return Err(InvalidFail {
                message: "fail may be given once".into(),
            })
        }
    }
    match parts.headers.get(FAIL_HEADER) {
        None => Ok(Fail(None)),
        Some(value) => match value.to_str() {
            Ok(value) => parse_value(value).map(Fail),
            Err(_) => Err(InvalidFail {
                message: format!("{FAIL_HEADER} is not text"),
            }),
        },
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Fail {
    type Rejection = InvalidFail;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        from_parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, header: Option<&str>) -> Parts {
        let mut request = Request::builder().uri(uri);
        if let Some(value) = header {
            request = request.header(FAIL_HEADER, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_fail_extractor_takes_known_names_and_refuses_everything_else() {
        let long = format!("/chain?fail={}", "x".repeat(10_000));
        let ok = |t: Option<FailTarget>| Ok::<_, String>(Fail(t));
        let refused = |m: &str| Err::<Fail, String>(m.to_string());
        let cases: Vec<(&str, Option<&str>, Result<Fail, String>)> = vec![
            ("/chain", None, ok(None)),
            ("/chain?fail=", None, ok(None)),
            (
                "/chain?fail=payments",
                None,
                ok(Some(FailTarget::Role(Role::Payments))),
            ),
            (
                "/chain?fail=payment-gateway",
                None,
                ok(Some(FailTarget::PaymentGateway)),
            ),
            ("/chain?fail=postgres", None, ok(Some(FailTarget::Postgres))),
            (
                "/work",
                Some("inventory"),
                ok(Some(FailTarget::Role(Role::Inventory))),
            ),
            (
                "/chain?fail=bogus",
                None,
                refused("fail=\"bogus\" names no service"),
            ),
            (
                "/chain?fail=%0A",
                None,
                refused("fail=\"\\n\" names no service"),
            ),
            (
                "/chain?fail=pay%00ments",
                None,
                refused("fail=\"pay\\0ments\" names no service"),
            ),
            (
                "/chain?fail=Payments",
                None,
                refused("fail=\"Payments\" names no service"),
            ),
            (
                "/chain?fail=%3Cscript%3E",
                None,
                refused("fail=\"<script>\" names no service"),
            ),
            (
                &long,
                None,
                refused(&format!("fail={:?}… names no service", "x".repeat(40))),
            ),
            (
                "/chain?fail=payments&fail=inventory",
                None,
                refused("fail may be given once"),
            ),
            (
                "/chain?fail=payments&fail=payments",
                None,
                refused("fail may be given once"),
            ),
            (
                "/work",
                Some("nobody"),
                refused("fail=\"nobody\" names no service"),
            ),
            // The query wins over the header.
            (
                "/chain?fail=checkout",
                Some("inventory"),
                ok(Some(FailTarget::Role(Role::Checkout))),
            ),
        ];
        let mut wrong = Vec::new();
        for (uri, header, want) in cases {
            let got = from_parts(&parts(uri, header)).map_err(|e| e.message);
            if got != want {
                wrong.push(format!("{uri:.60} {header:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn every_target_has_a_unique_name_that_parses_back() {
        for target in FailTarget::ALL {
            assert_eq!(FailTarget::parse(target.name()), Some(target));
        }
        let names = FailTarget::valid_names();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}

//! The failure knob: `?fail=<role>` on a frontend endpoint makes that role fail, so errors can
//! be made to appear on a chosen edge of the graph. It travels downstream in a header.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

pub const FAIL_HEADER: &str = "x-demo-fail";

/// Which service (if any) should fail while serving this request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fail(Option<String>);

impl Fail {
    pub fn new(target: Option<&str>) -> Self {
        Self(target.filter(|t| !t.is_empty()).map(String::from))
    }

    pub fn target(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether `service` is the one that should fail.
    pub fn hits(&self, service: &str) -> bool {
        self.0.as_deref() == Some(service)
    }
}

#[derive(Deserialize)]
struct FailQuery {
    fail: Option<String>,
}

/// Read from `?fail=` or, between services, from the `x-demo-fail` header.
impl<S: Send + Sync> FromRequestParts<S> for Fail {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let from_query = Query::<FailQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.fail);
        let from_header = || {
            parts
                .headers
                .get(FAIL_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Ok(Fail::new(from_query.or_else(from_header).as_deref()))
    }
}

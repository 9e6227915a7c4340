//! Where spans come in: OTLP/gRPC and OTLP/HTTP. Both decode, then hand the request to
//! [`Intake`], which validates it, feeds the engine and queues it for forwarding.

pub mod grpc;
pub mod http;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::engine::Engine;
use crate::export::traces::TraceQueue;
use crate::selfmetrics::SelfMetrics;

/// How long clients are asked to wait when the forwarding queue is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

/// A request taken in; `rejected_spans` were invalid and left out (a partial success).
#[derive(Debug, PartialEq)]
pub struct Accepted {
    pub rejected_spans: i64,
    pub message: String,
}

impl Accepted {
    /// The OTLP answer: `partial_success` only when spans were rejected, as the spec asks.
    pub fn into_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected_spans > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: self.rejected_spans,
                error_message: self.message,
            }),
        }
    }
}

/// Why a request was not taken.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("forwarding queue is full ({queued} spans waiting), retry later")]
    QueueFull { queued: usize },
}

/// Shared by both receivers.
pub struct Intake {
    engine: Arc<Mutex<Engine>>,
    queue: Option<TraceQueue>,
    metrics: Arc<SelfMetrics>,
    pub max_message_bytes: usize,
}

impl Intake {
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        queue: Option<TraceQueue>,
        metrics: Arc<SelfMetrics>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            engine,
            queue,
            metrics,
            max_message_bytes,
        }
    }

    /// Counts a request by outcome.
    pub fn count_request(&self, protocol: Protocol, outcome: &'static str) {
        self.metrics
            .requests
            .get_or_create(&vec![("protocol", protocol.as_str()), ("outcome", outcome)])
            .inc();
    }

    fn count_refused_spans(&self, protocol: Protocol, reason: &'static str, spans: usize) {
        if spans > 0 {
            self.metrics
                .spans_refused
                .get_or_create(&vec![("protocol", protocol.as_str()), ("reason", reason)])
                .inc_by(spans as u64);
        }
    }

    /// Validates, then (room permitting) feeds the engine and queues for forwarding. A request
    /// refused for a full queue touches neither, so the client's retry is not counted twice.
    pub fn accept(
        &self,
        protocol: Protocol,
        mut request: ExportTraceServiceRequest,
    ) -> Result<Accepted, Refused> {
        let (invalid, first_problem) = remove_invalid_spans(&mut request);
        let valid: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.count_refused_spans(protocol, "invalid", invalid);
        if invalid > 0 && valid == 0 {
            self.count_request(protocol, "invalid");
            return Err(Refused::Invalid(format!(
                "all {invalid} spans are invalid; first: {}",
                first_problem.unwrap_or_default()
            )));
        }

        let reservation = match (&self.queue, valid) {
            (Some(queue), 1..) => match queue.try_reserve(valid) {
                Some(r) => Some((queue, r)),
                None => {
                    self.count_refused_spans(protocol, "queue_full", valid);
                    self.count_request(protocol, "queue_full");
                    return Err(Refused::QueueFull {
                        queued: queue.len(),
                    });
                }
            },
            _ => None,
        };

        self.engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(&request.resource_spans);
        if let Some((queue, reservation)) = reservation {
            queue.push(request, reservation);
        }
        self.metrics
            .spans_received
            .get_or_create(&vec![("protocol", protocol.as_str())])
            .inc_by(valid as u64);
        if invalid > 0 {
            self.count_request(protocol, "partial");
            Ok(Accepted {
                rejected_spans: invalid as i64,
                message: format!(
                    "{invalid} invalid spans rejected; first: {}",
                    first_problem.unwrap_or_default()
                ),
            })
        } else {
            self.count_request(protocol, "accepted");
            Ok(Accepted {
                rejected_spans: 0,
                message: String::new(),
            })
        }
    }
}

/// What is wrong with a span's ids, if anything (OTLP: 16-byte non-zero trace id, 8-byte
/// non-zero span id, parent empty or 8 bytes).
fn span_problem(span: &Span) -> Option<String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "trace id must be 16 non-zero bytes, got {} bytes",
            span.trace_id.len()
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "span id must be 8 non-zero bytes, got {} bytes",
            span.span_id.len()
        ));
    }
    if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        return Some(format!(
            "parent span id must be empty or 8 bytes, got {} bytes",
            span.parent_span_id.len()
        ));
    }
    None
}

/// Drops invalid spans in place; returns how many and the first problem found.
fn remove_invalid_spans(request: &mut ExportTraceServiceRequest) -> (usize, Option<String>) {
    let mut removed = 0;
    let mut first = None;
    for ss in request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
    {
        ss.spans.retain(|span| match span_problem(span) {
            None => true,
            Some(problem) => {
                removed += 1;
                first.get_or_insert(format!("span {:?}: {problem}", span.name));
                false
            }
        });
    }
    (removed, first)
}

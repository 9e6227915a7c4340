//! The intake, shared by both receivers: a request's bytes are checked against the queue's room
//! before they are decoded, then validated, queued for forwarding as the bytes that arrived
//! (re-encoded only when invalid spans were taken out or the body was JSON), and only once
//! queued fed to the engine, so a refused request's retry is not counted twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::queue::{QueueError, SpanQueue};
use crate::receiver::admission::{Admission, Admissions, Busy};
use crate::selfmetrics::{Protocol, RefuseReason, RequestOutcome, SelfMetrics};
use crate::tenants::{Tenant, TenantRef, TenantRefused, Tenants};
use crate::wire::{id_problem, Batch, BatchBuffers, Fallback, Request, Tally};

/// How long clients are asked to wait when the forwarding queue is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long a new tenant is asked to wait while `--max-tenants` tenants have engines (an idle
/// one is forgotten once its series are stale).
pub const TENANT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A request body as it arrived (decompressed).
#[derive(Debug, Clone)]
pub enum Body {
    Protobuf(Bytes),
    Json(Bytes),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Protobuf(b) | Body::Json(b) => b.len(),
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
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Decoded, but no span in it is valid.
    #[error("{0}")]
    Invalid(String),
    /// Not a decodable OTLP request.
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    QueueFull(QueueError),
    /// The persistent queue could not be written; nothing was taken.
    #[error("{0}")]
    QueueUnavailable(QueueError),
    /// Too many requests or bytes in flight; refused before the body was read.
    #[error("{0}")]
    Busy(Busy),
    /// No tenant, an invalid one, or one too many; refused before the body was read.
    #[error("{0}")]
    Tenant(TenantRefused),
}

impl Refused {
    /// How a request refused so is counted.
    pub fn outcome(&self) -> RequestOutcome {
        match self {
            Refused::Invalid(_) => RequestOutcome::invalid,
            Refused::Malformed(_) => RequestOutcome::malformed,
            Refused::QueueFull(_) => RequestOutcome::queue_full,
            Refused::QueueUnavailable(_) => RequestOutcome::queue_unavailable,
            Refused::Busy(_) => RequestOutcome::busy,
            Refused::Tenant(TenantRefused::Missing) => RequestOutcome::tenant_missing,
            Refused::Tenant(TenantRefused::Invalid(_)) => RequestOutcome::tenant_invalid,
            Refused::Tenant(TenantRefused::TooMany { .. }) => RequestOutcome::tenant_limit,
        }
    }
}

impl Refused {
    /// How long a client is asked to wait before it tries again (where it may).
    pub fn retry_after(&self) -> Duration {
        match self {
            Refused::Tenant(TenantRefused::TooMany { .. }) => TENANT_RETRY_AFTER,
            _ => RETRY_AFTER,
        }
    }
}

/// How a request the intake took or refused is counted: the one mapping of a result to its
/// outcome.
pub fn outcome_of(result: &Result<Accepted, Refused>) -> RequestOutcome {
    match result {
        Ok(a) if a.rejected_spans > 0 => RequestOutcome::partial,
        Ok(_) => RequestOutcome::accepted,
        Err(refused) => refused.outcome(),
    }
}

impl From<QueueError> for Refused {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full { .. } => Refused::QueueFull(e),
            QueueError::Io(_) => Refused::QueueUnavailable(e),
        }
    }
}

/// How large requests may be, and how many and how much may be in flight.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_message_bytes: usize,
    pub max_inflight_bytes: usize,
    pub max_concurrent_requests: usize,
}

/// Shared by both receivers.
pub struct Intake {
    tenants: Arc<Tenants>,
    queue: Option<SpanQueue>,
    metrics: Arc<SelfMetrics>,
    admissions: Admissions,
    pub max_message_bytes: usize,
}

impl Intake {
    pub fn new(
        tenants: Arc<Tenants>,
        queue: Option<SpanQueue>,
        metrics: Arc<SelfMetrics>,
        limits: RequestLimits,
    ) -> Self {
        Self {
            tenants,
            queue,
            admissions: Admissions::new(
                limits.max_inflight_bytes,
                limits.max_concurrent_requests,
                limits.max_message_bytes,
                metrics.clone(),
            ),
            metrics,
            max_message_bytes: limits.max_message_bytes,
        }
    }

    /// Lets a request in before its body is read (`announced`: its Content-Length, if any),
    /// or refuses it, counted, when too many requests or bytes are in flight.
    pub fn admit(
        &self,
        protocol: Protocol,
        announced: Option<usize>,
        compressed: bool,
    ) -> Result<Admission, Refused> {
        let bytes = self.admissions.estimate(announced, compressed);
        self.admissions.try_admit(bytes).map_err(|busy| {
            let refused = Refused::Busy(busy);
            self.metrics.count_request(protocol, refused.outcome());
            refused
        })
    }

    pub fn metrics(&self) -> &SelfMetrics {
        &self.metrics
    }

    /// The tenant a request's `X-Scope-OrgID` names (`None`: it has none), or its refusal,
    /// counted; decided before the body is read.
    pub fn tenant(&self, protocol: Protocol, header: Option<&[u8]>) -> Result<TenantRef, Refused> {
        self.tenants.resolve(header).map_err(|e| {
            let refused = Refused::Tenant(e);
            self.metrics.count_request(protocol, refused.outcome());
            refused
        })
    }

    /// Refuses a request before its body is read when the queue has no room for it
    /// (`bytes`: its announced size, if any), counting it. The cheapest refusal there is.
    pub fn refuse_early(&self, protocol: Protocol, bytes: Option<usize>) -> Option<Refused> {
        let queue = self.queue.as_ref()?;
        if queue.has_room(bytes.unwrap_or(1)) {
            return None;
        }
        let refused = Refused::QueueFull(queue.full_error());
        self.metrics.count_request(protocol, refused.outcome());
        Some(refused)
    }

    /// Takes a request, counting its outcome. A request refused for a full queue is refused
    /// before it is decoded and touches neither the engine nor the queue, so the client's
    /// retry is not counted twice.
    pub async fn accept(
        &self,
        protocol: Protocol,
        tenant: &Tenant,
        body: Body,
    ) -> Result<Accepted, Refused> {
        let result = self.try_accept(protocol, tenant, body).await;
        self.metrics.count_request(protocol, outcome_of(&result));
        result
    }

    async fn try_accept(
        &self,
        protocol: Protocol,
        tenant: &Tenant,
        body: Body,
    ) -> Result<Accepted, Refused> {
        let reservation = match &self.queue {
            // Refused before decoding: only the request is counted, its spans are unknown.
            Some(queue) => Some(queue.try_reserve(body.len())?),
            None => None,
        };
        let mut decoded = decode(&body).inspect_err(|refused| {
            if let (Refused::Malformed(_), Body::Protobuf(_)) = (refused, &body) {
                // The reader refuses whatever prost refuses: it left the body to prost.
                self.metrics.count_fallback(Fallback::Malformed);
            }
        })?;
        let (valid, invalid) = (decoded.valid, decoded.invalid);
        let first_problem = decoded.first_problem.take().unwrap_or_default();
        if let Some(reason) = decoded.fallback {
            self.metrics.count_fallback(reason);
        }
        self.metrics
            .count_refused(protocol, RefuseReason::invalid, invalid);
        if invalid > 0 && valid == 0 {
            return Err(Refused::Invalid(format!(
                "all {invalid} spans are invalid; first: {first_problem}"
            )));
        }

        if let (Some(reservation), 1..) = (reservation, valid) {
            decoded.release_parsed_over(KEPT_WHILE_QUEUED_PER_BYTE * body.len());
            if let Err(e) = reservation
                .commit(Some(tenant.id.clone()), decoded.forward.clone(), valid)
                .await
            {
                let reason = match e {
                    QueueError::Full { .. } => RefuseReason::queue_full,
                    QueueError::Io(_) => RefuseReason::queue_unavailable,
                };
                self.metrics.count_refused(protocol, reason, valid);
                return Err(e.into());
            }
        }
        count(tenant, &mut decoded);
        tenant.count_received(valid);
        self.metrics
            .spans_received
            .get_or_create(&crate::selfmetrics::ProtocolLabels { protocol })
            .inc_by(valid as u64);
        Ok(if invalid > 0 {
            Accepted {
                rejected_spans: invalid as i64,
                message: format!("{invalid} invalid spans rejected; first: {first_problem}"),
            }
        } else {
            Accepted {
                rejected_spans: 0,
                message: String::new(),
            }
        })
    }
}

thread_local! {
    /// The buffers this thread reads requests' spans into, reused. A few: a request read on
    /// this thread may wait for the queue while the thread reads others.
    static BATCH_BUFFERS: std::cell::RefCell<Vec<BatchBuffers>> = Default::default();
}

/// How many buffers a thread keeps for reuse, and the most memory each may hold (larger ones,
/// left by a rare huge request, are freed).
const POOLED_BATCH_BUFFERS: usize = 4;
const POOLED_BATCH_BYTES: usize = 4 << 20;

/// While a request waits for the queue, its parsed spans are kept only when their buffers hold
/// at most this many times the request's bytes, so that what waits stays within a multiple of
/// `--max-inflight-bytes`. (Spans of ids, times and a name alone take about four times their
/// bytes, the shop's about 1.6 times: a test.) Otherwise they are parsed again once queued.
const KEPT_WHILE_QUEUED_PER_BYTE: usize = 2;

fn take_batch_buffers() -> BatchBuffers {
    BATCH_BUFFERS.with_borrow_mut(|pool| pool.pop().unwrap_or_default())
}

fn give_back(buffers: BatchBuffers) {
    if buffers.bytes_held() > POOLED_BATCH_BYTES {
        return;
    }
    // `try_with`: a request dropped while its thread exits finds no pool, and frees them.
    let _ = BATCH_BUFFERS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_BATCH_BUFFERS {
            pool.push(buffers);
        }
    });
}

fn give_back_batch(batch: Batch<'_>) {
    let mut buffers = BatchBuffers::default();
    buffers.recycle(batch);
    give_back(buffers);
}

/// Counts a request in its tenant's engine. Its spans were parsed on this thread (by the
/// reader's check, or here after prost), so the engine's locks are held only while the
/// processors run: its first stage (filters and the service graph), then its second (span
/// metrics and host info), while another thread's request may be in the other.
pub fn count(tenant: &Tenant, decoded: &mut Decoded<'_>) {
    let mut batch = match decoded.batch.take() {
        Some(batch) => batch,
        None => take_batch_buffers().parse(&decoded.request()),
    };
    tenant.push_parsed(&mut batch);
    give_back_batch(batch);
}

/// A request read, without its invalid spans.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// What is forwarded: the body as it arrived, unless it was JSON or spans were taken out of
    /// it (then prost's encoding of what is left).
    pub forward: Bytes,
    /// What the engine reads: `forward` when it was read in place, else prost's encoding.
    counted: Bytes,
    /// The spans of `counted`, parsed by the reader's check when it read the body in place
    /// (else parsed when counted).
    batch: Option<Batch<'a>>,
    pub valid: usize,
    pub invalid: usize,
    /// The first invalid span's problem, for the client's message.
    pub first_problem: Option<String>,
    /// Why prost decoded a protobuf body instead of the borrowed reader (`None`: read in
    /// place, or JSON).
    pub fallback: Option<Fallback>,
}

impl Drop for Decoded<'_> {
    /// A request refused after it was read (its queue failed, its client went away) gives its
    /// parsed spans' buffers back too.
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            give_back_batch(batch);
        }
    }
}

impl<'a> Decoded<'a> {
    /// The engine's view of the request.
    pub fn request(&self) -> Request<'_> {
        // Checked by the reader, or encoded by prost.
        Request::trusted(&self.counted)
    }

    /// Gives the parsed spans' buffers back if they hold more than `max_bytes` (they are then
    /// parsed again when counted).
    fn release_parsed_over(&mut self, max_bytes: usize) {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.bytes_held() > max_bytes)
        {
            give_back_batch(self.batch.take().expect("just seen"));
        }
    }

    /// The spans the reader's check parsed, when it read the body in place (until counted).
    pub fn parsed(&mut self) -> Option<&mut Batch<'a>> {
        self.batch.as_mut()
    }
}

/// Reads a request body and takes out its invalid spans: the one decode path of both
/// receivers (and of the fuzz target). A protobuf body is read in place by the borrowed
/// reader ([`crate::wire`]); prost decodes what the reader leaves to it (see
/// [`Fallback`]), JSON, and a request with invalid spans to take out.
pub fn decode(body: &Body) -> Result<Decoded<'_>, Refused> {
    let fallback = match body {
        Body::Protobuf(bytes) => {
            let mut buffers = take_batch_buffers();
            match buffers.read(bytes) {
                Ok((batch, Tally { spans, bad_ids: 0 })) => {
                    return Ok(Decoded {
                        forward: bytes.clone(),
                        counted: bytes.clone(),
                        batch: Some(batch),
                        valid: spans,
                        invalid: 0,
                        first_problem: None,
                        fallback: None,
                    })
                }
                // Spans to take out: prost re-encodes what is left.
                Ok((batch, _)) => {
                    give_back_batch(batch);
                    None
                }
                Err(fallback) => {
                    // The read gave its buffers back.
                    give_back(buffers);
                    Some(fallback)
                }
            }
        }
        Body::Json(_) => None,
    };
    let mut request = match body {
        // From a slice: decoding from `Bytes` would clone and drop a reference for every id
        // and string field (measurable under load).
        Body::Protobuf(bytes) => ExportTraceServiceRequest::decode(&bytes[..])
            .map_err(|e| Refused::Malformed(format!("invalid protobuf: {e}")))?,
        Body::Json(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| Refused::Malformed(format!("invalid OTLP/JSON: {e}")))?,
    };
    let (invalid, first_problem) = remove_invalid_spans(&mut request);
    let valid = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let counted = Bytes::from(request.encode_to_vec());
    let forward = match body {
        Body::Protobuf(bytes) if invalid == 0 => bytes.clone(),
        _ => counted.clone(),
    };
    Ok(Decoded {
        forward,
        counted,
        batch: None,
        valid,
        invalid,
        first_problem,
        fallback,
    })
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
        ss.spans.retain(|span| {
            match id_problem(&span.trace_id, &span.span_id, &span.parent_span_id) {
                None => true,
                Some(problem) => {
                    removed += 1;
                    first.get_or_insert(format!("span {:?}: {problem}", span.name));
                    false
                }
            }
        });
    }
    (removed, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans counted by `tenant`'s span metrics.
    fn calls(tenant: &Tenant) -> f64 {
        let families = tenant.engine().families();
        crate::series::counter_total(&families, "traces_spanmetrics_calls_total")
    }

    #[test]
    fn parsed_spans_wait_for_the_queue_only_when_they_hold_at_most_twice_the_request() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let now = 1_700_000_000_000_000_000;
        let shop = ExportTraceServiceRequest {
            resource_spans: crate::workload::ShopTraces::new(7).request(100, now),
        };
        // Spans of ids, times and a name, no attributes: several times their bytes parsed.
        let bare = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (1..=2_000u64)
                        .map(|i| Span {
                            trace_id: [&[1; 8][..], &i.to_be_bytes()].concat(),
                            span_id: i.to_be_bytes().to_vec(),
                            name: "a".into(),
                            start_time_unix_nano: now - 1_000,
                            end_time_unix_nano: now,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        for (what, request, kept) in [("the shop's", shop, true), ("bare", bare, false)] {
            let body = Body::Protobuf(request.encode_to_vec().into());
            let mut decoded = decode(&body).unwrap();
            let valid = decoded.valid;
            decoded.release_parsed_over(KEPT_WHILE_QUEUED_PER_BYTE * body.len());
            assert_eq!(decoded.parsed().is_some(), kept, "{what}");
            // Counted all the same: parsed again when released.
            let engine = crate::engine::Engine::new(
                Default::default(),
                Some(Default::default()),
                Arc::new(crate::clock::ManualClock::new(now)),
            )
            .unwrap();
            let tenant = Tenant::new(crate::tenants::TenantId::parse("t").unwrap(), engine);
            count(&tenant, &mut decoded);
            assert_eq!(calls(&tenant), valid as f64, "{what}");
        }
    }

    fn spans(decoded: &Decoded) -> Vec<(Vec<u8>, String)> {
        decoded
            .request()
            .spans()
            .map(|s| (s.span_id.to_vec(), s.name.to_string()))
            .collect()
    }

    #[test]
    fn a_request_is_read_in_place_or_by_prost_and_forwarded_as_it_came_unless_cut() {
        let request = ExportTraceServiceRequest {
            resource_spans: crate::workload::client_server_request(2),
        };
        let canonical = Bytes::from(request.encode_to_vec());
        let body = Body::Protobuf(canonical.clone());
        let in_place = decode(&body).unwrap();
        assert_eq!((in_place.fallback, in_place.valid), (None, 4));
        assert_eq!(in_place.forward, canonical);

        // An unknown field appended to the last span (the last bytes of the request): prost
        // decodes it, the engine sees the same spans, the bytes go on as they came.
        let mut unusual = request.clone();
        let last = unusual.resource_spans.last_mut().unwrap();
        let span = last.scope_spans[0].spans.pop().unwrap();
        let mut span_bytes = span.encode_to_vec();
        span_bytes.extend_from_slice(&[0xa8, 0x06, 0x01]); // field 101 = 1
        let mut scope = last.scope_spans[0].encode_to_vec();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut scope);
        prost::encoding::encode_varint(span_bytes.len() as u64, &mut scope);
        scope.extend_from_slice(&span_bytes);
        last.scope_spans.clear();
        let mut rs = last.encode_to_vec();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut rs);
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend_from_slice(&scope);
        unusual.resource_spans.pop();
        let mut body = unusual.encode_to_vec();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(rs.len() as u64, &mut body);
        body.extend_from_slice(&rs);
        let body = Bytes::from(body);
        let unusual_body = Body::Protobuf(body.clone());
        let by_prost = decode(&unusual_body).unwrap();
        assert_eq!(by_prost.fallback, Some(Fallback::NotCanonical));
        assert_eq!(by_prost.forward, body, "forwarded as it came");
        assert_eq!(
            spans(&by_prost),
            spans(&in_place),
            "the engine sees the same spans"
        );

        // A span with a bad id is cut out: what is forwarded and counted is prost's encoding.
        let mut cut = request.clone();
        cut.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
        let cut_body = Body::Protobuf(cut.encode_to_vec().into());
        let decoded = decode(&cut_body).unwrap();
        assert_eq!((decoded.valid, decoded.invalid), (3, 1));
        assert!(decoded
            .first_problem
            .as_deref()
            .unwrap()
            .contains("span id must be 8 non-zero bytes"));
        let forwarded = ExportTraceServiceRequest::decode(&decoded.forward[..]).unwrap();
        assert_eq!(
            forwarded
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum::<usize>(),
            3
        );
        assert_eq!(spans(&decoded).len(), 3);

        let malformed = Body::Protobuf(Bytes::from_static(&[0x0a, 0x05, 0x01]));
        assert!(matches!(decode(&malformed), Err(Refused::Malformed(_))));
    }
}

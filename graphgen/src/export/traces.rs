//! Forwarding spans to the traces endpoint (Tempo) over OTLP/gRPC: a bounded queue counted in
//! spans, batching, and retries with exponential backoff on the codes the OTLP spec calls
//! retryable. A full queue is reported to the receivers, which push back on their clients, so
//! nothing is dropped silently; what is given up on is counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::selfmetrics::SelfMetrics;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches stop growing past this size, well under the 4 MiB gRPC receive limit of Tempo's
/// OTLP receiver (a single request may still be up to `--max-message-bytes`).
const MAX_BATCH_BYTES: usize = 2 << 20;

struct Item {
    request: ExportTraceServiceRequest,
    spans: usize,
    /// Holds the item's place in the queue until it is sent or given up on.
    _permit: OwnedSemaphorePermit,
}

/// The sending side, shared by the receivers.
#[derive(Clone)]
pub struct TraceQueue {
    tx: mpsc::UnboundedSender<Item>,
    room: Arc<Semaphore>,
    capacity: usize,
    metrics: Arc<SelfMetrics>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
}

/// A reserved place for `spans` spans; dropping it gives the place back.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    spans: usize,
}

impl TraceQueue {
    /// Reserves room for `spans` spans, or `None` when the queue is full. A request larger than
    /// the whole queue is let in when the queue is empty, so it is never refused forever.
    pub fn try_reserve(&self, spans: usize) -> Option<Reservation> {
        let want = spans.clamp(1, self.capacity) as u32;
        match self.room.clone().try_acquire_many_owned(want) {
            Ok(permit) => Some(Reservation { permit, spans }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    pub fn push(&self, request: ExportTraceServiceRequest, reservation: Reservation) {
        let item = Item {
            request,
            spans: reservation.spans,
            _permit: reservation.permit,
        };
        if let Err(mpsc::error::SendError(item)) = self.tx.send(item) {
            // Only after shutdown has closed the exporter; the spans are counted, not lost silently.
            self.drop_spans("shutdown", item.spans);
        }
        self.update_gauge();
    }

    /// Spans queued or being sent.
    pub fn len(&self) -> usize {
        self.capacity - self.room.available_permits()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// False after an export attempt failed, until one succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn update_gauge(&self) {
        self.metrics.queue_spans.set(self.len() as i64);
    }

    fn drop_spans(&self, reason: &'static str, spans: usize) {
        tracing::error!(
            spans,
            reason,
            "spans dropped, not forwarded to the traces endpoint"
        );
        self.metrics
            .export_dropped_spans
            .get_or_create(&vec![("reason", reason)])
            .inc_by(spans as u64);
    }
}

/// Retry settings of the exporter.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial_backoff: Duration,
    /// `None`: retry until shutdown.
    pub max_elapsed: Option<Duration>,
}

/// The receiving side: one task that batches and sends.
pub struct TraceExporter {
    rx: mpsc::UnboundedReceiver<Item>,
    queue: TraceQueue,
    client: TraceServiceClient<Channel>,
    batch_spans: usize,
    retry: Retry,
}

/// Builds the queue and its exporter for `endpoint` (connects lazily, so a down Tempo does not
/// stop graphgen from starting).
pub fn channel(
    endpoint: &str,
    capacity: usize,
    batch_spans: usize,
    retry: Retry,
    metrics: Arc<SelfMetrics>,
) -> Result<(TraceQueue, TraceExporter), InvalidEndpoint> {
    let channel = Channel::from_shared(endpoint.to_string())
        .map_err(|e| InvalidEndpoint(endpoint.to_string(), e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(EXPORT_TIMEOUT)
        .connect_lazy();
    let (tx, rx) = mpsc::unbounded_channel();
    metrics.queue_capacity_spans.set(capacity as i64);
    let queue = TraceQueue {
        tx,
        room: Arc::new(Semaphore::new(capacity)),
        capacity,
        metrics,
        healthy: Arc::new(true.into()),
    };
    let exporter = TraceExporter {
        rx,
        queue: queue.clone(),
        client: TraceServiceClient::new(channel).max_decoding_message_size(64 << 20),
        batch_spans,
        retry,
    };
    Ok((queue, exporter))
}

#[derive(Debug, thiserror::Error)]
#[error("invalid traces endpoint {0:?}: {1}")]
pub struct InvalidEndpoint(String, String);

/// What the exporter was told to do on shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub deadline: Instant,
}

impl TraceExporter {
    /// Sends until `drain` fires, then keeps sending what is queued until its deadline; what
    /// cannot be sent by then is counted as dropped (reason `shutdown`).
    pub async fn run(mut self, mut drain: watch::Receiver<Option<Drain>>) {
        loop {
            if drain.borrow().is_some() {
                break;
            }
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => self.send_batch(item, &drain).await,
                    None => break,
                },
                changed = drain.changed() => {
                    if changed.is_err() {
                        break; // the service is gone: flush with no time left
                    }
                }
            }
        }
        // Nothing new arrives after the receivers stopped; flush the rest.
        self.rx.close();
        while let Some(item) = self.rx.recv().await {
            if deadline_of(&drain).is_none_or(|d| Instant::now() < d) {
                self.send_batch(item, &drain).await;
            } else {
                self.queue.drop_spans("shutdown", item.spans);
            }
        }
        self.queue.update_gauge();
    }

    /// Sends `first` plus whatever else is queued, up to the batch size.
    async fn send_batch(&mut self, first: Item, drain: &watch::Receiver<Option<Drain>>) {
        let mut items = vec![first];
        let mut spans = items[0].spans;
        let mut bytes = items[0].request.encoded_len();
        while spans < self.batch_spans && bytes < MAX_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(item) => {
                    spans += item.spans;
                    bytes += item.request.encoded_len();
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let mut request = ExportTraceServiceRequest::default();
        for item in &mut items {
            request
                .resource_spans
                .append(&mut item.request.resource_spans);
        }
        self.send_with_retry(request, spans, drain.clone()).await;
        drop(items);
        self.queue.update_gauge();
    }

    /// Retries until sent, given up, or out of time: the shutdown deadline (once `drain` sets
    /// one, also while waiting between attempts) bounds every attempt and every wait.
    async fn send_with_retry(
        &mut self,
        request: ExportTraceServiceRequest,
        spans: usize,
        mut drain: watch::Receiver<Option<Drain>>,
    ) {
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let metrics = self.queue.metrics.clone();
        let outcome = |o: &'static str| {
            metrics
                .export_requests
                .get_or_create(&vec![("outcome", o)])
                .inc()
        };
        loop {
            let attempt = self.client.export(request.clone());
            let result = match deadline_of(&drain) {
                Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => {
                        self.queue.drop_spans("shutdown", spans);
                        return;
                    }
                },
                None => attempt.await,
            };
            match result {
                Ok(response) => {
                    outcome("success");
                    self.queue.healthy.store(true, Ordering::Relaxed);
                    let rejected = response
                        .into_inner()
                        .partial_success
                        .map_or(0, |p| p.rejected_spans.max(0) as usize)
                        .min(spans);
                    if rejected > 0 {
                        self.queue.drop_spans("rejected_by_backend", rejected);
                    }
                    metrics.export_sent_spans.inc_by((spans - rejected) as u64);
                    return;
                }
                Err(status) => {
                    outcome("failure");
                    self.queue.healthy.store(false, Ordering::Relaxed);
                    let Some(server_delay) = retry_delay(&status) else {
                        tracing::error!(code = ?status.code(), message = status.message(), "traces endpoint refused a batch for good");
                        self.queue.drop_spans("non_retryable", spans);
                        return;
                    };
                    let delay = server_delay.unwrap_or(backoff).min(MAX_BACKOFF);
                    if self
                        .retry
                        .max_elapsed
                        .is_some_and(|max| started.elapsed() + delay > max)
                    {
                        self.queue.drop_spans("retries_exhausted", spans);
                        return;
                    }
                    if deadline_of(&drain).is_some_and(|d| Instant::now() + delay > d) {
                        self.queue.drop_spans("shutdown", spans);
                        return;
                    }
                    tracing::warn!(code = ?status.code(), message = status.message(), ?delay, "export failed, retrying");
                    metrics.export_retries.inc();
                    // A shutdown request cuts the wait short: the deadline is checked again.
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        changed = drain.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep(delay).await;
                            }
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The shutdown deadline, once shutdown has been asked for.
fn deadline_of(drain: &watch::Receiver<Option<Drain>>) -> Option<Instant> {
    drain.borrow().map(|d| d.deadline)
}

/// `None` if the status must not be retried; else the delay the server asked for, if any.
/// Follows the OTLP spec: RESOURCE_EXHAUSTED is retried only with a RetryInfo.
pub fn retry_delay(status: &tonic::Status) -> Option<Option<Duration>> {
    let retry_info = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Some(retry_info),
        Code::ResourceExhausted if retry_info.is_some() => Some(retry_info),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn retryable_codes_follow_the_otlp_spec() {
        let retry_info = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        let cases = [
            (tonic::Status::unavailable("down"), Some(None)),
            (tonic::Status::deadline_exceeded("slow"), Some(None)),
            (tonic::Status::resource_exhausted("too big"), None),
            (retry_info, Some(Some(Duration::from_secs(2)))),
            (tonic::Status::invalid_argument("bad"), None),
            (tonic::Status::internal("bug"), None),
            (tonic::Status::unauthenticated("who"), None),
        ];
        for (status, want) in cases {
            assert_eq!(retry_delay(&status), want, "{status:?}");
        }
    }
}

//! Forwarding spans to the traces endpoint (Tempo) over OTLP/gRPC. Several exporters run at
//! once (`--export-concurrency`; Tempo does not care about the order of batches), each taking a
//! batch of queued requests and sending their bytes as they arrived, retrying per
//! [`super::retry`] until the endpoint acknowledges them. Only the retry budget, a refusal for
//! good, or shutdown (in-memory queue only) give spans up, and each is counted by reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::retry::{self, Backoff, FailureSource, Verdict};
use crate::codec::{ForwardCodec, TRACE_EXPORT_PATH};
use crate::queue::{Batch, SpanQueue};
use crate::selfmetrics::{
    DropReason, ExportLabels, ExportOutcome, FailureLabels, FailureSide, SelfMetrics,
};

use crate::tenants::TenantId;

/// One export attempt may take this long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the exporters send.
#[derive(Debug, Clone, Copy)]
pub struct ExportSettings {
    pub batch_spans: usize,
    /// Batches stop growing past this size. Tempo's OTLP receiver takes at most 4 MiB a
    /// message by default; a single queued request may still be larger.
    pub batch_bytes: usize,
    pub concurrency: usize,
    pub initial_backoff: Duration,
    /// `None`: retry until shutdown.
    pub max_elapsed: Option<Duration>,
}

/// What the exporters were told to do on shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub deadline: Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid traces endpoint {0:?}: {1}")]
pub struct InvalidEndpoint(String, String);

/// How one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sent {
        rejected: usize,
    },
    GivenUp(DropReason),
    /// Shutdown's deadline came while it was being sent.
    Interrupted,
}

#[derive(Clone)]
pub struct TraceExporter {
    queue: SpanQueue,
    client: tonic::client::Grpc<Channel>,
    settings: ExportSettings,
    backoff: Backoff,
    metrics: Arc<SelfMetrics>,
    /// The tenant of queued requests that name none (written before tenants).
    default_tenant: TenantId,
}

impl TraceExporter {
    /// Connects lazily, so a traces endpoint that is down does not stop graphgen from starting.
    pub fn new(
        endpoint: &str,
        queue: SpanQueue,
        settings: ExportSettings,
        metrics: Arc<SelfMetrics>,
        default_tenant: TenantId,
    ) -> Result<Self, InvalidEndpoint> {
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| InvalidEndpoint(endpoint.to_string(), e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            queue,
            client: tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20),
            settings,
            backoff: Backoff::new(settings.initial_backoff),
            metrics,
            default_tenant,
        })
    }

    /// Runs the exporters until `drain` fires and the queue is empty or the drain deadline has
    /// passed. What the in-memory queue still holds then is counted as dropped (`shutdown`);
    /// the persistent queue keeps it for the next start.
    pub async fn run(self, drain: watch::Receiver<Option<Drain>>) {
        let mut workers = JoinSet::new();
        for _ in 0..self.settings.concurrency.max(1) {
            workers.spawn(self.clone().work(drain.clone()));
        }
        while workers.join_next().await.is_some() {}
        let left = self.queue.abandon_waiting();
        if left > 0 {
            if self.queue.is_persistent() {
                tracing::warn!(
                    spans = left,
                    "shutdown: spans left in the queue directory for the next start"
                );
            } else {
                self.metrics.count_dropped(DropReason::shutdown, left);
            }
        }
    }

    async fn work(mut self, mut drain: watch::Receiver<Option<Drain>>) {
        let (spans, bytes) = (self.settings.batch_spans, self.settings.batch_bytes);
        loop {
            let batch = if let Some(deadline) = deadline_of(&drain) {
                // Draining: take what is there, stop when nothing is or time is up.
                if Instant::now() >= deadline {
                    return;
                }
                match self.queue.try_batch(spans, bytes) {
                    Some(batch) => batch,
                    None => return,
                }
            } else {
                tokio::select! {
                    batch = self.queue.next_batch(spans, bytes) => batch,
                    changed = drain.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            };
            let delivery = self.deliver(&batch, drain.clone()).await;
            self.settle(batch, delivery);
        }
    }

    /// Counts the batch's end and gives its place in the queue back.
    fn settle(&self, batch: Batch, delivery: Delivery) {
        match delivery {
            Delivery::Sent { rejected } => {
                let rejected = rejected.min(batch.spans);
                self.metrics
                    .count_dropped(DropReason::rejected_by_backend, rejected);
                self.metrics
                    .export_sent_spans
                    .inc_by((batch.spans - rejected) as u64);
                self.metrics
                    .queue
                    .resent_spans
                    .inc_by(batch.resent_spans as u64);
            }
            Delivery::GivenUp(reason) => self.metrics.count_dropped(reason, batch.spans),
            Delivery::Interrupted if self.queue.is_persistent() => {
                // Not finished: it stays on disk and is sent again on the next start.
                tracing::warn!(
                    spans = batch.spans,
                    "shutdown while sending: spans left in the queue directory for the next start"
                );
                self.queue.keep_for_next_start(batch);
                return;
            }
            Delivery::Interrupted => self
                .metrics
                .count_dropped(DropReason::shutdown, batch.spans),
        }
        self.queue.finish(batch);
    }

    /// Sends until acknowledged, given up on, or out of time: the shutdown deadline (once
    /// `drain` sets one, also while waiting between attempts) bounds every attempt and wait.
    async fn deliver(
        &mut self,
        batch: &Batch,
        mut drain: watch::Receiver<Option<Drain>>,
    ) -> Delivery {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let result = match deadline_of(&drain) {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.send(batch)).await {
                    Ok(result) => result,
                    Err(_) => return Delivery::Interrupted,
                },
                None => self.send(batch).await,
            };
            let status = match result {
                Ok(response) => {
                    self.count_attempt(ExportOutcome::success);
                    let rejected = response
                        .partial_success
                        .map_or(0, |p| p.rejected_spans.max(0) as usize);
                    return Delivery::Sent { rejected };
                }
                Err(status) => status,
            };
            self.count_attempt(ExportOutcome::failure);
            let side = match retry::source_of(&status) {
                FailureSource::Server => FailureSide::server,
                FailureSource::Transport => FailureSide::transport,
            };
            self.metrics
                .export_failures
                .get_or_create(&FailureLabels { side })
                .inc();
            let Verdict::Retry { server_delay } = retry::classify(&status) else {
                tracing::error!(code = ?status.code(), message = status.message(), "traces endpoint refused a batch for good");
                return Delivery::GivenUp(DropReason::non_retryable);
            };
            let delay = server_delay
                .unwrap_or_else(|| self.backoff.delay(attempt, fastrand::f64()))
                .min(Backoff::MAX);
            attempt = attempt.saturating_add(1);
            if self
                .settings
                .max_elapsed
                .is_some_and(|max| started.elapsed() + delay > max)
            {
                return Delivery::GivenUp(DropReason::retries_exhausted);
            }
            if deadline_of(&drain).is_some_and(|d| Instant::now() + delay > d) {
                return Delivery::Interrupted;
            }
            tracing::warn!(code = ?status.code(), ?side, message = status.message(), ?delay, "export failed, retrying");
            self.metrics.export_retries.inc();
            // A shutdown request cuts the wait short: the deadline is checked again.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                changed = drain.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn send(
        &mut self,
        batch: &Batch,
    ) -> Result<
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        tonic::Status,
    > {
        self.client
            .ready()
            .await
            .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
        let mut request = tonic::Request::new(batch.parts.clone());
        // A batch is one tenant's: Tempo files its spans under that tenant.
        let tenant = batch.tenant.as_ref().unwrap_or(&self.default_tenant);
        if let Some(org_id) = crate::tenants::org_id_header(tenant) {
            let value = tonic::metadata::MetadataValue::try_from(org_id)
                .expect("tenant ids are printable ASCII");
            request.metadata_mut().insert(crate::tenants::HEADER, value);
        }
        let path = PathAndQuery::from_static(TRACE_EXPORT_PATH);
        self.client
            .unary(request, path, ForwardCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    fn count_attempt(&self, outcome: ExportOutcome) {
        self.metrics
            .export_requests
            .get_or_create(&ExportLabels { outcome })
            .inc();
    }
}

/// The shutdown deadline, once shutdown has been asked for.
fn deadline_of(drain: &watch::Receiver<Option<Drain>>) -> Option<Instant> {
    drain.borrow().map(|d| d.deadline)
}

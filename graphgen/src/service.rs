//! The running service: binds the listeners, starts the receivers, the exporters, the expiry
//! ticker and the admin server, and on shutdown stops intake, flushes the queue and pushes the
//! final metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{self, AdminState};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::engine::Engine;
use crate::export::otlp_metrics::{Identity, MetricsPusher};
use crate::export::prometheus::EngineCollector;
use crate::export::remote_write::{
    Budget as RemoteWriteBudget, RemoteWriteConfig, RemoteWriter, Target,
};
use crate::export::retry::Backoff;
use crate::export::traces::{self, Drain, ExportSettings, TraceExporter};
use crate::intake::{Intake, RequestLimits};
use crate::queue::{Limits, SpanQueue};
use crate::receiver::{grpc, http};
use crate::selfmetrics::{EngineStats, SelfMetrics};
use crate::servicemap::{self, http::MapState};

/// How often edges past their wait are expired.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// `--retry-max-elapsed 0s` (retry forever) for remote write: a day, past which Prometheus-
/// compatible stores refuse the samples as too old anyway.
const REMOTE_WRITE_RETRY_FOREVER: Duration = Duration::from_secs(24 * 3600);
/// Export batches stop growing past this size, well under the 4 MiB gRPC receive limit of
/// Tempo's OTLP receiver (a single request may still be up to `--max-message-bytes`).
const MAX_BATCH_BYTES: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::ConfigError),
    #[error(transparent)]
    Endpoint(#[from] traces::InvalidEndpoint),
    #[error("cannot build the metrics HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot open the queue directory {dir}")]
    QueueDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Resolves once `stop` says so.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs graphgen until `shutdown` resolves, then shuts down gracefully.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let engine = Arc::new(Mutex::new(
        Engine::new(
            settings.graph.clone(),
            settings.span_metrics.clone(),
            Arc::new(SystemClock),
        )?
        .with_stale_after(settings.stale_duration),
    ));
    let metrics = Arc::new(SelfMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    EngineCollector::register(engine.clone(), &mut registry);
    EngineStats::register(engine.clone(), &mut registry);

    let (queue, exporter) = match &settings.traces_endpoint {
        Some(endpoint) => {
            let limits = Limits {
                max_bytes: settings.queue_max_bytes,
                max_spans: settings.queue_size,
            };
            let (queue, recovered) =
                SpanQueue::open(&settings.queue_storage, limits, metrics.clone()).map_err(
                    |source| StartError::QueueDir {
                        dir: match &settings.queue_storage {
                            crate::queue::Storage::Disk { dir, .. } => dir.clone(),
                            crate::queue::Storage::Memory => Default::default(),
                        },
                        source,
                    },
                )?;
            if recovered.requests > 0 || recovered.corrupt_segments > 0 {
                tracing::info!(
                    spans = recovered.spans,
                    requests = recovered.requests,
                    possibly_sent_before = recovered.resent_spans,
                    corrupt_segments = recovered.corrupt_segments,
                    unreadable_bytes = recovered.unreadable_bytes,
                    "queue directory read back; sending what was not acknowledged"
                );
            }
            let export = ExportSettings {
                batch_spans: settings.export_batch_spans,
                batch_bytes: MAX_BATCH_BYTES,
                concurrency: settings.export_concurrency,
                initial_backoff: settings.retry_initial_backoff,
                max_elapsed: settings.retry_max_elapsed,
            };
            let exporter = TraceExporter::new(endpoint, queue.clone(), export, metrics.clone())?;
            (Some(queue), Some(exporter))
        }
        None => (None, None),
    };

    let grpc_listener = bind("OTLP/gRPC", settings.otlp_grpc_addr).await?;
    let http_listener = bind("OTLP/HTTP", settings.otlp_http_addr).await?;
    let admin_listener = bind("admin", settings.admin_addr).await?;
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        otlp_grpc = local(&grpc_listener),
        otlp_http = local(&http_listener),
        admin = local(&admin_listener),
        traces_endpoint = settings.traces_endpoint.as_deref().unwrap_or("none"),
        metrics_endpoint = settings.metrics_endpoint.as_deref().unwrap_or("none"),
        instance_id = settings.instance_id,
        "graphgen listening"
    );

    let intake = Arc::new(Intake::new(
        engine.clone(),
        queue.clone(),
        metrics.clone(),
        RequestLimits {
            max_message_bytes: settings.max_message_bytes,
            max_inflight_bytes: settings.max_inflight_bytes,
            max_concurrent_requests: settings.max_concurrent_requests,
        },
    ));
    let (stop_intake, intake_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(None);

    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener,
        intake.clone(),
        stopped(intake_stopped.clone()),
    ));
    let http_app = http::router(intake.clone());
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(stopped(intake_stopped))
            .await
    });
    let admin_state = Arc::new(AdminState {
        registry: Arc::new(registry),
        receivers_up: true.into(),
        queue: queue.clone(),
    });
    let service_map = Arc::new(MapState::new(
        engine.clone(),
        settings.service_map_max_series,
        settings.grafana_url.clone(),
        metrics.clone(),
    ));
    let snapshot_task = tokio::spawn(service_map.clone().run_snapshots());
    let admin_app = admin::router(admin_state.clone()).merge(servicemap::http::router(service_map));
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(stopped(admin_stopped))
            .await
    });
    let exporter_task = exporter.map(|e| tokio::spawn(e.run(drain_rx)));
    let expiry_task = tokio::spawn(expire_periodically(engine.clone()));
    let pusher = match &settings.metrics_endpoint {
        Some(endpoint) => Some(MetricsPusher::new(
            endpoint.clone(),
            engine.clone(),
            metrics.clone(),
            Identity::new(settings.instance_id.clone()),
            settings.metrics_max_request_bytes,
            settings.histograms,
        )?),
        None => None,
    };
    let push_task = pusher
        .clone()
        .map(|p| tokio::spawn(p.run_every(settings.flush_interval)));
    let remote_writer = match &settings.remote_write {
        Some(rw) => Some(RemoteWriter::new(
            RemoteWriteConfig {
                endpoint: rw.endpoint.clone(),
                headers: rw.headers.clone(),
                target: Target::new(&rw.external_labels, &settings.instance_id),
                histograms: settings.histograms,
                max_request_bytes: settings.metrics_max_request_bytes,
                backoff: Backoff::new(settings.retry_initial_backoff),
                retry_budget: settings
                    .retry_max_elapsed
                    .unwrap_or(REMOTE_WRITE_RETRY_FOREVER),
            },
            engine.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    let remote_write_task = remote_writer
        .clone()
        .map(|w| tokio::spawn(w.run_every(settings.flush_interval)));

    shutdown.await;
    tracing::info!("shutting down: stopping intake");
    // The whole shutdown is bounded: receivers get the grace period to finish their
    // requests, then the queue gets the grace period to drain.
    let grace = settings.shutdown_grace;
    admin_state.receivers_up.store(false, Ordering::Relaxed);
    let _ = stop_intake.send(true);
    log_join("OTLP/gRPC receiver", grpc_task, grace).await;
    log_join("OTLP/HTTP receiver", http_task, grace).await;

    if let Some(mut task) = exporter_task {
        let left = queue.as_ref().map_or(0, |q| q.spans());
        tracing::info!(spans = left, ?grace, "flushing queued spans");
        let deadline = Instant::now() + grace;
        let _ = drain_tx.send(Some(Drain { deadline }));
        // The exporter honours the deadline itself; this is the backstop.
        if tokio::time::timeout_at(deadline + Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::error!("the exporter did not stop in time");
        }
    }
    if let Some(queue) = &queue {
        if let Err(e) = queue.sync().await {
            tracing::error!(error = %e, "cannot sync the queue directory at shutdown");
        }
    }
    expiry_task.abort();
    snapshot_task.abort();
    if let Some(task) = push_task {
        task.abort();
    }
    if let Some(task) = remote_write_task {
        task.abort();
    }
    if let Some(pusher) = pusher {
        pusher.push_once().await;
    }
    if let Some(writer) = remote_writer {
        // The last values, within the grace period, attempts included.
        writer
            .push_once(RemoteWriteBudget::Until(Instant::now() + grace))
            .await;
    }
    let _ = stop_admin.send(true);
    log_join("admin server", admin_task, grace).await;
    tracing::info!("graphgen stopped");
    Ok(())
}

async fn log_join<E: std::fmt::Display>(
    what: &str,
    mut task: JoinHandle<Result<(), E>>,
    limit: Duration,
) {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "{what} failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "{what} panicked"),
        Err(_) => {
            task.abort();
            tracing::warn!("{what} still had open connections after {limit:?}; closed them");
        }
    }
}

async fn expire_periodically(engine: Arc<Mutex<Engine>>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        engine.lock().unwrap_or_else(|e| e.into_inner()).expire();
    }
}

//! The running service: binds the listeners, starts the receivers, the exporters, the expiry
//! ticker and the admin server, and on shutdown stops intake, flushes the queue and pushes the
//! final metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::engine_metrics::{EngineCollector, EngineStats};
use crate::admin::{self, AdminState};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::export::otlp_metrics::{Identity, MetricsPusher};
use crate::export::remote_write::{
    Budget as RemoteWriteBudget, RemoteWriteConfig, RemoteWriter, Target,
};
use crate::export::retry::Backoff;
use crate::export::traces::{self, Drain, ExportSettings, TraceExporter};
use crate::intake::{Intake, RequestLimits};
use crate::overrides::Overrides;
use crate::queue::{Limits, SpanQueue, Storage};
use crate::receiver::{grpc, http};
use crate::selfmetrics::SelfMetrics;
use crate::servicemap::{self, fleet::Fleet, state::MapState};
use crate::tenants::{EngineFactory, Tenants};

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
    Engine(#[from] crate::tenants::BuildError),
    #[error(transparent)]
    Overrides(#[from] crate::overrides::OverridesError),
    #[error("per-tenant overrides: {0}")]
    OverridesRefused(#[from] crate::tenants::OverridesRefused),
    #[error(transparent)]
    Endpoint(#[from] traces::InvalidEndpoint),
    #[error("cannot build an HTTP client: {0}")]
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
    let components = build(&settings)?;
    let listeners = Listeners::bind(&settings).await?;
    let running = serve(components, listeners, &settings);
    shutdown.await;
    running.shut_down(settings.shutdown_grace).await;
    Ok(())
}

/// Everything graphgen runs, built from the settings, before any socket is opened.
struct Components {
    tenants: Arc<Tenants>,
    metrics: Arc<SelfMetrics>,
    registry: Registry,
    /// The forwarding queue and its exporter, with a traces endpoint.
    queue: Option<SpanQueue>,
    exporter: Option<TraceExporter>,
    intake: Arc<Intake>,
    pusher: Option<MetricsPusher>,
    remote_writer: Option<RemoteWriter>,
    /// The other replicas the service map asks for their parts (`--peers`).
    fleet: Option<Fleet>,
    /// The overrides file's text as applied at start.
    overrides_text: String,
}

fn build(settings: &Settings) -> Result<Components, StartError> {
    let (overrides, overrides_text) = match &settings.overrides_file {
        Some(path) => {
            let (overrides, unknown, text) = Overrides::read(path)?;
            crate::overrides::warn_unknown(&unknown);
            (overrides, text)
        }
        None => (Overrides::default(), String::new()),
    };
    let factory = EngineFactory::new(settings.options.clone(), Arc::new(SystemClock));
    // The overrides are checked as a reload checks them, before anything starts.
    let tenants = Tenants::new(settings.tenants.clone(), factory, Overrides::default())?;
    tenants.apply_overrides(overrides)?;
    let tenants = Arc::new(tenants);
    let metrics = Arc::new(SelfMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    EngineCollector::new(
        tenants.default_tenant(),
        settings.inject_tenant_id_as.clone(),
    )
    .register(&mut registry);
    EngineStats::register(tenants.clone(), &mut registry);
    let (queue, exporter) = match &settings.traces_endpoint {
        Some(endpoint) => {
            let queue = open_queue(settings, &metrics)?;
            let exporter = TraceExporter::new(
                endpoint,
                queue.clone(),
                export_settings(settings),
                metrics.clone(),
                settings.tenants.default_tenant.clone(),
            )?;
            (Some(queue), Some(exporter))
        }
        None => (None, None),
    };
    let intake = Arc::new(Intake::new(
        tenants.clone(),
        queue.clone(),
        metrics.clone(),
        RequestLimits {
            max_message_bytes: settings.max_message_bytes,
            max_inflight_bytes: settings.max_inflight_bytes,
            max_concurrent_requests: settings.max_concurrent_requests,
        },
    ));
    let pusher = metrics_pusher(settings, &tenants, &metrics)?;
    let remote_writer = remote_writer(settings, &tenants, &metrics)?;
    let fleet = match settings.peers.is_empty() {
        true => None,
        false => Some(Fleet::new(settings.peers.clone(), settings.peer_timeout)?),
    };
    Ok(Components {
        overrides_text,
        tenants,
        metrics,
        registry,
        queue,
        exporter,
        intake,
        pusher,
        remote_writer,
        fleet,
    })
}

/// Opens the forwarding queue and logs what a queue directory held.
fn open_queue(settings: &Settings, metrics: &Arc<SelfMetrics>) -> Result<SpanQueue, StartError> {
    let limits = Limits {
        max_bytes: settings.queue_max_bytes,
        max_spans: settings.queue_size,
    };
    let (queue, recovered) = SpanQueue::open(&settings.queue_storage, limits, metrics.clone())
        .map_err(|source| StartError::QueueDir {
            dir: match &settings.queue_storage {
                Storage::Disk { dir, .. } => dir.clone(),
                Storage::Memory => Default::default(),
            },
            source,
        })?;
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
    Ok(queue)
}

fn export_settings(settings: &Settings) -> ExportSettings {
    ExportSettings {
        batch_spans: settings.export_batch_spans,
        batch_bytes: MAX_BATCH_BYTES,
        concurrency: settings.export_concurrency,
        initial_backoff: settings.retry_initial_backoff,
        max_elapsed: settings.retry_max_elapsed,
    }
}

fn metrics_pusher(
    settings: &Settings,
    tenants: &Arc<Tenants>,
    metrics: &Arc<SelfMetrics>,
) -> Result<Option<MetricsPusher>, StartError> {
    let Some(endpoint) = &settings.metrics_endpoint else {
        return Ok(None);
    };
    Ok(Some(MetricsPusher::new(
        endpoint.clone(),
        tenants.clone(),
        settings.inject_tenant_id_as.clone(),
        metrics.clone(),
        Identity::new(settings.instance_id.clone()),
        settings.metrics_max_request_bytes,
    )?))
}

fn remote_writer(
    settings: &Settings,
    tenants: &Arc<Tenants>,
    metrics: &Arc<SelfMetrics>,
) -> Result<Option<RemoteWriter>, StartError> {
    let Some(rw) = &settings.remote_write else {
        return Ok(None);
    };
    let config = RemoteWriteConfig {
        endpoint: rw.endpoint.clone(),
        headers: rw.headers.clone(),
        target: Target::new(&rw.external_labels, &settings.instance_id)
            .with_trace_id_label(&rw.trace_id_label_name),
        inject_tenant_id_as: settings.inject_tenant_id_as.clone(),
        max_request_bytes: settings.metrics_max_request_bytes,
        backoff: Backoff::new(settings.retry_initial_backoff),
        retry_budget: settings
            .retry_max_elapsed
            .unwrap_or(REMOTE_WRITE_RETRY_FOREVER),
    };
    Ok(Some(RemoteWriter::new(
        config,
        tenants.clone(),
        metrics.clone(),
    )?))
}

/// The three listening sockets, bound before anything is served.
struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(settings: &Settings) -> Result<Self, StartError> {
        let listeners = Self {
            grpc: bind("OTLP/gRPC", settings.otlp_grpc_addr).await?,
            http: bind("OTLP/HTTP", settings.otlp_http_addr).await?,
            admin: bind("admin", settings.admin_addr).await?,
        };
        let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            otlp_grpc = local(&listeners.grpc),
            otlp_http = local(&listeners.http),
            admin = local(&listeners.admin),
            traces_endpoint = settings.traces_endpoint.as_deref().unwrap_or("none"),
            metrics_endpoint = settings.metrics_endpoint.as_deref().unwrap_or("none"),
            remote_write_endpoint = settings
                .remote_write
                .as_ref()
                .map_or("none", |rw| rw.endpoint.as_str()),
            instance_id = settings.instance_id,
            "graphgen listening"
        );
        Ok(listeners)
    }
}

/// The running tasks, and the signals that stop them in order.
struct Running {
    admin_state: Arc<AdminState>,
    queue: Option<SpanQueue>,
    stop_intake: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    drain: watch::Sender<Option<Drain>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<Result<(), std::io::Error>>,
    admin: JoinHandle<Result<(), std::io::Error>>,
    exporter: Option<JoinHandle<()>>,
    /// Ticking tasks with nothing to finish: aborted at shutdown.
    tickers: Vec<JoinHandle<()>>,
    pusher: Option<MetricsPusher>,
    remote_writer: Option<RemoteWriter>,
}

fn serve(c: Components, listeners: Listeners, settings: &Settings) -> Running {
    let (stop_intake, intake_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(None);
    let grpc = tokio::spawn(grpc::serve(
        listeners.grpc,
        c.intake.clone(),
        stopped(intake_stopped.clone()),
    ));
    let http_app = http::router(c.intake.clone());
    let http = tokio::spawn(async move {
        axum::serve(listeners.http, http_app)
            .with_graceful_shutdown(stopped(intake_stopped))
            .await
    });
    let admin_state = Arc::new(AdminState {
        registry: Arc::new(c.registry),
        receivers_up: true.into(),
        queue: c.queue.clone(),
        tenants: c.tenants.clone(),
        inject_tenant_id_as: settings.inject_tenant_id_as.clone(),
    });
    let service_map = Arc::new(MapState::new(
        c.tenants.clone(),
        settings.service_map_max_series,
        settings.instance_id.clone(),
        settings.grafana_url.clone(),
        c.fleet.clone(),
        c.metrics.clone(),
    ));
    let mut tickers = vec![
        tokio::spawn(service_map.clone().run_snapshots()),
        tokio::spawn(expire_periodically(c.tenants.clone())),
    ];
    if let Some(path) = &settings.overrides_file {
        tickers.push(tokio::spawn(crate::overrides::watch(
            path.clone(),
            settings.overrides_period,
            c.overrides_text.clone(),
            c.tenants.clone(),
            c.metrics.clone(),
        )));
    }
    let admin_app = admin::router(admin_state.clone()).merge(servicemap::http::router(service_map));
    let admin = tokio::spawn(async move {
        axum::serve(listeners.admin, admin_app)
            .with_graceful_shutdown(stopped(admin_stopped))
            .await
    });
    let period = settings.flush_interval;
    tickers.extend(c.pusher.clone().map(|p| tokio::spawn(p.run_every(period))));
    tickers.extend(
        c.remote_writer
            .clone()
            .map(|w| tokio::spawn(w.run_every(period))),
    );
    Running {
        admin_state,
        queue: c.queue,
        stop_intake,
        stop_admin,
        drain,
        grpc,
        http,
        admin,
        exporter: c.exporter.map(|e| tokio::spawn(e.run(drain_rx))),
        tickers,
        pusher: c.pusher,
        remote_writer: c.remote_writer,
    }
}

impl Running {
    /// Stops intake, drains the queue, pushes the final metrics, stops the admin server, all
    /// within `grace` (`--shutdown-grace`) and [`ADMIN_CLOSE`], so that an orchestrator's grace
    /// period a little longer is never cut short: intake closes in at most a quarter of it,
    /// queued spans are flushed until the last quarter (less the queue's final sync; until the
    /// end when no metrics are pushed), and the final metrics pushes share what is left.
    async fn shut_down(self, grace: Duration) {
        tracing::info!(?grace, "shutting down: stopping intake");
        let started = Instant::now();
        let deadline = started + grace;
        let pushes = self.pusher.is_some() || self.remote_writer.is_some();
        let pushes_from = deadline - if pushes { grace / 4 } else { Duration::ZERO };
        // The sync that records what was delivered must not be squeezed out by the flush.
        let sync_share = if self.queue.is_some() {
            (grace / 10).min(Duration::from_secs(1))
        } else {
            Duration::ZERO
        };
        let flush_until = pushes_from - sync_share;
        self.admin_state
            .receivers_up
            .store(false, Ordering::Relaxed);
        let _ = self.stop_intake.send(true);
        let receivers_until = started + grace / 4;
        tokio::join!(
            log_join("OTLP/gRPC receiver", self.grpc, receivers_until),
            log_join("OTLP/HTTP receiver", self.http, receivers_until),
        );
        if let Some(task) = self.exporter {
            drain_queue(
                task,
                &self.drain,
                self.queue.as_ref(),
                flush_until,
                sync_share / 2,
            )
            .await;
        }
        if let Some(queue) = &self.queue {
            match tokio::time::timeout_at(
                pushes_from.max(Instant::now() + sync_share / 2),
                queue.sync(),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot sync the queue directory at shutdown")
                }
                Err(_) => tracing::error!("the queue directory did not sync in time"),
            }
        }
        for task in self.tickers {
            task.abort();
        }
        // Both pushes at once: a hung endpoint must not leave the other no time.
        let otlp = async {
            if let Some(pusher) = self.pusher {
                if tokio::time::timeout_at(deadline, pusher.push_once())
                    .await
                    .is_err()
                {
                    tracing::warn!("the final metrics push did not end within --shutdown-grace");
                }
            }
        };
        let remote_write = async {
            if let Some(writer) = self.remote_writer {
                let push = writer.push_once(RemoteWriteBudget::Until(deadline));
                if tokio::time::timeout_at(deadline, push).await.is_err() {
                    tracing::warn!("the final remote write did not end within --shutdown-grace");
                }
            }
        };
        tokio::join!(otlp, remote_write);
        let _ = self.stop_admin.send(true);
        // Scrapes in flight may finish; a held connection does not keep graphgen up.
        log_join(
            "admin server",
            self.admin,
            deadline.max(Instant::now()) + ADMIN_CLOSE,
        )
        .await;
        tracing::info!(took = ?started.elapsed(), "graphgen stopped");
    }
}

/// What the admin server is given to close, even when the budget is spent.
const ADMIN_CLOSE: Duration = Duration::from_millis(300);

/// Lets the exporter send what is queued until `deadline`; a stuck exporter is aborted
/// `backstop` later.
async fn drain_queue(
    mut task: JoinHandle<()>,
    drain: &watch::Sender<Option<Drain>>,
    queue: Option<&SpanQueue>,
    deadline: Instant,
    backstop: Duration,
) {
    let left = queue.map_or(0, |q| q.spans());
    tracing::info!(spans = left, until = ?deadline.saturating_duration_since(Instant::now()), "flushing queued spans");
    let _ = drain.send(Some(Drain { deadline }));
    // The exporter honours the deadline itself; this is the backstop.
    if tokio::time::timeout_at(deadline + backstop, &mut task)
        .await
        .is_err()
    {
        task.abort();
        tracing::error!("the exporter did not stop in time");
    }
}

async fn log_join<E: std::fmt::Display>(
    what: &str,
    mut task: JoinHandle<Result<(), E>>,
    until: Instant,
) {
    match tokio::time::timeout_at(until, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "{what} failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "{what} panicked"),
        Err(_) => {
            task.abort();
            tracing::warn!("{what} still had open connections; closed them");
        }
    }
}

async fn expire_periodically(tenants: Arc<Tenants>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        tenants.expire();
    }
}

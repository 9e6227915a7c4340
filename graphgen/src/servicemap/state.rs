//! The service map's state: the history of snapshots (one every 5 s, by its own task) and the
//! latest reading of the engine, shared by the page and the API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fleet::Fleet;
use super::history::{History, Snapshot, FINE_EVERY};
use super::page::LayoutCache;
use super::part::MapPart;
use crate::processors::GraphMetrics;
use crate::selfmetrics::SelfMetrics;
use crate::tenants::{Tenant, Tenants};

/// How long a reading of the engine serves pages and the API.
const CURRENT_FOR: Duration = Duration::from_secs(1);

pub struct MapState {
    /// The default tenant's engine (its edges are the map).
    engine: Arc<Tenant>,
    history: Mutex<History>,
    /// The latest reading for pages, reused for [`CURRENT_FOR`] so that many viewers (or a
    /// script polling the API) read the engine at most once a second.
    current: Mutex<Option<Arc<Snapshot>>>,
    /// This replica's `--instance-id`, and a number drawn at start that tells this process
    /// from another given the same id.
    pub instance: String,
    boot: u64,
    /// Base URL of Grafana, for links to traces in Explore.
    pub grafana_url: Option<String>,
    pub layouts: LayoutCache,
    /// The service-graph series Prometheus gets (`processors`), for the page to say what
    /// Grafana will lack.
    pub exported: GraphMetrics,
    /// The other replicas (`--peers`), whose parts the map adds to this one's.
    pub fleet: Option<Fleet>,
    pub metrics: Arc<SelfMetrics>,
}

impl MapState {
    pub fn new(
        tenants: Arc<Tenants>,
        max_series: usize,
        instance: String,
        grafana_url: Option<String>,
        fleet: Option<Fleet>,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        let engine = tenants.default_tenant();
        let (started, exported) = {
            let engine = engine.engine();
            (engine.now_nanos(), engine.graph().config().metrics)
        };
        Self {
            engine,
            history: Mutex::new(History::new(started, max_series)),
            current: Mutex::new(None),
            instance,
            boot: fastrand::u64(..),
            grafana_url,
            layouts: LayoutCache::default(),
            exported,
            fleet,
            metrics,
        }
    }

    /// Takes a snapshot of every edge and keeps it.
    pub fn snapshot(&self) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = {
            let engine = self.engine.engine();
            history.read(engine.graph(), engine.now_nanos())
        };
        history.record(snapshot);
        let stats = history.stats();
        let m = &self.metrics.service_map;
        m.snapshots.set(stats.snapshots as i64);
        m.snapshot_series.set(stats.series_entries as i64);
        m.omitted_edges.set(stats.omitted_edges as i64);
    }

    /// This replica's increases over `window`, ending now. The locks are held only to read;
    /// the increases are computed from shared snapshots afterwards.
    pub fn part(&self, window: Duration) -> MapPart {
        let (snapshots, started_at, current, bounds) = {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let mut cached = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let engine = self.engine.engine();
            let now = engine.now_nanos();
            let current = match &*cached {
                Some(c) if now.saturating_sub(c.at_nanos) < CURRENT_FOR.as_nanos() as u64 => {
                    c.clone()
                }
                _ => {
                    let c = Arc::new(history.read(engine.graph(), now));
                    *cached = Some(c.clone());
                    c
                }
            };
            let bounds = engine.graph().config().histogram_buckets.clone();
            (
                history.snapshots(),
                history.started_at_nanos(),
                current,
                bounds,
            )
        };
        MapPart::of(
            &self.instance,
            self.boot,
            &snapshots,
            started_at,
            &current,
            window,
            &bounds,
        )
    }

    /// Snapshots every [`FINE_EVERY`] until dropped.
    pub async fn run_snapshots(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FINE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // It waits for the engine's lock and reads every series: off the async workers.
            let state = self.clone();
            let _ = tokio::task::spawn_blocking(move || state.snapshot()).await;
        }
    }
}

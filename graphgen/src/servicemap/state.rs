//! The service map's state: each tenant's history of snapshots (one every 5 s, by its own task)
//! and latest reading of its engine, shared by the page and the API (`?tenant=`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fleet::Fleet;
use super::history::{History, Snapshot, FINE_EVERY};
use super::page::LayoutCache;
use super::part::MapPart;
use crate::processors::GraphMetrics;
use crate::selfmetrics::SelfMetrics;
use crate::tenants::{InvalidTenantId, Tenant, TenantId, Tenants};

/// How long a reading of the engine serves pages and the API.
const CURRENT_FOR: Duration = Duration::from_secs(1);

/// One tenant's map.
struct TenantMap {
    tenant: Arc<Tenant>,
    history: Mutex<History>,
    /// The latest reading for pages, reused for [`CURRENT_FOR`] so that many viewers (or a
    /// script polling the API) read the engine at most once a second.
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl TenantMap {
    fn new(tenant: Arc<Tenant>, max_series: usize) -> Self {
        let started = tenant.engine().now_nanos();
        Self {
            tenant,
            history: Mutex::new(History::new(started, max_series)),
            current: Mutex::new(None),
        }
    }
}

pub struct MapState {
    tenants: Arc<Tenants>,
    /// Every tenant's map, made at its first snapshot or query (as many as tenants).
    maps: Mutex<BTreeMap<TenantId, Arc<TenantMap>>>,
    max_series: usize,
    /// This replica's `--instance-id`, and a number drawn at start that tells this process
    /// from another given the same id.
    pub instance: String,
    boot: u64,
    /// Base URL of Grafana, for links to traces in Explore.
    pub grafana_url: Option<String>,
    pub layouts: LayoutCache,
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
        Self {
            tenants,
            maps: Mutex::default(),
            max_series,
            instance,
            boot: fastrand::u64(..),
            grafana_url,
            layouts: LayoutCache::default(),
            fleet,
            metrics,
        }
    }

    /// A tenant's map (`None`: the default tenant's), made if its tenant has an engine; `None`
    /// for a tenant without one here (it has sent nothing to this replica, or went idle).
    fn map_of(&self, tenant: Option<&str>) -> Result<Option<Arc<TenantMap>>, InvalidTenantId> {
        let tenant = match tenant {
            None => self.tenants.default_tenant(),
            Some(id) => match self.tenants.lookup(id)? {
                Some(tenant) => tenant,
                None => return Ok(None),
            },
        };
        Ok(Some(self.map_for(tenant)))
    }

    /// The map of a tenant with an engine.
    fn map_for(&self, tenant: Arc<Tenant>) -> Arc<TenantMap> {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        let map = maps
            .entry(tenant.id.clone())
            .or_insert_with(|| Arc::new(TenantMap::new(tenant.clone(), self.max_series)));
        // A tenant forgotten and back has another engine: its map starts over.
        if !Arc::ptr_eq(&map.tenant, &tenant) {
            *map = Arc::new(TenantMap::new(tenant, self.max_series));
        }
        map.clone()
    }

    /// The service-graph series a tenant's Prometheus gets (`processors`, its overrides'), for
    /// the page to say what Grafana will lack.
    pub fn exported(&self, tenant: Option<&str>) -> GraphMetrics {
        let tenant = tenant
            .and_then(|id| self.tenants.get(id))
            .unwrap_or_else(|| self.tenants.default_tenant());
        let metrics = tenant.engine().graph().config().metrics;
        metrics
    }

    /// Takes a snapshot of every tenant's edges and keeps it; forgotten tenants' maps go.
    pub fn snapshot(&self) {
        let tenants = self.tenants.all();
        self.maps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| tenants.iter().any(|t| &t.id == id));
        let (mut snapshots, mut series, mut omitted) = (0, 0, 0);
        for tenant in tenants {
            let map = self.map_for(tenant);
            let mut history = map.history.lock().unwrap_or_else(|e| e.into_inner());
            let snapshot = {
                let mut engine = map.tenant.engine();
                let now = engine.now_nanos();
                history.read(engine.graph(), now)
            };
            history.record(snapshot);
            let stats = history.stats();
            snapshots = snapshots.max(stats.snapshots);
            series += stats.series_entries;
            omitted += stats.omitted_edges;
        }
        let m = &self.metrics.service_map;
        m.snapshots.set(snapshots as i64);
        m.snapshot_series.set(series as i64);
        m.omitted_edges.set(omitted as i64);
    }

    /// This replica's increases over `window`, ending now. The locks are held only to read;
    /// the increases are computed from shared snapshots afterwards.
    /// A tenant without an engine here has an empty part: with `--peers`, its edges may be on
    /// other replicas.
    pub fn part(&self, tenant: Option<&str>, window: Duration) -> Result<MapPart, InvalidTenantId> {
        let Some(map) = self.map_of(tenant)? else {
            let engine = self.tenants.default_tenant();
            let mut engine = engine.engine();
            let now = engine.now_nanos();
            let empty = Snapshot {
                at_nanos: now,
                edges: Default::default(),
                omitted: 0,
            };
            let bounds = engine.graph().config().histogram_buckets.clone();
            return Ok(MapPart::of(
                &self.instance,
                self.boot,
                &[],
                now,
                &empty,
                window,
                &bounds,
            ));
        };
        let (snapshots, started_at, current, bounds) = {
            let mut history = map.history.lock().unwrap_or_else(|e| e.into_inner());
            let mut cached = map.current.lock().unwrap_or_else(|e| e.into_inner());
            let mut engine = map.tenant.engine();
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
        Ok(MapPart::of(
            &self.instance,
            self.boot,
            &snapshots,
            started_at,
            &current,
            window,
            &bounds,
        ))
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

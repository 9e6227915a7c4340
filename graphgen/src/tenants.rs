//! Tenants, as Tempo has them: a request's tenant is its `X-Scope-OrgID` (gRPC metadata or HTTP
//! header), and each tenant has an engine of its own, built from the settings with the tenant's
//! overrides ([`crate::overrides`]) on top. Without the header a request belongs to
//! `--default-tenant` (Tempo's `single-tenant`), unless `--require-tenant` refuses it.
//!
//! Bounded: at most `--max-tenants` engines. A tenant past the bound is refused (and counted)
//! until one goes idle: a tenant other than the default whose series have all gone stale and
//! whose edges have all completed or expired is forgotten at the next expiry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};

use crate::clock::Clock;
use crate::config::{ConfigError, Options, Settings};
use crate::engine::Engine;
use crate::overrides::{Overrides, TenantPush};

/// The header (and gRPC metadata key) that names a request's tenant.
pub const HEADER: &str = "x-scope-orgid";
/// Tempo's tenant when multi-tenancy is off (`util.FakeTenantID`), graphgen's default tenant.
pub const SINGLE_TENANT: &str = "single-tenant";
/// dskit's `tenant.MaxTenantIDLength`.
const MAX_TENANT_ID_LENGTH: usize = 150;

/// A tenant's id, checked as dskit's `tenant.ValidTenantID` checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a tenant id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenantId {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_ID_LENGTH} characters")]
    TooLong,
    #[error("tenant id {0:?} is not allowed (a path segment)")]
    Unsafe(String),
    #[error("tenant id contains {0:?}: only letters, digits and !-_.*'() are allowed")]
    Character(char),
}

impl TenantId {
    /// As dskit's `tenant.ValidTenantID` (vendor/github.com/grafana/dskit/tenant/tenant.go):
    /// letters, digits and `!-_.*'()`, at most 150 bytes, never `.` or `..`.
    pub fn parse(id: &str) -> Result<Self, InvalidTenantId> {
        if id.is_empty() {
            return Err(InvalidTenantId::Empty);
        }
        if id.len() > MAX_TENANT_ID_LENGTH {
            return Err(InvalidTenantId::TooLong);
        }
        if id == "." || id == ".." {
            return Err(InvalidTenantId::Unsafe(id.to_string()));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
        {
            return Err(InvalidTenantId::Character(c));
        }
        Ok(Self(id.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tenants are looked up by the header's text, without making an id of it first (`Arc<str>`
/// orders and hashes as `str` does).
impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `X-Scope-OrgID` to send a tenant's spans and series with: none for `single-tenant`, as
/// Tempo's generator leaves it out (`modules/generator/storage/config_util.go:25-50`, ad33aa8),
/// so that a single-tenant graphgen talks to its backends as it always did.
pub fn org_id_header(tenant: &TenantId) -> Option<&str> {
    (tenant.as_str() != SINGLE_TENANT).then_some(tenant.as_str())
}

/// Why a request's tenant is not let in.
#[derive(Debug, thiserror::Error)]
pub enum TenantRefused {
    /// `--require-tenant` and no header (Tempo's "no org id").
    #[error("no org id: the {HEADER} header is required")]
    Missing,
    #[error("invalid {HEADER} header: {0}")]
    Invalid(InvalidTenantId),
    /// `--max-tenants` tenants already have an engine.
    #[error("too many tenants: {max} already have an engine (--max-tenants), retry later")]
    TooMany { max: usize },
}

/// One tenant: its engine and what it has taken in.
pub struct Tenant {
    pub id: TenantId,
    /// Shared by the requests being counted (the engine locks its own stages); taken whole to
    /// expire, read series, or be replaced.
    engine: RwLock<Engine>,
    spans_received: AtomicU64,
    /// Requests holding it ([`TenantRef`]): a tenant is never forgotten under one.
    held: AtomicUsize,
    /// What its engine was built with besides: how its series are pushed, and the overrides.
    applied: Mutex<Applied>,
}

/// What a tenant's engine was built with besides its options.
struct Applied {
    push: PushSettings,
    /// Its overrides (`metrics_generator` of its entry), to tell whether a new file changes it.
    from: serde_json::Value,
}

/// How a tenant's series are pushed: from its settings (the options with its overrides) and
/// the overrides that are not options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushSettings {
    /// Tempo's `generate_native_histograms`.
    pub histograms: crate::native_histogram::HistogramMode,
    /// The remote-written exemplar's trace-id label (Tempo's `trace_id_label_name`).
    pub trace_id_label: Option<String>,
    /// Added to (or replacing by name) `--remote-write-headers` (Tempo's
    /// `remote_write_headers`).
    pub remote_write_headers: Vec<(String, String)>,
    /// Nothing pushed for this tenant (Tempo's `disable_collection`).
    pub disable_collection: bool,
}

impl PushSettings {
    /// From a tenant's settings and its push overrides.
    fn of(settings: Settings, extra: TenantPush) -> Self {
        Self {
            histograms: settings.histograms,
            trace_id_label: settings.remote_write.map(|rw| rw.trace_id_label_name),
            remote_write_headers: extra.remote_write_headers,
            disable_collection: extra.disable_collection,
        }
    }
}

/// A request's hold on its tenant, from before its body is read until it is answered: while
/// one is held, [`Tenants::expire`] does not forget the tenant (its spans would land in an
/// engine nobody reads).
pub struct TenantRef(Arc<Tenant>);

impl TenantRef {
    fn new(tenant: Arc<Tenant>) -> Self {
        tenant.held.fetch_add(1, Ordering::SeqCst);
        Self(tenant)
    }
}

impl Clone for TenantRef {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl Drop for TenantRef {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::ops::Deref for TenantRef {
    type Target = Tenant;

    fn deref(&self) -> &Tenant {
        &self.0
    }
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("id", &self.id).finish()
    }
}

impl Tenant {
    /// A tenant of `engine` alone, without overrides (benchmarks).
    pub fn new(id: TenantId, engine: Engine) -> Self {
        let applied = Applied {
            push: PushSettings::default(),
            from: serde_json::Value::Null,
        };
        Self::built(id, engine, applied)
    }

    fn built(id: TenantId, engine: Engine, applied: Applied) -> Self {
        Self {
            id,
            engine: RwLock::new(engine),
            spans_received: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            applied: Mutex::new(applied),
        }
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How its series are pushed.
    pub fn push_settings(&self) -> PushSettings {
        self.applied().push.clone()
    }

    /// Nothing to keep: no series, no edge waiting, no request holding it.
    fn is_idle(&self) -> bool {
        self.held.load(Ordering::SeqCst) == 0 && self.engine().is_idle()
    }

    /// The engine, whole: nothing is counted meanwhile.
    pub fn engine(&self) -> RwLockWriteGuard<'_, Engine> {
        self.engine.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request's parsed spans ([`Engine::push_parsed`]): requests of the same tenant
    /// are counted at once, one in each of the engine's two stages.
    pub fn push_parsed(&self, batch: &mut crate::wire::Batch<'_>) {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .push_parsed(batch);
    }

    /// Its series as they leave (scrape and pushes), with `inject` (`--inject-tenant-id-as`)
    /// set to its id, and the time they were read. The engine is locked only to list them.
    pub fn families(&self, inject: Option<&str>) -> (Vec<crate::series::Family>, u64) {
        let (mut families, now) = {
            let mut engine = self.engine();
            (engine.families(), engine.now_nanos())
        };
        if let Some(name) = inject {
            crate::series::set_label(&mut families, name, self.id.as_str());
        }
        (families, now)
    }

    pub fn count_received(&self, spans: usize) {
        self.spans_received
            .fetch_add(spans as u64, Ordering::Relaxed);
    }

    /// Spans taken in for this tenant since it got its engine.
    pub fn spans_received(&self) -> u64 {
        self.spans_received.load(Ordering::Relaxed)
    }
}

/// How tenants are told apart and bounded.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub default_tenant: TenantId,
    pub require_tenant: bool,
    pub max_tenants: usize,
}

/// Builds a tenant's engine: the settings' options with its overrides applied.
pub struct EngineFactory {
    base: Options,
    clock: Arc<dyn Clock>,
}

/// A tenant's engine could not be built from its options.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] crate::engine::ConfigError),
    #[error(transparent)]
    HostInfo(#[from] crate::hostinfo::ConfigError),
}

impl EngineFactory {
    pub fn new(base: Options, clock: Arc<dyn Clock>) -> Self {
        Self { base, clock }
    }

    /// The engine of `settings` (the base settings, or a tenant's).
    fn engine_of(&self, settings: &Settings) -> Result<Engine, BuildError> {
        Ok(Engine::new(
            settings.graph.clone(),
            settings.span_metrics.clone(),
            self.clock.clone(),
        )?
        .with_stale_after(settings.stale_duration)
        .with_ingestion_slack(settings.ingestion_time_range_slack)
        .with_dedup_if(settings.dedup)
        .with_host_info_if(settings.host_info.clone())?)
    }

    /// A tenant's settings: the base options with `overrides` on top, checked as the base was.
    fn settings_with(&self, overrides: &Options) -> Result<Settings, ConfigError> {
        overrides.clone().or(self.base.clone()).into_settings()
    }

    fn engine_for(&self, overrides: Option<&Options>) -> Result<(Engine, Settings), BuildError> {
        let settings = match overrides {
            Some(o) => self.settings_with(o)?,
            None => self.base.clone().into_settings()?,
        };
        Ok((self.engine_of(&settings)?, settings))
    }
}

/// Every tenant's engine. Shared by the intake, the exporters, `/metrics` and the service map.
pub struct Tenants {
    settings: TenantSettings,
    /// Never forgotten: kept at hand for the requests without a header.
    default: Arc<Tenant>,
    factory: EngineFactory,
    overrides: RwLock<Arc<Overrides>>,
    by_id: RwLock<BTreeMap<TenantId, Arc<Tenant>>>,
    refused: AtomicU64,
}

impl Tenants {
    /// The registry, with the default tenant's engine made already (so `/metrics` shows its
    /// series from the start, as before tenants).
    pub fn new(
        settings: TenantSettings,
        factory: EngineFactory,
        overrides: Overrides,
    ) -> Result<Self, BuildError> {
        let id = settings.default_tenant.clone();
        let (engine, applied) = build(&factory, &overrides, &id)?;
        let default = Arc::new(Tenant::built(id.clone(), engine, applied));
        Ok(Self {
            settings,
            default: default.clone(),
            factory,
            overrides: RwLock::new(Arc::new(overrides)),
            by_id: RwLock::new(BTreeMap::from([(id, default)])),
            refused: AtomicU64::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<TenantId, Arc<Tenant>>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<TenantId, Arc<Tenant>>> {
        self.by_id.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A tenant's engine as the overrides in force make it.
    fn build(&self, id: &TenantId) -> Result<(Engine, Applied), BuildError> {
        build(&self.factory, &self.overrides(), id)
    }

    pub fn default_tenant(&self) -> Arc<Tenant> {
        self.default.clone()
    }

    /// The tenant a request's header names (`None`: no header), its engine made if new; held
    /// until the request is done with it.
    pub fn resolve(&self, header: Option<&[u8]>) -> Result<TenantRef, TenantRefused> {
        let id = match header {
            None if self.settings.require_tenant => return Err(TenantRefused::Missing),
            None => return Ok(TenantRef::new(self.default_tenant())),
            Some(raw) => std::str::from_utf8(raw)
                .map_err(|_| TenantRefused::Invalid(InvalidTenantId::Character('\u{fffd}')))?
                .trim(),
        };
        // A tenant seen before is found by the text itself: an id is made only for a new one.
        if let Some(tenant) = self.read().get(id) {
            return Ok(TenantRef::new(tenant.clone()));
        }
        self.get_or_create(&TenantId::parse(id).map_err(TenantRefused::Invalid)?)
    }

    /// A tenant by id, its engine made if new (and within `--max-tenants`), held.
    pub fn get_or_create(&self, id: &TenantId) -> Result<TenantRef, TenantRefused> {
        // Held before the lock is let go, so that expiry never forgets it in between.
        if let Some(tenant) = self.read().get(id) {
            return Ok(TenantRef::new(tenant.clone()));
        }
        let mut by_id = self.write();
        if let Some(tenant) = by_id.get(id) {
            return Ok(TenantRef::new(tenant.clone()));
        }
        if by_id.len() >= self.settings.max_tenants {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TenantRefused::TooMany {
                max: self.settings.max_tenants,
            });
        }
        // The overrides were checked when loaded; a tenant's engine builds as the base did.
        let (engine, applied) = self.build(id).unwrap_or_else(|e| {
            tracing::error!(tenant = %id, error = %e, "cannot build the tenant's engine; using the base settings");
            build(&self.factory, &Overrides::default(), id)
                .expect("the base settings were checked at start")
        });
        let tenant = Arc::new(Tenant::built(id.clone(), engine, applied));
        by_id.insert(id.clone(), tenant.clone());
        Ok(TenantRef::new(tenant))
    }

    /// A tenant that has an engine, without making one.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.lookup(id).ok().flatten()
    }

    /// As [`Tenants::get`], telling an id that cannot be a tenant's from one without an engine.
    pub fn lookup(&self, id: &str) -> Result<Option<Arc<Tenant>>, InvalidTenantId> {
        TenantId::parse(id)?;
        Ok(self.read().get(id).cloned())
    }

    /// Every tenant with an engine, in id order.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.read().values().cloned().collect()
    }

    /// Tenants refused because `--max-tenants` had engines.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn overrides(&self) -> Arc<Overrides> {
        self.overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks every tenant's overrides against the base options; on success they replace the
    /// current ones, and each tenant whose overrides changed gets a new engine (its series
    /// start over, as Tempo recreates a processor whose configuration changed). On failure
    /// nothing changes.
    pub fn apply_overrides(&self, new: Overrides) -> Result<Vec<TenantId>, OverridesRefused> {
        for (tenant, options) in new.tenants() {
            self.factory
                .settings_with(options)
                .map_err(BuildError::from)
                .and_then(|s| self.factory.engine_of(&s).map(drop))
                .map_err(|source| OverridesRefused {
                    tenant: tenant.to_string(),
                    source,
                })?;
        }
        *self.overrides.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        let new = self.overrides();
        let mut rebuilt = Vec::new();
        for tenant in self.all() {
            let id = tenant.id.as_str();
            // Against what its engine was built from: a tenant made since the swap has the new
            // overrides already, and keys graphgen does not read change nothing.
            let mut applied = tenant.applied();
            if applied.from == new.raw_for(id) {
                continue;
            }
            match build(&self.factory, &new, &tenant.id) {
                Ok((engine, now)) => {
                    *tenant.engine() = engine;
                    *applied = now;
                    rebuilt.push(tenant.id.clone());
                }
                Err(e) => tracing::error!(tenant = id, error = %e, "overrides not applied"),
            }
        }
        Ok(rebuilt)
    }

    /// Expires every tenant's edges and stale series, then forgets idle tenants (never the
    /// default one).
    pub fn expire(&self) {
        let mut idle = Vec::new();
        for tenant in self.all() {
            tenant.engine().expire();
            if tenant.id != self.settings.default_tenant && tenant.is_idle() {
                idle.push(tenant.id.clone());
            }
        }
        if idle.is_empty() {
            return;
        }
        let mut by_id = self.write();
        for id in idle {
            // Still idle under the write lock, where no request can take hold of it.
            if by_id.get(&id).is_some_and(|t| t.is_idle()) {
                by_id.remove(&id);
            }
        }
    }
}

/// A tenant's engine as `overrides` make it, with what else they give it.
fn build(
    factory: &EngineFactory,
    overrides: &Overrides,
    id: &TenantId,
) -> Result<(Engine, Applied), BuildError> {
    let (engine, settings) = factory.engine_for(overrides.options_for(id.as_str()))?;
    let applied = Applied {
        push: PushSettings::of(settings, overrides.push_for(id.as_str())),
        from: overrides.raw_for(id.as_str()),
    };
    Ok((engine, applied))
}

/// A tenant's overrides that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant:?}: {source}")]
pub struct OverridesRefused {
    pub tenant: String,
    #[source]
    pub source: BuildError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn tenants(max: usize, clock: &ManualClock) -> Tenants {
        let options =
            <Options as clap::Parser>::try_parse_from(["graphgen", "--stale-duration=1m"]).unwrap();
        Tenants::new(
            TenantSettings {
                default_tenant: TenantId::parse(SINGLE_TENANT).unwrap(),
                require_tenant: false,
                max_tenants: max,
            },
            EngineFactory::new(options, Arc::new(clock.clone())),
            Overrides::default(),
        )
        .unwrap()
    }

    #[test]
    fn tenants_past_the_bound_wait_until_an_idle_one_is_forgotten() {
        let clock = ManualClock::new(1_000_000_000_000);
        let tenants = tenants(2, &clock);
        assert_eq!(tenants.resolve(None).unwrap().id.as_str(), SINGLE_TENANT);
        let a = tenants.resolve(Some(b"team-a")).unwrap();
        a.engine()
            .push_batches(&crate::workload::client_server_request(1));
        drop(a);
        assert!(matches!(
            tenants.resolve(Some(b"team-b")),
            Err(TenantRefused::TooMany { max: 2 })
        ));
        assert_eq!(tenants.refused(), 1);
        // team-a's series go stale after --stale-duration; then it is forgotten and team-b
        // gets its place. The default tenant stays, idle or not.
        clock.advance(std::time::Duration::from_secs(30));
        tenants.expire();
        assert!(
            tenants.get("team-a").is_some(),
            "its series are not stale yet"
        );
        clock.advance(std::time::Duration::from_secs(31));
        tenants.expire();
        assert!(tenants.get("team-a").is_none());
        assert!(tenants.get(SINGLE_TENANT).is_some());
        assert!(tenants.resolve(Some(b"team-b")).is_ok());
    }

    /// A request holds its tenant from before its body is read: expiry in between must not
    /// forget it, or its spans would go to an engine nobody reads.
    #[test]
    fn a_tenant_a_request_holds_is_not_forgotten() {
        let clock = ManualClock::new(1_000_000_000_000);
        let tenants = tenants(10, &clock);
        let held = tenants.resolve(Some(b"team-a")).unwrap();
        let copy = held.clone();
        drop(held);
        tenants.expire();
        assert!(
            tenants.get("team-a").is_some(),
            "idle, but a request holds it"
        );
        drop(copy);
        tenants.expire();
        assert!(tenants.get("team-a").is_none(), "idle and free: forgotten");
    }

    #[test]
    fn overrides_rebuild_only_the_tenants_they_change_and_a_bad_one_changes_nothing() {
        let clock = ManualClock::new(1_000_000_000_000);
        let tenants = tenants(10, &clock);
        let a = tenants.resolve(Some(b"team-a")).unwrap();
        let b = tenants.resolve(Some(b"team-b")).unwrap();
        b.engine()
            .push_batches(&crate::workload::client_server_request(1));
        let file = "overrides:\n  team-a:\n    metrics_generator:\n      processor:\n        service_graphs:\n          dimensions: [region]\n";
        let (overrides, _) = Overrides::parse(file).unwrap();
        let rebuilt = tenants.apply_overrides(overrides).unwrap();
        assert_eq!(rebuilt, vec![TenantId::parse("team-a").unwrap()]);
        assert_eq!(
            a.engine().graph().config().dimensions,
            vec!["region".to_string()]
        );
        assert!(!b.engine().is_idle(), "team-b kept its engine and series");
        // Buckets Tempo refuses: refused, naming the tenant; the overrides in force stay.
        let bad = "overrides:\n  team-a:\n    metrics_generator:\n      processor:\n        service_graphs:\n          histogram_buckets: [2, 1]\n";
        let (overrides, _) = Overrides::parse(bad).unwrap();
        let err = tenants.apply_overrides(overrides).unwrap_err().to_string();
        assert!(
            err.contains("team-a") && err.contains("histogram-buckets"),
            "{err}"
        );
        assert_eq!(
            a.engine().graph().config().dimensions,
            vec!["region".to_string()]
        );
    }

    #[test]
    fn tenant_ids_are_checked_as_dskit_checks_them() {
        for ok in ["a", "team-1", "A.b_c!*'()", &"x".repeat(150)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        let cases: [(&str, InvalidTenantId); 6] = [
            ("", InvalidTenantId::Empty),
            (&"x".repeat(151), InvalidTenantId::TooLong),
            (".", InvalidTenantId::Unsafe(".".into())),
            ("..", InvalidTenantId::Unsafe("..".into())),
            ("a/b", InvalidTenantId::Character('/')),
            ("<script>", InvalidTenantId::Character('<')),
        ];
        for (id, want) in cases {
            assert_eq!(TenantId::parse(id).unwrap_err(), want, "{id:?}");
        }
    }
}

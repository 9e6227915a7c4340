//! The service-graph processor: pairs client and server spans into edges and counts requests,
//! failures and latencies per edge, as Tempo's metrics-generator `service-graphs` processor does.
//!
//! Pure logic: no I/O, no threads, time comes in as an argument.

mod config;
mod edge;
mod filtered;
mod parent_child;
mod recorder;
mod store;

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

pub use config::{Config, ConfigError};
pub use edge::{ConnectionType, Edge, EdgeKey};
use filtered::FilteredSides;
use parent_child::{KindlessSpan, KindlessSpans};
pub use recorder::EdgeFigures;
use recorder::Recorder;
use store::{Store, StoreError, Upsert};

use crate::attributes::{
    self, copy_scanned_into, find_first_scanned, find_scanned, sanitize_label_name, Found, KeyId,
    KeySet, Scanned,
};
use crate::filter::SpanFilter;
use crate::label_limits::truncate_label;
use crate::series::{Cardinality, Family};
use crate::spans::{duration_sec, span_kind_name};
use crate::wire::{Attributes, Batch, Span};

const VIRTUAL_NODE_LABEL: &str = "virtual_node";

/// Counters about the processor itself (not about the traced services).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Edges recorded as metrics, paired or virtual.
    pub edges_completed: u64,
    /// Edges that expired with no way to complete them, by the kind of the span that was seen.
    pub edges_expired: ExpiredByKind,
    /// Spans that could not be stored because `max_items` edges were waiting.
    pub spans_dropped: u64,
    /// Spans skipped because their ids are longer than OTLP allows.
    pub spans_invalid: u64,
    /// Client and server spans left out by `filter_policies`.
    pub spans_filtered: u64,
    /// Edges dropped because one side was filtered out (Tempo's dropped edges): a waiting
    /// edge whose other side was filtered, or a span whose other side had been.
    pub edges_filtered: u64,
}

/// Expired edges counted by the OTLP span kind of the side that was seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpiredByKind([u64; 6]);

impl ExpiredByKind {
    fn add(&mut self, kind: SpanKind) {
        self.0[kind as usize] += 1;
    }

    pub fn get(&self, kind: SpanKind) -> u64 {
        self.0[kind as usize]
    }
}

impl Stats {
    /// Adds another processor's counters (other tenants' engines) to these.
    pub fn add(&mut self, other: &Stats) {
        self.edges_completed += other.edges_completed;
        for (mine, theirs) in self.edges_expired.0.iter_mut().zip(other.edges_expired.0) {
            *mine += theirs;
        }
        self.spans_dropped += other.spans_dropped;
        self.spans_invalid += other.spans_invalid;
        self.spans_filtered += other.spans_filtered;
        self.edges_filtered += other.edges_filtered;
    }

    /// `(span kind, count)` for every kind that has expired edges.
    pub fn expired_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.edges_expired
            .0
            .iter()
            .enumerate()
            // The kinds that pair (server, client, producer, consumer) always, from 0.
            .filter(|(kind, n)| **n > 0 || (2..=5).contains(kind))
            .map(|(kind, n)| (span_kind_name(kind as i32), *n))
    }
}

/// Which side of an edge a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// CLIENT or PRODUCER: keyed by its own span id.
    Client,
    /// SERVER or CONSUMER: keyed by its parent's span id.
    Server,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// Where each dimension's value lives in `Edge::dimensions`, and which labels read them.
#[derive(Debug)]
struct Layout {
    /// `(attribute, client slot, server slot)` for each configured dimension.
    dimensions: Vec<(String, usize, usize)>,
    /// The slot the expiry path writes `virtual_node` into.
    virtual_slot: Option<usize>,
    /// Label names after `client`, `server`, `connection_type`, each with the slot it reads.
    labels: Vec<(String, usize)>,
    slots: usize,
}

impl Layout {
    fn new(config: &Config) -> Self {
        let mut names: Vec<String> = config.dimensions.clone();
        if config.enable_virtual_node_label {
            names.push(VIRTUAL_NODE_LABEL.to_string());
        }
        // Tempo keeps dimension values in a map keyed by (possibly prefixed) name; equal keys
        // share a slot here for the same reason.
        let mut keys: Vec<String> = Vec::new();
        let mut slot_of = |key: String| match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        let mut dimensions = Vec::new();
        let mut labels = Vec::new();
        let prefix = config.enable_client_server_prefix;
        let sanitize_label_name = |name: &str| {
            let mut label = sanitize_label_name(name);
            truncate_label(&mut label, config.limits.max_label_name_length);
            label
        };
        for name in &names {
            let (client_key, server_key) = if prefix {
                (format!("client_{name}"), format!("server_{name}"))
            } else {
                (name.clone(), name.clone())
            };
            let (client, server) = (slot_of(client_key.clone()), slot_of(server_key.clone()));
            dimensions.push((name.clone(), client, server));
            if !prefix {
                labels.push((sanitize_label_name(name), client));
            } else if config.enable_virtual_node_label && name == VIRTUAL_NODE_LABEL {
                labels.push((
                    VIRTUAL_NODE_LABEL.to_string(),
                    slot_of(VIRTUAL_NODE_LABEL.into()),
                ));
            } else {
                labels.push((sanitize_label_name(&client_key), client));
                labels.push((sanitize_label_name(&server_key), server));
            }
        }
        let virtual_slot = config
            .enable_virtual_node_label
            .then(|| slot_of(VIRTUAL_NODE_LABEL.into()));
        Self {
            dimensions,
            virtual_slot,
            labels,
            slots: keys.len(),
        }
    }
}

/// The attribute keys the graph reads, as ids of one [`KeySet`].
#[derive(Debug)]
struct Keys {
    set: KeySet,
    /// Each dimension's, in the order of `Layout::dimensions`.
    dimensions: Vec<KeyId>,
    peer: Vec<KeyId>,
    database_name: Vec<KeyId>,
    peer_service: KeyId,
    server_address: KeyId,
    network_peer_address: KeyId,
    network_peer_port: KeyId,
}

impl Keys {
    fn new(config: &Config, layout: &Layout) -> Self {
        let mut set = KeySet::default();
        Self {
            dimensions: layout
                .dimensions
                .iter()
                .map(|(name, ..)| set.add(name))
                .collect(),
            peer: set.add_all(&config.peer_attributes),
            database_name: set.add_all(&config.database_name_attributes),
            peer_service: set.add("peer.service"),
            server_address: set.add("server.address"),
            network_peer_address: set.add("network.peer.address"),
            network_peer_port: set.add("network.peer.port"),
            set,
        }
    }
}

/// The service-graph processor. Feed it with [`ServiceGraph::push`], call
/// [`ServiceGraph::expire`] periodically, read it with [`ServiceGraph::families`].
#[derive(Debug)]
pub struct ServiceGraph {
    config: Config,
    layout: Layout,
    store: Store,
    recorder: Recorder,
    /// Kind-less spans waiting for a parent or children (`edges_from_parent_child`).
    kindless: KindlessSpans,
    /// The edge a kind-less pair is recorded through, reused.
    kindless_edge: Edge,
    /// The current resource's service name, reused across batches.
    service_name: String,
    keys: Keys,
    /// Where the current resource's and span's attributes have the keys.
    resource_found: Found,
    span_found: Found,
    /// `filter_policies`, and the sides they left out.
    filter: SpanFilter,
    filtered: FilteredSides,
    stats: Stats,
}

impl ServiceGraph {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let layout = Layout::new(&config);
        Ok(Self {
            filter: SpanFilter::new(&config.filter_policies)?,
            filtered: FilteredSides::new(config.max_items),
            store: Store::new(config.max_items, layout.slots),
            recorder: Recorder::new(
                config.histogram_layout(),
                &layout.labels,
                config.enable_messaging_system_latency_histogram,
                config.metrics,
                config.limits,
            ),
            kindless: KindlessSpans::default(),
            kindless_edge: Edge::new(layout.slots),
            keys: Keys::new(&config, &layout),
            resource_found: Found::default(),
            span_found: Found::default(),
            layout,
            service_name: String::new(),
            stats: Stats::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every series, as metric families.
    pub fn families(&self, now: u64) -> Vec<Family> {
        self.recorder.families(now)
    }

    /// Visits every edge series' cumulative figures (for the service map), without copying them.
    pub fn for_each_edge(&self, visit: impl FnMut(EdgeFigures<'_>)) {
        self.recorder.for_each_edge(visit)
    }

    /// Drops the series no edge has updated since `cutoff` (nanoseconds since the epoch).
    pub fn purge_series_older_than(&mut self, cutoff: u64) -> usize {
        self.recorder.purge_older_than(cutoff)
    }

    /// (label sets held, completed edges not recorded because `max_series` was reached)
    pub fn cardinality(&self) -> Cardinality {
        self.recorder.cardinality()
    }

    /// Edges waiting for their other side.
    pub fn pending_edges(&self) -> usize {
        self.store.len()
    }

    /// (sides of filtered spans remembered, sides not remembered because `max_items` were)
    pub fn filtered_sides(&self) -> (usize, u64) {
        (self.filtered.len(), self.filtered.overflow())
    }

    /// Processes one batch of spans received at `now` (nanoseconds since the epoch).
    pub fn push(&mut self, batch: &Batch<'_>, now: u64) {
        let expires_at = now.saturating_add(self.config.wait.as_nanos() as u64);
        for (resource, spans) in batch.resources() {
            let Some(service) = attributes::service_name(resource) else {
                continue;
            };
            // Taken out of `self` for the loop so the buffer is reused without a borrow conflict.
            let mut service_name = std::mem::take(&mut self.service_name);
            service_name.clear();
            attributes::write_value(service.value(), &mut service_name);
            self.keys.set.scan(resource, &mut self.resource_found);
            for span in spans {
                self.push_span(&service_name, resource, &span, now, expires_at);
            }
            self.service_name = service_name;
        }
    }

    /// [`ServiceGraph::push`] for requests built as prost structs.
    #[cfg(test)]
    pub(crate) fn push_batches(
        &mut self,
        batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
        now: u64,
    ) {
        Batch::of_batches(batches, |batch| self.push(batch, now));
    }

    fn push_span(
        &mut self,
        service: &str,
        resource: Attributes<'_>,
        span: &Span<'_>,
        now: u64,
        expires_at: u64,
    ) {
        let kind = span.kind;
        let (side, connection_type) = match SpanKind::try_from(kind) {
            Ok(SpanKind::Client) => (Side::Client, ConnectionType::Unknown),
            Ok(SpanKind::Producer) => (Side::Client, ConnectionType::MessagingSystem),
            Ok(SpanKind::Server) => (Side::Server, ConnectionType::Unknown),
            Ok(SpanKind::Consumer) => (Side::Server, ConnectionType::MessagingSystem),
            _ => {
                if self.config.edges_from_parent_child {
                    self.push_kindless(service, resource, span, now, expires_at);
                }
                return;
            }
        };
        let key_span_id = match side {
            Side::Client => span.span_id,
            Side::Server => span.parent_span_id,
        };
        let Some(key) = EdgeKey::new(span.trace_id, key_span_id) else {
            self.stats.spans_invalid += 1;
            return;
        };
        if !self.filter.keeps(resource, span) {
            self.stats.spans_filtered += 1;
            // A root server span has no client to wait for.
            if side == Side::Client || !span.parent_span_id.is_empty() {
                if self.store.remove_waiting_for(&key, side) {
                    self.stats.edges_filtered += 1;
                }
                self.filtered.add(key, side, expires_at);
            }
            return;
        }
        let lookup = self.store.lookup(key);
        if self.filtered.has_counterpart(&key, side) && !lookup.is_waiting() {
            self.stats.edges_filtered += 1;
            return;
        }
        // Only a database call names both sides by itself (`apply_database`), and only with a
        // service name of its own. Any other span is refused by a full store that has no edge
        // of its key, and then before its attributes are read.
        let may_be_database_call = side == Side::Client && !service.is_empty();
        if !may_be_database_call && self.store.refuses_new(&lookup) {
            self.stats.spans_dropped += 1;
            return;
        }

        let Self {
            config,
            layout,
            store,
            recorder,
            stats,
            keys,
            resource_found,
            span_found,
            ..
        } = self;
        let lists = keys
            .set
            .scan_span(resource, resource_found, span.attributes, span_found);
        let multiplier = attributes::multiplier(
            config.span_multiplier_key.as_deref(),
            config.enable_tracestate_span_multiplier,
            span,
            resource,
        );
        let failed = failed(span);
        let duration = duration_sec(span.start_time_unix_nano, span.end_time_unix_nano);
        let may_complete_alone =
            may_be_database_call && find_first_scanned(&keys.database_name, &lists).is_some();

        let update = |e: &mut Edge| {
            e.span_kind = kind;
            e.connection_type = connection_type;
            e.failed |= failed;
            e.span_multiplier = multiplier;
            match side {
                Side::Client => {
                    replace(&mut e.client_service, service);
                    e.client_latency_sec = duration;
                    e.client_end_nanos = span.end_time_unix_nano;
                }
                Side::Server => {
                    replace(&mut e.server_service, service);
                    e.server_latency_sec = duration;
                    e.server_start_nanos = span.start_time_unix_nano;
                }
            }
            for ((_, client_slot, server_slot), id) in
                layout.dimensions.iter().zip(&keys.dimensions)
            {
                let slot = match side {
                    Side::Client => *client_slot,
                    Side::Server => *server_slot,
                };
                copy_scanned_into(*id, &lists, &mut e.dimensions[slot]);
            }
            attributes::replace_with_value(
                find_first_scanned(&keys.peer, &lists[1..]),
                &mut e.peer_node,
            );
            if side == Side::Client {
                apply_database(keys, e, &lists, duration);
            }
        };
        let complete = |e: &mut Edge| {
            recorder.record(e, now);
            stats.edges_completed += 1;
        };
        match store.upsert_looked_up(lookup, expires_at, may_complete_alone, update, complete) {
            Ok(Upsert::Completed { .. } | Upsert::Stored { .. }) => {}
            Err(StoreError::Full) => stats.spans_dropped += 1,
        }
    }

    /// A span of no pairing kind: an edge with its parent or children in other services, when
    /// those are kind-less too (see [`parent_child`]).
    fn push_kindless(
        &mut self,
        service: &str,
        resource: Attributes<'_>,
        span: &Span<'_>,
        now: u64,
        expires_at: u64,
    ) {
        if !self.filter.keeps(resource, span) {
            self.stats.spans_filtered += 1;
            return;
        }
        let Some(own) = EdgeKey::new(span.trace_id, span.span_id) else {
            self.stats.spans_invalid += 1;
            return;
        };
        let parent = match span.parent_span_id.is_empty() {
            true => None,
            false => match EdgeKey::new(span.trace_id, span.parent_span_id) {
                Some(key) => Some(key),
                None => {
                    self.stats.spans_invalid += 1;
                    return;
                }
            },
        };
        let Self {
            config,
            layout,
            recorder,
            stats,
            kindless,
            kindless_edge,
            keys,
            resource_found,
            span_found,
            ..
        } = self;
        let lists = keys
            .set
            .scan_span(resource, resource_found, span.attributes, span_found);
        let kindless_span = KindlessSpan {
            service: service.to_string(),
            kind: span.kind,
            duration_sec: duration_sec(span.start_time_unix_nano, span.end_time_unix_nano),
            start_nanos: span.start_time_unix_nano,
            end_nanos: span.end_time_unix_nano,
            failed: failed(span),
            multiplier: attributes::multiplier(
                config.span_multiplier_key.as_deref(),
                config.enable_tracestate_span_multiplier,
                span,
                resource,
            ),
            dimensions: keys
                .dimensions
                .iter()
                .map(|id| {
                    let mut value = String::new();
                    copy_scanned_into(*id, &lists, &mut value);
                    value
                })
                .collect(),
            expires_at,
        };
        let stored = kindless.push(own, parent, kindless_span, config.max_items, |pair| {
            pair.fill(&layout.dimensions, kindless_edge);
            recorder.record(kindless_edge, now);
            stats.edges_completed += 1;
        });
        if !stored {
            stats.spans_dropped += 1;
        }
    }

    /// Expires every edge whose wait is over at `now`: edges with an uninstrumented side
    /// become virtual-node edges, the rest are counted as expired.
    pub fn expire(&mut self, now: u64) {
        self.kindless.expire(now);
        self.filtered.expire(now);
        let Self {
            layout,
            store,
            recorder,
            stats,
            ..
        } = self;
        store.expire(now, |e| {
            e.connection_type = ConnectionType::VirtualNode;
            let virtual_side = if e.client_service.is_empty() {
                // A root server span: its caller is outside the traced world (a browser, curl).
                e.key.is_root().then(|| {
                    let name = if e.peer_node.is_empty() {
                        "user"
                    } else {
                        &e.peer_node
                    };
                    e.client_service.clear();
                    e.client_service.push_str(name);
                    "client"
                })
            } else if e.server_service.is_empty() && !e.peer_node.is_empty() {
                // A call to something that sends no spans, named by a peer attribute.
                e.server_service.clear();
                e.server_service.push_str(&e.peer_node);
                Some("server")
            } else {
                None
            };
            match virtual_side {
                Some(side) => {
                    if let Some(slot) = layout.virtual_slot {
                        replace(&mut e.dimensions[slot], side);
                    }
                    recorder.record(e, now);
                    stats.edges_completed += 1;
                }
                None => {
                    let kind = SpanKind::try_from(e.span_kind).unwrap_or(SpanKind::Unspecified);
                    stats.edges_expired.add(kind);
                }
            }
        });
    }
}

/// A client span that names a database is an edge to that database, complete on its own.
fn apply_database(keys: &Keys, e: &mut Edge, lists: &[Scanned<'_, '_>; 2], duration: f64) {
    let Some(db_attr) = find_first_scanned(&keys.database_name, lists) else {
        return;
    };
    e.connection_type = ConnectionType::Database;
    e.server_latency_sec = duration;
    if copy_scanned_into(keys.peer_service, lists, &mut e.server_service)
        || copy_scanned_into(keys.server_address, lists, &mut e.server_service)
    {
        return;
    }
    if copy_scanned_into(keys.network_peer_address, lists, &mut e.server_service) {
        if let Some(port) = find_scanned(keys.network_peer_port, lists) {
            e.server_service.push(':');
            attributes::write_value(port.value(), &mut e.server_service);
        }
        return;
    }
    let before = e.server_service.len();
    attributes::write_value(db_attr.value(), &mut e.server_service);
    if e.server_service.len() > before {
        // The database name replaces whatever was there, but only when it is not empty.
        e.server_service.drain(..before);
    }
}

/// Whether the span's status is ERROR.
fn failed(span: &Span<'_>) -> bool {
    span.status_code == StatusCode::Error as i32
}

pub(super) fn replace(target: &mut String, value: &str) {
    target.clear();
    target.push_str(value);
}

#[cfg(test)]
mod tests;

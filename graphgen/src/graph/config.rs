//! Options of the service-graph processor, named as in Tempo's `service_graphs` overrides.

use crate::series::{validate_buckets, InvalidBuckets, RegistryLimits};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::{FilterError, FilterPolicy, SpanFilter};
use crate::native_histogram::NativeConfig;
use crate::processors::GraphMetrics;
use crate::series::{exponential_buckets, HistogramLayout};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long an edge waits for its other side before it expires.
    #[serde(with = "crate::duration_serde")]
    pub wait: Duration,
    /// Most edges held while waiting; spans beyond it are dropped and counted.
    pub max_items: usize,
    /// Latency histogram bounds, in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Attributes (resource first, then span) copied into labels.
    pub dimensions: Vec<String>,
    /// Label dimensions `client_<dim>` and `server_<dim>` from each side.
    pub enable_client_server_prefix: bool,
    /// Also observe producer-end → consumer-start latency of messaging edges.
    pub enable_messaging_system_latency_histogram: bool,
    /// Add `virtual_node="client"|"server"` to edges with an uninstrumented side.
    pub enable_virtual_node_label: bool,
    /// Span attributes naming an uninstrumented peer, first found wins.
    pub peer_attributes: Vec<String>,
    /// Attributes that mark a client span as a database call, first found wins.
    pub database_name_attributes: Vec<String>,
    /// A double attribute holding the sampling ratio; each span then counts `1/ratio` times.
    pub span_multiplier_key: Option<String>,
    /// Take the multiplier from the tracestate's `ot=th:…` sampling threshold first.
    pub enable_tracestate_span_multiplier: bool,
    /// Which client and server spans are paired (Tempo's `filter_policies`).
    pub filter_policies: Vec<FilterPolicy>,
    /// The bounds of the series (label sets = edges × dimension values); generator-wide.
    #[serde(skip)]
    pub limits: RegistryLimits,
    /// Native buckets for the latency histograms (the generator-wide `--histograms`), not a
    /// per-processor key.
    #[serde(skip)]
    pub native_histograms: Option<NativeConfig>,
    /// Which series are written (the `service-graphs*` names of `processors`).
    #[serde(skip)]
    pub metrics: GraphMetrics,
    /// Edges between kind-less parent and child spans of different services (not a Tempo
    /// option; off, graphgen equals Tempo).
    #[serde(skip)]
    pub edges_from_parent_child: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            max_items: 10_000,
            histogram_buckets: exponential_buckets(0.1, 2.0, 8),
            dimensions: Vec::new(),
            enable_client_server_prefix: false,
            enable_messaging_system_latency_histogram: false,
            enable_virtual_node_label: false,
            peer_attributes: strings(&["peer.service", "db.name", "db.system", "db.system.name"]),
            database_name_attributes: strings(&[
                "db.namespace",
                "db.name",
                "db.system",
                "db.system.name",
            ]),
            span_multiplier_key: None,
            enable_tracestate_span_multiplier: false,
            filter_policies: Vec::new(),
            limits: RegistryLimits::default(),
            native_histograms: None,
            metrics: GraphMetrics::default(),
            edges_from_parent_child: false,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A problem with the options, found before any span is processed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(transparent)]
    Buckets(#[from] InvalidBuckets),
    #[error("max_items must be at least 1")]
    MaxItems,
    #[error("max_series must be at least 1")]
    MaxSeries,
    #[error("dimension {0:?} is empty")]
    EmptyDimension(String),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

impl Config {
    /// How the latency histograms are kept.
    pub fn histogram_layout(&self) -> HistogramLayout {
        HistogramLayout {
            bounds: self.histogram_buckets.as_slice().into(),
            native: self.native_histograms,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_buckets(&self.histogram_buckets)?;
        if self.max_items == 0 {
            return Err(ConfigError::MaxItems);
        }
        if self.limits.max_series == 0 {
            return Err(ConfigError::MaxSeries);
        }
        if let Some(d) = self.dimensions.iter().find(|d| d.trim().is_empty()) {
            return Err(ConfigError::EmptyDimension(d.clone()));
        }
        SpanFilter::new(&self.filter_policies)?;
        Ok(())
    }
}

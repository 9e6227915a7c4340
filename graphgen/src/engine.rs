//! The engine: the service-graph and span-metrics processors behind one door, with a clock.
//! Still pure logic; the binary owns it behind a mutex and calls it from its tasks.

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::clock::Clock;
use crate::graph::{self, ServiceGraph};
use crate::series::Family;
use crate::spanmetrics::{self, SpanMetrics};

pub struct Engine {
    graph: ServiceGraph,
    span_metrics: Option<SpanMetrics>,
    clock: Arc<dyn Clock>,
    /// When the engine started, reported as the start of every cumulative series.
    started_nanos: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("graph", &self.graph)
            .field("span_metrics", &self.span_metrics)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// `span_metrics: None` turns the span-metrics processor off.
    pub fn new(
        graph: graph::Config,
        span_metrics: Option<spanmetrics::Config>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, graph::ConfigError> {
        Ok(Self {
            graph: ServiceGraph::new(graph)?,
            span_metrics: span_metrics.map(SpanMetrics::new).transpose()?,
            started_nanos: clock.now_nanos(),
            clock,
        })
    }

    pub fn push(&mut self, batches: &[ResourceSpans]) {
        let now = self.clock.now_nanos();
        self.graph.push(batches, now);
        if let Some(sm) = &mut self.span_metrics {
            sm.push(batches, now);
        }
    }

    /// Completes or expires every edge whose wait is over.
    pub fn expire(&mut self) {
        self.graph.expire(self.clock.now_nanos());
    }

    pub fn graph(&self) -> &ServiceGraph {
        &self.graph
    }

    pub fn span_metrics(&self) -> Option<&SpanMetrics> {
        self.span_metrics.as_ref()
    }

    pub fn started_nanos(&self) -> u64 {
        self.started_nanos
    }

    pub fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// Every series of both processors.
    pub fn families(&self) -> Vec<Family> {
        let mut families = self.graph.families();
        if let Some(sm) = &self.span_metrics {
            families.extend(sm.families());
        }
        families
    }
}

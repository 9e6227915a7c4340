//! The engine: the service-graph and span-metrics processors behind one door, with a clock.
//! Still pure logic; the binary owns it behind a lock and calls it from its tasks.
//!
//! A request goes through two stages, each behind its own lock: first the filters that take
//! spans out and the service graph, then span metrics and host info. Two receiving threads can
//! so be in the two stages at once ([`Engine::push_parsed`] takes `&self`); everything else
//! (expiry, reading the series) takes the engine whole. A request that finds a stage held
//! spins briefly before it sleeps (`stage.rs`).

mod stage;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::wire::{Batch, BatchBuffers, Request};
use stage::Stage;

use crate::clock::Clock;
use crate::dedup::SeenSpans;
use crate::graph::{self, ServiceGraph};
use crate::hostinfo::{self, HostInfo};
use crate::series::Family;
use crate::spanmetrics::{self, SpanMetrics};

/// Options one of the processors cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("service graph: {0}")]
    Graph(#[from] graph::ConfigError),
    #[error("span metrics: {0}")]
    SpanMetrics(#[from] spanmetrics::ConfigError),
}

/// Tempo's default `stale_duration`.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

pub struct Engine {
    first: Stage<FirstStage>,
    second: Stage<SecondStage>,
    clock: Arc<dyn Clock>,
    /// Series not updated for this long are dropped, as Tempo's registry does.
    stale_after: Duration,
    /// Spans ending further than this from now are not counted (`--ingestion-time-range-slack`).
    ingestion_slack: Option<Duration>,
    /// Where a request's spans are parsed, reused across pushes.
    buffers: BatchBuffers,
}

/// What a request goes through first: the filters that take spans out, and the service graph.
struct FirstStage {
    /// Spans already counted, when re-deliveries are to be counted once (`--dedup-window`).
    dedup: Option<SeenSpans>,
    outside_time_range: u64,
    graph: ServiceGraph,
}

/// Then the processors that read every span kept.
struct SecondStage {
    span_metrics: Option<SpanMetrics>,
    host_info: Option<HostInfo>,
}

/// Every processor's state at once, for reading (the engine taken whole).
pub struct Parts<'a> {
    pub graph: &'a ServiceGraph,
    pub span_metrics: Option<&'a SpanMetrics>,
    pub host_info: Option<&'a HostInfo>,
    pub dedup: Option<&'a SeenSpans>,
    /// Spans not counted because they ended outside the ingestion time range.
    pub spans_outside_time_range: u64,
    /// How long requests waited for a stage another request held.
    pub stage_wait: Duration,
}

impl std::fmt::Debug for Engine {
    /// Without waiting for a stage in use (nor counting a wait).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.first.try_lock();
        let second = self.second.try_lock();
        f.debug_struct("Engine")
            .field("graph", &first.as_ref().map(|s| &s.graph))
            .field("span_metrics", &second.as_ref().map(|s| &s.span_metrics))
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// `span_metrics: None` turns the span-metrics processor off.
    pub fn new(
        graph: graph::Config,
        span_metrics: Option<spanmetrics::Config>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            first: Stage::new(FirstStage {
                dedup: None,
                outside_time_range: 0,
                graph: ServiceGraph::new(graph)?,
            }),
            second: Stage::new(SecondStage {
                span_metrics: span_metrics.map(SpanMetrics::new).transpose()?,
                host_info: None,
            }),
            clock,
            stale_after: DEFAULT_STALE_AFTER,
            ingestion_slack: None,
            buffers: BatchBuffers::default(),
        })
    }

    /// Also runs the host-info processor.
    pub fn with_host_info(mut self, host_info: HostInfo) -> Self {
        self.second.get_mut().host_info = Some(host_info);
        self
    }

    /// [`Engine::with_host_info`] for `Some(config)`.
    pub fn with_host_info_if(
        self,
        config: Option<hostinfo::Config>,
    ) -> Result<Self, hostinfo::ConfigError> {
        Ok(match config {
            Some(config) => self.with_host_info(HostInfo::new(config)?),
            None => self,
        })
    }

    /// Counts a span delivered again while `seen` remembers it only once.
    pub fn with_dedup(mut self, seen: SeenSpans) -> Self {
        self.first.get_mut().dedup = Some(seen);
        self
    }

    /// Spans that end more than `slack` before or after now are not counted, as Tempo's
    /// `metrics_ingestion_time_range_slack` (`modules/generator/instance.go`,
    /// `preprocessSpans`, ad33aa8); `None` counts every span.
    pub fn with_ingestion_slack(mut self, slack: Option<Duration>) -> Self {
        self.ingestion_slack = slack;
        self
    }

    /// Spans not counted because they ended outside the ingestion time range.
    pub fn spans_outside_time_range(&mut self) -> u64 {
        self.parts().spans_outside_time_range
    }

    /// [`Engine::with_dedup`] for `Some((window, max_spans))`.
    pub fn with_dedup_if(self, dedup: Option<(Duration, usize)>) -> Self {
        match dedup {
            Some((window, max_spans)) => self.with_dedup(SeenSpans::new(window, max_spans)),
            None => self,
        }
    }

    /// The record of spans already counted, when de-duplication is on.
    pub fn dedup(&mut self) -> Option<&SeenSpans> {
        self.parts().dedup
    }

    /// Counts a request's spans, except those that end outside the ingestion time range and
    /// those already counted (when de-duplication is on).
    pub fn push(&mut self, request: &Request<'_>) {
        let mut buffers = std::mem::take(&mut self.buffers);
        let mut batch = buffers.parse(request);
        self.push_parsed(&mut batch);
        buffers.recycle(batch);
        self.buffers = buffers;
    }

    /// [`Engine::push`] for a request parsed beforehand (the receivers parse it before they
    /// take the engine's locks). The spans not to count are taken out of `batch`. Each stage
    /// is locked in turn, so that another request can be in the other stage meanwhile.
    pub fn push_parsed(&self, batch: &mut Batch<'_>) {
        let now;
        {
            let first = &mut *self.first.lock();
            // Read under the lock, so the times the store and the de-duplication record stay in
            // arrival order (their expiry looks only at the oldest).
            now = self.clock.now_nanos();
            if let Some(slack) = self.ingestion_slack {
                let slack = slack.as_nanos() as u64;
                let range = now.saturating_sub(slack)..=now.saturating_add(slack);
                let outside = &mut first.outside_time_range;
                batch.retain(|span| {
                    let inside = range.contains(&span.end_time_unix_nano);
                    *outside += u64::from(!inside);
                    inside
                });
            }
            if let Some(seen) = &mut first.dedup {
                batch.retain(|span| seen.first_time(span.trace_id, span.span_id, now));
            }
            first.graph.push(batch, now);
        }
        let second = &mut *self.second.lock();
        if let Some(sm) = &mut second.span_metrics {
            sm.push(batch, now);
        }
        if let Some(hi) = &mut second.host_info {
            hi.push(batch, now);
        }
    }

    /// [`Engine::push`] for requests built as prost structs (tests, benchmarks and tools): they
    /// are encoded first.
    pub fn push_batches(&mut self, batches: &[ResourceSpans]) {
        let bytes = crate::wire::encode(batches);
        self.push(&Request::trusted(&bytes));
    }

    /// Drops series not updated for `stale_after` (default 15 minutes, Tempo's `stale_duration`).
    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// Completes or expires every edge whose wait is over, and drops stale series.
    pub fn expire(&mut self) {
        let now = self.clock.now_nanos();
        let cutoff = now.saturating_sub(self.stale_after.as_nanos() as u64);
        let graph = &mut self.first.get_mut().graph;
        graph.expire(now);
        graph.purge_series_older_than(cutoff);
        let second = self.second.get_mut();
        if let Some(sm) = &mut second.span_metrics {
            sm.purge_series_older_than(cutoff);
        }
        if let Some(hi) = &mut second.host_info {
            hi.purge_series_older_than(cutoff);
        }
    }

    /// Nothing held: no series in any processor and no edge waiting (a tenant so can be
    /// forgotten).
    pub fn is_idle(&mut self) -> bool {
        let Parts {
            graph,
            span_metrics,
            host_info,
            ..
        } = self.parts();
        graph.pending_edges() == 0
            && graph.cardinality().series == 0
            && span_metrics.is_none_or(|sm| sm.cardinality().series == 0)
            && host_info.is_none_or(|hi| hi.cardinality().series == 0)
    }

    /// Every processor's state, borrowed at once.
    pub fn parts(&mut self) -> Parts<'_> {
        let stage_wait = self.first.waited() + self.second.waited();
        let first = self.first.get_mut();
        let second = self.second.get_mut();
        Parts {
            graph: &first.graph,
            span_metrics: second.span_metrics.as_ref(),
            host_info: second.host_info.as_ref(),
            dedup: first.dedup.as_ref(),
            spans_outside_time_range: first.outside_time_range,
            stage_wait,
        }
    }

    pub fn graph(&mut self) -> &ServiceGraph {
        self.parts().graph
    }

    pub fn span_metrics(&mut self) -> Option<&SpanMetrics> {
        self.parts().span_metrics
    }

    pub fn host_info(&mut self) -> Option<&HostInfo> {
        self.parts().host_info
    }

    pub fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// Every series of both processors.
    pub fn families(&mut self) -> Vec<Family> {
        let now = self.clock.now_nanos();
        let parts = self.parts();
        let mut families = parts.graph.families(now);
        if let Some(sm) = parts.span_metrics {
            families.extend(sm.families(now));
        }
        if let Some(hi) = parts.host_info {
            families.extend(hi.families());
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::series::Family;
    use crate::workload::client_server_request;
    use std::time::Instant;

    fn totals(families: &[Family]) -> Vec<(f64, u64)> {
        families
            .iter()
            .filter(|f| f.name == "traces_service_graph_request_total")
            .flat_map(|f| &f.series)
            .map(|s| match s.value {
                crate::series::SeriesValue::Counter(v) => (v, s.start_nanos),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn series_not_updated_for_the_stale_duration_are_dropped_then_start_over() {
        let clock = ManualClock::new(1_000);
        let mut engine = Engine::new(
            graph::Config {
                // The presence gauge goes stale with its edge's other series.
                metrics: crate::processors::GraphMetrics {
                    connection_info: true,
                    ..Default::default()
                },
                ..graph::Config::default()
            },
            Some(spanmetrics::Config::default()),
            Arc::new(clock.clone()),
        )
        .unwrap()
        .with_stale_after(Duration::from_secs(60));
        let request = client_server_request(1);
        engine.push_batches(&request);
        assert_eq!(totals(&engine.families()), vec![(1.0, 1_000)]);
        let presence = |engine: &mut Engine| {
            engine
                .families()
                .iter()
                .filter(|f| f.name == "traces_service_graph_connection_info")
                .flat_map(|f| f.series.iter())
                .map(|s| match s.value {
                    crate::series::SeriesValue::Gauge(v) => v,
                    _ => unreachable!("a gauge"),
                })
                .collect::<Vec<f64>>()
        };
        assert_eq!(presence(&mut engine), [1.0]);

        clock.advance(Duration::from_secs(59));
        engine.expire();
        assert_eq!(totals(&engine.families()).len(), 1, "not stale yet");
        assert_eq!(presence(&mut engine), [1.0]);

        clock.advance(Duration::from_secs(2));
        engine.expire();
        assert!(
            engine.families().iter().all(|f| f.series.is_empty()),
            "every series dropped, the presence gauge too"
        );

        engine.push_batches(&request);
        let restarted = 1_000 + 61_000_000_000;
        assert_eq!(
            totals(&engine.families()),
            vec![(1.0, restarted)],
            "counts again from its own start"
        );
    }
    /// Every sample of every series (both processors), in a stable order.
    fn every_sample(families: &[Family]) -> Vec<String> {
        let mut samples: Vec<String> = families
            .iter()
            .flat_map(|f| f.samples())
            .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
            .collect();
        samples.sort();
        samples
    }

    #[test]
    fn a_request_delivered_twice_counts_once_with_dedup_and_twice_without() {
        let request = crate::workload::client_server_request(20);
        // A batch re-sent after a partial failure: half of it again, and nothing new.
        let half = &request[..request.len() / 2];
        // The samples after pushing `deliveries`, and the duplicates the filter (if on) saw.
        let run = |dedup: bool, deliveries: &[&[ResourceSpans]]| {
            let clock = ManualClock::new(1_000_000_000);
            let mut engine = Engine::new(
                graph::Config::default(),
                Some(spanmetrics::Config::default()),
                Arc::new(clock.clone()),
            )
            .unwrap();
            if dedup {
                engine = engine.with_dedup(SeenSpans::new(Duration::from_secs(60), 1000));
            }
            for delivery in deliveries {
                engine.push_batches(delivery);
            }
            clock.advance(Duration::from_secs(30));
            engine.expire();
            (
                every_sample(&engine.families()),
                engine.dedup().map(|d| d.duplicates()),
            )
        };
        let spans = |batches: &[ResourceSpans]| -> usize {
            batches
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum()
        };
        let (once, _) = run(false, &[&request]);
        let (deduplicated, duplicates) = run(true, &[&request, &request, half]);
        assert_eq!(deduplicated, once, "the same series as one delivery");
        assert_eq!(duplicates, Some((spans(&request) + spans(half)) as u64));
        let (doubled, _) = run(false, &[&request, &request, half]);
        assert_ne!(
            doubled, once,
            "without the filter, re-deliveries count again"
        );
    }

    #[test]
    fn spans_ending_outside_the_ingestion_time_range_are_not_counted() {
        let now = 1_000_000_000_000u64;
        let second = 1_000_000_000u64;
        // (end time of every span in the request, counted with a 30 s slack)
        for (end, counted) in [
            (now, true),
            (now - 30 * second, true),
            (now - 31 * second, false),
            (now + 31 * second, false),
        ] {
            let mut request = client_server_request(2);
            for span in request
                .iter_mut()
                .flat_map(|rs| rs.scope_spans.iter_mut())
                .flat_map(|ss| ss.spans.iter_mut())
            {
                span.start_time_unix_nano = end - second;
                span.end_time_unix_nano = end;
            }
            let spans = request
                .iter()
                .map(|rs| rs.scope_spans[0].spans.len())
                .sum::<usize>() as u64;
            for slack in [Some(Duration::from_secs(30)), None] {
                let mut engine = Engine::new(
                    graph::Config::default(),
                    Some(spanmetrics::Config::default()),
                    Arc::new(ManualClock::new(now)),
                )
                .unwrap()
                .with_ingestion_slack(slack);
                engine.push_batches(&request);
                let edges: f64 = totals(&engine.families()).iter().map(|(v, _)| v).sum();
                let kept = counted || slack.is_none();
                assert_eq!(
                    edges,
                    if kept { 2.0 } else { 0.0 },
                    "end {end}, slack {slack:?}"
                );
                let outside = if kept { 0 } else { spans };
                assert_eq!(engine.spans_outside_time_range(), outside);
            }
        }
    }

    #[test]
    fn requests_counted_at_once_from_two_threads_add_up() {
        // 1,000 edges: one thread pushes their client spans, the other their server spans,
        // 50 a request, at the same time; every edge pairs across the threads' requests.
        let request = client_server_request(1_000);
        let chunks = |side: usize| -> Vec<Vec<u8>> {
            let spans = &request[side].scope_spans[0].spans;
            spans
                .chunks(50)
                .map(|chunk| {
                    let mut part = request[side].clone();
                    part.scope_spans[0].spans = chunk.to_vec();
                    crate::wire::encode(&[part])
                })
                .collect()
        };
        let (clients, servers) = (chunks(0), chunks(1));
        let engine = Engine::new(
            graph::Config {
                max_items: 10_000,
                ..graph::Config::default()
            },
            Some(spanmetrics::Config::default()),
            Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        std::thread::scope(|scope| {
            for requests in [&clients, &servers] {
                let engine = &engine;
                scope.spawn(move || {
                    let mut buffers = BatchBuffers::default();
                    for bytes in requests {
                        let mut batch = buffers.parse(&Request::trusted(bytes));
                        engine.push_parsed(&mut batch);
                        buffers.recycle(batch);
                    }
                });
            }
        });
        let mut engine = engine;
        let families = engine.families();
        let edges: f64 = totals(&families).iter().map(|(v, _)| v).sum();
        assert_eq!(edges, 1_000.0);
        assert_eq!(engine.graph().pending_edges(), 0);
        let calls = crate::series::counter_total(&families, "traces_spanmetrics_calls_total");
        assert_eq!(calls, 2_000.0);
    }

    #[test]
    fn a_request_waits_for_a_stage_another_holds_then_counts_and_the_wait_is_counted() {
        let engine = Engine::new(
            graph::Config::default(),
            Some(spanmetrics::Config::default()),
            Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        let bytes = crate::wire::encode(&client_server_request(10));
        let held = Duration::from_millis(50);
        let (ready, is_ready) = std::sync::mpsc::channel();
        let pushed_in = std::thread::scope(|scope| {
            // Another request in span metrics' stage, for far longer than the spin.
            let second = engine.second.lock();
            let pushing = scope.spawn(|| {
                let mut buffers = BatchBuffers::default();
                let mut batch = buffers.parse(&Request::trusted(&bytes));
                ready.send(()).unwrap();
                let started = Instant::now();
                engine.push_parsed(&mut batch);
                started.elapsed()
            });
            is_ready.recv().unwrap();
            std::thread::sleep(held);
            assert!(!pushing.is_finished(), "the push waits for the stage");
            drop(second);
            pushing.join().unwrap()
        });
        let mut engine = engine;
        let waited = engine.parts().stage_wait;
        // Counted from when the push reached the stage, which it did soon after it was ready.
        assert!(
            waited >= held / 2 && waited <= pushed_in,
            "waited {waited:?}, the push took {pushed_in:?}"
        );
        let families = engine.families();
        let edges: f64 = totals(&families).iter().map(|(v, _)| v).sum();
        assert_eq!(edges, 10.0);
        let calls = crate::series::counter_total(&families, "traces_spanmetrics_calls_total");
        assert_eq!(calls, 20.0);
    }
}

//! The workload of Tempo's `BenchmarkServiceGraphsPushSpansSteadyState`, so the two can be
//! compared on one machine: `cargo bench -p graphgen --bench engine`.
//! Criterion prints time per request (200 spans) and spans/s (the "thrpt" line).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use graphgen::clock::SystemClock;
use graphgen::engine::Engine;
use graphgen::graph;
use graphgen::native_histogram::NativeConfig;
use graphgen::spanmetrics;
use graphgen::workload::client_server_request;

/// `(name, how it changes the default config, span metrics on)`.
type Variant = (&'static str, fn(&mut graph::Config), bool);

fn steady_state(c: &mut Criterion) {
    let request = client_server_request(100);
    let mut group = c.benchmark_group("push_spans_steady_state");
    group.throughput(Throughput::Elements(200));
    let variants: [Variant; 5] = [
        ("default", |_| {}, false),
        (
            "dimensions",
            |c| c.dimensions = vec!["beast".into(), "god".into()],
            false,
        ),
        (
            "client_server_prefix",
            |c| {
                c.dimensions = vec!["beast".into(), "god".into()];
                c.enable_client_server_prefix = true;
            },
            false,
        ),
        ("default_with_span_metrics", |_| {}, true),
        // Tempo's `generate_native_histograms: both` with its default bucket factor and limits.
        (
            "native_histograms",
            |c| c.native_histograms = Some(NativeConfig::default()),
            false,
        ),
    ];
    for (name, tune, span_metrics) in variants {
        let mut config = graph::Config {
            histogram_buckets: vec![0.04, 0.1, 1.0],
            ..graph::Config::default()
        };
        tune(&mut config);
        let span_metrics = span_metrics.then(spanmetrics::Config::default);
        let mut engine = Engine::new(config, span_metrics, Arc::new(SystemClock)).unwrap();
        engine.push(&request); // warm-up: series and edge slots exist from here on
        group.bench_function(name, |b| b.iter(|| engine.push(&request)));
    }
    group.finish();
}

criterion_group!(benches, steady_state);
criterion_main!(benches);

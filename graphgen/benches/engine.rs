//! The workload of Tempo's `BenchmarkServiceGraphsPushSpansSteadyState`, so the two can be
//! compared on one machine: `cargo bench -p graphgen --bench engine`.
//! Criterion prints time per request (200 spans) and spans/s (the "thrpt" line).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use graphgen::clock::SystemClock;
use graphgen::dedup::SeenSpans;
use graphgen::engine::Engine;
use graphgen::graph;
use graphgen::native_histogram::NativeConfig;
use graphgen::spanmetrics;
use graphgen::wire::{BatchBuffers, Request};
use graphgen::workload::client_server_request;

/// `(name, how it changes the default config, span metrics on)`.
type Variant = (&'static str, fn(&mut graph::Config), bool);

fn steady_state(c: &mut Criterion) {
    let bytes = graphgen::wire::encode(&client_server_request(100));
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
        let engine = Engine::new(config, span_metrics, Arc::new(SystemClock)).unwrap();
        // Like Tempo's benchmark, which pushes a decoded request, the processors get the
        // request's spans parsed (`BatchBuffers::parse`, done by the receivers outside the
        // engine's lock); `default_from_bytes` below adds that parse.
        let mut buffers = BatchBuffers::default();
        let (mut batch, _) = buffers.read(&bytes).expect("a valid request");
        engine.push_parsed(&mut batch); // warm-up: series and edge slots exist from here on
        group.bench_function(name, |b| b.iter(|| engine.push_parsed(&mut batch)));
    }
    let mut engine = Engine::new(
        graph::Config {
            histogram_buckets: vec![0.04, 0.1, 1.0],
            ..graph::Config::default()
        },
        None,
        Arc::new(SystemClock),
    )
    .unwrap();
    // Encoded by prost: parsed without a check, as the engine reads prost's re-encodings.
    let request = Request::trusted(&bytes);
    engine.push(&request);
    group.bench_function("default_from_bytes", |b| b.iter(|| engine.push(&request)));
    group.finish();
}

/// The cost of `--dedup-window` per span: 200 new spans a request (each looked up and recorded,
/// the record full at 1,000,000 so the oldest is forgotten each time), beside the steady state's
/// 200 spans of `default` above.
fn dedup_filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(200));
    for max_spans in [100_000, 1_000_000] {
        let mut seen = SeenSpans::new(std::time::Duration::from_secs(3600), max_spans);
        let mut next = 0u64;
        let mut trace = [7u8; 16];
        let mut record = |seen: &mut SeenSpans| {
            for _ in 0..200 {
                next += 1;
                trace[..8].copy_from_slice(&next.to_be_bytes());
                std::hint::black_box(seen.first_time(&trace, &next.to_be_bytes(), next));
            }
        };
        for _ in 0..max_spans / 200 + 100 {
            record(&mut seen); // fill the record
        }
        group.bench_function(format!("200_new_spans_record_{max_spans}"), |b| {
            b.iter(|| record(&mut seen))
        });
    }
    group.finish();
}

criterion_group!(benches, steady_state, dedup_filter);
criterion_main!(benches);

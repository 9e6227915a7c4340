//! Intake (decode + engine) from 1 and from 2 threads, in process, with pre-encoded requests:
//! `cargo bench -p graphgen --bench intake_threads`. Each thread takes a request in as the
//! receivers do (`intake::decode`, then `intake::count` into one tenant's engine). Prints spans per
//! second for each and the ratio, 2 threads over 1, from alternating rounds in one process
//! (the machine is shared: only the ratio within a run means much).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use graphgen::clock::SystemClock;
use graphgen::engine::Engine;
use graphgen::intake::{count, decode, Body};
use graphgen::tenants::Tenant;
use graphgen::workload::ShopTraces;
use graphgen::{graph, spanmetrics};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Requests in the set, each of 100 traces (500 spans), replayed.
const REQUESTS: usize = 64;
const ROUNDS: usize = 5;

fn requests() -> Vec<Bytes> {
    let mut shop = ShopTraces::new(7);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (0..REQUESTS)
        .map(|_| {
            let request = ExportTraceServiceRequest {
                resource_spans: shop.request(100, now),
            };
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}

/// Spans per second with `threads` threads, each taking in `per_thread` requests.
fn run(tenant: &Arc<Tenant>, requests: &[Bytes], threads: usize, per_thread: usize) -> f64 {
    let started = Instant::now();
    let spans: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let tenant = tenant.clone();
                scope.spawn(move || {
                    let mut spans = 0;
                    for i in 0..per_thread {
                        let bytes = requests[(i * threads + t) % requests.len()].clone();
                        let body = Body::Protobuf(bytes);
                        let mut decoded = decode(&body).expect("valid request");
                        spans += decoded.valid;
                        count(&tenant, &mut decoded);
                    }
                    spans
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    spans as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let requests = requests();
    let engine = Engine::new(
        graph::Config::default(),
        Some(spanmetrics::Config::default()),
        Arc::new(SystemClock),
    )
    .expect("default config");
    let tenant = Arc::new(Tenant::new(
        graphgen::tenants::TenantId::parse("bench").unwrap(),
        engine,
    ));
    run(&tenant, &requests, 1, REQUESTS); // warm-up: series exist from here on
    let per_round = 400;
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let one = run(&tenant, &requests, 1, per_round);
        let two = run(&tenant, &requests, 2, per_round / 2);
        println!(
            "round {round}: 1 thread {one:>10.0} spans/s, 2 threads {two:>10.0} spans/s, ratio {:.2}",
            two / one
        );
        ratios.push(two / one);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "intake from 2 threads / 1 thread (median of {ROUNDS}): {:.2}×",
        ratios[ROUNDS / 2]
    );
}

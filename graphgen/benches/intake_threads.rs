//! Intake (decode + engine) from 1 and from 2 threads, in process, with pre-encoded requests:
//! `cargo bench -p graphgen --bench intake_threads`. Each thread takes a request in as the
//! receivers do (`intake::decode`, then `intake::count` into one tenant's engine). Prints spans
//! per second for each and the ratio, 2 threads over 1, from alternating rounds in one process
//! (the machine is shared: only ratios within a run mean much). Beside it, two figures that
//! say where a shortfall comes from:
//! - the same ratio for decoding alone, which shares nothing between the threads: what the
//!   machine gives a second thread at that moment (a second core of a busy host can give
//!   much less than another whole core);
//! - the share of the 2-thread run's thread time spent waiting for an engine stage the other
//!   thread held (the engine's own count, `graphgen_engine_stage_wait_seconds_total`).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// Many short rounds, so that the medians see past the host's slow moments.
const ROUNDS: usize = 21;
/// Requests a round, split between the threads.
const PER_ROUND: usize = 400;

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

/// What each thread does with a request.
#[derive(Clone, Copy)]
enum Work {
    /// Reads it, and nothing else (no shared state).
    DecodeAlone,
    /// Reads it and counts it into the tenant's engine, as the receivers do.
    Intake,
}

/// Spans per second with `threads` threads taking in `PER_ROUND` requests between them.
fn run(tenant: &Tenant, requests: &[Bytes], threads: usize, work: Work) -> f64 {
    let per_thread = PER_ROUND / threads;
    let started = Instant::now();
    let spans: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut spans = 0;
                    for i in 0..per_thread {
                        let bytes = requests[(i * threads + t) % requests.len()].clone();
                        let body = Body::Protobuf(bytes);
                        let mut decoded = decode(&body).expect("valid request");
                        spans += decoded.valid;
                        if let Work::Intake = work {
                            count(tenant, &mut decoded);
                        }
                    }
                    spans
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    spans as f64 / started.elapsed().as_secs_f64()
}

fn stage_wait(tenant: &Tenant) -> Duration {
    tenant.engine().parts().stage_wait
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let tenant = Tenant::new(graphgen::tenants::TenantId::parse("bench").unwrap(), engine);
    run(&tenant, &requests, 1, Work::Intake); // warm-up: series exist from here on
    let (mut ratios, mut machine, mut waited) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let decode_one = run(&tenant, &requests, 1, Work::DecodeAlone);
        let decode_two = run(&tenant, &requests, 2, Work::DecodeAlone);
        let one = run(&tenant, &requests, 1, Work::Intake);
        let wait_before = stage_wait(&tenant);
        let started = Instant::now();
        let two = run(&tenant, &requests, 2, Work::Intake);
        let thread_time = 2.0 * started.elapsed().as_secs_f64();
        let wait = (stage_wait(&tenant) - wait_before).as_secs_f64() / thread_time;
        println!(
            "round {round:>2}: 1 thread {one:>10.0} spans/s, 2 threads {two:>10.0} spans/s, \
             ratio {:.2} (decode alone {:.2}), waited for a stage {:>4.1} %",
            two / one,
            decode_two / decode_one,
            100.0 * wait
        );
        ratios.push(two / one);
        machine.push(decode_two / decode_one);
        waited.push(wait);
    }
    println!(
        "decode alone from 2 threads / 1 thread (median of {ROUNDS}): {:.2}×",
        median(machine)
    );
    println!(
        "2 threads waited for an engine stage (median of {ROUNDS}): {:.1} % of their time",
        100.0 * median(waited)
    );
    println!(
        "intake from 2 threads / 1 thread (median of {ROUNDS}): {:.2}×",
        median(ratios)
    );
}

//! The disk queue with `--queue-fsync always`: requests a second with 16 clients when every
//! request takes an fsync of its own (`max_group` 1, as before group commit) against group
//! commit (one fsync for every request waiting on it), run alternately in this process on the
//! same disk so that the ratio holds on a noisy machine. `make bench-queue`.
//!
//! The queue directory is under cargo's target tmpdir, on a real filesystem: tmpfs ignores
//! fsync and the figures would mean nothing there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use graphgen::queue::disk::Fsync;
use graphgen::queue::{Limits, SpanQueue, Storage};

const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(3);

struct Figures {
    per_second: f64,
    cpu_us_per_request: f64,
}

/// `clients` clients for `RUN`, each waiting for its OK before sending the next request (as an
/// OTLP exporter with one request in flight does), with an exporter that delivers at once, so
/// acknowledgements and segment deletions happen as in production.
async fn run(max_group: usize, clients: usize, request_bytes: usize) -> Figures {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-queue-fsync");
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Storage::Disk {
        dir: dir.clone(),
        fsync: Fsync::Always,
        segment_bytes: 16 << 20,
        max_group,
    };
    let limits = Limits {
        max_bytes: 1 << 30,
        max_spans: usize::MAX / 2,
    };
    let (queue, _) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
    let exporter = tokio::spawn({
        let queue = queue.clone();
        async move {
            loop {
                let batch = queue.next_batch(8192, 2 << 20).await;
                queue.finish(batch);
            }
        }
    });
    let committed = Arc::new(AtomicUsize::new(0));
    let payload = Bytes::from(vec![7u8; request_bytes]);
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let deadline = started + RUN;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, committed, payload) = (queue.clone(), committed.clone(), payload.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let reservation = queue.try_reserve(payload.len()).unwrap();
                    reservation.commit(None, payload.clone(), 10).await.unwrap();
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    // Let the exporter take what is left, then stop it.
    while !queue.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    exporter.abort();
    let _ = exporter.await;
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
    let requests = committed.load(Ordering::Relaxed) as f64;
    Figures {
        per_second: requests / elapsed,
        cpu_us_per_request: cpu / requests * 1e6,
    }
}

/// CPU seconds of this process so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = stat.rsplit(')').next().unwrap();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for request_bytes in [512, 4096] {
            let (mut single, mut grouped) = (0f64, 0f64);
            for _round in 0..2 {
                let one = run(1, CLIENTS, request_bytes).await;
                let group = run(1024, CLIENTS, request_bytes).await;
                println!(
                    "{CLIENTS} clients, {request_bytes}-byte requests, fsync always: one fsync a \
                     request {:.0} req/s ({:.0} µs CPU each), group commit {:.0} req/s ({:.0} µs CPU each)",
                    one.per_second, one.cpu_us_per_request, group.per_second, group.cpu_us_per_request
                );
                single = single.max(one.per_second);
                grouped = grouped.max(group.per_second);
            }
            let alone = run(1024, 1, request_bytes).await;
            println!(
                "{request_bytes}-byte requests: group commit / one fsync a request = {:.1}× (best of 2 each); one client alone: {:.0} req/s",
                grouped / single,
                alone.per_second
            );
        }
    });
}

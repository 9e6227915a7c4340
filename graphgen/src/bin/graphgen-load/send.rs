//! The sender: workers that build (or replay) requests and send them at a target or the highest
//! rate, waiting as long as the receiver asks when it pushes back.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use graphgen::codec::{ForwardCodec, TRACE_EXPORT_PATH};
use graphgen::workload::ShopTraces;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;

use crate::decode::now_nanos;
use crate::Shape;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(clap::Args)]
pub struct Args {
    /// The receiver: http://HOST:4317 for gRPC, http://HOST:4318 for HTTP (/v1/traces is added)
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// Target spans per second in all; 0 sends as fast as the receiver takes them
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Requests in flight at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to send
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Stop after this many accepted requests in all (0: no limit)
    #[arg(long, default_value_t = 0)]
    requests: u64,
    #[command(flatten)]
    shape: Shape,
    /// Compress request bodies with gzip
    #[arg(long)]
    gzip: bool,
    /// Print the summary as one JSON line (the progress lines go to stderr either way)
    #[arg(long)]
    json: bool,
    /// Do not wait when pushed back: count the refusal and send the next request (to measure
    /// what a refusal costs the receiver)
    #[arg(long)]
    ignore_pushback: bool,
}

/// What the workers saw.
#[derive(Default)]
struct Stats {
    attempts: AtomicU64,
    accepted_requests: AtomicU64,
    accepted_spans: AtomicU64,
    rejected_spans: AtomicU64,
    /// Refusals the receiver asked to retry (back-pressure), by code.
    refused: Mutex<BTreeMap<String, u64>>,
    /// Other failures, by code; those requests are not retried.
    failed: Mutex<BTreeMap<String, u64>>,
    /// Latencies of accepted requests, in microseconds.
    latencies: Mutex<Vec<u32>>,
}

/// How one attempt ended.
enum Outcome {
    Accepted {
        rejected_spans: u64,
    },
    /// Retry after this long.
    PushedBack {
        code: String,
        wait: Duration,
    },
    Failed {
        code: String,
    },
}

/// A request as the receiver gets it.
struct Prepared {
    body: Bytes,
    spans: u64,
}

enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http {
        client: reqwest::Client,
        url: String,
    },
}

impl Client {
    async fn send(&mut self, request: &Prepared, gzip: bool) -> Outcome {
        match self {
            Client::Grpc(grpc) => {
                if let Err(e) = grpc.ready().await {
                    return Outcome::Failed {
                        code: format!("connect: {e}"),
                    };
                }
                let path = PathAndQuery::from_static(TRACE_EXPORT_PATH);
                let result = grpc
                    .unary(
                        tonic::Request::new(vec![request.body.clone()]),
                        path,
                        ForwardCodec,
                    )
                    .await;
                match result {
                    Ok(response) => Outcome::Accepted {
                        rejected_spans: response
                            .into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_spans.max(0) as u64),
                    },
                    Err(status) => {
                        let hint = status.get_details_retry_info().and_then(|r| r.retry_delay);
                        let code = format!("{:?}", status.code());
                        match (status.code(), hint) {
                            (tonic::Code::ResourceExhausted, Some(wait)) => {
                                Outcome::PushedBack { code, wait }
                            }
                            (tonic::Code::Unavailable, _) => Outcome::PushedBack {
                                code,
                                wait: hint.unwrap_or(Duration::from_secs(1)),
                            },
                            _ => Outcome::Failed { code },
                        }
                    }
                }
            }
            Client::Http { client, url } => {
                let mut post = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf");
                if gzip {
                    post = post.header("content-encoding", "gzip");
                }
                let response = match post.body(request.body.clone()).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Failed {
                            code: format!("transport: {e}"),
                        }
                    }
                };
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match status {
                    200..=299 => {
                        let body = response.bytes().await.unwrap_or_default();
                        let rejected = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body)
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_spans.max(0) as u64);
                        Outcome::Accepted {
                            rejected_spans: rejected,
                        }
                    }
                    429 | 502 | 503 | 504 => Outcome::PushedBack {
                        code: status.to_string(),
                        wait: retry_after.unwrap_or(Duration::from_secs(1)),
                    },
                    _ => Outcome::Failed {
                        code: status.to_string(),
                    },
                }
            }
        }
    }
}

fn encode(request: ExportTraceServiceRequest, gzip: bool) -> Bytes {
    let bytes = request.encode_to_vec();
    if !gzip {
        return bytes.into();
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory").into()
}

/// Builds requests: fresh ids every time, or round-robin over a pre-built set.
struct Source {
    traces: ShopTraces,
    replay: Arc<Vec<Bytes>>,
    next: usize,
    shape: Shape,
    gzip: bool,
}

impl Source {
    fn next(&mut self) -> Prepared {
        let spans = (self.shape.traces_per_request * 5) as u64;
        if !self.replay.is_empty() {
            let body = self.replay[self.next % self.replay.len()].clone();
            self.next += 1;
            return Prepared { body, spans };
        }
        let request = ExportTraceServiceRequest {
            resource_spans: self
                .traces
                .request(self.shape.traces_per_request, now_nanos()),
        };
        Prepared {
            body: encode(request, self.gzip),
            spans,
        }
    }
}

#[tokio::main]
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = match args.protocol {
        Protocol::Grpc => {
            let channel =
                tonic::transport::Channel::from_shared(args.endpoint.clone())?.connect_lazy();
            let mut grpc = tonic::client::Grpc::new(channel);
            if args.gzip {
                grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            Client::Grpc(grpc)
        }
        Protocol::Http => {
            let base = args.endpoint.trim_end_matches('/');
            let url = if base.ends_with("/v1/traces") {
                base.to_string()
            } else {
                format!("{base}/v1/traces")
            };
            Client::Http {
                client: reqwest::Client::new(),
                url,
            }
        }
    };
    let replay: Arc<Vec<Bytes>> = {
        let mut traces = ShopTraces::new(args.shape.seed);
        Arc::new(
            (0..args.shape.replay)
                .map(|_| {
                    encode(
                        ExportTraceServiceRequest {
                            resource_spans: traces
                                .request(args.shape.traces_per_request, now_nanos()),
                        },
                        args.gzip,
                    )
                })
                .collect(),
        )
    };
    let stats = Arc::new(Stats::default());
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + args.duration;
    let spans_per_request = (args.shape.traces_per_request * 5) as f64;
    // Each worker's pace, so that together they send `rate` spans a second.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.concurrency as f64 * spans_per_request / args.rate as f64)
    });

    let progress = tokio::spawn({
        let stats = stats.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let spans = stats.accepted_spans.load(Ordering::Relaxed);
                let refused: u64 = stats.refused.lock().unwrap().values().sum();
                eprintln!(
                    "t={:>4.0}s accepted {spans} spans ({} /s), pushed back {refused} times",
                    started.elapsed().as_secs_f64(),
                    spans - last
                );
                last = spans;
            }
        }
    });

    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let mut client = match &client {
            Client::Grpc(g) => Client::Grpc(g.clone()),
            Client::Http { client, url } => Client::Http {
                client: client.clone(),
                url: url.clone(),
            },
        };
        let mut source = Source {
            traces: ShopTraces::new(args.shape.seed.wrapping_add(1 + worker as u64)),
            replay: replay.clone(),
            next: worker,
            shape: args.shape,
            gzip: args.gzip,
        };
        let (stats, done) = (stats.clone(), done.clone());
        let (gzip, max_requests, ignore_pushback) =
            (args.gzip, args.requests, args.ignore_pushback);
        workers.push(tokio::spawn(async move {
            let mut next_slot = tokio::time::Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(worker as f64 / 8.0));
            while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next_slot).await;
                    next_slot += interval;
                }
                let request = source.next();
                // Retried while the receiver pushes back, until the run ends.
                loop {
                    stats.attempts.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    match client.send(&request, gzip).await {
                        Outcome::Accepted { rejected_spans } => {
                            let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            stats.latencies.lock().unwrap().push(micros);
                            stats.accepted_spans.fetch_add(
                                request.spans - rejected_spans.min(request.spans),
                                Ordering::Relaxed,
                            );
                            stats
                                .rejected_spans
                                .fetch_add(rejected_spans, Ordering::Relaxed);
                            let total = stats.accepted_requests.fetch_add(1, Ordering::Relaxed) + 1;
                            if max_requests > 0 && total >= max_requests {
                                done.store(true, Ordering::Relaxed);
                            }
                            break;
                        }
                        Outcome::PushedBack { code, wait } => {
                            *stats.refused.lock().unwrap().entry(code).or_default() += 1;
                            if ignore_pushback || Instant::now() + wait >= deadline {
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                        Outcome::Failed { code } => {
                            *stats.failed.lock().unwrap().entry(code).or_default() += 1;
                            break;
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    print_summary(&args, &stats, elapsed);
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn print_summary(args: &Args, stats: &Stats, elapsed: f64) {
    let mut latencies = stats.latencies.lock().unwrap().clone();
    latencies.sort_unstable();
    let accepted_spans = stats.accepted_spans.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "seconds": elapsed,
        "attempts": stats.attempts.load(Ordering::Relaxed),
        "accepted_requests": stats.accepted_requests.load(Ordering::Relaxed),
        "accepted_spans": accepted_spans,
        "rejected_spans": stats.rejected_spans.load(Ordering::Relaxed),
        "pushed_back": *stats.refused.lock().unwrap(),
        "failed": *stats.failed.lock().unwrap(),
        "spans_per_second": accepted_spans as f64 / elapsed,
        "latency_ms_p50": percentile(&latencies, 0.5),
        "latency_ms_p99": percentile(&latencies, 0.99),
    });
    if args.json {
        println!("{summary}");
        return;
    }
    println!("sent {} requests in {elapsed:.1} s", summary["attempts"]);
    println!(
        "accepted {} requests, {accepted_spans} spans ({:.0} spans/s); {} spans rejected as invalid",
        summary["accepted_requests"], summary["spans_per_second"].as_f64().unwrap_or(0.0), summary["rejected_spans"]
    );
    println!("pushed back (retried): {}", summary["pushed_back"]);
    println!("failed (not retried):  {}", summary["failed"]);
    println!(
        "latency of accepted requests: p50 {:.2} ms, p99 {:.2} ms",
        summary["latency_ms_p50"].as_f64().unwrap_or(0.0),
        summary["latency_ms_p99"].as_f64().unwrap_or(0.0)
    );
}

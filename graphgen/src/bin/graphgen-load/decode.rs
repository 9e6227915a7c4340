//! The decode-only baseline: what a full protobuf decode of the same requests costs.

use std::time::Instant;

use bytes::Bytes;
use graphgen::workload::ShopTraces;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::{cpu_seconds, Shape};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Distinct requests to build (decoded round-robin)
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// How long to decode, in seconds
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Decode every request exactly this many times instead (a fixed amount of work, for
    /// counting instructions)
    #[arg(long)]
    rounds: Option<u64>,
    /// Print the summary as one JSON line
    #[arg(long)]
    json: bool,
    /// What reads the requests: `prost` decodes them into structs (the baseline); `wire` is
    /// graphgen's borrowed reader, its check and its parse of every span (what the intake does
    /// before the engine)
    #[arg(long, value_enum, default_value_t = Reader::Prost)]
    reader: Reader,
    /// Write each request's protobuf bytes to a file in this directory and stop (the fuzz
    /// targets' seeds)
    #[arg(long)]
    write_to: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reader {
    Prost,
    Wire,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut traces = ShopTraces::new(args.shape.seed);
    let now = now_nanos();
    let requests: Vec<Bytes> = (0..args.requests.max(1))
        .map(|_| {
            ExportTraceServiceRequest {
                resource_spans: traces.request(args.shape.traces_per_request, now),
            }
            .encode_to_vec()
            .into()
        })
        .collect();
    if let Some(dir) = &args.write_to {
        std::fs::create_dir_all(dir)?;
        for (i, bytes) in requests.iter().enumerate() {
            std::fs::write(dir.join(format!("shop-{i}")), bytes)?;
        }
        return Ok(());
    }
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut spans = 0usize;
    let mut round = 0;
    let mut buffers = graphgen::wire::BatchBuffers::default();
    while match args.rounds {
        Some(rounds) => round < rounds,
        None => wall0.elapsed().as_secs_f64() < args.seconds,
    } {
        round += 1;
        for bytes in &requests {
            spans += match args.reader {
                Reader::Prost => ExportTraceServiceRequest::decode(bytes.clone())?
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum::<usize>(),
                Reader::Wire => {
                    let (batch, _) = buffers
                        .read(bytes)
                        .map_err(|f| anyhow::anyhow!("left to prost: {f:?}"))?;
                    let n = batch
                        .resources()
                        .map(|(_, spans)| spans.len())
                        .sum::<usize>();
                    buffers.recycle(batch);
                    n
                }
            };
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let spans = spans as f64;
    let per_cpu_second = spans / cpu.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "spans": spans, "cpu_seconds": cpu, "spans_per_cpu_second": per_cpu_second })
        );
    } else {
        println!(
            "decoded {spans:.0} spans in {cpu:.2} CPU-s: {per_cpu_second:.0} spans per CPU-second"
        );
    }
    Ok(())
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

//! graphgen-load: drives an OTLP trace receiver with realistic shop traces and measures it.
//!
//! - `send`: OTLP/gRPC or OTLP/HTTP at a target or the highest rate, honouring back-pressure
//!   (RESOURCE_EXHAUSTED with RetryInfo, 429/503 with Retry-After); a progress line every
//!   second and a summary at the end (`--json` for a machine-readable last line).
//! - `sink`: an OTLP/gRPC trace endpoint that counts what it receives (stand-in for Tempo).
//! - `decode`: the baseline: prost-decodes the same requests `send` would send (with graphgen's
//!   allocator), and reports spans per CPU-second.

mod decode;
mod send;
mod sink;

use clap::{Parser, Subcommand};

// The allocator graphgen uses, so that the decode baseline compares like with like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "graphgen-load",
    version,
    about = "Load generator, sink and decode baseline for OTLP trace receivers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send traces to a receiver
    Send(send::Args),
    /// Receive traces and count them
    Sink(sink::Args),
    /// Decode the same requests with prost, for a baseline in spans per CPU-second
    Decode(decode::Args),
}

/// The shape of the requests, shared by `send` and `decode` so both see the same bytes.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Shape {
    /// Traces per request (5 spans each)
    #[arg(long, default_value_t = 100)]
    traces_per_request: usize,
    /// Replay this many pre-built requests instead of fresh ids for every request (0: fresh)
    #[arg(long, default_value_t = 0)]
    replay: usize,
    /// Seed of the random ids
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Send(args) => send::run(args),
        Command::Sink(args) => sink::run(args),
        Command::Decode(args) => decode::run(args),
    }
}

/// CPU time of this process so far (user + system), from /proc.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

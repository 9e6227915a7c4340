//! The graphgen binary: configuration, logging and signals; everything else is the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use graphgen::config::Options;
use tracing_subscriber::EnvFilter;

// Decoding a request allocates for every attribute; mimalloc's thread-local free lists make
// that measurably cheaper than glibc's malloc (see the README's figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Without the LIFO slot, a connection's task runs after the requests already runnable
    // instead of right after each one: their answers leave in one write, not one write (and
    // one wake-up of the client) each. Under load over loopback, 0.17 writes a request
    // instead of 1.1, and 3–4 % more spans per CPU-second (README, Performance).
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let runtime = runtime.build().context("start the async runtime")?;
    let result = runtime.block_on(run());
    // A blocking task still running (a peer's name lookup that DNS never answers) must not hold
    // the exit past --shutdown-grace.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

async fn run() -> anyhow::Result<()> {
    let logger = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or `docker logs`.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .finish();
    // Not `.init()`: that would also route the `log` crate's records here, and the layout
    // crate logs every step of every layout at info under bare targets ("ranking", …).
    tracing::subscriber::set_global_default(logger).context("install the logger")?;
    let settings = Options::parse()
        .resolve()
        .context("invalid configuration")?;
    graphgen::service::run(settings, shutdown_signal())
        .await
        .context("graphgen could not start")
}

/// SIGTERM (docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

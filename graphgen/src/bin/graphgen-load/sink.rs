//! An OTLP/gRPC trace sink: answers every export OK (after `--delay`, to play a slow Tempo)
//! and counts requests, spans and (with `--distinct`) distinct span ids; prints the counts every
//! second and as JSON when stopped (SIGTERM or Ctrl-C). It reads only the message framing down
//! to the spans, so it stays cheap next to the collector it measures.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use graphgen::receiver::grpc::{BytesTraceService, Export};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

/// `ExportTraceServiceRequest` → `ResourceSpans` → `ScopeSpans` → `Span`, each level left as
/// bytes but the one needed.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    resource_spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    scope_spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "bytes", tag = "2")]
    span_id: Bytes,
}

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:4319")]
    listen: SocketAddr,
    /// Wait this long before answering each export (a slow backend)
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    delay: Duration,
    /// Keep every span id to count duplicates (memory grows with the spans received)
    #[arg(long)]
    distinct: bool,
}

#[derive(Default)]
struct Counts {
    requests: u64,
    spans: u64,
    ids: HashSet<[u8; 8]>,
}

#[derive(Clone)]
struct Sink {
    counts: Arc<Mutex<Counts>>,
    delay: Duration,
    distinct: bool,
}

impl Sink {
    fn count(&self, request: Bytes) -> Result<(), prost::DecodeError> {
        let mut spans = Vec::new();
        for rs in Request::decode(request)?.resource_spans {
            for ss in ResourceSpans::decode(rs)?.scope_spans {
                spans.extend(ScopeSpans::decode(ss)?.spans);
            }
        }
        let mut counts = self.counts.lock().unwrap();
        counts.requests += 1;
        counts.spans += spans.len() as u64;
        if self.distinct {
            for span in spans {
                if let Ok(id) = <[u8; 8]>::try_from(&Span::decode(span)?.span_id[..]) {
                    counts.ids.insert(id);
                }
            }
        }
        Ok(())
    }
}

impl Export for Sink {
    type Tenant = ();

    fn tenant(&self, _header: Option<&[u8]>) -> Result<(), tonic::Status> {
        Ok(())
    }

    async fn export(
        &self,
        _tenant: (),
        request: Bytes,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.count(request)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(ExportTraceServiceResponse::default())
    }
}

fn summary(counts: &Counts, distinct: bool) -> serde_json::Value {
    serde_json::json!({
        "requests": counts.requests,
        "spans": counts.spans,
        "distinct_spans": if distinct { Some(counts.ids.len()) } else { None },
    })
}

#[tokio::main]
pub async fn run(args: Args) -> anyhow::Result<()> {
    let sink = Sink {
        counts: Default::default(),
        delay: args.delay,
        distinct: args.distinct,
    };
    let counts = sink.counts.clone();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("sink listening on {}", listener.local_addr()?);
    let progress = tokio::spawn({
        let counts = counts.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = 0;
            loop {
                tick.tick().await;
                let spans = counts.lock().unwrap().spans;
                if spans != last {
                    eprintln!("sink: {spans} spans ({} /s)", spans - last);
                    last = spans;
                }
            }
        }
    });
    tonic::transport::Server::builder()
        .add_service(BytesTraceService::new(sink, 64 << 20))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stopped(),
        )
        .await?;
    progress.abort();
    println!("{}", summary(&counts.lock().unwrap(), args.distinct));
    Ok(())
}

async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! The five roles as real processes, and an OTLP receiver that keeps what they export.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

pub const ROLES: [&str; 5] = [
    "frontend",
    "checkout",
    "inventory",
    "payments",
    "notifications",
];

#[path = "../../../tests/rust/tools.rs"]
pub mod tools;
pub use tools::free_port;
#[path = "../../../tests/rust/backends.rs"]
pub mod backends;
pub use backends::{Nats, Postgres};

/// Keeps every batch of spans it receives.
#[derive(Clone, Default)]
pub struct Receiver(pub Arc<Mutex<Vec<ResourceSpans>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap()
            .extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves OTLP/gRPC on a loopback port; returns its URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    pub fn batches(&self) -> Vec<ResourceSpans> {
        self.0.lock().unwrap().clone()
    }
}

/// The shop as five processes; killed on drop.
pub struct Shop {
    children: Vec<Child>,
    pub frontend: String,
    /// checkout's database and the broker, real processes of their own.
    pub postgres: Postgres,
    pub nats: Nats,
}

impl Shop {
    /// Starts PostgreSQL, NATS and every role with OTLP going to `otlp_endpoint` (None: export
    /// switched off); `None` when PostgreSQL or nats-server is not installed (see `tools`).
    pub fn start(otlp_endpoint: Option<&str>) -> Option<Self> {
        let postgres = Postgres::start()?;
        let nats = Nats::start()?;
        let ports: Vec<u16> = ROLES.iter().map(|_| free_port()).collect();
        let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let mut children = Vec::new();
        for (i, role) in ROLES.iter().enumerate() {
            let mut command = Command::new(env!("CARGO_BIN_EXE_demo-app"));
            command
                .env("DEMO_ROLE", role)
                .env("DEMO_LISTEN", format!("127.0.0.1:{}", ports[i]))
                .env("DEMO_CHECKOUT_URL", url(1))
                .env("DEMO_INVENTORY_URL", url(2))
                .env("DEMO_PAYMENTS_URL", url(3))
                .env("DEMO_NOTIFICATIONS_URL", url(4))
                .env("DEMO_DATABASE_URL", postgres.url())
                .env("DEMO_NATS_URL", nats.url())
                .env("DEMO_LATENCY_SCALE", "0")
                .env("RUST_LOG", "warn")
                .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match otlp_endpoint {
                Some(endpoint) => command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                None => command.env("OTEL_SDK_DISABLED", "true"),
            };
            children.push(command.spawn().expect("start demo-app"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "demo-app roles did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Self {
            children,
            frontend: url(0),
            postgres,
            nats,
        })
    }

    /// SIGTERM to every role, so their batched spans are flushed; waits for them to exit.
    pub fn stop(mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

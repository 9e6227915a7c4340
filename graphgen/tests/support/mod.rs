//! Test helpers: graphgen as a real process on free ports, an OTLP trace sink built on the
//! official protos, a metrics scraper, and a known multi-service topology.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

#[path = "../../../tests/rust/tools.rs"]
pub mod tools;
pub use tools::free_port;

/// A graphgen process; killed on drop.
pub struct Graphgen {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

/// The gRPC, HTTP and admin addresses of graphgen's "graphgen listening" log line.
fn listening(logs: &str) -> Option<[SocketAddr; 3]> {
    let line = logs.lines().find(|l| l.contains("graphgen listening"))?;
    let field = |name: &str| -> Option<SocketAddr> {
        let rest = line.split(&format!("{name}=\"")).nth(1)?;
        rest.split('"').next()?.parse().ok()
    };
    Some([field("otlp_grpc")?, field("otlp_http")?, field("admin")?])
}

impl Graphgen {
    /// Starts the binary with `args` on free loopback ports and waits until it answers.
    pub fn start(args: &[&str]) -> Self {
        Self::start_wrapped(&[], args)
    }

    /// Starts it with its admin listener on `admin` (a port others must know before it
    /// starts, such as a peer's in `--peers`).
    pub fn start_with_admin(admin: SocketAddr, args: &[&str]) -> Self {
        Self::launch(&[], Some(admin), args)
    }

    /// Starts it under `wrapper` (a program that execs its arguments, such as `fiu-run -x`).
    /// graphgen binds port 0 itself and the addresses are read from its "listening" line, so
    /// parallel tests never race for a port.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        Self::launch(wrapper, None, args)
    }

    fn launch(wrapper: &[&str], admin: Option<SocketAddr>, args: &[&str]) -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "graphgen-test-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let binary = env!("CARGO_BIN_EXE_graphgen");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["--otlp-grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-http-addr", "127.0.0.1:0"])
            .args([
                "--admin-addr",
                &admin.map_or("127.0.0.1:0".to_string(), |a| a.to_string()),
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start graphgen");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut g = Self {
            child: Some(child),
            grpc: unbound,
            http: unbound,
            admin: unbound,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some([grpc, http, admin]) = listening(&g.logs()) {
                (g.grpc, g.http, g.admin) = (grpc, http, admin);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "graphgen did not start:\n{}",
                g.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        g
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    pub async fn metrics(&self) -> Vec<Sample> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("scrape")
            .text()
            .await
            .unwrap();
        parse_exposition(&text)
    }

    /// Value of the series `name` with exactly these labels (0 if absent).
    pub async fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        find(&self.metrics().await, name, labels)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no flush, no shutdown, as an OOM kill or a crash.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "graphgen did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Graphgen {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The value of the series `name{labels}` (exactly those labels). A series that is not
/// there fails the test: an absent metric is not a zero.
pub fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find_optional(samples, name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in graphgen's /metrics"))
}

/// The value of `name{labels}`, if that series exists.
pub fn find_optional(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.len() == labels.len())
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Parses Prometheus text exposition (enough of it for our own output).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((key, after)) = rest.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => {}
                    },
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            map.insert(key.trim_start_matches(',').to_string(), value);
            rest = &after[end..];
        }
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

/// An OTLP/gRPC trace sink that records every span id it receives.
#[derive(Clone, Default)]
pub struct Sink {
    pub span_ids: Arc<Mutex<Vec<Vec<u8>>>>,
    pub requests: Arc<AtomicU64>,
    /// Every request's `x-scope-orgid` (if any) and the service names of its resources.
    pub tenants: Arc<Mutex<Vec<Forwarded>>>,
}

/// A request's `x-scope-orgid` (if any) and the service names of its resources.
pub type Forwarded = (Option<String>, Vec<String>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let org_id = request
            .metadata()
            .get("x-scope-orgid")
            .map(|v| v.to_str().unwrap().to_string());
        let request = request.into_inner();
        let services = request
            .resource_spans
            .iter()
            .flat_map(|rs| rs.resource.iter().flat_map(|r| &r.attributes))
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .collect();
        self.tenants.lock().unwrap().push((org_id, services));
        let mut ids = self.span_ids.lock().unwrap();
        for span in request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            ids.push(span.span_id.clone());
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running sink server; stopping it closes the port.
pub struct SinkServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn serve(&self, port: u16) -> SinkServer {
        let listener = loop {
            // The port may still be in use for a moment after a previous stop.
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(self.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        SinkServer {
            stop: Some(stop),
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.span_ids.lock().unwrap().len()
    }

    pub fn distinct(&self) -> std::collections::HashSet<Vec<u8>> {
        self.span_ids.lock().unwrap().iter().cloned().collect()
    }
}

impl SinkServer {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed) + (std::process::id() as u64) * 1_000_000_000
}

pub use graphgen::attributes::string_attribute as kv;

/// Spans of one service in one resource.
pub fn resource(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn span(
    trace: &[u8],
    id: u64,
    parent: Option<u64>,
    kind: i32,
    name: &str,
    attrs: Vec<KeyValue>,
    error: bool,
) -> Span {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: now - 20_000_000,
        end_time_unix_nano: now,
        attributes: attrs,
        status: Some(Status {
            code: if error { 2 } else { 0 },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One trace of the reference topology:
/// user → frontend → checkout (failing when `fail`), checkout → postgres `orders` (database),
/// checkout → payment-gateway (uninstrumented, `peer.service`).
/// Edges once complete/expired: user→frontend (virtual), frontend→checkout, checkout→orders
/// (database), checkout→payment-gateway (virtual). 6 spans, one of them internal.
pub fn topology_trace(fail: bool) -> ExportTraceServiceRequest {
    let trace: Vec<u8> = [next_id().to_be_bytes(), next_id().to_be_bytes()].concat();
    let (root, call, served, db, pay) = (next_id(), next_id(), next_id(), next_id(), next_id());
    let internal = next_id();
    let frontend = vec![
        span(
            &trace,
            root,
            None,
            2,
            "GET /checkout",
            vec![kv("http.request.method", "GET")],
            false,
        ),
        span(&trace, internal, Some(root), 1, "render", vec![], false),
        span(
            &trace,
            call,
            Some(root),
            3,
            "POST /order",
            vec![kv("http.request.method", "POST")],
            false,
        ),
    ];
    let checkout = vec![
        span(
            &trace,
            served,
            Some(call),
            2,
            "POST /order",
            vec![kv("http.request.method", "POST")],
            fail,
        ),
        span(
            &trace,
            db,
            Some(served),
            3,
            "INSERT orders",
            vec![kv("db.system", "postgresql"), kv("db.name", "orders")],
            false,
        ),
        span(
            &trace,
            pay,
            Some(served),
            3,
            "POST /charge",
            vec![kv("peer.service", "payment-gateway")],
            false,
        ),
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource("frontend", frontend),
            resource("checkout", checkout),
        ],
    }
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
pub mod prometheus;
pub mod proxy;
pub mod remote_write;

/// One trace: the reference topology (virtual client, HTTP call, database, uninstrumented
/// peer; failing every 7th) plus, every 3rd, a message from checkout to notifications.
pub fn mixed_trace(i: usize) -> ExportTraceServiceRequest {
    let mut request = topology_trace(i.is_multiple_of(7));
    if i.is_multiple_of(3) {
        let trace = request.resource_spans[0].scope_spans[0].spans[0]
            .trace_id
            .clone();
        let (producer, consumer) = (next_id(), next_id());
        let publish = span(
            &trace,
            producer,
            None,
            4,
            "publish order",
            vec![kv("messaging.system", "kafka")],
            false,
        );
        let process = span(
            &trace,
            consumer,
            Some(producer),
            5,
            "process order",
            vec![kv("messaging.system", "kafka")],
            i.is_multiple_of(5),
        );
        request
            .resource_spans
            .push(resource("checkout", vec![publish]));
        request
            .resource_spans
            .push(resource("notifications", vec![process]));
    }
    request
}

pub fn trace_id_of(request: &ExportTraceServiceRequest) -> Vec<u8> {
    request.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone()
}

/// What the load_balancing exporter does: all spans of a trace to one instance, chosen by the
/// trace id.
pub fn instance_for(trace_id: &[u8], instances: usize) -> usize {
    let hash = trace_id.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    });
    (hash % instances as u64) as usize
}

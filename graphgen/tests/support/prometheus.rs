//! A real Prometheus server (Debian's package) for tests: started on a free port with a
//! scrape config, queried through its HTTP API, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port, path /metrics) every second; `None`
    /// when Prometheus is not installed (see `tools`).
    pub fn start(targets: &[String]) -> Option<Self> {
        Self::start_with(targets, &[])
    }

    /// Starts Prometheus with no scrape targets and its remote-write receiver on
    /// (`POST /api/v1/write`), which Prometheus 2.42 has; its OTLP receiver it has not.
    pub fn start_receiver() -> Option<Self> {
        Self::start_with(&[], &["--web.enable-remote-write-receiver"])
    }

    /// Starts Prometheus with `flags` after the standard ones (scraping `targets`).
    pub fn start_with(targets: &[String], flags: &[&str]) -> Option<Self> {
        let binary = super::tools::prometheus()?;
        let port = super::free_port();
        let dir =
            std::env::temp_dir().join(format!("graphgen-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: graphgen\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_ok(&format!("{}/-/ready", p.url)).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(p)
    }

    /// `GET path` of the HTTP API; the `data` of a successful answer.
    pub async fn api(&self, path_and_query: &str) -> serde_json::Value {
        let text = reqwest::get(format!("{}{path_and_query}", self.url))
            .await
            .expect("query prometheus")
            .text()
            .await
            .unwrap();
        let response: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            response["status"], "success",
            "{path_and_query}: {response}"
        );
        response["data"].clone()
    }

    /// An instant query's raw result (native histograms come as `histogram`, not `value`).
    pub async fn query_raw(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .await;
        data["result"].as_array().expect("vector result").clone()
    }

    /// Runs an instant query; returns `(labels, value)` per series.
    pub async fn query(
        &self,
        promql: &str,
    ) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        self.query_raw(promql)
            .await
            .iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Encodes a query-string value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A blocking readiness probe (usable outside the async runtime): is `url` answering 200?
pub fn http_ok(url: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not ready"))
    }
}

//! Where data leaves graphgen: spans to the traces endpoint, metrics to Prometheus
//! (scraped text exposition, OTLP push and remote write).

pub mod otlp_metrics;
pub mod prometheus;
pub mod push;
pub mod remote_write;
pub mod retry;
pub mod traces;

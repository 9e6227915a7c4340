//! Where data leaves graphgen: spans to the traces endpoint, metrics to Prometheus
//! (scraped text exposition and OTLP push).

pub mod otlp_metrics;
pub mod prometheus;
pub mod retry;
pub mod traces;

//! Where data leaves graphgen: spans to the traces endpoint, metrics pushed to Prometheus
//! (OTLP push and remote write). The scraped `/metrics` is the admin server's.

pub mod otlp_metrics;
pub mod push;
pub mod remote_write;
pub mod retry;
pub mod traces;

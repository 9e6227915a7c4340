//! graphgen: a service-graph collector that turns OTLP traces into the metrics Grafana's
//! service graph reads, exactly as Tempo's metrics-generator makes them.
//!
//! The engine (pure logic, no I/O):
//! - [`graph`] pairs client and server spans into edges (`traces_service_graph_*`).
//! - [`spanmetrics`] counts spans (`traces_spanmetrics_*`).
//! - [`engine`] puts both behind one door with a [`clock`].
//! - [`series`] is the metric model they share; [`attributes`] the attribute rules.
//! - [`workload`] builds the benchmark workload (Tempo's steady-state service-graph benchmark).

pub mod attributes;
pub mod clock;
mod duration_serde;
pub mod engine;
pub mod graph;
pub mod series;
pub mod spanmetrics;
pub mod workload;

//! graphgen: a service-graph collector that turns OTLP traces into the metrics Grafana's
//! service graph reads, exactly as Tempo's metrics-generator makes them.
//!
//! The engine (pure logic, no I/O):
//! - [`graph`] pairs client and server spans into edges (`traces_service_graph_*`).
//! - [`spanmetrics`] counts spans (`traces_spanmetrics_*`, and `traces_target_info`);
//!   [`span_names`] learns span-name patterns to replace ids in them.
//! - [`filter`]: Tempo's `filter_policies`, which spans each processor counts; [`sampling`]: the
//!   span multiplier of a tracestate's sampling threshold.
//! - [`hostinfo`] names the hosts that send spans (`traces_host_info`).
//! - [`processors`] resolves Tempo's `processors` names into the series each processor makes.
//! - [`engine`] puts both behind one door with a [`clock`] (and, optionally, [`dedup`]: a span
//!   delivered twice is counted once).
//! - [`series`] is the metric model they share; [`attributes`] the attribute rules (and the
//!   key sets by which the processors find the attributes they read in one pass);
//!   [`native_histogram`] the native (exponential) buckets of latency histograms;
//!   [`spans`] how both read a span's kind, status and duration; [`label_limits`] how long
//!   and how varied label values may be.
//! - [`workload`] builds the benchmark workload (Tempo's steady-state service-graph benchmark).
//!
//! The service around it (sockets and tasks):
//! - [`config`]: flags, environment and TOML file, resolved into [`config::Settings`].
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP in, with a budget of requests in flight reserved
//!   before a body is read, a gRPC connection read 64 KiB at a time; [`codec`] keeps requests
//!   as their bytes.
//! - [`intake`]: checks a request against the queue's room, reads and validates it
//!   ([`intake::decode`], the one decode path), queues it,
//!   then feeds the engine; [`wire`] reads protobuf requests in place (a borrowed reader
//!   whose views the engine reads), leaving to prost what it cannot read exactly as prost.
//! - [`queue`]: accepted requests waiting to be forwarded, in memory or on disk (a checksummed
//!   segment log written by its own thread, with group commit).
//! - [`export`]: spans out to Tempo ([`export::traces`]), metrics pushed to Prometheus
//!   ([`export::otlp_metrics`] OTLP, [`export::remote_write`] remote write; what both share in
//!   [`export::push`]), with [`export::retry`]'s rules.
//! - [`admin`]: `/metrics` (streamed by [`admin::scrape`]; the engine's series and counters
//!   read at scrape time by [`admin::engine_metrics`]), `/healthz`, `/readyz`;
//!   [`selfmetrics`]: the service's `graphgen_*` counters, every label set from 0.
//! - [`servicemap`]: the live service map, `/graph` and `/api/graph`, with figures over a
//!   window from snapshots of the counters.
//! - [`tenants`]: a request's tenant (`X-Scope-OrgID`) and each tenant's engine, bounded;
//!   [`overrides`]: per-tenant overrides in Tempo's file format, reloaded when it changes.
//! - [`service`]: builds the components, binds the listeners, serves, and shuts down in order.

pub mod admin;
pub mod attributes;
pub mod clock;
pub mod codec;
pub mod config;
pub mod dedup;
mod duration_serde;
pub mod engine;
pub mod export;
pub mod filter;
pub mod graph;
pub mod hostinfo;
pub mod intake;
pub mod label_limits;
pub mod native_histogram;
pub mod overrides;
pub mod processors;
pub mod queue;
pub mod receiver;
pub mod sampling;
pub mod selfmetrics;
pub mod series;
pub mod service;
pub mod servicemap;
pub mod span_names;
pub mod spanmetrics;
pub mod spans;
pub mod tenants;
pub mod wire;
pub mod workload;

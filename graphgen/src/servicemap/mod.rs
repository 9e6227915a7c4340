//! graphgen's own live service map: `/graph` (an SVG page) and `/api/graph` (JSON shaped like
//! Grafana's node-graph frames), so the graph can be explored without Grafana.
//!
//! - [`history`]: snapshots of every edge's cumulative counts, taken every 5 s.
//! - [`quantile`]: PromQL's `histogram_quantile` and counter-reset rule.
//! - [`part`]: one replica's increases over a window; parts of several replicas add up.
//! - [`model`]: nodes and edges with their figures over a window, from one or more parts.
//! - [`fleet`]: the other replicas (`--peers`), asked for their parts.
//! - [`layout`]: where the nodes go (layered, callers left).
//! - [`state`]: the snapshots and the latest reading, and the task that takes them.
//! - [`api`]: the JSON; [`page`]: the HTML/SVG; [`query`]: the query string;
//!   [`http`]: the routes.

pub mod api;
pub mod fleet;
pub mod history;
pub mod http;
pub mod layout;
pub mod model;
pub mod page;
pub mod part;
pub mod quantile;
pub mod query;
pub mod state;

pub use history::History;
pub use model::ServiceMap;

#[cfg(test)]
mod tests;

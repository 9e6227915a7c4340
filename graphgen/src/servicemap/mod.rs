//! graphgen's own live service map: `/graph` (an SVG page) and `/api/graph` (JSON shaped like
//! Grafana's node-graph frames), so the graph can be explored without Grafana.
//!
//! - [`history`]: snapshots of every edge's cumulative counts, taken every 5 s.
//! - [`quantile`]: PromQL's `histogram_quantile` and counter-reset rule.
//! - [`model`]: nodes and edges with their figures over a window.
//! - [`layout`]: where the nodes go (layered, callers left).
//! - [`state`]: the snapshots and the latest reading, and the task that takes them.
//! - [`api`]: the JSON; [`page`]: the HTML/SVG; [`query`]: the query string;
//!   [`http`]: the routes.

pub mod api;
pub mod history;
pub mod http;
pub mod layout;
pub mod model;
pub mod page;
pub mod quantile;
pub mod query;
pub mod state;

pub use history::History;
pub use model::ServiceMap;

#[cfg(test)]
mod tests;

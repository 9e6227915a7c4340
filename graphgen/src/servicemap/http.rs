//! The service map's routes on the admin port — `GET /graph` (the page) and `GET /api/graph`
//! (JSON) — and the task that takes a snapshot every 5 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::api::GraphResponse;
use super::history::{History, Snapshot, FINE_EVERY, LONGEST_WINDOW};
use super::model::ServiceMap;
use super::page;
use crate::engine::Engine;
use crate::selfmetrics::SelfMetrics;

/// The window when none is asked for, as in the issue and Grafana's default range.
pub const DEFAULT_WINDOW: &str = "5m";
/// The shortest window: two snapshots.
const SHORTEST_WINDOW: Duration = Duration::from_secs(10);
/// How long a reading of the engine serves pages and the API.
const CURRENT_FOR: Duration = Duration::from_secs(1);

pub struct MapState {
    engine: Arc<Mutex<Engine>>,
    history: Mutex<History>,
    /// The latest reading for pages, reused for [`CURRENT_FOR`] so that many viewers (or a
    /// script polling the API) read the engine at most once a second.
    current: Mutex<Option<Arc<Snapshot>>>,
    /// Base URL of Grafana, for links to traces in Explore.
    pub grafana_url: Option<String>,
    layouts: page::LayoutCache,
    metrics: Arc<SelfMetrics>,
}

impl MapState {
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        max_series: usize,
        grafana_url: Option<String>,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        let started = engine.lock().unwrap_or_else(|e| e.into_inner()).now_nanos();
        Self {
            engine,
            history: Mutex::new(History::new(started, max_series)),
            current: Mutex::new(None),
            grafana_url,
            layouts: page::LayoutCache::default(),
            metrics,
        }
    }

    /// Takes a snapshot of every edge and keeps it.
    pub fn snapshot(&self) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = {
            let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            history.read(engine.graph(), engine.now_nanos())
        };
        history.record(snapshot);
        let stats = history.stats();
        let m = &self.metrics.service_map;
        m.snapshots.set(stats.snapshots as i64);
        m.snapshot_series.set(stats.series_entries as i64);
        m.omitted_edges.set(stats.omitted_edges as i64);
    }

    /// The map over `window`, ending now. The locks are held only to read; the figures are
    /// computed from shared snapshots afterwards.
    pub fn map(&self, window: Duration) -> ServiceMap {
        let (snapshots, started_at, current, bounds) = {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let mut cached = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            let now = engine.now_nanos();
            let current = match &*cached {
                Some(c) if now.saturating_sub(c.at_nanos) < CURRENT_FOR.as_nanos() as u64 => {
                    c.clone()
                }
                _ => {
                    let c = Arc::new(history.read(engine.graph(), now));
                    *cached = Some(c.clone());
                    c
                }
            };
            let bounds = engine.graph().config().histogram_buckets.clone();
            (
                history.snapshots(),
                history.started_at_nanos(),
                current,
                bounds,
            )
        };
        ServiceMap::compute(&snapshots, started_at, &current, window, &bounds)
    }

    /// Snapshots every [`FINE_EVERY`] until dropped.
    pub async fn run_snapshots(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FINE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // It waits for the engine's lock and reads every series: off the async workers.
            let state = self.clone();
            let _ = tokio::task::spawn_blocking(move || state.snapshot()).await;
        }
    }
}

pub fn router(state: Arc<MapState>) -> Router {
    Router::new()
        .route("/graph", get(graph_page))
        .route("/api/graph", get(graph_json))
        .with_state(state)
}

/// What the page and the API read from the query string.
#[derive(Debug, Default, Deserialize)]
pub struct MapQuery {
    pub window: Option<String>,
    /// A selected node…
    pub node: Option<String>,
    /// …or a selected edge.
    pub client: Option<String>,
    pub server: Option<String>,
    /// `off` pauses the page's refresh.
    pub refresh: Option<String>,
}

/// A window the user may ask for: 10s to 15m.
pub fn parse_window(text: Option<&str>) -> Result<(Duration, String), String> {
    let text = text.unwrap_or(DEFAULT_WINDOW).trim();
    let window = humantime::parse_duration(text)
        .map_err(|e| format!("window {text:?}: {e} (write e.g. 1m, 5m, 15m)"))?;
    if !(SHORTEST_WINDOW..=LONGEST_WINDOW).contains(&window) {
        return Err(format!(
            "window {text:?}: must be between {} and {}",
            humantime::format_duration(SHORTEST_WINDOW),
            humantime::format_duration(LONGEST_WINDOW)
        ));
    }
    Ok((window, humantime::format_duration(window).to_string()))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// Parses the window, computes the map off the async workers (reading every edge and laying
/// the map out is CPU work) and answers with what `answer` makes of it.
async fn with_map(
    state: Arc<MapState>,
    q: MapQuery,
    content_type: &'static str,
    answer: impl FnOnce(&MapState, &ServiceMap, &str, &MapQuery) -> Result<Vec<u8>, String>
        + Send
        + 'static,
) -> Response {
    let (window, text) = match parse_window(q.window.as_deref()) {
        Ok(w) => w,
        Err(message) => return bad_request(message),
    };
    let made = tokio::task::spawn_blocking(move || {
        let map = state.map(window);
        answer(&state, &map, &text, &q)
    })
    .await;
    match made {
        Ok(Ok(body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e.to_string()),
    }
}

async fn graph_json(State(state): State<Arc<MapState>>, Query(q): Query<MapQuery>) -> Response {
    with_map(state, q, "application/json", |_, map, text, _| {
        serde_json::to_vec(&GraphResponse::new(map, text)).map_err(|e| e.to_string())
    })
    .await
}

async fn graph_page(State(state): State<Arc<MapState>>, Query(q): Query<MapQuery>) -> Response {
    with_map(
        state,
        q,
        "text/html; charset=utf-8",
        |state, map, text, q| {
            page::render(map, text, q, state.grafana_url.as_deref(), &state.layouts)
                .map(String::into_bytes)
                .map_err(|e| e.to_string())
        },
    )
    .await
}

fn internal(error: String) -> Response {
    tracing::error!(%error, "the service map failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the service map failed; see graphgen's log\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked() {
        assert_eq!(
            parse_window(None).unwrap(),
            (Duration::from_secs(300), "5m".into())
        );
        assert_eq!(
            parse_window(Some("15m")).unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(parse_window(Some("30s")).unwrap().1, "30s");
        assert!(parse_window(Some("1h"))
            .unwrap_err()
            .contains("between 10s and 15m"));
        assert!(parse_window(Some("1s")).is_err());
        assert!(parse_window(Some("<script>"))
            .unwrap_err()
            .contains("write e.g."));
    }
}

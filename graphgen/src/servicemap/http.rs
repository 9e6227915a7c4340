//! The service map's routes on the admin port: `GET /graph` (the page) and `GET /api/graph`
//! (JSON).

use std::sync::Arc;

use super::api::GraphResponse;
use super::model::ServiceMap;
use super::page;
use super::query::{parse_window, MapQuery};
use super::state::MapState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn router(state: Arc<MapState>) -> Router {
    Router::new()
        .route("/graph", get(graph_page))
        .route("/api/graph", get(graph_json))
        .with_state(state)
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

//! The service map's routes on the admin port: `GET /graph` (the page), `GET /api/graph`
//! (JSON) and `GET /api/graph/part` (this replica's increases, which peers merge).

use std::sync::Arc;
use std::time::Duration;

use super::api::GraphResponse;
use super::fleet::{Replica, ReplicaState};
use super::model::ServiceMap;
use super::page;
use super::part::MapPart;
use super::query::{parse_window, MapQuery};
use super::state::MapState;
use crate::selfmetrics::{PeerLabels, PeerOutcome};
use crate::tenants::InvalidTenantId;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn router(state: Arc<MapState>) -> Router {
    Router::new()
        .route("/graph", get(graph_page))
        .route("/api/graph", get(graph_json))
        .route("/api/graph/part", get(part_json))
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

fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// This replica's part, computed off the async workers (it reads every edge).
async fn own_part(
    state: &Arc<MapState>,
    tenant: Option<String>,
    window: Duration,
) -> Result<Result<MapPart, InvalidTenantId>, String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.part(tenant.as_deref(), window))
        .await
        .map_err(|e| e.to_string())
}

fn invalid_tenant(e: InvalidTenantId) -> Response {
    bad_request(format!("tenant: {e}"))
}

/// Parses the window, gathers this replica's part and, with `--peers`, every peer's, merges
/// them off the async workers (laying the map out is CPU work) and answers with what `answer`
/// makes of the map.
async fn with_map(
    state: Arc<MapState>,
    q: MapQuery,
    content_type: &'static str,
    answer: impl FnOnce(&MapState, &ServiceMap, &[Replica], &str, &MapQuery) -> Result<Vec<u8>, String>
        + Send
        + 'static,
) -> Response {
    let (window, text) = match parse_window(q.window.as_deref()) {
        Ok(w) => w,
        Err(message) => return bad_request(message),
    };
    let own = match own_part(&state, q.tenant.clone(), window).await {
        Ok(Ok(part)) => part,
        Ok(Err(e)) => return invalid_tenant(e),
        Err(e) => return internal(e),
    };
    let (peers, replicas) = match &state.fleet {
        Some(fleet) => {
            let bounds = own.bounds.clone();
            let (peers, replicas) = fleet
                .gather(&own, q.tenant.as_deref(), window, &text, &bounds)
                .await;
            count_peers(&state, &replicas);
            (peers, replicas)
        }
        None => (Vec::new(), vec![Replica::this(&own)]),
    };
    let made = tokio::task::spawn_blocking(move || {
        let bounds = own.bounds.clone();
        let mut parts = vec![own];
        parts.extend(peers);
        let map = ServiceMap::from_parts(&parts, window, &bounds);
        answer(&state, &map, &replicas, &text, &q)
    })
    .await;
    match made {
        Ok(Ok(body)) => ok(content_type, body),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e.to_string()),
    }
}

fn count_peers(state: &MapState, replicas: &[Replica]) {
    for r in replicas {
        let outcome = match (r.state, r.reason) {
            (ReplicaState::This, _) => continue,
            (_, Some(reason)) => reason.outcome(),
            (_, None) => PeerOutcome::answered,
        };
        state
            .metrics
            .service_map
            .peer_queries
            .get_or_create(&PeerLabels { outcome })
            .inc();
    }
}

async fn graph_json(State(state): State<Arc<MapState>>, Query(q): Query<MapQuery>) -> Response {
    with_map(state, q, "application/json", |_, map, replicas, text, _| {
        serde_json::to_vec(&GraphResponse::new(map, replicas, text)).map_err(|e| e.to_string())
    })
    .await
}

async fn graph_page(State(state): State<Arc<MapState>>, Query(q): Query<MapQuery>) -> Response {
    with_map(
        state,
        q,
        "text/html; charset=utf-8",
        |state, map, replicas, text, q| {
            page::render(
                map,
                replicas,
                state.exported(q.tenant.as_deref()),
                text,
                q,
                state.grafana_url.as_deref(),
                &state.layouts,
            )
            .map(String::into_bytes)
            .map_err(|e| e.to_string())
        },
    )
    .await
}

/// This replica's part alone (never its peers'), for a peer drawing the fleet's map.
async fn part_json(State(state): State<Arc<MapState>>, Query(q): Query<MapQuery>) -> Response {
    let window = match parse_window(q.window.as_deref()) {
        Ok((w, _)) => w,
        Err(message) => return bad_request(message),
    };
    match own_part(&state, q.tenant, window).await {
        Ok(Ok(part)) => match serde_json::to_vec(&part) {
            Ok(body) => ok("application/json", body),
            Err(e) => internal(e.to_string()),
        },
        Ok(Err(e)) => invalid_tenant(e),
        Err(e) => internal(e),
    }
}

fn internal(error: String) -> Response {
    tracing::error!(%error, "the service map failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the service map failed; see graphgen's log\n",
    )
        .into_response()
}

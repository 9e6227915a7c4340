//! inventory: reserves stock. `?slow=true` is the slow hop of `/delayed-chain`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{fail_if_targeted, Routes};
use crate::error::AppError;
use crate::failure::Fail;
use crate::telemetry::trace_id;
use crate::{work, App, Role};

pub fn routes() -> Routes {
    Routes::new().route("/reserve", post(reserve))
}

#[derive(Deserialize, Default)]
pub struct Slow {
    #[serde(default)]
    pub slow: bool,
}

async fn reserve(
    State(app): State<Arc<App>>,
    Query(slow): Query<Slow>,
    fail: Fail,
) -> Result<Json<Value>, AppError> {
    fail_if_targeted(&fail, Role::Inventory)?;
    {
        let _span = tracing::info_span!(
            "check stock",
            inventory.sku = "sku-42",
            inventory.warehouse = "north"
        )
        .entered();
    }
    work(&app, if slow.slow { 1500 } else { 15 }).await;
    Ok(Json(
        json!({ "service": Role::Inventory.name(), "reserved": 1, "trace_id": trace_id() }),
    ))
}

//! Each role's endpoints. `/work` exists on every downstream role for the fan-out scenario.

mod checkout;
mod frontend;
mod inventory;
pub mod notifications;
mod payments;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::AppError;
use crate::failure::Fail;
use crate::telemetry::trace_id;
use crate::{work, App, Role};

pub type Routes = Router<Arc<App>>;

pub fn routes(role: Role) -> Routes {
    let specific = match role {
        Role::Frontend => return frontend::routes(),
        Role::Checkout => checkout::routes(),
        Role::Inventory => inventory::routes(),
        Role::Payments => payments::routes(),
        Role::Notifications => notifications::routes(),
    };
    specific.route("/work", get(generic_work))
}

/// A little work in this service, for `/multi-service`.
async fn generic_work(State(app): State<Arc<App>>, fail: Fail) -> Result<Json<Value>, AppError> {
    let role = app.config.role;
    fail_if_targeted(&fail, role)?;
    work(&app, 10).await;
    Ok(Json(
        json!({ "service": role.name(), "status": "ok", "trace_id": trace_id() }),
    ))
}

/// `Err` when the failure knob names this role.
fn fail_if_targeted(fail: &Fail, role: Role) -> Result<(), AppError> {
    if fail.hits_role(role) {
        return Err(AppError::Failed {
            service: role.name().into(),
            reason: "failure requested with ?fail".into(),
        });
    }
    Ok(())
}

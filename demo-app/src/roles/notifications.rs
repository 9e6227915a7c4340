//! notifications: consumes order events (CONSUMER spans continuing the producer's trace).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use tracing::Instrument;

use super::Routes;
use crate::failure::FailTarget;
use crate::messaging::{consumer_span, Message, EVENTS_PATH};
use crate::{work, App, Role};

pub fn routes() -> Routes {
    Routes::new().route(EVENTS_PATH, post(consume))
}

async fn consume(State(app): State<Arc<App>>, Json(message): Json<Message>) -> StatusCode {
    let span = consumer_span(&message);
    async {
        work(&app, 5).await;
        {
            let _send = tracing::info_span!("send email", notification.channel = "email").entered();
        }
        if message.fail == Some(FailTarget::Role(Role::Notifications)) {
            crate::telemetry::record_exception("SmtpError", "mail server unavailable");
        }
    }
    .instrument(span)
    .await;
    // Acknowledged either way: a failed consumer does not fail the producer.
    StatusCode::ACCEPTED
}

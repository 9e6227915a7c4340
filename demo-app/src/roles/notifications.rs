//! notifications: consumes order events from NATS in a queue group (CONSUMER spans continuing
//! the producer's trace); `?fail=notifications` fails the processing.

use std::sync::Arc;

use super::Routes;
use crate::failure::FailTarget;
use crate::{work, App, Role};

/// No endpoints of its own besides `/work`: its work arrives over NATS.
pub fn routes() -> Routes {
    Routes::new()
}

/// Subscribes to the order events; each is handled under its CONSUMER span.
pub async fn start_consuming(app: Arc<App>) -> Result<(), async_nats::SubscribeError> {
    let Some(broker) = app.broker.clone() else {
        return Ok(());
    };
    broker
        .consume(move |fail| {
            let app = app.clone();
            async move {
                work(&app, 5).await;
                {
                    let _send =
                        tracing::info_span!("send email", notification.channel = "email").entered();
                }
                if fail == Some(FailTarget::Role(Role::Notifications)) {
                    return Err("mail server unavailable".to_string());
                }
                Ok(())
            }
        })
        .await
}

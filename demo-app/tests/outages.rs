//! The shop's backends going away and coming back, as real processes: PostgreSQL killed
//! mid-test makes orders fail fast with a 502 (no hang, no panic) and they succeed again once
//! it is back; NATS killed makes the event's PRODUCER span an error while orders still succeed,
//! and events flow again once it is back.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Receiver, Shop};

async fn chain(shop: &Shop) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/chain", shop.frontend))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the frontend answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Calls /chain until `done` says so, for at most 20 s.
async fn until(shop: &Shop, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = chain(shop).await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: last {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_and_nats_outages_are_errors_and_the_shop_recovers() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let Some(mut shop) = tokio::task::spawn_blocking(move || Shop::start(Some(&endpoint)))
        .await
        .unwrap()
    else {
        return;
    };
    let (status, body) = chain(&shop).await;
    assert_eq!(status, 200, "{body}");

    // PostgreSQL down: a 502 naming it, within the pool's bounded waits.
    shop.postgres.kill();
    let started = Instant::now();
    let (status, body) = chain(&shop).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("postgres"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    shop.postgres.run();
    until(&shop, "orders stored again", |s, _| s == 200).await;

    // NATS down: the order is stored, the event is not, and its span says so.
    shop.nats.kill();
    let body = until(&shop, "the outage seen", |s, b| {
        s == 200 && b["order"]["event_published"] == false
    })
    .await;
    let trace = body["trace_id"].as_str().unwrap().to_string();
    shop.nats.run();
    until(&shop, "events published again", |s, b| {
        s == 200 && b["order"]["event_published"] == true
    })
    .await;

    // Every role is still up, and the failed publish is an ERROR span in its trace.
    let (status, _) = chain(&shop).await;
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || shop.stop())
        .await
        .unwrap();
    let failed_publish = receiver.batches().iter().any(|rs| {
        rs.scope_spans.iter().flat_map(|s| &s.spans).any(|span| {
            span.name == "publish orders"
                && hex(&span.trace_id) == trace
                && span.status.as_ref().is_some_and(|s| s.code == 2)
        })
    });
    assert!(
        failed_publish,
        "the publish during the outage is an ERROR span"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

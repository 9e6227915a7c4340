//! The landing page in a real browser: headless Chromium (Debian's) clicks every button of the
//! shop running as processes, and a trace id must appear for each. The screenshot is written to
//! `target/landing-page.png`.

mod support;

use std::path::PathBuf;

use support::{tools, Receiver, Shop};

#[tokio::test(flavor = "multi_thread")]
async fn chromium_clicks_every_button_and_sees_a_trace_id() {
    let (Some(python), Some(())) = (tools::python(), tools::chromium()) else {
        return;
    };
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let Some(shop) = tokio::task::spawn_blocking(move || Shop::start(Some(&endpoint)))
        .await
        .unwrap()
    else {
        return;
    };
    let screenshot = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/landing-page.png"
    ));
    let _ = std::fs::remove_file(&screenshot);
    let args = vec![
        format!("{}/", shop.frontend),
        screenshot.to_str().unwrap().to_string(),
    ];
    let printed = tokio::task::spawn_blocking(move || {
        tools::run_browser_script(&python, "landing.py", &args)
    })
    .await
    .unwrap();
    println!("{printed}");
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
}

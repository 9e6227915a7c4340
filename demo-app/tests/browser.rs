//! The landing page in a real browser: headless Chromium (Debian's) clicks every button of the
//! shop running as processes, and a trace id must appear for each. The screenshot is written to
//! `target/landing-page.png`.

mod support;

use std::path::PathBuf;
use std::process::Command;

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
    let url = format!("{}/", shop.frontend);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/landing.py");
    let shot = screenshot.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &url, shot.to_str().unwrap()])
            .env("SE_OFFLINE", "true")
            .output()
            .expect("run the browser script")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
}

//! Fuzzes the OTLP/HTTP decode path (gzip, protobuf, JSON) and feeds whatever decodes into the
//! engine: nothing may panic, and nothing may decompress past the limit.
#![no_main]

use std::sync::Arc;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use graphgen::receiver::http::{decode_body, Encoding};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    let content_encoding = if selector & 2 == 0 {
        "identity"
    } else {
        "gzip"
    };
    if let Ok(request) = decode_body(body, encoding, content_encoding, LIMIT) {
        let clock = ManualClock::new(1);
        let mut engine = Engine::new(
            Default::default(),
            Some(Default::default()),
            Arc::new(clock.clone()),
        )
        .unwrap();
        engine.push(&request.resource_spans);
        clock.advance(std::time::Duration::from_secs(60));
        engine.expire();
        let _ = engine.families();
    }
});

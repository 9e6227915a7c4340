//! Fuzzes the production decode path — the HTTP receiver's decompression, then the intake's
//! decode and span validation that both receivers use — and feeds whatever decodes into the
//! engine: nothing may panic, nothing may decompress past the limit, no invalid span may pass.
#![no_main]

use std::sync::Arc;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use graphgen::intake::{decode, Body, Decoded};
use graphgen::receiver::http::decompress;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_encoding = if selector & 2 == 0 {
        "identity"
    } else {
        "gzip"
    };
    let Ok(bytes) = decompress(bytes::Bytes::copy_from_slice(body), content_encoding, LIMIT) else {
        return;
    };
    assert!(bytes.len() <= LIMIT);
    let body = if selector & 1 == 0 {
        Body::Protobuf(bytes)
    } else {
        Body::Json(bytes)
    };
    if let Ok(Decoded { request, valid, .. }) = decode(&body) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        assert_eq!(spans, valid);
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

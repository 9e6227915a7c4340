//! Fuzzes the production decode path — the HTTP receiver's decompression, then the intake's
//! decode and span validation that both receivers use — and feeds whatever decodes into the
//! engine: nothing may panic, nothing may decompress past the limit, no invalid span may pass.
#![no_main]

use std::sync::Arc;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use graphgen::intake::{decode, Body};
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
    if let Ok(mut decoded) = decode(&body) {
        let valid = decoded.valid;
        let request = decoded.request();
        let spans: Vec<_> = request.spans().collect();
        assert_eq!(spans.len(), valid);
        for span in spans {
            // What the engine may rely on: OTLP's id sizes, ids not all zero.
            assert!(span.trace_id.len() == 16 && span.trace_id.iter().any(|b| *b != 0));
            assert!(span.span_id.len() == 8 && span.span_id.iter().any(|b| *b != 0));
            assert!(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8);
        }
        let clock = ManualClock::new(1);
        let mut engine = Engine::new(
            Default::default(),
            Some(Default::default()),
            Arc::new(clock.clone()),
        )
        .unwrap();
        // Read in place: the spans the reader's check parsed, as the receivers count them.
        match decoded.parsed() {
            Some(batch) => {
                let parsed: usize = batch.resources().map(|(_, spans)| spans.len()).sum();
                assert_eq!(parsed, valid);
                engine.push_parsed(batch);
            }
            None => engine.push(&decoded.request()),
        }
        clock.advance(std::time::Duration::from_secs(60));
        engine.expire();
        let _ = engine.families();
    }
});

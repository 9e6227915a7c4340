//! The borrowed reader against prost on any bytes: whatever the reader reads, prost decodes,
//! and both see the same spans and attributes; prost's re-encoding of whatever it decodes is
//! read as prost sees it (`graphgen::wire::reference` asserts each of these).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = graphgen::wire::reference::assert_agrees_with_prost(data);
});

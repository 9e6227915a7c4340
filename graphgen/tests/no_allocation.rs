//! In the steady state the engine allocates nothing per span: a counting allocator proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use graphgen::intake::{count, decode, Body};
use graphgen::native_histogram::NativeConfig;
use graphgen::tenants::{Tenant, TenantId};
use graphgen::{graph, spanmetrics, workload};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_pushes_allocate_nothing() {
    let bytes = bytes::Bytes::from(graphgen::wire::encode(&workload::client_server_request(
        100,
    )));
    // Filter policies that look at every span and keep them all: a regex on an intrinsic, a
    // strict resource attribute.
    let keep_all: Vec<graphgen::filter::FilterPolicy> = serde_json::from_str(
        r#"[{"exclude": {"match_type": "regex", "attributes": [{"key": "name", "value": "^/health"}]}},
            {"exclude": {"match_type": "strict", "attributes": [{"key": "resource.env", "value": "test"}]}}]"#,
    )
    .unwrap();
    // (client_server_prefix, native histograms, filter policies, target info)
    for (prefix, native, filtered, target_info) in [
        (false, false, false, false),
        (true, false, false, false),
        (false, true, false, false),
        (false, false, true, false),
        (false, false, false, true),
    ] {
        let native_histograms = native.then(NativeConfig::default);
        let filter_policies = if filtered { keep_all.clone() } else { vec![] };
        let config = graph::Config {
            dimensions: vec!["beast".into(), "god".into()],
            enable_client_server_prefix: prefix,
            native_histograms,
            filter_policies: filter_policies.clone(),
            ..graph::Config::default()
        };
        let clock = ManualClock::new(1);
        let engine = Engine::new(
            config,
            Some(spanmetrics::Config {
                native_histograms,
                filter_policies,
                enable_target_info: target_info,
                ..spanmetrics::Config::default()
            }),
            Arc::new(clock),
        )
        .unwrap();
        let tenant = Tenant::new(TenantId::parse("t").unwrap(), engine);
        let push = || {
            // As the receivers take a request in: the reader's check, which parses its spans,
            // then the engine.
            let body = Body::Protobuf(bytes.clone());
            let mut decoded = decode(&body).expect("a valid request");
            assert_eq!(decoded.fallback, None, "read in place");
            count(&tenant, &mut decoded);
        };
        push();
        push();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..50 {
            push();
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocations, 0,
            "prefix={prefix} native={native} filtered={filtered} target_info={target_info}: {allocations} allocations in 50 pushes of 200 spans"
        );
        let mut engine = tenant.engine();
        assert_eq!(engine.graph().stats().edges_completed, 52 * 100);
        if target_info {
            let info = engine
                .families()
                .into_iter()
                .find(|f| f.name == "traces_target_info")
                .expect("target info on");
            assert_eq!(
                info.series.len(),
                2,
                "one series per resource, client and server"
            );
        }
    }
}

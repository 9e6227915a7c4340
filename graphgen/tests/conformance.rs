//! Runs every case of `tests/conformance` (a copy kept in the repository; its README says where
//! the expected series came from) through the engine and compares every series with
//! what a real Tempo metrics-generator produced from the same spans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use graphgen::clock::ManualClock;
use graphgen::engine::Engine;
use graphgen::graph;
use graphgen::processors;
use graphgen::spanmetrics;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    requests: Vec<ExportTraceServiceRequest>,
}

#[derive(Deserialize)]
struct Expected {
    series: Vec<ExpectedSeries>,
}

#[derive(Deserialize)]
struct ExpectedSeries {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

type SeriesId = (String, BTreeMap<String, String>);

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every series exactly once: a duplicate would collapse unseen in the map.
fn collect(
    dir: &Path,
    families: &[graphgen::series::Family],
    series: &mut BTreeMap<SeriesId, f64>,
) {
    for s in families.iter().flat_map(|f| f.samples()) {
        let id: SeriesId = (s.name, s.labels.into_iter().collect());
        if let Some(first) = series.insert(id.clone(), s.value) {
            panic!(
                "{}: graphgen wrote {id:?} twice ({first} and {})",
                dir.display(),
                s.value
            );
        }
    }
}

/// A case with `tenants`: Tempo ran multi-tenant with the case's `overrides.yaml` as its
/// per-tenant overrides and `inject_tenant_id_as: tenant`, and got every request once per
/// tenant, with its `X-Scope-OrgID`. Here the same goes through graphgen's own tenants: the
/// overrides file parsed and laid over the options as the service does.
fn run_tenants_case(dir: &Path, raw: &serde_json::Value) -> BTreeMap<SeriesId, f64> {
    use graphgen::config::Options;
    use graphgen::overrides::Overrides;
    use graphgen::tenants::{EngineFactory, TenantId, TenantSettings, Tenants};
    let ids: Vec<TenantId> = raw["tenants"]
        .as_array()
        .expect("tenants is a list")
        .iter()
        .map(|t| TenantId::parse(t.as_str().expect("a tenant id")).expect("valid tenant id"))
        .collect();
    // Tempo's generator config in the run: wait 3s, the instance label off.
    let options = <Options as clap::Parser>::try_parse_from([
        "graphgen",
        "--wait",
        "3s",
        "--span-metrics-enable-instance-label=false",
    ])
    .expect("valid options");
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let tenants = Tenants::new(
        TenantSettings {
            default_tenant: TenantId::parse("single-tenant").unwrap(),
            require_tenant: true,
            max_tenants: 10,
        },
        EngineFactory::new(options, Arc::new(clock.clone())),
        Overrides::default(),
    )
    .expect("valid options");
    let text = std::fs::read_to_string(dir.join("overrides.yaml")).expect("overrides.yaml");
    let (overrides, unknown) = Overrides::parse(&text).expect("valid overrides");
    // Tempo needs ingestion limits in a tenant's entry (it replaces the defaults whole);
    // graphgen has none and says so.
    assert!(
        unknown.iter().all(|k| k.ends_with(": ingestion")),
        "keys graphgen lacks: {unknown:?}"
    );
    tenants.apply_overrides(overrides).expect("overrides apply");
    let input: Input = read_json(&dir.join("input.json"));
    for request in &input.requests {
        let body = body_of(request);
        let decoded = read_in_place(&body);
        for id in &ids {
            // Each tenant parses the request again: a parsed batch is for one engine.
            let tenant = tenants.get_or_create(id).expect("within max_tenants");
            tenant.engine().push(&decoded.request());
        }
    }
    clock.advance(Duration::from_secs(4));
    let mut series = BTreeMap::new();
    for id in &ids {
        let tenant = tenants.get_or_create(id).unwrap();
        let mut engine = tenant.engine();
        engine.expire();
        assert_eq!(
            engine.graph().pending_edges(),
            0,
            "every edge completed or expired"
        );
        let mut families = engine.families();
        graphgen::series::set_label(&mut families, "tenant", id.as_str());
        collect(dir, &families, &mut series);
    }
    series
}

fn run_case(dir: &Path) -> BTreeMap<SeriesId, f64> {
    // `processors`, when a case names it, is Tempo's list (the overrides' `processors`); the
    // other keys are the service-graph options.
    let mut raw: serde_json::Value = read_json(&dir.join("config.json"));
    if raw.get("tenants").is_some() {
        return run_tenants_case(dir, &raw);
    }
    let names: Vec<String> = match raw.as_object_mut().and_then(|o| o.remove("processors")) {
        Some(list) => serde_json::from_value(list).expect("processors is a list of names"),
        None => vec!["service-graphs".into(), "span-metrics".into()],
    };
    let processors = processors::resolve(&names).expect("known processor names");
    // `span_metrics`, when a case names it, holds Tempo's span-metrics overrides; the cases ran
    // with the instance label off unless they say otherwise.
    let span_options = raw
        .as_object_mut()
        .and_then(|o| o.remove("span_metrics"))
        .unwrap_or_else(|| serde_json::json!({}));
    let mut span_options = span_options
        .as_object()
        .expect("span_metrics is an object")
        .clone();
    span_options
        .entry("enable_instance_label")
        .or_insert(serde_json::Value::Bool(false));
    // `span_name_sanitization` is the generator's (Tempo's `metrics_generator` override).
    let sanitization: graphgen::span_names::Sanitization = raw
        .as_object_mut()
        .and_then(|o| o.remove("span_name_sanitization"))
        .map(|v| serde_json::from_value(v).expect("span_name_sanitization"))
        .unwrap_or_default();
    let host_info_config: graphgen::hostinfo::Config = raw
        .as_object_mut()
        .and_then(|o| o.remove("host_info"))
        .map(|v| serde_json::from_value(v).expect("host_info options"))
        .unwrap_or_default();
    let span_config: spanmetrics::Config =
        serde_json::from_value(serde_json::Value::Object(span_options))
            .unwrap_or_else(|e| panic!("{}: span_metrics: {e}", dir.display()));
    let mut config: graph::Config = serde_json::from_value(raw)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("config.json").display()));
    config.metrics = processors
        .service_graphs
        .unwrap_or(processors::GraphMetrics {
            request: false,
            latency: false,
            connection_info: false,
        });
    let span_metrics = processors.span_metrics.map(|metrics| spanmetrics::Config {
        metrics,
        span_name_sanitization: sanitization,
        ..span_config
    });
    let input: Input = read_json(&dir.join("input.json"));
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let wait = config.wait;
    let mut engine = Engine::new(config, span_metrics, Arc::new(clock.clone()))
        .expect("valid config")
        .with_host_info_if(processors.host_info.then_some(host_info_config))
        .expect("valid host_info options");
    for request in &input.requests {
        // The spans as the reader's check parsed them, as the receivers count them.
        let body = body_of(request);
        let mut decoded = read_in_place(&body);
        engine.push_parsed(decoded.parsed().expect("parsed by the read"));
    }
    clock.advance(wait + Duration::from_secs(1));
    engine.expire();
    assert_eq!(
        engine.graph().pending_edges(),
        0,
        "every edge completed or expired"
    );

    let mut series = BTreeMap::new();
    collect(dir, &engine.families(), &mut series);
    series
}

fn expected(dir: &Path) -> BTreeMap<SeriesId, f64> {
    let expected: Expected = read_json(&dir.join("expected.json"));
    let mut series = BTreeMap::new();
    for s in expected.series {
        let labels = s
            .labels
            .into_iter()
            .filter(|(k, v)| k != "__metrics_gen_instance" && !v.is_empty())
            .collect();
        let id: SeriesId = (s.name, labels);
        assert!(
            series.insert(id.clone(), s.value).is_none(),
            "{}: {id:?} twice in expected.json",
            dir.display()
        );
    }
    series
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Lines describing every difference between what we made and what Tempo made.
fn diff(got: &BTreeMap<SeriesId, f64>, want: &BTreeMap<SeriesId, f64>) -> Vec<String> {
    let show = |(name, labels): &SeriesId| {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{name}{{{}}}", labels.join(","))
    };
    let mut lines = Vec::new();
    for (id, w) in want {
        match got.get(id) {
            None => lines.push(format!("missing     {} = {w}", show(id))),
            Some(g) if !close(*g, *w) => {
                lines.push(format!("wrong value {} = {g}, Tempo has {w}", show(id)))
            }
            Some(_) => {}
        }
    }
    for (id, g) in got {
        if !want.contains_key(id) {
            lines.push(format!("unexpected  {} = {g}", show(id)));
        }
    }
    lines
}

#[test]
fn every_conformance_case_matches_tempo() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("read cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    // A case without its expected output is a broken case, not one to skip.
    for dir in &dirs {
        for file in ["config.json", "input.json", "expected.json"] {
            assert!(dir.join(file).exists(), "{}: no {file}", dir.display());
        }
    }
    dirs.sort();
    assert!(!dirs.is_empty(), "no conformance cases found");

    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let want = expected(dir);
        let got = run_case(dir);
        let lines = diff(&got, &want);
        if lines.is_empty() {
            println!("ok    {name}: {} series", want.len());
        } else {
            let shown: Vec<&String> = lines.iter().take(40).collect();
            failures.push(format!(
                "FAIL  {name}: {} differences of {} series\n  {}",
                lines.len(),
                want.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Tempo:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

/// A request as the receivers take it: its protobuf bytes.
fn body_of(request: &ExportTraceServiceRequest) -> graphgen::intake::Body {
    use prost::Message;
    graphgen::intake::Body::Protobuf(request.encode_to_vec().into())
}

/// `body` through the intake's one decode path, which reads it in place (the borrowed reader,
/// not prost) and parses its spans in the same walk.
fn read_in_place(body: &graphgen::intake::Body) -> graphgen::intake::Decoded<'_> {
    let decoded = graphgen::intake::decode(body).expect("a valid request");
    assert_eq!(decoded.fallback, None, "read in place, not by prost");
    assert_eq!(decoded.invalid, 0);
    decoded
}

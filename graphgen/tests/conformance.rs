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

fn run_case(dir: &Path) -> BTreeMap<SeriesId, f64> {
    // `processors`, when a case names it, is Tempo's list (the overrides' `processors`); the
    // other keys are the service-graph options.
    let mut raw: serde_json::Value = read_json(&dir.join("config.json"));
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
        engine.push(&request.resource_spans);
    }
    clock.advance(wait + Duration::from_secs(1));
    engine.expire();
    assert_eq!(
        engine.graph().pending_edges(),
        0,
        "every edge completed or expired"
    );

    // Every series exactly once: a duplicate would collapse unseen in the map.
    let mut series = BTreeMap::new();
    for s in engine.families().iter().flat_map(|f| f.samples()) {
        let id: SeriesId = (s.name, s.labels.into_iter().collect());
        if let Some(first) = series.insert(id.clone(), s.value) {
            panic!(
                "{}: graphgen wrote {id:?} twice ({first} and {})",
                dir.display(),
                s.value
            );
        }
    }
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

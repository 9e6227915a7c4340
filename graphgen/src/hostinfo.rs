//! The host-info processor (`host-info` in `processors`): one gauge series per host that sent
//! spans, `traces_host_info{grafana_host_id, host_source}` = 1, as Tempo's
//! `modules/generator/processor/hostinfo` (ad33aa8). A host is named by the first of
//! `host_identifiers` a resource has as a non-empty string attribute.

use std::collections::HashMap;

use crate::wire::{Batch, Value};
use serde::{Deserialize, Serialize};

use crate::label_limits::truncate_label;
use crate::series::{Cardinality, Family, FamilyKind, Labels, RegistryLimits, Series, SeriesValue};

const HOST_ID_LABEL: &str = "grafana_host_id";
const HOST_SOURCE_LABEL: &str = "host_source";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Resource attributes naming the host, the first one found wins.
    pub host_identifiers: Vec<String>,
    /// The gauge's name.
    pub metric_name: String,
    /// The bounds of the series; generator-wide.
    #[serde(skip)]
    pub limits: RegistryLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_identifiers: vec!["k8s.node.name".into(), "host.id".into()],
            metric_name: "traces_host_info".into(),
            limits: RegistryLimits::default(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("at least one host identifier is needed")]
    NoIdentifiers,
    #[error("{0:?} is not a metric name (letters, digits, _ and :, not starting with a digit)")]
    MetricName(String),
}

#[derive(Debug)]
pub struct HostInfo {
    identifiers: Vec<String>,
    /// Leaked once per processor: families name their metrics with `&'static str`.
    name: &'static str,
    limits: RegistryLimits,
    /// `host id` NUL `source` → (made, last seen).
    series: HashMap<String, (u64, u64)>,
    /// The key of the current look-up, reused.
    key: String,
    refused: u64,
    truncated: u64,
}

/// A metric name as the series model wants it (`&'static str`), each distinct name leaked
/// once: engines are built again per tenant and at every overrides reload.
fn static_name(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

impl HostInfo {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        if config.host_identifiers.is_empty() {
            return Err(ConfigError::NoIdentifiers);
        }
        let name = &config.metric_name;
        let valid = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if name.is_empty() || !valid {
            return Err(ConfigError::MetricName(name.clone()));
        }
        Ok(Self {
            identifiers: config.host_identifiers,
            name: static_name(config.metric_name),
            limits: config.limits,
            series: HashMap::new(),
            key: String::new(),
            refused: 0,
            truncated: 0,
        })
    }

    /// Every resource of the request names its host, whether or not its spans are counted.
    pub fn push(&mut self, batch: &Batch<'_>, now: u64) {
        for (resource, _) in batch.resources() {
            let found = self.identifiers.iter().find_map(|id| {
                resource.iter().find_map(|kv| match kv.value()? {
                    Value::String(v) if kv.key() == *id && !v.is_empty() => Some((v, id)),
                    _ => None,
                })
            });
            let Some((host, source)) = found else {
                continue;
            };
            let key = &mut self.key;
            key.clear();
            key.push_str(host);
            // The source is one of the configured identifiers, not the sender's to choose.
            let truncated = truncate_label(key, self.limits.max_label_value_length);
            key.push('\0');
            key.push_str(source);
            if let Some((_, seen)) = self.series.get_mut(key.as_str()) {
                *seen = now;
                continue;
            }
            if self.series.len() >= self.limits.max_series.max(1) {
                self.refused += 1;
                continue;
            }
            self.truncated += u64::from(truncated);
            self.series.insert(key.clone(), (now, now));
        }
    }

    /// [`HostInfo::push`] for requests built as prost structs.
    #[cfg(test)]
    pub(crate) fn push_batches(
        &mut self,
        batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
        now: u64,
    ) {
        Batch::of_batches(batches, |batch| self.push(batch, now));
    }

    pub fn purge_series_older_than(&mut self, cutoff: u64) -> usize {
        let before = self.series.len();
        self.series.retain(|_, (_, seen)| *seen >= cutoff);
        before - self.series.len()
    }

    pub fn cardinality(&self) -> Cardinality {
        Cardinality {
            series: self.series.len(),
            refused: self.refused,
            truncated_values: self.truncated,
            limited_values: Vec::new(),
        }
    }

    pub fn families(&self) -> Vec<Family> {
        vec![Family {
            name: self.name,
            help: "One series per host that sent spans, named by the first host identifier its resource has",
            unit: "",
            kind: FamilyKind::Gauge,
            series: self
                .series
                .iter()
                .map(|(key, (made, _))| {
                    let (host, source) = key.split_once('\0').unwrap_or((key, ""));
                    Series {
                    labels: Labels::from_pairs([
                        (HOST_ID_LABEL, host),
                        (HOST_SOURCE_LABEL, source),
                    ]),
                    value: SeriesValue::Gauge(1.0),
                    start_nanos: *made,
                }
                })
                .collect(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::string_attribute as kv;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

    fn resource(
        attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    ) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn hosts(h: &HostInfo) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = h.families()[0]
            .series
            .iter()
            .map(|s| {
                (
                    s.labels.get(HOST_ID_LABEL).unwrap().to_string(),
                    s.labels.get(HOST_SOURCE_LABEL).unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_first_identifier_in_config_order_names_the_host() {
        let mut h = HostInfo::new(Config::default()).unwrap();
        h.push_batches(
            &[
                // host.id comes first in the resource, k8s.node.name first in the config.
                resource(vec![kv("host.id", "h-1"), kv("k8s.node.name", "node-a")]),
                resource(vec![kv("host.id", "h-2")]),
                // Empty: skipped, the next identifier is tried.
                resource(vec![kv("k8s.node.name", ""), kv("host.id", "h-3")]),
                resource(vec![kv("service.name", "no host")]),
            ],
            1,
        );
        assert_eq!(
            hosts(&h),
            [
                ("h-2".to_string(), "host.id".to_string()),
                ("h-3".into(), "host.id".into()),
                ("node-a".into(), "k8s.node.name".into()),
            ]
        );
        assert_eq!(h.families()[0].name, "traces_host_info");
    }

    #[test]
    fn hosts_are_bounded_and_go_stale_when_not_seen() {
        let mut h = HostInfo::new(Config {
            limits: RegistryLimits {
                max_series: 2,
                ..RegistryLimits::default()
            },
            ..Config::default()
        })
        .unwrap();
        for (host, now) in [("a", 1), ("b", 2), ("c", 3), ("a", 10)] {
            h.push_batches(&[resource(vec![kv("host.id", host)])], now);
        }
        assert_eq!(h.cardinality().refused, 1);
        // Seen again at 10, `a` is kept; `b` (last seen at 2) goes.
        assert_eq!(h.purge_series_older_than(5), 1);
        assert_eq!(hosts(&h), [("a".to_string(), "host.id".to_string())]);
    }

    #[test]
    fn bad_options_are_refused() {
        for (config, want) in [
            (
                Config {
                    host_identifiers: vec![],
                    ..Config::default()
                },
                ConfigError::NoIdentifiers,
            ),
            (
                Config {
                    metric_name: "1host".into(),
                    ..Config::default()
                },
                ConfigError::MetricName("1host".into()),
            ),
        ] {
            assert_eq!(HostInfo::new(config).unwrap_err(), want);
        }
    }
}

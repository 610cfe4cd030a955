//! The TOML file layer. Values stay raw strings (and numbers stay u64, what
//! any TOML integer that is not negative fits) so that validation, ranges
//! and error messages are shared with the flag and environment layers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A documented config file with every key: docs/syscope.example.toml, the
/// one copy (shipped as the example file and printed in `--help`).
/// `metrics_endpoint` is commented out because it is used as-is for gRPC
/// too, and this example's value points at the HTTP port.
pub const EXAMPLE_TOML: &str = include_str!("../../../docs/syscope.example.toml");

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_sort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_failures: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<String>>,
    /// `attribute=value` items (see `ondemand`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall_workloads: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo_detail: Option<String>,
    /// `OTEL_METRICS_EXPORTER` as a list: otlp, prometheus, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exporters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<FileExport>,
    #[serde(default, skip_serializing_if = "FilePrometheus::is_empty")]
    pub prometheus: FilePrometheus,
    #[serde(default)]
    pub resource: FileResource,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub health: FileHealth,
    #[serde(default)]
    pub identity: super::identity::FileIdentity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<crate::slo::definition::FileSlo>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileExport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_intervals: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePrometheus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u64>,
}

impl FilePrometheus {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.port.is_none()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_attributes: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_series_per_metric: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_idle_intervals: Option<u64>,
    /// Entries per kernel map, keyed by the map's label
    /// (`syscope_common::maps::MAPS`); unknown labels are errors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernel_maps: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_export_failure: Option<String>,
}

pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_owned(),
        message: describe(&e, text),
    })
}

/// One line, `line L, column C: key: message` (the key when the error is
/// about one, e.g. a wrong type): toml's own Display is a multi-line snippet
/// that reads badly inside a log line, and names no key.
pub(super) fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let Some(before) = text.get(..span.start) else {
        return message.to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    match key_at(text, span.start) {
        Some(key) if !message.contains(&format!("`{key}`")) => {
            format!("line {line}, column {column}: {key}: {message}")
        }
        _ => format!("line {line}, column {column}: {message}"),
    }
}

/// The dotted key whose value (or key) holds byte `at` of the TOML `text`,
/// e.g. `limits.max_series_per_metric`, `slo[1].objective`.
fn key_at(text: &str, at: usize) -> Option<String> {
    use toml_edit::{Item, Table};
    fn within(span: Option<std::ops::Range<usize>>, at: usize) -> bool {
        span.is_some_and(|s| s.contains(&at))
    }
    fn in_value(v: &toml_edit::Value, path: String, at: usize) -> Option<String> {
        if let toml_edit::Value::InlineTable(t) = v {
            for (k, v) in t.iter() {
                let p = format!("{path}.{k}");
                if let Some(found) = in_value(v, p.clone(), at) {
                    return Some(found);
                }
                if within(v.span(), at) {
                    return Some(p);
                }
            }
        }
        within(v.span(), at).then_some(path)
    }
    fn in_table(t: &Table, prefix: &str, at: usize) -> Option<String> {
        for (k, item) in t.iter() {
            let path = if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            };
            if t.key(k).is_some_and(|key| within(key.span(), at)) {
                return Some(path);
            }
            let found = match item {
                Item::Value(v) => in_value(v, path, at),
                Item::Table(t) => in_table(t, &path, at),
                Item::ArrayOfTables(a) => a
                    .iter()
                    .enumerate()
                    .find_map(|(i, t)| in_table(t, &format!("{path}[{i}]"), at)),
                Item::None => None,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    in_table(doc.as_table(), "", at)
}

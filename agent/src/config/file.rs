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

/// One line, `line L, column C: message`: toml's own Display is a multi-line
/// snippet that reads badly inside a log line.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    let Some(before) = e.span().and_then(|s| text.get(..s.start)) else {
        return message.to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

//! The TOML file layer. Values stay raw strings here so that validation, and
//! its error messages, are shared with the flag and environment layers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A documented config file with every key; shipped as an example file.
/// `metrics_endpoint` is commented out because it is used as-is for gRPC
/// too, and this example's value points at the HTTP port.
pub const EXAMPLE_TOML: &str = r#"# syscope configuration file (--config PATH or SYSCOPE_CONFIG).
# Every key is optional. Precedence: command-line flag > environment
# (OTEL_*, SYSCOPE_*) > this file > built-in default. Unknown keys are errors.
# Durations are strings like "500ms", "10s", "1m 30s".

interval = "60s"           # export interval; default 60s, or 5s for the live table; min 100ms
temporality = "cumulative" # cumulative | delta | lowmemory (= delta)
log = "info"               # log filter, RUST_LOG syntax
shutdown_grace = "5s"      # time allowed for the last export on shutdown
table_rows = 20            # rows in the live table (shown when there is no endpoint)
probes = ["syscalls", "tcp"] # probe sets to attach: syscalls, tcp

[export]
# Without an endpoint here or in the environment, syscope shows a live table.
endpoint = "http://localhost:4317"  # collector base URL, http:// (no TLS yet)
# Full metrics URL, used as-is instead of endpoint (http/protobuf: no /v1/metrics appended).
# metrics_endpoint = "http://localhost:4318/v1/metrics"
protocol = "grpc"            # or "http/protobuf" (POSTs to <endpoint>/v1/metrics)
headers = { "x-api-key" = "secret" }  # sent with every export
compression = "gzip"         # gzip | none
timeout = "10s"              # per-export timeout
buffer_intervals = 60        # unsent intervals kept while the collector is down
max_backoff = "30s"          # longest wait between retries

[resource]
service_name = "syscope"     # service.name
attributes = { "deployment.environment.name" = "prod" }  # extra resource attributes

[limits]
max_series_per_metric = 2000 # series kept per metric; min 2
kernel_series = 4096         # kernel latency map entries
kernel_error_series = 4096   # kernel error map entries
kernel_threads = 16384       # kernel map entries for threads inside a syscall
series_idle_intervals = 10   # series not updated for this many intervals are dropped
kernel_sockets = 32768       # kernel map entries for tracked TCP sockets (LRU)
kernel_tcp_series = 2048     # kernel TCP histogram map entries (connect, request, RTT)
kernel_tcp_counters = 4096   # kernel TCP counter map entries (connect errors, retransmits, resets)
kernel_listeners = 1024      # kernel map entries for listening sockets (listen drops)

[health]
# HTTP endpoint for probes: GET /healthz (alive), /readyz (programs attached and
# exports succeeding, or failing for less than max_export_failure). Off by default;
# serves health only. Use 0.0.0.0:PORT for Kubernetes probes.
address = "127.0.0.1:9479"   # IP:PORT, or "off"
max_export_failure = "3m"    # default: three export intervals
"#;

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
    pub table_rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<FileExport>,
    #[serde(default)]
    pub resource: FileResource,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub health: FileHealth,
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
    pub buffer_intervals: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_series_per_metric: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_series: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_error_series: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_idle_intervals: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_sockets: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_tcp_series: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_tcp_counters: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_listeners: Option<u32>,
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

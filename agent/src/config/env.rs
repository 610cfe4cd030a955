//! Environment access and the OTel `key=value,...` list format.
//!
//! Tests pass a `HashMap` instead of mutating the process environment, which
//! is shared between test threads.

use std::collections::HashMap;
use std::hash::BuildHasher;

use super::{invalid, ConfigError};

/// Source of environment variables.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        // Lossy rather than `var()`, so a non-UTF-8 value fails validation
        // with the variable's name instead of being silently ignored.
        std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

pub(super) const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(super) const METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub(super) const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub(super) const METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
pub(super) const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub(super) const METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
pub(super) const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
pub(super) const METRICS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";
pub(super) const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub(super) const METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
pub(super) const METRIC_EXPORT_TIMEOUT: &str = "OTEL_METRIC_EXPORT_TIMEOUT";
pub(super) const EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
pub(super) const TEMPORALITY: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
pub(super) const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub(super) const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub(super) const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub(super) const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
pub(super) const METRICS_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE";
pub(super) const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
pub(super) const METRICS_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE";
pub(super) const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
pub(super) const METRICS_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY";
pub(super) const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
pub(super) const METRICS_INSECURE: &str = "OTEL_EXPORTER_OTLP_METRICS_INSECURE";
pub(super) const METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
pub(super) const PROMETHEUS_HOST: &str = "OTEL_EXPORTER_PROMETHEUS_HOST";
pub(super) const PROMETHEUS_PORT: &str = "OTEL_EXPORTER_PROMETHEUS_PORT";
pub(super) const SYSCOPE_LOG: &str = "SYSCOPE_LOG";
pub(super) const RUST_LOG: &str = "RUST_LOG";
pub(super) const SYSCOPE_CONFIG: &str = "SYSCOPE_CONFIG";
pub(super) const SYSCOPE_PROBES: &str = "SYSCOPE_PROBES";
pub(super) const HEALTH_ADDRESS: &str = "SYSCOPE_HEALTH_ADDRESS";
pub(super) const SELF_ATTRIBUTES: &str = "SYSCOPE_SELF_ATTRIBUTES";
pub(super) const SLO_FILE: &str = "SYSCOPE_SLO_FILE";
pub(super) const STATE_DIR: &str = "SYSCOPE_STATE_DIR";
pub(super) const SYSCALL_WORKLOADS: &str = "SYSCOPE_SYSCALL_WORKLOADS";
pub(super) const SLO_DETAIL: &str = "SYSCOPE_SLO_DETAIL";

/// Every variable read, with its `--help` text; a test checks the two agree,
/// and that each states its setting's range (settings.rs).
pub(super) const DOCS: &[(&str, &str)] = &[
    (
        ENDPOINT,
        "Collector base URL, http:// or https:// (like --endpoint). Setting it enables OTLP\n\
         export; with http/protobuf, metrics are POSTed to <endpoint>/v1/metrics. gRPC also\n\
         takes HOST:PORT without a scheme: https, or http with OTEL_EXPORTER_OTLP_INSECURE=true.",
    ),
    (
        METRICS_ENDPOINT,
        "Metrics URL, used as-is (no /v1/metrics appended); beats OTEL_EXPORTER_OTLP_ENDPOINT.",
    ),
    (
        PROTOCOL,
        "grpc (default) | http/protobuf. http/json is not supported.",
    ),
    (METRICS_PROTOCOL, "Same; beats OTEL_EXPORTER_OTLP_PROTOCOL."),
    (
        HEADERS,
        "Headers sent with every export: key=value,key2=value2, percent-encoded.",
    ),
    (
        METRICS_HEADERS,
        "Same; replaces OTEL_EXPORTER_OTLP_HEADERS as a whole.",
    ),
    (COMPRESSION, "gzip | none (default)."),
    (
        METRICS_COMPRESSION,
        "Same; beats OTEL_EXPORTER_OTLP_COMPRESSION.",
    ),
    (
        TIMEOUT,
        "Export timeout in milliseconds, 1 to 600000 (default 10000).",
    ),
    (
        METRICS_TIMEOUT,
        "Same, 1 to 600000; beats OTEL_EXPORTER_OTLP_TIMEOUT.",
    ),
    (
        METRIC_EXPORT_TIMEOUT,
        "Same, 1 to 600000; used when neither timeout variable above is set.",
    ),
    (
        EXPORT_INTERVAL,
        "Export interval in milliseconds, 100 to 3600000 (default 60000 with OTLP export; 5000 without: table, Prometheus only, none).",
    ),
    (
        TEMPORALITY,
        "cumulative (default) | delta | lowmemory (same as delta: syscope only has\n\
         counters and histograms). Case-insensitive.",
    ),
    (
        SERVICE_NAME,
        "service.name resource attribute (default syscope); beats service.name in\n\
         OTEL_RESOURCE_ATTRIBUTES.",
    ),
    (
        RESOURCE_ATTRIBUTES,
        "Resource attributes: key=value,key2=value2, percent-encoded. Merged over the\n\
         file's resource.attributes.",
    ),
    (
        SDK_DISABLED,
        "true: export nothing and show no table, whatever is configured; the agent still\n\
         collects, and serves health if configured (same as OTEL_METRICS_EXPORTER=none).",
    ),
    (
        METRICS_EXPORTER,
        "otlp | prometheus | otlp,prometheus | none (like --exporters). Unset: OTLP when an\n\
         endpoint is set, else the live table. otlp without an endpoint sends to\n\
         http://localhost:4317 (grpc) or http://localhost:4318 (http/protobuf), as the spec says.",
    ),
    (
        PROMETHEUS_HOST,
        "Prometheus endpoint host (default localhost = 127.0.0.1): an IP, or a name resolved\n\
         at startup. GET /metrics is served there when OTEL_METRICS_EXPORTER has prometheus.",
    ),
    (
        PROMETHEUS_PORT,
        "Prometheus endpoint port, 1 to 65535 (default 9464).",
    ),
    (
        CERTIFICATE,
        "PEM file of the CA certificate(s) that sign the collector's certificate; replaces\n\
         the compiled-in Mozilla roots. Re-read when it changes.",
    ),
    (
        METRICS_CERTIFICATE,
        "Same; beats OTEL_EXPORTER_OTLP_CERTIFICATE.",
    ),
    (
        CLIENT_CERTIFICATE,
        "PEM file of the client certificate chain for mTLS (needs the client key too).\n\
         Re-read when it changes.",
    ),
    (
        METRICS_CLIENT_CERTIFICATE,
        "Same; beats OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.",
    ),
    (
        CLIENT_KEY,
        "PEM file of the client's private key (PKCS#8, PKCS#1 or SEC1) for mTLS.",
    ),
    (
        METRICS_CLIENT_KEY,
        "Same; beats OTEL_EXPORTER_OTLP_CLIENT_KEY.",
    ),
    (
        INSECURE,
        "true | false (default): for a gRPC endpoint without a scheme, plaintext (true) or\n\
         TLS (false). Endpoints with http:// or https:// say it themselves.",
    ),
    (METRICS_INSECURE, "Same; beats OTEL_EXPORTER_OTLP_INSECURE."),
    (
        SYSCOPE_LOG,
        "Log filter, RUST_LOG syntax (default info); beats RUST_LOG.",
    ),
    (RUST_LOG, "Log filter, used when SYSCOPE_LOG is unset."),
    (
        SYSCOPE_CONFIG,
        "Config file path, used when --config is not given.",
    ),
    (
        SELF_ATTRIBUTES,
        "The agent's own identity (e.g. its pod): key=value,key2=value2, percent-encoded,\n\
         set on its self-metrics (scope syscope.self) only, never on the resource, which\n\
         every workload's series share.",
    ),
    (
        SYSCOPE_PROBES,
        "Probe sets on for every process, comma separated: syscalls, tcp (default tcp;\n\
         syscalls on demand).",
    ),
    (
        HEALTH_ADDRESS,
        "Health endpoint IP:PORT (like --health-address), or off.",
    ),
    (
        SLO_FILE,
        "A TOML file of [[slo]] tables (like --slo-file), added to the config file's.",
    ),
    (
        STATE_DIR,
        "Directory where SLO history survives restarts (like --state-dir); unset: in memory.",
    ),
    (
        SYSCALL_WORKLOADS,
        "Workloads whose syscalls are measured on demand (like --syscall-workloads).",
    ),
    (
        SLO_DETAIL,
        "How long a burning SLO's workloads have their syscalls measured (like --slo-detail),\n\
         0 to 86400000 milliseconds; 0: never.",
    ),
];

/// A variable a user would expect to work that syscope cannot honour: set
/// to anything but `accepts` (case-insensitive; a comma list, item by item),
/// it is refused, naming it, rather than silently ignored.
pub(super) struct Refused {
    pub name: &'static str,
    /// Values that are what syscope does anyway; empty: none.
    pub accepts: &'static [&'static str],
    pub why: &'static str,
}

const fn refused(
    name: &'static str,
    accepts: &'static [&'static str],
    why: &'static str,
) -> Refused {
    Refused { name, accepts, why }
}

/// Checked before anything else. Trace and log variables (OTEL_TRACES_*,
/// OTEL_LOGS_*, OTEL_EXPORTER_OTLP_TRACES_* ...) do not apply to a metrics
/// agent and are ignored, so that a host-wide OTel environment works.
pub(super) const REFUSED: &[Refused] = &[
    refused(
        "OTEL_METRICS_EXEMPLAR_FILTER",
        &["always_off", "trace_based"],
        "syscope records no exemplars",
    ),
    refused(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        &["base2_exponential_bucket_histogram"],
        "syscope's histograms are base-2 exponential",
    ),
    refused(
        "OTEL_CONFIG_FILE",
        &[],
        "declarative OpenTelemetry configuration is not supported; use --config or SYSCOPE_CONFIG",
    ),
];

impl Refused {
    /// The `--help` text.
    pub fn doc(&self) -> String {
        let mut why = self.why.to_owned();
        if let Some(first) = why.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        match self.accepts {
            [] => format!("{why}. Refused when set."),
            accepts => format!(
                "{why}. Accepted: {}; anything else is refused.",
                accepts.join(" | ")
            ),
        }
    }
}

/// Refuses any [`REFUSED`] variable set to a value syscope cannot honour.
pub(super) fn refuse_unsupported(vars: &Vars<'_>) -> Result<(), ConfigError> {
    for r in REFUSED {
        let Some(v) = vars.get(r.name) else { continue };
        let accepted = |item: &str| {
            r.accepts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(item.trim()))
        };
        if r.accepts.is_empty() {
            return Err(invalid(r.name, format!("{}; unset it", r.why)));
        }
        if !v.split(',').all(accepted) {
            return Err(invalid(
                r.name,
                format!("{}; accepted: {}, got {v:?}", r.why, r.accepts.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Reads an [`Env`] the way the OTel spec asks: empty values count as unset.
pub(super) struct Vars<'a>(pub &'a dyn Env);

impl Vars<'_> {
    pub fn get(&self, key: &str) -> Option<String> {
        let v = self.0.get(key)?;
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_owned())
    }

    /// The first set variable of `keys` (signal-specific first), with its name.
    pub fn first(&self, keys: &[&'static str]) -> Option<(&'static str, String)> {
        keys.iter().find_map(|&k| self.get(k).map(|v| (k, v)))
    }
}

/// Parses `k=v,k2=v2` (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS):
/// entries trimmed, keys and values percent-decoded, empty entries skipped.
/// `secret` keeps entries out of error messages, since headers carry tokens.
pub(super) fn parse_kv_list(
    key: &str,
    raw: &str,
    secret: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in raw.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let what = if secret {
            format!("entry {}", i + 1)
        } else {
            format!("entry {entry:?}")
        };
        let Some((k, v)) = entry.split_once('=') else {
            return Err(invalid(
                key,
                format!("{what} is not key=value (expected key=value,key2=value2)"),
            ));
        };
        let k = percent_decode(k.trim()).map_err(|e| invalid(key, format!("{what}: {e}")))?;
        let v = percent_decode(v.trim()).map_err(|e| invalid(key, format!("{what}: {e}")))?;
        if k.is_empty() {
            return Err(invalid(key, format!("{what} has an empty key")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoding (expected %XX)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decoded text is not UTF-8".to_owned())
}

/// A header list variable: parsed, then checked.
pub(super) fn headers(key: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    check_headers(key, parse_kv_list(key, raw, true)?)
}

/// Checks headers for what both gRPC metadata and HTTP accept, so a bad one
/// fails at startup rather than on every export. Names are lowercased
/// because gRPC requires it and HTTP does not care.
pub(super) fn check_headers(
    key: &str,
    headers: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(is_tchar) {
                return Err(invalid(key, format!("invalid header name {name:?}")));
            }
            // Not echoed: header values are usually credentials.
            if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                return Err(invalid(
                    key,
                    format!("header {name}: value must be printable ASCII"),
                ));
            }
            Ok((name.to_ascii_lowercase(), value))
        })
        .collect()
}

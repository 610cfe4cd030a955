//! Every setting once: its flag, its variables, its file key and what it
//! accepts. `resolve` reads them through [`Setting::resolve`]; a test checks
//! that `--help` and docs/syscope.example.toml state each range.
//!
//! Why these bounds: durations stay far below what `Instant + d` can hold
//! (and below the exporter's own 24 h clamp), so no deadline can overflow;
//! counts bound what the agent allocates. Each bound is well past any
//! useful value:
//! - interval 100ms to 1h: below 100ms the agent's own work per interval
//!   shows; above an hour, backends treat the series as stale.
//! - export timeout 1ms to 10m, max_backoff 1ms to 1h: a collector that has
//!   not answered in ten minutes will not; an hour between retries is
//!   already longer than the default buffer (60 intervals) covers.
//! - shutdown_grace 0s to 10m: systemd's and Kubernetes' own stop timeouts
//!   are 90s and 30s by default.
//! - health.max_export_failure 1ms to 1day: the default, three intervals,
//!   is at most 3h.
//! - buffer_intervals 1 to 10000: a slot is 8 bytes preallocated, and each
//!   interval actually held while the collector is down costs one export
//!   request (about 2 KiB per series:
//!   1.1 MB measured for 600 series), so the cap bounds an outage's memory.
//! - table_rows 1 to 10000; max_series_per_metric 2 to 1000000 (memory
//!   grows with the series kept, about 2 KiB each
//!   in an export request); series_idle_intervals
//!   1 to 1000000 (only bounds the idle counters; memory is bounded by
//!   max_series_per_metric).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::layer::{Bounds, Setting};
use super::{env, Compression, ConfigError, Exporters, ProbeSets, Protocol, Temporality};

/// A setting that is one of a set of values, or has a syntax.
pub(super) type Parser<T> = fn(&str, &str) -> Result<T, ConfigError>;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) const ENDPOINT: Setting<Parser<String>> = Setting {
    flag: Some("--endpoint"),
    env: &[env::ENDPOINT],
    key: "export.endpoint",
    accepts: super::endpoint,
};

pub(super) const METRICS_ENDPOINT: Setting<Parser<String>> = Setting {
    flag: None,
    env: &[env::METRICS_ENDPOINT],
    key: "export.metrics_endpoint",
    accepts: super::endpoint,
};

pub(super) const PROTOCOL: Setting<Parser<Protocol>> = Setting {
    flag: Some("--protocol"),
    env: &[env::METRICS_PROTOCOL, env::PROTOCOL],
    key: "export.protocol",
    accepts: super::protocol,
};

pub(super) const COMPRESSION: Setting<Parser<Compression>> = Setting {
    flag: Some("--compression"),
    env: &[env::METRICS_COMPRESSION, env::COMPRESSION],
    key: "export.compression",
    accepts: super::compression,
};

/// TLS files are read and checked (PEM, what they hold, validity) when the
/// configuration is loaded, so a bad one exits 2 naming the variable and the
/// file; the exporter re-reads them when they change (rotation).
pub(super) const CERTIFICATE: Setting<Parser<PathBuf>> = Setting {
    flag: Some("--certificate"),
    env: &[env::METRICS_CERTIFICATE, env::CERTIFICATE],
    key: "export.certificate",
    accepts: super::ca_file,
};

pub(super) const CLIENT_CERTIFICATE: Setting<Parser<PathBuf>> = Setting {
    flag: Some("--client-certificate"),
    env: &[env::METRICS_CLIENT_CERTIFICATE, env::CLIENT_CERTIFICATE],
    key: "export.client_certificate",
    accepts: super::client_cert_file,
};

pub(super) const CLIENT_KEY: Setting<Parser<PathBuf>> = Setting {
    flag: Some("--client-key"),
    env: &[env::METRICS_CLIENT_KEY, env::CLIENT_KEY],
    key: "export.client_key",
    accepts: super::client_key_file,
};

/// Only for a gRPC endpoint without a scheme (OTLP spec).
pub(super) const INSECURE: Setting<Parser<bool>> = Setting {
    flag: Some("--insecure"),
    env: &[env::METRICS_INSECURE, env::INSECURE],
    key: "export.insecure",
    accepts: super::boolean,
};

/// The file's list is joined with commas, the form of the variable.
pub(super) const EXPORTERS: Setting<Parser<Exporters>> = Setting {
    flag: Some("--exporters"),
    env: &[env::METRICS_EXPORTER],
    key: "exporters",
    accepts: Exporters::parse,
};

pub(super) const PROMETHEUS_HOST: Setting<Parser<std::net::IpAddr>> = Setting {
    flag: Some("--prometheus-host"),
    env: &[env::PROMETHEUS_HOST],
    key: "prometheus.host",
    accepts: super::prometheus_host,
};

pub(super) const PROMETHEUS_PORT: Setting<Bounds<u64>> = Setting {
    flag: Some("--prometheus-port"),
    env: &[env::PROMETHEUS_PORT],
    key: "prometheus.port",
    accepts: Bounds { min: 1, max: 65535 },
};

/// The file's headers are a table, not text: `resolve_export` reads them.
pub(super) const HEADERS: Setting<Parser<Vec<(String, String)>>> = Setting {
    flag: None,
    env: &[env::METRICS_HEADERS, env::HEADERS],
    key: "export.headers",
    accepts: env::headers,
};

pub(super) const TIMEOUT: Setting<Bounds<Duration>> = Setting {
    flag: None,
    env: &[
        env::METRICS_TIMEOUT,
        env::TIMEOUT,
        env::METRIC_EXPORT_TIMEOUT,
    ],
    key: "export.timeout",
    accepts: Bounds {
        min: Duration::from_millis(1),
        max: secs(600),
    },
};

pub(super) const BUFFER_INTERVALS: Setting<Bounds<u64>> = Setting {
    flag: Some("--buffer-intervals"),
    env: &[],
    key: "export.buffer_intervals",
    accepts: Bounds {
        min: 1,
        max: 10_000,
    },
};

pub(super) const MAX_BACKOFF: Setting<Bounds<Duration>> = Setting {
    flag: None,
    env: &[],
    key: "export.max_backoff",
    accepts: Bounds {
        min: Duration::from_millis(1),
        max: secs(3600),
    },
};

pub(super) const INTERVAL: Setting<Bounds<Duration>> = Setting {
    flag: Some("--interval"),
    env: &[env::EXPORT_INTERVAL],
    key: "interval",
    accepts: Bounds {
        min: Duration::from_millis(100),
        max: secs(3600),
    },
};

pub(super) const TEMPORALITY: Setting<Parser<Temporality>> = Setting {
    flag: Some("--temporality"),
    env: &[env::TEMPORALITY],
    key: "temporality",
    accepts: super::temporality,
};

pub(super) const LOG: Setting<Parser<String>> = Setting {
    flag: Some("--log"),
    env: &[env::SYSCOPE_LOG, env::RUST_LOG],
    key: "log",
    accepts: super::log_filter,
};

pub(super) const SHUTDOWN_GRACE: Setting<Bounds<Duration>> = Setting {
    flag: None,
    env: &[],
    key: "shutdown_grace",
    accepts: Bounds {
        min: Duration::ZERO,
        max: secs(600),
    },
};

pub(super) const TABLE_ROWS: Setting<Bounds<u64>> = Setting {
    flag: Some("--table-rows"),
    env: &[],
    key: "table_rows",
    accepts: Bounds {
        min: 1,
        max: 10_000,
    },
};

/// The file's list is joined with commas, the form of the flag.
pub(super) const PROBES: Setting<Parser<ProbeSets>> = Setting {
    flag: Some("--probes"),
    env: &[env::SYSCOPE_PROBES],
    key: "probes",
    accepts: ProbeSets::parse,
};

pub(super) const SERVICE_NAME: Setting<Parser<String>> = Setting {
    flag: Some("--service-name"),
    env: &[env::SERVICE_NAME],
    key: "resource.service_name",
    accepts: super::service_name,
};

pub(super) const MAX_SERIES: Setting<Bounds<u64>> = Setting {
    flag: Some("--max-series"),
    env: &[],
    key: "limits.max_series_per_metric",
    accepts: Bounds {
        min: 2,
        max: 1_000_000,
    },
};

pub(super) const SERIES_IDLE_INTERVALS: Setting<Bounds<u64>> = Setting {
    flag: None,
    env: &[],
    key: "limits.series_idle_intervals",
    accepts: Bounds {
        min: 1,
        max: 1_000_000,
    },
};

pub(super) const HEALTH_ADDRESS: Setting<Parser<Option<SocketAddr>>> = Setting {
    flag: Some("--health-address"),
    env: &[env::HEALTH_ADDRESS],
    key: "health.address",
    accepts: super::health_address,
};

pub(super) const MAX_EXPORT_FAILURE: Setting<Bounds<Duration>> = Setting {
    flag: None,
    env: &[],
    key: "health.max_export_failure",
    accepts: Bounds {
        min: Duration::from_millis(1),
        max: secs(24 * 3600),
    },
};

/// Every setting, for the documentation test (kernel maps are checked
/// against their own catalogue in docs/metrics.md).
#[cfg(test)]
pub(super) fn all() -> Vec<&'static dyn super::layer::Documented> {
    vec![
        &ENDPOINT,
        &METRICS_ENDPOINT,
        &PROTOCOL,
        &COMPRESSION,
        &HEADERS,
        &CERTIFICATE,
        &CLIENT_CERTIFICATE,
        &CLIENT_KEY,
        &INSECURE,
        &EXPORTERS,
        &PROMETHEUS_HOST,
        &PROMETHEUS_PORT,
        &TIMEOUT,
        &BUFFER_INTERVALS,
        &MAX_BACKOFF,
        &INTERVAL,
        &TEMPORALITY,
        &LOG,
        &SHUTDOWN_GRACE,
        &TABLE_ROWS,
        &PROBES,
        &super::ondemand::SYSCALL_WORKLOADS,
        &super::ondemand::SLO_DETAIL,
        &SERVICE_NAME,
        &MAX_SERIES,
        &SERIES_IDLE_INTERVALS,
        &HEALTH_ADDRESS,
        &MAX_EXPORT_FAILURE,
        &super::identity::FILTER,
        &super::identity::SORT,
        &super::identity::NOT_FAILURES,
        &super::identity::POD_LOGS,
        &super::identity::CONTAINER_LOGS,
        &super::identity::PODMAN_STORAGE,
        &super::identity::DOCKER_ROOT,
        &super::identity::MAX_CGROUPS,
        &super::identity::RETENTION,
        &super::identity::SELF_ATTRIBUTES,
    ]
}

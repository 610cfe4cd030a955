//! Configuration: defaults < TOML file < OTEL_* environment < CLI flags.
//!
//! Each setting is looked up flag first, then environment, then file, and
//! only the winning value is parsed and range-checked, so every error names
//! the key the user wrote (`--protocol`, `OTEL_EXPORTER_OTLP_PROTOCOL` or
//! `export.protocol`).

mod cli;
mod env;
mod file;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use syscope_common::maps;

use crate::export::{Compression, Protocol};

pub use cli::Cli;
pub use env::{Env, ProcessEnv};
pub use file::EXAMPLE_TOML;

use env::Vars;
use file::{FileConfig, FileExport};

/// Exit status for a configuration error (clap uses 2 for bad usage too).
pub const EXIT_CODE_INVALID_CONFIG: i32 = 2;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Without a collector the interval is the table's refresh rate.
const DEFAULT_TABLE_INTERVAL: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BUFFER_INTERVALS: usize = 60;
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_LOG: &str = "info";
const DEFAULT_TABLE_ROWS: usize = 20;
const DEFAULT_SERVICE_NAME: &str = "syscope";
const SERVICE_NAME_ATTR: &str = "service.name";

/// Aggregation temporality (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
}

impl fmt::Display for Temporality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Temporality::Cumulative => "cumulative",
            Temporality::Delta => "delta",
        })
    }
}

/// Why the configuration was rejected; the text always starts with
/// "invalid configuration:" and names the flag, variable, key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("invalid configuration: cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, or an unknown key (with its line).
    #[error("invalid configuration: {}: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// None: no endpoint anywhere (or OTEL_SDK_DISABLED=true); show the live table.
    pub export: Option<ExportConfig>,
    /// Export interval, or table refresh interval without export.
    pub interval: Duration,
    pub temporality: Temporality,
    pub resource: ResourceConfig,
    pub limits: LimitsConfig,
    pub health: HealthConfig,
    pub shutdown_grace: Duration,
    /// tracing-subscriber `EnvFilter` directives, already checked to parse.
    pub log: String,
    pub table_rows: usize,
    /// Probe sets to attach.
    pub probes: ProbeSets,
    /// Non-fatal findings, for main to log once tracing is set up (load()
    /// runs before the subscriber exists, so it cannot log them itself).
    pub warnings: Vec<String>,
}

/// Where and how to send metrics.
#[derive(Clone, PartialEq)]
pub struct ExportConfig {
    /// Base URL, e.g. `http://collector:4317`. When only a metrics endpoint
    /// was given, this holds that URL too.
    pub endpoint: String,
    /// Signal-specific URL (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT), used as-is.
    pub metrics_endpoint: Option<String>,
    pub protocol: Protocol,
    /// Names lowercased; values printable ASCII.
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    /// Unsent intervals kept while the collector is down (>= 1).
    pub buffer_intervals: usize,
    pub max_backoff: Duration,
}

impl ExportConfig {
    /// Defaults for everything but the endpoint (handy in tests).
    pub fn new(endpoint: impl Into<String>) -> Self {
        ExportConfig {
            endpoint: endpoint.into(),
            metrics_endpoint: None,
            protocol: Protocol::default(),
            headers: Vec::new(),
            compression: Compression::default(),
            timeout: DEFAULT_TIMEOUT,
            buffer_intervals: DEFAULT_BUFFER_INTERVALS,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// URL to POST to with http/protobuf: the metrics endpoint as-is, else
    /// `<endpoint>/v1/metrics` as the OTLP spec builds it.
    pub fn http_url(&self) -> String {
        crate::export::http_url(&self.endpoint, self.metrics_endpoint.as_deref())
    }

    /// gRPC target: per the OTLP spec the metrics endpoint wins here too.
    pub fn grpc_endpoint(&self) -> &str {
        crate::export::grpc_endpoint(&self.endpoint, self.metrics_endpoint.as_deref())
    }
}

// Hand-written so header values (usually credentials) never reach a log.
impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ExportConfig")
            .field("endpoint", &self.endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("buffer_intervals", &self.buffer_intervals)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConfig {
    pub service_name: String,
    /// Never contains `service.name` (that is `service_name`).
    pub attributes: Vec<(String, String)>,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            attributes: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Series kept per metric (>= 2).
    pub max_series_per_metric: usize,
    /// Series not updated for this many intervals are dropped.
    pub series_idle_intervals: u32,
    /// Entries of each kernel map, indexed by `maps::MAPS` id
    /// (`[limits.kernel_maps] <label> = N`).
    pub kernel_maps: [u32; maps::COUNT],
}

/// Which sets of kernel programs to attach (`probes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSets {
    pub syscalls: bool,
    pub tcp: bool,
}

impl Default for ProbeSets {
    fn default() -> Self {
        ProbeSets {
            syscalls: true,
            tcp: true,
        }
    }
}

impl ProbeSets {
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![];
        if self.syscalls {
            v.push("syscalls".to_owned());
        }
        if self.tcp {
            v.push("tcp".to_owned());
        }
        v
    }

    fn parse<'a>(key: &str, items: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        let mut p = ProbeSets {
            syscalls: false,
            tcp: false,
        };
        for item in items {
            match item.trim() {
                "syscalls" => p.syscalls = true,
                "tcp" => p.tcp = true,
                "" => {}
                other => {
                    return Err(invalid(
                        key,
                        format!("unknown probe set `{other}` (expected syscalls, tcp)"),
                    ))
                }
            }
        }
        if !p.syscalls && !p.tcp {
            return Err(invalid(
                key,
                "at least one probe set is needed (syscalls, tcp)",
            ));
        }
        Ok(p)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_series_per_metric: 2000,
            series_idle_intervals: 10,
            kernel_maps: maps::MAPS.map(|m| m.default_entries),
        }
    }
}

/// The health endpoint (`[health]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Where /healthz and /readyz are served; `None` (the default): nowhere.
    pub address: Option<SocketAddr>,
    /// Exports may fail (and retry) this long before /readyz says not ready.
    pub max_export_failure: Duration,
}

/// Exports failing for this many intervals make the agent not ready, unless
/// `health.max_export_failure` says otherwise (the exporter's own rule).
const DEFAULT_MAX_EXPORT_FAILURE_INTERVALS: u32 = 3;

impl HealthConfig {
    fn default_for(interval: Duration) -> Self {
        HealthConfig {
            address: None,
            max_export_failure: interval.saturating_mul(DEFAULT_MAX_EXPORT_FAILURE_INTERVALS),
        }
    }
}

impl Default for Config {
    /// What `load` gives with no flags, environment or file: the live table.
    fn default() -> Self {
        Config {
            export: None,
            interval: DEFAULT_TABLE_INTERVAL,
            temporality: Temporality::default(),
            resource: ResourceConfig::default(),
            limits: LimitsConfig::default(),
            health: HealthConfig::default_for(DEFAULT_TABLE_INTERVAL),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log: DEFAULT_LOG.to_owned(),
            table_rows: DEFAULT_TABLE_ROWS,
            probes: ProbeSets::default(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// The resolved configuration in the config file format (what
    /// `--print-config` prints); feeding it back with `--config` gives the
    /// same configuration, except that header values are redacted.
    pub fn to_toml(&self) -> String {
        let fmt_d = |d: Duration| humantime::format_duration(d).to_string();
        let file = FileConfig {
            interval: Some(fmt_d(self.interval)),
            temporality: Some(self.temporality.to_string()),
            log: Some(self.log.clone()),
            shutdown_grace: Some(fmt_d(self.shutdown_grace)),
            table_rows: Some(self.table_rows),
            probes: Some(self.probes.names()),
            export: self.export.as_ref().map(|e| FileExport {
                endpoint: Some(e.endpoint.clone()),
                metrics_endpoint: e.metrics_endpoint.clone(),
                protocol: Some(e.protocol.to_string()),
                headers: (!e.headers.is_empty()).then(|| {
                    e.headers
                        .iter()
                        .map(|(k, _)| (k.clone(), "<redacted>".to_owned()))
                        .collect()
                }),
                compression: Some(e.compression.to_string()),
                timeout: Some(fmt_d(e.timeout)),
                buffer_intervals: Some(e.buffer_intervals),
                max_backoff: Some(fmt_d(e.max_backoff)),
            }),
            resource: file::FileResource {
                service_name: Some(self.resource.service_name.clone()),
                attributes: self.resource.attributes.iter().cloned().collect(),
            },
            limits: file::FileLimits {
                max_series_per_metric: Some(self.limits.max_series_per_metric),
                series_idle_intervals: Some(self.limits.series_idle_intervals),
                kernel_maps: maps::MAPS
                    .iter()
                    .map(|m| (m.label.to_owned(), self.limits.kernel_maps[m.id].into()))
                    .collect(),
            },
            health: file::FileHealth {
                address: Some(
                    self.health
                        .address
                        .map_or_else(|| "off".to_owned(), |a| a.to_string()),
                ),
                max_export_failure: Some(fmt_d(self.health.max_export_failure)),
            },
        };
        let header = if self.export.is_none() {
            "# export disabled (no endpoint, or OTEL_SDK_DISABLED=true): live table\n"
        } else {
            ""
        };
        // Only strings, integers and string maps: serialization cannot fail.
        let body = toml::to_string(&file).expect("config serializes to TOML");
        format!("{header}{body}")
    }
}

impl Config {
    /// What the exporter needs, or None in table mode.
    pub fn export_settings(&self) -> Option<crate::export::Settings> {
        let e = self.export.as_ref()?;
        Some(crate::export::Settings {
            endpoint: e.endpoint.clone(),
            metrics_endpoint: e.metrics_endpoint.clone(),
            protocol: e.protocol,
            headers: e.headers.clone(),
            compression: e.compression,
            timeout: e.timeout,
            buffer_intervals: e.buffer_intervals,
            max_backoff: e.max_backoff,
            interval: self.interval,
            max_failure: Some(self.health.max_export_failure),
            // Not user-facing: the exporter's default first retry delay.
            ..Default::default()
        })
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

/// Resolves the configuration: flag > environment > file (`--config`, or
/// `SYSCOPE_CONFIG`) > default.
pub fn load(cli: &Cli, env: &dyn Env) -> Result<Config, ConfigError> {
    let vars = Vars(env);
    let path = cli
        .config
        .clone()
        .or_else(|| vars.get(env::SYSCOPE_CONFIG).map(PathBuf::from));
    let file = match &path {
        Some(path) => file::read(path)?,
        None => FileConfig::default(),
    };
    resolve(cli, &vars, file)
}

/// [`load`] with the file's text given (tests).
#[cfg(test)]
fn load_str(cli: &Cli, env: &dyn Env, toml: &str) -> Result<Config, ConfigError> {
    let file = file::parse(toml, std::path::Path::new("test.toml"))?;
    resolve(cli, &Vars(env), file)
}

fn resolve(cli: &Cli, vars: &Vars<'_>, file: FileConfig) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let export = resolve_export(cli, vars, file.export.unwrap_or_default(), &mut warnings)?;

    let interval = cli
        .interval
        .as_deref()
        .map(|v| duration("--interval", v, MIN_INTERVAL))
        .or_else(|| {
            let v = vars.get(env::EXPORT_INTERVAL)?;
            Some(millis(env::EXPORT_INTERVAL, &v, MIN_INTERVAL))
        })
        .or_else(|| {
            let v = file.interval.as_deref()?;
            Some(duration("interval", v, MIN_INTERVAL))
        })
        .transpose()?
        .unwrap_or(if export.is_some() {
            DEFAULT_INTERVAL
        } else {
            DEFAULT_TABLE_INTERVAL
        });

    let temporality = cli
        .temporality
        .as_deref()
        .map(|v| temporality("--temporality", v))
        .or_else(|| Some(temporality(env::TEMPORALITY, &vars.get(env::TEMPORALITY)?)))
        .or_else(|| Some(temporality("temporality", file.temporality.as_deref()?)))
        .transpose()?
        .unwrap_or_default();

    let log = cli
        .log
        .as_deref()
        .map(|v| log_filter("--log", v))
        .or_else(|| {
            let (key, v) = vars.first(&[env::SYSCOPE_LOG, env::RUST_LOG])?;
            Some(log_filter(key, &v))
        })
        .or_else(|| Some(log_filter("log", file.log.as_deref()?)))
        .transpose()?
        .unwrap_or_else(|| DEFAULT_LOG.to_owned());

    let shutdown_grace = file
        .shutdown_grace
        .as_deref()
        .map(|v| duration("shutdown_grace", v, Duration::ZERO))
        .transpose()?
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);

    let table_rows = cli
        .table_rows
        .as_deref()
        .map(|v| count("--table-rows", v, 1))
        .or_else(|| Some(at_least("table_rows", file.table_rows?, 1)))
        .transpose()?
        .unwrap_or(DEFAULT_TABLE_ROWS);

    let fl = file.limits;
    let defaults = LimitsConfig::default();
    let limits = LimitsConfig {
        max_series_per_metric: cli
            .max_series
            .as_deref()
            .map(|v| count("--max-series", v, 2))
            .or_else(|| {
                let n = fl.max_series_per_metric?;
                Some(at_least("limits.max_series_per_metric", n, 2))
            })
            .transpose()?
            .unwrap_or(defaults.max_series_per_metric),
        series_idle_intervals: file_count(
            "limits.series_idle_intervals",
            fl.series_idle_intervals,
            1,
        )?
        .unwrap_or(defaults.series_idle_intervals),
        kernel_maps: kernel_map_sizes(&fl.kernel_maps)?,
    };

    let probes = if let Some(v) = &cli.probes {
        ProbeSets::parse("--probes", v.split(','))?
    } else if let Some(v) = vars.get(env::SYSCOPE_PROBES) {
        ProbeSets::parse(env::SYSCOPE_PROBES, v.split(','))?
    } else if let Some(v) = &file.probes {
        ProbeSets::parse("probes", v.iter().map(String::as_str))?
    } else {
        ProbeSets::default()
    };

    let resource = resolve_resource(cli, vars, file.resource)?;
    let health = resolve_health(cli, vars, file.health, interval)?;

    Ok(Config {
        export,
        interval,
        temporality,
        resource,
        limits,
        health,
        shutdown_grace,
        log,
        table_rows,
        probes,
        warnings,
    })
}

/// Every export setting is validated even when nothing will be exported,
/// so a typo is caught the first time, not when an endpoint is added.
fn resolve_export(
    cli: &Cli,
    vars: &Vars<'_>,
    fe: FileExport,
    warnings: &mut Vec<String>,
) -> Result<Option<ExportConfig>, ConfigError> {
    // The highest layer naming any endpoint supplies both URLs, so that a
    // lower layer's metrics URL cannot shadow `--endpoint`.
    type Url = Option<(&'static str, String)>;
    let layer: Option<(Url, Url)> = if let Some(v) = &cli.endpoint {
        Some((Some(("--endpoint", v.clone())), None))
    } else {
        let base = vars.get(env::ENDPOINT).map(|v| (env::ENDPOINT, v));
        let metrics = vars
            .get(env::METRICS_ENDPOINT)
            .map(|v| (env::METRICS_ENDPOINT, v));
        if base.is_some() || metrics.is_some() {
            Some((base, metrics))
        } else if fe.endpoint.is_some() || fe.metrics_endpoint.is_some() {
            Some((
                fe.endpoint.map(|v| ("export.endpoint", v)),
                fe.metrics_endpoint.map(|v| ("export.metrics_endpoint", v)),
            ))
        } else {
            None
        }
    };
    let check = |url: Url| url.map(|(key, v)| endpoint(key, &v)).transpose();
    let urls = match layer {
        Some((base, metrics)) => Some((check(base)?, check(metrics)?)),
        None => None,
    };

    let protocol = cli
        .protocol
        .as_deref()
        .map(|v| protocol("--protocol", v))
        .or_else(|| {
            let (key, v) = vars.first(&[env::METRICS_PROTOCOL, env::PROTOCOL])?;
            Some(protocol(key, &v))
        })
        .or_else(|| Some(protocol("export.protocol", fe.protocol.as_deref()?)))
        .transpose()?
        .unwrap_or_default();

    let compression = cli
        .compression
        .as_deref()
        .map(|v| compression("--compression", v))
        .or_else(|| {
            let (key, v) = vars.first(&[env::METRICS_COMPRESSION, env::COMPRESSION])?;
            Some(compression(key, &v))
        })
        .or_else(|| {
            Some(compression(
                "export.compression",
                fe.compression.as_deref()?,
            ))
        })
        .transpose()?
        .unwrap_or_default();

    // A higher layer's header list replaces a lower one whole, as the
    // signal-specific variable does the generic one in the spec.
    let headers = match vars.first(&[env::METRICS_HEADERS, env::HEADERS]) {
        Some((key, v)) => env::check_headers(key, env::parse_kv_list(key, &v, true)?)?,
        None => env::check_headers(
            "export.headers",
            fe.headers.unwrap_or_default().into_iter().collect(),
        )?,
    };

    let timeout = vars
        .first(&[env::METRICS_TIMEOUT, env::TIMEOUT])
        .map(|(key, v)| millis(key, &v, Duration::from_millis(1)))
        .or_else(|| {
            let v = fe.timeout.as_deref()?;
            Some(duration("export.timeout", v, Duration::from_millis(1)))
        })
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT);

    let buffer_intervals = cli
        .buffer_intervals
        .as_deref()
        .map(|v| count("--buffer-intervals", v, 1))
        .or_else(|| Some(at_least("export.buffer_intervals", fe.buffer_intervals?, 1)))
        .transpose()?
        .unwrap_or(DEFAULT_BUFFER_INTERVALS);

    let max_backoff = fe
        .max_backoff
        .as_deref()
        .map(|v| duration("export.max_backoff", v, Duration::from_millis(1)))
        .transpose()?
        .unwrap_or(DEFAULT_MAX_BACKOFF);

    if let Some(v) = vars.get(env::SDK_DISABLED) {
        if v.eq_ignore_ascii_case("true") {
            if urls.is_some() {
                warnings.push(format!(
                    "{}=true: not exporting although an endpoint is configured",
                    env::SDK_DISABLED
                ));
            }
            return Ok(None);
        }
        if !v.eq_ignore_ascii_case("false") {
            warnings.push(format!(
                "{}: expected true or false, got {v:?}; treating it as false",
                env::SDK_DISABLED
            ));
        }
    }

    Ok(urls.map(|(base, metrics)| ExportConfig {
        // Only a metrics URL given: it is the base too (see the field doc).
        endpoint: base.or_else(|| metrics.clone()).unwrap_or_default(),
        metrics_endpoint: metrics,
        protocol,
        headers,
        compression,
        timeout,
        buffer_intervals,
        max_backoff,
    }))
}

fn resolve_resource(
    cli: &Cli,
    vars: &Vars<'_>,
    fr: file::FileResource,
) -> Result<ResourceConfig, ConfigError> {
    let env_attrs = match vars.get(env::RESOURCE_ATTRIBUTES) {
        Some(v) => env::parse_kv_list(env::RESOURCE_ATTRIBUTES, &v, false)?,
        None => Vec::new(),
    };
    let attr_service = |attrs: &[(String, String)]| {
        attrs
            .iter()
            .rev()
            .find(|(k, _)| k == SERVICE_NAME_ATTR)
            .map(|(_, v)| v.clone())
    };
    let file_attrs: Vec<(String, String)> = fr.attributes.into_iter().collect();

    let (key, service_name) = [
        ("--service-name", cli.service_name.clone()),
        (env::SERVICE_NAME, vars.get(env::SERVICE_NAME)),
        (env::RESOURCE_ATTRIBUTES, attr_service(&env_attrs)),
        ("resource.service_name", fr.service_name),
        ("resource.attributes", attr_service(&file_attrs)),
    ]
    .into_iter()
    .find_map(|(key, v)| v.map(|v| (key, v)))
    .unwrap_or(("", DEFAULT_SERVICE_NAME.to_owned()));
    if service_name.trim().is_empty() {
        return Err(invalid(key, "service name must not be empty"));
    }

    // Resource detectors merge, so environment attributes override the
    // file's key by key rather than replacing the whole set.
    let mut attributes: Vec<(String, String)> = Vec::new();
    for (k, v) in file_attrs.into_iter().chain(env_attrs) {
        if k.is_empty() {
            return Err(invalid(
                "resource.attributes",
                "attribute names must not be empty",
            ));
        }
        if k == SERVICE_NAME_ATTR {
            continue;
        }
        match attributes.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => attributes.push((k, v)),
        }
    }
    Ok(ResourceConfig {
        service_name,
        attributes,
    })
}

fn resolve_health(
    cli: &Cli,
    vars: &Vars<'_>,
    fh: file::FileHealth,
    interval: Duration,
) -> Result<HealthConfig, ConfigError> {
    let default = HealthConfig::default_for(interval);
    let address = cli
        .health_address
        .as_deref()
        .map(|v| health_address("--health-address", v))
        .or_else(|| {
            let v = vars.get(env::HEALTH_ADDRESS)?;
            Some(health_address(env::HEALTH_ADDRESS, &v))
        })
        .or_else(|| Some(health_address("health.address", fh.address.as_deref()?)))
        .transpose()?
        .flatten();
    let max_export_failure = fh
        .max_export_failure
        .as_deref()
        .map(|v| duration("health.max_export_failure", v, Duration::from_millis(1)))
        .transpose()?
        .unwrap_or(default.max_export_failure);
    Ok(HealthConfig {
        address,
        max_export_failure,
    })
}

/// `IP:PORT`, or `off`. No host names: resolving one at startup would make
/// the listening address depend on DNS.
fn health_address(key: &str, raw: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let v = raw.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        invalid(
            key,
            format!("expected IP:PORT (e.g. 127.0.0.1:9479, 0.0.0.0:9479, [::]:9479) or off, got {raw:?}"),
        )
    })
}

fn protocol(key: &str, raw: &str) -> Result<Protocol, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Err(invalid(
            key,
            "http/json is not supported, use grpc or http/protobuf",
        )),
        _ => Err(invalid(
            key,
            format!("expected one of grpc, http/protobuf, got {raw:?}"),
        )),
    }
}

fn compression(key: &str, raw: &str) -> Result<Compression, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        _ => Err(invalid(
            key,
            format!("expected one of gzip, none, got {raw:?}"),
        )),
    }
}

fn temporality(key: &str, raw: &str) -> Result<Temporality, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "cumulative" => Ok(Temporality::Cumulative),
        // The spec's lowmemory is delta for counters and histograms, which
        // is all syscope exports.
        "delta" | "lowmemory" => Ok(Temporality::Delta),
        _ => Err(invalid(
            key,
            format!("expected one of cumulative, delta, lowmemory, got {raw:?}"),
        )),
    }
}

fn endpoint(key: &str, raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim();
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        // Said here, with the key, rather than by the exporter at startup.
        return Err(invalid(
            key,
            format!(
                "https (TLS) is not supported by this build, got {raw:?}; \
                 export over http:// to a local OpenTelemetry Collector that forwards with TLS"
            ),
        ));
    }
    let rest = lower.strip_prefix("http://");
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            // Schemes are case-insensitive; the transports expect lowercase.
            Ok(format!("http://{}", &url["http://".len()..]))
        }
        _ => Err(invalid(
            key,
            format!("expected an http:// URL with a host, got {raw:?}"),
        )),
    }
}

fn log_filter(key: &str, raw: &str) -> Result<String, ConfigError> {
    let filter = raw.trim();
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map_err(|e| invalid(key, format!("invalid log filter {raw:?}: {e}")))?;
    Ok(filter.to_owned())
}

fn duration(key: &str, raw: &str, min: Duration) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        invalid(
            key,
            format!("expected a duration like \"10s\" or \"500ms\", got {raw:?} ({e})"),
        )
    })?;
    min_duration(key, d, min)
}

/// OTel environment variables give durations as integer milliseconds.
fn millis(key: &str, raw: &str, min: Duration) -> Result<Duration, ConfigError> {
    let ms: u64 = raw.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("expected a whole number of milliseconds, got {raw:?}"),
        )
    })?;
    min_duration(key, Duration::from_millis(ms), min)
}

fn min_duration(key: &str, d: Duration, min: Duration) -> Result<Duration, ConfigError> {
    if d < min {
        return Err(invalid(
            key,
            format!(
                "must be at least {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(d)
}

fn count<T>(key: &str, raw: &str, min: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let n = raw
        .trim()
        .parse()
        .map_err(|_| invalid(key, format!("expected a whole number, got {raw:?}")))?;
    at_least(key, n, min)
}

fn at_least<T: PartialOrd + fmt::Display>(key: &str, n: T, min: T) -> Result<T, ConfigError> {
    if n < min {
        return Err(invalid(key, format!("must be at least {min}, got {n}")));
    }
    Ok(n)
}

/// `[limits.kernel_maps]`: entries per map label, each within the map's range.
fn kernel_map_sizes(
    given: &std::collections::BTreeMap<String, u64>,
) -> Result<[u32; maps::COUNT], ConfigError> {
    let mut sizes = LimitsConfig::default().kernel_maps;
    for (label, &n) in given {
        let key = format!("limits.kernel_maps.{label}");
        let Some(m) = maps::by_label(label) else {
            let known: Vec<_> = maps::MAPS.iter().map(|m| m.label).collect();
            return Err(invalid(
                &key,
                format!("unknown kernel map (known: {})", known.join(", ")),
            ));
        };
        if n < 1 || n > m.max_entries.into() {
            return Err(invalid(
                &key,
                format!("must be between 1 and {}, got {n}", m.max_entries),
            ));
        }
        sizes[m.id] = n as u32;
    }
    Ok(sizes)
}

fn file_count(key: &str, n: Option<u32>, min: u32) -> Result<Option<u32>, ConfigError> {
    n.map(|n| at_least(key, n, min)).transpose()
}

//! Configuration: defaults < TOML file < OTEL_* environment < CLI flags.
//!
//! Each setting (settings.rs: its flag, variables, key and range) is looked
//! up flag first, then environment, then file, by the one helper in
//! layer.rs, and only the winning value is parsed and range-checked, so
//! every error names the key the user wrote (`--protocol`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` or `export.protocol`). All of it happens
//! before anything is loaded.

mod cli;
mod env;
mod file;
mod identity;
mod layer;
pub mod ondemand;
mod settings;
mod slo;
#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use syscope_common::maps;

use crate::export::{Compression, Protocol, TlsFiles};

pub use cli::{Cli, Command, SloCommand};
pub use env::{Env, ProcessEnv};
pub use file::EXAMPLE_TOML;
pub use identity::IdentityConfig;

use env::Vars;
use file::{FileConfig, FileExport};
use layer::{Bounds, Given, Layer};

/// Exit status for a configuration error (clap uses 2 for bad usage too).
pub const EXIT_CODE_INVALID_CONFIG: i32 = 2;

// Ranges are in settings.rs, with the flag, variables and key of each.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Without a collector the interval is the table's refresh rate.
const DEFAULT_TABLE_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_LOG: &str = "info";
const DEFAULT_TABLE_ROWS: usize = 20;
const DEFAULT_SERVICE_NAME: &str = "syscope";
const SERVICE_NAME_ATTR: &str = "service.name";
const ATTRIBUTES_KEY: &str = "resource.attributes";

/// The spec's default Prometheus port (`OTEL_EXPORTER_PROMETHEUS_PORT`).
const DEFAULT_PROMETHEUS_PORT: u16 = 9464;

/// Which exporters run (`OTEL_METRICS_EXPORTER`, `--exporters`, `exporters`).
/// Neither: `none`, the agent collects and serves health only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exporters {
    pub otlp: bool,
    pub prometheus: bool,
}

impl Exporters {
    const NONE: Exporters = Exporters {
        otlp: false,
        prometheus: false,
    };
    const OTLP: Exporters = Exporters {
        otlp: true,
        prometheus: false,
    };

    /// `otlp`, `prometheus`, both comma-separated, or `none` alone. Other
    /// exporters the spec knows (`console`, `logging`) are refused by name.
    fn parse(key: &str, list: &str) -> Result<Self, ConfigError> {
        let mut e = Exporters::NONE;
        let mut none = false;
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        for item in &items {
            match item.to_ascii_lowercase().as_str() {
                "otlp" => e.otlp = true,
                "prometheus" => e.prometheus = true,
                "none" => none = true,
                _ => {
                    return Err(invalid(
                        key,
                        format!("unknown or unsupported exporter {item:?} (expected otlp, prometheus, otlp,prometheus or none)"),
                    ))
                }
            }
        }
        if none && items.len() > 1 {
            return Err(invalid(
                key,
                format!("none cannot be combined with other exporters, got {list:?}"),
            ));
        }
        if items.is_empty() {
            return Err(invalid(
                key,
                "expected otlp, prometheus, otlp,prometheus or none",
            ));
        }
        Ok(e)
    }
}

impl fmt::Display for Exporters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.otlp, self.prometheus) {
            (true, true) => "otlp,prometheus",
            (true, false) => "otlp",
            (false, true) => "prometheus",
            (false, false) => "none",
        })
    }
}

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
    /// OTLP export; None when the exporters leave it out, or when nothing
    /// asked for it (no exporters and no endpoint anywhere).
    pub export: Option<ExportConfig>,
    /// The Prometheus pull endpoint, when the exporters name it.
    pub prometheus: Option<PrometheusConfig>,
    /// Show the live table: no exporter chosen and no endpoint anywhere.
    pub show_table: bool,
    /// Export interval, or table refresh interval without export.
    pub interval: Duration,
    pub temporality: Temporality,
    pub resource: ResourceConfig,
    pub limits: LimitsConfig,
    pub health: HealthConfig,
    pub shutdown_grace: Duration,
    /// tracing-subscriber `EnvFilter` directives, already checked to parse.
    pub log: String,
    /// The live table's rows, filter, order and error ratio.
    pub table: crate::table::View,
    /// Where cgroup identity comes from, and how much is kept.
    pub identity: IdentityConfig,
    /// Probe sets to attach.
    pub probes: ProbeSets,
    /// Syscall SLIs on demand, when `probes` leaves the syscall set off.
    pub on_demand: ondemand::OnDemandConfig,
    /// Service level objectives, checked.
    pub slos: Vec<crate::slo::Slo>,
    /// Where SLO history is kept across restarts; None: memory only.
    pub state_dir: Option<PathBuf>,
    /// Non-fatal findings, for main to log once tracing is set up (load()
    /// runs before the subscriber exists, so it cannot log them itself).
    pub warnings: Vec<String>,
}

/// The exporter's settings, as config builds them (one definition: the
/// export module owns its settings; config fills every field, including the
/// interval, health and temporality it resolves).
pub type ExportConfig = crate::export::Settings;

/// Where the Prometheus endpoint listens (the module owns its settings).
pub type PrometheusConfig = crate::prometheus::Settings;

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

/// By default the syscall set is not on for every process: tracing every
/// syscall of a busy server costs a share of its throughput that no
/// operator would accept by default (`cargo xtask bench`). Syscall SLIs
/// come on demand instead (`ondemand`).
impl Default for ProbeSets {
    fn default() -> Self {
        ProbeSets {
            syscalls: false,
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

    /// A comma-separated list (the file's list arrives joined).
    fn parse(key: &str, list: &str) -> Result<Self, ConfigError> {
        let mut p = ProbeSets {
            syscalls: false,
            tcp: false,
        };
        for item in list.split(',') {
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
            prometheus: None,
            show_table: true,
            interval: DEFAULT_TABLE_INTERVAL,
            temporality: Temporality::default(),
            resource: ResourceConfig::default(),
            limits: LimitsConfig::default(),
            health: HealthConfig::default_for(DEFAULT_TABLE_INTERVAL),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log: DEFAULT_LOG.to_owned(),
            table: crate::table::View {
                rows: DEFAULT_TABLE_ROWS,
                ..Default::default()
            },
            identity: IdentityConfig::default(),
            probes: ProbeSets::default(),
            on_demand: ondemand::OnDemandConfig::default(),
            slos: Vec::new(),
            state_dir: None,
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
            table_rows: Some(self.table.rows as u64),
            table_filter: (!self.table.filter.is_empty()).then(|| {
                let kv: Vec<String> = self
                    .table
                    .filter
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                kv.join(",")
            }),
            table_sort: crate::table::SortBy::NAMES
                .iter()
                .find(|(_, s)| *s == self.table.sort)
                .map(|(n, _)| n.to_string()),
            not_failures: Some(self.table.not_failures.clone()),
            identity: identity::FileIdentity::of(&self.identity),
            // The SLOs of a --slo-file are printed inline: the output is
            // one self-contained file.
            slo_file: None,
            state_dir: self.state_dir.as_ref().map(|p| p.display().to_string()),
            slo: self.slos.iter().map(crate::slo::Slo::to_file).collect(),
            probes: Some(self.probes.names()),
            syscall_workloads: Some(
                self.on_demand
                    .workloads
                    .iter()
                    .map(|(a, v)| format!("{}={v}", a.key()))
                    .collect(),
            ),
            slo_detail: Some(fmt_d(self.on_demand.slo_detail)),
            exporters: (!self.show_table).then(|| {
                let e = Exporters {
                    otlp: self.export.is_some(),
                    prometheus: self.prometheus.is_some(),
                };
                e.to_string().split(',').map(str::to_owned).collect()
            }),
            prometheus: file::FilePrometheus {
                host: self.prometheus.map(|p| p.address.ip().to_string()),
                port: self.prometheus.map(|p| p.address.port().into()),
            },
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
                buffer_intervals: Some(e.buffer_intervals as u64),
                max_backoff: Some(fmt_d(e.max_backoff)),
                certificate: e.tls.ca.as_ref().map(|p| p.display().to_string()),
                client_certificate: e.tls.client_cert.as_ref().map(|p| p.display().to_string()),
                client_key: e.tls.client_key.as_ref().map(|p| p.display().to_string()),
                // Every endpoint printed has its scheme.
                insecure: None,
            }),
            resource: file::FileResource {
                service_name: Some(self.resource.service_name.clone()),
                attributes: self.resource.attributes.iter().cloned().collect(),
                self_attributes: (!self.identity.own.is_empty()).then(|| {
                    let kv: Vec<String> = self
                        .identity
                        .own
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    kv.join(",")
                }),
            },
            limits: file::FileLimits {
                max_series_per_metric: Some(self.limits.max_series_per_metric as u64),
                series_idle_intervals: Some(self.limits.series_idle_intervals.into()),
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
        let header = if self.show_table {
            "# no exporter and no endpoint: live table\n"
        } else if self.export.is_none() && self.prometheus.is_none() {
            "# exporters none (or OTEL_SDK_DISABLED=true): nothing exported, no table\n"
        } else {
            ""
        };
        // Only strings, integers and string maps: serialization cannot fail.
        let body = toml::to_string(&file).expect("config serializes to TOML");
        format!("{header}{body}")
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
    env::refuse_unsupported(vars)?;
    let mut warnings = Vec::new();
    let (otlp, endpoint_given) = resolve_export(cli, vars, file.export.unwrap_or_default())?;
    let chosen = settings::EXPORTERS.resolve(
        cli.exporters.as_deref(),
        vars,
        file.exporters.map(|e| e.join(",")),
    )?;
    let prometheus_address = resolve_prometheus(cli, vars, file.prometheus)?;
    let disabled = sdk_disabled(vars, &mut warnings);
    // Unset: OTLP when an endpoint is configured, else the live table.
    let (mut exporters, show_table) = match chosen {
        _ if disabled => (Exporters::NONE, false),
        Some(e) => (e, false),
        None if endpoint_given => (Exporters::OTLP, false),
        None => (Exporters::NONE, true),
    };
    if endpoint_given && !exporters.otlp {
        let why = if disabled {
            format!("{}=true", env::SDK_DISABLED)
        } else {
            format!("the exporters are {exporters}")
        };
        warnings.push(format!(
            "an OTLP endpoint is configured but {why}: not exporting over OTLP"
        ));
    }
    if disabled {
        exporters = Exporters::NONE;
    }
    let mut export = exporters.otlp.then_some(otlp);
    let prometheus = exporters.prometheus.then_some(PrometheusConfig {
        address: prometheus_address,
    });

    let interval = settings::INTERVAL
        .resolve(cli.interval.as_deref(), vars, file.interval)?
        // Prometheus alone: the scraper sees what the last collection
        // read, so collect as often as the table refreshes.
        .unwrap_or(if export.is_some() {
            DEFAULT_INTERVAL
        } else {
            DEFAULT_TABLE_INTERVAL
        });
    let temporality = settings::TEMPORALITY
        .resolve(cli.temporality.as_deref(), vars, file.temporality)?
        .unwrap_or_default();
    let log = settings::LOG
        .resolve(cli.log.as_deref(), vars, file.log)?
        .unwrap_or_else(|| DEFAULT_LOG.to_owned());
    let shutdown_grace = settings::SHUTDOWN_GRACE
        .resolve(None, vars, file.shutdown_grace)?
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    // Counts fit any integer type: their ranges end at 1,000,000.
    let table_rows = settings::TABLE_ROWS
        .resolve(cli.table_rows.as_deref(), vars, file.table_rows)?
        .map_or(DEFAULT_TABLE_ROWS, |n| n as usize);
    let table = identity::resolve_view(
        table_rows,
        cli.filter.as_deref(),
        cli.sort.as_deref(),
        vars,
        (file.table_filter, file.table_sort, file.not_failures),
    )?;
    let identity =
        identity::resolve_identity(vars, file.identity, file.resource.self_attributes.clone())?;
    let (slos, state_dir) = slo::resolve(
        cli.slo_file.as_deref(),
        cli.state_dir.as_deref(),
        vars,
        file.slo,
        file.slo_file,
        file.state_dir,
    )?;
    let probes = settings::PROBES
        .resolve(
            cli.probes.as_deref(),
            vars,
            file.probes.map(|p| p.join(",")),
        )?
        .unwrap_or_default();
    let on_demand = ondemand::resolve(
        cli.syscall_workloads.as_deref(),
        cli.slo_detail.as_deref(),
        vars,
        file.syscall_workloads,
        file.slo_detail,
    )?;

    let fl = file.limits;
    let defaults = LimitsConfig::default();
    let limits = LimitsConfig {
        max_series_per_metric: settings::MAX_SERIES
            .resolve(cli.max_series.as_deref(), vars, fl.max_series_per_metric)?
            .map_or(defaults.max_series_per_metric, |n| n as usize),
        series_idle_intervals: settings::SERIES_IDLE_INTERVALS
            .resolve(None, vars, fl.series_idle_intervals)?
            .map_or(defaults.series_idle_intervals, |n| n as u32),
        kernel_maps: kernel_map_sizes(&fl.kernel_maps)?,
    };

    let resource = resolve_resource(cli, vars, file.resource)?;
    let health = resolve_health(cli, vars, file.health, interval)?;
    if let Some(e) = &mut export {
        e.interval = interval;
        e.max_failure = Some(health.max_export_failure);
        e.temporality = match temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative,
            Temporality::Delta => AggregationTemporality::Delta,
        };
    }

    Ok(Config {
        export,
        prometheus,
        show_table,
        interval,
        temporality,
        resource,
        limits,
        health,
        shutdown_grace,
        log,
        table,
        identity,
        probes,
        on_demand,
        slos,
        state_dir,
        warnings,
    })
}

/// Every export setting is validated even when nothing will be exported,
/// so a typo is caught the first time, not when an endpoint is added.
/// Returns the OTLP settings and whether an endpoint was configured.
fn resolve_export(
    cli: &Cli,
    vars: &Vars<'_>,
    fe: FileExport,
) -> Result<(ExportConfig, bool), ConfigError> {
    let tls = resolve_tls(cli, vars, &fe)?;
    // The highest layer naming any endpoint supplies both URLs, so that a
    // lower layer's metrics URL cannot shadow `--endpoint`.
    let base = settings::ENDPOINT.pick(cli.endpoint.as_deref(), vars, fe.endpoint);
    let metrics = settings::METRICS_ENDPOINT.pick(None, vars, fe.metrics_endpoint);
    let top = base.iter().chain(&metrics).map(|g| g.layer).min();
    let url = |given: Option<Given>| {
        given
            .filter(|g| Some(g.layer) == top)
            .map(|g| endpoint(g.name, &g.text).map(|u| (g.name, u)))
            .transpose()
    };
    let (base, metrics) = (url(base)?, url(metrics)?);

    let protocol = settings::PROTOCOL
        .resolve(cli.protocol.as_deref(), vars, fe.protocol)?
        .unwrap_or_default();
    let insecure = settings::INSECURE
        .resolve(cli.insecure.as_deref(), vars, fe.insecure)?
        .unwrap_or(false);
    // A scheme-less endpoint is gRPC's `host:port`: TLS unless insecure
    // (OTLP spec); HTTP needs a URL.
    let with_scheme = |given: Option<(&'static str, String)>| {
        given
            .map(|(name, u)| {
                if u.starts_with("http://") || u.starts_with("https://") {
                    return Ok(u);
                }
                match protocol {
                    Protocol::Grpc if insecure => Ok(format!("http://{u}")),
                    Protocol::Grpc => Ok(format!("https://{u}")),
                    Protocol::HttpProtobuf => Err(invalid(
                        name,
                        format!("http/protobuf needs an http:// or https:// URL, got {u:?}"),
                    )),
                }
            })
            .transpose()
    };
    let (base, metrics) = (with_scheme(base)?, with_scheme(metrics)?);
    let compression = settings::COMPRESSION
        .resolve(cli.compression.as_deref(), vars, fe.compression)?
        .unwrap_or_default();
    // A higher layer's header list replaces a lower one whole, as the
    // signal-specific variable does the generic one in the spec. The
    // file's headers are a table, not text, so they are checked here.
    let headers = match settings::HEADERS.resolve(None, vars, None::<String>)? {
        Some(headers) => headers,
        None => env::check_headers(
            settings::HEADERS.key,
            fe.headers.clone().unwrap_or_default().into_iter().collect(),
        )?,
    };
    let timeout = settings::TIMEOUT
        .resolve(None, vars, fe.timeout)?
        .unwrap_or(ExportConfig::default().timeout);
    let buffer_intervals = settings::BUFFER_INTERVALS
        .resolve(cli.buffer_intervals.as_deref(), vars, fe.buffer_intervals)?
        .map_or(ExportConfig::default().buffer_intervals, |n| n as usize);
    let max_backoff = settings::MAX_BACKOFF
        .resolve(None, vars, fe.max_backoff)?
        .unwrap_or(ExportConfig::default().max_backoff);

    // Without an endpoint, the spec's default for the protocol (used only
    // when OTLP export is asked for explicitly).
    let default_endpoint = match protocol {
        Protocol::Grpc => "http://localhost:4317",
        Protocol::HttpProtobuf => "http://localhost:4318",
    };
    Ok((
        ExportConfig {
            // Only a metrics URL given: it is the base too.
            endpoint: base
                .or_else(|| metrics.clone())
                .unwrap_or_else(|| default_endpoint.to_owned()),
            metrics_endpoint: metrics,
            protocol,
            headers,
            compression,
            timeout,
            buffer_intervals,
            max_backoff,
            tls,
            // Interval, health and temporality are filled in by `resolve`.
            ..ExportConfig::default()
        },
        top.is_some(),
    ))
}

/// The CA bundle and client identity, each checked now (readable, PEM,
/// holds what it should, the client certificate currently valid), so a bad
/// file exits 2 naming the variable and the file.
fn resolve_tls(cli: &Cli, vars: &Vars<'_>, fe: &FileExport) -> Result<TlsFiles, ConfigError> {
    let path = |s: &PathBuf| s.display().to_string();
    let ca = settings::CERTIFICATE.pick(
        cli.certificate.as_ref().map(path).as_deref(),
        vars,
        fe.certificate.clone(),
    );
    let cert = settings::CLIENT_CERTIFICATE.pick(
        cli.client_certificate.as_ref().map(path).as_deref(),
        vars,
        fe.client_certificate.clone(),
    );
    let key = settings::CLIENT_KEY.pick(
        cli.client_key.as_ref().map(path).as_deref(),
        vars,
        fe.client_key.clone(),
    );
    match (&cert, &key) {
        (Some(c), None) => {
            return Err(invalid(
                c.name,
                format!(
                    "a client certificate needs a client key too ({}, {} or {})",
                    settings::CLIENT_KEY.flag.unwrap_or_default(),
                    env::CLIENT_KEY,
                    settings::CLIENT_KEY.key
                ),
            ))
        }
        (None, Some(k)) => {
            return Err(invalid(
                k.name,
                format!(
                    "a client key needs a client certificate too ({}, {} or {})",
                    settings::CLIENT_CERTIFICATE.flag.unwrap_or_default(),
                    env::CLIENT_CERTIFICATE,
                    settings::CLIENT_CERTIFICATE.key
                ),
            ))
        }
        _ => {}
    }
    Ok(TlsFiles {
        ca: ca.map(|g| settings::CERTIFICATE.accept(&g)).transpose()?,
        client_cert: cert
            .map(|g| settings::CLIENT_CERTIFICATE.accept(&g))
            .transpose()?,
        client_key: key.map(|g| settings::CLIENT_KEY.accept(&g)).transpose()?,
    })
}

/// `OTEL_SDK_DISABLED`: true turns every exporter (and the table) off.
fn sdk_disabled(vars: &Vars<'_>, warnings: &mut Vec<String>) -> bool {
    let Some(v) = vars.get(env::SDK_DISABLED) else {
        return false;
    };
    if v.eq_ignore_ascii_case("true") {
        return true;
    }
    if !v.eq_ignore_ascii_case("false") {
        warnings.push(format!(
            "{}: expected true or false, got {v:?}; treating it as false",
            env::SDK_DISABLED
        ));
    }
    false
}

/// Where /metrics is served: `OTEL_EXPORTER_PROMETHEUS_HOST` and `_PORT`
/// (spec defaults localhost and 9464). Checked even when Prometheus is off.
fn resolve_prometheus(
    cli: &Cli,
    vars: &Vars<'_>,
    fp: file::FilePrometheus,
) -> Result<SocketAddr, ConfigError> {
    let host = settings::PROMETHEUS_HOST
        .resolve(cli.prometheus_host.as_deref(), vars, fp.host)?
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let port = settings::PROMETHEUS_PORT
        .resolve(cli.prometheus_port.as_deref(), vars, fp.port)?
        .unwrap_or(DEFAULT_PROMETHEUS_PORT.into());
    // In range 1 to 65535.
    Ok(SocketAddr::new(host, port as u16))
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
    let file_attrs: Vec<(String, String)> = fr.attributes.into_iter().collect();
    // service.name in the attributes ranks just below the layer's own
    // service-name setting.
    let attr_service = |name, layer, attrs: &[(String, String)]| {
        let (_, v) = attrs.iter().rev().find(|(k, _)| k == SERVICE_NAME_ATTR)?;
        Some(Given::new(name, layer, v.as_str()))
    };
    let s = settings::SERVICE_NAME;
    let given = s
        .in_flag(cli.service_name.as_deref())
        .or_else(|| s.in_env(vars))
        .or_else(|| attr_service(env::RESOURCE_ATTRIBUTES, Layer::Env, &env_attrs))
        .or_else(|| s.in_file(fr.service_name))
        .or_else(|| attr_service(ATTRIBUTES_KEY, Layer::File, &file_attrs));
    let service_name = match given {
        Some(g) => s.accept(&g)?,
        None => DEFAULT_SERVICE_NAME.to_owned(),
    };

    // Resource detectors merge, so environment attributes override the
    // file's key by key rather than replacing the whole set.
    let mut attributes: Vec<(String, String)> = Vec::new();
    for (k, v) in file_attrs.into_iter().chain(env_attrs) {
        if k.is_empty() {
            return Err(invalid(ATTRIBUTES_KEY, "attribute names must not be empty"));
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
    Ok(HealthConfig {
        address: settings::HEALTH_ADDRESS
            .resolve(cli.health_address.as_deref(), vars, fh.address)?
            .flatten(),
        max_export_failure: settings::MAX_EXPORT_FAILURE
            .resolve(None, vars, fh.max_export_failure)?
            .unwrap_or(default.max_export_failure),
    })
}

fn service_name(key: &str, raw: &str) -> Result<String, ConfigError> {
    if raw.trim().is_empty() {
        return Err(invalid(key, "service name must not be empty"));
    }
    Ok(raw.to_owned())
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

/// An http:// or https:// URL, or a scheme-less HOST:PORT (gRPC: the scheme
/// comes from `insecure`), that both transports' own parsers accept (the
/// gRPC URI and the HTTP URL), so an endpoint that passes here cannot fail
/// after the programs are attached.
fn endpoint(key: &str, raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim();
    let lower = url.to_ascii_lowercase();
    let bad = |why: String| {
        invalid(
            key,
            format!("expected an http:// or https:// URL with a host (or HOST:PORT for gRPC), got {raw:?}{why}"),
        )
    };
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("http://") {
        ("http://", &url[url.len() - rest.len()..])
    } else if let Some(rest) = lower.strip_prefix("https://") {
        ("https://", &url[url.len() - rest.len()..])
    } else if lower.contains("://") {
        return Err(bad(" (the scheme must be http or https)".to_owned()));
    } else {
        ("", url)
    };
    if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
        return Err(bad(String::new()));
    }
    // Schemes are case-insensitive; the transports expect lowercase. A
    // scheme-less endpoint is checked as if it were http.
    let checked = format!(
        "{}{rest}",
        if scheme.is_empty() { "http://" } else { scheme }
    );
    reqwest::Url::parse(&checked).map_err(|e| bad(format!(" ({e})")))?;
    checked
        .parse::<tonic::transport::Uri>()
        .map_err(|e| bad(format!(" ({e})")))?;
    Ok(format!("{scheme}{rest}"))
}

fn boolean(key: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, format!("expected true or false, got {raw:?}"))),
    }
}

/// A TLS file, read and checked now with `check`; the path is kept for the
/// exporter, which re-reads it on change.
fn tls_file(
    key: &str,
    raw: &str,
    check: fn(&std::path::Path, &[u8]) -> Result<(), String>,
) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(raw.trim());
    let text = std::fs::read(&path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    check(&path, &text).map_err(|problem| invalid(key, problem))?;
    Ok(path)
}

fn ca_file(key: &str, raw: &str) -> Result<PathBuf, ConfigError> {
    tls_file(key, raw, |path, text| {
        crate::export::tls::certificates(path, text).map(drop)
    })
}

fn client_cert_file(key: &str, raw: &str) -> Result<PathBuf, ConfigError> {
    tls_file(key, raw, |path, text| {
        let chain = crate::export::tls::certificates(path, text)?;
        crate::export::tls::check_validity(path, &chain[0], std::time::SystemTime::now())
    })
}

fn client_key_file(key: &str, raw: &str) -> Result<PathBuf, ConfigError> {
    tls_file(key, raw, |path, text| {
        crate::export::tls::private_key(path, text).map(drop)
    })
}

/// An IP, `localhost` (127.0.0.1, without asking a resolver: the image has
/// no /etc/hosts), or a name resolved once, now.
fn prometheus_host(key: &str, raw: &str) -> Result<std::net::IpAddr, ConfigError> {
    let host = raw.trim();
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse() {
        return Ok(ip);
    }
    use std::net::ToSocketAddrs as _;
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "expected an IP address, localhost or a host name that resolves, got {raw:?}"
                ),
            )
        })
}

fn log_filter(key: &str, raw: &str) -> Result<String, ConfigError> {
    let filter = raw.trim();
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map_err(|e| invalid(key, format!("invalid log filter {raw:?}: {e}")))?;
    Ok(filter.to_owned())
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
        let range = Bounds {
            min: 1,
            max: m.max_entries.into(),
        };
        // In range, so it fits the map's u32 maximum.
        sizes[m.id] = range.check(&key, n)? as u32;
    }
    Ok(sizes)
}

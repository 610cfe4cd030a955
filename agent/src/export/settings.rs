//! What the exporter is told: transport, endpoint, limits. The config module
//! builds a [`Settings`] from flags, environment and file; the exporter reads
//! nothing else.

use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Grpc,
    HttpProtobuf,
}

/// Payload compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        })
    }
}

/// Everything the exporter needs, independent of how the config is loaded.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// Base endpoint, e.g. `http://localhost:4317` (gRPC) or
    /// `http://localhost:4318` (HTTP; `/v1/metrics` is appended).
    pub endpoint: String,
    /// Signal-specific endpoint (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`): used
    /// as is, for both protocols, instead of `endpoint`. Log records (SLO
    /// events) never go there: see [`logs_http_url`].
    pub metrics_endpoint: Option<String>,
    pub protocol: Protocol,
    /// Extra request headers / gRPC metadata (e.g. authentication).
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    /// Per-request timeout (also used as the connect timeout).
    pub timeout: Duration,
    /// How many unsent intervals to keep while the collector is unreachable
    /// (at least one is always kept).
    pub buffer_intervals: usize,
    /// Upper bound for the retry backoff and for a server's Retry-After.
    /// `interval` bounds both as well, so a collector that comes back gets
    /// the next attempt within one interval.
    pub max_backoff: Duration,
    /// First retry delay; doubled after each failed attempt.
    pub initial_backoff: Duration,
    /// The export interval: bounds the wait between retries, rate-limits the
    /// "still failing" warnings, and health turns bad after a few intervals
    /// of failure.
    pub interval: Duration,
    /// How long exports may keep failing before health turns bad; `None`:
    /// three intervals.
    pub max_failure: Option<Duration>,
    /// CA bundle and client identity for https endpoints.
    pub tls: super::TlsFiles,
    /// Temporality of the agent's own counters, which travel with every
    /// request: the SLIs' (`Delta` or `Cumulative`; anything else is read
    /// as `Cumulative`).
    pub temporality: AggregationTemporality,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:4317".to_owned(),
            metrics_endpoint: None,
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            compression: Compression::None,
            timeout: Duration::from_secs(10),
            buffer_intervals: 60,
            max_backoff: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            interval: Duration::from_secs(10),
            max_failure: None,
            tls: super::TlsFiles::default(),
            temporality: AggregationTemporality::Cumulative,
        }
    }
}

impl Settings {
    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Settings {
            endpoint: endpoint.into(),
            ..Settings::default()
        }
    }

    /// The URL an HTTP/protobuf export is POSTed to: the metrics endpoint
    /// as given, else `<endpoint>/v1/metrics` without a doubled slash.
    pub fn http_url(&self) -> String {
        http_url(&self.endpoint, self.metrics_endpoint.as_deref())
    }

    /// The gRPC target: only scheme and authority matter to gRPC, the path
    /// is the RPC's own.
    pub fn grpc_endpoint(&self) -> &str {
        grpc_endpoint(&self.endpoint, self.metrics_endpoint.as_deref())
    }

    /// The URL an HTTP/protobuf log export is POSTed to (see
    /// [`logs_http_url`]).
    pub fn logs_http_url(&self) -> String {
        logs_http_url(&self.endpoint, self.metrics_endpoint.as_deref())
    }

    /// The gRPC target of log exports (see [`logs_grpc_endpoint`]).
    pub fn logs_grpc_endpoint(&self) -> &str {
        logs_grpc_endpoint(&self.endpoint)
    }

    /// The longest wait between two attempts: `max_backoff`, and never more
    /// than one interval.
    pub fn retry_cap(&self) -> Duration {
        self.max_backoff.min(self.interval)
    }
}

/// The HTTP/protobuf URL: the metrics endpoint as given, else
/// `<endpoint>/v1/metrics` (OTLP spec).
pub fn http_url(endpoint: &str, metrics_endpoint: Option<&str>) -> String {
    match metrics_endpoint {
        Some(url) => url.to_owned(),
        None => format!("{}/v1/metrics", endpoint.trim_end_matches('/')),
    }
}

/// The gRPC target: per the OTLP spec the metrics endpoint wins here too.
pub fn grpc_endpoint<'a>(endpoint: &'a str, metrics_endpoint: Option<&'a str>) -> &'a str {
    metrics_endpoint.unwrap_or(endpoint)
}

/// The HTTP/protobuf URL of log exports (`LogsService`, SLO events).
///
/// The OTLP spec appends `/v1/logs` to the base endpoint
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`); a metrics-specific endpoint is for
/// metrics only. So:
/// - a base endpoint configured (with or without a metrics endpoint):
///   `<endpoint>/v1/logs`;
/// - only a metrics endpoint configured: that URL with a trailing
///   `/v1/metrics` replaced by `/v1/logs` (`http://c:4318/otlp/v1/metrics`
///   -> `http://c:4318/otlp/v1/logs`); without that suffix it is read as a
///   base and `/v1/logs` is appended (`http://c:9999/custom` ->
///   `http://c:9999/custom/v1/logs`).
///
/// "Only a metrics endpoint" is recognised as config builds it
/// (`config::resolve_export`): it copies the metrics URL into `endpoint`
/// when no base is given, so the two are equal. A base given equal to the
/// metrics URL is read the same way, which differs only if it ends with
/// `/v1/metrics`, an unlikely base.
pub fn logs_http_url(endpoint: &str, metrics_endpoint: Option<&str>) -> String {
    let base = match metrics_endpoint {
        Some(metrics) if metrics == endpoint => {
            let metrics = metrics.trim_end_matches('/');
            metrics.strip_suffix("/v1/metrics").unwrap_or(metrics)
        }
        _ => endpoint.trim_end_matches('/'),
    };
    format!("{base}/v1/logs")
}

/// The gRPC target of log exports: the base endpoint. When only a metrics
/// endpoint is configured, config made it the base too; gRPC uses only its
/// scheme and authority (the path is the RPC's, `LogsService/Export`).
pub fn logs_grpc_endpoint(endpoint: &str) -> &str {
    endpoint
}

// Hand-written so header values (usually credentials) never reach a log.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("buffer_intervals", &self.buffer_intervals)
            .field("max_backoff", &self.max_backoff)
            .field("initial_backoff", &self.initial_backoff)
            .field("interval", &self.interval)
            .field("max_failure", &self.max_failure)
            .field("tls", &self.tls)
            .field("temporality", &self.temporality)
            .finish()
    }
}

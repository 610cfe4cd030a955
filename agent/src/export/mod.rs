//! OTLP export: gRPC and HTTP/protobuf, retries with backoff, a bounded buffer.
//!
//! [`Client`] sends one `ExportMetricsServiceRequest` and classifies failures
//! as retryable or not (OTLP spec, as opentelemetry-rust and Vector do).
//! [`spawn`] runs a task that owns a bounded buffer of unsent intervals: the
//! collect loop [`ExportHandle::submit`]s one request per interval and never
//! waits on the network; when the collector is down the newest
//! `buffer_intervals` intervals are kept and delivered, oldest first, once it
//! comes back.

mod client;
mod pipeline;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::config::{Compression, Protocol};

pub use client::Client;
pub use pipeline::{spawn, ExportHandle, ExportHealth, ExportStatus};

/// Everything the exporter needs, independent of how the config is loaded
/// (the config module converts its `ExportConfig` into this).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base endpoint, e.g. `http://localhost:4317` (gRPC) or
    /// `http://localhost:4318` (HTTP; `/v1/metrics` is appended).
    pub endpoint: String,
    /// Signal-specific endpoint (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`): used
    /// as is, for both protocols, instead of `endpoint`.
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
    pub max_backoff: Duration,
    /// First retry delay; doubled after each failed attempt.
    pub initial_backoff: Duration,
    /// The export interval: "still failing" warnings are rate-limited to one
    /// per interval, and health turns bad after a few intervals of failure.
    pub interval: Duration,
    /// How long exports may keep failing before health turns bad; `None`:
    /// three intervals.
    pub max_failure: Option<Duration>,
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
        }
    }
}

impl Settings {
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

/// Why an export (or building the exporter) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("invalid OTLP header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("cannot connect to the collector at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("collector returned gRPC status {code:?}: {message}")]
    Status {
        code: tonic::Code,
        message: String,
        /// From a `google.rpc.RetryInfo` detail, if the server sent one.
        retry_after: Option<Duration>,
    },
    #[error("collector returned HTTP {status}: {body}")]
    Http {
        status: u16,
        /// The start of the response body (or the decoded `google.rpc.Status`
        /// message), for the log.
        body: String,
        /// From the `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    #[error("export timed out after {0:?}")]
    Timeout(Duration),
    #[error("encoding the request failed: {0}")]
    Encode(String),
    #[error("transport error: {0}")]
    Transport(String),
}

impl ExportError {
    /// Whether sending the same request again may succeed (OTLP spec:
    /// "Retryable response codes" for both transports; network failures).
    pub fn is_retryable(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Connect { .. } | Self::Timeout(_) | Self::Transport(_) => true,
            Self::Status { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::DataLoss
            ),
            Self::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            Self::InvalidEndpoint { .. } | Self::InvalidHeader { .. } | Self::Encode(_) => false,
        }
    }

    /// The server's requested delay before the next attempt, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } | Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

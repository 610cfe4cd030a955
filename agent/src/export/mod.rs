//! OTLP export: gRPC and HTTP/protobuf, plaintext or TLS (rustls; mTLS,
//! certificates re-read on change, see `tls`), retries with backoff, a
//! bounded buffer.
//!
//! [`Client`] sends one `ExportMetricsServiceRequest` (or, for SLO events,
//! one `ExportLogsServiceRequest`: same transport, to the logs URL) and
//! classifies failures as retryable or not (OTLP spec, as
//! opentelemetry-rust and Vector do).
//! [`spawn`] runs a task that owns a bounded buffer of unsent intervals: the
//! collect loop [`ExportHandle::submit`]s one request per interval and never
//! waits on the network; when the collector is down the newest
//! `buffer_intervals` intervals are kept and delivered, oldest first, once it
//! comes back. [`ExportHandle::submit_logs`] queues a log request in the same
//! buffer; it is sent at once, ahead of buffered intervals, and a full
//! buffer drops metrics before it (see `pipeline`). Every metrics attempt
//! carries the agent's own metrics as a second
//! scope of the same request (see `telemetry`), so they share its resource,
//! buffer and retries, and an outage is reported once the collector is back.

mod client;
mod pipeline;
mod settings;
#[cfg(test)]
mod tests;
pub mod tls;

use std::time::Duration;

pub use client::Client;
pub use pipeline::{spawn, ExportHandle, ExportHealth, ExportStatus};
pub use settings::{
    grpc_endpoint, http_url, logs_grpc_endpoint, logs_http_url, Compression, Protocol, Settings,
};
pub use tls::TlsFiles;

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
    /// The TLS files cannot be used (caught at startup by config; here when
    /// a rotated file is bad).
    #[error("TLS: {0}")]
    Tls(String),
}

impl ExportError {
    /// Whether sending the same request again may succeed (OTLP spec,
    /// "Failures" for gRPC and HTTP; network failures and timeouts). Anything
    /// else is the collector's final answer: the interval is dropped and
    /// counted as `rejected`.
    pub fn is_retryable(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Connect { .. } | Self::Timeout(_) | Self::Transport(_) => true,
            Self::Status {
                code, retry_after, ..
            } => match code {
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss => true,
                // Only when the server says recovery is possible, with a
                // `RetryInfo` (throttling).
                Code::ResourceExhausted => retry_after.is_some(),
                _ => false,
            },
            Self::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            Self::InvalidEndpoint { .. }
            | Self::InvalidHeader { .. }
            | Self::Encode(_)
            | Self::Tls(_) => false,
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

//! The Prometheus pull endpoint: `GET /metrics` in the text format (classic
//! histograms) or, when the scraper asks for it, the protobuf format with
//! native histograms (see `encode`). Names and labels follow the
//! OpenTelemetry-to-Prometheus translation (`translate`).
//!
//! Values are cumulative whatever OTLP's temporality: the collect loop
//! hands [`Endpoint::publish`] a cumulative request once per interval (SLIs
//! and the agent's own metrics), which is translated and rendered in both
//! formats there, once. A scrape only takes a reference to the last
//! rendering: its work is constant, whatever the number of series or of
//! concurrent scrapers, and no scrape can slow the collect loop (the text
//! is gzipped at most once per interval, for the first scraper that asks). The cost of
//! rendering is measured (`syscope.prometheus.render.duration`,
//! `syscope.prometheus.exposition.size`).
//!
//! Connections are served by the health endpoint's bounded server
//! (`service::http`): one request per connection, the head within 2 s, the
//! answer taken within [`WRITE_TIMEOUT`], at most 256 open with the oldest
//! closed to admit a new one, so idle or slow scrapers cannot lock others
//! out (closed ones are counted in `syscope.prometheus.connections.closed`).

pub mod encode;
pub mod translate;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::service::http::{self, ConnectionStats, Handler, Limits, Response};
use crate::telemetry::SelfStats;

/// The answer must be taken within this long: an exposition can be a few
/// MiB (thousands of histogram series), more than the health answer's 1 s
/// allows over a slow link; Prometheus' own scrape timeout is 10 s.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const LIMITS: Limits = Limits {
    write: WRITE_TIMEOUT,
    what: "prometheus endpoint",
    ..http::LIMITS
};

/// Where the endpoint listens (`OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub address: SocketAddr,
}

/// Both renderings of one collection, and the text gzipped, made by the
/// first scrape that asks for it (Prometheus always does) and shared by the
/// others until the next collection: at most one compression per interval.
#[derive(Debug, Default)]
struct Exposition {
    text: Bytes,
    protobuf: Bytes,
    text_gzip: std::sync::OnceLock<Bytes>,
}

impl Exposition {
    fn gzipped_text(&self) -> Bytes {
        self.text_gzip
            .get_or_init(|| {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.text.len() / 8),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(&self.text);
                Bytes::from(gz.finish().unwrap_or_default())
            })
            .clone()
    }
}

#[derive(Debug)]
struct Shared {
    current: Mutex<Arc<Exposition>>,
    stats: Arc<SelfStats>,
}

/// Binding the endpoint failed (the port is taken, say).
#[derive(Debug, thiserror::Error)]
#[error("prometheus endpoint: cannot listen on {address} (OTEL_EXPORTER_PROMETHEUS_HOST/PORT)")]
pub struct ListenError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The running endpoint. Dropping it stops the server.
pub struct Endpoint {
    shared: Arc<Shared>,
    connections: Arc<ConnectionStats>,
    server: JoinHandle<()>,
    local_addr: SocketAddr,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Endpoint {
    /// Binds and serves (an empty exposition until the first publish).
    pub async fn start(settings: Settings, stats: Arc<SelfStats>) -> Result<Self, ListenError> {
        let address = settings.address;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ListenError { address, source })?;
        let local_addr = listener.local_addr().unwrap_or(address);
        let shared = Arc::new(Shared {
            current: Mutex::new(Arc::new(Exposition::default())),
            stats,
        });
        let connections = Arc::new(ConnectionStats::default());
        let server = tokio::spawn(http::serve_with(
            listener,
            Arc::clone(&shared),
            Arc::clone(&connections),
            LIMITS,
        ));
        info!(address = %local_addr, "Prometheus endpoint listening: /metrics");
        Ok(Endpoint {
            shared,
            connections,
            server,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Renders a cumulative request (SLIs and self-metrics) for the scrapes
    /// to come.
    pub fn publish(&self, req: &ExportMetricsServiceRequest) {
        let started = Instant::now();
        let families: Vec<_> = req
            .resource_metrics
            .iter()
            .flat_map(translate::families)
            .collect();
        let text = Bytes::from(encode::text(&families));
        let protobuf = Bytes::from(encode::protobuf(&families));
        let stats = &self.shared.stats;
        SelfStats::set(&stats.prometheus_exposition_bytes, text.len() as u64);
        *lock(&self.shared.current) = Arc::new(Exposition {
            text,
            protobuf,
            text_gzip: Default::default(),
        });
        SelfStats::set(
            &stats.prometheus_render_us,
            started.elapsed().as_micros() as u64,
        );
        SelfStats::set(
            &stats.prometheus_connections_closed,
            self.connections.evicted() + self.connections.timed_out(),
        );
    }
}

/// Never panics on a poisoned lock: the value is an `Arc`, always whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handler for Shared {
    fn respond(&self, head: &[u8]) -> Response {
        let req = match http::parse_request_line(head) {
            Ok(req) => req,
            Err(resp) => return resp,
        };
        if req.path != "/metrics" {
            return Response::error(404);
        }
        if !req.is_read() {
            return Response::error(405);
        }
        let current = Arc::clone(&lock(&self.current));
        SelfStats::add(&self.stats.prometheus_scrapes, 1);
        let mut resp = if http::header(head, "accept").is_some_and(wants_protobuf) {
            Response::new(200, encode::PROTOBUF_CONTENT_TYPE, current.protobuf.clone())
        } else if http::header(head, "accept-encoding").is_some_and(accepts_gzip) {
            let mut r = Response::new(200, encode::TEXT_CONTENT_TYPE, current.gzipped_text());
            r.content_encoding = Some("gzip");
            r
        } else {
            Response::new(200, encode::TEXT_CONTENT_TYPE, current.text.clone())
        };
        resp.head_only = req.head_only();
        resp
    }
}

/// Whether `Accept-Encoding` allows gzip (listed without `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// Whether an `Accept` header prefers (or ties) the delimited protobuf
/// format over text, as Prometheus sends it with native histograms on:
/// `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2`.
pub fn wants_protobuf(accept: &str) -> bool {
    let mut proto_q = 0.0f32;
    let mut text_q = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0f32, false, false);
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            match (k.trim().to_ascii_lowercase().as_str(), v.trim()) {
                ("q", v) => q = v.parse().unwrap_or(0.0),
                ("proto", "io.prometheus.client.MetricFamily") => proto = true,
                ("encoding", "delimited") => delimited = true,
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => proto_q = proto_q.max(q),
            "text/plain" | "text/*" | "*/*" | "application/openmetrics-text" => {
                text_q = text_q.max(q)
            }
            _ => {}
        }
    }
    proto_q > 0.0 && proto_q >= text_q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus() {
        assert!(wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(!wants_protobuf("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(!wants_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
        assert!(!wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"));
        assert!(!wants_protobuf("*/*"));
    }

    fn head(path: &str, accept: Option<&str>) -> Vec<u8> {
        let mut h = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        if let Some(a) = accept {
            h.push_str(&format!("Accept: {a}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    #[test]
    fn routes_and_counts_scrapes() {
        let stats = Arc::new(SelfStats::default());
        let shared = Shared {
            current: Mutex::new(Arc::new(Exposition {
                text: Bytes::from_static(b"t 1\n"),
                protobuf: Bytes::from_static(b"\x01"),
                text_gzip: Default::default(),
            })),
            stats: Arc::clone(&stats),
        };
        let r = shared.respond(&head("/metrics", None));
        assert_eq!((r.code, r.content_type), (200, encode::TEXT_CONTENT_TYPE));
        assert_eq!(&r.body[..], b"t 1\n");
        let r = shared.respond(&head(
            "/metrics?x=1",
            Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"),
        ));
        assert_eq!(r.content_type, encode::PROTOBUF_CONTENT_TYPE);
        let gz = shared.respond(b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n");
        assert_eq!(gz.content_encoding, Some("gzip"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
            .unwrap();
        assert_eq!(text, "t 1\n");
        assert!(!accepts_gzip("gzip;q=0, identity"));
        assert!(accepts_gzip("*"));
        assert_eq!(shared.respond(&head("/", None)).code, 404);
        assert_eq!(shared.respond(b"POST /metrics HTTP/1.1\r\n\r\n").code, 405);
        assert_eq!(shared.respond(b"GET /metrics\r\n\r\n").code, 400);
        assert_eq!(SelfStats::get(&stats.prometheus_scrapes), 3);
    }
}

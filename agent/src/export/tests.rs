//! Exporter tests against real local listeners: a tonic MetricsService and
//! LogsService, and a hand-written HTTP/1.1 server, so the bytes on the wire
//! are checked.

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_server::{LogsService, LogsServiceServer},
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::{MetricsService, MetricsServiceServer},
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;

use super::client::parse_retry_after;
use super::pipeline::Backoff;
use super::*;
use crate::aggregate::otlp;
use crate::telemetry::{self, DropReason, SelfStats};

// ---------------------------------------------------------------- helpers

/// A request recognisable on the far side by its schema URL.
fn request(tag: u32) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            schema_url: format!("tag-{tag}"),
            ..Default::default()
        }],
    }
}

fn tag_of(req: &ExportMetricsServiceRequest) -> String {
    req.resource_metrics
        .iter()
        .map(|rm| rm.schema_url.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// A log request recognisable by its schema URL (`log-<tag>`), with one
/// record.
fn log_request(tag: u32) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            schema_url: format!("log-{tag}"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_text: "WARN".to_owned(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("event {tag}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn log_tag_of(req: &ExportLogsServiceRequest) -> String {
    req.resource_logs
        .iter()
        .map(|rl| rl.schema_url.clone())
        .collect::<Vec<_>>()
        .join(",")
}

fn log_tags(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|t| format!("log-{t}")).collect()
}

fn tags(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|t| format!("tag-{t}")).collect()
}

fn settings(protocol: Protocol, addr: SocketAddr) -> Settings {
    Settings {
        endpoint: format!("http://{addr}"),
        protocol,
        timeout: Duration::from_secs(3),
        buffer_intervals: 10,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        interval: Duration::from_secs(1),
        ..Settings::default()
    }
}

/// A port with nothing listening (bound, then released).
async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    SelfStats::get(counter)
}

/// The value of the self-metric `name` (with `reason=` if given) in a
/// request, or `None` if the request has no self scope.
fn self_value(req: &ExportMetricsServiceRequest, name: &str, reason: Option<&str>) -> Option<i64> {
    let scope = req
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .find(|sm| {
            sm.scope
                .as_ref()
                .is_some_and(|s| s.name == telemetry::SCOPE)
        })?;
    let m = scope.metrics.iter().find(|m| m.name == name)?;
    let points = match m.data.as_ref()? {
        metric::Data::Sum(s) => &s.data_points,
        metric::Data::Gauge(g) => &g.data_points,
        _ => return None,
    };
    let point = points.iter().find(|p| {
        reason.is_none_or(|r| {
            p.attributes.iter().any(|kv| {
                kv.key == "reason"
                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&any_value::Value::StringValue(r.to_owned()))
            })
        })
    })?;
    match point.value? {
        number_data_point::Value::AsInt(v) => Some(v),
        number_data_point::Value::AsDouble(_) => None,
    }
}

fn dropped_in(req: &ExportMetricsServiceRequest, reason: DropReason) -> i64 {
    self_value(req, "syscope.export.dropped", Some(reason.label())).expect("a self scope")
}

/// Log lines written while the guard lives (the test's runtime is
/// single-threaded, so the export task logs here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// Exporter logs, shown for failing tests (libtest captures them otherwise).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("syscope=debug")
        .with_test_writer()
        .try_init();
}

/// Polls `cond` until it holds; the timeout is generous, the poll is fast.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------- gRPC collector

#[derive(Clone, Debug)]
struct GrpcReceived {
    tag: String,
    headers: tonic::metadata::MetadataMap,
    /// Empty for a log request.
    request: ExportMetricsServiceRequest,
    /// For a log request (`LogsService/Export`).
    logs: Option<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
struct GrpcCollector {
    /// Both services' requests, in arrival order.
    received: Arc<Mutex<Vec<GrpcReceived>>>,
    /// Answers to give, in order, before plain success (for either
    /// service: a log request gets the status, or an empty success).
    script: Arc<Mutex<VecDeque<Result<ExportMetricsServiceResponse, tonic::Status>>>>,
}

impl GrpcCollector {
    fn tags(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received.iter().map(|r| r.tag.clone()).collect()
    }

    fn then(&self, answer: Result<ExportMetricsServiceResponse, tonic::Status>) {
        self.script.lock().unwrap().push_back(answer);
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone();
        let req = request.into_inner();
        self.received.lock().unwrap().push(GrpcReceived {
            tag: tag_of(&req),
            headers,
            request: req,
            logs: None,
        });
        let answer = self.script.lock().unwrap().pop_front();
        answer
            .unwrap_or_else(|| Ok(ExportMetricsServiceResponse::default()))
            .map(tonic::Response::new)
    }
}

#[tonic::async_trait]
impl LogsService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone();
        let req = request.into_inner();
        self.received.lock().unwrap().push(GrpcReceived {
            tag: log_tag_of(&req),
            headers,
            request: ExportMetricsServiceRequest::default(),
            logs: Some(req),
        });
        let answer = self.script.lock().unwrap().pop_front();
        match answer {
            Some(Err(status)) => Err(status),
            _ => Ok(tonic::Response::new(ExportLogsServiceResponse::default())),
        }
    }
}

/// Both OTLP services on one port, routed by the gRPC path (tonic's own
/// router is a feature the agent does not need).
#[derive(Clone)]
struct BothServices {
    metrics: MetricsServiceServer<GrpcCollector>,
    logs: LogsServiceServer<GrpcCollector>,
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for BothServices {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        if req
            .uri()
            .path()
            .starts_with("/opentelemetry.proto.collector.logs.")
        {
            self.logs.call(req)
        } else {
            self.metrics.call(req)
        }
    }
}

async fn start_grpc(listener: TcpListener) -> (GrpcCollector, JoinHandle<()>) {
    let collector = GrpcCollector::default();
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let service = BothServices {
        metrics: MetricsServiceServer::new(collector.clone()).accept_compressed(gzip),
        logs: LogsServiceServer::new(collector.clone()).accept_compressed(gzip),
    };
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(service, TcpIncoming::from(listener))
            .await;
    });
    (collector, task)
}

async fn grpc_collector() -> (GrpcCollector, SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (collector, task) = start_grpc(listener).await;
    (collector, addr, task)
}

// ------------------------------------------------------- HTTP collector

#[derive(Clone, Debug)]
struct HttpReceived {
    method: String,
    path: String,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    /// Decompressed if the request said gzip.
    body: Vec<u8>,
    /// The status it was answered with.
    status: u16,
    at: Instant,
}

impl HttpReceived {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn request(&self) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest::decode(self.body.as_slice()).unwrap()
    }

    fn is_logs(&self) -> bool {
        self.path.ends_with("/v1/logs")
    }

    fn logs(&self) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest::decode(self.body.as_slice()).unwrap()
    }

    /// `tag-N` for metrics, `log-N` for a log request (by the path).
    fn tag(&self) -> String {
        if self.is_logs() {
            log_tag_of(&self.logs())
        } else {
            tag_of(&self.request())
        }
    }
}

struct HttpAnswer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct HttpCollector {
    received: Arc<Mutex<Vec<HttpReceived>>>,
    script: Arc<Mutex<VecDeque<HttpAnswer>>>,
}

impl HttpCollector {
    fn tags(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received.iter().map(HttpReceived::tag).collect()
    }

    /// The metrics requests answered with 200, in order.
    fn accepted(&self) -> Vec<ExportMetricsServiceRequest> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.status == 200 && !r.is_logs())
            .map(HttpReceived::request)
            .collect()
    }

    fn then(&self, status: u16, headers: Vec<(&'static str, String)>, body: &[u8]) {
        self.script.lock().unwrap().push_back(HttpAnswer {
            status,
            headers,
            body: body.to_vec(),
        });
    }
}

async fn http_collector() -> (HttpCollector, SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (collector, task) = start_http(listener);
    (collector, addr, task)
}

fn start_http(listener: TcpListener) -> (HttpCollector, JoinHandle<()>) {
    let collector = HttpCollector::default();
    let c = collector.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_http(stream, c.clone()));
        }
    });
    (collector, task)
}

/// One request per connection (answered with `Connection: close`): enough
/// for a client that must cope with that anyway.
async fn serve_http(mut stream: TcpStream, collector: HttpCollector) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let gzipped = headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip");
    if gzipped {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut plain)
            .unwrap();
        body = plain;
    }
    let answer = collector
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(HttpAnswer {
            status: 200,
            headers: vec![("content-type", "application/x-protobuf".to_owned())],
            body: ExportMetricsServiceResponse::default().encode_to_vec(),
        });
    collector.received.lock().unwrap().push(HttpReceived {
        method,
        path,
        headers,
        body,
        status: answer.status,
        at: Instant::now(),
    });
    let mut response = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&answer.body);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

// ------------------------------------------------------------ settings

#[test]
fn http_url_appends_path_without_double_slash() {
    let mut s = Settings {
        endpoint: "http://collector:4318/".to_owned(),
        ..Settings::default()
    };
    assert_eq!(s.http_url(), "http://collector:4318/v1/metrics");
    s.endpoint = "http://collector:4318".to_owned();
    assert_eq!(s.http_url(), "http://collector:4318/v1/metrics");
    s.metrics_endpoint = Some("http://other:9999/custom".to_owned());
    assert_eq!(s.http_url(), "http://other:9999/custom");
    assert_eq!(s.grpc_endpoint(), "http://other:9999/custom");
}

#[tokio::test]
async fn invalid_header_is_a_construction_error_naming_it() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let s = Settings {
            protocol,
            headers: vec![
                ("x-ok".to_owned(), "1".to_owned()),
                ("bad header".to_owned(), "v".to_owned()),
            ],
            ..Settings::default()
        };
        let err = Client::new(&s).unwrap_err();
        assert!(
            matches!(&err, ExportError::InvalidHeader { name, .. } if name == "bad header"),
            "{protocol:?}: {err}"
        );
        assert!(err.to_string().contains("bad header"));
        let s = Settings {
            protocol,
            headers: vec![("x-key".to_owned(), "line\nbreak".to_owned())],
            ..Settings::default()
        };
        let err = Client::new(&s).unwrap_err();
        assert!(matches!(&err, ExportError::InvalidHeader { name, .. } if name == "x-key"));
    }
}

#[tokio::test]
async fn bad_endpoints_are_construction_errors() {
    // Config gives every endpoint its scheme; the client takes only those.
    for endpoint in ["localhost:4317", "ftp://x"] {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let s = Settings {
                endpoint: endpoint.to_owned(),
                protocol,
                ..Settings::default()
            };
            let err = Client::new(&s).unwrap_err();
            assert!(
                matches!(err, ExportError::InvalidEndpoint { .. }),
                "{endpoint} {protocol:?}: {err}"
            );
        }
    }
}

#[test]
fn retryable_classification() {
    let http = |status| ExportError::Http {
        status,
        body: String::new(),
        retry_after: None,
    };
    for status in [429, 502, 503, 504] {
        assert!(http(status).is_retryable(), "{status}");
    }
    for status in [400, 401, 403, 404, 413, 500] {
        assert!(!http(status).is_retryable(), "{status}");
    }
    let grpc = |code| ExportError::Status {
        code,
        message: String::new(),
        retry_after: None,
    };
    use tonic::Code;
    // The OTLP spec's table of retryable gRPC codes.
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        assert!(grpc(code).is_retryable(), "{code:?}");
    }
    for code in [
        Code::Unknown,
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Unimplemented,
        Code::Internal,
        Code::Unauthenticated,
    ] {
        assert!(!grpc(code).is_retryable(), "{code:?}");
    }
    // RESOURCE_EXHAUSTED only with a RetryInfo: the server can recover.
    let throttled = ExportError::Status {
        code: Code::ResourceExhausted,
        message: String::new(),
        retry_after: Some(Duration::from_secs(1)),
    };
    assert!(throttled.is_retryable());
    assert!(ExportError::Timeout(Duration::from_secs(1)).is_retryable());
    assert!(!ExportError::Encode(String::new()).is_retryable());
}

#[test]
fn retry_after_seconds_and_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
        Some(Duration::from_secs(30))
    );
    // A date in the past means "now".
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", UNIX_EPOCH),
        Some(Duration::from_secs(1_709_164_800))
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(
        parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
        None
    );
    assert_eq!(parse_retry_after("-3", SystemTime::now()), None);
}

#[test]
fn backoff_doubles_with_jitter_and_caps() {
    let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    for base_ms in [500u64, 1000, 2000, 4000] {
        let d = b.next().as_secs_f64() * 1000.0;
        let base = base_ms as f64;
        assert!(
            d >= base * 0.8 - 1.0 && d <= base * 1.2 + 1.0,
            "{d} vs {base}"
        );
    }
    for _ in 0..20 {
        let d = b.next();
        assert!(d <= Duration::from_secs(5));
        assert!(d >= Duration::from_secs(4), "{d:?}"); // 5 s -20 %
    }
    b.reset();
    assert!(b.next() <= Duration::from_millis(600));
}

// ------------------------------------------------------------ (a) gRPC

#[tokio::test]
async fn grpc_send_delivers_request_and_headers() {
    init_logs();
    let (collector, addr, server) = grpc_collector().await;
    let s = Settings {
        headers: vec![
            ("X-Api-Key".to_owned(), "secret".to_owned()),
            ("tenant".to_owned(), "a".to_owned()),
        ],
        ..settings(Protocol::Grpc, addr)
    };
    let mut client = Client::new(&s).unwrap();
    client.send(request(1)).await.unwrap();
    // A partial success is logged, not an error.
    collector.then(Ok(ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "bad points".to_owned(),
        }),
    }));
    client.send(request(2)).await.unwrap();
    assert_eq!(collector.tags(), tags(1..=2));
    let received = collector.received.lock().unwrap()[0].clone();
    assert_eq!(received.headers.get("x-api-key").unwrap(), "secret");
    assert_eq!(received.headers.get("tenant").unwrap(), "a");
    let ua = received
        .headers
        .get("user-agent")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ua.starts_with("syscope/"), "{ua}");
    assert!(received.headers.get("grpc-timeout").is_some());
    server.abort();
}

/// Gzip over gRPC: the request says `grpc-encoding: gzip` and decodes.
#[tokio::test]
async fn grpc_gzip_is_sent_compressed() {
    let (collector, addr, server) = grpc_collector().await;
    let s = Settings {
        compression: Compression::Gzip,
        ..settings(Protocol::Grpc, addr)
    };
    let mut client = Client::new(&s).unwrap();
    client.send(request(7)).await.unwrap();
    assert_eq!(collector.tags(), tags(7..=7));
    let received = collector.received.lock().unwrap()[0].headers.clone();
    assert_eq!(
        received.get("grpc-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    server.abort();
}

#[tokio::test]
async fn grpc_status_errors_are_classified() {
    let (collector, addr, server) = grpc_collector().await;
    let mut client = Client::new(&settings(Protocol::Grpc, addr)).unwrap();
    collector.then(Err(tonic::Status::invalid_argument("nope")));
    let err = client.send(request(1)).await.unwrap_err();
    assert!(
        matches!(&err, ExportError::Status { code: tonic::Code::InvalidArgument, message, .. } if message == "nope"),
        "{err}"
    );
    assert!(!err.is_retryable());
    collector.then(Err(tonic::Status::unavailable("busy")));
    let err = client.send(request(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Status {
                code: tonic::Code::Unavailable,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    server.abort();
}

#[tokio::test]
async fn grpc_retry_info_is_read() {
    use super::client::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus};
    let (collector, addr, server) = grpc_collector().await;
    let mut client = Client::new(&settings(Protocol::Grpc, addr)).unwrap();
    let details = RpcStatus {
        code: tonic::Code::ResourceExhausted as i32,
        message: "slow down".to_owned(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: 2,
                    nanos: 500_000_000,
                }),
            }
            .encode_to_vec(),
        }],
    }
    .encode_to_vec();
    collector.then(Err(tonic::Status::with_details(
        tonic::Code::ResourceExhausted,
        "slow down",
        details.into(),
    )));
    let err = client.send(request(1)).await.unwrap_err();
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_millis(2500)),
        "{err}"
    );
    server.abort();
}

#[tokio::test]
async fn unreachable_collector_is_a_retryable_connect_error() {
    let addr = free_addr().await;
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let mut client = Client::new(&settings(protocol, addr)).unwrap();
        let err = client.send(request(1)).await.unwrap_err();
        assert!(
            matches!(err, ExportError::Connect { .. }),
            "{protocol:?}: {err:?}"
        );
        assert!(err.is_retryable());
    }
}

// ------------------------------------------------------------ (b) HTTP

#[tokio::test]
async fn http_send_posts_protobuf_with_headers_and_gzip() {
    let (collector, addr, server) = http_collector().await;
    for compression in [Compression::Gzip, Compression::None] {
        let s = Settings {
            // Trailing slash: the path must still be /v1/metrics.
            endpoint: format!("http://{addr}/"),
            compression,
            headers: vec![("X-Api-Key".to_owned(), "secret".to_owned())],
            ..settings(Protocol::HttpProtobuf, addr)
        };
        let mut client = Client::new(&s).unwrap();
        client.send(request(1)).await.unwrap();
    }
    let received = collector.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    for (r, gzip) in received.iter().zip([true, false]) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/metrics");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("x-api-key"), Some("secret"));
        assert_eq!(r.header("content-encoding"), gzip.then_some("gzip"));
        assert!(r.header("user-agent").unwrap().starts_with("syscope/"));
        assert_eq!(r.request(), request(1));
    }
    server.abort();
}

#[tokio::test]
async fn http_metrics_endpoint_is_used_as_is() {
    let (collector, addr, server) = http_collector().await;
    let s = Settings {
        endpoint: "http://127.0.0.1:1".to_owned(),
        metrics_endpoint: Some(format!("http://{addr}/otlp/custom")),
        ..settings(Protocol::HttpProtobuf, addr)
    };
    Client::new(&s).unwrap().send(request(1)).await.unwrap();
    assert_eq!(collector.received.lock().unwrap()[0].path, "/otlp/custom");
    server.abort();
}

#[tokio::test]
async fn http_errors_carry_status_body_and_retry_after() {
    use super::client::RpcStatus;
    let (collector, addr, server) = http_collector().await;
    let mut client = Client::new(&settings(Protocol::HttpProtobuf, addr)).unwrap();
    collector.then(503, vec![("retry-after", "3".to_owned())], b"overloaded");
    let err = client.send(request(1)).await.unwrap_err();
    assert!(
        matches!(&err, ExportError::Http { status: 503, body, .. } if body == "overloaded"),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let status = RpcStatus {
        code: 3,
        message: "bad metric name".to_owned(),
        details: Vec::new(),
    };
    collector.then(
        400,
        vec![("content-type", "application/x-protobuf".to_owned())],
        &status.encode_to_vec(),
    );
    let err = client.send(request(2)).await.unwrap_err();
    assert!(
        matches!(&err, ExportError::Http { status: 400, body, .. } if body == "bad metric name"),
        "{err}"
    );
    assert!(!err.is_retryable());
    server.abort();
}

// ---------------------------------------------------- (c) the buffer

async fn buffer_survives_outage(protocol: Protocol) {
    init_logs();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        buffer_intervals: 3,
        ..settings(protocol, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    for tag in 1..=5 {
        handle.submit(request(tag));
    }
    assert_eq!(stats.dropped(DropReason::BufferFull), 2);
    assert_eq!(get(&stats.export_buffered_intervals), 3);
    wait_until("a failed attempt", || get(&stats.export_failures) >= 2).await;
    assert_eq!(handle.buffered(), 3);
    assert_eq!(
        handle.status().consecutive_failures,
        get(&stats.export_failures)
    );

    // The collector comes up on the same port.
    let listener = TcpListener::bind(addr).await.unwrap();
    let received: Box<dyn Fn() -> Vec<String>> = match protocol {
        Protocol::Grpc => {
            let (collector, _server) = start_grpc(listener).await;
            Box::new(move || collector.tags())
        }
        Protocol::HttpProtobuf => {
            let (collector, _server) = start_http(listener);
            Box::new(move || collector.tags())
        }
    };
    wait_until("the backlog", || received().len() >= 3).await;
    assert_eq!(received(), tags(3..=5), "newest three, oldest first");
    wait_until("the gauge", || get(&stats.export_buffered_intervals) == 0).await;
    assert_eq!(get(&stats.export_successes), 3);
    assert_eq!(stats.dropped_total(), 2);
    let status = handle.status();
    assert!(status.healthy && status.last_success.is_some());
    assert_eq!(status.consecutive_failures, 0);

    // And it keeps going.
    handle.submit(request(6));
    wait_until("a new interval", || received().len() == 4).await;
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    assert_eq!(received(), tags(3..=6));
}

#[tokio::test]
async fn grpc_buffer_survives_outage() {
    buffer_survives_outage(Protocol::Grpc).await;
}

#[tokio::test]
async fn http_buffer_survives_outage() {
    buffer_survives_outage(Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn retryable_http_status_is_retried_in_order() {
    init_logs();
    let (collector, addr, server) = http_collector().await;
    collector.then(503, vec![("retry-after", "0".to_owned())], b"");
    collector.then(429, Vec::new(), b"");
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::HttpProtobuf, addr), Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    handle.submit(request(2));
    wait_until("both delivered", || get(&stats.export_successes) == 2).await;
    let expected: Vec<String> = ["tag-1", "tag-1", "tag-1", "tag-2"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(collector.tags(), expected);
    assert_eq!(get(&stats.export_failures), 2);
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

// ------------------------------------------------ (d) non-retryable drop

#[tokio::test]
async fn http_400_drops_the_interval() {
    init_logs();
    let (collector, addr, server) = http_collector().await;
    collector.then(400, Vec::new(), b"malformed");
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::HttpProtobuf, addr), Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    handle.submit(request(2));
    wait_until("the second interval", || get(&stats.export_successes) == 1).await;
    // Sent once, not retried; the next interval goes through.
    assert_eq!(collector.tags(), tags(1..=2));
    assert_eq!(get(&stats.export_failures), 1);
    assert_eq!(stats.dropped(DropReason::Rejected), 1);
    assert_eq!(get(&stats.export_buffered_intervals), 0);
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

#[tokio::test]
async fn grpc_invalid_argument_drops_the_interval() {
    let (collector, addr, server) = grpc_collector().await;
    collector.then(Err(tonic::Status::invalid_argument("bad")));
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::Grpc, addr), Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    handle.submit(request(2));
    wait_until("the second interval", || get(&stats.export_successes) == 1).await;
    assert_eq!(collector.tags(), tags(1..=2));
    assert_eq!(get(&stats.export_failures), 1);
    assert_eq!(stats.dropped(DropReason::Rejected), 1);
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

/// Rejections (e.g. bad credentials) on every interval make the exporter
/// unhealthy once they outlast a few intervals.
#[tokio::test]
async fn persistent_rejections_turn_health_bad() {
    let (collector, addr, server) = http_collector().await;
    for _ in 0..3 {
        collector.then(401, Vec::new(), b"who are you");
    }
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        interval: Duration::from_millis(20), // unhealthy after 60 ms
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    let health = handle.health();
    assert!(health.is_healthy(), "healthy before any attempt");
    handle.submit(request(1));
    wait_until("the rejection", || get(&stats.export_failures) == 1).await;
    wait_until("unhealthy", || !health.is_healthy()).await;
    let status = health.status();
    assert_eq!(status.consecutive_failures, 1);
    assert!(status.last_error.unwrap().contains("401"));
    assert!(status.failing_since.is_some() && status.last_success.is_none());
    // Still unhealthy while failures continue; healthy again on success.
    handle.submit(request(2));
    handle.submit(request(3));
    handle.submit(request(4));
    wait_until("a success", || get(&stats.export_successes) == 1).await;
    assert!(health.is_healthy());
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

// ------------------------------------------------------- (e) shutdown

#[tokio::test]
async fn shutdown_flushes_backlog_within_grace() {
    init_logs();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        // Long backoff (and interval, which caps it): shutdown must cut the
        // sleep short, not wait it out.
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(60),
        interval: Duration::from_secs(60),
        ..settings(Protocol::Grpc, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    for tag in 1..=3 {
        handle.submit(request(tag));
    }
    wait_until("a failed attempt", || get(&stats.export_failures) == 1).await;
    let (collector, server) = start_grpc(TcpListener::bind(addr).await.unwrap()).await;
    let started = Instant::now();
    let left = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(left, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(collector.tags(), tags(1..=3));
    assert_eq!(get(&stats.export_buffered_intervals), 0);
    server.abort();
}

#[tokio::test]
async fn shutdown_with_collector_down_reports_unsent_after_grace() {
    init_logs();
    let addr = free_addr().await;
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let stats = Arc::new(SelfStats::default());
        let handle = spawn(settings(protocol, addr), Arc::clone(&stats)).unwrap();
        for tag in 1..=3 {
            handle.submit(request(tag));
        }
        let started = Instant::now();
        let left = handle.shutdown(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert_eq!(left, 3, "{protocol:?}");
        assert!(took >= Duration::from_millis(250), "{protocol:?}: {took:?}");
        assert!(took < Duration::from_secs(2), "{protocol:?}: {took:?}");
        assert_eq!(get(&stats.export_buffered_intervals), 3);
        assert_eq!(stats.dropped(DropReason::Shutdown), 3);
        assert!(get(&stats.export_failures) >= 1);
    }
}

/// A send hanging past the grace (collector accepts TCP, never answers) is
/// cut off; its interval counts as unsent.
#[tokio::test]
async fn shutdown_cuts_off_a_hung_send() {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        timeout: Duration::from_secs(30),
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    let started = Instant::now();
    assert_eq!(handle.shutdown(Duration::from_millis(200)).await, 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();
}

/// A collector that accepts TCP and hangs up: whatever status tonic makes
/// of that locally, it is a network failure and must be retried.
#[tokio::test]
async fn dropped_connections_are_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let mut client = Client::new(&settings(protocol, addr)).unwrap();
        let err = client.send(request(1)).await.unwrap_err();
        assert!(err.is_retryable(), "{protocol:?}: {err:?}");
    }
    server.abort();
}

/// Absurd durations from a config must not panic in deadline arithmetic.
#[tokio::test]
async fn extreme_durations_do_not_panic() {
    init_logs();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        initial_backoff: Duration::MAX,
        max_backoff: Duration::MAX,
        interval: Duration::MAX,
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    wait_until("a failed attempt", || get(&stats.export_failures) == 1).await;
    assert!(handle.is_healthy());
    assert_eq!(handle.shutdown(Duration::from_millis(50)).await, 1);

    let s = Settings {
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::new(SelfStats::default())).unwrap();
    assert_eq!(handle.shutdown(Duration::MAX).await, 0);
}

// ------------------------------------- (f) the agent's own metrics

/// What `otlp::build_request` makes: the resource, and the SLI scope when
/// the interval has points.
fn sli_request(resource: &Resource, with_points: bool) -> ExportMetricsServiceRequest {
    let scope_metrics = if with_points {
        vec![ScopeMetrics {
            scope: Some(otlp::scope("syscope")),
            metrics: vec![Metric {
                name: "syscall.errors".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics,
            ..Default::default()
        }],
    }
}

/// The self-metrics are a second scope of the interval's own request, under
/// the same resource; an interval without SLI points still carries them.
#[tokio::test]
async fn self_metrics_travel_in_the_same_request_and_resource() {
    let (collector, addr, server) = grpc_collector().await;
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::Grpc, addr), Arc::clone(&stats)).unwrap();
    let resource = Resource {
        attributes: vec![otlp::kv_str("service.name", "svc")],
        ..Default::default()
    };
    handle.submit(sli_request(&resource, true));
    handle.submit(sli_request(&resource, false));
    wait_until("both delivered", || get(&stats.export_successes) == 2).await;
    let received: Vec<_> = collector.received.lock().unwrap().clone();
    let scopes = |r: &GrpcReceived| -> Vec<String> {
        assert_eq!(r.request.resource_metrics.len(), 1, "one resource");
        let rm = &r.request.resource_metrics[0];
        assert_eq!(rm.resource.as_ref(), Some(&resource));
        rm.scope_metrics
            .iter()
            .map(|s| s.scope.as_ref().unwrap().name.clone())
            .collect()
    };
    assert_eq!(scopes(&received[0]), ["syscope", telemetry::SCOPE]);
    assert_eq!(scopes(&received[1]), [telemetry::SCOPE]);
    // The second request reports the first delivery.
    assert_eq!(
        self_value(&received[1].request, "syscope.export.successes", None),
        Some(1)
    );
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

/// Delta temporality, a buffer of 5, the collector down for 8 intervals:
/// the 3 intervals dropped are in the log, in the counter, and (once the
/// collector is back) in the `dropped{reason=buffer_full}` points it
/// receives, which add up to exactly 3.
#[tokio::test]
async fn buffer_full_drops_reach_the_collector_once_it_is_back() {
    let (logs, _guard) = Logs::capture();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        buffer_intervals: 5,
        temporality: AggregationTemporality::Delta,
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    for tag in 1..=8 {
        handle.submit(request(tag));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("failed attempts", || get(&stats.export_failures) >= 2).await;
    assert_eq!(stats.dropped(DropReason::BufferFull), 3);

    let (collector, server) = start_http(TcpListener::bind(addr).await.unwrap());
    wait_until("the backlog", || collector.accepted().len() == 5).await;
    handle.submit(request(9));
    wait_until("one more interval", || collector.accepted().len() == 6).await;
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);

    let accepted = collector.accepted();
    assert_eq!(accepted.iter().map(tag_of).collect::<Vec<_>>(), tags(4..=9));
    let on_the_wire: i64 = accepted
        .iter()
        .map(|r| dropped_in(r, DropReason::BufferFull))
        .sum();
    assert_eq!(on_the_wire, 3);
    let logged = logs.lines_with(&["reason=buffer_full", "dropped_intervals=1"]);
    assert_eq!(logged.len(), 3, "{logged:#?}");
    assert!(logged[2].contains("dropped_total=3"), "{}", logged[2]);
    let recovered = logs.lines_with(&["recovered"]);
    assert!(
        recovered.iter().any(|l| l.contains("dropped_intervals=3")),
        "{recovered:#?}"
    );
    // Failed attempts are reported too, once delivered.
    let failures: i64 = accepted
        .iter()
        .map(|r| self_value(r, "syscope.export.failures", None).unwrap())
        .sum();
    assert_eq!(failures as u64, get(&stats.export_failures));
    server.abort();
}

/// HTTP 500 is final (OTLP spec): each rejected interval is dropped as
/// `rejected`, logged, and the count reaches the collector with the first
/// request it accepts, in either temporality.
#[tokio::test]
async fn rejected_intervals_are_reported_once_the_collector_accepts() {
    const K: usize = 4;
    for temporality in [
        AggregationTemporality::Delta,
        AggregationTemporality::Cumulative,
    ] {
        let (logs, _guard) = Logs::capture();
        let (collector, addr, server) = http_collector().await;
        for _ in 0..K {
            collector.then(500, Vec::new(), b"internal error");
        }
        let stats = Arc::new(SelfStats::default());
        let s = Settings {
            temporality,
            ..settings(Protocol::HttpProtobuf, addr)
        };
        let handle = spawn(s, Arc::clone(&stats)).unwrap();
        for tag in 1..=K as u32 + 2 {
            handle.submit(request(tag));
        }
        wait_until("the rest delivered", || collector.accepted().len() == 2).await;
        assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
        // Each sent once: a 500 is not retried.
        assert_eq!(collector.tags(), tags(1..=K as u32 + 2));
        assert_eq!(stats.dropped(DropReason::Rejected), K as u64);
        let accepted = collector.accepted();
        let points: Vec<i64> = accepted
            .iter()
            .map(|r| dropped_in(r, DropReason::Rejected))
            .collect();
        match temporality {
            AggregationTemporality::Delta => assert_eq!(points, [K as i64, 0]),
            _ => assert_eq!(points, [K as i64, K as i64]),
        }
        let logged = logs.lines_with(&["reason=rejected", "HTTP 500"]);
        assert_eq!(logged.len(), K, "{logged:#?}");
        server.abort();
    }
}

/// However long the outage, the wait between attempts stays within one
/// interval (not `max_backoff`), so a collector that comes back gets the
/// next attempt within one interval.
#[tokio::test]
async fn retries_never_wait_longer_than_one_interval() {
    init_logs();
    let (collector, addr, server) = http_collector().await;
    const FAILURES: usize = 10;
    for _ in 0..FAILURES {
        collector.then(503, Vec::new(), b"");
    }
    let interval = Duration::from_millis(300);
    let s = Settings {
        interval,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(30),
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    wait_until("the interval delivered", || {
        get(&stats.export_successes) == 1
    })
    .await;
    let at: Vec<Instant> = collector
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(at.len(), FAILURES + 1);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff would have reached 20 ms x 2^9 = 10 s; the interval caps it.
    let slack = Duration::from_millis(150);
    assert!(gaps.iter().all(|&g| g <= interval + slack), "{gaps:?}");
    assert!(gaps[FAILURES - 1] >= interval.mul_f64(0.5), "{gaps:?}");
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

#[test]
fn backoff_cap_wins_over_the_first_delay() {
    let mut b = Backoff::new(Duration::from_millis(500), Duration::from_millis(100));
    for _ in 0..5 {
        assert!(b.next() <= Duration::from_millis(100));
    }
}

/// https endpoints build a TLS transport for both protocols with the
/// built-in roots (nothing connects yet); a CA file that turns bad is a
/// TLS error, not retryable.
#[tokio::test]
async fn https_endpoints_build_with_the_builtin_roots() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let s = Settings {
            endpoint: "https://collector.example:4317".to_owned(),
            protocol,
            ..Settings::default()
        };
        let c = Client::new(&s).unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        assert!(c.target().starts_with("https://"), "{}", c.target());
    }
    let dir = std::env::temp_dir().join(format!("syscope-export-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not pem").unwrap();
    let s = Settings {
        endpoint: "https://collector.example:4317".to_owned(),
        tls: super::TlsFiles {
            ca: Some(ca.clone()),
            ..Default::default()
        },
        ..Settings::default()
    };
    let err = Client::new(&s).unwrap_err();
    assert!(
        matches!(&err, ExportError::Tls(m) if m.contains("ca.pem is not PEM")),
        "{err}"
    );
    assert!(!err.is_retryable());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------ (g) log requests

#[test]
fn logs_url_follows_the_base_or_replaces_the_metrics_path() {
    let url = |endpoint: &str, metrics: Option<&str>| logs_http_url(endpoint, metrics);
    // A base endpoint: the spec's <base>/v1/logs.
    assert_eq!(url("http://c:4318", None), "http://c:4318/v1/logs");
    assert_eq!(url("https://c/otlp/", None), "https://c/otlp/v1/logs");
    // A base and a metrics endpoint: the metrics one is for metrics only.
    assert_eq!(
        url("http://base:4318", Some("http://m:9999/v1/metrics")),
        "http://base:4318/v1/logs"
    );
    // Only a metrics endpoint (config copies it into `endpoint`).
    let only = |m: &str| url(m, Some(m));
    assert_eq!(only("http://m:4318/v1/metrics"), "http://m:4318/v1/logs");
    assert_eq!(only("https://m/otlp/v1/metrics/"), "https://m/otlp/v1/logs");
    assert_eq!(only("http://m:9999/custom"), "http://m:9999/custom/v1/logs");
    let s = Settings {
        endpoint: "http://m:4318/v1/metrics".to_owned(),
        metrics_endpoint: Some("http://m:4318/v1/metrics".to_owned()),
        ..Settings::default()
    };
    assert_eq!(s.logs_http_url(), "http://m:4318/v1/logs");
    // gRPC: the base (config's copy of the metrics URL when only that is
    // given); the path is the RPC's.
    assert_eq!(s.logs_grpc_endpoint(), "http://m:4318/v1/metrics");
    let s = Settings {
        endpoint: "http://base:4317".to_owned(),
        metrics_endpoint: Some("http://m:4317".to_owned()),
        ..Settings::default()
    };
    assert_eq!(s.logs_grpc_endpoint(), "http://base:4317");
    assert_eq!(s.grpc_endpoint(), "http://m:4317");
}

/// A log request goes out at once over gRPC (the interval is a minute: it
/// does not wait for one), through `LogsService/Export`, with the headers,
/// gzip and deadline of metrics; it carries no self-metrics scope.
#[tokio::test]
async fn grpc_logs_are_sent_at_once_with_headers_and_gzip() {
    init_logs();
    let (collector, addr, server) = grpc_collector().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        headers: vec![("X-Api-Key".to_owned(), "secret".to_owned())],
        compression: Compression::Gzip,
        interval: Duration::from_secs(60),
        ..settings(Protocol::Grpc, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    let started = Instant::now();
    handle.submit_logs(log_request(1));
    wait_until("the log request", || get(&stats.export_successes) == 1).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    handle.submit(request(2));
    wait_until("the interval", || get(&stats.export_successes) == 2).await;
    assert_eq!(collector.tags(), ["log-1", "tag-2"]);
    let received = collector.received.lock().unwrap()[0].clone();
    assert_eq!(received.logs.as_ref(), Some(&log_request(1)));
    assert_eq!(received.headers.get("x-api-key").unwrap(), "secret");
    assert_eq!(
        received
            .headers
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    assert!(received.headers.get("grpc-timeout").is_some());
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

/// Over HTTP a log request is POSTed to `<endpoint>/v1/logs`, even when a
/// metrics endpoint is set (that one is for metrics), gzipped, with the
/// headers.
#[tokio::test]
async fn http_logs_are_posted_to_the_logs_url() {
    init_logs();
    let (collector, addr, server) = http_collector().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        endpoint: format!("http://{addr}/otlp/"),
        metrics_endpoint: Some(format!("http://{addr}/custom/metrics")),
        headers: vec![("X-Api-Key".to_owned(), "secret".to_owned())],
        compression: Compression::Gzip,
        interval: Duration::from_secs(60),
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    handle.submit_logs(log_request(1));
    handle.submit(request(2));
    wait_until("both", || get(&stats.export_successes) == 2).await;
    let received = collector.received.lock().unwrap().clone();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/otlp/v1/logs", "/custom/metrics"]);
    let log = &received[0];
    assert_eq!(log.method, "POST");
    assert_eq!(log.logs(), log_request(1));
    assert_eq!(log.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(log.header("content-encoding"), Some("gzip"));
    assert_eq!(log.header("x-api-key"), Some("secret"));
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);

    // Only a metrics endpoint: its /v1/metrics becomes /v1/logs.
    let only = format!("http://{addr}/gw/v1/metrics");
    let s = Settings {
        endpoint: only.clone(),
        metrics_endpoint: Some(only),
        ..settings(Protocol::HttpProtobuf, addr)
    };
    Client::new(&s)
        .unwrap()
        .send_logs(log_request(3))
        .await
        .unwrap();
    assert_eq!(collector.received.lock().unwrap()[2].path, "/gw/v1/logs");
    server.abort();
}

/// The collector down, then up: the log request is retried like an
/// interval and, once it is back, delivered before the intervals buffered
/// ahead of it; nothing is dropped.
async fn logs_are_retried_and_sent_first(protocol: Protocol) {
    init_logs();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(protocol, addr), Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    handle.submit(request(2));
    handle.submit_logs(log_request(1));
    wait_until("failed attempts", || get(&stats.export_failures) >= 2).await;
    assert_eq!(handle.buffered(), 3);

    let listener = TcpListener::bind(addr).await.unwrap();
    let received: Box<dyn Fn() -> Vec<String>> = match protocol {
        Protocol::Grpc => {
            let (collector, _server) = start_grpc(listener).await;
            Box::new(move || collector.tags())
        }
        Protocol::HttpProtobuf => {
            let (collector, _server) = start_http(listener);
            Box::new(move || collector.tags())
        }
    };
    wait_until("the backlog", || get(&stats.export_successes) == 3).await;
    assert_eq!(received(), ["log-1", "tag-1", "tag-2"], "{protocol:?}");
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
}

#[tokio::test]
async fn grpc_logs_are_retried_and_sent_first() {
    logs_are_retried_and_sent_first(Protocol::Grpc).await;
}

#[tokio::test]
async fn http_logs_are_retried_and_sent_first() {
    logs_are_retried_and_sent_first(Protocol::HttpProtobuf).await;
}

/// A buffer of 3 with the collector down: log requests push intervals out,
/// an interval never pushes a log request out, and a log request is dropped
/// only when the buffer holds nothing else. Every drop is counted as
/// `buffer_full` and logged with its signal; the log requests kept arrive
/// once the collector is back.
#[tokio::test]
async fn full_buffer_drops_intervals_before_log_requests() {
    let (logs, _guard) = Logs::capture();
    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let s = Settings {
        buffer_intervals: 3,
        ..settings(Protocol::HttpProtobuf, addr)
    };
    let handle = spawn(s, Arc::clone(&stats)).unwrap();
    handle.submit(request(1));
    handle.submit(request(2));
    handle.submit_logs(log_request(1));
    handle.submit(request(3)); // drops interval 1
    handle.submit_logs(log_request(2)); // drops interval 2
    handle.submit_logs(log_request(3)); // drops interval 3
    assert_eq!(stats.dropped(DropReason::BufferFull), 3);
    handle.submit(request(4)); // only log requests buffered: dropped itself
    assert_eq!(stats.dropped(DropReason::BufferFull), 4);
    handle.submit_logs(log_request(4)); // drops log request 1
    assert_eq!(stats.dropped(DropReason::BufferFull), 5);
    assert_eq!(handle.buffered(), 3);
    assert_eq!(get(&stats.export_buffered_intervals), 3);
    assert_eq!(
        logs.lines_with(&["reason=buffer_full", "signal=metrics"])
            .len(),
        4
    );
    let lost = logs.lines_with(&["ERROR", "reason=buffer_full", "signal=logs"]);
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert!(lost[0].contains("dropped_requests=1"), "{}", lost[0]);

    let (collector, server) = start_http(TcpListener::bind(addr).await.unwrap());
    wait_until("the log requests", || collector.tags().len() == 3).await;
    assert_eq!(collector.tags(), log_tags(2..=4));
    // The count reaches the collector with the next interval.
    handle.submit(request(5));
    wait_until("an interval", || collector.accepted().len() == 1).await;
    assert_eq!(
        dropped_in(&collector.accepted()[0], DropReason::BufferFull),
        5
    );
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();
}

/// A log request the collector refuses for good is dropped as `rejected`
/// (not retried) and logged with `signal=logs`; one still unsent at
/// shutdown is counted as `shutdown`.
#[tokio::test]
async fn rejected_and_unsent_log_requests_are_counted() {
    let (logs, _guard) = Logs::capture();
    let (collector, addr, server) = grpc_collector().await;
    collector.then(Err(tonic::Status::invalid_argument("bad record")));
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::Grpc, addr), Arc::clone(&stats)).unwrap();
    handle.submit_logs(log_request(1));
    handle.submit_logs(log_request(2));
    wait_until("the second", || get(&stats.export_successes) == 1).await;
    assert_eq!(collector.tags(), log_tags(1..=2));
    assert_eq!(stats.dropped(DropReason::Rejected), 1);
    let rejected = logs.lines_with(&["reason=rejected", "signal=logs", "bad record"]);
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(handle.shutdown(Duration::from_secs(1)).await, 0);
    server.abort();

    let addr = free_addr().await;
    let stats = Arc::new(SelfStats::default());
    let handle = spawn(settings(Protocol::Grpc, addr), Arc::clone(&stats)).unwrap();
    handle.submit_logs(log_request(3));
    handle.submit(request(3));
    assert_eq!(handle.shutdown(Duration::from_millis(200)).await, 2);
    assert_eq!(stats.dropped(DropReason::Shutdown), 2);
    for signal in ["signal=logs", "signal=metrics"] {
        let unsent = logs.lines_with(&["reason=shutdown", signal]);
        assert_eq!(unsent.len(), 1, "{signal}: {unsent:#?}");
    }
}

/// gRPC with a base and a metrics endpoint on different collectors: each
/// signal gets its own channel, with the same headers.
#[tokio::test]
async fn grpc_logs_follow_the_base_endpoint_not_the_metrics_one() {
    let (base, base_addr, base_server) = grpc_collector().await;
    let (metrics, metrics_addr, metrics_server) = grpc_collector().await;
    let s = Settings {
        endpoint: format!("http://{base_addr}"),
        metrics_endpoint: Some(format!("http://{metrics_addr}")),
        headers: vec![("tenant".to_owned(), "a".to_owned())],
        ..settings(Protocol::Grpc, base_addr)
    };
    let mut client = Client::new(&s).unwrap();
    assert_eq!(client.logs_target(), format!("http://{base_addr}"));
    client.send(request(1)).await.unwrap();
    client.send_logs(log_request(1)).await.unwrap();
    assert_eq!(metrics.tags(), tags(1..=1));
    assert_eq!(base.tags(), log_tags(1..=1));
    let received = base.received.lock().unwrap()[0].clone();
    assert_eq!(received.headers.get("tenant").unwrap(), "a");
    base_server.abort();
    metrics_server.abort();
}

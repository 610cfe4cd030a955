//! One OTLP export (metrics, or log records for SLO events) over gRPC or
//! HTTP/protobuf, with failures mapped to [`ExportError`] so the pipeline
//! can tell "retry" from "drop". Both signals share the transport settings
//! (TLS, headers, compression, timeout); only the target differs (see
//! `settings::logs_http_url`).

use std::error::Error as StdError;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsPartialSuccess, ExportLogsServiceRequest,
    ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, info, warn};

use super::tls::{self, Material, Stamp};
use super::{Compression, ExportError, Protocol, Settings};

const USER_AGENT: &str = concat!("syscope/", env!("CARGO_PKG_VERSION"));

/// Longest response-body excerpt kept in an error (it ends up in a log line).
const BODY_SNIPPET: usize = 256;

/// Sends export requests to one collector. Cheap to keep: the gRPC channel
/// and the HTTP connection pool are reused across calls.
#[derive(Debug)]
pub struct Client {
    inner: Inner,
    settings: Settings,
    /// The TLS files as last read: a change rebuilds the transport before the
    /// next request, so rotated certificates apply without a restart.
    stamps: Vec<Option<Stamp>>,
}

#[derive(Debug)]
enum Inner {
    // Boxed: two service clients make it far larger than the HTTP side.
    Grpc(Box<GrpcSender>),
    Http(HttpSender),
}

impl Client {
    /// Validates endpoint and headers and prepares the transport. Nothing
    /// connects yet: a collector that is down is not a startup error. Must be
    /// called inside a tokio runtime (the gRPC channel spawns its worker).
    pub fn new(settings: &Settings) -> Result<Self, ExportError> {
        let stamps = settings.tls.stamps();
        Ok(Self {
            inner: Self::build(settings)?,
            settings: settings.clone(),
            stamps,
        })
    }

    fn build(settings: &Settings) -> Result<Inner, ExportError> {
        let material = settings.tls.load().map_err(ExportError::Tls)?;
        Ok(match settings.protocol {
            Protocol::Grpc => Inner::Grpc(Box::new(GrpcSender::new(settings, &material)?)),
            Protocol::HttpProtobuf => Inner::Http(HttpSender::new(settings, &material)?),
        })
    }

    /// Rebuilds the transport when a TLS file changed. A file that cannot
    /// be used (half written, wrong content) is logged and the previous
    /// material kept; the next change is tried again.
    fn reload_if_changed(&mut self) {
        if self.settings.tls.is_empty() {
            return;
        }
        let now = self.settings.tls.stamps();
        if now == self.stamps {
            return;
        }
        self.stamps = now;
        match Self::build(&self.settings) {
            Ok(inner) => {
                self.inner = inner;
                info!("TLS files changed: reloaded the certificates");
            }
            Err(e) => {
                warn!(error = %e, "TLS files changed but cannot be used: keeping the previous ones")
            }
        }
    }

    /// Where metrics requests go, for logs.
    pub fn target(&self) -> &str {
        match &self.inner {
            Inner::Grpc(g) => &g.endpoint,
            Inner::Http(h) => &h.url,
        }
    }

    /// Where log requests go, for logs.
    pub fn logs_target(&self) -> &str {
        match &self.inner {
            Inner::Grpc(g) => &g.logs_endpoint,
            Inner::Http(h) => &h.logs_url,
        }
    }

    /// Sends one request. A partial success (some points rejected) is logged
    /// and reported as success: resending would not help.
    pub async fn send(&mut self, req: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        self.reload_if_changed();
        let result = match &mut self.inner {
            Inner::Grpc(g) => g.send(req).await,
            Inner::Http(h) => h.send(req).await,
        };
        result.map_err(|e| self.name_tls_files(e))
    }

    /// Sends one log request (`LogsService/Export`, or a POST to the logs
    /// URL), with the same transport, headers, compression and timeout as
    /// metrics. A partial success (some records rejected) is logged and
    /// reported as success, as for metrics.
    pub async fn send_logs(&mut self, req: ExportLogsServiceRequest) -> Result<(), ExportError> {
        self.reload_if_changed();
        let result = match &mut self.inner {
            Inner::Grpc(g) => g.send_logs(req).await,
            Inner::Http(h) => h.send_logs(req).await,
        };
        result.map_err(|e| self.name_tls_files(e))
    }

    /// A TLS handshake failure also names what the agent trusted and
    /// presented, so the log says which file to look at.
    fn name_tls_files(&self, err: ExportError) -> ExportError {
        let files = |message: &String| {
            tls::explain(message)?;
            let tls = &self.settings.tls;
            let ca = tls.ca.as_ref().map_or_else(
                || "the built-in Mozilla roots".to_owned(),
                |p| p.display().to_string(),
            );
            let client = tls
                .client_cert
                .as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
            Some(format!(" [trusted CA: {ca}; client certificate: {client}]"))
        };
        match err {
            ExportError::Connect {
                endpoint,
                mut message,
            } => {
                if let Some(suffix) = files(&message) {
                    message.push_str(&suffix);
                }
                ExportError::Connect { endpoint, message }
            }
            ExportError::Transport(mut message) => {
                if let Some(suffix) = files(&message) {
                    message.push_str(&suffix);
                }
                ExportError::Transport(message)
            }
            other => other,
        }
    }
}

#[derive(Debug)]
struct GrpcSender {
    client: MetricsServiceClient<Channel>,
    /// On the same channel as `client` when both signals go to one target.
    logs: LogsServiceClient<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    endpoint: String,
    logs_endpoint: String,
}

impl GrpcSender {
    fn new(settings: &Settings, material: &Material) -> Result<Self, ExportError> {
        let endpoint = settings.grpc_endpoint().to_owned();
        let logs_endpoint = settings.logs_grpc_endpoint().to_owned();
        let channel = grpc_channel(&endpoint, settings, material)?;
        let logs_channel = if logs_endpoint == endpoint {
            channel.clone()
        } else {
            grpc_channel(&logs_endpoint, settings, material)?
        };
        let (client, logs) = match settings.compression {
            Compression::None => (
                MetricsServiceClient::new(channel),
                LogsServiceClient::new(logs_channel),
            ),
            // `grpc-encoding: gzip`.
            Compression::Gzip => (
                MetricsServiceClient::new(channel).send_compressed(GZIP),
                LogsServiceClient::new(logs_channel).send_compressed(GZIP),
            ),
        };
        Ok(Self {
            client,
            logs,
            metadata: grpc_metadata(&settings.headers)?,
            timeout: settings.timeout,
            endpoint,
            logs_endpoint,
        })
    }

    /// A request with our metadata and deadline.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        // Tells the server our deadline (grpc-timeout); the local timeout
        // in `call` is what actually bounds the call.
        request.set_timeout(self.timeout);
        request
    }

    async fn send(&mut self, req: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        let request = self.request(req);
        let response = call(self.timeout, &self.endpoint, self.client.export(request)).await?;
        log_partial_success(response.partial_success);
        Ok(())
    }

    async fn send_logs(&mut self, req: ExportLogsServiceRequest) -> Result<(), ExportError> {
        let request = self.request(req);
        let response = call(self.timeout, &self.logs_endpoint, self.logs.export(request)).await?;
        log_logs_partial_success(response.partial_success);
        Ok(())
    }
}

const GZIP: tonic::codec::CompressionEncoding = tonic::codec::CompressionEncoding::Gzip;

/// One unary call bounded by `timeout`, its failure mapped.
async fn call<R>(
    timeout: Duration,
    endpoint: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
) -> Result<R, ExportError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ExportError::Timeout(timeout))?
        .map(tonic::Response::into_inner)
        .map_err(|status| status_error(&status, endpoint))
}

/// A lazy channel to `endpoint` (plaintext or TLS by its scheme).
fn grpc_channel(
    endpoint: &str,
    settings: &Settings,
    material: &Material,
) -> Result<Channel, ExportError> {
    let https = check_scheme(endpoint)?;
    let invalid = |reason: String| ExportError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let mut builder = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| invalid(error_chain(&e)))?
        .user_agent(USER_AGENT)
        .map_err(|e| invalid(error_chain(&e)))?;
    if https {
        // The server name checked is the endpoint's host (tonic's default).
        // OTLP/gRPC is always HTTP/2: TLS terminators that do not
        // negotiate ALPN (stunnel, some load balancers) still work.
        let mut config = ClientTlsConfig::new().assume_http2(true);
        config = match &material.ca_pem {
            Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config.with_webpki_roots(),
        };
        if let Some((chain, key)) = &material.identity {
            config = config.identity(tonic::transport::Identity::from_pem(chain, key));
        }
        builder = builder
            .tls_config(config)
            .map_err(|e| ExportError::Tls(error_chain(&e)))?;
    }
    Ok(builder
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout)
        // Lazy: the first export connects, and the channel reconnects by
        // itself after the collector restarts.
        .connect_lazy())
}

fn grpc_metadata(headers: &[(String, String)]) -> Result<MetadataMap, ExportError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let invalid = |reason: &str| ExportError::InvalidHeader {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        // gRPC metadata keys are lowercase on the wire; HTTP/2 rejects others.
        let key = MetadataKey::<Ascii>::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid("not a valid gRPC metadata key"))?;
        let value = MetadataValue::<Ascii>::try_from(value.trim())
            .map_err(|_| invalid("value is not valid ASCII metadata"))?;
        metadata.append(key, value);
    }
    Ok(metadata)
}

/// Maps a tonic status. Statuses decoded from a server never carry a
/// source error; one with a source was made locally from a transport error
/// (refused, reset, GOAWAY...), whatever code tonic picked (often Unknown):
/// a network failure, so retryable, not the collector's verdict.
fn status_error(status: &tonic::Status, endpoint: &str) -> ExportError {
    if status.source().is_some() {
        return match status.code() {
            tonic::Code::Unavailable => ExportError::Connect {
                endpoint: endpoint.to_owned(),
                message: explained(status_chain(status)),
            },
            code => {
                ExportError::Transport(explained(format!("{code:?}: {}", status_chain(status))))
            }
        };
    }
    ExportError::Status {
        code: status.code(),
        message: status.message().to_owned(),
        retry_after: rpc_retry_delay(status.details()),
    }
}

#[derive(Debug)]
struct HttpSender {
    client: reqwest::Client,
    url: String,
    /// Where log requests are POSTed (`settings::logs_http_url`).
    logs_url: String,
    /// User headers plus Content-Type/Content-Encoding, built once.
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl HttpSender {
    fn new(settings: &Settings, material: &Material) -> Result<Self, ExportError> {
        let url = settings.http_url();
        let logs_url = settings.logs_http_url();
        let https = check_scheme(&url)?;
        for url in [&url, &logs_url] {
            check_scheme(url)?;
            reqwest::Url::parse(url).map_err(|e| ExportError::InvalidEndpoint {
                endpoint: url.clone(),
                reason: e.to_string(),
            })?;
        }
        let gzip = settings.compression == Compression::Gzip;
        let mut headers = http_headers(&settings.headers)?;
        // Inserted last so a user header cannot make the body undecodable.
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if gzip {
            headers.insert(
                reqwest::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        } else {
            headers.remove(reqwest::header::CONTENT_ENCODING);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.timeout);
        if https {
            let tls_err = |e: reqwest::Error| ExportError::Tls(error_chain(&e));
            builder = builder.use_rustls_tls();
            if let Some(pem) = &material.ca_pem {
                // A private CA replaces the built-in roots, as for gRPC.
                builder = builder.tls_built_in_root_certs(false);
                for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(tls_err)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let Some((chain, key)) = &material.identity {
                let pem = [chain.as_slice(), b"\n", key.as_slice()].concat();
                builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(tls_err)?);
            }
        }
        let client = builder
            .build()
            .map_err(|e| ExportError::Transport(error_chain(&e)))?;
        Ok(Self {
            client,
            url,
            logs_url,
            headers,
            gzip,
            timeout: settings.timeout,
        })
    }

    async fn send(&mut self, req: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        let body = encode_body(&req, self.gzip)?;
        // The export is delivered even if the response cannot be decoded.
        if let Some(body) = self.post(&self.url, body).await? {
            if let Ok(resp) = ExportMetricsServiceResponse::decode(body) {
                log_partial_success(resp.partial_success);
            }
        }
        Ok(())
    }

    async fn send_logs(&mut self, req: ExportLogsServiceRequest) -> Result<(), ExportError> {
        let body = encode_body(&req, self.gzip)?;
        if let Some(body) = self.post(&self.logs_url, body).await? {
            if let Ok(resp) = ExportLogsServiceResponse::decode(body) {
                log_logs_partial_success(resp.partial_success);
            }
        }
        Ok(())
    }

    /// POSTs an encoded request. On success returns the response body if it
    /// is protobuf (an `Export*ServiceResponse`) and could be read.
    async fn post(&self, url: &str, body: Vec<u8>) -> Result<Option<bytes::Bytes>, ExportError> {
        let response = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| self.reqwest_error(&e, url))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let protobuf = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-protobuf"));
        let body = response.bytes().await;
        if status.is_success() {
            // The export is delivered even if the body cannot be read.
            return Ok(body.ok().filter(|_| protobuf));
        }
        let mut body = body.map(|b| error_body(&b, protobuf)).unwrap_or_default();
        if body.is_empty() {
            // "HTTP 503: Service Unavailable" reads better than "HTTP 503: ".
            body = status.canonical_reason().unwrap_or_default().to_owned();
        }
        Err(ExportError::Http {
            status: status.as_u16(),
            body,
            retry_after,
        })
    }

    fn reqwest_error(&self, err: &reqwest::Error, url: &str) -> ExportError {
        if err.is_timeout() {
            ExportError::Timeout(self.timeout)
        } else if err.is_connect() {
            ExportError::Connect {
                endpoint: url.to_owned(),
                message: explained(error_chain(err)),
            }
        } else {
            ExportError::Transport(explained(error_chain(err)))
        }
    }
}

fn http_headers(headers: &[(String, String)]) -> Result<HeaderMap, ExportError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = |reason: &str| ExportError::InvalidHeader {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let key = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid("not a valid HTTP header name"))?;
        let mut value =
            HeaderValue::from_str(value.trim()).map_err(|_| invalid("not a valid header value"))?;
        // These usually carry credentials: keep them out of Debug output.
        value.set_sensitive(true);
        map.append(key, value);
    }
    Ok(map)
}

fn encode_body(req: &impl prost::Message, gzip: bool) -> Result<Vec<u8>, ExportError> {
    let raw = req.encode_to_vec();
    if !gzip {
        return Ok(raw);
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    encoder
        .write_all(&raw)
        .and_then(|()| encoder.finish())
        .map_err(|e| ExportError::Encode(format!("gzip: {e}")))
}

/// Error bodies are a `google.rpc.Status` when protobuf (OTLP/HTTP spec);
/// otherwise whatever text the server (or a proxy in front) sent.
fn error_body(body: &[u8], protobuf: bool) -> String {
    if protobuf {
        if let Ok(status) = RpcStatus::decode(body) {
            if !status.message.is_empty() {
                return truncate(&status.message);
            }
        }
    }
    truncate(&String::from_utf8_lossy(body))
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_SNIPPET) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether the endpoint is https (config gave every endpoint its scheme).
fn check_scheme(endpoint: &str) -> Result<bool, ExportError> {
    if endpoint.starts_with("http://") {
        Ok(false)
    } else if endpoint.starts_with("https://") {
        Ok(true)
    } else {
        Err(ExportError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "must start with http:// or https://".to_owned(),
        })
    }
}

/// A transport error's text, with what a TLS failure means appended.
fn explained(message: String) -> String {
    match tls::explain(&message) {
        Some(hint) => format!("{message} ({hint})"),
        None => message,
    }
}

fn log_partial_success(partial: Option<ExportMetricsPartialSuccess>) {
    let Some(partial) = partial else { return };
    if partial.rejected_data_points > 0 {
        warn!(
            rejected_data_points = partial.rejected_data_points,
            message = %partial.error_message,
            "collector rejected part of an export"
        );
    } else if !partial.error_message.is_empty() {
        debug!(message = %partial.error_message, "collector sent a warning with an export");
    }
}

/// As [`log_partial_success`], for log records.
fn log_logs_partial_success(partial: Option<ExportLogsPartialSuccess>) {
    let Some(partial) = partial else { return };
    if partial.rejected_log_records > 0 {
        warn!(
            rejected_log_records = partial.rejected_log_records,
            message = %partial.error_message,
            "collector rejected part of a log export"
        );
    } else if !partial.error_message.is_empty() {
        debug!(message = %partial.error_message, "collector sent a warning with a log export");
    }
}

/// An error and its sources on one line: reqwest's and tonic's top-level
/// messages alone ("error sending request") hide the cause.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = cause.source();
    }
    text
}

/// A status's own Display dumps its source with `Debug`; this keeps the
/// message and the sources' plain text.
fn status_chain(status: &tonic::Status) -> String {
    match status.source() {
        Some(source) if status.message().is_empty() => error_chain(source),
        Some(source) => {
            let causes = error_chain(source);
            if causes.contains(status.message()) {
                causes
            } else {
                format!("{}: {causes}", status.message())
            }
        }
        None => status.message().to_owned(),
    }
}

/// `Retry-After`: delta-seconds or an IMF-fixdate (RFC 9110 10.2.3).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses "Sun, 06 Nov 1994 08:49:37 GMT", the only date format servers
/// may send.
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    let (_, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour: u64 = clock.next()?.parse().ok()?;
    let minute: u64 = clock.next()?.parse().ok()?;
    let second: u64 = clock.next()?.parse().ok()?;
    if parts.next()? != "GMT"
        || parts.next().is_some()
        || clock.next().is_some()
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `google.rpc.Status`, the error body of OTLP/HTTP and the payload of
/// gRPC status details. Declared here: only three fields are needed.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: how a throttling server says when to come back.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The `RetryInfo` delay among a gRPC status's details, if any (what
/// opentelemetry-rust honours for throttling).
fn rpc_retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .find(|any| any.type_url.ends_with("/google.rpc.RetryInfo"))
        .and_then(|any| RetryInfo::decode(any.value.as_slice()).ok())
        .and_then(|info| info.retry_delay)
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, 0).saturating_add(Duration::from_nanos(nanos.into())))
        })
}

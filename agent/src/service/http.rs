//! A deliberately tiny HTTP/1.1 server for two health paths (and, through
//! [`Handler`], the Prometheus endpoint's `/metrics`): one request per
//! connection, request line parsed strictly, headers read (bounded) and
//! left to the handler, `Connection: close`. No HTTP library: the agent only
//! needs this, and a small parser is easy to bound and to test.
//!
//! The endpoint may face the node network (the DaemonSet binds
//! `0.0.0.0:9479`, and the kubelet gives liveness 2 s), so whoever reaches it
//! must not be able to starve the probes and get the agent restarted:
//!
//! - Each connection is its own task; the accept loop never waits on a peer.
//! - [`HEAD_TIMEOUT`]: the whole request head must arrive within 2 s of the
//!   accept, however it trickles in (slowloris), else 408 and close.
//! - [`WRITE_TIMEOUT`]: the response must be taken within 1 s, so a client
//!   that never reads cannot keep its slot. No connection lives longer than
//!   the two together (3 s).
//! - [`MAX_CONNECTIONS`]: 256 open at once. At the limit the oldest is closed
//!   to admit the new one. A probe sends its request right after connecting
//!   and is answered the next time the runtime polls its task, so it is
//!   always among the youngest: whoever holds every slot only evicts their
//!   own connections, and a probe is lost only if 256 connections are
//!   accepted between its accept and its first read. Refusing new
//!   connections at the limit instead would hand the endpoint to whoever
//!   fills it first.
//!
//! What was closed early is counted in [`ConnectionStats`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tracing::debug;

use super::health::HealthState;

/// Request head limit: probes send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// From accept to the end of the request head (slowloris bound).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// To hand the response to a client and close (a client that never reads).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections open at once; at the limit the oldest is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The limits above (another endpoint may take a longer write deadline for
/// larger answers), replaceable in tests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head: Duration,
    pub write: Duration,
    pub connections: usize,
    /// Names the endpoint in logs.
    pub what: &'static str,
}

pub const LIMITS: Limits = Limits {
    head: HEAD_TIMEOUT,
    write: WRITE_TIMEOUT,
    connections: MAX_CONNECTIONS,
    what: "health endpoint",
};

/// Answers one request from its head (request line and headers).
pub trait Handler: Send + Sync + 'static {
    fn respond(&self, head: &[u8]) -> Response;
}

impl Handler for HealthState {
    fn respond(&self, head: &[u8]) -> Response {
        match parse_request_line(head) {
            Ok(req) => route_health(&req, self),
            Err(resp) => resp,
        }
    }
}

/// What the endpoint's connections did, for the agent's own metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    /// Closed at [`MAX_CONNECTIONS`] to admit a newer one.
    evicted: AtomicU64,
    /// The head did not arrive within [`HEAD_TIMEOUT`] or the response was
    /// not taken within [`WRITE_TIMEOUT`].
    timed_out: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
}

impl ConnectionStats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Connections whose socket is still open.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// The most connections open at once since start.
    pub fn peak_open(&self) -> u64 {
        self.peak_open.load(Ordering::Relaxed)
    }
}

/// Counts one connection open for as long as its task holds the socket
/// (an aborted task drops it too).
struct OpenGuard(Arc<ConnectionStats>);

impl OpenGuard {
    fn new(stats: &Arc<ConnectionStats>) -> Self {
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_open.fetch_max(open, Ordering::Relaxed);
        OpenGuard(Arc::clone(stats))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response: status code, content type and body (shared, not copied, so
/// that a large body served to many clients costs one allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    /// `Content-Encoding` of the body (gzip), if any.
    pub content_encoding: Option<&'static str>,
    pub body: bytes::Bytes,
    /// HEAD: same headers, no body.
    pub head_only: bool,
}

impl Response {
    pub fn new(code: u16, content_type: &'static str, body: bytes::Bytes) -> Self {
        Response {
            code,
            content_type,
            content_encoding: None,
            body,
            head_only: false,
        }
    }

    fn json(code: u16, body: String) -> Self {
        Response::new(code, "application/json", body.into())
    }

    pub fn error(code: u16) -> Self {
        Response::json(code, format!("{{\"error\":\"{}\"}}", reason(code)))
    }

    /// Status line and headers.
    pub fn head_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.code,
            reason(self.code),
            self.content_type,
            self.body.len()
        );
        if self.code == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        if let Some(encoding) = self.content_encoding {
            head.push_str("Content-Encoding: ");
            head.push_str(encoding);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A request line that parsed: method and path (query and fragment cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

impl RequestLine<'_> {
    pub fn head_only(&self) -> bool {
        self.method == "HEAD"
    }

    /// GET and HEAD are the only methods either endpoint takes.
    pub fn is_read(&self) -> bool {
        self.method == "GET" || self.head_only()
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The request line of `head` (bytes up to the first CRLF or LF), answered.
pub fn respond(head: &[u8], state: &HealthState) -> Response {
    Handler::respond(state, head)
}

/// The request line of `head`, parsed strictly; a malformed one gives the
/// error response to send.
pub fn parse_request_line(head: &[u8]) -> Result<RequestLine<'_>, Response> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Response::error(400));
    };
    // RFC 9112 3: method SP request-target SP HTTP-version, single spaces.
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(400));
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(is_tchar) {
        return Err(Response::error(400));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") && v.len() > 5 => return Err(Response::error(505)),
        _ => return Err(Response::error(400)),
    }
    // origin-form, or absolute-form (which servers must accept) reduced to it.
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return Err(Response::error(400)),
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(Response::error(400));
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Ok(RequestLine { method, path })
}

/// A header's value from a request head (case-insensitive name; the first
/// occurrence). Headers are ASCII; a line that is not is skipped.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim_matches([' ', '\t', '\r']))
    })
}

fn route_health(req: &RequestLine<'_>, state: &HealthState) -> Response {
    let mut resp = match req.path {
        "/healthz" | "/readyz" if !req.is_read() => Response::error(405),
        "/healthz" => Response::json(200, state.report().healthz_json()),
        "/readyz" => {
            let r = state.report();
            Response::json(if r.ready { 200 } else { 503 }, r.readyz_json())
        }
        _ => Response::error(404),
    };
    resp.head_only = req.head_only();
    resp
}

/// Serves until the task is aborted. Accept errors (e.g. out of file
/// descriptors) are logged and retried after a pause, never fatal.
pub async fn serve<H: Handler>(listener: TcpListener, state: Arc<H>, stats: Arc<ConnectionStats>) {
    serve_with(listener, state, stats, LIMITS).await;
}

/// [`serve`] with other limits (the Prometheus endpoint's longer write
/// deadline, or a test's).
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    state: Arc<H>,
    stats: Arc<ConnectionStats>,
    limits: Limits,
) {
    // Open connections, oldest first.
    let mut open: VecDeque<AbortHandle> = VecDeque::with_capacity(limits.connections);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(error = %e, endpoint = limits.what, "accept failed");
                // Out of descriptors: give one of ours back so that the
                // next accept, perhaps a probe, can succeed.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    evict_oldest(&mut open, &stats, limits);
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        open.retain(|task| !task.is_finished());
        let limit = limits.connections.max(1);
        while open.len() >= limit {
            evict_oldest(&mut open, &stats, limits);
        }
        // Let the runtime drop the aborted tasks, and with them their
        // sockets, before this one is counted: never more than the limit.
        while stats.open() >= limit as u64 {
            tokio::task::yield_now().await;
        }
        let guard = OpenGuard::new(&stats);
        let state = Arc::clone(&state);
        let stats = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            handle(stream, &*state, &stats, limits).await;
            drop(guard);
        });
        open.push_back(task.abort_handle());
    }
}

fn evict_oldest(open: &mut VecDeque<AbortHandle>, stats: &ConnectionStats, limits: Limits) {
    let Some(oldest) = open.pop_front() else {
        return;
    };
    oldest.abort();
    stats.evicted.fetch_add(1, Ordering::Relaxed);
    debug!(
        limit = limits.connections,
        endpoint = limits.what,
        "connection limit reached, closed the oldest"
    );
}

/// One connection: read the head, answer, close; every step under a
/// deadline. A connection that hits one counts once in `timed_out`.
async fn handle<S, H>(mut stream: S, state: &H, stats: &ConnectionStats, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut timed_out = false;
    let resp = match tokio::time::timeout(limits.head, read_head(&mut stream)).await {
        Ok(Ok(head)) => state.respond(&head),
        Ok(Err(HeadError::TooLarge)) => Response::error(431),
        Ok(Err(HeadError::Io)) => return,
        Err(_) => {
            debug!(timeout = ?limits.head, endpoint = limits.what, "request head too slow");
            timed_out = true;
            Response::error(408)
        }
    };
    let answer = async {
        stream.write_all(&resp.head_bytes()).await?;
        if !resp.head_only {
            stream.write_all(&resp.body).await?;
        }
        stream.shutdown().await
    };
    if tokio::time::timeout(limits.write, answer).await.is_err() {
        debug!(timeout = ?limits.write, endpoint = limits.what, "response not taken in time");
        timed_out = true;
    }
    if timed_out {
        stats.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

enum HeadError {
    TooLarge,
    Io,
}

/// Reads up to the blank line ending the head, so closing afterwards does
/// not reset the connection under the client's feet. A body, if any, is
/// not read: neither path takes one.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            // Peer closed: answer what we have if it holds a request line.
            return if buf.contains(&b'\n') {
                Ok(buf)
            } else {
                Err(HeadError::Io)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if find(&buf, b"\r\n\r\n") || find(&buf, b"\n\n") {
            return Ok(buf);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;

    fn code(req: &str, state: &HealthState) -> u16 {
        respond(req.as_bytes(), state).code
    }

    #[test]
    fn routes_methods_and_malformed_requests() {
        let s = HealthState::default();
        assert_eq!(code("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &s), 200);
        assert_eq!(code("GET /readyz HTTP/1.1\r\n\r\n", &s), 503);
        s.attached("tp_btf", "{}".into(), None);
        assert_eq!(code("GET /readyz HTTP/1.1\r\n\r\n", &s), 200);
        assert_eq!(code("GET /readyz?verbose=1 HTTP/1.0\n\n", &s), 200);
        assert_eq!(
            code("GET http://node:9479/readyz HTTP/1.1\r\n\r\n", &s),
            200
        );
        assert_eq!(code("GET / HTTP/1.1\r\n\r\n", &s), 404);
        assert_eq!(code("GET /metrics HTTP/1.1\r\n\r\n", &s), 404);
        assert_eq!(code("GET /healthz/ HTTP/1.1\r\n\r\n", &s), 404);
        assert_eq!(code("POST /readyz HTTP/1.1\r\n\r\n", &s), 405);
        assert_eq!(code("DELETE /healthz HTTP/1.1\r\n\r\n", &s), 405);
        let head = respond(b"HEAD /readyz HTTP/1.1\r\n\r\n", &s);
        assert_eq!(head.code, 200);
        let bytes = String::from_utf8(head.to_bytes()).unwrap();
        assert!(bytes.ends_with("\r\n\r\n"), "HEAD has no body: {bytes}");
        assert!(bytes.contains(&format!("Content-Length: {}", head.body.len())));
        for bad in [
            "",
            "GET",
            "GET /readyz",
            "GET  /readyz HTTP/1.1",
            "GET /readyz HTTP/1.1 extra",
            "GET readyz HTTP/1.1",
            "G(T /readyz HTTP/1.1",
            "GET /readyz FTP/1.0",
            "GET /ready\x01z HTTP/1.1",
            "\u{fffd}GET /readyz HTTP/1.1",
        ] {
            assert_eq!(code(bad, &s), 400, "{bad:?}");
        }
        assert_eq!(code("GET /readyz HTTP/2.0\r\n\r\n", &s), 505);
        assert_eq!(respond(&[0xff, 0xfe, b'\n'], &s).code, 400);
        let not_allowed =
            String::from_utf8(respond(b"PUT /healthz HTTP/1.1\n\n", &s).to_bytes()).unwrap();
        assert!(
            not_allowed.contains("Allow: GET, HEAD\r\n"),
            "{not_allowed}"
        );
    }

    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(raw).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    fn spawn_server(
        listener: TcpListener,
        limits: Limits,
    ) -> (Arc<ConnectionStats>, JoinHandle<()>) {
        let stats = Arc::new(ConnectionStats::default());
        let state = Arc::new(HealthState::default());
        let server = tokio::spawn(serve_with(listener, state, Arc::clone(&stats), limits));
        (stats, server)
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HealthState::default());
        let stats = Arc::new(ConnectionStats::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&state), Arc::clone(&stats)));

        let r = exchange(addr, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("\"attached\":false"), "{r}");
        state.attached("tracepoint", "{}".into(), None);
        let r = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            r.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{r}"
        );
        assert!(body.contains("\"hook\":\"tracepoint\""), "{body}");

        // A head split over several writes, then one too large to keep.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /heal").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(b"thz HTTP/1.1\r\nA: b\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        let big = format!(
            "GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let r = exchange(addr, big.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

        // A client that connects and says nothing does not block others.
        let _idle = TcpStream::connect(addr).await.unwrap();
        let r = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found"), "{r}");
        assert_eq!(stats.accepted(), 6);
        assert_eq!(stats.evicted() + stats.timed_out(), 0);
        server.abort();
    }

    const SHORT: Limits = Limits {
        head: Duration::from_millis(100),
        write: Duration::from_millis(100),
        connections: 4,
        what: "test endpoint",
    };

    #[tokio::test]
    async fn silent_client_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stats, server) = spawn_server(listener, SHORT);
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert_eq!(stats.timed_out(), 1);
        server.abort();
    }

    /// At the limit the oldest connection is closed for the new one, so
    /// idle connections holding every slot cannot lock a probe out. (The
    /// previous server made the probe wait for a slot instead.)
    #[tokio::test]
    async fn full_house_closes_the_oldest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            head: Duration::from_secs(60),
            ..SHORT
        };
        let (stats, server) = spawn_server(listener, limits);
        let mut idle = Vec::new();
        for _ in 0..limits.connections {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        while stats.open() < limits.connections as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("probe answered at the limit");
        assert!(probe.starts_with("HTTP/1.1 200 OK"), "{probe}");
        assert_eq!(stats.evicted(), 1);
        // The oldest was closed without an answer; the others are open.
        let mut rest = Vec::new();
        assert_eq!(idle[0].read_to_end(&mut rest).await.unwrap(), 0);
        let mut byte = [0u8; 1];
        let still_open = tokio::time::timeout(Duration::from_millis(50), idle[1].read(&mut byte));
        assert!(still_open.await.is_err(), "the second oldest kept its slot");
        assert!(stats.peak_open() <= limits.connections as u64);
        server.abort();
    }

    /// A client that sends its request and never reads the answer loses
    /// its slot at the write deadline. Over TCP the small answer always
    /// fits the socket buffers, so a pipe with 64 bytes of room stands in
    /// for a peer whose window is closed.
    #[tokio::test]
    async fn client_that_never_reads_loses_its_slot() {
        let (mut client, server_side) = tokio::io::duplex(64);
        client
            .write_all(b"GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let state = HealthState::default();
        let stats = ConnectionStats::default();
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            handle(server_side, &state, &stats, SHORT),
        )
        .await
        .expect("handle gave up at the write deadline");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(stats.timed_out(), 1);
        // Only the first 64 bytes of the answer were taken.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 64, "{}", String::from_utf8_lossy(&got));

        // And over TCP: a client that never reads does not keep a slot.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stats, server) = spawn_server(listener, LIMITS);
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /readyz HTTP/1.1\r\n\r\n").await.unwrap();
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT * 2;
        while stats.accepted() == 0 || stats.open() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "slot still held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(c);
        server.abort();
    }

    /// Runs `f` on a current-thread runtime of its own thread, as the agent
    /// runs the endpoint, until the returned sender is dropped.
    fn on_own_thread<F>(
        f: F,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::select! {
                    () = f => {}
                    _ = stopped => {}
                }
            });
        });
        (stop, thread)
    }

    /// Connects, says nothing, and connects again once the server closes.
    async fn idle_peer(addr: SocketAddr) {
        loop {
            if let Ok(mut c) = TcpStream::connect(addr).await {
                let mut sink = Vec::new();
                let _ = c.read_to_end(&mut sink).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a head that never ends, a byte every 500 ms, and connects
    /// again once the server closes.
    async fn slowloris_peer(addr: SocketAddr) {
        let prefix = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
        loop {
            if let Ok(mut c) = TcpStream::connect(addr).await {
                let mut bytes = prefix.iter().chain(std::iter::repeat(&b'a'));
                let mut buf = [0u8; 512];
                loop {
                    tokio::select! {
                        _ = c.read(&mut buf) => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {
                            let byte = [*bytes.next().unwrap()];
                            if c.write_all(&byte).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Serves with the real limits while `idle` and `slow` peers keep
    /// connecting, and sends 20 probes like the kubelet's, one every 150 ms
    /// (so over more than a head timeout): each must be answered within
    /// 500 ms. Returns the server's counts.
    fn probes_under_flood(idle: usize, slow: usize) -> Arc<ConnectionStats> {
        // One flood at a time: together they would need over 1000
        // descriptors, the usual soft limit.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnectionStats::default());
        let (stop_server, server) = on_own_thread({
            let stats = Arc::clone(&stats);
            async move {
                let listener = TcpListener::from_std(listener).unwrap();
                serve(listener, Arc::new(HealthState::default()), stats).await;
            }
        });
        let (stop_peers, peers) = on_own_thread(async move {
            let mut peers = tokio::task::JoinSet::new();
            for _ in 0..idle {
                peers.spawn(idle_peer(addr));
            }
            for _ in 0..slow {
                peers.spawn(slowloris_peer(addr));
            }
            while peers.join_next().await.is_some() {}
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.accepted() < (idle + slow) as u64 {
            assert!(std::time::Instant::now() < deadline, "peers not connected");
            std::thread::sleep(Duration::from_millis(10));
        }

        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let started = std::time::Instant::now();
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            std::io::Write::write_all(&mut c, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut out = String::new();
            let read = std::io::Read::read_to_string(&mut c, &mut out);
            let took = started.elapsed();
            assert!(
                read.is_ok() && out.starts_with("HTTP/1.1 200 OK"),
                "probe {i} after {took:?}: {read:?} {out:?}"
            );
            assert!(took < Duration::from_millis(500), "probe {i} took {took:?}");
            slowest = slowest.max(took);
            std::thread::sleep(Duration::from_millis(150));
        }
        assert!(
            stats.peak_open() <= MAX_CONNECTIONS as u64,
            "{} open at once",
            stats.peak_open()
        );
        eprintln!(
            "{idle} idle, {slow} slow: slowest probe {slowest:?}; accepted {}, evicted {}, \
             timed out {}, peak open {}",
            stats.accepted(),
            stats.evicted(),
            stats.timed_out(),
            stats.peak_open()
        );

        // The peers gone, every slot is given back.
        drop(stop_peers);
        peers.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while stats.open() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} left open",
                stats.open()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stop_server);
        server.join().unwrap();
        stats
    }

    /// 300 idle and 50 slowloris connections, renewed as the server closes
    /// them, hold more than every slot and do not slow the probes down.
    /// Against the previous server (16 connections at once, each waiting
    /// up to 5 s for its head) the first probe went unanswered for 6 s.
    #[test]
    fn probes_answered_under_idle_and_slowloris_flood() {
        let stats = probes_under_flood(300, 50);
        assert!(stats.evicted() > 0, "the limit was reached");
    }

    /// Below the limit nothing is evicted: the head deadline closes the
    /// slowloris connections instead, each after 2 s.
    #[test]
    fn slowloris_below_the_limit_times_out() {
        let stats = probes_under_flood(0, 200);
        assert_eq!(stats.evicted(), 0);
        assert!(stats.timed_out() >= 200, "{}", stats.timed_out());
    }
}

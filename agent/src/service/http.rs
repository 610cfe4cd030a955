//! A deliberately tiny HTTP/1.1 server for two health paths: one request per
//! connection, request line parsed strictly, headers read (bounded) and
//! ignored, `Connection: close`. No HTTP library: the agent only needs this,
//! and a small parser is easy to bound and to test.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

use super::health::HealthState;

/// Request head limit: probes send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head (slowloris bound).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// A parsed response: status code and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub body: String,
    /// HEAD: same headers, no body.
    pub head_only: bool,
}

impl Response {
    fn json(code: u16, body: String) -> Self {
        Response {
            code,
            body,
            head_only: false,
        }
    }

    fn error(code: u16) -> Self {
        Response::json(code, format!("{{\"error\":\"{}\"}}", reason(code)))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.code,
            reason(self.code),
            self.body.len()
        );
        if self.code == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
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
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Response::error(400);
    };
    // RFC 9112 3: method SP request-target SP HTTP-version, single spaces.
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::error(400);
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(is_tchar) {
        return Response::error(400);
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") && v.len() > 5 => return Response::error(505),
        _ => return Response::error(400),
    }
    // origin-form, or absolute-form (which servers must accept) reduced to it.
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return Response::error(400),
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Response::error(400);
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let head_only = method == "HEAD";
    let mut resp = match path {
        "/healthz" | "/readyz" if method != "GET" && !head_only => Response::error(405),
        "/healthz" => Response::json(200, state.report().healthz_json()),
        "/readyz" => {
            let r = state.report();
            Response::json(if r.ready { 200 } else { 503 }, r.readyz_json())
        }
        _ => Response::error(404),
    };
    resp.head_only = head_only;
    resp
}

/// Serves until the task is aborted. Accept errors (e.g. out of file
/// descriptors) are logged and retried after a pause, never fatal.
pub async fn serve(listener: TcpListener, state: Arc<HealthState>) {
    serve_with_timeout(listener, state, READ_TIMEOUT).await;
}

async fn serve_with_timeout(listener: TcpListener, state: Arc<HealthState>, timeout: Duration) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    handle(stream, &state, timeout).await;
                    drop(permit);
                });
            }
            Err(e) => {
                debug!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, state: &HealthState, timeout: Duration) {
    let resp = match tokio::time::timeout(timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => respond(&head, state),
        Ok(Err(HeadError::TooLarge)) => Response::error(431),
        Ok(Err(HeadError::Io)) => return,
        Err(_) => Response::error(408),
    };
    let _ = stream.write_all(&resp.to_bytes()).await;
    let _ = stream.shutdown().await;
}

enum HeadError {
    TooLarge,
    Io,
}

/// Reads up to the blank line ending the head, so closing afterwards does
/// not reset the connection under the client's feet. A body, if any, is
/// not read: neither path takes one.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
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
    use std::sync::Arc;
    use tokio::net::TcpListener;

    fn code(req: &str, state: &HealthState) -> u16 {
        respond(req.as_bytes(), state).code
    }

    #[test]
    fn routes_methods_and_malformed_requests() {
        let s = HealthState::default();
        assert_eq!(code("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &s), 200);
        assert_eq!(code("GET /readyz HTTP/1.1\r\n\r\n", &s), 503);
        s.attached("tp_btf", None);
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

    async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(raw).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HealthState::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));

        let r = exchange(addr, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("\"attached\":false"), "{r}");
        state.attached("tracepoint", None);
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
        server.abort();
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HealthState::default());
        let timeout = Duration::from_millis(100);
        let server = tokio::spawn(serve_with_timeout(listener, state, timeout));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        server.abort();
    }
}

//! A real third-party OTLP receiver (rotel-agent) run as a child process for tests.

use crate::otlp_text::{self, LogRecord, MetricPoint};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long rotel gets to start listening (the machine may be busy building).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Output must be quiet this long before wait_for trusts it, so a request that is still
/// being printed is not judged half-read.
const SETTLE: Duration = Duration::from_millis(50);

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// rotel-agent: `$SYSCOPE_ROTEL`, else `<root>/.venv/bin/rotel-agent`, else where
/// `pip install rotel` puts it (`<root>/.venv/lib/python3*/site-packages/rotel/rotel-agent`).
pub fn rotel_agent_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SYSCOPE_ROTEL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "SYSCOPE_ROTEL={} is not a file; unset it or run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    let venv = workspace_root().join(".venv");
    let bin = venv.join("bin/rotel-agent");
    if bin.is_file() {
        return bin;
    }
    let site = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.is_file());
    site.unwrap_or_else(|| {
        panic!(
            "rotel-agent not found at {} (nor under .venv/lib/python3*/site-packages/rotel/): \
             run `cargo xtask setup`, or set SYSCOPE_ROTEL to the rotel-agent binary",
            bin.display()
        )
    })
}

/// A loopback TCP port that was free a moment ago (the OS picks it; another process may take
/// it before we use it, which `Receiver::start` handles by retrying).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// N distinct free loopback ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    // Hold all listeners at once so the OS cannot hand out the same port twice.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

#[derive(Default)]
struct Output {
    text: String,
    last_growth: Option<Instant>,
}

/// A running rotel-agent printing every metric and log record it receives; killed on drop.
pub struct Receiver {
    // In a Mutex so every method takes &self (a receiver may be shared between threads).
    child: Mutex<Child>,
    grpc_port: u16,
    http_port: u16,
    output: Arc<Mutex<Output>>,
    dir: PathBuf,
}

impl Receiver {
    /// Starts a receiver on two free loopback ports.
    pub fn start() -> Receiver {
        let mut last_err = String::new();
        for _ in 0..5 {
            let [grpc, http] = free_ports::<2>();
            match Receiver::try_start_on(grpc, http) {
                Ok(r) => return r,
                // Someone took a port between our probe and rotel's bind: pick others.
                Err(e) if e.contains("Address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("rotel-agent could not find free ports: {last_err}");
    }

    /// Starts a receiver on known ports (e.g. for a test that starts the receiver after the
    /// agent, to check retries). Panics if rotel cannot listen there.
    pub fn start_on(grpc_port: u16, http_port: u16) -> Receiver {
        Receiver::try_start_on(grpc_port, http_port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(grpc_port: u16, http_port: u16) -> Result<Receiver, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = rotel_agent_path();
        // Fail early if a port is taken: otherwise the readiness probe below could connect to
        // whoever holds it while our rotel is still about to die of EADDRINUSE.
        for port in [grpc_port, http_port] {
            TcpListener::bind(("127.0.0.1", port))
                .map_err(|e| format!("cannot use 127.0.0.1:{port} for rotel-agent: {e}"))?;
        }
        // Own pid/log files: rotel's defaults are shared /tmp paths.
        let dir = std::env::temp_dir().join(format!(
            "syscope-rotel-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut child = Command::new(&path)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "blackhole"])
            // One `--debug-log` per signal (rotel rejects a comma list).
            .args([
                "--debug-log",
                "metrics",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
            ])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            // Plain log lines, no ANSI colors.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", path.display()))?;
        let output = Arc::new(Mutex::new(Output::default()));
        spawn_reader(child.stdout.take().map(Pipe::Out), &output);
        spawn_reader(child.stderr.take().map(Pipe::Err), &output);
        let r = Receiver {
            child: Mutex::new(child),
            grpc_port,
            http_port,
            output,
            dir,
        };
        r.wait_listening()?;
        Ok(r)
    }

    fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = [self.grpc_port, self.http_port].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        loop {
            if let Some(status) = self.exited() {
                // Let the reader threads pick up the last words.
                thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "rotel-agent exited with {status} before listening on {:?}:\n{}",
                    addrs,
                    self.output_tail(40)
                ));
            }
            let up = addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "rotel-agent did not listen on {:?} within {START_TIMEOUT:?}:\n{}",
                    addrs,
                    self.output_tail(40)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if rotel is no longer running.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// "http://127.0.0.1:P", for an OTLP/gRPC exporter.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// "http://127.0.0.1:Q", for an OTLP/HTTP exporter (it appends /v1/metrics).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Everything rotel printed so far (stdout and stderr, whole lines).
    pub fn raw_output(&self) -> String {
        self.output.lock().unwrap().text.clone()
    }

    /// The last `lines` lines rotel printed.
    pub fn output_tail(&self, lines: usize) -> String {
        let out = self.output.lock().unwrap();
        let all: Vec<&str> = out.text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every data point received so far, in order.
    pub fn points(&self) -> Vec<MetricPoint> {
        otlp_text::parse(&self.raw_output())
    }

    /// Polls until `predicate` holds on all points received so far and returns them.
    /// Panics with rotel's recent output on timeout or if rotel died.
    pub fn wait_for(
        &self,
        timeout: Duration,
        predicate: impl Fn(&[MetricPoint]) -> bool,
    ) -> Vec<MetricPoint> {
        self.wait_parsed(timeout, otlp_text::parse, predicate, |points| {
            format!(
                "{} points received, metrics {:?}",
                points.len(),
                metric_names(points)
            )
        })
    }

    /// Every log record received so far, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        otlp_text::parse_logs(&self.raw_output())
    }

    /// Polls until `predicate` holds on all log records received so far and returns them.
    /// Panics with rotel's recent output on timeout or if rotel died.
    pub fn wait_for_logs(
        &self,
        timeout: Duration,
        predicate: impl Fn(&[LogRecord]) -> bool,
    ) -> Vec<LogRecord> {
        self.wait_parsed(timeout, otlp_text::parse_logs, predicate, |logs| {
            let bodies: Vec<&str> = logs.iter().map(|r| r.body.as_str()).collect();
            format!("{} log records received, bodies {bodies:?}", logs.len())
        })
    }

    /// `wait_for` for any signal: parses the output once it is quiet and tests `predicate`.
    fn wait_parsed<T>(
        &self,
        timeout: Duration,
        parse: fn(&str) -> Vec<T>,
        predicate: impl Fn(&[T]) -> bool,
        describe: impl Fn(&[T]) -> String,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let timed_out = Instant::now() > deadline;
            let (text, settled) = {
                let out = self.output.lock().unwrap();
                let settled = out.last_growth.is_none_or(|t| t.elapsed() >= SETTLE);
                (out.text.clone(), settled)
            };
            if settled || timed_out {
                let parsed = parse(&text);
                if predicate(&parsed) {
                    return parsed;
                }
                if timed_out {
                    panic!(
                        "receiver: condition not met within {timeout:?}; {}; rotel output \
                         tail:\n{}",
                        describe(&parsed),
                        self.output_tail(120)
                    );
                }
            }
            if let Some(status) = self.exited() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "rotel-agent exited with {status} while waiting; output tail:\n{}",
                    self.output_tail(120)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn metric_names(points: &[MetricPoint]) -> Vec<&str> {
    let mut names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Pipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Pipe::Out(p) => p.read(buf),
            Pipe::Err(p) => p.read(buf),
        }
    }
}

/// Drains a pipe continuously (so rotel never blocks on a full pipe) and appends only whole
/// lines, so stdout and stderr never mix inside a line and a parse never sees half a line.
fn spawn_reader(pipe: Option<Pipe>, output: &Arc<Mutex<Output>>) {
    let Some(mut pipe) = pipe else { return };
    let output = Arc::clone(output);
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let lines: Vec<u8> = pending.drain(..=end).collect();
                let mut out = output.lock().unwrap();
                out.text.push_str(&String::from_utf8_lossy(&lines));
                out.last_growth = Some(Instant::now());
            }
        }
        if !pending.is_empty() {
            let mut out = output.lock().unwrap();
            out.text.push_str(&String::from_utf8_lossy(&pending));
            out.text.push('\n');
            out.last_growth = Some(Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp_text::{select, PointValue, Temporality};
    use std::io::Write;

    // The serialized ExportMetricsServiceRequest behind testdata/rotel_metrics_detailed.txt's
    // HTTP requests (resource test.tag=http-raw), plain and gzipped, made with the Python
    // opentelemetry-proto package.
    const PB: &[u8] = include_bytes!("testdata/request.pb");
    const PB_GZ: &[u8] = include_bytes!("testdata/request.pb.gz");

    /// A minimal HTTP/1.1 OTLP/protobuf POST; returns the status line.
    fn post(port: u16, body: &[u8], gzip: bool) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let enc = if gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            s,
            "POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
             {enc}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.lines().next().unwrap_or("").to_string()
    }

    #[test]
    fn receives_protobuf_over_http_plain_and_gzip() {
        let r = Receiver::start();
        assert_eq!(post(r.http_port(), PB, false), "HTTP/1.1 200 OK");
        assert_eq!(post(r.http_port(), PB_GZ, true), "HTTP/1.1 200 OK");
        let points = r.wait_for(Duration::from_secs(20), |p| {
            select(p, "syscall.errors", &[("otel.metric.overflow", "true")]).count() == 2
        });
        let hs: Vec<_> = select(&points, "syscall.duration", &[("container.id", "abc")]).collect();
        assert_eq!(hs.len(), 2);
        for p in hs {
            assert_eq!(p.resource["test.tag"], "http-raw");
            let h = p.exp_histogram().unwrap();
            assert_eq!((h.scale, h.offset, h.zero_count, h.count), (3, -70, 1, 11));
            assert_eq!(h.bucket_counts, [2, 0, 5, 3]);
        }
        let e = crate::otlp_text::latest(&points, "syscall.errors", &[("error.type", "ENOENT")]);
        assert_eq!(
            e.unwrap().value,
            PointValue::Sum {
                value: 7.0,
                monotonic: true,
                temporality: Temporality::Cumulative
            }
        );
        assert!(r.grpc_endpoint().starts_with("http://127.0.0.1:"));
        assert_eq!(
            r.http_endpoint(),
            format!("http://127.0.0.1:{}", r.http_port())
        );
    }

    #[test]
    fn start_on_known_ports_and_clear_error_when_taken() {
        let [g, h] = free_ports::<2>();
        let r = Receiver::start_on(g, h);
        assert_eq!(r.grpc_endpoint(), format!("http://127.0.0.1:{g}"));
        let err = Receiver::try_start_on(g, h).err().expect("ports are taken");
        assert!(err.contains("Address already in use"), "{err}");
        assert!(r.exited().is_none());
        drop(r);
        // Ports are released on drop.
        let again = Receiver::start_on(g, h);
        assert!(again.points().is_empty());
    }

    #[test]
    #[should_panic(expected = "condition not met")]
    fn wait_for_times_out_with_output() {
        let r = Receiver::start();
        r.wait_for(Duration::from_millis(300), |p| !p.is_empty());
    }

    #[test]
    #[should_panic(expected = "0 log records received")]
    fn wait_for_logs_times_out_with_output() {
        let r = Receiver::start();
        r.wait_for_logs(Duration::from_millis(300), |l| !l.is_empty());
    }
}

//! TCP SLIs end to end on the real kernel: real sockets on loopback or in
//! network namespaces the tests create, the real `syscope` binary, and the
//! real OTLP receiver (rotel). Each workload has a known truth: what it did,
//! what it measured itself, or what the kernel's own counters say.
//!
//! Needs root (CAP_BPF, CAP_PERFMON, and CAP_SYS_ADMIN/CAP_NET_ADMIN for the
//! namespaces): without it each test says it skipped.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output},
    time::Duration,
};

use common::{kernel_at_least, require_root, truth::BUCKET_ERR, Agent};
use syscope_tests::{
    output_durations_s, output_field, run_named, select, spawn_named, unique_name, MetricPoint,
    Receiver,
};

const WAIT: Duration = Duration::from_secs(30);

fn start_agent(rx: &Receiver) -> Agent {
    Agent::exporting_to(rx, &["--probes", "tcp"])
}

/// The latest value of a counter series (cumulative: the total so far).
fn last_number(points: &[MetricPoint], metric: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    select(points, metric, attrs)
        .filter_map(|p| p.number())
        .last()
}

/// Every SLI point carries exactly the attributes docs/metrics.md lists for
/// its metric (the test reads the doc's table). Regression: histogram and
/// counter kinds once shared numbers, and every `tcp.connect.duration`
/// point said `error.type=cancelled`, `tcp.client.request.duration`
/// `network.io.direction=transmit`, `tcp.rtt` `network.io.direction=receive`.
#[test]
fn every_metric_carries_exactly_its_documented_attributes() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    let name = unique_name("attrs");
    run_named(&name, &["fail-open", "3"]);
    run_named(&name, &["tcp-refused", "2"]);
    run_named(&name, &["tcp-connect", "2"]);
    run_named(&name, &["tcp-reqresp", "1", "2", "5"]);
    run_named(&name, &["tcp-reset"]);
    let want = [
        "syscall.duration",
        "syscall.errors",
        "tcp.connect.duration",
        "tcp.connect.errors",
        "tcp.server.request.duration",
        "tcp.client.request.duration",
        "tcp.rtt",
        "tcp.resets",
    ];
    let mine = [("process.executable.name", name.as_str())];
    let pts = rx.wait_for(WAIT, |p| {
        want.iter().all(|m| select(p, m, &mine).next().is_some())
    });
    let checked = syscope_tests::assert_documented_attributes(&pts);
    for m in want {
        assert!(checked.iter().any(|c| c == m), "{m} not checked");
    }
    eprintln!("documented attributes hold for {checked:?}");
}

#[test]
fn refused_connects_counted_exactly_and_connects_timed() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("refuse");
    let out = run_named(&name, &["tcp-refused", "23"]);
    let port = output_field(&out, "port");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
        ("server.address", "127.0.0.1"),
        ("error.type", "ECONNREFUSED"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.connect.errors", &by) == Some(23.0)
    });
    let p = select(&pts, "tcp.connect.errors", &by).last().unwrap();
    assert_eq!(p.unit, "{error}");
    // Each refusal is a reset the client received, on its own socket.
    let rx_resets = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
        ("network.io.direction", "receive"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.resets", &rx_resets) == Some(23.0)
    });
    assert!(select(&pts, "tcp.connect.duration", &by[..2])
        .next()
        .is_none());

    let name = unique_name("connect");
    let out = run_named(&name, &["tcp-connect", "17"]);
    let port = output_field(&out, "port");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
        ("server.address", "127.0.0.1"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        select(p, "tcp.connect.duration", &by)
            .filter_map(|p| p.exp_histogram())
            .last()
            .is_some_and(|h| h.count == 17)
    });
    let p = select(&pts, "tcp.connect.duration", &by).last().unwrap();
    assert_eq!(p.unit, "s");
    let h = p.exp_histogram().unwrap();
    // A loopback handshake takes microseconds, never a second.
    let sum = h.sum.expect("sum");
    assert!(sum > 0.0 && sum / 17.0 < 0.1, "mean {}", sum / 17.0);
    assert!(last_number(&pts, "tcp.connect.errors", &by[..2]).is_none());
}

/// The same over IPv6: the peer address is read from the IPv6 fields.
#[test]
fn refused_connects_over_ipv6() {
    if !require_root() {
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::skip("no IPv6 loopback");
        return;
    }
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("refuse6");
    let out = run_named(&name, &["tcp-refused", "7", "::1"]);
    let port = output_field(&out, "port");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
        ("server.address", "::1"),
        ("error.type", "ECONNREFUSED"),
    ];
    rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.connect.errors", &by) == Some(7.0)
    });
}

/// A server answering after 20 ms: both sides' request latency within the
/// bucket error of what the workload measured, for several requests on each
/// of several connections.
#[test]
fn request_latency_server_and_client_side() {
    request_latency(&[]);
}

/// The same truth through the syscall route (read/write on socket fds), which
/// kernels before 6.3 use; forced here, where the socket tracepoints exist.
#[test]
fn request_latency_through_the_syscall_route() {
    request_latency(&["--tcp-io-hook", "syscalls"]);
}

fn request_latency(extra: &[&str]) {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let mut args = vec!["--probes", "tcp"];
    args.extend_from_slice(extra);
    let _agent = Agent::exporting_to(&rx, &args);
    let name = unique_name("reqresp");
    let (conns, reqs) = (3, 5);
    let out = run_named(&name, &["tcp-reqresp", "3", "5", "20"]);
    let port = output_field(&out, "port");
    let n = (conns * reqs) as u64;
    for (metric, truth_key, with_addr) in [
        ("tcp.server.request.duration", "server_ns", false),
        ("tcp.client.request.duration", "client_ns", true),
    ] {
        let mut by = vec![
            ("process.executable.name", name.as_str()),
            ("server.port", port.as_str()),
        ];
        if with_addr {
            by.push(("server.address", "127.0.0.1"));
        }
        assert_requests_match(&rx, &out, metric, truth_key, &by, n);
    }
}

/// Waits for `n` requests of `metric` under `by`, then checks them against
/// the workload's own timings (`truth_key=` in `out`): the count exactly, p50
/// and p90 within the bucket error, the mean within 3 % (the sums are exact;
/// the kernel stamps inside the syscalls, the workload after they return,
/// which takes up to a few hundred µs under emulation).
fn assert_requests_match(
    rx: &Receiver,
    out: &Output,
    metric: &str,
    truth_key: &str,
    by: &[(&str, &str)],
    n: u64,
) {
    let pts = rx.wait_for(WAIT, |p| {
        select(p, metric, by)
            .filter_map(|p| p.exp_histogram())
            .last()
            .is_some_and(|h| h.count >= n)
    });
    let h = select(&pts, metric, by)
        .filter_map(|p| p.exp_histogram())
        .last()
        .unwrap()
        .clone();
    assert_eq!(h.count, n, "{metric}: requests");
    let truth = output_durations_s(out, truth_key);
    assert_eq!(truth.len() as u64, n);
    // The workload's clock reads bracket the kernel's by a few µs. Under
    // emulation (the VM matrix, qemu TCG, on a shared host) a return to
    // userspace after a wakeup takes milliseconds: measured 0.7-8.5 ms on
    // 20 ms requests whose sleeps themselves took 27-41 ms, and once a p90
    // of 35.6 ms against the workload's 23.6 ms on 6.12. There the bound
    // widens to 60 % + 3 ms (cargo xtask vmtest sets SYSCOPE_EMULATED); the
    // counts stay exact and this host's run keeps the tight bound.
    // On this host the two clocks differ by the scheduling delay between a
    // syscall's tracepoint and the workload's next clock read: measured up
    // to 76 µs on 1 ms requests with the agent and the receiver running,
    // hence 0.5 ms of slack (a tenth of a 20 ms request's bucket width).
    let (rel, abs) = if std::env::var_os("SYSCOPE_EMULATED").is_some() {
        (0.6, 0.003)
    } else {
        (0.0, 0.0005)
    };
    for q in [0.5, 0.9] {
        let want = truth[((q * n as f64).ceil() as usize).clamp(1, truth.len()) - 1];
        let got = h.quantile(q);
        assert!(
            (got - want).abs() <= want * (BUCKET_ERR + 0.01 + rel) + abs,
            "{metric} p{q}: got {got}, workload measured {want}"
        );
    }
    let mean = truth.iter().sum::<f64>() / n as f64;
    let got = h.sum.expect("sum") / n as f64;
    eprintln!("{metric}: {n} requests, mean {got:.6} s (workload measured {mean:.6} s)");
    assert!(
        (got - mean).abs() <= mean * (0.03 + rel) + abs,
        "{metric} mean: got {got}, workload measured {mean}"
    );
}

/// A connection and listener opened before the agent started (a DaemonSet
/// rollout restarts the agent under live connections): the requests made
/// on it afterwards are measured, exactly, both sides, with their owner.
#[test]
fn connection_older_than_the_agent_is_measured() {
    if !require_root() {
        return;
    }
    let name = unique_name("oldconn");
    // 15, as elsewhere: a single request whose workload was preempted
    // between its syscall and its clock read (seen: 5 ms) is then neither
    // the p90 nor more than 2 % of the mean.
    let reqs = 15u64;
    let paused = Paused::start(&name, reqs);
    let port = paused.port.clone();
    // Connected and one exchange done: now the agent starts.
    let rx = Receiver::start();
    let agent = start_agent(&rx);
    assert!(
        agent
            .stderr()
            .contains("TCP sockets older than the agent seeded"),
        "{}",
        agent.stderr()
    );
    let out = paused.go();
    for (metric, truth_key) in [
        ("tcp.server.request.duration", "server_ns"),
        ("tcp.client.request.duration", "client_ns"),
    ] {
        let by = [
            ("process.executable.name", name.as_str()),
            ("server.port", port.as_str()),
        ];
        assert_requests_match(&rx, &out, metric, truth_key, &by, reqs);
    }
}

/// A socket keeps the slots of its request series in its state. When the
/// agent evicts an idle series from the kernel (here after 2 quiet
/// intervals) the kept slot goes stale: the socket's next request resolves
/// its series again. Every request on a kept-alive connection paused across
/// the eviction is counted, exactly, before and after, on both sides.
#[test]
fn requests_after_their_series_was_evicted_are_counted_exactly() {
    if !require_root() {
        return;
    }
    let name = unique_name("evicted");
    let conf = std::env::temp_dir().join(format!("syscope-{name}.toml"));
    std::fs::write(&conf, "[limits]\nseries_idle_intervals = 2\n").unwrap();
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &["--probes", "tcp", "-c", conf.to_str().unwrap()]);
    let reqs = 6u64;
    let paused = Paused::start(&name, reqs);
    let port = paused.port.clone();
    let metrics = ["tcp.server.request.duration", "tcp.client.request.duration"];
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
    ];
    let entries = |p: &[MetricPoint]| -> Vec<f64> {
        select(p, "syscope.kernel.map.entries", &[("map", "tcp_latency")])
            .filter_map(|p| p.number())
            .collect()
    };
    // The first exchange, measured: its series are in the kernel map (the
    // server's and the client's requests, their RTT, which shares one key
    // here, and the connect). Idle, all 4 are evicted.
    rx.wait_for(WAIT, |p| {
        let n = entries(p);
        let most = n.iter().copied().fold(0.0, f64::max);
        metrics.iter().all(|m| requests(p, m, &by) >= 1)
            && n.last().is_some_and(|&last| last + 4.0 <= most)
    });
    paused.go();
    let _ = std::fs::remove_file(&conf);
    let pts = rx.wait_for(WAIT, |p| metrics.iter().all(|m| requests(p, m, &by) > reqs));
    for m in metrics {
        assert_eq!(requests(&pts, m, &by), reqs + 1, "{m}: requests");
    }
}

/// Requests counted in a histogram series under `by`, over its lives: the
/// series may expire while idle and start again (a new start time).
fn requests(points: &[MetricPoint], metric: &str, by: &[(&str, &str)]) -> u64 {
    let mut last = std::collections::BTreeMap::new();
    for p in select(points, metric, by) {
        if let Some(h) = p.exp_histogram() {
            last.insert(p.start_unix_nano, h.count);
        }
    }
    last.values().sum()
}

/// A kept-alive loopback connection that made one exchange and waits
/// (`tcp-reqresp-old`) for the test to let it make `reqs` requests, each
/// answered after 20 ms.
struct Paused {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    go: std::path::PathBuf,
    /// The server's port.
    port: String,
}

impl Paused {
    fn start(name: &str, reqs: u64) -> Paused {
        let go = std::env::temp_dir().join(format!("{name}.go"));
        let _ = std::fs::remove_file(&go);
        let mut child = spawn_named(
            name,
            &[
                "tcp-reqresp-old",
                &reqs.to_string(),
                "20",
                go.to_str().unwrap(),
            ],
        );
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("port=")
            .unwrap_or_else(|| panic!("workload said {first:?}"))
            .to_string();
        Paused {
            child,
            stdout,
            go,
            port,
        }
    }

    /// Lets it make its requests: their timings, as `tcp-reqresp` prints
    /// them.
    fn go(mut self) -> Output {
        std::fs::write(&self.go, b"").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        assert!(
            self.child.wait().unwrap().success(),
            "workload failed: {rest}"
        );
        Output {
            status: std::process::ExitStatus::default(),
            stdout: rest.into_bytes(),
            stderr: vec![],
        }
    }
}

impl Drop for Paused {
    /// A failed test leaves no workload waiting: it goes on, and ends.
    fn drop(&mut self) {
        let _ = std::fs::write(&self.go, b"");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.go);
    }
}

/// A client that writes while the answer is still arriving (as HTTP/2 flow
/// control does) has overlapping requests: the connection is counted once in
/// `tcp.client.multiplexed` and no longer measured. Before the second
/// overlapping write is seen, exchanges are measured: the first one, and any
/// whose read emptied the receive queue (not an overlap by what the kernel
/// shows; a slow guest reads faster than loopback fills). They are a few of
/// the hundred-odd writes, never most of them.
#[test]
fn overlapping_requests_are_counted_not_measured() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("overlap");
    let out = run_named(&name, &["tcp-stream-overlap", "2"]);
    let port = output_field(&out, "port");
    let updates: u64 = output_field(&out, "updates").parse().unwrap();
    assert!(updates > 100, "the client wrote {updates} times");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
        ("server.address", "127.0.0.1"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.client.multiplexed", &by).is_some()
    });
    assert_eq!(last_number(&pts, "tcp.client.multiplexed", &by), Some(1.0));
    // Two more intervals: nothing more may arrive for this connection.
    std::thread::sleep(Duration::from_secs(2));
    let pts = rx.points();
    let measured = select(&pts, "tcp.client.request.duration", &by)
        .filter_map(|p| p.exp_histogram())
        .last()
        .map_or(0, |h| h.count);
    assert!(
        measured >= 1 && measured * 10 <= updates,
        "{measured} client requests measured on a connection with {updates} overlapping writes"
    );
    assert_eq!(last_number(&pts, "tcp.client.multiplexed", &by), Some(1.0));
}

/// Request latency is per request for HTTP/1.1 with keep-alive: a real
/// server (nginx) and a real client (ab) give exactly the requests made,
/// both sides, and no connection is taken for multiplexed.
#[test]
fn http1_keepalive_requests_counted_exactly_with_nginx_and_ab() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(unique_name("nginx"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; error_log stderr warn; \
             pid {d}/nginx.pid; events {{ worker_connections 64; }} \
             http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; \
             fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; \
             server {{ listen 127.0.0.1:{port}; keepalive_requests 100000; \
             location / {{ return 200 \"ok\\n\"; }} }} }}"
        ),
    )
    .unwrap();
    let rx = Receiver::start();
    let agent = start_agent(&rx);
    let mut nginx = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", conf.to_str().unwrap()])
        .spawn()
        .expect("nginx (apt package nginx; cargo xtask setup installs it)");
    let url = format!("http://127.0.0.1:{port}/");
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "nginx did not listen on {port}");
    let n = 2000u64;
    let ab = Command::new("ab")
        .args(["-k", "-q", "-n", &n.to_string(), "-c", "4", &url])
        .output()
        .expect("ab (apt package apache2-utils)");
    let text = String::from_utf8_lossy(&ab.stdout).to_string();
    assert!(ab.status.success(), "ab failed: {text}");
    assert!(
        text.contains(&format!("Keep-Alive requests:    {n}")),
        "{text}"
    );
    let p = port.to_string();
    let server = [
        ("process.executable.name", "nginx"),
        ("server.port", p.as_str()),
    ];
    let client = [
        ("process.executable.name", "ab"),
        ("server.port", p.as_str()),
    ];
    let count = |pts: &[MetricPoint], metric: &str, by: &[(&str, &str)]| {
        select(pts, metric, by)
            .filter_map(|p| p.exp_histogram())
            .last()
            .map_or(0, |h| h.count)
    };
    // Polled rather than waited on, so a shortfall shows the numbers.
    let deadline = std::time::Instant::now() + WAIT;
    let mut pts = rx.points();
    while std::time::Instant::now() < deadline
        && (count(&pts, "tcp.server.request.duration", &server) < n
            || count(&pts, "tcp.client.request.duration", &client) < n)
    {
        std::thread::sleep(Duration::from_millis(500));
        pts = rx.points();
    }
    let _ = nginx.kill();
    let _ = nginx.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let got = (
        count(&pts, "tcp.server.request.duration", &server),
        count(&pts, "tcp.client.request.duration", &client),
        last_number(&pts, "tcp.server.multiplexed", &server),
        last_number(&pts, "tcp.client.multiplexed", &client),
    );
    assert_eq!(
        got,
        (n, n, None, None),
        "(server requests, client requests, server multiplexed, client multiplexed); agent log:\n{}",
        agent.stderr()
    );
    assert_eq!(last_number(&pts, "tcp.client.multiplexed", &client), None);
}

/// `syscope check` names a hook for every documented metric; request latency
/// comes from the socket tracepoints exactly where the kernel's BTF has them
/// (else from the syscall route); without capabilities it exits 1 naming them.
#[test]
fn check_names_the_hook_of_every_signal() {
    if !require_root() {
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new(common::agent_bin())
            .args(args)
            .output()
            .expect("run syscope check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let has = |s: &str| btf.windows(s.len()).any(|w| w == s.as_bytes());
    let sock_route = has("btf_trace_sock_send_length\0") && has("btf_trace_sock_recv_length\0");
    // Every set on: by default the syscall hooks serve on demand only.
    let (code, json) = run(&["--probes", "syscalls,tcp", "check", "--output", "json"]);
    assert_eq!(code, Some(0), "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
    for metric in syscope_tests::docs::documented_attributes().keys() {
        assert!(
            json.contains(&format!("\"{metric}\":{{\"hook\":")),
            "no hook for {metric}: {json}"
        );
    }
    let request_hook = |json: &str| {
        let at = json
            .find("\"tcp.server.request.duration\":{\"hook\":\"")
            .unwrap_or_else(|| panic!("{json}"));
        json[at..].split('"').nth(5).unwrap().to_string()
    };
    let hook = request_hook(&json);
    if sock_route {
        assert!(hook.contains("sock_send_length"), "{hook}");
    } else {
        assert!(hook.starts_with("socket I/O syscalls"), "{hook}");
    }
    let (code, forced) = run(&["--tcp-io-hook", "syscalls", "check", "--output", "json"]);
    assert_eq!(code, Some(0), "{forced}");
    assert!(request_hook(&forced).starts_with("socket I/O syscalls"));
    // No capabilities at all (an unprivileged uid, empty bounding set).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(common::agent_bin())
        .arg("check")
        .output()
        .expect("setpriv (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("missing CAP_BPF, CAP_PERFMON"), "{text}");
}

fn sockets_tracked(points: &[MetricPoint]) -> Option<f64> {
    last_number(points, "syscope.kernel.map.entries", &[("map", "sockets")])
}

/// Tracked sockets are forgotten when the kernel destroys them: held-open
/// connections show up in the socket count, and it shrinks back after.
/// Socket state is in socket storage where the kernel has the socket
/// tracepoints (6.3+, with task storage: 5.13+), else in the LRU map.
#[test]
fn socket_state_is_cleaned_up_on_close() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let agent = start_agent(&rx);
    let store = if kernel_at_least(6, 3) {
        "socket_storage"
    } else {
        "lru_hash"
    };
    let log = agent.stderr();
    assert!(
        log.contains(&format!("TCP programs attached socket_state=\"{store}\"")),
        "{log}"
    );
    let pts = rx.wait_for(WAIT, |p| sockets_tracked(p).is_some());
    let before = sockets_tracked(&pts).unwrap();
    let name = unique_name("hold");
    let n = 150.0;
    let child = spawn_named(&name, &["tcp-hold", "150", "3500"]);
    // Both ends of each connection are tracked while they are open.
    rx.wait_for(WAIT, |p| {
        sockets_tracked(p).is_some_and(|v| v >= before + 2.0 * n)
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let pts = rx.wait_for(WAIT, |p| {
        sockets_tracked(p).is_some_and(|v| v < before + 10.0)
    });
    eprintln!(
        "tracked sockets: {before} before, >= {} while held, {} after",
        before + 2.0 * n,
        sockets_tracked(&pts).unwrap()
    );
}

/// `limits.kernel_maps.sockets` bounds the sockets tracked at once on
/// either route: the LRU map's size (bounded by construction: there the
/// test checks the capacity reported and that tracking goes on), or the
/// limit the programs check before giving a socket storage (6.3+), where a
/// socket beyond it is counted as the map full. Once the sockets are
/// closed, new ones are tracked and measured again: the live count comes
/// back down.
#[test]
fn sockets_limit_caps_the_sockets_tracked() {
    if !require_root() {
        return;
    }
    const LIMIT: f64 = 64.0;
    let rx = Receiver::start();
    let dir = std::env::temp_dir().join(format!("syscope-it-socks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("socks.toml");
    std::fs::write(&cfg, format!("[limits.kernel_maps]\nsockets = {LIMIT}\n")).unwrap();
    let _agent = Agent::exporting_to(&rx, &["--probes", "tcp", "--config", cfg.to_str().unwrap()]);
    let storage = kernel_at_least(6, 3);
    // Sockets racing past the limit overshoot it by one per CPU at most.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let pts = rx.wait_for(WAIT, |p| sockets_tracked(p).is_some());
    let cap = last_number(&pts, "syscope.kernel.map.capacity", &[("map", "sockets")]);
    assert_eq!(cap, Some(LIMIT));
    let before = sockets_tracked(&pts).unwrap();
    assert!(before <= LIMIT, "{before}");
    let full = |p: &[MetricPoint]| {
        last_number(p, "syscope.kernel.map.full", &[("map", "sockets")]).unwrap_or(0.0)
    };
    // 150 connections held: 300 sockets, each side tracked.
    let mut child = spawn_named(&unique_name("hold"), &["tcp-hold", "150", "3000"]);
    let pts = if storage {
        rx.wait_for(WAIT, |p| full(p) >= 300.0 - LIMIT - cpus)
    } else {
        // The LRU map evicts instead: two intervals while all are held.
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.map_while(Result::ok).any(|l| l == "held"));
        std::thread::sleep(Duration::from_millis(2_500));
        rx.points()
    };
    let most = select(&pts, "syscope.kernel.map.entries", &[("map", "sockets")])
        .filter_map(|p| p.number())
        .fold(0.0, f64::max);
    assert!(
        most <= LIMIT + cpus,
        "sockets tracked: {most} (limit {LIMIT})"
    );
    assert!(child.wait_with_output().unwrap().status.success());
    let pts = rx.wait_for(WAIT, |p| sockets_tracked(p).is_some_and(|v| v < 10.0));
    eprintln!(
        "sockets tracked: at most {most} of 300 (limit {LIMIT}), {} counted full, {} after",
        full(&pts),
        sockets_tracked(&pts).unwrap()
    );
    // Room again: new connections are tracked and their requests measured.
    let name = unique_name("reqresp");
    let out = run_named(&name, &["tcp-reqresp", "3", "5", "1"]);
    let port = output_field(&out, "port");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
    ];
    assert_requests_match(
        &rx,
        &out,
        "tcp.server.request.duration",
        "server_ns",
        &by,
        15,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace for one test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("syscope-{}-{tag}", std::process::id());
        // A leftover of a killed run: remove it quietly.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}

/// A backlog-0 listener that is never accepted, flooded with connects: the
/// drops syscope reports for its port are exactly the kernel's ListenDrops
/// for the (private) namespace.
#[test]
fn listen_drops_match_the_kernel_counter() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("flood");
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("flood");
    let out = run_named(&name, &["--netns", &ns.0, "tcp-listen-flood", "12"]);
    let port = output_field(&out, "port");
    let want: f64 = output_field(&out, "listen_drops").parse().unwrap();
    assert!(want > 0.0, "the flood caused no drops: {out:?}");
    eprintln!("listen drops: kernel ListenDrops delta {want}");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", port.as_str()),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.listen.drops", &by) == Some(want)
    });
    let p = select(&pts, "tcp.listen.drops", &by).last().unwrap();
    assert_eq!(p.unit, "{connection}");
    syscope_tests::assert_documented_attributes(&pts);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        last_number(&rx.points(), "tcp.listen.drops", &by),
        Some(want)
    );
}

/// A listener older than the agent, with drops already: those are its
/// history, not new; only the drops after the agent started are reported.
#[test]
fn listen_drops_before_the_agent_are_not_new() {
    if !require_root() {
        return;
    }
    // In the agent's network namespace: the seeding iterator walks that
    // one's sockets. ListenDrops is then the host's; nothing else here
    // overflows an accept queue.
    let name = unique_name("oldflood");
    let go = std::env::temp_dir().join(format!("syscope-{name}.go"));
    let _ = std::fs::remove_file(&go);
    let go_s = go.to_string_lossy().into_owned();
    let mut child = spawn_named(&name, &["tcp-listen-flood", "12", &go_s]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut field = |key: &str| -> String {
        lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("workload printed no {key}="))
    };
    let port = field("port");
    let before: u64 = field("drops_before").parse().unwrap();
    assert!(before > 0, "the first flood caused no drops");
    let rx = Receiver::start();
    let agent = start_agent(&rx);
    assert!(agent
        .stderr()
        .contains("TCP sockets older than the agent seeded"));
    // An interval or two for the agent to read the listener as it is.
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(&go, b"").unwrap();
    assert_eq!(field("port"), port);
    let want: f64 = field("listen_drops").parse().unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&go);
    assert!(want > 0.0, "the second flood caused no drops");
    eprintln!("listen drops: {before} before the agent, {want} after");
    // Seeded listeners have no owning process (nothing claims them).
    let by = [("server.port", port.as_str())];
    rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.listen.drops", &by) == Some(want)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        last_number(&rx.points(), "tcp.listen.drops", &by),
        Some(want)
    );
}

/// SO_LINGER 0 on close: one reset sent by the server's socket, one received
/// by the client's, both under the workload and the server port.
#[test]
fn linger_zero_close_is_a_reset_each_way() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("reset");
    let out = run_named(&name, &["tcp-reset"]);
    let port = output_field(&out, "port");
    for dir in ["transmit", "receive"] {
        let by = [
            ("process.executable.name", name.as_str()),
            ("server.port", port.as_str()),
            ("network.io.direction", dir),
        ];
        rx.wait_for(WAIT, |p| last_number(p, "tcp.resets", &by) == Some(1.0));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for dir in ["transmit", "receive"] {
        let by = [
            ("process.executable.name", name.as_str()),
            ("server.port", port.as_str()),
            ("network.io.direction", dir),
        ];
        assert_eq!(last_number(&rx.points(), "tcp.resets", &by), Some(1.0));
    }
}

/// A connect into a silent path (the peer's namespace drops what arrives)
/// with one SYN retry: exactly one ETIMEDOUT for that peer, and its SYN
/// retransmissions counted as the socket itself counted them.
#[test]
fn timed_out_connect_is_etimedout_with_its_syn_retransmits() {
    if !require_root() {
        return;
    }
    let a = Netns::new("ta");
    let b = Netns::new("tb");
    let (va, vb) = (format!("sct{}", std::process::id()), "sctb0".to_string());
    sh(&[
        "ip", "-n", &a.0, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.0,
    ]);
    sh(&["ip", "-n", &a.0, "addr", "add", "10.205.0.1/24", "dev", &va]);
    let mac = "02:00:0a:cd:00:02";
    sh(&["ip", "-n", &b.0, "link", "set", &vb, "address", mac]);
    sh(&["ip", "-n", &a.0, "link", "set", &va, "up"]);
    sh(&["ip", "-n", &b.0, "link", "set", &vb, "up"]);
    // The peer address exists nowhere; a static neighbour entry puts the
    // SYNs on the wire, where the other namespace drops them.
    sh(&[
        "ip",
        "-n",
        &a.0,
        "neigh",
        "add",
        "10.205.0.2",
        "lladdr",
        mac,
        "dev",
        &va,
        "nud",
        "permanent",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &a.0,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_syn_retries=1",
    ]);
    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let name = unique_name("timeout");
    let out = run_named(
        &name,
        &["--netns", &a.0, "tcp-timeout", "10.205.0.2", "7171"],
    );
    let retrans: f64 = output_field(&out, "total_retrans").parse().unwrap();
    assert!(retrans >= 1.0, "{out:?}");
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", "7171"),
    ];
    let errors = [
        by[0],
        by[1],
        ("server.address", "10.205.0.2"),
        ("error.type", "ETIMEDOUT"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.connect.errors", &errors) == Some(1.0)
            && last_number(p, "tcp.retransmits", &by) == Some(retrans)
    });
    assert!(select(&pts, "tcp.connect.duration", &by).next().is_none());
    syscope_tests::assert_documented_attributes(&pts);
    eprintln!("timed out connect: 1 ETIMEDOUT, {retrans} SYN retransmits (tcpi_total_retrans)");
}

/// Two namespaces joined by a veth pair; the server side shapes its replies
/// with a token bucket (tbf: netem is not built here), which makes the RTT
/// milliseconds. The client's retransmits while the server's address is gone
/// (packets arrive and are dropped silently) match the
/// kernel's own tcpi_total_retrans exactly, and every RTT sample lies within
/// what TCP_INFO showed on the same socket (within the bucket error).
#[test]
fn retransmits_and_rtt_over_a_veth_pair() {
    if !require_root() {
        return;
    }
    let a = Netns::new("a");
    let b = Netns::new("b");
    let (va, vb) = (format!("sca{}", std::process::id()), "scb0".to_string());
    sh(&[
        "ip", "-n", &a.0, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.0,
    ]);
    sh(&["ip", "-n", &a.0, "addr", "add", "10.203.0.1/24", "dev", &va]);
    sh(&["ip", "-n", &b.0, "addr", "add", "10.203.0.2/24", "dev", &vb]);
    sh(&["ip", "-n", &a.0, "link", "set", &va, "up"]);
    sh(&["ip", "-n", &b.0, "link", "set", &vb, "up"]);
    // 1 Mbit/s for the server's replies: a 1400-byte reply is ~11 ms on the wire.
    sh(&[
        "ip", "netns", "exec", &b.0, "tc", "qdisc", "add", "dev", &vb, "root", "tbf", "rate",
        "1mbit", "burst", "1600", "latency", "400ms",
    ]);

    let rx = Receiver::start();
    let _agent = start_agent(&rx);
    let server_name = unique_name("echo");
    let mut server = spawn_named(
        &server_name,
        &[
            "--netns",
            &b.0,
            "tcp-echo-server",
            "10.203.0.2",
            "7070",
            "1400",
        ],
    );
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let name = unique_name("lossy");
    let out = run_named(
        &name,
        &[
            "--netns",
            &a.0,
            "tcp-lossy",
            "10.203.0.2",
            "7070",
            "20",
            &b.0,
            &vb,
            "1500",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    let retrans: f64 = output_field(&out, "total_retrans").parse().unwrap();
    let (lo, hi): (f64, f64) = (
        output_field(&out, "rtt_min_us").parse::<f64>().unwrap() * 1e-6,
        output_field(&out, "rtt_max_us").parse::<f64>().unwrap() * 1e-6,
    );
    assert!(retrans >= 1.0);
    let by = [
        ("process.executable.name", name.as_str()),
        ("server.port", "7070"),
    ];
    let pts = rx.wait_for(WAIT, |p| {
        last_number(p, "tcp.retransmits", &by) == Some(retrans)
    });
    assert_eq!(
        select(&pts, "tcp.retransmits", &by).last().unwrap().unit,
        "{segment}"
    );
    let h = select(&pts, "tcp.rtt", &by)
        .filter_map(|p| p.exp_histogram())
        .last()
        .expect("tcp.rtt for the client")
        .clone();
    assert!(
        h.count >= 2,
        "RTT sampled at connect and at least once more"
    );
    for (i, &n) in h.bucket_counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (lower, upper) = h.bucket_bounds(i);
        // The bucket must overlap [lo, hi] (TCP_INFO's smoothed RTT, µs).
        assert!(
            upper >= lo * (1.0 - BUCKET_ERR) && lower <= hi * (1.0 + BUCKET_ERR),
            "RTT bucket {i} ({lower}, {upper}] outside TCP_INFO's [{lo}, {hi}]"
        );
    }
    assert_eq!(h.zero_count, 0, "an RTT of zero was sampled");
    let mean = h.sum.expect("sum") / h.count as f64;
    assert!(
        mean >= lo * (1.0 - BUCKET_ERR) && mean <= hi * (1.0 + BUCKET_ERR),
        "mean RTT {mean} outside [{lo}, {hi}]"
    );
    eprintln!(
        "retransmits: {retrans} (tcpi_total_retrans) = syscope; RTT: TCP_INFO [{lo:.6}, {hi:.6}] s, \
         syscope {} samples, mean {mean:.6} s",
        h.count
    );
    // The shaping shows: milliseconds, not the microseconds of a bare veth.
    assert!(hi > 0.005, "TCP_INFO RTT never exceeded 5 ms: {hi}");
}

//! The Prometheus endpoint end to end: the real agent on the real kernel,
//! scraped by a real Prometheus server (Debian's 2.42, native histograms
//! on), and its PromQL answers checked against each workload's truth.
//! Also: OTLP and Prometheus at once, `none`, and scrapers that hold
//! connections open.
//!
//! Needs root (CAP_BPF, CAP_PERFMON) and the `prometheus` package
//! (`cargo xtask setup` installs it): without them each test says it
//! skipped.

mod common;

use std::{
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{require_root, skip, Agent};
use syscope_tests::{
    free_port, http_get, output_durations_s, output_field, prometheus_path, run_named, select,
    unique_name, Prometheus, Receiver,
};

const WAIT: Duration = Duration::from_secs(30);
/// Width of a scale-3 bucket: an estimate from the right bucket is within
/// this of the truth (Prometheus interpolates linearly inside the bucket).
const BUCKET_WIDTH: f64 = 0.0905; // 2^(1/8) - 1
const PROTOBUF: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

fn have_prometheus() -> bool {
    if !prometheus_path().exists() {
        skip("no prometheus server (apt package prometheus; cargo xtask setup installs it)");
        return false;
    }
    true
}

/// The agent with the Prometheus exporter on a free loopback port (and
/// `extra` environment), collecting every second.
fn agent_with_prometheus(exporters: &str, extra: &[(&str, &str)]) -> (Agent, SocketAddr) {
    agent_with_prometheus_args(exporters, &[], extra)
}

/// The same, with command-line `args`.
fn agent_with_prometheus_args(
    exporters: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> (Agent, SocketAddr) {
    let port = free_port();
    let port_s = port.to_string();
    let mut env = vec![
        ("OTEL_METRICS_EXPORTER", exporters),
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", port_s.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
    ];
    env.extend_from_slice(extra);
    let agent = Agent::start(args, &env);
    (agent, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The truth's q-quantile (nearest rank, as the OTLP tests take it).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn assert_within_bucket(what: &str, got: f64, truth: f64) {
    let err = (got - truth).abs() / truth;
    eprintln!("{what}: PromQL {got:.6} s, workload {truth:.6} s, error {err:.4}");
    assert!(
        err <= BUCKET_WIDTH,
        "{what}: PromQL {got}, workload {truth}, error {err:.4} > one bucket"
    );
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Prometheus scrapes native histograms over protobuf (delta OTLP
/// temporality configured: the endpoint is cumulative anyway), and PromQL
/// matches the truth: exact counts for syscall errors, TCP connect errors
/// and request counts, `histogram_quantile` within one bucket for sleeps
/// and server request latency, and `increase` across a second round.
#[test]
fn prometheus_scrapes_native_histograms_and_promql_matches_the_truth() {
    if !require_root() || !have_prometheus() {
        return;
    }
    let (agent, addr) = agent_with_prometheus(
        "prometheus",
        &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")],
    );
    let prom = Prometheus::start(addr);
    let name = unique_name("prom");
    let sel = format!("process_executable_name=\"{name}\"");

    // Syscalls: 23 failing opens, 25 sleeps of 20 ms.
    run_named(&name, &["fail-open", "23"]);
    let sleeps = run_named(&name, &["sleep", "25", "20"]);
    let errors_sel =
        format!("syscall_errors_total{{{sel},syscall_name=\"openat\",error_type=\"ENOENT\"}}");
    let errors = format!("sum({errors_sel})");
    assert_eq!(prom.wait_for(&errors, |v| v >= 23.0), 23.0);
    let sleep_sel = format!("syscall_duration_seconds{{{sel},syscall_name=\"clock_nanosleep\"}}");
    let count = prom.wait_for(&format!("histogram_count({sleep_sel})"), |v| v >= 25.0);
    assert_eq!(count, 25.0, "histogram_count of the native histogram");
    // Native, not classic: no _bucket series was ingested for it.
    assert!(
        prom.query(&format!("syscall_duration_seconds_bucket{{{sel}}}"))
            .is_empty(),
        "classic buckets ingested: protobuf was not negotiated"
    );
    let raw = prom.query(&sleep_sel);
    assert!(
        raw[0].get("histogram").is_some(),
        "not a native histogram: {raw:?}"
    );
    let truth = output_durations_s(&sleeps, "durations_ns");
    for q in [0.5, 0.9] {
        let got = prom
            .scalar(&format!("histogram_quantile({q}, {sleep_sel})"))
            .expect("quantile");
        assert_within_bucket(&format!("sleep p{q}"), got, nearest_rank(&truth, q));
    }
    let sum = prom.scalar(&format!("histogram_sum({sleep_sel})")).unwrap();
    let truth_sum: f64 = truth.iter().sum();
    assert!(
        (sum - truth_sum).abs() / truth_sum < 0.01,
        "histogram_sum {sum}, workload {truth_sum}"
    );

    // TCP: 7 refused connects; 3 connections x 4 requests answered after 10 ms.
    let refused = run_named(&name, &["tcp-refused", "7"]);
    let rport = output_field(&refused, "port");
    let conn_err = format!("sum(tcp_connect_errors_total{{{sel},server_port=\"{rport}\",server_address=\"127.0.0.1\",error_type=\"ECONNREFUSED\"}})");
    assert_eq!(prom.wait_for(&conn_err, |v| v >= 7.0), 7.0);
    let rr = run_named(&name, &["tcp-reqresp", "3", "4", "10"]);
    let port = output_field(&rr, "port");
    let server = format!("tcp_server_request_duration_seconds{{{sel},server_port=\"{port}\"}}");
    let n = prom.wait_for(&format!("histogram_count({server})"), |v| v >= 12.0);
    assert_eq!(n, 12.0);
    let truth = output_durations_s(&rr, "server_ns");
    let got = prom
        .scalar(&format!("histogram_quantile(0.5, {server})"))
        .unwrap();
    assert_within_bucket("server request p50", got, nearest_rank(&truth, 0.5));

    // A second round: the counter's rise between two instants is exactly
    // the new calls, and increase() over a window holding both rounds sees
    // them (Prometheus extrapolates to the window's edges: at most one
    // scrape interval's worth more on each side).
    let before = now_s();
    thread::sleep(Duration::from_millis(1500));
    run_named(&name, &["fail-open", "11"]);
    assert_eq!(prom.wait_for(&errors, |v| v >= 34.0), 34.0);
    thread::sleep(Duration::from_millis(1500));
    let rise = prom
        .scalar(&format!("{errors} - sum({errors_sel} @ {before:.3})"))
        .unwrap();
    assert_eq!(rise, 11.0, "rise of the counter between two instants");
    let window = 30.0;
    let inc = prom
        .scalar(&format!("sum(increase({errors_sel}[{window}s]))"))
        .unwrap();
    eprintln!("increase over {window}s: {inc} (truth 11)");
    // The series began inside the window: no implicit zero, so the first
    // round is not counted; the extrapolation adds at most half a scrape
    // interval at each end of a span of several seconds.
    assert!((11.0..=16.5).contains(&inc), "increase {inc}");

    // The agent's own metrics and the resource are there too.
    assert!(
        prom.scalar("sum(syscope_prometheus_scrapes_total)")
            .unwrap()
            >= 1.0
    );
    let info = prom.query("target_info");
    assert_eq!(info[0]["metric"]["service_name"], "syscope", "{info:?}");
    assert!(agent.is_running());
}

/// The value of the text exposition's sample of `metric` whose labels
/// include every one of `labels` (others, e.g. `container_id`, may be there).
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(metric)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// `otlp,prometheus`: the same truth reaches the OTLP receiver and the
/// endpoint's text exposition (classic histograms), at once.
#[test]
fn otlp_and_prometheus_at_once() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let endpoint = rx.grpc_endpoint();
    let (_agent, addr) = agent_with_prometheus(
        "otlp,prometheus",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let name = unique_name("both");
    run_named(&name, &["fail-open", "19"]);
    let slept = output_durations_s(&run_named(&name, &["sleep", "5", "10"]), "durations_ns");
    let attrs = [
        ("process.executable.name", name.as_str()),
        ("syscall.name", "openat"),
        ("error.type", "ENOENT"),
    ];
    rx.wait_for(WAIT, |p| {
        select(p, "syscall.errors", &attrs)
            .filter_map(|p| p.number())
            .last()
            == Some(19.0)
    });
    let errs = [
        ("process_executable_name", name.as_str()),
        ("syscall_name", "openat"),
        ("error_type", "ENOENT"),
    ];
    let sleeps = [
        ("process_executable_name", name.as_str()),
        ("syscall_name", "clock_nanosleep"),
    ];
    let le = |bound: &'static str| {
        let mut l = sleeps.to_vec();
        l.push(("le", bound));
        l
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, head, body) = http_get(addr, "/metrics", &[]).unwrap();
        assert_eq!(status, 200);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let text = String::from_utf8(body).unwrap();
        let count = sample(&text, "syscall_duration_seconds_count", &sleeps);
        if sample(&text, "syscall_errors_total", &errs) == Some(19.0) && count == Some(5.0) {
            // Classic buckets, exact at powers of two: 10 ms sleeps are
            // above 2^-7 s (7.8 ms); at 2^-6 s (15.6 ms), as many as the
            // workload timed at or below it (all, unless one was delayed).
            let bucket = |b| sample(&text, "syscall_duration_seconds_bucket", &le(b));
            assert_eq!(bucket("+Inf"), Some(5.0));
            assert_eq!(bucket("0.0078125"), Some(0.0));
            let within = slept.iter().filter(|&&d| d <= 0.015625).count();
            assert_eq!(bucket("0.015625"), Some(within as f64));
            break;
        }
        assert!(Instant::now() < deadline, "not in the exposition:\n{text}");
        thread::sleep(Duration::from_millis(300));
    }
    // And protobuf when asked for it.
    let (status, head, body) = http_get(addr, "/metrics", &[("Accept", PROTOBUF)]).unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("application/vnd.google.protobuf"), "{head}");
    assert!(!body.is_empty());
}

/// `none`: nothing exported, no table, the endpoint not bound, and the
/// agent still runs and answers health.
#[test]
fn none_exports_nothing_and_keeps_running() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let [health, prom] = syscope_tests::free_ports::<2>();
    let health_addr = format!("127.0.0.1:{health}");
    let endpoint = rx.grpc_endpoint();
    let prom_s = prom.to_string();
    let mut agent = Agent::start(
        &["--interval", "1s", "--health-address", &health_addr],
        &[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", &prom_s),
        ],
    );
    run_named(&unique_name("none"), &["fail-open", "3"]);
    thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running());
    let (status, _, _) = http_get(health_addr.parse().unwrap(), "/readyz", &[]).unwrap();
    assert_eq!(status, 200);
    assert!(
        TcpStream::connect(("127.0.0.1", prom)).is_err(),
        "nothing may listen for Prometheus"
    );
    assert!(rx.points().is_empty(), "exported: {}", rx.output_tail(20));
    assert!(
        agent.stdout().is_empty(),
        "table printed: {}",
        agent.stdout()
    );
    assert!(
        agent.stderr().contains("not exporting over OTLP"),
        "{}",
        agent.stderr()
    );
    assert!(agent.terminate().success());
}

/// Scrapers that connect and send nothing, or never read, cannot lock a
/// real scrape out: 300 idle connections (over the 256 limit) and 8
/// concurrent scrapes, all answered, the idle ones closed and counted.
#[test]
fn idle_and_concurrent_scrapers_cannot_starve_it() {
    if !require_root() {
        return;
    }
    let (_agent, addr) = agent_with_prometheus("prometheus", &[]);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(idle.len() >= 256, "could only open {}", idle.len());
    let started = Instant::now();
    let scrapes: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || http_get(addr, "/metrics", &[])))
        .collect();
    let mut sizes = Vec::new();
    for s in scrapes {
        let (status, _, body) = s.join().unwrap().expect("scrape answered");
        assert_eq!(status, 200);
        sizes.push(body.len());
    }
    let took = started.elapsed();
    eprintln!("8 concurrent scrapes beside 300 idle connections: {took:?}, {sizes:?} bytes");
    assert!(took < Duration::from_secs(3), "scrapes took {took:?}");
    drop(idle);
    // The closed connections are reported (after the next collection).
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics", &[]).unwrap();
        let text = String::from_utf8(body).unwrap();
        let closed = text
            .lines()
            .find_map(|l| l.strip_prefix("syscope_prometheus_connections_closed_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if closed >= 44.0 {
            let render = text
                .lines()
                .find_map(|l| l.strip_prefix("syscope_prometheus_render_duration_seconds "))
                .unwrap_or("?");
            eprintln!("connections closed: {closed}; last render {render} s");
            break;
        }
        assert!(Instant::now() < deadline, "closed={closed}");
        thread::sleep(Duration::from_millis(300));
    }
}

/// An exporter the agent cannot honour, or a bad port, exits 2 naming it.
#[test]
fn unsupported_exporters_exit_2_naming_the_variable() {
    for (var, value) in [
        ("OTEL_METRICS_EXPORTER", "console"),
        ("OTEL_METRICS_EXPORTER", "none,prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000"),
    ] {
        let out = std::process::Command::new(common::agent_bin())
            .env(var, value)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}={value}: {err}");
    }
}

/// A rare event: a counter series that expired idle (here after 2 quiet
/// intervals) and comes back continues its total, so Prometheus sees the
/// new events as an increase, not a new series starting at their count.
#[test]
fn a_series_back_after_expiring_continues_its_total() {
    if !require_root() || !have_prometheus() {
        return;
    }
    let name = unique_name("promrare");
    let conf = std::env::temp_dir().join(format!("syscope-{name}.toml"));
    std::fs::write(&conf, "[limits]\nseries_idle_intervals = 2\n").unwrap();
    let conf_s = conf.to_string_lossy().into_owned();
    let (_agent, addr) = agent_with_prometheus_args("prometheus", &["-c", &conf_s], &[]);
    let prom = Prometheus::start(addr);
    // Scraping already: the first round's series lives only 2 intervals.
    prom.wait_for("sum(syscope_prometheus_scrapes_total)", |v| v >= 1.0);
    let refused = run_named(&name, &["tcp-refused", "3"]);
    let rport = output_field(&refused, "port");
    let sel = format!(
        "tcp_connect_errors_total{{process_executable_name=\"{name}\",server_port=\"{rport}\"}}"
    );
    let q = format!("sum({sel})");
    assert_eq!(prom.wait_for(&q, |v| v >= 3.0), 3.0);
    thread::sleep(Duration::from_millis(1500));
    let t1 = now_s();
    // Gone from the endpoint once idle for more than 2 intervals.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics", &[]).expect("scrape");
        if !String::from_utf8_lossy(&body).contains(&name) {
            break;
        }
        assert!(Instant::now() < deadline, "the idle series never expired");
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(1500));
    // The same port again (a fresh listener-less port would be a new series).
    run_named(&name, &["tcp-refused", "2", "127.0.0.1", &rport]);
    assert_eq!(prom.wait_for(&q, |v| v >= 5.0), 5.0);
    thread::sleep(Duration::from_millis(1500));
    let rise = prom.scalar(&format!("{q} - sum({sel} @ {t1:.3})")).unwrap();
    assert_eq!(rise, 2.0, "rise across the gap");
    let inc = prom.scalar(&format!("sum(increase({sel}[60s]))")).unwrap();
    eprintln!("increase over 60s: {inc} (truth 2 after the first sample)");
    assert!(inc >= 2.0, "increase {inc}");
    let _ = std::fs::remove_file(&conf);
}

//! `syscope slo dashboard` and `syscope slo rules` against the real thing:
//! the agent (as root, `--exporters prometheus`, three SLOs selecting a
//! workload by its process name) measures a real workload (TCP
//! request/response, refused and established connects, failing opens),
//! two real Prometheus servers (Debian's 2.42) scrape it, one with native
//! histograms over protobuf, one with classic buckets from the text
//! format, both loading the generated rules; then every query of the
//! generated dashboard must return data in both.
//!
//! Two tests: the SLI queries (the agent's measurements of the selected
//! workloads), and the SLO queries plus every recorded series of the rules,
//! which read the `syscope_slo_*` metrics of the SLO engine.
//!
//! Needs root (CAP_BPF, CAP_PERFMON) and the `prometheus` package (`cargo
//! xtask setup` installs it).

mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use common::{require_root, Agent};
use serde_json::Value;
use syscope_tests::{free_port, http_get, output_field, prometheus_path, run_named, unique_name};

fn slos(name: &str) -> String {
    format!(
        r#"
[[slo]]
name = "dash-latency"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "50ms"
objective = 0.99
window = "28d"
[slo.match]
"process.executable.name" = "{name}"

[[slo]]
name = "dash-opens"
sli = "availability"
metric = "syscall.errors"
errors = ["ENOENT"]
objective = 0.999
window = "7d"
[slo.match]
"process.executable.name" = "{name}"

[[slo]]
name = "dash-connects"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.995
window = "30d"
[slo.match]
"process.executable.name" = "{name}"
"#
    )
}

const SLO_NAMES: [&str; 3] = ["dash-latency", "dash-opens", "dash-connects"];

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus scraping the agent every second and evaluating `rules`
/// every second; native histograms (protobuf) or classic (text). The
/// harness' `Prometheus` takes no rule files, hence this one.
struct Prom {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    native: bool,
}

impl Prom {
    fn start(target: SocketAddr, rules: &str, native: bool) -> Prom {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "syscope-slo-prom-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: syscope\n    static_configs:\n      - targets: ['{target}']\n",
            dir.join("rules.yml").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = Command::new(prometheus_path());
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"));
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {} (apt package prometheus; cargo xtask setup installs it): {e}",
                    prometheus_path().display()
                )
            });
        let p = Prom {
            child,
            addr,
            dir,
            native,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(addr, "/-/ready", &[]), Ok((200, _, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn mode(&self) -> &'static str {
        if self.native {
            "native histograms"
        } else {
            "classic histograms"
        }
    }

    /// An instant query's result, or the error Prometheus answered.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, _, body) = http_get(self.addr, &path, &[]).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls until `expr` returns data (up to `wait`).
    fn wait_data(&self, expr: &str, wait: Duration) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + wait;
        loop {
            match self.query(expr) {
                Ok(r) if !r.is_empty() => return Ok(r),
                Err(e) => return Err(e),
                Ok(_) if Instant::now() >= deadline => {
                    return Err("no data".into());
                }
                Ok(_) => thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `syscope --slo-file <file> slo <what>`.
fn generate(file: &std::path::Path, what: &str) -> String {
    let out = Command::new(common::agent_bin())
        .arg("--slo-file")
        .arg(file)
        .args(["slo", what])
        .output()
        .expect("run syscope");
    assert!(
        out.status.success(),
        "syscope slo {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries(json: &str) -> Vec<String> {
    let d: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

/// The recorded series of the rule file, each with the SLO it belongs to.
fn recorded(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut group = String::new();
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(g) = t.strip_prefix("- name: ") {
            group = serde_json::from_str::<String>(g).unwrap();
        }
        if let Some(r) = t.strip_prefix("- record: ") {
            let slo = group.trim_start_matches("syscope-slo-").to_owned();
            out.push((serde_json::from_str::<String>(r).unwrap(), slo));
        }
    }
    out
}

/// Everything both tests need: the agent with the SLOs, the workload's
/// traffic in two rounds, two Prometheus servers, and what was generated.
struct Setup {
    agent: Agent,
    proms: Vec<Prom>,
    queries: Vec<String>,
    rules: String,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(tag: &str) -> Setup {
    let name = unique_name(tag);
    let dir = std::env::temp_dir().join(format!("syscope-slo-dash-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slos.toml");
    std::fs::write(&file, slos(&name)).unwrap();
    let rules = generate(&file, "rules");
    let dashboard = generate(&file, "dashboard");
    let queries = dashboard_queries(&dashboard);

    let port = free_port();
    let port_s = port.to_string();
    let file_s = file.display().to_string();
    let agent = Agent::start(
        &["--slo-file", &file_s],
        &[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", port_s.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let proms = vec![
        Prom::start(target, &rules, true),
        Prom::start(target, &rules, false),
    ];
    // Prometheus starts scraping a few seconds after it is ready: the first
    // round must come after a first scrape, or no rate sees it.
    for p in &proms {
        p.wait_data("up{job=\"syscope\"} == 1", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("({}) never scraped the agent: {e}\n{}", p.mode(), p.log()));
    }

    // Two rounds a few scrapes apart, so the counters of the syscall
    // series rise between samples. Each TCP run listens on a new port (a
    // new series: its rate is 0), so the request/response run is long
    // (2 x 12 requests answered after 250 ms, one connection after the
    // other), spanning scrapes: the latency quantiles see it.
    for round in 0..2 {
        run_named(&name, &["fail-open", "40"]);
        run_named(&name, &["tcp-refused", "5"]);
        run_named(&name, &["tcp-connect", "20"]);
        if round == 0 {
            run_named(&name, &["tcp-reqresp", "1", "2", "5"]);
            thread::sleep(Duration::from_secs(4));
        } else {
            let rr = run_named(&name, &["tcp-reqresp", "2", "12", "250"]);
            let _ = output_field(&rr, "port");
        }
    }
    thread::sleep(Duration::from_secs(3));
    Setup {
        agent,
        proms,
        queries,
        rules,
        dir,
    }
}

fn is_slo_query(q: &str) -> bool {
    q.contains("syscope_slo_")
}

/// Every SLI query of the dashboard returns data, with native and with
/// classic histograms.
#[test]
fn dashboard_sli_queries_return_data() {
    if !require_root() {
        return;
    }
    let s = setup("slodsli");
    let sli: Vec<&String> = s.queries.iter().filter(|q| !is_slo_query(q)).collect();
    // Per SLO: 4 (latency: 3 quantiles and a rate) or 3 (events, errors, ratio).
    assert_eq!(sli.len(), 4 + 3 + 3, "{sli:#?}");
    let mut failed = Vec::new();
    for p in &s.proms {
        for q in &sli {
            match p.wait_data(q, Duration::from_secs(20)) {
                Ok(r) => {
                    eprintln!("ok ({}): {q}\n  -> {}", p.mode(), Value::Array(r.clone()));
                    // The p50 of answers after 250 ms: within the bucket
                    // (native, 9 %) or the power of two (classic) above.
                    if q.starts_with("histogram_quantile(0.5,") {
                        let v: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
                        if !(0.22..=0.5).contains(&v) {
                            failed.push(format!("({}) {q}: p50 {v}, not about 0.25 s", p.mode()));
                        }
                    }
                }
                Err(e) => failed.push(format!("({}) {q}: {e}", p.mode())),
            }
        }
    }
    assert!(
        failed.is_empty(),
        "dashboard queries without data:\n{}\nagent:\n{}",
        failed.join("\n"),
        s.agent.stderr()
    );
    assert!(s.agent.is_running());
}

/// The SLO queries of the dashboard (budget, burn rates, events, history)
/// and every recorded series of the rules return data. These read the SLO
/// engine's `syscope_slo_*` metrics; the objective's record alone does not.
#[test]
fn dashboard_slo_queries_and_recording_rules_return_data() {
    if !require_root() {
        return;
    }
    let s = setup("slodslo");
    let slo: Vec<&String> = s.queries.iter().filter(|q| is_slo_query(q)).collect();
    assert_eq!(slo.len(), SLO_NAMES.len() * (4 + 7 + 1), "{slo:#?}");
    let records = recorded(&s.rules);
    assert_eq!(records.len(), SLO_NAMES.len() * (1 + 4 * 7));
    let mut failed = Vec::new();
    let mut passed = 0;
    for p in &s.proms {
        // Give the engine's first export and a rule evaluation the time
        // they need, once; then every query once.
        let _ = p.wait_data("syscope_slo_events_total", Duration::from_secs(20));
        thread::sleep(Duration::from_secs(2));
        let checks = slo.iter().map(|q| q.to_string()).chain(
            records
                .iter()
                .map(|(r, name)| format!("{r}{{slo_name=\"{name}\"}}")),
        );
        for q in checks {
            match p.query(&q) {
                Ok(r) if !r.is_empty() => passed += 1,
                Ok(_) => failed.push(format!("({}) no data: {q}", p.mode())),
                Err(e) => failed.push(format!("({}) {e}: {q}", p.mode())),
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} SLO queries and records without data (passed {passed}):\n{}",
        failed.len(),
        failed.len() + passed,
        failed.join("\n")
    );
}

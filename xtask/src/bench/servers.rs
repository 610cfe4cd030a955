//! Real servers under each configuration: requests/s of a private
//! redis-server (driven by `redis-benchmark`, SET and GET) and a private
//! nginx serving a small static file over kept-alive connections (driven by
//! `wrk`), with no tracing, syscope's default, syscope with everything on,
//! and bpftrace doing syscalls and TCP. Configurations alternate in passes;
//! each reports the median and min-max of its passes and the throughput
//! lost against no tracing.
//!
//! On a machine with two or more CPUs the server runs on the last CPU and
//! the load generator on the first (taskset); the tracers are not pinned.
//! The load generator is traced too (it runs on the same host), as it would
//! be on any node running both.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, spread, start_tracer, stop, Tracer};

/// Concurrent connections of both load generators.
const CONNS: u32 = 50;
/// Bytes of nginx's static file.
const FILE_BYTES: usize = 1024;
/// The default configuration's target: % throughput lost.
const DEFAULT_TARGET_PCT: f64 = 3.0;

const TRACERS: [Tracer; 4] = [
    Tracer::None,
    Tracer::SyscopeDefault,
    Tracer::Syscope,
    Tracer::BpftraceAll,
];
/// The measured loads, in table order.
const LOADS: [&str; 3] = ["redis SET", "redis GET", "nginx (wrk)"];

/// The markdown section and its JSON object.
pub fn section(root: &Path, agent: &Path, quick: bool) -> Result<(String, String)> {
    for tool in [
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "wrk",
        "nginx",
    ] {
        if !on_path(tool) {
            bail!("{tool} not found: `cargo xtask setup` installs it (redis-server, redis-tools, wrk, nginx)");
        }
    }
    let (passes, redis_n, wrk_secs) = if quick {
        (2, 50_000u32, 3u32)
    } else {
        (4, 200_000u32, 10u32)
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (server_cpu, client_cpu) = (cpus - 1, 0);
    let dir = root.join("target/bench/servers");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut redis = Server::redis(&dir.join("redis"), server_cpu)?;
    let mut nginx = Server::nginx(&dir.join("nginx"), server_cpu)?;

    // Per tracer and load: requests/s of each pass.
    let mut rps = vec![vec![vec![]; LOADS.len()]; TRACERS.len()];
    let mut run = || -> Result<()> {
        for pass in 0..passes {
            for (ti, &t) in TRACERS.iter().enumerate() {
                eprintln!("servers pass {}/{passes}: {}", pass + 1, t.label());
                let mut child = start_tracer(t, agent)?;
                let r = (|| -> Result<()> {
                    let (set, get) = redis_benchmark(redis.port, client_cpu, redis_n)?;
                    rps[ti][0].push(set);
                    rps[ti][1].push(get);
                    rps[ti][2].push(wrk(nginx.port, client_cpu, wrk_secs)?);
                    Ok(())
                })();
                if let Some(c) = child.as_mut() {
                    stop(c);
                }
                r?;
            }
        }
        Ok(())
    };
    let r = run();
    redis.stop();
    nginx.stop();
    r?;

    let med: Vec<Vec<f64>> = rps
        .iter()
        .map(|l| l.iter().map(|v| median(v)).collect())
        .collect();
    let lost = |ti: usize, li: usize| (med[0][li] - med[ti][li]) / med[0][li] * 100.0;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Servers: requests/s of a private redis-server (`redis-benchmark -t set,get -n {redis_n} -P 1 -c {CONNS} -q`, no persistence) and nginx (one worker, a {FILE_BYTES}-byte static file, `wrk -t1 -c {CONNS} -d {wrk_secs}s`, kept alive); server on CPU {server_cpu}, load generator on CPU {client_cpu}; median and min-max of {passes} alternating passes; % lost against no tracing:"
    );
    let _ = writeln!(t);
    let mut head = String::from("| configuration |");
    let mut rule = String::from("|---|");
    for l in LOADS {
        let _ = write!(head, " {l} req/s | min-max | lost |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(t, "{head}");
    let _ = writeln!(t, "{rule}");
    for (ti, tr) in TRACERS.iter().enumerate() {
        let _ = write!(t, "| {} |", tr.label());
        for li in 0..LOADS.len() {
            let l = if ti == 0 {
                "-".to_string()
            } else {
                format!("{:.1} %", lost(ti, li))
            };
            let _ = write!(
                t,
                " {:.0} | {} | {} |",
                med[ti][li],
                spread(&rps[ti][li], 1.0, 0),
                l
            );
        }
        let _ = writeln!(t);
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Run-to-run spread with no tracing (max-min over median): {}.",
        LOADS
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let v = &rps[0][li];
                let (lo, hi) = super::min_max(v);
                format!("{l} {:.1} %", (hi - lo) / median(v) * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "| target | measured | limit | result |");
    let _ = writeln!(t, "|---|---:|---:|---|");
    for (li, l) in LOADS.iter().enumerate() {
        let v = lost(1, li);
        let _ = writeln!(
            t,
            "| syscope default: % throughput lost, {l} < {DEFAULT_TARGET_PCT} | {v:.1} | {DEFAULT_TARGET_PCT} | {} |",
            if v < DEFAULT_TARGET_PCT { "met" } else { "MISSED" }
        );
    }
    let json = serde_json::json!({
        "redis_requests": redis_n,
        "wrk_seconds": wrk_secs,
        "connections": CONNS,
        "passes": passes,
        "configurations": TRACERS.iter().enumerate().map(|(ti, tr)| {
            serde_json::json!({
                "name": tr.label(),
                "loads": LOADS.iter().enumerate().map(|(li, l)| serde_json::json!({
                    "load": l,
                    "requests_per_s_median": (med[ti][li] * 10.0).round() / 10.0,
                    "requests_per_s": rps[ti][li],
                    "lost_pct": if ti == 0 { None } else { Some((lost(ti, li) * 100.0).round() / 100.0) },
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    });
    Ok((t, json.to_string()))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(tool).is_file())
    })
}

/// A free loopback port (bound, then released: the server takes it next).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A server process of ours, pinned, listening on `port`.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn redis(dir: &Path, cpu: usize) -> Result<Server> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), "redis-server", "--port"])
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        Server::start(c, port, "redis-server", &dir.join("redis.log"))
    }

    fn nginx(prefix: &Path, cpu: usize) -> Result<Server> {
        std::fs::create_dir_all(prefix.join("html"))?;
        std::fs::create_dir_all(prefix.join("tmp"))?;
        std::fs::write(prefix.join("html/file"), vec![b'x'; FILE_BYTES])?;
        let port = free_port()?;
        let p = prefix.display();
        let conf = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  keepalive_timeout 65;\n  keepalive_requests 100000000;\n\
             client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n\
             uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {p}/html;\n  }}\n}}\n"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), "nginx", "-p"])
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        Server::start(c, port, "nginx", &prefix.join("error.log"))
    }

    fn start(mut c: Command, port: u16, what: &str, log: &Path) -> Result<Server> {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} did not listen on port {port}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Server { child, port })
    }

    fn stop(&mut self) {
        super::stop(&mut self.child);
    }
}

/// redis-benchmark's SET and GET requests/s.
fn redis_benchmark(port: u16, cpu: usize, n: u32) -> Result<(f64, f64)> {
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "redis-benchmark", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "-n",
            &n.to_string(),
        ])
        .args(["-P", "1", "-c", &CONNS.to_string(), "-q"])
        .stdin(Stdio::null())
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `-q` prints "SET: 61349.69 requests per second, p50=..." (after
    // progress lines ending in \r).
    let rate = |test: &str| {
        text.split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix(test))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .next_back()
            .with_context(|| format!("no {test} rate in redis-benchmark output: {text}"))
    };
    Ok((rate("SET:")?, rate("GET:")?))
}

/// wrk's requests/s on nginx's static file.
fn wrk(port: u16, cpu: usize, secs: u32) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "wrk", "-t1"])
        .args(["-c", &CONNS.to_string(), "-d", &format!("{secs}s")])
        .arg(format!("http://127.0.0.1:{port}/file"))
        .stdin(Stdio::null())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors: {text}");
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))
}

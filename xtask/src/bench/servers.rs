//! Real servers under each configuration: requests/s of a private
//! redis-server (driven by `redis-benchmark`, SET and GET) and a private
//! nginx serving a small static file over kept-alive connections (driven by
//! `wrk`), with no tracing, syscope's default, syscope with everything on,
//! and bpftrace doing syscalls and TCP. Configurations alternate in passes;
//! each reports the median and min-max of its passes and the throughput
//! lost against no tracing.
//!
//! Throughput on a shared VM moves by 15-40 % between passes, more than the
//! default's 3 % target. So each run also measures the CPU time (user +
//! system, of the server's processes and the load generator) per request:
//! the programs run in the traced threads' context, so their cost is in that
//! time, and time the hypervisor or other tenants take is not. When the
//! server is CPU-bound, throughput lost = 1 - base CPU / traced CPU per
//! request. The target is judged on the median over passes of that figure
//! taken against the same pass's no-tracing run, so drift between passes
//! cancels.
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

const TRACERS: [Tracer; 5] = [
    Tracer::None,
    Tracer::FloorSock,
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

    // Per tracer and load: requests/s and CPU µs per request of each pass.
    // The default's floor needs the socket tracepoints (Linux 6.3+).
    let sock_tps = Path::new("/sys/kernel/tracing/events/sock/sock_send_length").exists();
    let tracers: Vec<Tracer> = TRACERS
        .into_iter()
        .filter(|&t| t != Tracer::FloorSock || sock_tps)
        .collect();
    let default = tracers
        .iter()
        .position(|&t| t == Tracer::SyscopeDefault)
        .context("the default configuration is measured")?;
    let mut rps = vec![vec![vec![]; LOADS.len()]; tracers.len()];
    let mut cpu = vec![vec![vec![]; LOADS.len()]; tracers.len()];
    let mut run = || -> Result<()> {
        for pass in 0..passes {
            for (ti, &t) in tracers.iter().enumerate() {
                eprintln!("servers pass {}/{passes}: {}", pass + 1, t.label());
                let mut child = start_tracer(t, agent)?;
                let r = (|| -> Result<()> {
                    let loads: [&dyn Fn() -> Result<(f64, f64)>; 3] = [
                        &|| redis_benchmark(redis.port, client_cpu, redis_n, "SET"),
                        &|| redis_benchmark(redis.port, client_cpu, redis_n, "GET"),
                        &|| wrk(nginx.port, client_cpu, wrk_secs),
                    ];
                    let servers = [redis.pid(), redis.pid(), nginx.pid()];
                    for (li, load) in loads.iter().enumerate() {
                        let (r, us) = cpu_per_request(servers[li], load)?;
                        rps[ti][li].push(r);
                        cpu[ti][li].push(us);
                    }
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
    let cpu_med: Vec<Vec<f64>> = cpu
        .iter()
        .map(|l| l.iter().map(|v| median(v)).collect())
        .collect();
    // Throughput lost when CPU-bound: the share of each request's CPU time
    // the tracing added.
    let cpu_lost = |ti: usize, li: usize| (1.0 - cpu_med[0][li] / cpu_med[ti][li]) * 100.0;
    // The same, pass by pass against that pass's own no-tracing run (a
    // minute apart, where medians compare runs minutes apart): slow drift
    // of the VM cancels. The target is judged on the median of these.
    let paired_lost = |ti: usize, li: usize| -> Vec<f64> {
        cpu[0][li]
            .iter()
            .zip(&cpu[ti][li])
            .map(|(base, traced)| (1.0 - base / traced) * 100.0)
            .collect()
    };
    let rel_spread = |v: &[f64]| {
        let (lo, hi) = super::min_max(v);
        (hi - lo) / median(v) * 100.0
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Servers: requests/s of a private redis-server (`redis-benchmark -t set` and `-t get`, each `-n {redis_n} -P 1 -c {CONNS} -q`, no persistence) and nginx (one worker, a {FILE_BYTES}-byte static file, `wrk -t1 -c {CONNS} -d {wrk_secs}s`, kept alive); server on CPU {server_cpu}, load generator on CPU {client_cpu}; median and min-max of {passes} alternating passes; % lost against no tracing:"
    );
    let _ = writeln!(t);
    let labels: Vec<&str> = tracers.iter().map(|t| t.label()).collect();
    write_table(&mut t, &labels, "req/s", &rps, &med, 0, lost);
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "CPU time per request (µs, user + system of the server's processes and the load generator, from /proc and getrusage), same passes; lost = 1 - no tracing's / this, the throughput lost when the server is CPU-bound:"
    );
    let _ = writeln!(t);
    write_table(&mut t, &labels, "µs/req", &cpu, &cpu_med, 2, cpu_lost);
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Run-to-run spread with no tracing (max-min over median): requests/s {}; CPU per request {}.",
        LOADS
            .iter()
            .enumerate()
            .map(|(li, l)| format!("{l} {:.1} %", rel_spread(&rps[0][li])))
            .collect::<Vec<_>>()
            .join(", "),
        LOADS
            .iter()
            .enumerate()
            .map(|(li, l)| format!("{l} {:.1} %", rel_spread(&cpu[0][li])))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        t,
        "The default pass by pass, % CPU per request added against the same pass's no tracing: {}.",
        LOADS
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let p: Vec<String> = paired_lost(default, li)
                    .iter()
                    .map(|v| format!("{v:.1}"))
                    .collect();
                format!("{l} {}", p.join(" / "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(f) = tracers.iter().position(|&t| t == Tracer::FloorSock) {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Of the default's CPU cost per request, empty programs on the same socket tracepoints (the floor: what attaching there costs, whatever the program does) take: {}.",
            LOADS
                .iter()
                .enumerate()
                .map(|(li, l)| {
                    let (base, floor, def) = (cpu_med[0][li], cpu_med[f][li], cpu_med[default][li]);
                    format!(
                        "{l} {:+.2} of {:+.2} µs",
                        floor - base,
                        def - base
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "| target | measured | limit | result |");
    let _ = writeln!(t, "|---|---:|---:|---|");
    for (li, l) in LOADS.iter().enumerate() {
        let pairs = paired_lost(default, li);
        let v = median(&pairs);
        let (lo, hi) = super::min_max(&pairs);
        let verdict = match (v < DEFAULT_TARGET_PCT, hi - lo < DEFAULT_TARGET_PCT) {
            (true, _) => "met".to_string(),
            (false, true) => "MISSED".to_string(),
            (false, false) => format!("MISSED (passes {lo:.1} to {hi:.1} %)"),
        };
        let _ = writeln!(
            t,
            "| syscope default: % throughput lost when CPU-bound (CPU per request against the same pass's no tracing, median of {passes} passes), {l} < {DEFAULT_TARGET_PCT} | {v:.1} | {DEFAULT_TARGET_PCT} | {verdict} |"
        );
    }
    let json = serde_json::json!({
        "redis_requests": redis_n,
        "wrk_seconds": wrk_secs,
        "connections": CONNS,
        "passes": passes,
        "configurations": tracers.iter().enumerate().map(|(ti, tr)| {
            serde_json::json!({
                "name": tr.label(),
                "loads": LOADS.iter().enumerate().map(|(li, l)| serde_json::json!({
                    "load": l,
                    "requests_per_s_median": (med[ti][li] * 10.0).round() / 10.0,
                    "requests_per_s": rps[ti][li],
                    "lost_pct": if ti == 0 { None } else { Some((lost(ti, li) * 100.0).round() / 100.0) },
                    "cpu_us_per_request_median": (cpu_med[ti][li] * 1000.0).round() / 1000.0,
                    "cpu_us_per_request": cpu[ti][li],
                    "cpu_lost_pct": if ti == 0 { None } else { Some((cpu_lost(ti, li) * 100.0).round() / 100.0) },
                    "cpu_lost_pct_paired": if ti == 0 { None } else { Some(paired_lost(ti, li)) },
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    });
    Ok((t, json.to_string()))
}

/// One markdown table: a row per configuration (`labels`), and per load its
/// median (`prec` decimals), min-max of `samples`, and `lost` against the
/// first row.
fn write_table(
    t: &mut String,
    labels: &[&str],
    unit: &str,
    samples: &[Vec<Vec<f64>>],
    med: &[Vec<f64>],
    prec: usize,
    lost: impl Fn(usize, usize) -> f64,
) {
    let mut head = String::from("| configuration |");
    let mut rule = String::from("|---|");
    for l in LOADS {
        let _ = write!(head, " {l} {unit} | min-max | lost |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(t, "{head}");
    let _ = writeln!(t, "{rule}");
    for (ti, label) in labels.iter().enumerate() {
        let _ = write!(t, "| {label} |");
        for li in 0..LOADS.len() {
            let l = if ti == 0 {
                "-".to_string()
            } else {
                format!("{:.1} %", lost(ti, li))
            };
            let _ = write!(
                t,
                " {:.prec$} | {} | {} |",
                med[ti][li],
                spread(&samples[ti][li], 1.0, prec),
                l
            );
        }
        let _ = writeln!(t);
    }
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

    /// The server's process id (taskset execs the server in place).
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs `load` (requests/s, requests) and returns its requests/s and the
/// CPU time per request, µs: the server's (process `server` and its
/// children: nginx's worker) plus the load generator's (this process's
/// waited-for children: `load` runs one to completion).
fn cpu_per_request(server: u32, load: &dyn Fn() -> Result<(f64, f64)>) -> Result<(f64, f64)> {
    let (s0, c0) = (tree_cpu_us(server)?, children_cpu_us());
    let (rps, requests) = load()?;
    let (s1, c1) = (tree_cpu_us(server)?, children_cpu_us());
    if requests <= 0.0 {
        bail!("the load generator made no requests");
    }
    Ok((rps, ((s1 - s0) + (c1 - c0)) / requests))
}

/// User + system CPU time (µs) of process `pid` and its direct children.
fn tree_cpu_us(pid: u32) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields after the command (which may hold spaces and parentheses):
    // state is field 3, so ppid (4) is [1], utime (14) [11], stime (15) [12].
    let fields = |p: &str| -> Option<(u32, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
        Some((rest.get(1)?.parse().ok()?, ticks / hz * 1e6))
    };
    let (_, own) = fields(&pid.to_string())
        .with_context(|| format!("reading /proc/{pid}/stat: the server exited"))?;
    let children: f64 = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| fields(&n))
        .filter(|&(ppid, _)| ppid == pid)
        .map(|(_, us)| us)
        .sum();
    Ok(own + children)
}

/// User + system CPU time (µs) of this process's waited-for children.
fn children_cpu_us() -> f64 {
    // SAFETY: `ru` is a valid rusage for the kernel to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// redis-benchmark's requests/s for `test` (SET or GET), and the requests
/// made.
fn redis_benchmark(port: u16, cpu: usize, n: u32, test: &str) -> Result<(f64, f64)> {
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "redis-benchmark", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-t",
            &test.to_lowercase(),
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
    let prefix = format!("{test}:");
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("no {test} rate in redis-benchmark output: {text}"))?;
    Ok((rate, f64::from(n)))
}

/// wrk's requests/s on nginx's static file, and the requests made.
fn wrk(port: u16, cpu: usize, secs: u32) -> Result<(f64, f64)> {
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
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))?;
    // "  123456 requests in 10.00s, 150.00MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.trim().parse().ok())
        .with_context(|| format!("no request count in wrk output: {text}"))?;
    Ok((rate, requests))
}

//! `cargo xtask bench`: what syscope costs per syscall, side by side with the
//! floor (trivial programs on the same hooks) and bpftrace, in one run.
//!
//! A tight getppid loop (one real syscall per iteration, done by the
//! `syscope-workload` binary) is timed with nothing attached, with the floor,
//! with syscope, and with bpftrace keeping a per-syscall latency `hist()`.
//! Configurations are measured in alternating passes and each reports the
//! median, so drift on a noisy machine hits them all alike. The agent's CPU
//! (from /proc/<pid>/stat) and peak RSS are taken over the loaded window.
//!
//! Then the same for TCP: a loopback request/response load (64-byte requests
//! on one kept-alive connection, and one request per new connection) with no
//! agent, syscope's TCP programs alone, all of syscope, and bpftrace timing
//! connects and server requests on the same tracepoints. Client and server
//! threads are pinned to one CPU: across two CPUs each request waits for a
//! cross-CPU wakeup, which on a VM costs about 20x a same-CPU round trip and
//! varies run to run.
//!
//! Then real servers (`servers`): requests/s of a private redis-server
//! (redis-benchmark) and nginx (wrk) with no tracing, syscope's default,
//! syscope with everything on and bpftrace.
//!
//! "Everything on" is spelled `--probes syscalls,tcp` wherever syscope's
//! syscall programs are measured; "default" passes no `--probes`.

mod servers;

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

const BPFTRACE_PROGRAM: &str = "tracepoint:raw_syscalls:sys_enter { @start[tid] = nsecs; } \
     tracepoint:raw_syscalls:sys_exit /@start[tid]/ { @lat[args->id] = hist(nsecs - @start[tid]); delete(@start[tid]); }";

/// The nearest bpftrace equivalent of syscope's TCP set: connect latency and
/// server request latency per process, and retransmits.
const BPFTRACE_TCP_PROGRAM: &str = "tracepoint:sock:inet_sock_set_state /args->newstate == 2/ { @conn[args->skaddr] = nsecs; } \
     tracepoint:sock:inet_sock_set_state /args->oldstate == 2 && @conn[args->skaddr]/ { @connect[comm] = hist(nsecs - @conn[args->skaddr]); delete(@conn[args->skaddr]); } \
     tracepoint:sock:sock_recv_length /args->ret > 0 && args->protocol == 6/ { @rx[args->sk] = nsecs; } \
     tracepoint:sock:sock_send_length /args->ret > 0 && @rx[args->sk]/ { @request[comm] = hist(nsecs - @rx[args->sk]); delete(@rx[args->sk]); } \
     tracepoint:tcp:tcp_retransmit_skb { @retransmits[comm] = count(); } \
     tracepoint:tcp:tcp_destroy_sock { delete(@rx[args->skaddr]); }";

/// The target for everything on against bpftrace: at most this ratio of
/// its added ns per syscall.
const BPFTRACE_RATIO: f64 = 0.35;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tracer {
    None,
    Floor,
    Syscope,
    Bpftrace,
    SyscopeTcp,
    BpftraceTcp,
    /// syscope with TCP request boundaries from the syscall programs (the
    /// route of kernels before 6.3), forced here.
    SyscopeSyscallRoute,
    SyscopeTcpSyscallRoute,
    /// bpftrace's syscall hist() and TCP programs together: the nearest
    /// equivalent of all of syscope.
    BpftraceAll,
    /// syscope with 4 SLO latency thresholds on syscall.duration: every
    /// split counter slot in use (the kernel's per-event SLO cost).
    SyscopeSlos,
    /// syscope with no `--probes`: what a user gets by default.
    SyscopeDefault,
    /// The hand-written reference design (`--bench-programs reference`,
    /// ebpf/src/floor.rs): see [`REFERENCE_TEXT`].
    Reference,
    /// Empty programs on the socket tracepoints the default's TCP programs
    /// use (`--bench-programs floor-sock`): the least the default can cost
    /// there.
    FloorSock,
    /// Two clock reads and a per-CPU store on the syscall hooks
    /// (`--bench-programs floor-clock`): the least any syscall latency
    /// measurement can cost.
    FloorClock,
    /// syscope's default with another workload's syscalls selected on
    /// demand: what a thread that is not selected pays while the syscall
    /// programs are attached for someone else.
    SyscopeOnDemandOther,
    /// syscope everything on, thread state in the LRU hash map
    /// (`--lru-threads`): what task storage saves, side by side.
    SyscopeLru,
}

/// What the reference design does and omits, for the results.
const REFERENCE_TEXT: &str = "The reference design (ebpf/src/floor.rs, `--bench-programs reference`) is the cheapest syscall latency histogram we could write on the same tp_btf hooks: on entry it stores bpf_ktime_get_ns() and the syscall number in a plain ARRAY slot indexed by the thread id (pid_max entries, so no two live threads share a slot; no hashing); on exit it reads the clock, clears the slot and adds the duration with atomic adds to a histogram (syscope's bucket layout) in a plain ARRAY indexed by syscall number. It omits what syscope does on top: per-workload series (process name and cgroup, a hash key per series), errno counts, skipping the agent's own threads, thread-exit cleanup, rename/exec tracking, SLO threshold counters and the TCP request route. (syscope keeps thread state in BPF task storage where the kernel has it; an array slot indexed by tid is at least as cheap, and has no place in a production agent: pid_max slots whatever runs.)";

impl Tracer {
    fn label(self) -> &'static str {
        match self {
            Tracer::None => "no tracing",
            Tracer::Floor => "floor (empty tp_btf enter+exit)",
            Tracer::Syscope => "syscope, everything on (--probes syscalls,tcp)",
            Tracer::Bpftrace => "bpftrace hist() per syscall",
            Tracer::SyscopeTcp => "syscope TCP programs alone",
            Tracer::SyscopeSyscallRoute => "syscope, TCP requests via the syscall route (< 6.3)",
            Tracer::SyscopeTcpSyscallRoute => "syscope TCP alone, syscall route (< 6.3)",
            Tracer::BpftraceTcp => "bpftrace TCP: connect + request hist()",
            Tracer::BpftraceAll => "bpftrace syscall hist() + TCP",
            Tracer::SyscopeSlos => "syscope with 4 SLO thresholds",
            Tracer::SyscopeDefault => "syscope default (no --probes)",
            Tracer::Reference => "reference design (hand-written, see below)",
            Tracer::FloorSock => {
                "floor of the default (empty tp_btf sock_send_length + sock_recv_length)"
            }
            Tracer::SyscopeLru => "syscope, everything on, thread state in the LRU hash",
            Tracer::FloorClock => {
                "clock floor (tp_btf enter+exit: two clock reads, a per-CPU store)"
            }
            Tracer::SyscopeOnDemandOther => {
                "syscope default, another workload's syscalls selected (this loop not)"
            }
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    ns_per_call: Vec<f64>,
    cpu_pct: Vec<f64>,
    rss_kib: u64,
    /// Per attached program, from fdinfo, in the extra pass with
    /// kernel.bpf_stats_enabled (which adds its own cost).
    prog_stats: Vec<ProgStat>,
}

/// One kernel program's statistics (kernel.bpf_stats_enabled).
#[derive(Clone, Debug)]
struct ProgStat {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark attaches eBPF programs: run it as root");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (passes, runs, iters) = if quick {
        (1, 3, 2_000_000u64)
    } else {
        (2, 5, 5_000_000u64)
    };
    // bpftrace (and syscope's fallback hook) find tracepoints through tracefs.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        crate::sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }
    let agent = root.join("target/release/syscope");
    let workload = root.join("target/release/syscope-workload");
    if args.iter().any(|a| a == "--servers") {
        // The server section alone (its own results file).
        let (table, json) = servers::section(root, &agent, quick)?;
        println!("{table}");
        let dir = root.join("target/bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("servers.json"), json)?;
        std::fs::write(dir.join("servers.md"), &table)?;
        return Ok(());
    }
    // Appended configurations keep the indexes used below.
    let tracers = [
        Tracer::None,
        Tracer::Floor,
        Tracer::Syscope,
        Tracer::Bpftrace,
        Tracer::SyscopeSyscallRoute,
        Tracer::SyscopeSlos,
        Tracer::Reference,
        Tracer::SyscopeLru,
        Tracer::FloorClock,
        Tracer::SyscopeOnDemandOther,
    ];
    let mut samples = vec![Sample::default(); tracers.len()];

    for pass in 0..passes {
        for (ti, &t) in tracers.iter().enumerate() {
            eprintln!("pass {}/{passes}: {}", pass + 1, t.label());
            let mut child = start_tracer(t, &agent)?;
            // Agent CPU over the whole loaded window of this pass (ticks are
            // 10 ms: one window of several seconds resolves well under 1 %).
            let before = child.as_ref().map(|c| cpu_ticks(c.id())).transpose()?;
            let t0 = Instant::now();
            for _ in 0..runs {
                samples[ti].ns_per_call.push(run_loop(&workload, iters)?);
            }
            let wall = t0.elapsed().as_secs_f64();
            if let (Some(c), Some(b)) = (child.as_ref(), before) {
                let ticks = cpu_ticks(c.id())? - b;
                samples[ti]
                    .cpu_pct
                    .push(ticks as f64 / clk_tck() / wall * 100.0);
                samples[ti].rss_kib = samples[ti].rss_kib.max(peak_rss_kib(c.id())?);
            }
            if let Some(c) = child.as_mut() {
                stop(c);
            }
        }
    }

    // Contention: the same loop in one thread per CPU at once, for the
    // configurations whose histograms are shared between CPUs.
    let contended = [
        (0, Tracer::None),
        (2, Tracer::Syscope),
        (6, Tracer::Reference),
    ];
    let mut cpus_ns = vec![Vec::new(); contended.len()];
    for pass in 0..passes {
        for (ci, &(_, t)) in contended.iter().enumerate() {
            eprintln!("pass {}/{passes}: {} on every CPU", pass + 1, t.label());
            let mut child = start_tracer(t, &agent)?;
            for _ in 0..runs {
                cpus_ns[ci].push(run_loop_cpus(&workload, iters)?);
            }
            if let Some(c) = child.as_mut() {
                stop(c);
            }
        }
    }

    // One more short syscope run with the kernel's per-program statistics on:
    // apart from the main passes, since the statistics cost time themselves.
    {
        let _ = Command::new("sysctl")
            .args(["-qw", "kernel.bpf_stats_enabled=1"])
            .status();
        for (i, t) in [(2, Tracer::Syscope), (6, Tracer::Reference)] {
            let mut child = start_tracer(t, &agent)?;
            run_loop(&workload, iters)?;
            if let Some(c) = child.as_ref() {
                samples[i].prog_stats = prog_stats(c.id());
            }
            if let Some(c) = child.as_mut() {
                stop(c);
            }
        }
        let _ = Command::new("sysctl")
            .args(["-qw", "kernel.bpf_stats_enabled=0"])
            .status();
    }
    let clock_ns = clock_read_ns();

    let med: Vec<f64> = samples.iter().map(|s| median(&s.ns_per_call)).collect();
    let base = med[0];
    let added = |i: usize| med[i] - base;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| configuration | ns/syscall (median) | min-max | added ns/syscall | agent CPU % of a core | agent peak RSS |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|");
    for (i, t) in tracers.iter().enumerate() {
        let cpu = if samples[i].cpu_pct.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", median(&samples[i].cpu_pct))
        };
        let rss = if samples[i].rss_kib == 0 {
            "-".to_string()
        } else {
            format!("{:.1} MiB", samples[i].rss_kib as f64 / 1024.0)
        };
        let _ = writeln!(
            table,
            "| {} | {:.0} | {} | {} | {} | {} |",
            t.label(),
            med[i],
            spread(&samples[i].ns_per_call, 1.0, 0),
            if i == 0 {
                "-".into()
            } else {
                format!("{:+.0}", added(i))
            },
            cpu,
            rss
        );
    }
    let (floor, sys, bpft, refd, clock) = (added(1), added(2), added(3), added(6), added(8));
    let rate = 1e9 / med[2];
    let sys_cpu = median(&samples[2].cpu_pct);
    let sys_rss = samples[2].rss_kib as f64 / 1024.0;
    // Whether a ratio to bpftrace can be met at all: no latency design
    // costs less than the clock floor.
    let bpft_note = if clock / bpft > BPFTRACE_RATIO {
        format!(
            " (below reach here: the clock floor alone is {:.2}x)",
            clock / bpft
        )
    } else {
        String::new()
    };
    let checks = [
        (
            "everything on: syscope added / reference design added",
            sys / refd,
            1.1,
            String::new(),
        ),
        (
            "everything on: syscope added / bpftrace added",
            sys / bpft,
            BPFTRACE_RATIO,
            bpft_note,
        ),
        (
            "syscope agent CPU % of one core",
            sys_cpu,
            1.0,
            String::new(),
        ),
        ("syscope peak RSS MiB", sys_rss, 64.0, String::new()),
    ];
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "Syscall rate under syscope: {:.2} M/s ({} runs x {} getppid calls per configuration and pass, {} passes).",
        rate / 1e6,
        runs,
        iters,
        passes
    );
    let _ = writeln!(
        table,
        "Thread state in task storage (where the kernel has it, 5.13+): {:+.0} ns per syscall, everything on; the same programs with the LRU hash map (kernels before 5.13): {:+.0} ns.",
        added(2),
        added(7)
    );
    let _ = writeln!(
        table,
        "A syscall that is not socket I/O (getppid) with TCP requests from the syscall route (kernels before 6.3): {:+.0} ns against {:+.0} ns with the socket tracepoints.",
        added(4),
        added(2)
    );
    let _ = writeln!(
        table,
        "On demand (the default), while another workload's syscalls are selected and so the syscall programs attached: {:+.0} ns per syscall of a thread that is not selected (the hooks alone: {floor:+.0} ns; everything on: {:+.0} ns). With nothing selected the programs are detached (tests/tests/ondemand.rs checks that no syscall program runs).",
        added(9),
        added(2)
    );
    let _ = writeln!(
        table,
        "The same with 4 SLO latency thresholds (exact split counters, all in use): {:+.0} ns against {:+.0} ns without.",
        added(5),
        added(2)
    );
    let _ = writeln!(
        table,
        "Added ns/syscall: floor {floor:+.0}, clock floor {clock:+.0}, reference design {refd:+.0}, syscope everything on {sys:+.0}, bpftrace {bpft:+.0}; syscope / reference {:.2}x, syscope / bpftrace {:.2}x, syscope / floor {:.2}x (for information: the floor reads no clock).",
        sys / refd,
        sys / bpft,
        sys / floor
    );
    let _ = writeln!(
        table,
        "The clock floor is the least any syscall latency measurement on these hooks costs: the hooks, a clock read on entry and on exit, and one store (per CPU, so a syscall that sleeps gets a wrong duration: it keeps nothing per thread and no histogram). Against bpftrace it is {:.2}x; the reference design is {:.2}x.",
        clock / bpft,
        refd / bpft
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cmed: Vec<f64> = cpus_ns.iter().map(|v| median(v)).collect();
    let _ = writeln!(
        table,
        "Contention: the loop in {cpus} threads at once, one pinned to each CPU, sharing the process's series (slowest thread, median of {runs} runs x {passes} passes): syscope everything on {:+.0} ns (alone {sys:+.0}), reference design {:+.0} ns (alone {refd:+.0}); syscope / reference {:.2}x. No tracing: {:.0} ns ({}).",
        cmed[1] - cmed[0],
        cmed[2] - cmed[0],
        (cmed[1] - cmed[0]) / (cmed[2] - cmed[0]),
        cmed[0],
        spread(&cpus_ns[0], 1.0, 0)
    );
    let _ = writeln!(table);
    let _ = writeln!(table, "{REFERENCE_TEXT}");
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "One clock read in userspace (vDSO clock_gettime; bpf_ktime_get_ns reads the same clocksource): {clock_ns:.1} ns; a latency needs two."
    );
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "Per-program run time with kernel.bpf_stats_enabled=1, in a separate run of {iters} getppid calls per configuration (run_time_ns / run_cnt; the statistics add their own cost, two clock reads per run):"
    );
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "| configuration | program | runs | average ns per run |"
    );
    let _ = writeln!(table, "|---|---|---:|---:|");
    for i in [2, 6] {
        for p in samples[i].prog_stats.iter().filter(|p| p.run_cnt > 0) {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {:.0} |",
                tracers[i].label(),
                p.name,
                p.run_cnt,
                p.run_time_ns as f64 / p.run_cnt as f64
            );
        }
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "| target | measured | limit | result |");
    let _ = writeln!(table, "|---|---:|---:|---|");
    for (name, v, lim, note) in checks {
        let _ = writeln!(
            table,
            "| {name} <= {lim} | {v:.2} | {lim} | {}{note} |",
            if v <= lim { "met" } else { "MISSED" }
        );
    }
    let (tcp_table, tcp_json) = tcp_section(&agent, &workload, quick)?;
    table.push('\n');
    table.push_str(&tcp_table);
    let (srv_table, srv_json) = servers::section(root, &agent, quick)?;
    table.push('\n');
    table.push_str(&srv_table);
    let (collect_table, collect_json) = crate::bench_collect::section(root, quick)?;
    table.push('\n');
    table.push_str(&collect_table);
    std::fs::create_dir_all(root.join("target/bench"))?;
    std::fs::write(root.join("target/bench/collect.json"), collect_json)?;
    println!("{table}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let mut json = String::from("{\n  \"configurations\": [\n");
    for (i, t) in tracers.iter().enumerate() {
        let _ = writeln!(
            json,
            "    {{\"name\": \"{}\", \"ns_per_syscall\": {:.1}, \"runs\": {:?}, \"agent_cpu_pct\": {:?}, \"agent_peak_rss_kib\": {}, \"programs\": {}}}{}",
            t.label(),
            med[i],
            samples[i].ns_per_call.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
            samples[i].cpu_pct.iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            samples[i].rss_kib,
            serde_json::Value::Array(
                samples[i]
                    .prog_stats
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name, "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt}))
                    .collect()
            ),
            if i + 1 < tracers.len() { "," } else { "" }
        );
    }
    let _ = writeln!(
        json,
        "  ],\n  \"ratio_syscope_to_floor\": {:.3},\n  \"ratio_syscope_to_reference\": {:.3},\n  \"ratio_syscope_to_bpftrace\": {:.3},\n  \"ratio_clock_floor_to_bpftrace\": {:.3},\n  \"every_cpu\": {},\n  \"tcp\": {tcp_json},\n  \"servers\": {srv_json}\n}}",
        sys / floor,
        sys / refd,
        sys / bpft,
        clock / bpft,
        serde_json::json!({
            "cpus": cpus,
            "ns_per_call": {"none": cpus_ns[0], "syscope": cpus_ns[1], "reference": cpus_ns[2]},
        })
    );
    std::fs::write(dir.join("results.json"), json)?;
    std::fs::write(dir.join("results.md"), &table)?;
    eprintln!(
        "wrote {} and results.md",
        dir.join("results.json").display()
    );
    Ok(())
}

/// The TCP load under each configuration, in alternating passes; returns the
/// markdown table and a JSON object.
fn tcp_section(agent: &Path, workload: &Path, quick: bool) -> Result<(String, String)> {
    let (passes, runs, keepalive_n, connect_n) = if quick {
        (1, 3, 20_000u64, 2_000u64)
    } else {
        (2, 5, 50_000u64, 5_000u64)
    };
    let tracers = [
        Tracer::None,
        Tracer::SyscopeTcp,
        Tracer::BpftraceTcp,
        Tracer::Syscope,
        Tracer::BpftraceAll,
        Tracer::SyscopeTcpSyscallRoute,
    ];
    // Per tracer: ns/request kept alive, ns/request with a new connection
    // each, agent CPU % over the window.
    let mut keep = vec![vec![]; tracers.len()];
    let mut conn = vec![vec![]; tracers.len()];
    let mut cpu = vec![vec![]; tracers.len()];
    for pass in 0..passes {
        for (ti, &t) in tracers.iter().enumerate() {
            eprintln!("tcp pass {}/{passes}: {}", pass + 1, t.label());
            let mut child = start_tracer(t, agent)?;
            let before = child.as_ref().map(|c| cpu_ticks(c.id())).transpose()?;
            let t0 = Instant::now();
            for _ in 0..runs {
                keep[ti].push(run_tcp_load(workload, "keepalive", keepalive_n)?);
                conn[ti].push(run_tcp_load(workload, "connect", connect_n)?);
            }
            let wall = t0.elapsed().as_secs_f64();
            if let (Some(c), Some(b)) = (child.as_ref(), before) {
                let ticks = cpu_ticks(c.id())? - b;
                cpu[ti].push(ticks as f64 / clk_tck() / wall * 100.0);
            }
            if let Some(c) = child.as_mut() {
                stop(c);
            }
        }
    }
    // Per-program kernel time on the kept-alive load, in a separate run
    // (the statistics cost time themselves).
    let _ = Command::new("sysctl")
        .args(["-qw", "kernel.bpf_stats_enabled=1"])
        .status();
    let mut child = start_tracer(Tracer::SyscopeTcp, agent)?;
    run_tcp_load(workload, "keepalive", keepalive_n)?;
    let stats = child
        .as_ref()
        .map(|c| prog_stats(c.id()))
        .unwrap_or_default();
    if let Some(c) = child.as_mut() {
        stop(c);
    }
    let _ = Command::new("sysctl")
        .args(["-qw", "kernel.bpf_stats_enabled=0"])
        .status();
    let mk: Vec<f64> = keep.iter().map(|v| median(v)).collect();
    let mc: Vec<f64> = conn.iter().map(|v| median(v)).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "TCP loopback request/response (64 B each way; client and server threads pinned to CPU {}; {runs} runs x {keepalive_n} kept-alive requests and x {connect_n} one-request connections per configuration and pass, {passes} passes; median and min-max of the {} runs):",
        tcp_cpu(),
        runs * passes
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| configuration | µs/request kept alive | min-max | added | µs/request new connection | min-max | added | agent CPU % of a core |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let pct = |v: f64, base: f64| (v - base) / base * 100.0;
    for (i, tr) in tracers.iter().enumerate() {
        let added = |m: &[f64]| {
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:+.0} ns ({:+.1} %)", m[i] - m[0], pct(m[i], m[0]))
            }
        };
        let c = if cpu[i].is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", median(&cpu[i]))
        };
        let _ = writeln!(
            t,
            "| {} | {:.2} | {} | {} | {:.2} | {} | {} | {} |",
            tr.label(),
            mk[i] / 1e3,
            spread(&keep[i], 1e3, 2),
            added(&mk),
            mc[i] / 1e3,
            spread(&conn[i], 1e3, 2),
            added(&mc),
            c
        );
    }
    // Run-to-run spread of the baseline: (max - min) / median.
    let rel = |v: &[f64]| {
        let (lo, hi) = min_max(v);
        (hi - lo) / median(v) * 100.0
    };
    let (base_keep_spread, base_conn_spread) = (rel(&keep[0]), rel(&conn[0]));
    let tcp_alone = pct(mk[1], mk[0]);
    let ratio = |m: &[f64], a: usize, b: usize| (m[a] - m[0]) / (m[b] - m[0]);
    let (ratio_keep, ratio_conn) = (ratio(&mk, 3, 4), ratio(&mc, 3, 4));
    let checks = [
        (
            "TCP programs alone: added % of kept-alive request latency <= 2",
            tcp_alone,
            2.0,
        ),
        (
            "all of syscope added / bpftrace syscalls+TCP added, kept alive <= 0.5",
            ratio_keep,
            0.5,
        ),
        (
            "all of syscope added / bpftrace syscalls+TCP added, new connections <= 0.5",
            ratio_conn,
            0.5,
        ),
    ];
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "TCP programs alone vs bpftrace's TCP program: {:.2}x added (kept alive), {:.2}x (new connections).",
        ratio(&mk, 1, 2),
        ratio(&mc, 1, 2)
    );
    let _ = writeln!(
        t,
        "Request boundaries via the syscall route instead of sock_send_length/sock_recv_length (what kernels before 6.3 use): {:+.0} ns per kept-alive request ({:+.0} ns added against {:+.0} ns); the default picks the socket tracepoints where the kernel has them.",
        mk[5] - mk[1],
        mk[5] - mk[0],
        mk[1] - mk[0]
    );
    let _ = writeln!(
        t,
        "Baseline spread (max-min over median, no tracing): {base_keep_spread:.1} % kept alive, {base_conn_spread:.1} % new connections{}.",
        if base_keep_spread.max(base_conn_spread) > 10.0 {
            ": unstable in this run, differences smaller than this are noise"
        } else {
            ""
        }
    );
    let progs: Vec<String> = stats
        .iter()
        .filter(|p| p.run_cnt > 0)
        .map(|p| {
            format!(
                "{} {:.0} ns x {}",
                p.name,
                p.run_time_ns as f64 / p.run_cnt as f64,
                p.run_cnt
            )
        })
        .collect();
    let _ = writeln!(
        t,
        "TCP programs with kernel.bpf_stats_enabled on {keepalive_n} kept-alive requests (average run time, stats overhead included): {}.",
        progs.join(", ")
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "| target | measured | limit | result |");
    let _ = writeln!(t, "|---|---:|---:|---|");
    for (name, v, lim) in checks {
        let _ = writeln!(
            t,
            "| {name} | {v:.2} | {lim} | {} |",
            if v <= lim { "met" } else { "MISSED" }
        );
    }
    let mut json = String::from("{\"configurations\": [");
    for (i, tr) in tracers.iter().enumerate() {
        let _ = write!(
            json,
            "{}{{\"name\": \"{}\", \"ns_per_request_keepalive\": {:.0}, \"keepalive_runs\": {:?}, \"ns_per_request_connect\": {:.0}, \"connect_runs\": {:?}, \"agent_cpu_pct\": {:?}}}",
            if i > 0 { ", " } else { "" },
            tr.label(),
            mk[i],
            keep[i].iter().map(|v| v.round()).collect::<Vec<_>>(),
            mc[i],
            conn[i].iter().map(|v| v.round()).collect::<Vec<_>>(),
            cpu[i].iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
    }
    let _ = write!(
        json,
        "], \"baseline_spread_pct_keepalive\": {base_keep_spread:.2}, \"baseline_spread_pct_connect\": {base_conn_spread:.2}, \"tcp_alone_added_pct\": {tcp_alone:.3}, \"ratio_syscope_to_bpftrace_keepalive\": {ratio_keep:.3}, \"ratio_syscope_to_bpftrace_connect\": {ratio_conn:.3}}}"
    );
    Ok((t, json))
}

/// The CPU the TCP load's client and server threads share (the last one).
fn tcp_cpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        - 1
}

fn run_tcp_load(workload: &Path, mode: &str, n: u64) -> Result<f64> {
    let cpu = tcp_cpu().to_string();
    let out = Command::new(workload)
        .args(["tcp-load", mode, &n.to_string(), &cpu, &cpu])
        .output()
        .context("running the TCP load")?;
    if !out.status.success() {
        bail!("tcp load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ns_per_request="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no ns_per_request in workload output: {text}"))
}

fn start_tracer(t: Tracer, agent: &Path) -> Result<Option<Child>> {
    let (mut cmd, ready) = match t {
        Tracer::None => return Ok(None),
        Tracer::Floor
        | Tracer::Syscope
        | Tracer::SyscopeTcp
        | Tracer::SyscopeSyscallRoute
        | Tracer::SyscopeTcpSyscallRoute
        | Tracer::SyscopeSlos
        | Tracer::SyscopeDefault
        | Tracer::Reference
        | Tracer::FloorSock
        | Tracer::FloorClock
        | Tracer::SyscopeOnDemandOther
        | Tracer::SyscopeLru => {
            let mut c = Command::new(agent);
            // Table mode, so no exporter runs; a short interval so the
            // agent's per-interval work is inside the measured window.
            c.args(["--interval", "1s", "--log", "info"]);
            let yardstick = match t {
                Tracer::Floor => Some("floor"),
                Tracer::FloorClock => Some("floor-clock"),
                Tracer::FloorSock => Some("floor-sock"),
                Tracer::Reference => Some("reference"),
                _ => None,
            };
            if let Some(y) = yardstick {
                c.args(["--bench-programs", y]);
            }
            if t == Tracer::SyscopeLru {
                c.arg("--lru-threads");
            }
            if t == Tracer::SyscopeOnDemandOther {
                // A name no process has: the programs attach for it.
                c.args([
                    "--syscall-workloads",
                    "process.executable.name=bench-elsewhere",
                ]);
            }
            // Everything on, explicitly: the default may attach less.
            if matches!(
                t,
                Tracer::Syscope
                    | Tracer::SyscopeSyscallRoute
                    | Tracer::SyscopeSlos
                    | Tracer::SyscopeLru
            ) {
                c.args(["--probes", "syscalls,tcp"]);
            }
            if matches!(t, Tracer::SyscopeTcp | Tracer::SyscopeTcpSyscallRoute) {
                c.args(["--probes", "tcp"]);
            }
            if matches!(
                t,
                Tracer::SyscopeSyscallRoute | Tracer::SyscopeTcpSyscallRoute
            ) {
                c.args(["--tcp-io-hook", "syscalls"]);
            }
            if t == Tracer::SyscopeSlos {
                let path = std::env::temp_dir().join("syscope-bench-slos.toml");
                let mut text = String::new();
                // 1 and 2 µs: thresholds whose bucket getppid's durations
                // can land in, so the comparison itself runs too.
                for (i, th) in ["1us", "2us", "20ms", "100ms"].iter().enumerate() {
                    text += &format!(
                        "[[slo]]\nname = \"s{i}\"\nsli = \"latency\"\nmetric = \"syscall.duration\"\n\
                         threshold = \"{th}\"\nobjective = 0.99\nwindow = \"1d\"\n"
                    );
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                c.arg("--slo-file").arg(path);
            }
            c.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
            c.env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
            (c, "probes attached")
        }
        Tracer::Bpftrace | Tracer::BpftraceTcp | Tracer::BpftraceAll => {
            let mut c = Command::new("bpftrace");
            let prog = match t {
                Tracer::Bpftrace => BPFTRACE_PROGRAM.to_string(),
                Tracer::BpftraceTcp => BPFTRACE_TCP_PROGRAM.to_string(),
                _ => format!("{BPFTRACE_PROGRAM} {BPFTRACE_TCP_PROGRAM}"),
            };
            c.args(["-e", &prog]);
            (c, "Attaching")
        }
    };
    // syscope logs to stderr, bpftrace announces itself on stdout: watch that
    // stream for the "attached" line, then keep draining it.
    let watch_stdout = matches!(
        t,
        Tracer::Bpftrace | Tracer::BpftraceTcp | Tracer::BpftraceAll
    );
    let (out, err) = if watch_stdout {
        (Stdio::piped(), Stdio::null())
    } else {
        (Stdio::null(), Stdio::piped())
    };
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {:?}", t))?;
    let stream: Box<dyn std::io::Read + Send> = if watch_stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if !sent && line.contains(&ready) {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("{:?} did not report attaching within 60 s", t);
    }
    thread::sleep(Duration::from_millis(500));
    Ok(Some(child))
}

fn stop(c: &mut Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn run_loop(workload: &Path, iters: u64) -> Result<f64> {
    // Pinned to the last CPU so runs compare like with like.
    let cpu = (std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        - 1)
    .to_string();
    let out = Command::new("taskset")
        .args(["-c", &cpu])
        .arg(workload)
        .args(["getppid", &iters.to_string()])
        .output()
        .context("running the getppid loop (taskset from util-linux)")?;
    ns_per_call(out)
}

/// The getppid loop in one thread per CPU at once (each pinned): the
/// slowest thread's ns per call.
fn run_loop_cpus(workload: &Path, iters: u64) -> Result<f64> {
    let out = Command::new(workload)
        .args(["getppid-cpus", &iters.to_string()])
        .output()
        .context("running the getppid loop on every CPU")?;
    ns_per_call(out)
}

fn ns_per_call(out: std::process::Output) -> Result<f64> {
    if !out.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ns_per_call="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no ns_per_call in workload output: {text}"))
}

/// Statistics of every BPF program the process holds (fdinfo), named by
/// bpftool (`prog id N` where it cannot), sorted by name.
fn prog_stats(pid: u32) -> Vec<ProgStat> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return vec![];
    };
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let mut v: Vec<ProgStat> = dir
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|t| t.contains("prog_type:"))
        .filter_map(|t| {
            let id = field(&t, "prog_id:")?;
            Some(ProgStat {
                name: prog_name(id).unwrap_or_else(|| format!("prog id {id}")),
                run_time_ns: field(&t, "run_time_ns:")?,
                run_cnt: field(&t, "run_cnt:")?,
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A program's name (the kernel keeps its first 15 bytes) from bpftool.
fn prog_name(id: u64) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "-j"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.get("name")?.as_str()?.to_owned())
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// "min-max" of `v` divided by `div`, with `prec` decimals.
fn spread(v: &[f64], div: f64, prec: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (lo, hi) = min_max(v);
    format!("{:.prec$}-{:.prec$}", lo / div, hi / div)
}

/// Cost of one monotonic clock read, the floor of any latency measurement.
fn clock_read_ns() -> f64 {
    let n = 10_000_000u32;
    let t0 = Instant::now();
    let mut last = t0;
    for _ in 0..n {
        last = std::hint::black_box(Instant::now());
    }
    (last - t0).as_nanos() as f64 / f64::from(n)
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    }
}

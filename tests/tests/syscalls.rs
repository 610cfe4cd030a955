//! Syscall SLIs end to end on the real kernel: the real `syscope` binary loads
//! its programs, real workload processes make syscalls with a known truth, and
//! a real third-party OTLP receiver (rotel) reports what it got.
//!
//! Needs root (CAP_BPF, CAP_PERFMON): without it each test says it skipped.
//! Workloads get unique process names, so other activity on the host cannot
//! disturb the counts checked here.

mod common;

use std::time::Duration;

use common::{kernel_at_least, require_root, Agent};
use syscope_tests::{
    latest, run_named, select, slo::slo_file, unique_name, MetricPoint, Receiver, Temporality,
};

const WAIT: Duration = Duration::from_secs(30);
fn errors_of(points: &[MetricPoint], exe: &str, syscall: &str, errno: &str) -> Vec<f64> {
    select(
        points,
        "syscall.errors",
        &[
            ("process.executable.name", exe),
            ("syscall.name", syscall),
            ("error.type", errno),
        ],
    )
    .filter_map(|p| p.number())
    .collect()
}

/// N failing openat calls give exactly N ENOENT errors, over gRPC (cumulative).
#[test]
fn failing_calls_counted_exactly_grpc() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let agent = Agent::exporting_to(&rx, &[]);
    // Thread state in task storage wherever the kernel has it for tracing
    // programs (5.13+); the LRU hash map before.
    let store = if kernel_at_least(5, 13) {
        "task_storage"
    } else {
        "lru_hash"
    };
    assert!(
        agent
            .stderr()
            .contains(&format!("thread_state=\"{store}\"")),
        "{}",
        agent.stderr()
    );
    let name = unique_name("failgrpc");
    run_named(&name, &["fail-open", "37"]);
    let pts = rx.wait_for(WAIT, |p| {
        errors_of(p, &name, "openat", "ENOENT").last() == Some(&37.0)
    });
    // Cumulative: later points repeat the same total, never more.
    let all = errors_of(&pts, &name, "openat", "ENOENT");
    assert!(all.iter().all(|&v| v <= 37.0), "{all:?}");
    let by_name = [("process.executable.name", name.as_str())];
    let sum = select(&pts, "syscall.errors", &by_name).next().unwrap();
    assert!(matches!(
        sum.value,
        syscope_tests::PointValue::Sum {
            monotonic: true,
            temporality: Temporality::Cumulative,
            ..
        }
    ));
    assert_eq!(sum.unit, "{error}");
    // The latency histogram saw every one of them (plus the loader's opens).
    let h = select(
        &pts,
        "syscall.duration",
        &[
            ("process.executable.name", &name),
            ("syscall.name", "openat"),
        ],
    )
    .last()
    .and_then(|p| p.exp_histogram().cloned())
    .expect("openat latency histogram");
    assert!(h.count >= 37, "count {}", h.count);
    let p = select(&pts, "syscall.duration", &[]).next().unwrap();
    assert_eq!(p.unit, "s");
    assert_eq!(
        p.resource.get("service.name").map(String::as_str),
        Some("syscope")
    );
    assert!(p.resource.contains_key("host.name"));
    assert_eq!(p.resource.get("os.type").map(String::as_str), Some("linux"));
}

/// The fallback hook (raw_syscalls tracepoints) counts exactly the same.
#[test]
fn failing_calls_counted_exactly_tracepoint_fallback() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let agent = Agent::exporting_to(&rx, &["--hook", "tracepoint"]);
    assert!(
        agent.stderr().contains("hook=\"tracepoint\"")
            && agent.stderr().contains("thread_state=\"lru_hash\""),
        "{}",
        agent.stderr()
    );
    let name = unique_name("failtp");
    run_named(&name, &["fail-open", "29"]);
    rx.wait_for(WAIT, |p| {
        errors_of(p, &name, "openat", "ENOENT").last() == Some(&29.0)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(errors_of(&rx.points(), &name, "openat", "ENOENT")
        .iter()
        .all(|&v| v == 29.0));
}

/// The most SLO latency thresholds (`hist::SPLITS`, each with its split
/// counter in the kernel) and TCP requests through the syscall programs:
/// the longest exit program the verifier walks. Every program loads on its
/// best hook and failing calls are still counted exactly. Regression: a
/// change to the TCP request path once took the exit past the verifier's
/// limit when thresholds were set, and the agent did not start.
#[test]
fn failing_calls_counted_exactly_with_the_most_slo_thresholds() {
    if !require_root() {
        return;
    }
    let name = unique_name("failslo");
    let slos: String = ["1us", "2us", "20ms", "100ms"]
        .iter()
        .enumerate()
        .map(|(i, th)| {
            format!(
                "[[slo]]\nname = \"t{i}\"\nsli = \"latency\"\nmetric = \"syscall.duration\"\n\
                 threshold = \"{th}\"\nobjective = 0.99\nwindow = \"1d\"\n\
                 [slo.match]\n\"process.executable.name\" = \"{name}\"\n"
            )
        })
        .collect();
    let cfg = slo_file(&name, &slos);
    let rx = Receiver::start();
    let agent = Agent::exporting_to(
        &rx,
        &[
            "--probes",
            "syscalls,tcp",
            "--tcp-io-hook",
            "syscalls",
            "--slo-file",
            cfg.to_str().unwrap(),
        ],
    );
    let log = agent.stderr();
    assert!(
        log.contains("syscall programs attached hook=\"tp_btf\"")
            && log.contains("TCP programs attached")
            && !log.contains("falling back"),
        "{log}"
    );
    run_named(&name, &["fail-open", "23"]);
    rx.wait_for(WAIT, |p| {
        errors_of(p, &name, "openat", "ENOENT").last() == Some(&23.0)
    });
    let _ = std::fs::remove_file(&cfg);
}

/// The same truth over HTTP/protobuf with gzip and delta temporality: the
/// deltas add up to exactly N.
#[test]
fn failing_calls_counted_exactly_http_gzip_delta() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::start(
        &["--interval", "1s"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.http_endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
            ("OTEL_SERVICE_NAME", "syscope-it"),
        ],
    );
    let name = unique_name("failhttp");
    run_named(&name, &["fail-open", "41"]);
    let total = |p: &[MetricPoint]| errors_of(p, &name, "openat", "ENOENT").iter().sum::<f64>();
    let pts = rx.wait_for(WAIT, |p| total(p) >= 41.0);
    // Two more intervals: nothing may be counted twice.
    std::thread::sleep(Duration::from_millis(2500));
    let pts2 = rx.points();
    assert_eq!(total(&pts2), 41.0);
    let by_name = [("process.executable.name", name.as_str())];
    let p = select(&pts, "syscall.errors", &by_name).next().unwrap();
    assert!(matches!(
        p.value,
        syscope_tests::PointValue::Sum {
            temporality: Temporality::Delta,
            ..
        }
    ));
    assert_eq!(
        p.resource.get("service.name").map(String::as_str),
        Some("syscope-it")
    );
}

/// Sleeps of a known duration show that duration within the bucket error.
#[test]
fn sleep_latency_within_bucket_error() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    let name = unique_name("sleep");
    let out = run_named(&name, &["sleep", "25", "20"]);
    common::truth::assert_sleeps_measured(&rx, &name, &out, 25);
}

/// Past the series limit, new attribute sets fold into one series marked
/// otel.metric.overflow=true, and the agent reports how many it folded.
#[test]
fn cardinality_limit_folds_into_overflow_series() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &["--max-series", "4"]);
    let name = unique_name("distinct");
    run_named(&name, &["distinct", "16"]);
    let overflow = [("otel.metric.overflow", "true")];
    let pts = rx.wait_for(WAIT, |p| {
        select(p, "syscall.errors", &overflow).next().is_some()
            && select(
                p,
                "syscope.series.overflow",
                &[("metric", "syscall.errors")],
            )
            .any(|p| p.number().unwrap_or(0.0) > 0.0)
    });
    // Never more than the limit of series per metric in one export.
    let last_time = select(&pts, "syscall.errors", &[])
        .map(|p| p.time_unix_nano)
        .max()
        .unwrap();
    let n = select(&pts, "syscall.errors", &[])
        .filter(|p| p.time_unix_nano == last_time)
        .count();
    assert!(n <= 4, "{n} series of syscall.errors in one export");
    assert!(select(&pts, "syscall.duration", &overflow).next().is_some());
}

/// A kernel map too small for the workloads: the updates that found it full
/// are counted in the agent's own metrics and logged, folded into the
/// overflow series (the series limit is far away: the fold is the
/// kernel's), and the agent keeps running.
#[test]
fn full_kernel_map_is_counted_not_silent() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let dir = std::env::temp_dir().join(format!("syscope-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("small.toml");
    std::fs::write(
        &cfg,
        "[limits.kernel_maps]\nsyscall_latency = 4\nsyscall_errors = 4\n",
    )
    .unwrap();
    let agent = Agent::exporting_to(&rx, &["--config", cfg.to_str().unwrap()]);
    let name = unique_name("full");
    run_named(&name, &["distinct", "16"]);
    let full = |map: &'static str| {
        move |p: &[MetricPoint]| {
            select(p, "syscope.kernel.map.full", &[("map", map)])
                .any(|p| p.number().unwrap_or(0.0) > 0.0)
        }
    };
    let overflow = [("otel.metric.overflow", "true")];
    let pts = rx.wait_for(WAIT, |p| {
        full("syscall_latency")(p)
            && full("syscall_errors")(p)
            && select(p, "syscall.errors", &overflow).next().is_some()
            && select(p, "syscall.duration", &overflow).next().is_some()
    });
    // The configured limit is reported next to the drops.
    let cap = select(
        &pts,
        "syscope.kernel.map.capacity",
        &[("map", "syscall_latency")],
    )
    .last()
    .and_then(|p| p.number());
    assert_eq!(cap, Some(4.0));
    // One name for the map everywhere: the label in the metric, the log
    // and the config key the log tells the user to raise.
    let err = agent.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("kernel map full") && l.contains("syscall_latency"))
        .unwrap_or_else(|| panic!("no map-full warning for syscall_latency:\n{err}"));
    assert!(
        line.contains("map=\"syscall_latency\"")
            && line.contains("limits.kernel_maps.syscall_latency"),
        "{line}"
    );
    assert!(agent.is_running());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A collector that comes up late still receives the intervals buffered while
/// it was down: with delta temporality they add up to exactly N.
#[test]
fn late_collector_receives_buffered_intervals() {
    if !require_root() {
        return;
    }
    let [grpc, http] = syscope_tests::free_ports::<2>();
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let agent = Agent::start(
        &[
            "--endpoint",
            &endpoint,
            "--interval",
            "1s",
            "--temporality",
            "delta",
            "--buffer-intervals",
            "60",
        ],
        &[],
    );
    let name = unique_name("late");
    run_named(&name, &["fail-open", "23"]);
    // Several intervals with nobody listening: the failure is a warning.
    std::thread::sleep(Duration::from_secs(4));
    let down = agent.stderr();
    assert!(
        down.lines()
            .any(|l| l.contains(" WARN ") && l.contains("OTLP export failed")),
        "no warning about the failed exports while the collector was down:\n{down}"
    );
    assert!(
        agent.is_running(),
        "the agent must survive a missing collector"
    );
    let rx = Receiver::start_on(grpc, http);
    let total = |p: &[MetricPoint]| errors_of(p, &name, "openat", "ENOENT").iter().sum::<f64>();
    rx.wait_for(WAIT, |p| total(p) >= 23.0);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(total(&rx.points()), 23.0);
    // ...and the recovery is logged once the buffer is drained, nothing lost.
    let log = agent.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("OTLP export recovered") && l.contains("dropped_intervals=0")),
        "no recovery summary:\n{log}"
    );
}

/// Delta temporality, a buffer of 3 intervals, the collector down for about 6
/// intervals: every interval is accounted for. The drops reach the collector
/// as `syscope.export.dropped{reason=buffer_full}`, adding up to what the log
/// says; the delivered intervals follow one another without a gap; and
/// delivered + dropped is every interval the agent collected.
#[test]
fn late_collector_every_interval_delivered_or_counted_dropped() {
    if !require_root() {
        return;
    }
    let [grpc, http] = syscope_tests::free_ports::<2>();
    let mut agent = Agent::start(
        &[
            "--endpoint",
            &format!("http://127.0.0.1:{grpc}"),
            "--interval",
            "1s",
            "--temporality",
            "delta",
            "--buffer-intervals",
            "3",
        ],
        &[],
    );
    let attached = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let rx = Receiver::start_on(grpc, http);
    let sum = |p: &[MetricPoint], name: &str, attrs: &[(&str, &str)]| {
        select(p, name, attrs)
            .filter_map(MetricPoint::number)
            .sum::<f64>()
    };
    let buffer_full = [("reason", "buffer_full")];
    rx.wait_for(WAIT, |p| {
        sum(p, "syscope.export.dropped", &buffer_full) > 0.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let status = agent.terminate();
    let elapsed = attached.elapsed().as_secs_f64();
    assert!(status.success(), "exit status {status}");
    let log = agent.stderr();
    assert!(log.contains("everything delivered"), "{log}");

    // One `syscope.series.limit` point per delivered request (a gauge, in
    // the self scope of every request).
    let requests = |p: &[MetricPoint]| {
        let mut times: Vec<u64> = select(p, "syscope.series.limit", &[])
            .map(|p| p.time_unix_nano)
            .collect();
        times.dedup();
        times.len()
    };
    // Every request but the last reports the delivery of the one before.
    let pts = rx.wait_for(WAIT, |p| {
        requests(p) as f64 == sum(p, "syscope.export.successes", &[]) + 1.0
    });
    let delivered = requests(&pts);
    assert!(select(&pts, "syscope.series.limit", &[]).all(|p| p.scope == "syscope.self"));

    let dropped = sum(&pts, "syscope.export.dropped", &buffer_full);
    let logged = log
        .lines()
        .filter(|l| l.contains("OTLP export buffer full") && l.contains("reason=buffer_full"))
        .count();
    assert_eq!(dropped, logged as f64, "{log}");
    assert!(
        log.contains(&format!("dropped_total={logged}")),
        "the last drop's total: {log}"
    );
    assert!(dropped >= 2.0, "6 s down with room for 3: {dropped}");
    assert_eq!(
        sum(&pts, "syscope.export.dropped", &[("reason", "rejected")]),
        0.0
    );

    // The delivered intervals' windows (from the test's own syscalls, which
    // happen every interval) follow one another: nothing lost between them.
    let mut windows: Vec<(u64, u64)> = select(&pts, "syscall.duration", &[])
        .map(|p| (p.start_unix_nano, p.time_unix_nano))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    for w in windows.windows(2) {
        assert_eq!(
            w[0].1, w[1].0,
            "a gap between delivered intervals: {windows:?}"
        );
    }
    assert!(
        windows.len() + 1 >= delivered && windows.len() <= delivered,
        "{} windows, {delivered} requests",
        windows.len()
    );
    // One interval per second from attach to SIGTERM, plus the last one.
    let intervals = delivered as f64 + dropped;
    assert!(
        (intervals - (elapsed + 1.0)).abs() <= 1.5,
        "{delivered} delivered + {dropped} dropped vs {elapsed:.1} s"
    );
}

/// SIGTERM: detach, collect and export one last time before exiting.
#[test]
fn sigterm_exports_the_last_interval() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let mut agent = Agent::start(
        &["--endpoint", &rx.grpc_endpoint(), "--interval", "1h"],
        &[],
    );
    let name = unique_name("term");
    run_named(&name, &["fail-open", "11"]);
    let status = agent.terminate();
    assert!(status.success(), "exit status {status}");
    let pts = rx.wait_for(WAIT, |p| {
        errors_of(p, &name, "openat", "ENOENT").last() == Some(&11.0)
    });
    assert_eq!(errors_of(&pts, &name, "openat", "ENOENT"), vec![11.0]);
}

/// With no endpoint, the live table shows the workload's syscalls.
#[test]
fn live_table_without_endpoint() {
    if !require_root() {
        return;
    }
    let agent = Agent::start(&["--interval", "1s"], &[]);
    let name = unique_name("table");
    run_named(&name, &["fail-open", "5000"]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = agent.stdout();
        // All 5000 openat calls failed (the loader's 3 opens succeed): the
        // row's error ratio is above 99 %.
        let row_ok = |l: &&str| {
            l.starts_with(&name)
                && l.contains("openat")
                && l.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|e| e > 99.0)
        };
        if out.lines().any(|l| row_ok(&l)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no table row for {name}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent's own counter `name` in the most recent export, and when that
/// export was made.
fn self_counter(points: &[MetricPoint], name: &str) -> Option<(f64, u64)> {
    latest(points, name, &[]).and_then(|p| Some((p.number()?, p.time_unix_nano)))
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The value of self-counter `name` in an export made at least two intervals
/// (1 s each) after `since` (unix ns): one that read the kernel's counters
/// after whatever ran before `since`.
fn self_counter_after(rx: &Receiver, name: &str, since: u64) -> f64 {
    let later =
        |p: &[MetricPoint]| self_counter(p, name).filter(|&(_, t)| t > since + 2_000_000_000);
    let pts = rx.wait_for(WAIT, |p| later(p).is_some());
    later(&pts).unwrap().0
}

const UNMATCHED: &str = "syscope.kernel.exits_unmatched";
const EVICTED: &str = "syscope.kernel.threads_evicted";

/// A new thread's first event is the exit of the clone3 that created it,
/// which it never entered: that is not an unmatched exit. 2,000 short-lived
/// threads moved `syscope.kernel.exits_unmatched` by about 2,000 before;
/// now by (far) less than 50, whatever else the host runs meanwhile.
#[test]
fn new_threads_are_not_unmatched_exits() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &["--temporality", "cumulative"]);
    let before = self_counter_after(&rx, UNMATCHED, unix_nanos());
    let name = unique_name("threads");
    let out = run_named(&name, &["threads", "2000"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok threads n=2000"));
    let after = self_counter_after(&rx, UNMATCHED, unix_nanos());
    assert!(
        after - before < 50.0,
        "2000 new threads: {UNMATCHED} went from {before} to {after}"
    );
    // The thread map (16384 by default) had room for all of them.
    let evicted = self_counter(&rx.points(), EVICTED).map(|v| v.0);
    assert_eq!(evicted, Some(0.0), "{EVICTED}");
}

/// An agent exporting cumulative points to `rx` with `limits.kernel_maps.threads`
/// = 8 (and `extra` arguments); its config's directory, to remove after.
fn tiny_thread_map_agent(rx: &Receiver, tag: &str, extra: &[&str]) -> (Agent, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("syscope-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny-threads.toml");
    std::fs::write(&cfg, "[limits.kernel_maps]\nthreads = 8\n").unwrap();
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--temporality",
        "cumulative",
    ];
    args.extend_from_slice(extra);
    (Agent::exporting_to(rx, &args), dir)
}

/// The `threads` map's capacity as the agent last reported it.
fn threads_capacity(rx: &Receiver) -> Option<f64> {
    latest(
        &rx.points(),
        "syscope.kernel.map.capacity",
        &[("map", "threads")],
    )
    .and_then(|p| p.number())
}

/// A thread map far too small for the threads in a syscall: the LRU map
/// (forced here: kernels before 5.13 use it) evicts the entries of sleeping
/// threads, and their exits are counted as evictions
/// (`syscope.kernel.threads_evicted`), not as syscalls that were in flight
/// at attach.
#[test]
fn evicted_thread_entries_are_counted() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let (_agent, dir) = tiny_thread_map_agent(&rx, "evict", &["--lru-threads"]);
    let before = self_counter_after(&rx, EVICTED, unix_nanos());
    let cap = threads_capacity(&rx);
    assert_eq!(cap, Some(8.0));
    // 64 threads asleep at once in a map of 8: at least 56 of them find their
    // entry gone when they wake (more with the rest of the host's syscalls).
    let name = unique_name("evict");
    run_named(&name, &["threads-blocked", "64", "300"]);
    let after = self_counter_after(&rx, EVICTED, unix_nanos());
    assert!(
        after - before >= 32.0,
        "64 threads blocked with a thread map of 8: {EVICTED} went from {before} to {after}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Thread state in task storage (5.13+) is never evicted: the same 64
/// sleeping threads, with the same 8-entry thread map setting, lose no
/// syscall, and the LRU map is not even created at size.
#[test]
fn task_storage_threads_are_never_evicted() {
    if !require_root() {
        return;
    }
    if !kernel_at_least(5, 13) {
        common::skip("task storage from tracing programs needs Linux 5.13+");
        return;
    }
    let rx = Receiver::start();
    let (agent, dir) = tiny_thread_map_agent(&rx, "ts", &[]);
    assert!(
        agent.stderr().contains("thread_state=\"task_storage\""),
        "{}",
        agent.stderr()
    );
    let before = self_counter_after(&rx, EVICTED, unix_nanos());
    let cap = threads_capacity(&rx);
    assert_eq!(cap, Some(1.0), "the LRU thread map is not used");
    let name = unique_name("tsevict");
    run_named(&name, &["threads-blocked", "64", "300"]);
    let after = self_counter_after(&rx, EVICTED, unix_nanos());
    assert_eq!(after, before, "{EVICTED} moved with task storage");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Non-root with CAP_BPF + CAP_PERFMON and the tracepoint hook forced: when
/// tracefs is mounted but not readable (mode 0700, as here), the error says
/// so instead of claiming it is not mounted.
#[test]
fn tracepoint_hook_without_tracefs_access_names_the_cause() {
    if !require_root() {
        return;
    }
    let mode = std::fs::metadata("/sys/kernel/tracing")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("tracefs mounted at /sys/kernel/tracing");
    if mode & 0o005 != 0 {
        // Readable by all here: the agent would attach, there is no error to name.
        eprintln!("tracefs mode {mode:o} is readable by others: nothing to check on this host");
        return;
    }
    let bin = common::agent_bin();
    // Bounded: an agent that does not fail would otherwise run for ever.
    let out = std::process::Command::new("timeout")
        .args(["60", "setpriv"])
        .args(["--reuid=61998", "--regid=61998", "--clear-groups"])
        .args([
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=-all,+bpf,+perfmon",
        ])
        .arg(&bin)
        .args(["--probes", "syscalls,tcp", "--hook", "tracepoint"])
        .args(["--health-address", "off"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tracefs is mounted at /sys/kernel/tracing but this process may not read it"),
        "{err}"
    );
    assert!(!err.contains("not mounted at"), "{err}");
}

/// With `kernel.bpf_stats_enabled=1` the agent reports what each of its
/// programs cost: N getppid calls of a workload run the syscall programs at
/// least N times each (other processes add theirs), and their run time is
/// counted. The sysctl is restored after.
#[test]
fn program_cost_comes_from_the_kernels_statistics() {
    if !require_root() {
        return;
    }
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(STATS, &self.0);
        }
    }
    let _restore = Restore(std::fs::read_to_string(STATS).unwrap());
    std::fs::write(STATS, "1").unwrap();
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    let runs = |p: &[MetricPoint], prog: &str| {
        latest(p, "syscope.kernel.program.runs", &[("program", prog)]).and_then(|p| p.number())
    };
    let before = rx.wait_for(WAIT, |p| runs(p, "sys_exit_btf").is_some());
    let start = runs(&before, "sys_exit_btf").unwrap();
    let name = unique_name("progcost");
    run_named(&name, &["getppid", "200000"]);
    let pts = rx.wait_for(WAIT, |p| {
        runs(p, "sys_exit_btf").is_some_and(|r| r >= start + 200_000.0)
    });
    for prog in ["sys_enter_btf", "sys_exit_btf"] {
        let t = latest(
            &pts,
            "syscope.kernel.program.run_time",
            &[("program", prog)],
        )
        .and_then(|p| p.number())
        .unwrap_or(0.0);
        assert!(t > 0.0, "{prog}: no run time: {t}");
    }
    assert_eq!(
        latest(&pts, "syscope.kernel.program.stats_enabled", &[]).and_then(|p| p.number()),
        Some(1.0)
    );
    // Every process's syscalls (the harness's --probes syscalls,tcp).
    assert_eq!(
        latest(&pts, "syscope.syscalls.attached", &[]).and_then(|p| p.number()),
        Some(1.0)
    );
}

//! Syscall SLIs on demand (the default probe sets, `--probes tcp`) on the
//! real kernel: nothing runs on every syscall until a workload is selected;
//! a selected workload is measured exactly and nobody else is; a burning
//! SLO brings its workloads' syscalls in, and its diagnosis again with them.
//!
//! The kernel's own word is checked, not only the agent's: which programs
//! the agent holds a link to (its fdinfo, names from bpftool).
//!
//! Needs root (CAP_BPF, CAP_PERFMON): without it each test says it skipped.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::{require_root, Agent};
use syscope_tests::{
    latest, run_named, select,
    slo::{burn_events, slo_of},
    spawn_named, unique_name, LogRecord, MetricPoint, Receiver,
};

const WAIT: Duration = Duration::from_secs(30);
/// The default probe sets, spelled out: the harness turns the syscall set
/// on for every process unless told otherwise.
const DEFAULT_PROBES: (&str, &str) = ("SYSCOPE_PROBES", "tcp");

/// Names of the BPF programs process `pid` holds an attached link to.
fn linked_programs(pid: u32) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        if !text.contains("link_type:") {
            continue;
        }
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .map(|v| v.trim().to_owned())
        else {
            continue;
        };
        let o = Command::new("bpftool")
            .args(["prog", "show", "id", &id, "-j"])
            .output()
            .expect("bpftool (cargo xtask setup installs it)");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(n) = v.get("name").and_then(|n| n.as_str()) {
            out.insert(n.to_owned());
        }
    }
    out
}

/// Whether the agent's syscall programs are attached, as the kernel says.
fn syscall_hooks_attached(agent: &Agent) -> bool {
    let progs = linked_programs(agent.pid());
    let enter = progs.contains("sys_enter_btf") || progs.contains("sys_enter_tp");
    let exit = progs.contains("sys_exit_btf") || progs.contains("sys_exit_tp");
    assert_eq!(enter, exit, "enter and exit attach together: {progs:?}");
    enter
}

/// Whether this kernel has the socket length tracepoints (6.3+). Without
/// them TCP request latency comes from the syscall programs, which then stay
/// attached whatever is selected (and measure no syscall SLI of their own).
fn sock_tracepoints() -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let has = |s: &str| btf.windows(s.len()).any(|w| w == s.as_bytes());
    has("btf_trace_sock_send_length\0") && has("btf_trace_sock_recv_length\0")
}

/// Whether the syscall programs should be attached when nothing is
/// selected: only where the TCP route needs them.
fn attached_when_idle() -> bool {
    !sock_tracepoints()
}

fn self_gauge(points: &[MetricPoint], name: &str) -> Option<f64> {
    latest(points, name, &[]).and_then(MetricPoint::number)
}

fn start(rx: &Receiver, extra: &[&str]) -> Agent {
    let endpoint = rx.grpc_endpoint();
    let mut args = vec!["--endpoint", endpoint.as_str(), "--interval", "1s"];
    args.extend_from_slice(extra);
    Agent::start(&args, &[DEFAULT_PROBES])
}

fn syscall_points<'a>(pts: &'a [MetricPoint], exe: &'a str) -> Vec<&'a MetricPoint> {
    pts.iter()
        .filter(|p| {
            p.name.starts_with("syscall.") && p.attr("process.executable.name") == Some(exe)
        })
        .collect()
}

fn errors(pts: &[MetricPoint], exe: &str) -> Option<f64> {
    select(
        pts,
        "syscall.errors",
        &[
            ("process.executable.name", exe),
            ("syscall.name", "openat"),
            ("error.type", "ENOENT"),
        ],
    )
    .filter_map(MetricPoint::number)
    .last()
}

/// By default no syscall program runs: the kernel holds no link to one
/// (before 6.3 the TCP route holds them), failing calls leave no series,
/// and the TCP set still counts exactly.
#[test]
fn by_default_no_syscall_program_runs() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let agent = start(&rx, &[]);
    assert_eq!(syscall_hooks_attached(&agent), attached_when_idle());
    let name = unique_name("oddefault");
    run_named(&name, &["fail-open", "19"]);
    run_named(&name, &["tcp-refused", "7"]);
    let pts = rx.wait_for(WAIT, |p| {
        select(
            p,
            "tcp.connect.errors",
            &[
                ("process.executable.name", &name),
                ("error.type", "ECONNREFUSED"),
            ],
        )
        .filter_map(MetricPoint::number)
        .last()
            == Some(7.0)
    });
    // Two more intervals: a late syscall series would show by now.
    std::thread::sleep(Duration::from_millis(2500));
    let pts = [pts, rx.points()].concat();
    assert!(
        syscall_points(&pts, &name).is_empty(),
        "syscalls measured by default: {:?}",
        syscall_points(&pts, &name)
    );
    let idle = attached_when_idle();
    assert_eq!(
        self_gauge(&pts, "syscope.syscalls.attached"),
        Some(f64::from(u8::from(idle)))
    );
    assert_eq!(syscall_hooks_attached(&agent), idle);
}

/// `--syscall-workloads process.executable.name=A`: A's failing calls are
/// counted exactly; B, making the same calls at the same time, has no
/// series at all; the programs are attached while A is selected.
#[test]
fn a_selected_process_is_measured_exactly_and_alone() {
    if !require_root() {
        return;
    }
    let a = unique_name("odsel");
    let b = unique_name("odnot");
    let rx = Receiver::start();
    let sel = format!("process.executable.name={a}");
    let agent = start(&rx, &["--syscall-workloads", &sel]);
    assert!(syscall_hooks_attached(&agent));
    let pb = spawn_named(&b, &["fail-open", "23"]);
    run_named(&a, &["fail-open", "37"]);
    assert!(pb.wait_with_output().unwrap().status.success());
    let pts = rx.wait_for(WAIT, |p| errors(p, &a) == Some(37.0));
    std::thread::sleep(Duration::from_millis(2500));
    let pts = [pts, rx.points()].concat();
    assert_eq!(errors(&pts, &a), Some(37.0), "exactly 37 ENOENT for {a}");
    assert!(
        syscall_points(&pts, &b).is_empty(),
        "{b} was not selected but measured: {:?}",
        syscall_points(&pts, &b)
    );
    assert_eq!(
        self_gauge(&pts, "syscope.syscalls.selected.names"),
        Some(1.0)
    );
    assert_eq!(self_gauge(&pts, "syscope.syscalls.attached"), Some(1.0));
}

/// On demand the exit reads the clock only once the thread's state says
/// it is measured (after the lookup, where every-thread mode reads it
/// before): a selected process's sleeps still show their durations within
/// the bucket error, and are counted exactly.
#[test]
fn a_selected_process_sleeps_are_timed_within_bucket_error() {
    if !require_root() {
        return;
    }
    let name = unique_name("odsleep");
    let rx = Receiver::start();
    let sel = format!("process.executable.name={name}");
    let agent = start(&rx, &["--syscall-workloads", &sel]);
    assert!(syscall_hooks_attached(&agent));
    let out = run_named(&name, &["sleep", "15", "20"]);
    common::truth::assert_sleeps_measured(&rx, &name, &out, 15);
}

/// The first burn event of `slo` in `state`.
fn burn_event(rx: &Receiver, slo: &str, state: &str) -> LogRecord {
    burn_events(rx, WAIT, slo, state).remove(0)
}

/// A TCP latency SLO with no syscall measured: when it burns, the
/// programs attach for its workload only, and the burn's diagnosis is given
/// again (`slo.burn.state=detail`) naming the sleep that caused it.
#[test]
fn a_burn_brings_its_workloads_syscalls_and_a_diagnosis_with_them() {
    if !require_root() {
        return;
    }
    let name = unique_name("odburn");
    let other = unique_name("odquiet");
    let slo = slo_of(
        &name,
        &format!(
            "name = \"{name}\"\nsli = \"latency\"\nmetric = \"tcp.server.request.duration\"\n\
             threshold = \"20ms\"\nobjective = 0.99\nwindow = \"28d\""
        ),
    );
    let rx = Receiver::start();
    let agent = start(
        &rx,
        &["--slo-file", slo.to_str().unwrap(), "--slo-detail", "10m"],
    );
    // Loaded, not attached: nothing is selected before the burn.
    assert_eq!(syscall_hooks_attached(&agent), attached_when_idle());
    let fast = vec!["1000"; 200].join(",");
    run_named(&name, &["tcp-reqresp-us", "spin", &fast]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(syscall_hooks_attached(&agent), attached_when_idle());
    assert!(syscall_points(&rx.points(), &name).is_empty());
    // Slow answers for long enough that the detail sees them after the
    // burn starts.
    let slow = vec!["50000"; 200].join(",");
    let server = spawn_named(&name, &["tcp-reqresp-us", "sleep", &slow]);
    let started = burn_event(&rx, &name, "started");
    assert!(
        syscall_hooks_attached(&agent),
        "burning, but no syscall program attached"
    );
    // Someone else's syscalls are not measured meanwhile.
    run_named(&other, &["fail-open", "11"]);
    let detail = burn_event(&rx, &name, "detail");
    let diagnosis = detail
        .attributes
        .get("slo.diagnosis")
        .cloned()
        .unwrap_or_default();
    assert!(
        diagnosis.starts_with(&format!("Slice(Str(clock_nanosleep ({name}):")),
        "the detail does not lead with the sleep: {detail:?} (started: {started:?})"
    );
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success());
    let pts = rx.points();
    assert!(
        syscall_points(&pts, &other).is_empty(),
        "{other} is not the SLO's workload but was measured"
    );
    assert!(!syscall_points(&pts, &name).is_empty());
}

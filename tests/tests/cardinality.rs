//! The cardinality policy on a churning node, on the real kernel: a churn
//! of short-lived process names far beyond the kernel maps and the series
//! limit loses no event (what has no room is folded, in the kernel or in
//! the agent, into the overflow series `otel.metric.overflow=true`, and
//! counted), and a workload that arrives after the churn is shown under its
//! own name. The series per node and the bytes per export are printed.
//!
//! Needs root (CAP_BPF, cgroup writes) and a cgroup2 mount: the churn runs
//! in a cgroup of its own, the only one selected for syscall SLIs, so every
//! syscall event the agent reports is the churn's.

mod common;

use std::{collections::BTreeMap, fs, time::Duration};

use common::{
    cgroup::{cgroup2_mount, finish, run_in, Tree},
    require_root, skip, Agent,
};
use syscope_tests::{unique_name, MetricPoint, Receiver};

const WAIT: Duration = Duration::from_secs(60);
/// Children of the churn, failing calls each, and the canary's calls.
const N: u64 = 1000;
const K: u64 = 2;
const C: u64 = 30;
/// Kernel map entries and series per metric: a small node's limits, so the
/// churn overflows both many times over.
const MAP_ENTRIES: u64 = 128;
const MAX_SERIES: u64 = 40;
const PREFIX: &str = "chn";

fn self_metric(pts: &[MetricPoint], name: &str, attr: (&str, &str)) -> Vec<f64> {
    pts.iter()
        .filter(|p| p.name == name && p.has_attrs(&[attr]))
        .filter_map(MetricPoint::number)
        .collect()
}

/// Every syscall error point but the churn parent's own (its start-up
/// calls), summed: delta temporality, so each interval's change once.
fn churn_errors(pts: &[MetricPoint], parent: &str) -> f64 {
    pts.iter()
        .filter(|p| p.name == "syscall.errors")
        .filter(|p| p.attr("process.executable.name") != Some(parent))
        .filter_map(MetricPoint::number)
        .sum()
}

#[test]
fn a_churn_beyond_every_limit_loses_nothing_and_new_workloads_show() {
    if !require_root() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        skip("no cgroup2 mount on this host");
        return;
    };
    let parent = unique_name("churnp");
    let tree = Tree::new(&mount, &format!("syscope-{parent}.slice"));
    let slice = format!("{parent}.slice");
    let unit = tree.mkdir(&format!("{slice}/churn.service"));
    let config = std::env::temp_dir().join(format!("syscope-{parent}.toml"));
    fs::write(
        &config,
        format!(
            "[limits]\nmax_series_per_metric = {MAX_SERIES}\n\
             [limits.kernel_maps]\nsyscall_latency = {MAP_ENTRIES}\nsyscall_errors = {MAP_ENTRIES}\n"
        ),
    )
    .unwrap();
    let rx = Receiver::start();
    let endpoint = rx.grpc_endpoint();
    let sel = format!("systemd.slice={slice}");
    let _agent = Agent::start(
        &[
            "--endpoint",
            &endpoint,
            "--interval",
            "1s",
            "--config",
            config.to_str().unwrap(),
            "--syscall-workloads",
            &sel,
        ],
        &[
            ("SYSCOPE_PROBES", "tcp"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
    );
    rx.wait_for(WAIT, |p| {
        syscope_tests::latest(p, "syscope.syscalls.selected.cgroups", &[])
            .and_then(MetricPoint::number)
            == Some(1.0)
    });
    // The parent's own start-up calls (the loader's) are collected, under
    // its name, an interval before the churn begins.
    let args = [
        "churn",
        PREFIX,
        &N.to_string(),
        &K.to_string(),
        &C.to_string(),
        "--start-after",
        "1500",
    ];
    finish(run_in(&unit, &parent, &args), &parent);

    let want = (N * K + C) as f64;
    rx.wait_for(WAIT, |p| churn_errors(p, &parent) >= want);
    // Two more intervals: anything counted twice would show by now.
    std::thread::sleep(Duration::from_millis(2500));
    let pts = rx.points();
    let _ = fs::remove_file(&config);

    // Every series but the churn's children, for the message.
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for p in pts.iter().filter(|p| p.name == "syscall.errors") {
        let exe = p.attr("process.executable.name").unwrap_or("-");
        if exe.starts_with(PREFIX) && exe != format!("{PREFIX}canary") {
            continue;
        }
        let k = format!("{:?}", p.attributes);
        *by.entry(k).or_default() += p.number().unwrap_or(0.0);
    }
    assert_eq!(
        churn_errors(&pts, &parent),
        want,
        "every failing call of the churn and the canary, once; other series: {by:#?}"
    );
    // The canary came after the churn: shown under its own name, with the
    // errors that found room (the rest folded, counted above).
    let canary = format!("{PREFIX}canary");
    let canary_errors: f64 = pts
        .iter()
        .filter(|p| p.name == "syscall.errors")
        .filter(|p| {
            p.has_attrs(&[
                ("process.executable.name", canary.as_str()),
                ("syscall.name", "openat"),
                ("error.type", "ENOENT"),
            ])
        })
        .filter_map(MetricPoint::number)
        .sum();
    assert!(
        canary_errors >= 1.0 && canary_errors <= C as f64,
        "the workload that came after the churn is not shown: {canary_errors}"
    );
    // What did not fit was folded, visibly, and counted.
    let overflow: f64 = pts
        .iter()
        .filter(|p| p.name == "syscall.errors" && p.attr("otel.metric.overflow") == Some("true"))
        .filter_map(MetricPoint::number)
        .sum();
    assert!(overflow > 0.0, "nothing folded: the churn did not overflow");
    let kernel_full = self_metric(&pts, "syscope.kernel.map.full", ("map", "syscall_errors"));
    assert!(
        kernel_full.iter().any(|&v| v > 0.0),
        "the kernel map never filled: {kernel_full:?}"
    );
    let evicted = self_metric(&pts, "syscope.series.evicted", ("metric", "syscall.errors"));
    assert!(
        evicted.iter().any(|&v| v > 0.0),
        "no quiet series gave way: {evicted:?}"
    );
    // Bounded: the series limit and the map sizes held throughout.
    let active = self_metric(&pts, "syscope.series.active", ("metric", "syscall.errors"));
    let max_active = active.iter().copied().fold(0.0, f64::max);
    assert!(max_active <= MAX_SERIES as f64, "{max_active} series");
    let entries = self_metric(
        &pts,
        "syscope.kernel.map.entries",
        ("map", "syscall_errors"),
    );
    assert!(
        entries.iter().all(|&e| e <= MAP_ENTRIES as f64),
        "{entries:?}"
    );
    // The cost a backend sees: series per node and bytes per export.
    let bytes: Vec<f64> = pts
        .iter()
        .filter(|p| p.name == "syscope.export.request.size")
        .filter_map(MetricPoint::number)
        .collect();
    let max_bytes = bytes.iter().copied().fold(0.0, f64::max);
    assert!(max_bytes > 0.0, "no request size reported");
    let mut series: BTreeMap<&str, f64> = BTreeMap::new();
    for p in pts.iter().filter(|p| p.name == "syscope.series.active") {
        if let (Some(m), Some(v)) = (p.attr("metric"), p.number()) {
            let e = series.entry(m).or_default();
            *e = e.max(v);
        }
    }
    eprintln!(
        "churn of {N} process names ({K} errors each, {MAP_ENTRIES}-entry maps, \
         {MAX_SERIES} series per metric): {overflow} errors folded, canary {canary_errors}/{C} \
         under its own name; series per node at most {series:?} (sum {}); request at most \
         {max_bytes} bytes",
        series.values().sum::<f64>()
    );
}

//! SLOs at the edge, end to end on the real kernel: the real agent with
//! `[[slo]]` definitions, real TCP workloads whose own clocks are the truth,
//! and the real OTLP receiver (rotel). Good and bad events must be exact,
//! burn rates and budgets follow from them, and a page-level burn is
//! announced with a diagnosis.
//!
//! Needs root: without it each test says it skipped.

mod common;

use std::time::Duration;

use common::{require_root, Agent};
use syscope_tests::{
    output_durations_s, run_named, select,
    slo::{burn_events, slo_file, slo_of},
    unique_name, LogRecord, MetricPoint, Receiver,
};

const WAIT: Duration = Duration::from_secs(30);

fn last(points: &[MetricPoint], metric: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    select(points, metric, attrs)
        .filter_map(|p| p.number())
        .last()
}

/// Wait until the SLO's cumulative good and bad events reach `want`, and
/// return the points.
fn wait_events(rx: &Receiver, slo: &str, want: (u64, u64)) -> Vec<MetricPoint> {
    let n = |p: &[MetricPoint], o| {
        last(
            p,
            "syscope.slo.events",
            &[("slo.name", slo), ("slo.outcome", o)],
        )
        .unwrap_or(0.0)
    };
    rx.wait_for(WAIT, |p| {
        n(p, "good") + n(p, "bad") >= (want.0 + want.1) as f64
    });
    // Two more intervals: nothing may be counted twice.
    std::thread::sleep(Duration::from_millis(2500));
    let pts = rx.points();
    assert_eq!(
        (n(&pts, "good") as u64, n(&pts, "bad") as u64),
        want,
        "syscope.slo.events of {slo} (good, bad)"
    );
    pts
}

/// A workload's list of durations (s), in request order.
fn output_in_order(out: &std::process::Output, key: &str) -> Vec<f64> {
    syscope_tests::output_field(out, key)
        .split(',')
        .map(|n| n.parse::<f64>().unwrap() * 1e-9)
        .collect()
}

/// The `syscope.slo.burn` event of `slo` (started), as the receiver got it.
fn burn_event(rx: &Receiver, slo: &str) -> LogRecord {
    let found = burn_events(rx, WAIT, slo, "started");
    assert_eq!(found.len(), 1, "one burn event for {slo}: {found:?}");
    found[0].clone()
}

/// The issue's mix: 20 answers after 5 ms and 10 after 50 ms, threshold
/// 20 ms, objective 0.99: exactly 20 good and 10 bad, a 5m burn rate of
/// 33.3, and 1 - 33.3 of the budget left.
#[test]
fn latency_slo_counts_good_and_bad_exactly() {
    if !require_root() {
        return;
    }
    let name = unique_name("slomix");
    let cfg = slo_of(
        &name,
        r#"
name = "mix"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "20ms"
objective = 0.99
window = "28d"
"#,
    );
    let rx = Receiver::start();
    let agent = Agent::exporting_to(
        &rx,
        &["--probes", "tcp", "--slo-file", cfg.to_str().unwrap()],
    );
    let mut delays = vec!["5000"; 20];
    delays.extend(["50000"; 10]);
    let out = run_named(&name, &["tcp-reqresp-us", "spin", &delays.join(",")]);
    let truth = output_durations_s(&out, "server_ns");
    let good = truth.iter().filter(|d| **d <= 0.020).count() as u64;
    assert_eq!(
        (good, truth.len() as u64 - good),
        (20, 10),
        "the workload's own clock"
    );
    let pts = wait_events(&rx, "mix", (20, 10));
    let burn = last(
        &pts,
        "syscope.slo.burn_rate",
        &[("slo.name", "mix"), ("slo.window", "5m")],
    )
    .unwrap();
    assert!((burn - 100.0 / 3.0).abs() < 1e-9, "5m burn rate {burn}");
    let left = last(
        &pts,
        "syscope.slo.error_budget.remaining",
        &[("slo.name", "mix")],
    )
    .unwrap();
    assert!(
        (left - (1.0 - 100.0 / 3.0)).abs() < 1e-9,
        "budget left {left}"
    );
    let obj = last(&pts, "syscope.slo.objective", &[("slo.name", "mix")]).unwrap();
    assert_eq!(obj, 0.99);
    // Every window has all 30 events: the same burn rate.
    for w in ["30m", "1h", "2h", "6h", "1d", "3d"] {
        let b = last(
            &pts,
            "syscope.slo.burn_rate",
            &[("slo.name", "mix"), ("slo.window", w)],
        );
        assert!(
            b.is_some_and(|b| (b - 100.0 / 3.0).abs() < 1e-9),
            "{w}: {b:?}"
        );
    }
    // 33 times the budget over 5m and 1h: a page-level burn, said at once,
    // in the log and as an OTLP event through the exporter.
    let err = agent.stderr();
    assert!(err.contains("SLO mix is burning its error budget"), "{err}");
    let ev = burn_event(&rx, "mix");
    assert_eq!(ev.severity_text, "WARN");
    assert!(
        ev.body.starts_with("SLO mix is burning its error budget"),
        "{}",
        ev.body
    );
    let rate = ev
        .attributes
        .get("syscope.slo.burn_rate.5m")
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        rate.is_some_and(|r| (r - 100.0 / 3.0).abs() < 1e-6),
        "{ev:?}"
    );
    // Healthy traffic dilutes the 10 bad below every page factor: the
    // burn stops, and that is said at once too.
    let fast = vec!["100"; 3000].join(",");
    run_named(&name, &["tcp-reqresp-us", "spin", &fast]);
    let stopped = |l: &LogRecord| {
        l.attributes.get("slo.name").map(String::as_str) == Some("mix")
            && l.attributes.get("slo.burn.state").map(String::as_str) == Some("stopped")
    };
    let logs = rx.wait_for_logs(WAIT, |ls| ls.iter().any(stopped));
    let ev = logs.iter().find(|l| stopped(l)).unwrap();
    assert_eq!(ev.severity_text, "INFO");
    assert!(
        ev.body.starts_with("SLO mix stopped burning"),
        "{}",
        ev.body
    );
}

/// A threshold inside a bucket (scale 3: buckets about 9 % wide) is exact:
/// durations on either side of it, in its own bucket, are told apart by
/// the kernel. Interpolating the bucket would get them wrong.
#[test]
fn threshold_inside_a_bucket_is_exact() {
    if !require_root() {
        return;
    }
    // OTLP scale-3 bucket of 19.4 ms: (2^(-46/8), 2^(-45/8)] s =
    // (18.581 ms, 20.263 ms]. Requests of 18.6 ms and 19.42 ms land on
    // either side of the threshold, inside that bucket, as long as the
    // request's round trip adds less than about 0.8 ms to either (the
    // most room the bucket leaves on both sides at once).
    let (lo, hi) = (2f64.powf(-46.0 / 8.0), 2f64.powf(-45.0 / 8.0));
    let t = 0.0194;
    assert!(lo < 0.0186 && 0.01942 < hi && lo < t && t < 0.01942);
    let name = unique_name("slosplit");
    let cfg = slo_of(
        &name,
        r#"
name = "split"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "19400us"
objective = 0.9
window = "1d"
"#,
    );
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(
        &rx,
        &["--probes", "tcp", "--slo-file", cfg.to_str().unwrap()],
    );
    let delays: Vec<&str> = (0..24)
        .map(|i| if i % 3 == 0 { "19420" } else { "18600" })
        .collect();
    // What the kernel measures for a request lies between the workload's
    // inner and outer bounds (see the workload); they are a few µs apart
    // unless something preempted it. A loaded machine can leave a round
    // proving nothing, so up to three rounds run; every request of every
    // round counts.
    let (mut inner, mut outer) = (Vec::new(), Vec::new());
    let (mut below, mut above) = (0, 0);
    for _round in 0..3 {
        let out = run_named(&name, &["tcp-reqresp-us", "spin", &delays.join(",")]);
        inner.extend(output_in_order(&out, "inner_ns"));
        outer.extend(output_in_order(&out, "outer_ns"));
        // The split is proven only if requests landed on both sides of
        // the threshold inside its bucket, known to be so.
        let pairs = || outer.iter().zip(&inner);
        below = pairs().filter(|(o, i)| lo < **i && **o <= t).count();
        above = pairs().filter(|(o, i)| t < **i && **o <= hi).count();
        if below > 0 && above > 0 {
            break;
        }
    }
    let surely_good = outer.iter().filter(|d| **d <= t).count() as u64;
    let maybe_good = inner.iter().filter(|d| **d <= t).count() as u64;
    assert!(
        below > 0 && above > 0,
        "no request known to be on each side of the threshold in its bucket: \
         inner {inner:?} outer {outer:?}"
    );
    let total = inner.len() as u64;
    let n = |p: &[MetricPoint], o| {
        last(
            p,
            "syscope.slo.events",
            &[("slo.name", "split"), ("slo.outcome", o)],
        )
        .unwrap_or(0.0) as u64
    };
    rx.wait_for(WAIT, |p| n(p, "good") + n(p, "bad") >= total);
    std::thread::sleep(Duration::from_millis(2500));
    let pts = rx.points();
    let (good, bad) = (n(&pts, "good"), n(&pts, "bad"));
    assert_eq!(good + bad, total, "every request is an event, once");
    assert!(
        (surely_good..=maybe_good).contains(&good),
        "good {good}, bad {bad}; the workload's bounds say {surely_good} to {maybe_good} \
         at or below {t} s: inner {inner:?} outer {outer:?}"
    );
}

/// Availability of connects: established connects are good, refused ones
/// bad, exactly.
#[test]
fn availability_slo_counts_refused_connects() {
    if !require_root() {
        return;
    }
    let name = unique_name("sloconn");
    let cfg = slo_of(
        &name,
        r#"
name = "connects"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.999
window = "7d"
errors = ["ECONNREFUSED"]
"#,
    );
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(
        &rx,
        &["--probes", "tcp", "--slo-file", cfg.to_str().unwrap()],
    );
    run_named(&name, &["tcp-connect", "7"]);
    run_named(&name, &["tcp-refused", "3"]);
    let pts = wait_events(&rx, "connects", (7, 3));
    // 3 of 10 failed against a 0.1 % budget: 300 budgets.
    let burn = last(
        &pts,
        "syscope.slo.burn_rate",
        &[("slo.name", "connects"), ("slo.window", "1h")],
    )
    .unwrap();
    assert!((burn - 300.0).abs() < 1e-6, "{burn}");
}

/// A server that turns slow by sleeping in its handler: the page-level
/// burn's announcement names the sleep as what changed.
#[test]
fn a_burn_names_the_sleep_that_caused_it() {
    if !require_root() {
        return;
    }
    let name = unique_name("sloslow");
    let cfg = slo_of(
        &name,
        r#"
name = "slow"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "20ms"
objective = 0.99
window = "28d"
"#,
    );
    let rx = Receiver::start();
    let agent = Agent::exporting_to(&rx, &["--slo-file", cfg.to_str().unwrap()]);
    // Fast first, seen for a few intervals...
    let fast = vec!["1000"; 200].join(",");
    run_named(&name, &["tcp-reqresp-us", "spin", &fast]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !agent.stderr().contains("SLO slow is burning"),
        "{}",
        agent.stderr()
    );
    // ...then every answer sleeps 50 ms.
    let slow = vec!["50000"; 40].join(",");
    run_named(&name, &["tcp-reqresp-us", "sleep", &slow]);
    let ev = burn_event(&rx, "slow");
    let diagnosis = ev
        .attributes
        .get("slo.diagnosis")
        .cloned()
        .unwrap_or_default();
    assert!(
        diagnosis.starts_with(&format!("Slice(Str(clock_nanosleep ({name}):")),
        "the sleep is not first: {ev:?}"
    );
}

/// Clients of a listener whose accept queue overflows: their connects fail,
/// the SLO on them burns, and the announcement names the listen drops.
#[test]
fn a_burn_names_the_listen_drops_of_a_full_accept_queue() {
    if !require_root() {
        return;
    }
    let name = unique_name("slodrop");
    let cfg = slo_of(
        &name,
        r#"
name = "queue"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.99
window = "1d"
min_events = 5
"#,
    );
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &["--slo-file", cfg.to_str().unwrap()]);
    let out = run_named(&name, &["tcp-listen-flood", "20"]);
    let port = syscope_tests::output_field(&out, "port");
    let ev = burn_event(&rx, "queue");
    let diagnosis = ev
        .attributes
        .get("slo.diagnosis")
        .cloned()
        .unwrap_or_default();
    assert!(
        diagnosis.contains(&format!("port {port} ({name}):")) && diagnosis.contains("listen drops"),
        "the listen drops of port {port} are not named: {ev:?}"
    );
}

/// The history in `--state-dir` survives a restart: a new agent's burn
/// rates start from what the last one counted, before any new event.
#[test]
fn history_survives_a_restart_with_a_state_dir() {
    if !require_root() {
        return;
    }
    let name = unique_name("slostate");
    let dir = std::env::temp_dir().join(format!("{name}.state"));
    let cfg = slo_of(
        &name,
        r#"
name = "kept"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.9
window = "1d"
"#,
    );
    let args = |rx: &Receiver| {
        (
            rx.grpc_endpoint(),
            vec![
                "--probes".to_owned(),
                "tcp".to_owned(),
                "--slo-file".to_owned(),
                cfg.display().to_string(),
                "--state-dir".to_owned(),
                dir.display().to_string(),
            ],
        )
    };
    let rx = Receiver::start();
    let (ep, extra) = args(&rx);
    let mut a: Vec<&str> = vec!["--endpoint", &ep, "--interval", "1s"];
    a.extend(extra.iter().map(String::as_str));
    let mut agent = Agent::start(&a, &[]);
    run_named(&name, &["tcp-connect", "6"]);
    run_named(&name, &["tcp-refused", "4"]);
    wait_events(&rx, "kept", (6, 4));
    assert!(agent.terminate().success(), "{}", agent.stderr());
    assert!(dir.join("slo-history.json").is_file());

    // A new agent, a new receiver, no traffic: 4 of 10 bad at 0.9 is a
    // burn rate of 4 over the hour, from the saved history; its own
    // events start at zero.
    let rx = Receiver::start();
    let (ep, extra) = args(&rx);
    let mut a: Vec<&str> = vec!["--endpoint", &ep, "--interval", "1s"];
    a.extend(extra.iter().map(String::as_str));
    let _agent = Agent::start(&a, &[]);
    let burn = |p: &[MetricPoint]| {
        last(
            p,
            "syscope.slo.burn_rate",
            &[("slo.name", "kept"), ("slo.window", "1h")],
        )
    };
    let pts = rx.wait_for(WAIT, |p| burn(p).is_some());
    assert!(
        burn(&pts).is_some_and(|b| (b - 4.0).abs() < 1e-9),
        "{:?}",
        burn(&pts)
    );
    let good = last(
        &pts,
        "syscope.slo.events",
        &[("slo.name", "kept"), ("slo.outcome", "good")],
    );
    assert_eq!(good, Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An invalid definition exits 2 before anything loads, naming the SLO and
/// the key.
#[test]
fn invalid_definitions_exit_2_naming_the_slo_and_key() {
    let name = unique_name("slobad");
    for (body, key) in [
        ("threshold = \"20 parsecs\"", "slo.api.threshold"),
        ("objective = 1.5", "slo.api.objective"),
        ("[slo.match]\n\"pod\" = \"x\"", "slo.api.match.\"pod\""),
    ] {
        let mut text = String::from(
            "[[slo]]\nname = \"api\"\nsli = \"latency\"\nmetric = \"tcp.server.request.duration\"\nwindow = \"28d\"\n",
        );
        if !body.starts_with("threshold") {
            text += "threshold = \"20ms\"\n";
        }
        if !body.starts_with("objective") {
            text += "objective = 0.99\n";
        }
        text += body;
        text += "\n";
        let cfg = slo_file(&name, &text);
        let out = std::process::Command::new(common::agent_bin())
            .args(["--slo-file", cfg.to_str().unwrap(), "slo", "rules"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
    }
}

/// The live table leads with the SLOs: objective, budget, burn rates, state.
#[test]
fn the_table_leads_with_the_slos() {
    if !require_root() {
        return;
    }
    let name = unique_name("slotable");
    let cfg = slo_of(
        &name,
        r#"
name = "tabled"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.99
window = "1d"
min_events = 1
"#,
    );
    let agent = Agent::start(
        &[
            "--interval",
            "1s",
            "--probes",
            "tcp",
            "--slo-file",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    run_named(&name, &["tcp-refused", "2"]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = agent.stdout();
        // The last table printed: its SLO section comes before the syscalls'.
        if let Some(t) = out.rsplit("syscope 20").next() {
            let slo = t.find("tabled ");
            let calls = t.find("WORKLOAD");
            if let (Some(s), Some(c)) = (slo, calls) {
                let row = t[s..].lines().next().unwrap();
                if row.contains("BURNING") {
                    assert!(s < c, "{t}");
                    assert!(
                        t.contains("SLO ") && t.contains("BUDGET") && t.contains(" 5m"),
                        "{t}"
                    );
                    assert!(row.contains("99.000%"), "{row}");
                    break;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no burning SLO row:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A state directory that cannot be made stops the agent before any
/// program loads, naming the directory.
#[test]
fn an_unusable_state_dir_stops_the_agent_before_loading() {
    let name = unique_name("slodir");
    let cfg = slo_of(
        &name,
        "name = \"d\"\nsli = \"latency\"\nmetric = \"syscall.duration\"\nthreshold = \"1ms\"\nobjective = 0.9\nwindow = \"1d\"",
    );
    let out = std::process::Command::new(common::agent_bin())
        .args(["--slo-file", cfg.to_str().unwrap()])
        .args(["--state-dir", "/proc/syscope-no-such/state"])
        .args(["--endpoint", "http://127.0.0.1:9"])
        .env("SYSCOPE_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("SLO state directory /proc/syscope-no-such/state"),
        "{err}"
    );
    assert!(!err.contains("attached"), "{err}");
}

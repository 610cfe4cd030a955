//! `syscope slo rules` against Prometheus' own tools: the generated rule
//! file passes `promtool check rules`, and `promtool test rules` with
//! cumulative `syscope_slo_events_total` counters from two nodes fires
//! exactly the alerts the SRE Workbook's multi-window, multi-burn-rate
//! definition says, computed here independently of PromQL: pages under a
//! fast burn (and resolved by the short window when it ends), tickets only
//! under a slow burn, nothing under a healthy ratio (even when one quiet
//! node alone has a high ratio: events are summed, never ratios
//! averaged), nothing at zero traffic (0/0 is NaN) and nothing under low
//! traffic (fewer than `min_events` in the long window), even 100 % bad;
//! and each alert's factor from both sides (a steady burn 3 % below and 3 %
//! above it).
//!
//! Needs promtool (Debian package `prometheus`; `cargo xtask setup`
//! installs it): without it the test fails. No root needed.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Three SLOs with different objectives, one of each SLI kind.
const SLOS: &str = r#"
[[slo]]
name = "web-latency"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "100ms"
objective = 0.99
window = "28d"
min_events = 30
[slo.match]
"server.port" = 8080

[[slo]]
name = "batch-writes"
sli = "availability"
metric = "syscall.errors"
errors = ["EIO", "ENOSPC"]
objective = 0.999
window = "7d"
min_events = 30
[slo.match]
"process.executable.name" = "etl"

[[slo]]
name = "db-connects"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.995
window = "30d"
min_events = 30
[slo.match]
"server.port" = 5432
"#;

/// (name, objective, min_events) of [`SLOS`].
const SLO_PARAMS: [(&str, f64, f64); 3] = [
    ("web-latency", 0.99, 30.0),
    ("batch-writes", 0.999, 30.0),
    ("db-connects", 0.995, 30.0),
];

/// The alerts: (severity, factor, long window, short window), minutes.
/// The SRE Workbook's set, which `slo::ALERTS` defines for the agent.
const ALERTS: [(&str, f64, u64, u64); 4] = [
    ("page", 14.4, 60, 5),
    ("page", 6.0, 360, 30),
    ("ticket", 3.0, 1440, 120),
    ("ticket", 1.0, 4320, 360),
];

fn window_label(min: u64) -> String {
    match min {
        m if m.is_multiple_of(1440) => format!("{}d", m / 1440),
        m if m.is_multiple_of(60) => format!("{}h", m / 60),
        m => format!("{m}m"),
    }
}

const ALERT: &str = "SyscopeSloErrorBudgetBurn";
/// Events per minute over both nodes in the steady scenarios.
const PER_MIN: f64 = 2000.0;
/// Rules are evaluated every 5 minutes; every eval time is a multiple.
const EVAL_MIN: u64 = 5;

fn promtool() -> PathBuf {
    let p = std::env::var_os("SYSCOPE_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    assert!(
        p.exists(),
        "{} is missing: install the Debian package `prometheus` (`cargo xtask setup` installs it); \
         this test does not skip",
        p.display()
    );
    p
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("syscope-slo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `syscope --slo-file <slos> slo <what>`: stdout, after checking it succeeded.
pub fn syscope_slo(dir: &Path, slos: &str, what: &str) -> String {
    let file = dir.join("slos.toml");
    std::fs::write(&file, slos).unwrap();
    let out = Command::new(common::agent_bin())
        .arg("--slo-file")
        .arg(&file)
        .args(["slo", what])
        .env_remove("SYSCOPE_SLO_FILE")
        .output()
        .expect("run syscope");
    assert!(
        out.status.success(),
        "syscope slo {what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An alert of the rule file: its labels and annotations as generated.
#[derive(Clone, Debug, Default)]
struct AlertRule {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The alerting rules of the generated file (the test reads what it
/// needs of the YAML: the generator writes `key: "json string"` lines).
fn alert_rules(yaml: &str) -> Vec<AlertRule> {
    let mut out: Vec<AlertRule> = Vec::new();
    let mut in_alert = false;
    let mut section = "";
    for line in yaml.lines() {
        let t = line.trim_start();
        if t.starts_with("- ") {
            // A new group or rule: only an alert's keys are collected.
            in_alert = t.starts_with("- alert:");
            if in_alert {
                out.push(AlertRule::default());
            }
            section = "";
            continue;
        }
        if t == "labels:" || t == "annotations:" {
            section = t.trim_end_matches(':');
            continue;
        }
        let (true, Some(a)) = (in_alert, out.last_mut()) else {
            continue;
        };
        if let Some((k, v)) = t.split_once(": ") {
            if let Ok(serde_json::Value::String(v)) = serde_json::from_str(v) {
                match section {
                    "labels" => a.labels.insert(k.into(), v),
                    "annotations" => a.annotations.insert(k.into(), v),
                    _ => None,
                };
            }
        }
    }
    out
}

/// A scenario: per-minute segments of (minutes, burn rate) for the
/// steady traffic of [`PER_MIN`], or explicit bad-only traffic.
#[derive(Clone, Debug)]
enum Traffic {
    /// Segments of (minutes, burn rate); the bad events come from node a,
    /// which carries 10 % of the traffic (more if the bad need it).
    Burn(Vec<(u64, f64)>),
    /// No events at all; the counters exist and stay 0.
    Zero(u64),
    /// Every `every` minutes one bad event on node a, nothing good.
    BadEvery { minutes: u64, every: u64 },
}

struct Scenario {
    name: &'static str,
    /// Spacing of the input samples, minutes (1 or 5).
    step: u64,
    traffic: Traffic,
    /// Eval times (minutes) and the expected (severity, long window) alerts.
    expect: Vec<(u64, Vec<(&'static str, &'static str)>)>,
}

/// Cumulative counters per sample: (node a good, node a bad, node b good, node b bad).
fn counters(s: &Scenario, objective: f64) -> Vec<[f64; 4]> {
    let budget = 1.0 - objective;
    let mut per_min: Vec<[f64; 4]> = Vec::new();
    match &s.traffic {
        Traffic::Burn(segs) => {
            for (minutes, burn) in segs {
                let bad = (burn * budget * PER_MIN * 1e6).round() / 1e6;
                let a_total = (0.1 * PER_MIN).max(bad);
                for _ in 0..*minutes {
                    per_min.push([a_total - bad, bad, PER_MIN - a_total, 0.0]);
                }
            }
        }
        Traffic::Zero(minutes) => per_min.resize(*minutes as usize, [0.0; 4]),
        Traffic::BadEvery { minutes, every } => {
            for m in 1..=*minutes {
                let bad = if m.is_multiple_of(*every) { 1.0 } else { 0.0 };
                per_min.push([0.0, bad, 0.0, 0.0]);
            }
        }
    }
    // Sample i at minute i * step holds everything counted up to then.
    let mut out = vec![[0.0; 4]];
    let mut acc = [0.0; 4];
    for (m, inc) in per_min.iter().enumerate() {
        for k in 0..4 {
            acc[k] += inc[k];
        }
        if (m as u64 + 1).is_multiple_of(s.step) {
            out.push(acc);
        }
    }
    out
}

/// The SRE Workbook's definition, on exact counts: the ratio of bad to all
/// events summed over both nodes within (t - w, t], against the factor;
/// no events is no ratio (NaN), which fires nothing.
fn model(
    samples: &[[f64; 4]],
    step: u64,
    t: u64,
    objective: f64,
    min: f64,
) -> Vec<(String, String)> {
    let at = |m: u64| -> [f64; 4] { samples[(m / step) as usize] };
    let over = |w: u64| -> (f64, f64) {
        let now = at(t);
        let then = if t >= w { at(t - w) } else { [0.0; 4] };
        let total: f64 = (0..4).map(|k| now[k] - then[k]).sum();
        let bad = (now[1] - then[1]) + (now[3] - then[3]);
        (total, bad)
    };
    let burn = |w: u64| -> Option<f64> {
        let (total, bad) = over(w);
        (total > 0.0).then(|| bad / total / (1.0 - objective))
    };
    let mut firing = Vec::new();
    for (sev, factor, long, short) in ALERTS {
        let (events, _) = over(long);
        let (bl, bs) = (burn(long), burn(short));
        // Decisions this test depends on stay clear of the thresholds,
        // so PromQL's float arithmetic cannot tip them.
        for b in [bl, bs].into_iter().flatten() {
            assert!(
                (b / factor - 1.0).abs() > 0.015,
                "t={t}m: burn {b} too close to {factor}: pick other numbers"
            );
        }
        if bl.is_some() {
            assert!(
                (events - min).abs() >= 1.0,
                "t={t}m: {events} events too close to min_events"
            );
        }
        let fires =
            bl.is_some_and(|b| b > factor) && bs.is_some_and(|b| b > factor) && events >= min;
        if fires {
            firing.push((sev.to_owned(), window_label(long)));
        }
    }
    firing
}

fn scenarios() -> Vec<Scenario> {
    let mut out = vec![
        // Healthy (burn 0.5) for 3 h, a fast burn (50) for 30 min, healthy
        // again. The 1 h page needs a fifth of an hour of burning before its
        // long window agrees; when the burn ends the 5 m window clears the
        // fast page within minutes, the 30 m window the slower one.
        Scenario {
            name: "fast burn, then recovery",
            step: 1,
            traffic: Traffic::Burn(vec![(180, 0.5), (30, 50.0), (150, 0.5)]),
            expect: vec![
                (175, vec![]),
                (195, vec![("ticket", "1d"), ("ticket", "3d")]),
                (
                    210,
                    vec![
                        ("page", "1h"),
                        ("page", "6h"),
                        ("ticket", "1d"),
                        ("ticket", "3d"),
                    ],
                ),
                (
                    220,
                    vec![("page", "6h"), ("ticket", "1d"), ("ticket", "3d")],
                ),
                (250, vec![("ticket", "1d"), ("ticket", "3d")]),
            ],
        },
        // No errors for 1 h, then a burn of 10: above the 6 h page's factor,
        // below the 1 h page's.
        Scenario {
            name: "medium burn",
            step: 1,
            traffic: Traffic::Burn(vec![(60, 0.0), (200, 10.0)]),
            expect: vec![
                (120, vec![("ticket", "1d"), ("ticket", "3d")]),
                (
                    180,
                    vec![("page", "6h"), ("ticket", "1d"), ("ticket", "3d")],
                ),
            ],
        },
        // Slow burn: 2 days healthy (0.5), then a burn of 4 for a day
        // (samples every 5 minutes). Never a page; the 3 d ticket once its
        // window's ratio passes the budget, the 1 d ticket later.
        Scenario {
            name: "slow burn",
            step: 5,
            traffic: Traffic::Burn(vec![(2880, 0.5), (1440, 4.0)]),
            expect: vec![
                (2880 + 240, vec![]),
                (2880 + 720, vec![("ticket", "3d")]),
                (2880 + 1200, vec![("ticket", "1d"), ("ticket", "3d")]),
            ],
        },
        // Healthy: burn 0.5 over both nodes, though node a alone (10 % of
        // the traffic) has a ratio 10 times that: an average of the two
        // nodes' ratios would burn 2.5 and raise the 3 d ticket.
        Scenario {
            name: "healthy",
            step: 1,
            traffic: Traffic::Burn(vec![(420, 0.5)]),
            expect: vec![(60, vec![]), (200, vec![]), (400, vec![])],
        },
        Scenario {
            name: "zero traffic",
            step: 1,
            traffic: Traffic::Zero(300),
            expect: vec![(10, vec![]), (120, vec![]), (290, vec![])],
        },
        // All bad, but one event per 10 minutes: 24 in 4 h, fewer than
        // min_events (30) in any window.
        Scenario {
            name: "low traffic",
            step: 1,
            traffic: Traffic::BadEvery {
                minutes: 260,
                every: 10,
            },
            expect: vec![(60, vec![]), (120, vec![]), (240, vec![])],
        },
        // All bad, one event a minute: quiet with 25 events, every alert at
        // 35 (min_events is 30).
        Scenario {
            name: "min_events",
            step: 1,
            traffic: Traffic::BadEvery {
                minutes: 60,
                every: 1,
            },
            expect: vec![
                (25, vec![]),
                (
                    35,
                    vec![
                        ("page", "1h"),
                        ("page", "6h"),
                        ("ticket", "1d"),
                        ("ticket", "3d"),
                    ],
                ),
            ],
        },
    ];
    // Each factor from both sides: a steady burn 3 % below it fires only
    // the alerts of smaller factors, 3 % above it fires its own too.
    for (i, (_, factor, _, _)) in ALERTS.iter().enumerate() {
        for (side, burn) in [("below", factor * 0.97), ("above", factor * 1.03)] {
            let fires: Vec<(&'static str, &'static str)> = ALERTS
                .iter()
                .enumerate()
                .filter(|(j, (_, f, _, _))| *f < burn || (*j == i && side == "above"))
                .map(|(_, (sev, _, long, _))| (*sev, LONG_LABELS[long_index(*long)]))
                .collect();
            out.push(Scenario {
                name: if side == "below" {
                    "steady burn just below a factor"
                } else {
                    "steady burn just above a factor"
                },
                step: 1,
                traffic: Traffic::Burn(vec![(90, burn)]),
                expect: vec![(60, fires)],
            });
        }
    }
    out
}

/// The long windows' labels, as `'static` for [`Scenario::expect`].
const LONG_LABELS: [&str; 4] = ["1h", "6h", "1d", "3d"];

fn long_index(minutes: u64) -> usize {
    let i = ALERTS
        .iter()
        .position(|a| a.2 == minutes)
        .expect("a long window");
    assert_eq!(LONG_LABELS[i], window_label(minutes));
    i
}

/// `a+bxn` runs for a list of sample values (promtool's series notation).
fn notation(values: &[f64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        if i + 1 == values.len() {
            out.push(format!("{}", values[i]));
            break;
        }
        let d = values[i + 1] - values[i];
        let mut n = 1;
        while i + n + 1 < values.len() && values[i + n + 1] - values[i + n] == d {
            n += 1;
        }
        out.push(format!("{}+{}x{}", values[i], d, n));
        i += n + 1;
    }
    out.join(" ")
}

fn series_line(slo: &str, node: &str, outcome: &str) -> String {
    format!(
        "syscope_slo_events_total{{instance=\"{node}:9464\",job=\"syscope\",slo_name=\"{slo}\",slo_outcome=\"{outcome}\"}}"
    )
}

fn yaml_q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The promtool unit-test file: every scenario for every SLO.
fn unit_tests(rules: &[AlertRule]) -> String {
    let mut out = format!("rule_files:\n  - rules.yml\nevaluation_interval: {EVAL_MIN}m\ntests:\n");
    for (slo, objective, min) in SLO_PARAMS {
        for s in scenarios() {
            let samples = counters(&s, objective);
            let _ = writeln!(out, "  # {slo}: {}", s.name);
            let _ = writeln!(out, "  - interval: {}m", s.step);
            out.push_str("    input_series:\n");
            for (k, (node, outcome)) in [("a", "good"), ("a", "bad"), ("b", "good"), ("b", "bad")]
                .into_iter()
                .enumerate()
            {
                let values: Vec<f64> = samples.iter().map(|v| v[k]).collect();
                let _ = writeln!(
                    out,
                    "      - series: {}",
                    yaml_q(&series_line(slo, node, outcome))
                );
                let _ = writeln!(out, "        values: {}", yaml_q(&notation(&values)));
            }
            out.push_str("    alert_rule_test:\n");
            for (t, want) in &s.expect {
                assert!(t.is_multiple_of(EVAL_MIN));
                assert!(
                    (*t / s.step) < samples.len() as u64,
                    "{}: eval at {t}m past the samples",
                    s.name
                );
                // The model must agree with what the scenario says it shows.
                let model = model(&samples, s.step, *t, objective, min);
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                assert_eq!(
                    model, want,
                    "{slo}: {} at {t}m: the scenario's claim",
                    s.name
                );
                let _ = writeln!(out, "      - eval_time: {t}m\n        alertname: {ALERT}");
                if want.is_empty() {
                    out.push_str("        exp_alerts: []\n");
                    continue;
                }
                out.push_str("        exp_alerts:\n");
                for (sev, window) in &want {
                    let rule = rules
                        .iter()
                        .find(|r| {
                            r.labels.get("slo_name").map(String::as_str) == Some(slo)
                                && r.labels.get("slo_window") == Some(window)
                                && r.labels.get("severity") == Some(sev)
                        })
                        .unwrap_or_else(|| panic!("no {sev} alert over {window} for {slo}"));
                    out.push_str("          - exp_labels:\n");
                    let _ = writeln!(out, "              severity: {}", yaml_q(sev));
                    let _ = writeln!(out, "              slo_name: {}", yaml_q(slo));
                    let _ = writeln!(out, "              slo_window: {}", yaml_q(window));
                    out.push_str("            exp_annotations:\n");
                    for (k, v) in &rule.annotations {
                        let _ = writeln!(out, "              {k}: {}", yaml_q(v));
                    }
                }
            }
            if matches!(s.traffic, Traffic::Zero(_)) {
                // 0/0: the burn rate is recorded, as NaN, which no
                // comparison passes; the event rate is 0.
                let sel = format!("{{slo_name=\"{slo}\"}}");
                out.push_str("    promql_expr_test:\n");
                for (expr, value) in [
                    (format!("count(syscope_slo:burn_rate:rate1h{sel})"), 1),
                    (
                        format!("count(syscope_slo:burn_rate:rate1h{sel} >= 0) or vector(0)"),
                        0,
                    ),
                    (
                        format!("count(syscope_slo:burn_rate:rate1h{sel} < 0) or vector(0)"),
                        0,
                    ),
                    (format!("sum(syscope_slo:events:rate1h{sel})"), 0),
                ] {
                    let _ = writeln!(
                        out,
                        "      - expr: {}\n        eval_time: 120m\n        exp_samples:\n          - labels: \"{{}}\"\n            value: {value}",
                        yaml_q(&expr)
                    );
                }
            }
        }
    }
    out
}

#[test]
fn rules_pass_promtool_check_and_fire_exactly_the_burn_rate_alerts() {
    let promtool = promtool();
    let dir = temp_dir("rules");
    let rules = syscope_slo(&dir, SLOS, "rules");
    let rules_path = dir.join("rules.yml");
    std::fs::write(&rules_path, &rules).unwrap();

    let (ok, text) = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules_path));
    assert!(ok, "promtool check rules:\n{text}\n{rules}");
    // 1 objective + 4 per window, and the 4 alerts, per SLO.
    let per_slo = 1 + 4 * 7 + ALERTS.len();
    assert!(
        text.contains(&format!(
            "SUCCESS: {} rules found",
            per_slo * SLO_PARAMS.len()
        )),
        "{text}"
    );

    let alerts = alert_rules(&rules);
    assert_eq!(alerts.len(), ALERTS.len() * SLO_PARAMS.len(), "{alerts:?}");
    for a in &alerts {
        let slo = &a.labels["slo_name"];
        let d = &a.annotations["description"];
        assert!(a.annotations["summary"].contains(slo.as_str()), "{a:?}");
        assert!(d.contains(&a.labels["slo_window"]), "{d}");
    }

    let tests = unit_tests(&alerts);
    let tests_path = dir.join("tests.yml");
    std::fs::write(&tests_path, &tests).unwrap();
    let (ok, text) = run(Command::new(&promtool)
        .current_dir(&dir)
        .arg("test")
        .arg("rules")
        .arg(&tests_path));
    assert!(
        ok,
        "promtool test rules ({}):\n{text}",
        tests_path.display()
    );
    assert!(text.contains("SUCCESS"), "{text}");
    if std::env::var_os("SYSCOPE_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The notation helper writes what promtool expands back.
#[test]
fn series_notation_round_trips() {
    assert_eq!(notation(&[0.0, 1.0, 2.0, 3.0]), "0+1x3");
    assert_eq!(notation(&[0.0, 0.0, 5.0, 10.0, 11.0]), "0+0x1 5+5x1 11");
    assert_eq!(notation(&[7.0]), "7");
}

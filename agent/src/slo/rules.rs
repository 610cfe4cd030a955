//! `syscope slo rules`: Prometheus recording and alerting rules generated
//! from the SLO definitions (docs/slo.md, "`syscope slo rules`").
//!
//! One group per SLO, named `syscope-slo-<name>`. For every burn-rate
//! window `<w>` of [`WINDOWS`](super::WINDOWS) it records, over all nodes:
//!
//! | series | what |
//! |---|---|
//! | `syscope_slo:events:rate<w>` | events per second: `sum by (slo_name) (rate(syscope_slo_events_total[<w>]))` |
//! | `syscope_slo:bad_events:rate<w>` | bad events per second (0 while there are events but none bad) |
//! | `syscope_slo:error_ratio:rate<w>` | bad / all events |
//! | `syscope_slo:burn_rate:rate<w>` | error ratio / (1 - objective) |
//!
//! and `syscope_slo:objective:ratio` (a constant). Events are summed over
//! the nodes before dividing: a ratio of sums, never an average of the
//! nodes' ratios, so a quiet node weighs as little as its traffic.
//!
//! The alerts ([`ALERTS`](super::ALERTS), one alert name
//! [`ALERT`]) fire while the burn rate is above the factor over both the
//! long and the short window and the long window holds at least
//! `min_events` events. Without traffic the error ratio is 0/0 = NaN, and
//! every comparison with NaN is false: no alert fires on no traffic.
//!
//! Every metric and label name is derived from the catalogues
//! (`slo::EVENTS`, `slo::ATTR_*`, `prometheus::translate`); the YAML is
//! written here (keys plain, strings JSON-quoted, which YAML reads as
//! double-quoted scalars, expressions as literal blocks).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Availability, BurnAlert, Sli, Slo, Window, ALERTS, ATTR_NAME, ATTR_OUTCOME, BAD};
use crate::prometheus::translate::label_name;

/// The alert name of every burn-rate alert; `severity`, `slo_name` and
/// `slo_window` (the long window) tell them apart.
pub const ALERT: &str = "SyscopeSloErrorBudgetBurn";

/// The level of every recorded series (`syscope_slo`): the SLO metrics'
/// scope, as Prometheus writes names.
pub fn level() -> String {
    label_name(super::SCOPE)
}

/// A recorded series name: `syscope_slo:<what>:<op>`.
fn record_name(what: &str, op: &str) -> String {
    format!("{}:{what}:{op}", level())
}

/// `syscope_slo:events:rate<w>`.
pub fn events_record(w: &Window) -> String {
    record_name("events", &format!("rate{}", w.label))
}

/// `syscope_slo:bad_events:rate<w>`.
pub fn bad_record(w: &Window) -> String {
    record_name("bad_events", &format!("rate{}", w.label))
}

/// `syscope_slo:error_ratio:rate<w>`.
pub fn error_ratio_record(w: &Window) -> String {
    record_name("error_ratio", &format!("rate{}", w.label))
}

/// `syscope_slo:burn_rate:rate<w>`.
pub fn burn_rate_record(w: &Window) -> String {
    record_name("burn_rate", &format!("rate{}", w.label))
}

/// `syscope_slo:objective:ratio`.
pub fn objective_record() -> String {
    record_name("objective", "ratio")
}

/// A duration as PromQL writes it (`28d`, `6h`, `90s`).
pub fn prom_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A PromQL (and Go) double-quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{l1="v1",l2="v2"}`.
pub fn selector(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn name_label() -> String {
    label_name(ATTR_NAME)
}

/// `{slo_name="<name>"}`.
pub fn slo_selector(slo: &Slo) -> String {
    selector(&[(name_label(), slo.name.clone())])
}

/// Events per second of `slo` over `range`, summed over every node.
pub fn events_rate(slo: &Slo, range: &str) -> String {
    format!(
        "sum by ({}) (rate({}{}[{range}]))",
        name_label(),
        super::EVENTS.prometheus_name(),
        slo_selector(slo)
    )
}

/// Bad events per second of `slo` over `range`, summed over every node;
/// 0 (not absent) while there are events but none was bad yet.
pub fn bad_rate(slo: &Slo, range: &str) -> String {
    let bad = selector(&[
        (name_label(), slo.name.clone()),
        (label_name(ATTR_OUTCOME), BAD.to_owned()),
    ]);
    format!(
        "sum by ({}) (rate({}{bad}[{range}]))\nor\n0 * {}",
        name_label(),
        super::EVENTS.prometheus_name(),
        events_rate(slo, range)
    )
}

/// The budgeted error fraction, as PromQL: `(1 - 0.99)`.
fn budget(slo: &Slo) -> String {
    format!("(1 - {})", slo.objective)
}

/// The burn rate of `slo` over `range` from the raw events (what
/// `syscope_slo:burn_rate:rate<w>` records, for a dashboard that does not
/// need the rules): NaN without events.
pub fn burn_rate(slo: &Slo, range: &str) -> String {
    format!(
        "(\n{}\n)\n/\n(\n{}\n)\n/ {}",
        bad_rate(slo, range),
        events_rate(slo, range),
        budget(slo)
    )
}

/// What is left of the error budget over `range`: 1 - burn rate.
pub fn budget_remaining(slo: &Slo, range: &str) -> String {
    format!("1 - (\n{}\n)", burn_rate(slo, range))
}

/// One rule of a group.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    Record {
        record: String,
        expr: String,
        labels: Vec<(String, String)>,
    },
    Alert {
        alert: String,
        expr: String,
        labels: Vec<(String, String)>,
        annotations: Vec<(String, String)>,
    },
}

impl Rule {
    pub fn expr(&self) -> &str {
        match self {
            Rule::Record { expr, .. } | Rule::Alert { expr, .. } => expr,
        }
    }
}

/// One rule group: an SLO's.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// What an SLO measures, in words (annotations).
pub fn describe_sli(slo: &Slo) -> String {
    let what = match &slo.sli {
        Sli::Latency { metric, threshold } => format!(
            "{} <= {}",
            metric.spec().name,
            humantime::format_duration(*threshold)
        ),
        Sli::Availability(a) => {
            let errors = if a.errors().is_empty() {
                "any error".to_owned()
            } else {
                a.errors().join(", ")
            };
            match a {
                Availability::Syscalls { .. } => {
                    format!("system calls not failing with {errors} (syscall.errors)")
                }
                Availability::Connects { .. } => {
                    format!("connects not failing with {errors} (tcp.connect.errors)")
                }
            }
        }
    };
    if slo.matchers.is_empty() {
        return what;
    }
    let m: Vec<String> = slo
        .matchers
        .iter()
        .map(|(a, v)| format!("{}={v}", a.key()))
        .collect();
    format!("{what} where {}", m.join(", "))
}

/// A fraction as a percentage without float noise (`0.999` -> `99.9%`).
pub fn percent(f: f64) -> String {
    let p = (f * 100.0 * 1e9).round() / 1e9;
    format!("{p}%")
}

fn alert_rule(slo: &Slo, a: &BurnAlert) -> Rule {
    let sel = slo_selector(slo);
    let factor = a.factor;
    let expr = format!(
        "{long}{sel} > {factor}\nand\n{short}{sel} > {factor}\nand\n{events}{sel} * {secs} >= {min}",
        long = burn_rate_record(&a.long),
        short = burn_rate_record(&a.short),
        events = events_record(&a.long),
        secs = a.long.length.as_secs(),
        min = slo.min_events,
    );
    let window = prom_duration(slo.window);
    let spent = factor * a.long.length.as_secs_f64() / slo.window.as_secs_f64();
    let summary = format!(
        "SLO {}: error budget burning {factor}x too fast over {} and {}",
        slo.name, a.long.label, a.short.label
    );
    let description = format!(
        "SLO {name} ({sli}; objective {obj} good over {window}): the bad-event ratio over the \
         last {long} and {short}, summed over all nodes, is above {factor} times the budgeted {budget}, \
         with at least {min} events in {long}. At this rate {spent} of the {window} error budget \
         is spent in {long}.",
        name = slo.name,
        sli = describe_sli(slo),
        obj = percent(slo.objective),
        long = a.long.label,
        short = a.short.label,
        budget = percent(1.0 - slo.objective),
        min = slo.min_events,
        spent = percent((spent * 1e4).round() / 1e4),
    );
    Rule::Alert {
        alert: ALERT.to_owned(),
        expr,
        labels: vec![
            ("severity".to_owned(), a.severity.label().to_owned()),
            (name_label(), slo.name.clone()),
            (label_name(super::ATTR_WINDOW), a.long.label.to_owned()),
        ],
        annotations: vec![
            ("summary".to_owned(), summary),
            ("description".to_owned(), description),
        ],
    }
}

/// The rule groups for `slos`, one per SLO.
pub fn groups(slos: &[Slo]) -> Vec<Group> {
    slos.iter()
        .map(|slo| {
            let sel = slo_selector(slo);
            let mut rules = vec![Rule::Record {
                record: objective_record(),
                expr: format!("vector({})", slo.objective),
                labels: vec![(name_label(), slo.name.clone())],
            }];
            for w in &super::WINDOWS {
                // The result has `slo_name` already; the static label tells
                // the groups' rules apart (promtool rejects duplicates).
                let labels = vec![(name_label(), slo.name.clone())];
                rules.push(Rule::Record {
                    record: events_record(w),
                    expr: events_rate(slo, w.label),
                    labels: labels.clone(),
                });
                rules.push(Rule::Record {
                    record: bad_record(w),
                    expr: bad_rate(slo, w.label),
                    labels: labels.clone(),
                });
                rules.push(Rule::Record {
                    record: error_ratio_record(w),
                    expr: format!("{}{sel}\n/\n{}{sel}", bad_record(w), events_record(w)),
                    labels: labels.clone(),
                });
                rules.push(Rule::Record {
                    record: burn_rate_record(w),
                    expr: format!("{}{sel} / {}", error_ratio_record(w), budget(slo)),
                    labels,
                });
            }
            rules.extend(ALERTS.iter().map(|a| alert_rule(slo, a)));
            Group {
                name: format!("{}-{}", super::SCOPE.replace('.', "-"), slo.name),
                rules,
            }
        })
        .collect()
}

/// Every PromQL expression of the rules.
pub fn expressions(slos: &[Slo]) -> Vec<String> {
    groups(slos)
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.expr().to_owned()))
        .collect()
}

/// A YAML double-quoted scalar (JSON's escapes are YAML's).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn yaml_map(out: &mut String, indent: &str, key: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for (k, v) in pairs {
        let _ = writeln!(out, "{indent}  {k}: {}", yaml_str(v));
    }
}

fn yaml_expr(out: &mut String, indent: &str, expr: &str) {
    let _ = writeln!(out, "{indent}expr: |-");
    for line in expr.lines() {
        let _ = writeln!(out, "{indent}  {line}");
    }
}

/// The rule file (YAML) for `slos`.
pub fn render(slos: &[Slo]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = slos.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(
        out,
        "# Generated by `syscope slo rules` for the SLOs {}.\n\
         # Recorded per window: {level}:events:rate<w>, {level}:bad_events:rate<w>,\n\
         # {level}:error_ratio:rate<w>, {level}:burn_rate:rate<w>; and {level}:objective:ratio.\n\
         # Alerts: {ALERT}{{severity, slo_name, slo_window}}; see docs/slo.md.",
        names.join(", "),
        level = level(),
    );
    out.push_str("groups:\n");
    for g in groups(slos) {
        let _ = writeln!(out, "  - name: {}", yaml_str(&g.name));
        out.push_str("    rules:\n");
        for r in &g.rules {
            match r {
                Rule::Record {
                    record,
                    expr,
                    labels,
                } => {
                    let _ = writeln!(out, "      - record: {}", yaml_str(record));
                    yaml_expr(&mut out, "        ", expr);
                    yaml_map(&mut out, "        ", "labels", labels);
                }
                Rule::Alert {
                    alert,
                    expr,
                    labels,
                    annotations,
                } => {
                    let _ = writeln!(out, "      - alert: {}", yaml_str(alert));
                    yaml_expr(&mut out, "        ", expr);
                    yaml_map(&mut out, "        ", "labels", labels);
                    yaml_map(&mut out, "        ", "annotations", annotations);
                }
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::aggregate::metrics::{Attr, Metric};
    use crate::slo::{Severity, WINDOWS};

    /// A latency, a syscall and a connect SLO.
    pub(crate) fn slos() -> Vec<Slo> {
        vec![
            Slo {
                name: "checkout-latency".into(),
                sli: Sli::Latency {
                    metric: Metric::TcpServerRequestDuration,
                    threshold: Duration::from_millis(100),
                },
                objective: 0.99,
                window: Duration::from_secs(28 * 86_400),
                matchers: vec![
                    (Attr::K8sNamespace, "shop".into()),
                    (Attr::ServerPort, "8080".into()),
                ],
                min_events: 30,
            },
            Slo {
                name: "batch-writes".into(),
                sli: Sli::Availability(Availability::Syscalls {
                    errors: vec!["EIO".into(), "ENOSPC".into()],
                }),
                objective: 0.999,
                window: Duration::from_secs(7 * 86_400),
                matchers: vec![(Attr::ExecutableName, "nightly \"etl\"".into())],
                min_events: 100,
            },
            Slo {
                name: "db-connects".into(),
                sli: Sli::Availability(Availability::Connects { errors: vec![] }),
                objective: 0.995,
                window: Duration::from_secs(30 * 86_400),
                matchers: vec![(Attr::ServerPort, "5432".into())],
                min_events: 30,
            },
        ]
    }

    type Pairs = [(String, String)];

    fn alerts(g: &Group) -> Vec<(&str, &Pairs, &Pairs)> {
        g.rules
            .iter()
            .filter_map(|r| match r {
                Rule::Alert {
                    expr,
                    labels,
                    annotations,
                    ..
                } => Some((expr.as_str(), labels.as_slice(), annotations.as_slice())),
                Rule::Record { .. } => None,
            })
            .collect()
    }

    fn label<'a>(labels: &'a [(String, String)], k: &str) -> &'a str {
        labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no label {k} in {labels:?}"))
    }

    #[test]
    fn every_slo_gets_its_group_and_the_four_alerts() {
        let slos = slos();
        let gs = groups(&slos);
        assert_eq!(gs.len(), slos.len());
        for (g, slo) in gs.iter().zip(&slos) {
            assert_eq!(g.name, format!("syscope-slo-{}", slo.name));
            let a = alerts(g);
            assert_eq!(a.len(), ALERTS.len());
            for ((expr, labels, annotations), want) in a.iter().zip(ALERTS.iter()) {
                assert_eq!(label(labels, "severity"), want.severity.label());
                assert_eq!(label(labels, "slo_name"), slo.name);
                assert_eq!(label(labels, "slo_window"), want.long.label);
                // Both windows, the factor, and the guard.
                let sel = format!("{{slo_name=\"{}\"}}", slo.name);
                assert!(
                    expr.contains(&format!(
                        "syscope_slo:burn_rate:rate{}{sel} > {}",
                        want.long.label, want.factor
                    )),
                    "{expr}"
                );
                assert!(
                    expr.contains(&format!(
                        "syscope_slo:burn_rate:rate{}{sel} > {}",
                        want.short.label, want.factor
                    )),
                    "{expr}"
                );
                assert!(
                    expr.contains(&format!(
                        "syscope_slo:events:rate{}{sel} * {} >= {}",
                        want.long.label,
                        want.long.length.as_secs(),
                        slo.min_events
                    )),
                    "min_events guard missing: {expr}"
                );
                let summary = label(annotations, "summary");
                let description = label(annotations, "description");
                assert!(summary.contains(&slo.name), "{summary}");
                assert!(
                    description.contains(&percent(slo.objective)),
                    "{description}"
                );
                assert!(description.contains(want.short.label), "{description}");
            }
            let severities: Vec<Severity> = ALERTS.iter().map(|a| a.severity).collect();
            assert_eq!(
                severities,
                [
                    Severity::Page,
                    Severity::Page,
                    Severity::Ticket,
                    Severity::Ticket
                ]
            );
        }
    }

    #[test]
    fn every_window_is_recorded_from_summed_events() {
        let slos = slos();
        let g = &groups(&slos)[1];
        let records: Vec<(&str, &str)> = g
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Record { record, expr, .. } => Some((record.as_str(), expr.as_str())),
                Rule::Alert { .. } => None,
            })
            .collect();
        assert_eq!(records.len(), 1 + 4 * WINDOWS.len());
        assert_eq!(records[0], ("syscope_slo:objective:ratio", "vector(0.999)"));
        for w in &WINDOWS {
            let find = |name: String| {
                records
                    .iter()
                    .find(|(r, _)| *r == name)
                    .unwrap_or_else(|| panic!("{name} not recorded"))
                    .1
            };
            let events = find(format!("syscope_slo:events:rate{}", w.label));
            assert_eq!(
                events,
                format!(
                    "sum by (slo_name) (rate(syscope_slo_events_total{{slo_name=\"batch-writes\"}}[{}]))",
                    w.label
                )
            );
            let bad = find(format!("syscope_slo:bad_events:rate{}", w.label));
            assert!(bad.contains("slo_outcome=\"bad\""), "{bad}");
            assert!(bad.contains(&format!("or\n0 * {events}")), "{bad}");
            let ratio = find(format!("syscope_slo:error_ratio:rate{}", w.label));
            assert!(!ratio.contains("avg"), "ratios are never averaged: {ratio}");
            let burn = find(format!("syscope_slo:burn_rate:rate{}", w.label));
            assert!(burn.ends_with("/ (1 - 0.999)"), "{burn}");
        }
    }

    #[test]
    fn names_come_from_the_catalogue() {
        assert_eq!(level(), "syscope_slo");
        let e = expressions(&slos()).join("\n");
        assert!(e.contains(&crate::slo::EVENTS.prometheus_name()));
        assert!(e.contains(&format!("{}=\"bad\"", label_name(ATTR_OUTCOME))));
        assert!(!e.contains("slo.name"), "OpenTelemetry keys leaked");
    }

    #[test]
    fn yaml_quotes_what_needs_it() {
        let text = render(&slos());
        assert!(text.starts_with("# Generated by `syscope slo rules`"));
        assert!(
            text.contains("\ngroups:\n  - name: \"syscope-slo-checkout-latency\"\n    rules:\n")
        );
        assert!(!text.contains('\t'));
        // Every expression line sits inside its literal block.
        let mut in_expr = false;
        for line in text.lines() {
            if line.ends_with("expr: |-") {
                in_expr = true;
                continue;
            }
            if in_expr && line.starts_with("          ") {
                continue;
            }
            in_expr = false;
            assert!(
                line.starts_with('#')
                    || line == "groups:"
                    || line.trim_start().starts_with("- ")
                    || line.trim_start().split_once(": ").is_some()
                    || line.ends_with(':'),
                "{line:?}"
            );
        }
        assert_eq!(yaml_str("a \"b\"\n"), r#""a \"b\"\n""#);
    }

    #[test]
    fn durations_and_quotes() {
        assert_eq!(prom_duration(Duration::from_secs(28 * 86_400)), "28d");
        assert_eq!(prom_duration(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(prom_duration(Duration::from_secs(300)), "5m");
        assert_eq!(prom_duration(Duration::from_secs(90)), "90s");
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(percent(0.999), "99.9%");
        assert_eq!(percent(1.0 - 0.999), "0.1%");
        for w in &WINDOWS {
            assert_eq!(prom_duration(w.length), w.label);
        }
    }
}

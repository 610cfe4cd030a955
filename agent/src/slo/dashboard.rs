//! `syscope slo dashboard`: a Grafana dashboard generated from the SLO
//! definitions (docs/slo.md, "`syscope slo dashboard`").
//!
//! One row per SLO: the error budget left over the SLO's window (all nodes,
//! from the events; and per agent, from the engine's gauge), the burn rate
//! over every window of [`WINDOWS`](super::WINDOWS) (all nodes), the good
//! and bad event rates, the history the agents cover; then the SLI of the
//! selected workloads straight from the agent's measurements: latency
//! quantiles of the SLO's histogram, or calls and errors for availability.
//! Every query reads raw series (no recording rule is needed) and a
//! `datasource` variable picks the Prometheus. Histograms are queried
//! native first, classic (`_bucket`, `_count`) otherwise, so the dashboard
//! works with and without Prometheus' native histograms.

use serde_json::{json, Value};

use super::rules::{self, prom_duration, selector};
use super::{Availability, Sli, Slo, ALERTS, WINDOWS};
use crate::aggregate::metrics::{Attr, Metric};
use crate::prometheus::translate::{label_name, metric_name, Kind};

/// The range of the rate panels (event rates, SLIs).
pub const RATE_RANGE: &str = "5m";
/// The quantiles drawn for a latency SLI.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// The dashboard's uid (stable, so a re-import replaces it).
pub const UID: &str = "syscope-slo";

const DATASOURCE: &str = "datasource";

fn ds() -> Value {
    json!({"type": "prometheus", "uid": format!("${{{DATASOURCE}}}")})
}

/// The Prometheus family name of an SLI metric.
fn family(m: Metric) -> String {
    let s = m.spec();
    let kind = match s.instrument {
        crate::aggregate::metrics::Instrument::Histogram => Kind::Histogram,
        crate::aggregate::metrics::Instrument::Counter => Kind::Counter,
    };
    metric_name(s.name, s.unit, kind)
}

/// The SLO's matchers as label pairs (`server.port` -> `server_port`).
fn matcher_pairs(slo: &Slo) -> Vec<(String, String)> {
    slo.matchers
        .iter()
        .map(|(a, v)| (label_name(a.key()), v.clone()))
        .collect()
}

/// The selector of the SLO's workloads on an SLI metric.
pub fn sli_selector(slo: &Slo) -> String {
    selector(&matcher_pairs(slo))
}

/// `error_type` matcher of an availability SLI (none: every error).
fn errors_selector(slo: &Slo, a: &Availability) -> String {
    let mut pairs = matcher_pairs(slo);
    let sel = selector(&pairs);
    match a.errors() {
        [] => sel,
        [one] => {
            pairs.push((label_name(Attr::ErrorType.key()), one.clone()));
            selector(&pairs)
        }
        many => {
            // error.types are [A-Za-z0-9_]: nothing to escape in the regex.
            let re = format!(
                "{}=~{}",
                label_name(Attr::ErrorType.key()),
                rules::quote(&many.join("|"))
            );
            if pairs.is_empty() {
                format!("{{{re}}}")
            } else {
                format!("{},{re}}}", sel.trim_end_matches('}'))
            }
        }
    }
}

/// The q-quantile of a histogram over the selected series: native, else
/// classic buckets.
pub fn quantile(m: Metric, sel: &str, q: f64) -> String {
    let f = family(m);
    format!(
        "histogram_quantile({q}, sum(rate({f}{sel}[{RATE_RANGE}])))\nor\n\
         histogram_quantile({q}, sum by (le) (rate({f}_bucket{sel}[{RATE_RANGE}])))"
    )
}

/// Measurements per second of a histogram: native, else classic `_count`.
pub fn count_rate(m: Metric, sel: &str) -> String {
    let f = family(m);
    format!(
        "histogram_count(sum(rate({f}{sel}[{RATE_RANGE}])))\nor\n\
         sum(rate({f}_count{sel}[{RATE_RANGE}]))"
    )
}

/// Per second of a counter over the selected series.
pub fn counter_rate(m: Metric, sel: &str) -> String {
    format!("sum(rate({}{sel}[{RATE_RANGE}]))", family(m))
}

fn target(expr: String, legend: &str, ref_id: usize) -> Value {
    let ref_id = char::from(b'A' + (ref_id % 26) as u8).to_string();
    json!({
        "datasource": ds(),
        "expr": expr,
        "legendFormat": legend,
        "refId": ref_id,
        "range": true,
    })
}

/// Grid placement: rows of 24 units.
struct Layout {
    id: u64,
    x: u64,
    y: u64,
}

impl Layout {
    fn place(&mut self, w: u64, h: u64) -> (u64, Value) {
        if self.x + w > 24 {
            self.x = 0;
            self.y += h;
        }
        let pos = json!({"h": h, "w": w, "x": self.x, "y": self.y});
        self.x += w;
        self.id += 1;
        (self.id, pos)
    }
    fn row(&mut self, title: &str) -> Value {
        if self.x > 0 {
            self.x = 0;
            self.y += 8;
        }
        self.id += 1;
        let v = json!({
            "type": "row",
            "id": self.id,
            "title": title,
            "collapsed": false,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        });
        self.y += 1;
        v
    }
}

fn thresholds(steps: &[(Option<f64>, &str)]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(v, c)| json!({"color": c, "value": v}))
        .collect();
    json!({"mode": "absolute", "steps": steps})
}

#[allow(clippy::too_many_arguments)]
fn panel(
    l: &mut Layout,
    kind: &str,
    title: &str,
    description: &str,
    unit: &str,
    targets: Vec<Value>,
    th: Value,
    w: u64,
) -> Value {
    let (id, pos) = l.place(w, 8);
    let mut p = json!({
        "type": kind,
        "id": id,
        "title": title,
        "description": description,
        "datasource": ds(),
        "gridPos": pos,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": th}, "overrides": []},
        "options": {},
    });
    if kind == "timeseries" {
        p["fieldConfig"]["defaults"]["custom"] = json!({"thresholdsStyle": {"mode": "line"}});
        p["options"] = json!({"legend": {"displayMode": "list", "placement": "bottom"}});
    } else {
        p["options"] = json!({"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"});
    }
    p
}

fn slo_panels(l: &mut Layout, slo: &Slo) -> Vec<Value> {
    let window = prom_duration(slo.window);
    let sel = rules::slo_selector(slo);
    let mut out = vec![l.row(&format!(
        "SLO {}: {} good over {window} ({})",
        slo.name,
        rules::percent(slo.objective),
        rules::describe_sli(slo)
    ))];
    let red_green = thresholds(&[(None, "red"), (Some(0.0), "orange"), (Some(0.25), "green")]);
    out.push(panel(
        l,
        "stat",
        &format!("Error budget left ({window}, all nodes)"),
        "1 - burn rate over the SLO's window, from the events of every node summed \
         (as far back as Prometheus keeps them).",
        "percentunit",
        vec![target(
            rules::budget_remaining(slo, &window),
            "all nodes",
            0,
        )],
        red_green.clone(),
        6,
    ));
    out.push(panel(
        l,
        "stat",
        "Error budget left, per agent",
        "Each agent's own count over the SLO's window (its history: see the next panel).",
        "percentunit",
        vec![target(
            format!("{}{sel}", super::BUDGET_REMAINING.prometheus_name()),
            "{{instance}}",
            0,
        )],
        red_green,
        6,
    ));
    out.push(panel(
        l,
        "stat",
        "History covered by the agents",
        "How much of the past the agents' burn rates and budget cover (the least of all agents).",
        "s",
        vec![target(
            format!("min({}{sel})", super::HISTORY.prometheus_name()),
            "least",
            0,
        )],
        thresholds(&[(None, "text")]),
        6,
    ));
    out.push(panel(
        l,
        "timeseries",
        "Good and bad events (all nodes)",
        "Events per second, summed over the nodes.",
        "reqps",
        vec![target(
            format!(
                "sum by ({}) (rate({}{sel}[{RATE_RANGE}]))",
                label_name(super::ATTR_OUTCOME),
                super::EVENTS.prometheus_name()
            ),
            &format!("{{{{{}}}}}", label_name(super::ATTR_OUTCOME)),
            0,
        )],
        thresholds(&[(None, "green")]),
        6,
    ));
    // Burn rates: every window, with the alerts' factors as thresholds.
    let mut steps: Vec<(Option<f64>, &str)> = vec![(None, "green")];
    let colors = ["red", "orange", "yellow", "blue"];
    let mut factors: Vec<f64> = ALERTS.iter().map(|a| a.factor).collect();
    factors.sort_by(f64::total_cmp);
    factors.dedup();
    for (i, f) in factors.iter().enumerate() {
        steps.push((Some(*f), colors[(factors.len() - 1 - i) % colors.len()]));
    }
    out.push(panel(
        l,
        "timeseries",
        "Burn rate (all nodes)",
        "Bad-event ratio over each window / (1 - objective), events summed over the nodes; \
         lines at the alerts' factors. Empty without events (0/0).",
        "none",
        WINDOWS
            .iter()
            .enumerate()
            .map(|(i, w)| target(rules::burn_rate(slo, w.label), w.label, i))
            .collect(),
        thresholds(&steps),
        12,
    ));
    out.push(panel(
        l,
        "timeseries",
        "Burn rate, per agent",
        "Each agent's own burn rates (syscope.slo.burn_rate).",
        "none",
        vec![target(
            format!("{}{sel}", super::BURN_RATE.prometheus_name()),
            &format!(
                "{{{{instance}}}} {{{{{}}}}}",
                label_name(super::ATTR_WINDOW)
            ),
            0,
        )],
        thresholds(&steps),
        12,
    ));
    out.extend(sli_panels(l, slo));
    out
}

fn sli_panels(l: &mut Layout, slo: &Slo) -> Vec<Value> {
    let sel = sli_selector(slo);
    let none = thresholds(&[(None, "green")]);
    match &slo.sli {
        Sli::Latency { metric, threshold } => {
            let t = threshold.as_secs_f64();
            vec![
                panel(
                    l,
                    "timeseries",
                    &format!("SLI: {} quantiles", metric.spec().name),
                    &format!(
                        "Of the selected workloads ({}), all nodes; the line is the SLO's \
                         threshold ({}).",
                        if sel == "{}" { "all" } else { &sel },
                        humantime::format_duration(*threshold)
                    ),
                    "s",
                    QUANTILES
                        .iter()
                        .enumerate()
                        .map(|(i, q)| {
                            target(quantile(*metric, &sel, *q), &format!("p{}", q * 100.0), i)
                        })
                        .collect(),
                    thresholds(&[(None, "green"), (Some(t), "red")]),
                    12,
                ),
                panel(
                    l,
                    "timeseries",
                    &format!("SLI: {} per second", metric.spec().name),
                    "Measurements per second of the selected workloads, all nodes.",
                    "reqps",
                    vec![target(count_rate(*metric, &sel), "all", 0)],
                    none,
                    12,
                ),
            ]
        }
        Sli::Availability(a) => {
            let events = count_rate(a.events(), &sel);
            let errors = counter_rate(a.errors_metric(), &errors_selector(slo, a));
            let total = if a.errors_are_extra() {
                format!("(\n{events}\n)\n+\n{errors}")
            } else {
                events.clone()
            };
            let (what, events_legend) = match a {
                Availability::Syscalls { .. } => ("calls", "calls"),
                Availability::Connects { .. } => ("connects", "established"),
            };
            vec![
                panel(
                    l,
                    "timeseries",
                    &format!("SLI: {what} and errors per second"),
                    &format!(
                        "{} and {} of the selected workloads, all nodes.",
                        a.events().spec().name,
                        a.errors_metric().spec().name
                    ),
                    "ops",
                    vec![
                        target(events, events_legend, 0),
                        target(errors.clone(), "failed", 1),
                    ],
                    none,
                    12,
                ),
                panel(
                    l,
                    "timeseries",
                    &format!("SLI: failed {what} ratio"),
                    "Failed / all, all nodes; the line is the budgeted error fraction.",
                    "percentunit",
                    vec![target(format!("{errors}\n/\n(\n{total}\n)"), "failed", 0)],
                    thresholds(&[(None, "green"), (Some(1.0 - slo.objective), "red")]),
                    12,
                ),
            ]
        }
    }
}

/// The dashboard as JSON.
pub fn dashboard(slos: &[Slo]) -> Value {
    let mut l = Layout { id: 0, x: 0, y: 0 };
    let panels: Vec<Value> = slos.iter().flat_map(|s| slo_panels(&mut l, s)).collect();
    json!({
        "uid": UID,
        "title": "syscope SLOs",
        "description": "Generated by `syscope slo dashboard` (docs/slo.md).",
        "tags": ["syscope", "slo"],
        "editable": true,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": [{
            "name": DATASOURCE,
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "options": [],
        }]},
        "panels": panels,
    })
}

/// Every PromQL expression the dashboard uses, in panel order.
pub fn queries(slos: &[Slo]) -> Vec<String> {
    let d = dashboard(slos);
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_owned());
            }
        }
    }
    out
}

/// The dashboard (JSON) for `slos`.
pub fn render(slos: &[Slo]) -> String {
    let mut s = serde_json::to_string_pretty(&dashboard(slos)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::rules::tests::slos;

    #[test]
    fn a_row_per_slo_and_a_datasource_variable() {
        let slos = slos();
        let d: Value = serde_json::from_str(&render(&slos)).unwrap();
        assert_eq!(d["templating"]["list"][0]["type"], "datasource");
        assert_eq!(d["templating"]["list"][0]["query"], "prometheus");
        let panels = d["panels"].as_array().unwrap();
        let rows: Vec<&str> = panels
            .iter()
            .filter(|p| p["type"] == "row")
            .map(|p| p["title"].as_str().unwrap())
            .collect();
        assert_eq!(rows.len(), slos.len());
        for (r, s) in rows.iter().zip(&slos) {
            assert!(r.contains(&s.name), "{r}");
        }
        // Unique ids; every target uses the variable.
        let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), panels.len());
        for p in panels.iter().filter(|p| p["type"] != "row") {
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], "${datasource}");
            }
        }
    }

    #[test]
    fn queries_cover_budget_burn_events_and_the_sli() {
        let slos = slos();
        let q = queries(&slos);
        let all = q.join("\n");
        // Per SLO: budget (2), history, events, a burn rate per window, the
        // agent's burn rates; then the SLI: quantiles and a rate (latency),
        // or events, errors and their ratio (availability).
        let per = 4 + WINDOWS.len() + 1;
        assert_eq!(q.len(), slos.len() * per + QUANTILES.len() + 1 + 3 + 3);
        assert!(
            all.contains("syscope_slo_error_budget_remaining_ratio{slo_name=\"checkout-latency\"}")
        );
        assert!(all.contains("syscope_slo_burn_rate_ratio{slo_name=\"db-connects\"}"));
        assert!(all.contains("min(syscope_slo_history_seconds{slo_name=\"batch-writes\"})"));
        assert!(all.contains("[28d]"), "the SLO window");
        for w in &WINDOWS {
            assert!(all.contains(&format!("[{}]", w.label)));
        }
        // The SLI, with the matchers as labels, names from the catalogue.
        assert!(all.contains(
            "histogram_quantile(0.99, sum by (le) (rate(tcp_server_request_duration_seconds_bucket{k8s_namespace_name=\"shop\",server_port=\"8080\"}[5m])))"
        ), "{all}");
        assert!(all.contains(
            "histogram_quantile(0.99, sum(rate(tcp_server_request_duration_seconds{k8s_namespace_name=\"shop\",server_port=\"8080\"}[5m])))"
        ));
        assert!(all.contains(
            "sum(rate(syscall_errors_total{process_executable_name=\"nightly \\\"etl\\\"\",error_type=~\"EIO|ENOSPC\"}[5m]))"
        ), "{all}");
        assert!(all.contains("syscall_duration_seconds_count{process_executable_name="));
        assert!(all.contains("sum(rate(tcp_connect_errors_total{server_port=\"5432\"}[5m]))"));
        assert!(all.contains(
            "histogram_count(sum(rate(tcp_connect_duration_seconds{server_port=\"5432\"}[5m])))"
        ));
        assert!(!all.contains("$__"), "queries run as they are");
    }

    #[test]
    fn one_error_type_is_an_equality() {
        let mut s = slos();
        s[1].sli = Sli::Availability(Availability::Syscalls {
            errors: vec!["EIO".into()],
        });
        s[1].matchers.clear();
        let all = queries(&s[1..2]).join("\n");
        assert!(
            all.contains("syscall_errors_total{error_type=\"EIO\"}"),
            "{all}"
        );
    }
}

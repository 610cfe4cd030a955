//! `[[slo]]` definitions: the file form, and the checked form the engine,
//! the rules and the dashboard use. Every problem names the SLO and the key
//! (`slo.<name>.<key>`) and exits 2 before anything is loaded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aggregate::metrics::{Attr, Instrument, Metric};
use crate::config::ConfigError;

/// Shortest and longest latency threshold: inside the kernel histogram's
/// range (`hist::ZERO_THRESHOLD_S` .. `hist::MAX_TRACKED_S`).
pub const THRESHOLD_MIN: Duration = Duration::from_micros(1);
pub const THRESHOLD_MAX: Duration = Duration::from_secs(3600);
/// Budget periods: a day to a year (the history keeps one hour buckets).
pub const WINDOW_MIN: Duration = Duration::from_secs(86_400);
pub const WINDOW_MAX: Duration = Duration::from_secs(366 * 86_400);
/// Default `min_events`: a burn-rate alert needs this many events in its
/// long window, so that 1 bad event out of 3 does not page anyone.
pub const DEFAULT_MIN_EVENTS: u64 = 30;
/// Most SLOs per agent: each costs a few KB of history and a handful of
/// series, and the rules grow with them.
pub const MAX_SLOS: usize = 64;

/// One `[[slo]]` table as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSlo {
    pub name: Option<String>,
    pub sli: Option<String>,
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    pub objective: Option<f64>,
    pub window: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_events: Option<u64>,
    /// Availability: the `error.type`s that are bad events (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    #[serde(rename = "match", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, toml::Value>,
}

/// What counts as an event, and what makes it bad.
#[derive(Clone, Debug, PartialEq)]
pub enum Sli {
    /// Events are the measurements of `metric` (a duration histogram);
    /// good when `<= threshold`. Exact: the kernel compares every duration
    /// to the threshold.
    Latency { metric: Metric, threshold: Duration },
    Availability(Availability),
}

/// The availability pairs: total and bad events from two metrics of the
/// same workloads.
#[derive(Clone, Debug, PartialEq)]
pub enum Availability {
    /// `metric = "syscall.errors"`: events are calls (`syscall.duration`),
    /// bad ones the calls that failed with one of `errors` (all errors when
    /// empty).
    Syscalls { errors: Vec<String> },
    /// `metric = "tcp.connect.errors"`: events are connect attempts, good
    /// ones established (`tcp.connect.duration`), bad ones failed
    /// (`tcp.connect.errors`, with one of `errors` when given).
    Connects { errors: Vec<String> },
}

impl Availability {
    /// The metric whose points are the events (syscalls: all of them;
    /// connects: the good ones).
    pub fn events(&self) -> Metric {
        match self {
            Availability::Syscalls { .. } => Metric::SyscallDuration,
            Availability::Connects { .. } => Metric::TcpConnectDuration,
        }
    }
    /// The error counter.
    pub fn errors_metric(&self) -> Metric {
        match self {
            Availability::Syscalls { .. } => Metric::SyscallErrors,
            Availability::Connects { .. } => Metric::TcpConnectErrors,
        }
    }
    /// The `error.type`s that count as bad (empty: all).
    pub fn errors(&self) -> &[String] {
        match self {
            Availability::Syscalls { errors } | Availability::Connects { errors } => errors,
        }
    }
    /// Whether the error metric's points are bad events *in addition to*
    /// the event metric's (connects), rather than a subset of them (syscalls).
    pub fn errors_are_extra(&self) -> bool {
        matches!(self, Availability::Connects { .. })
    }
}

/// A checked SLO.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    pub name: String,
    pub sli: Sli,
    /// Fraction of good events, 0 < objective < 1.
    pub objective: f64,
    /// The budget period.
    pub window: Duration,
    /// Equality on exported attributes (value as exported: text, or the
    /// port's decimal digits).
    pub matchers: Vec<(Attr, String)>,
    /// Events a burn-rate alert needs in its long window.
    pub min_events: u64,
}

impl Slo {
    /// The metrics whose series this SLO reads.
    pub fn metrics(&self) -> Vec<Metric> {
        match &self.sli {
            Sli::Latency { metric, .. } => vec![*metric],
            Sli::Availability(a) => vec![a.events(), a.errors_metric()],
        }
    }

    /// The latency threshold, if a latency SLI.
    pub fn threshold(&self) -> Option<Duration> {
        match &self.sli {
            Sli::Latency { threshold, .. } => Some(*threshold),
            Sli::Availability(_) => None,
        }
    }

    /// `sli` as written.
    pub fn sli_label(&self) -> &'static str {
        match self.sli {
            Sli::Latency { .. } => "latency",
            Sli::Availability(_) => "availability",
        }
    }

    /// The metric named in the definition.
    pub fn metric_label(&self) -> &'static str {
        match &self.sli {
            Sli::Latency { metric, .. } => metric.spec().name,
            Sli::Availability(a) => a.errors_metric().spec().name,
        }
    }

    /// The file form, for `--print-config`.
    pub fn to_file(&self) -> FileSlo {
        let (threshold, errors) = match &self.sli {
            Sli::Latency { threshold, .. } => {
                (Some(humantime::format_duration(*threshold).to_string()), None)
            }
            Sli::Availability(a) => (None, Some(a.errors().to_vec())),
        };
        FileSlo {
            name: Some(self.name.clone()),
            sli: Some(self.sli_label().into()),
            metric: Some(self.metric_label().into()),
            threshold,
            objective: Some(self.objective),
            window: Some(humantime::format_duration(self.window).to_string()),
            min_events: Some(self.min_events),
            errors,
            matchers: self
                .matchers
                .iter()
                .map(|(a, v)| {
                    let v = match (a, v.parse::<i64>()) {
                        (Attr::ServerPort, Ok(n)) => toml::Value::Integer(n),
                        _ => toml::Value::String(v.clone()),
                    };
                    (a.key().to_owned(), v)
                })
                .collect(),
        }
    }
}

/// A `slo.<name>.<key>` (or `slo[<i>].<key>` before the name is known) error.
fn bad(who: &str, key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("{who}.{key}"),
        problem: problem.into(),
    }
}

/// Check every definition, and what they need together (unique names, the
/// number of distinct thresholds).
pub fn resolve(files: &[FileSlo]) -> Result<Vec<Slo>, ConfigError> {
    if files.len() > MAX_SLOS {
        return Err(ConfigError::Invalid {
            key: "slo".into(),
            problem: format!("{} SLOs defined; at most {MAX_SLOS}", files.len()),
        });
    }
    let mut out: Vec<Slo> = Vec::new();
    let mut thresholds: Vec<Duration> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let slo = check(i, f)?;
        if out.iter().any(|s| s.name == slo.name) {
            return Err(bad(
                &format!("slo.{}", slo.name),
                "name",
                "defined twice; SLO names are unique",
            ));
        }
        if let Some(t) = slo.threshold() {
            if !thresholds.contains(&t) {
                if thresholds.len() == super::MAX_THRESHOLDS {
                    return Err(bad(
                        &format!("slo.{}", slo.name),
                        "threshold",
                        format!(
                            "a {}th distinct latency threshold; the kernel counts at most {} \
                             (SLOs may share one)",
                            thresholds.len() + 1,
                            super::MAX_THRESHOLDS
                        ),
                    ));
                }
                thresholds.push(t);
            }
        }
        out.push(slo);
    }
    Ok(out)
}

/// The distinct latency thresholds of `slos`, in the order the kernel's
/// split counters hold them (`hist::SPLITS` slots).
pub fn thresholds(slos: &[Slo]) -> Vec<Duration> {
    let mut out: Vec<Duration> = Vec::new();
    for t in slos.iter().filter_map(Slo::threshold) {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn check(i: usize, f: &FileSlo) -> Result<Slo, ConfigError> {
    let anon = format!("slo[{i}]");
    let name = f
        .name
        .clone()
        .ok_or_else(|| bad(&anon, "name", "missing"))?;
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(bad(
            &anon,
            "name",
            format!("{name:?}: expected 1 to 63 of [a-z0-9_-]"),
        ));
    }
    let who = format!("slo.{name}");
    let req = |v: &Option<String>, key: &str| -> Result<String, ConfigError> {
        v.clone().ok_or_else(|| bad(&who, key, "missing"))
    };
    let sli_s = req(&f.sli, "sli")?;
    let metric_s = req(&f.metric, "metric")?;
    let metric = Metric::all()
        .find(|m| m.spec().name == metric_s)
        .ok_or_else(|| {
            bad(
                &who,
                "metric",
                format!("{metric_s:?} is not an exported metric"),
            )
        })?;
    let errors = f.errors.clone().unwrap_or_default();
    let sli = match sli_s.as_str() {
        "latency" => {
            if metric.spec().instrument != Instrument::Histogram {
                let hs: Vec<_> = Metric::HISTOGRAMS.iter().map(|m| m.spec().name).collect();
                return Err(bad(
                    &who,
                    "metric",
                    format!(
                        "{metric_s} is not a duration histogram; a latency SLI takes one of {}",
                        hs.join(", ")
                    ),
                ));
            }
            if f.errors.is_some() {
                return Err(bad(&who, "errors", "only for an availability SLI"));
            }
            let raw = req(&f.threshold, "threshold")?;
            let threshold = humantime::parse_duration(&raw)
                .map_err(|e| bad(&who, "threshold", format!("{raw:?}: {e}")))?;
            if !(THRESHOLD_MIN..=THRESHOLD_MAX).contains(&threshold) {
                return Err(bad(
                    &who,
                    "threshold",
                    format!("{raw:?}: expected 1us to 1h"),
                ));
            }
            Sli::Latency { metric, threshold }
        }
        "availability" => {
            if f.threshold.is_some() {
                return Err(bad(&who, "threshold", "only for a latency SLI"));
            }
            let a = match metric {
                Metric::SyscallErrors => Availability::Syscalls { errors },
                Metric::TcpConnectErrors => Availability::Connects { errors },
                _ => {
                    return Err(bad(
                        &who,
                        "metric",
                        format!(
                            "{metric_s}: an availability SLI takes syscall.errors (calls vs \
                             failed calls) or tcp.connect.errors (connects vs failed connects)"
                        ),
                    ))
                }
            };
            for e in a.errors() {
                if e.is_empty() || e.len() > 32 || !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(bad(&who, "errors", format!("{e:?} is not an error.type")));
                }
            }
            Sli::Availability(a)
        }
        other => {
            return Err(bad(
                &who,
                "sli",
                format!("{other:?}: expected latency or availability"),
            ))
        }
    };
    let objective = f
        .objective
        .ok_or_else(|| bad(&who, "objective", "missing"))?;
    if !(objective > 0.0 && objective < 1.0) {
        return Err(bad(
            &who,
            "objective",
            format!("{objective}: expected 0 < objective < 1 (0.99 is 99 %)"),
        ));
    }
    let raw = req(&f.window, "window")?;
    let window = humantime::parse_duration(&raw)
        .map_err(|e| bad(&who, "window", format!("{raw:?}: {e}")))?;
    if !(WINDOW_MIN..=WINDOW_MAX).contains(&window) || window.as_secs() % 3600 != 0 {
        return Err(bad(
            &who,
            "window",
            format!("{raw:?}: expected whole hours from 1d to 366d (28d is usual)"),
        ));
    }
    let min_events = f.min_events.unwrap_or(DEFAULT_MIN_EVENTS);
    if min_events > 1_000_000_000 {
        return Err(bad(&who, "min_events", "expected at most 1000000000"));
    }
    let mut probe = Slo {
        name,
        sli,
        objective,
        window,
        matchers: Vec::new(),
        min_events,
    };
    let metrics = probe.metrics();
    for (key, value) in &f.matchers {
        let mkey = format!("match.\"{key}\"");
        let attr = metrics[0]
            .spec()
            .attrs
            .iter()
            .map(|(a, _)| *a)
            .find(|a| a.key() == key && *a != Attr::ErrorType)
            .filter(|a| metrics.iter().all(|m| m.has(*a)))
            .ok_or_else(|| {
                let keys: Vec<_> = metrics[0]
                    .spec()
                    .attrs
                    .iter()
                    .map(|(a, _)| *a)
                    .filter(|a| *a != Attr::ErrorType && metrics.iter().all(|m| m.has(*a)))
                    .map(Attr::key)
                    .collect();
                bad(
                    &who,
                    &mkey,
                    format!(
                        "{} points carry no such attribute; match on one of {}",
                        metrics[0].spec().name,
                        keys.join(", ")
                    ),
                )
            })?;
        let v = match (attr, value) {
            (Attr::ServerPort, toml::Value::Integer(n)) if (1..=65535).contains(n) => n.to_string(),
            (Attr::ServerPort, toml::Value::String(s)) if s.parse::<u16>().is_ok_and(|p| p > 0) => {
                s.clone()
            }
            (Attr::ServerPort, v) => {
                return Err(bad(&who, &mkey, format!("{v}: expected a port, 1 to 65535")))
            }
            (_, toml::Value::String(s)) if !s.is_empty() && s.len() <= 1024 => s.clone(),
            (_, v) => return Err(bad(&who, &mkey, format!("{v}: expected a non-empty string"))),
        };
        probe.matchers.push((attr, v));
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Slo>, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            slo: Vec<FileSlo>,
        }
        let f: F = toml::from_str(text).unwrap();
        resolve(&f.slo)
    }

    const ISSUE: &str = r#"
[[slo]]
name = "checkout-latency"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "100ms"
objective = 0.99
window = "28d"
[slo.match]
"server.port" = 8080
"k8s.namespace.name" = "shop"
"#;

    #[test]
    fn the_issue_example_parses() {
        let s = parse(ISSUE).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].sli,
            Sli::Latency {
                metric: Metric::TcpServerRequestDuration,
                threshold: Duration::from_millis(100)
            }
        );
        assert_eq!(s[0].window, Duration::from_secs(28 * 86400));
        assert_eq!(
            s[0].matchers,
            vec![
                (Attr::K8sNamespace, "shop".to_owned()),
                (Attr::ServerPort, "8080".to_owned())
            ]
        );
        assert_eq!(s[0].min_events, DEFAULT_MIN_EVENTS);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn problems_name_the_slo_and_the_key() {
        let e = err(&ISSUE.replace("0.99", "1.0"));
        assert!(e.contains("slo.checkout-latency.objective"), "{e}");
        let e = err(&ISSUE.replace("100ms", "soon"));
        assert!(e.contains("slo.checkout-latency.threshold"), "{e}");
        let e = err(&ISSUE.replace("\"k8s.namespace.name\"", "\"pod\""));
        assert!(e.contains("slo.checkout-latency.match.\"pod\""), "{e}");
        let e = err(&ISSUE.replace("8080", "0"));
        assert!(e.contains("match.\"server.port\""), "{e}");
        let e = err(&ISSUE.replace("28d", "1h"));
        assert!(e.contains("slo.checkout-latency.window"), "{e}");
        let e = err(&ISSUE.replace("tcp.server.request.duration", "tcp.resets"));
        assert!(e.contains("slo.checkout-latency.metric"), "{e}");
        let e = err(&ISSUE.replace("checkout-latency", "Checkout"));
        assert!(e.contains("slo[0].name"), "{e}");
        let e = err(&format!("{ISSUE}{ISSUE}"));
        assert!(e.contains("defined twice"), "{e}");
        let e = err(&ISSUE.replace("\"latency\"", "\"availability\""));
        assert!(e.contains("slo.checkout-latency.threshold"), "{e}");
    }

    #[test]
    fn availability_pairs() {
        let s = parse(
            r#"
[[slo]]
name = "db-connects"
sli = "availability"
metric = "tcp.connect.errors"
objective = 0.999
window = "7d"
errors = ["ECONNREFUSED"]
[slo.match]
"server.port" = 5432
"#,
        )
        .unwrap();
        assert_eq!(
            s[0].sli,
            Sli::Availability(Availability::Connects {
                errors: vec!["ECONNREFUSED".into()]
            })
        );
        // error.type is the SLI's own business, not a selector.
        let e = err(r#"
[[slo]]
name = "calls"
sli = "availability"
metric = "syscall.errors"
objective = 0.99
window = "1d"
[slo.match]
"error.type" = "EIO"
"#);
        assert!(e.contains("slo.calls.match.\"error.type\""), "{e}");
    }

    #[test]
    fn at_most_the_kernels_thresholds() {
        let mut text = String::new();
        for i in 0..=crate::slo::MAX_THRESHOLDS {
            text += &ISSUE
                .replace("checkout-latency", &format!("s{i}"))
                .replace("100ms", &format!("{}ms", 10 + i));
        }
        let e = err(&text);
        assert!(e.contains(&format!("slo.s{}.threshold", crate::slo::MAX_THRESHOLDS)), "{e}");
        // Shared thresholds do not count twice.
        let mut text = String::new();
        for i in 0..=crate::slo::MAX_THRESHOLDS {
            text += &ISSUE.replace("checkout-latency", &format!("s{i}"));
        }
        assert_eq!(parse(&text).unwrap().len(), crate::slo::MAX_THRESHOLDS + 1);
    }
}

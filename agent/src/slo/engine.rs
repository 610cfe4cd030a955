//! SLOs evaluated at the edge, once per interval, from the series the
//! aggregator just ingested: good and bad events per SLO (exact: latency
//! uses the kernel's split counters, see `HistValue::at_or_below`), their
//! history, burn rates over the `WINDOWS`, the budget left over the SLO's
//! window, and when a page-level burn starts or stops.
//!
//! What is counted: the interval's delta of every series of the SLO's
//! metrics whose attributes equal every matcher. Events that the series
//! limit folded into the overflow series have no attributes left, so only
//! SLOs without matchers count them (`syscope.series.overflow` shows when
//! folding happens).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric as OtlpMetric,
        NumberDataPoint, Sum,
    },
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    burn_rate, definition::thresholds, history::History, Availability, BurnAlert, Severity, Sli,
    Slo, SloInstrument, SloMetric, ALERTS, WINDOWS,
};
use crate::{
    aggregate::{otlp::kv_str, Aggregator, Attrs},
    config::Temporality,
};

/// The state of one SLO after the last interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// Burn rate per window of `WINDOWS`.
    pub burn: [f64; WINDOWS.len()],
    /// Events (good + bad) per window of `WINDOWS`.
    pub events: [u64; WINDOWS.len()],
    /// Error budget left over the SLO's window (1 - its burn rate).
    pub remaining: f64,
    /// Seconds of the past the history covers.
    pub covered: u64,
    /// The page-level alerts whose condition holds now.
    pub paging: Vec<BurnAlert>,
}

/// One SLO and what has been counted for it.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub def: Slo,
    /// Latency: the kernel's split slot of the threshold and its bucket.
    split: Option<(usize, usize)>,
    /// Since the agent started.
    pub good: u64,
    pub bad: u64,
    /// This interval.
    pub delta: (u64, u64),
    pub history: History,
    pub status: Status,
}

/// A page-level burn that started or stopped in this interval.
#[derive(Clone, Debug)]
pub struct BurnChange {
    /// Index into [`Engine::slos`].
    pub slo: usize,
    pub started: bool,
    /// Not a change: the burn goes on, and this is its diagnosis again once
    /// the workloads' syscalls have been measured for a while (on demand,
    /// they are measured only from the burn's start).
    pub detail: bool,
    pub status: Status,
}

/// Where the history is written.
const STATE_FILE: &str = "slo-history.json";
const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    slos: BTreeMap<String, SavedSlo>,
}

#[derive(Serialize, Deserialize)]
struct SavedSlo {
    /// What the events mean: a history of another definition is not reused.
    fingerprint: String,
    history: History,
}

pub struct Engine {
    slos: Vec<Tracked>,
    /// `error.type`s that are not failures (the table's `not_failures`):
    /// left out of an availability SLO that names no errors.
    not_failures: Vec<String>,
    state: Option<PathBuf>,
    /// Unix minute of the last save.
    saved_minute: u64,
    start: SystemTime,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What makes two definitions count the same events.
fn fingerprint(s: &Slo) -> String {
    format!("{:?}|{:?}|{}", s.sli, s.matchers, s.window.as_secs())
}

impl Engine {
    /// The engine for `slos`, with the history found in `state_dir` (which
    /// is created if missing: an unusable directory is an error naming it).
    pub fn new(
        slos: &[Slo],
        not_failures: &[String],
        state_dir: Option<&Path>,
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        let state = match state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("SLO state directory {}: {e}", dir.display()))?;
                Some(dir.join(STATE_FILE))
            }
            None => None,
        };
        let mut saved = state.as_deref().map(load).unwrap_or_default();
        let slots = thresholds(slos);
        let t = unix(now);
        let tracked = slos
            .iter()
            .map(|def| {
                let split = def.threshold().and_then(|th| {
                    let slot = slots.iter().position(|x| *x == th)?;
                    let ns = u64::try_from(th.as_nanos()).ok()?;
                    match syscope_common::bucket_index(ns) {
                        syscope_common::Bucket::Index(i) => Some((slot, i)),
                        syscope_common::Bucket::Zero => None,
                    }
                });
                let window = def.window.as_secs();
                let history = match saved.remove(&def.name) {
                    Some(s) if s.fingerprint == fingerprint(def) && s.history.fits(window) => {
                        let mut h = s.history;
                        h.trim(t);
                        h
                    }
                    Some(_) => {
                        warn!(slo = %def.name, "the SLO's definition changed: its saved history is not reused");
                        History::new(t, window)
                    }
                    None => History::new(t, window),
                };
                Tracked {
                    def: def.clone(),
                    split,
                    good: 0,
                    bad: 0,
                    delta: (0, 0),
                    history,
                    status: Status {
                        remaining: 1.0,
                        ..Status::default()
                    },
                }
            })
            .collect();
        Ok(Engine {
            slos: tracked,
            not_failures: not_failures.to_vec(),
            state,
            saved_minute: t / 60,
            start: now,
        })
    }

    pub fn slos(&self) -> &[Tracked] {
        &self.slos
    }

    pub fn is_empty(&self) -> bool {
        self.slos.is_empty()
    }

    /// Count this interval, update burn rates and budgets; returns the
    /// page-level burns that started or stopped, and whether a due save of
    /// the history failed.
    pub fn observe(&mut self, agg: &Aggregator, now: SystemTime) -> (Vec<BurnChange>, bool) {
        let t = unix(now);
        let mut changes = Vec::new();
        for (i, s) in self.slos.iter_mut().enumerate() {
            let (good, bad) = count(s, agg, &self.not_failures);
            s.delta = (good, bad);
            s.good += good;
            s.bad += bad;
            s.history.add(t, good, bad);
            let was = !s.status.paging.is_empty();
            s.status = status(&s.def, &s.history, t);
            let is = !s.status.paging.is_empty();
            if was != is {
                changes.push(BurnChange {
                    slo: i,
                    started: is,
                    detail: false,
                    status: s.status.clone(),
                });
            }
        }
        let mut failed = false;
        if t / 60 != self.saved_minute {
            self.saved_minute = t / 60;
            failed = !self.save();
        }
        (changes, failed)
    }

    /// Write the history (crash-safe: a temporary file, fsync, rename).
    /// A failure is logged and returned, never fatal: the SLOs go on in
    /// memory.
    pub fn save(&self) -> bool {
        let Some(path) = &self.state else {
            return true;
        };
        let file = StateFile {
            version: STATE_VERSION,
            slos: self
                .slos
                .iter()
                .map(|s| {
                    (
                        s.def.name.clone(),
                        SavedSlo {
                            fingerprint: fingerprint(&s.def),
                            history: s.history.clone(),
                        },
                    )
                })
                .collect(),
        };
        match write_atomically(path, &file) {
            Ok(()) => true,
            Err(e) => {
                warn!(path = %path.display(), "saving the SLO history failed: {e}");
                false
            }
        }
    }

    /// The SLO metrics of this interval. `t`: the counter's temporality.
    pub fn metrics(&self, t: Temporality, end: SystemTime, last: SystemTime) -> Vec<OtlpMetric> {
        if self.slos.is_empty() {
            return Vec::new();
        }
        let time = crate::aggregate::otlp::nanos(end);
        let (start, temporality) = match t {
            Temporality::Cumulative => (
                crate::aggregate::otlp::nanos(self.start),
                AggregationTemporality::Cumulative,
            ),
            Temporality::Delta => (
                crate::aggregate::otlp::nanos(last),
                AggregationTemporality::Delta,
            ),
        };
        let name = |s: &Tracked| kv_str(super::ATTR_NAME, s.def.name.as_str());
        let point = |attrs: Vec<KeyValue>, v: number_data_point::Value| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(v),
            ..Default::default()
        };
        let f = number_data_point::Value::AsDouble;
        let mut events = Vec::new();
        let (mut objective, mut burn, mut remaining, mut history) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in &self.slos {
            let (good, bad) = match t {
                Temporality::Cumulative => (s.good, s.bad),
                Temporality::Delta => s.delta,
            };
            for (outcome, n) in [(super::GOOD, good), (super::BAD, bad)] {
                events.push(point(
                    vec![name(s), kv_str(super::ATTR_OUTCOME, outcome)],
                    number_data_point::Value::AsInt(n as i64),
                ));
            }
            objective.push(point(vec![name(s)], f(s.def.objective)));
            for (w, b) in WINDOWS.iter().zip(s.status.burn) {
                burn.push(point(
                    vec![name(s), kv_str(super::ATTR_WINDOW, w.label)],
                    f(b),
                ));
            }
            remaining.push(point(vec![name(s)], f(s.status.remaining)));
            history.push(point(vec![name(s)], f(s.status.covered as f64)));
        }
        let sum = |m: &SloMetric, data_points| {
            otlp_metric(
                m,
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: temporality as i32,
                    is_monotonic: true,
                }),
            )
        };
        let gauge =
            |m: &SloMetric, data_points| otlp_metric(m, metric::Data::Gauge(Gauge { data_points }));
        let mut out = Vec::new();
        for (m, points) in super::METRICS
            .iter()
            .zip([events, objective, burn, remaining, history])
        {
            out.push(match m.instrument {
                SloInstrument::Counter => sum(m, points),
                SloInstrument::Gauge => gauge(m, points),
            });
        }
        out
    }
}

fn otlp_metric(m: &SloMetric, data: metric::Data) -> OtlpMetric {
    OtlpMetric {
        name: m.name.into(),
        description: m.description.into(),
        unit: m.unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether a series' attributes satisfy every matcher.
pub fn matches(def: &Slo, a: &Attrs) -> bool {
    crate::aggregate::matches_all(&def.matchers, a)
}

/// This interval's good and bad events of `s`.
fn count(s: &Tracked, agg: &Aggregator, not_failures: &[String]) -> (u64, u64) {
    let def = &s.def;
    // The overflow series has no attributes: only a match-all SLO takes it.
    let overflow_too = def.matchers.is_empty();
    match &def.sli {
        Sli::Latency { metric, .. } => {
            let Some((slot, bucket)) = s.split else {
                return (0, 0);
            };
            let series = agg.hist(*metric);
            let mut good = 0;
            let mut total = 0;
            let live = series
                .series
                .iter()
                .filter(|(a, _)| matches(def, a))
                .map(|(_, s)| s);
            for d in live
                .chain(series.overflow.iter().filter(|_| overflow_too))
                .filter_map(|s| s.delta.as_ref())
            {
                total += d.count();
                good += d.at_or_below(slot, bucket);
            }
            (good, total.saturating_sub(good))
        }
        Sli::Availability(a) => {
            let events: u64 = {
                let series = agg.hist(a.events());
                let live = series
                    .series
                    .iter()
                    .filter(|(x, _)| matches(def, x))
                    .map(|(_, s)| s);
                live.chain(series.overflow.iter().filter(|_| overflow_too))
                    .filter_map(|s| s.delta.as_ref())
                    .map(|d| d.count())
                    .sum()
            };
            let named = a.errors();
            let bad_error = |e: Option<&str>| match e {
                Some(e) if !named.is_empty() => named.iter().any(|n| n == e),
                Some(e) => !not_failures.iter().any(|n| n == e),
                None => false,
            };
            let errors: u64 = agg
                .counter(a.errors_metric())
                .series
                .iter()
                .filter(|(x, _)| matches(def, x) && bad_error(x.error.as_deref()))
                .filter_map(|(_, s)| s.delta)
                .sum();
            match a {
                // Every call is in the duration histogram; failed ones
                // also in the errors.
                Availability::Syscalls { .. } => (events.saturating_sub(errors), errors),
                // Only established connects have a duration.
                Availability::Connects { .. } => (events, errors),
            }
        }
    }
}

/// Burn rates, budget and alert conditions of an SLO at `now`.
fn status(def: &Slo, h: &History, now: u64) -> Status {
    let mut st = Status::default();
    for (i, w) in WINDOWS.iter().enumerate() {
        let (g, b) = h.sum(now, w.length.as_secs());
        st.burn[i] = burn_rate(g, b, def.objective);
        st.events[i] = g + b;
    }
    let (g, b) = h.sum(now, def.window.as_secs());
    st.remaining = 1.0 - burn_rate(g, b, def.objective);
    st.covered = h.covered(now).min(def.window.as_secs());
    let at = |w: super::Window| WINDOWS.iter().position(|x| *x == w).unwrap_or(0);
    st.paging = ALERTS
        .iter()
        .filter(|a| a.severity == Severity::Page)
        .filter(|a| {
            let (l, sh) = (at(a.long), at(a.short));
            st.burn[l] > a.factor && st.burn[sh] > a.factor && st.events[l] >= def.min_events
        })
        .copied()
        .collect();
    st
}

fn load(path: &Path) -> BTreeMap<String, SavedSlo> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            warn!(path = %path.display(), "reading the SLO history: {e}; starting afresh");
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<StateFile>(&text) {
        Ok(f) if f.version == STATE_VERSION => f.slos,
        Ok(f) => {
            warn!(path = %path.display(), version = f.version, "SLO history of another version; starting afresh");
            BTreeMap::new()
        }
        Err(e) => {
            warn!(path = %path.display(), "SLO history unreadable ({e}); starting afresh");
            BTreeMap::new()
        }
    }
}

fn write_atomically(path: &Path, file: &StateFile) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How long a history file may take on disk, at most, for one SLO: the
/// rings' bounds at ~60 bytes of JSON per bucket.
pub const MAX_STATE_BYTES_PER_SLO: u64 = (4321 + 8785) * 60;

/// A duration as the table and the events print it.
pub fn fmt_window(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::metrics::{Attr, Metric};
    use crate::collect::HistValue;
    use crate::slo::definition::{resolve, FileSlo};

    fn slo(text: &str) -> Vec<Slo> {
        #[derive(Deserialize)]
        struct F {
            slo: Vec<FileSlo>,
        }
        resolve(&toml::from_str::<F>(text).unwrap().slo).unwrap()
    }

    const LATENCY: &str = r#"
[[slo]]
name = "api"
sli = "latency"
metric = "tcp.server.request.duration"
threshold = "20ms"
objective = 0.99
window = "28d"
[slo.match]
"server.port" = 8080
"#;

    /// A histogram delta of these durations, with the split counters the
    /// kernel would have kept for `thresholds`.
    fn hist(durations_ns: &[u64], thresholds: &[Duration]) -> HistValue {
        let (ns, idx) = crate::probes::split_globals(thresholds);
        let mut h = HistValue::default();
        for &d in durations_ns {
            h.sum_ns += d;
            match syscope_common::bucket_index(d) {
                syscope_common::Bucket::Zero => h.zero += 1,
                syscope_common::Bucket::Index(i) => {
                    h.buckets[i] += 1;
                    for k in 0..ns.len() {
                        if idx[k] == i as u32 && d <= ns[k] {
                            h.split[k] += 1;
                        }
                    }
                }
            }
        }
        h
    }

    fn attrs(port: u16) -> Attrs {
        Attrs {
            exe: Some("server".into()),
            port: Some(port),
            ..Attrs::default()
        }
    }

    #[test]
    fn the_issue_mix_is_20_good_10_bad_and_burns_33() {
        let defs = slo(LATENCY);
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &[], None, now).unwrap();
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        let mut d = vec![5_000_000; 20];
        d.extend([50_000_000; 10]);
        let th = thresholds(&defs);
        agg.record_for_test(
            Metric::TcpServerRequestDuration,
            attrs(8080),
            Some(hist(&d, &th)),
            None,
            now,
        );
        // Another port is not this SLO's.
        agg.record_for_test(
            Metric::TcpServerRequestDuration,
            attrs(9090),
            Some(hist(&[90_000_000; 7], &th)),
            None,
            now,
        );
        let (changes, _) = e.observe(&agg, now);
        let s = &e.slos()[0];
        assert_eq!((s.good, s.bad), (20, 10));
        assert!((s.status.burn[0] - 100.0 / 3.0).abs() < 1e-9);
        // 10 of 30 bad against a 1 % budget: 32.3 budgets overspent.
        assert!((s.status.remaining - (1.0 - 100.0 / 3.0)).abs() < 1e-9);
        // Both page alerts' windows burn above their factors, but 30 events
        // is the default min_events: it pages.
        assert_eq!(changes.len(), 1);
        assert!(changes[0].started);
    }

    #[test]
    fn thresholds_inside_a_bucket_are_exact() {
        // The 20 ms threshold's bucket (scale 3: about 9 % wide) holds
        // durations on both sides of it.
        let defs = slo(LATENCY);
        let th = thresholds(&defs);
        let b = syscope_common::bucket_index(20_000_000);
        let (mut lo, mut hi) = (20_000_000u64, 20_000_000u64);
        while syscope_common::bucket_index(lo - 1000) == b {
            lo -= 1000;
        }
        while syscope_common::bucket_index(hi + 1000) == b {
            hi += 1000;
        }
        assert!(lo < 19_900_000 && hi > 20_100_000, "{lo} {hi}");
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &[], None, now).unwrap();
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        let d = [lo, 20_000_000, 20_000_001, hi];
        agg.record_for_test(
            Metric::TcpServerRequestDuration,
            attrs(8080),
            Some(hist(&d, &th)),
            None,
            now,
        );
        e.observe(&agg, now);
        assert_eq!((e.slos()[0].good, e.slos()[0].bad), (2, 2));
    }

    #[test]
    fn zero_traffic_burns_nothing_and_no_nan() {
        let defs = slo(LATENCY);
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &[], None, now).unwrap();
        let agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        assert!(e.observe(&agg, now).0.is_empty());
        let st = &e.slos()[0].status;
        assert!(st.burn.iter().all(|b| *b == 0.0));
        assert_eq!(st.remaining, 1.0);
        for m in e.metrics(Temporality::Cumulative, now, now) {
            let Some(metric::Data::Gauge(g)) = m.data else {
                continue;
            };
            for p in g.data_points {
                let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                    panic!()
                };
                assert!(v.is_finite(), "{} {v}", m.name);
            }
        }
    }

    #[test]
    fn low_traffic_does_not_page() {
        let defs = slo(&LATENCY.replace("window", "min_events = 100\nwindow"));
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &[], None, now).unwrap();
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        let th = thresholds(&defs);
        agg.record_for_test(
            Metric::TcpServerRequestDuration,
            attrs(8080),
            Some(hist(&[90_000_000; 5], &th)),
            None,
            now,
        );
        assert!(e.observe(&agg, now).0.is_empty());
        assert_eq!(e.slos()[0].bad, 5);
    }

    #[test]
    fn syscall_availability_counts_selected_errors() {
        let defs = slo(r#"
[[slo]]
name = "writes"
sli = "availability"
metric = "syscall.errors"
objective = 0.9
window = "1d"
[slo.match]
"process.executable.name" = "batch"
"#);
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &["EAGAIN".into()], None, now).unwrap();
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        let a = Attrs {
            exe: Some("batch".into()),
            syscall: Some("write".into()),
            ..Attrs::default()
        };
        agg.record_for_test(
            Metric::SyscallDuration,
            a.clone(),
            Some(hist(&[1000; 10], &[])),
            None,
            now,
        );
        for (err, n) in [("EIO", 3u64), ("EAGAIN", 2)] {
            let mut x = a.clone();
            x.error = Some(err.into());
            agg.record_for_test(Metric::SyscallErrors, x, None, Some(n), now);
        }
        e.observe(&agg, now);
        assert_eq!((e.slos()[0].good, e.slos()[0].bad), (7, 3));
        assert_eq!(defs[0].matchers[0].0, Attr::ExecutableName);
    }

    #[test]
    fn history_survives_a_restart_in_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("syscope-slo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let defs = slo(LATENCY);
        let th = thresholds(&defs);
        let now = SystemTime::now();
        let mut e = Engine::new(&defs, &[], Some(&dir), now).unwrap();
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 5);
        agg.record_for_test(
            Metric::TcpServerRequestDuration,
            attrs(8080),
            Some(hist(&[50_000_000; 4], &th)),
            None,
            now,
        );
        e.observe(&agg, now);
        e.save();
        let e2 = Engine::new(&defs, &[], Some(&dir), now + Duration::from_secs(30)).unwrap();
        assert_eq!(e2.slos()[0].history.sum(unix(now) + 30, 3600), (0, 4));
        // Another threshold is another SLO: its history starts afresh.
        let other = slo(&LATENCY.replace("20ms", "30ms"));
        let e3 = Engine::new(&other, &[], Some(&dir), now).unwrap();
        assert_eq!(e3.slos()[0].history.sum(unix(now), 3600), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The live terminal view, when no OTLP endpoint is configured: the busiest
//! workload x syscall pairs of the last interval, computed from the same
//! series that would be exported. A workload shows under its best name
//! (pod/container, container name, systemd unit, else the process); rows
//! can be filtered by any exported attribute and sorted by rate,
//! percentile or error ratio.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use crate::aggregate::{
    metrics::IDENTITY, quantile::quantile_s, Aggregator, Attr, Attrs, HistValue, Metric,
};
use crate::enrich::identity::Identity;

/// What the table's error ratio leaves out by default: errnos that report
/// "not yet" or "try again" rather than a failed call (a non-blocking
/// `connect` answers EINPROGRESS, a non-blocking read with no data EAGAIN,
/// a call a signal interrupted EINTR). `syscall.errors` still counts them.
pub const DEFAULT_NOT_FAILURES: [&str; 3] = ["EAGAIN", "EINPROGRESS", "EINTR"];

/// The order of the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    /// Calls per second (default).
    #[default]
    Rate,
    P50,
    P99,
    P999,
    /// Error ratio (without the errnos that are not failures).
    Errors,
}

impl SortBy {
    pub const NAMES: [(&'static str, SortBy); 5] = [
        ("rate", SortBy::Rate),
        ("p50", SortBy::P50),
        ("p99", SortBy::P99),
        ("p99.9", SortBy::P999),
        ("errors", SortBy::Errors),
    ];

    pub fn parse(s: &str) -> Option<SortBy> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }
}

/// How the table selects and orders its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub rows: usize,
    /// Only series whose attribute `key` equals the value, all of them.
    pub filter: Vec<(String, String)>,
    pub sort: SortBy,
    /// errno names the error ratio does not count as failures.
    pub not_failures: Vec<String>,
}

impl Default for View {
    fn default() -> Self {
        View {
            rows: 20,
            filter: Vec::new(),
            sort: SortBy::Rate,
            not_failures: DEFAULT_NOT_FAILURES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The value of attribute `key` on a series, as exported (only the keys
/// `--filter` accepts).
fn attr_value(a: &Attrs, key: &str) -> Option<String> {
    let attr = [Attr::SyscallName, Attr::ExecutableName, Attr::ErrorType]
        .into_iter()
        .chain(IDENTITY)
        .find(|x| x.key() == key)?;
    a.value(attr).map(|v| v.into_owned())
}

/// The attribute keys `--filter` accepts.
pub fn filter_keys() -> impl Iterator<Item = &'static str> {
    [Attr::SyscallName, Attr::ExecutableName]
        .into_iter()
        .chain(IDENTITY)
        .map(Attr::key)
}

fn selected(view: &View, a: &Attrs) -> bool {
    view.filter
        .iter()
        .all(|(k, v)| attr_value(a, k).as_deref() == Some(v.as_str()))
}

/// One row: a workload x syscall over the last interval.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub syscall: Arc<str>,
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub error_ratio: f64,
}

type RowKey = (Option<Arc<str>>, Option<Arc<str>>, Option<Arc<str>>);

fn row_key(a: &Attrs) -> RowKey {
    let c = a.identity.as_ref().and_then(|i| i.container_id.clone());
    (a.exe.clone(), c, a.syscall.clone())
}

/// The first `view.rows` rows of the interval that just ended, in
/// `view.sort` order (busiest first by default).
pub fn rows(agg: &Aggregator, view: &View) -> Vec<Row> {
    let secs = interval_secs(agg);
    let mut errors: HashMap<(RowKey, Option<Arc<Identity>>), u64> = HashMap::new();
    for (a, s) in &agg.counter(Metric::SyscallErrors).series {
        let failure = a
            .error
            .as_deref()
            .is_none_or(|e| !view.not_failures.iter().any(|n| n == e));
        if let (Some(d), true) = (s.delta, failure) {
            *errors.entry((row_key(a), a.identity.clone())).or_default() += d;
        }
    }
    let mut rows: Vec<(u64, Row)> = agg
        .hist(Metric::SyscallDuration)
        .series
        .iter()
        .filter(|(a, _)| selected(view, a))
        .filter_map(|(a, s)| {
            let d: &HistValue = s.delta.as_ref()?;
            let n = d.count();
            if n == 0 {
                return None;
            }
            let errs = errors
                .get(&(row_key(a), a.identity.clone()))
                .copied()
                .unwrap_or(0);
            Some((
                n,
                Row {
                    workload: workload(a),
                    syscall: a.syscall.clone().unwrap_or_else(|| "?".into()),
                    rate: n as f64 / secs,
                    p50: quantile_s(d, 0.5).unwrap_or(0.0),
                    p99: quantile_s(d, 0.99).unwrap_or(0.0),
                    p999: quantile_s(d, 0.999).unwrap_or(0.0),
                    error_ratio: errs as f64 / n as f64,
                },
            ))
        })
        .collect();
    let key = |r: &(u64, Row)| match view.sort {
        SortBy::Rate => r.0 as f64,
        SortBy::P50 => r.1.p50,
        SortBy::P99 => r.1.p99,
        SortBy::P999 => r.1.p999,
        SortBy::Errors => r.1.error_ratio,
    };
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| b.0.cmp(&a.0))
            .then_with(|| a.1.workload.cmp(&b.1.workload))
    });
    rows.into_iter().take(view.rows).map(|(_, r)| r).collect()
}

/// One row of the TCP section: a workload's server port, or a peer it
/// connects to, over the last interval.
#[derive(Debug, Clone)]
pub struct TcpRow {
    pub workload: String,
    /// `server`, `client` (requests) or `connect`.
    pub kind: &'static str,
    /// `:port` for servers, `address:port` for peers.
    pub endpoint: String,
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    /// Connect failures (connect rows only).
    pub errors: u64,
}

/// Interval totals of the TCP counters, for the section's header line.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTotals {
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub listen_drops: u64,
}

fn interval_secs(agg: &Aggregator) -> f64 {
    agg.interval_end
        .duration_since(agg.interval_start)
        .unwrap_or(Duration::from_secs(1))
        .as_secs_f64()
        .max(1e-3)
}

/// The best name of a series' workload: pod/container, container name,
/// unit (each with the process when it says more), else the process.
fn workload(a: &Attrs) -> String {
    let exe = a.exe.as_deref().unwrap_or("?");
    match a.identity.as_deref().and_then(Identity::display) {
        Some(who) => format!("{who} ({exe})"),
        None => exe.to_string(),
    }
}

fn tcp_endpoint(a: &Attrs) -> String {
    let port = a.port.map_or("?".to_string(), |p| p.to_string());
    match &a.address {
        Some(addr) if addr.contains(':') => format!("[{addr}]:{port}"),
        Some(addr) => format!("{addr}:{port}"),
        None => format!(":{port}"),
    }
}

/// The `view.rows` busiest ports and peers of the interval that just ended.
pub fn tcp_rows(agg: &Aggregator, view: &View) -> (Vec<TcpRow>, TcpTotals) {
    let limit = view.rows;
    let secs = interval_secs(agg);
    let mut errors: HashMap<(String, String), u64> = HashMap::new();
    for (a, s) in &agg.counter(Metric::TcpConnectErrors).series {
        if !selected(view, a) {
            continue;
        }
        if let Some(d) = s.delta {
            *errors.entry((workload(a), tcp_endpoint(a))).or_default() += d;
        }
    }
    let mut rows: Vec<(u64, TcpRow)> = vec![];
    for (metric, label) in [
        (Metric::TcpServerRequestDuration, "server"),
        (Metric::TcpClientRequestDuration, "client"),
        (Metric::TcpConnectDuration, "connect"),
    ] {
        for (a, s) in &agg.hist(metric).series {
            let Some(d) = s.delta.as_ref() else { continue };
            if !selected(view, a) {
                continue;
            }
            let n = d.count();
            let (workload, endpoint) = (workload(a), tcp_endpoint(a));
            let errs = if metric == Metric::TcpConnectDuration {
                errors
                    .remove(&(workload.clone(), endpoint.clone()))
                    .unwrap_or(0)
            } else {
                0
            };
            rows.push((
                n + errs,
                TcpRow {
                    workload,
                    kind: label,
                    endpoint,
                    rate: n as f64 / secs,
                    p50: quantile_s(d, 0.5).unwrap_or(0.0),
                    p99: quantile_s(d, 0.99).unwrap_or(0.0),
                    errors: errs,
                },
            ));
        }
    }
    // Peers that only failed have no connect histogram: show them too.
    for ((workload, endpoint), errs) in errors {
        rows.push((
            errs,
            TcpRow {
                workload,
                kind: "connect",
                endpoint,
                rate: 0.0,
                p50: 0.0,
                p99: 0.0,
                errors: errs,
            },
        ));
    }
    rows.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.workload.cmp(&b.1.workload))
            .then_with(|| a.1.endpoint.cmp(&b.1.endpoint))
    });
    // Interval totals, optionally of one reset direction (the overflow
    // series, which has no direction, counts in the plain totals only).
    let total = |m: Metric, direction: Option<&str>| -> u64 {
        let c = agg.counter(m);
        let series = c
            .series
            .iter()
            .filter(|(a, _)| direction.is_none() || a.direction == direction)
            .map(|(_, s)| s);
        let overflow = c.overflow.iter().filter(|_| direction.is_none());
        series.chain(overflow).filter_map(|s| s.delta).sum()
    };
    let totals = TcpTotals {
        retransmits: total(Metric::TcpRetransmits, None),
        resets_sent: total(Metric::TcpResets, Some("transmit")),
        resets_received: total(Metric::TcpResets, Some("receive")),
        listen_drops: total(Metric::TcpListenDrops, None),
    };
    let rows = rows.into_iter().take(limit).map(|(_, r)| r).collect();
    (rows, totals)
}

/// Render the TCP section.
pub fn render_tcp(rows: &[TcpRow], t: &TcpTotals) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "TCP: retransmits={} resets(sent={} received={}) listen_drops={}",
        t.retransmits, t.resets_sent, t.resets_received, t.listen_drops
    );
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "(no TCP requests or connects measured in this interval)"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{:<28} {:<8} {:<24} {:>10} {:>9} {:>9} {:>7}",
        "WORKLOAD", "KIND", "PORT/PEER", "RATE/s", "P50", "P99", "ERRORS"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<28} {:<8} {:<24} {:>10.1} {:>9} {:>9} {:>7}",
            truncate(&r.workload, 28),
            r.kind,
            truncate(&r.endpoint, 24),
            r.rate,
            fmt_duration(r.p50),
            fmt_duration(r.p99),
            r.errors
        );
    }
    out
}

/// The SLO section, first in the table: objective, budget left, burn rates
/// and whether a page-level burn is on.
pub fn render_slos(slos: &[crate::slo::engine::Tracked]) -> String {
    use crate::slo::WINDOWS;
    let mut out = String::new();
    if slos.is_empty() {
        return out;
    }
    let _ = write!(
        out,
        "{:<24} {:>8} {:>9} {:>9}",
        "SLO", "OBJ", "BUDGET", "EVENTS"
    );
    for w in WINDOWS {
        let _ = write!(out, " {:>6}", w.label);
    }
    let _ = writeln!(out, "  STATE");
    for s in slos {
        let st = &s.status;
        let _ = write!(
            out,
            "{:<24} {:>7.3}% {:>8.1}% {:>9}",
            truncate(&s.def.name, 24),
            s.def.objective * 100.0,
            st.remaining * 100.0,
            s.good + s.bad
        );
        for b in st.burn {
            let _ = write!(out, " {b:>6.1}");
        }
        let state = match st.paging.first() {
            Some(a) => format!("BURNING (>{}x over {})", a.factor, a.long.label),
            None if st.remaining < 0.0 => "budget spent".to_owned(),
            None => "ok".to_owned(),
        };
        let _ = writeln!(out, "  {state}");
    }
    out
}

/// A duration in seconds, short and human: 812ns, 4.1µs, 20.0ms, 1.20s.
pub fn fmt_duration(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.0}ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// Render the table (with a header line of agent health).
pub fn render(rows: &[Row], header: &str) -> String {
    let mut out = String::new();
    if !header.is_empty() {
        let _ = writeln!(out, "{header}");
    }
    let _ = writeln!(
        out,
        "{:<28} {:<18} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "WORKLOAD", "SYSCALL", "RATE/s", "P50", "P99", "P99.9", "ERR%"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<28} {:<18} {:>10.1} {:>9} {:>9} {:>9} {:>7.2}",
            truncate(&r.workload, 28),
            truncate(&r.syscall, 18),
            r.rate,
            fmt_duration(r.p50),
            fmt_duration(r.p99),
            fmt_duration(r.p999),
            r.error_ratio * 100.0
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no syscalls measured in this interval)");
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_compact() {
        assert_eq!(fmt_duration(812e-9), "812ns");
        assert_eq!(fmt_duration(4.1e-6), "4.1µs");
        assert_eq!(fmt_duration(0.02), "20.0ms");
        assert_eq!(fmt_duration(1.2), "1.20s");
    }

    #[test]
    fn renders_tcp_rows() {
        let r = TcpRow {
            workload: "curl".into(),
            kind: "connect",
            endpoint: "10.0.0.1:443".into(),
            rate: 2.0,
            p50: 1e-3,
            p99: 2e-3,
            errors: 3,
        };
        let t = render_tcp(
            &[r],
            &TcpTotals {
                retransmits: 7,
                ..Default::default()
            },
        );
        assert!(t.contains("retransmits=7"));
        assert!(t.contains("10.0.0.1:443"));
        assert!(t.contains("connect"));
        let a = Attrs {
            address: Some("::1".into()),
            port: Some(80),
            ..Attrs::default()
        };
        assert_eq!(tcp_endpoint(&a), "[::1]:80");
        assert_eq!(workload(&a), "?");
    }

    /// (process, identity, syscall, calls, errors by errno)
    type TestSeries<'a> = (
        &'a str,
        Option<Identity>,
        &'a str,
        u64,
        &'a [(&'a str, u64)],
    );

    fn agg_with(series: &[TestSeries<'_>]) -> Aggregator {
        use crate::config::Temporality;
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 10);
        let start = std::time::SystemTime::now();
        for (exe, id, syscall, calls, errs) in series {
            let a = Attrs {
                syscall: Some((*syscall).into()),
                exe: Some((*exe).into()),
                identity: id.clone().map(Arc::new),
                ..Attrs::default()
            };
            let mut h = HistValue {
                sum_ns: 1000 * calls,
                zero: 0,
                buckets: Box::new([0; syscope_common::hist::NUM_BUCKETS]),
                ..Default::default()
            };
            let syscope_common::Bucket::Index(i) = syscope_common::bucket_index(1000) else {
                unreachable!()
            };
            h.buckets[i] = *calls;
            agg.record_for_test(Metric::SyscallDuration, a.clone(), Some(h), None, start);
            for (errno, n) in *errs {
                let mut e = a.clone();
                e.error = Some((*errno).into());
                agg.record_for_test(Metric::SyscallErrors, e, None, Some(*n), start);
            }
        }
        agg
    }

    #[test]
    fn best_name_filter_sort_and_not_failures() {
        let pod = Identity {
            container_id: Some("a".repeat(64).into()),
            k8s_namespace: Some("shop".into()),
            k8s_pod_name: Some("web-1".into()),
            k8s_container_name: Some("nginx".into()),
            ..Identity::default()
        };
        let unit = Identity {
            systemd_unit: Some("db.service".into()),
            ..Identity::default()
        };
        let agg = agg_with(&[
            (
                "nginx",
                Some(pod),
                "connect",
                10,
                &[("EINPROGRESS", 10), ("ECONNREFUSED", 2)],
            ),
            ("postgres", Some(unit), "read", 100, &[("EAGAIN", 50)]),
            ("cat", None, "openat", 5, &[("ENOENT", 5)]),
        ]);
        let view = View::default();
        let rows = rows(&agg, &view);
        assert_eq!(rows[0].workload, "db.service (postgres)");
        assert_eq!(rows[0].error_ratio, 0.0, "EAGAIN is not a failure");
        let nginx = rows
            .iter()
            .find(|r| r.syscall.as_ref() == "connect")
            .unwrap();
        assert_eq!(nginx.workload, "web-1/nginx (nginx)");
        assert!(
            (nginx.error_ratio - 0.2).abs() < 1e-9,
            "{}",
            nginx.error_ratio
        );
        // Sorted by error ratio: cat (100 %) first.
        let by_err = View {
            sort: SortBy::Errors,
            ..View::default()
        };
        assert_eq!(super::rows(&agg, &by_err)[0].workload, "cat");
        // Filtered to one namespace.
        let shop = View {
            filter: vec![("k8s.namespace.name".into(), "shop".into())],
            ..View::default()
        };
        let r = super::rows(&agg, &shop);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].syscall.as_ref(), "connect");
        // Counting every errno as a failure.
        let all = View {
            not_failures: vec![],
            ..View::default()
        };
        let r = super::rows(&agg, &all);
        assert_eq!(r[0].error_ratio, 0.5);
    }

    /// A peer that only failed to connect shows under `--filter` only if
    /// its workload passes the filter, as every other row.
    #[test]
    fn connect_failures_are_filtered_too() {
        use crate::config::Temporality;
        let mut agg = Aggregator::new(Temporality::Cumulative, 100, 10);
        let start = std::time::SystemTime::now();
        for (exe, unit) in [("curl", "a.service"), ("wget", "b.service")] {
            let a = Attrs {
                exe: Some(exe.into()),
                identity: Some(Arc::new(Identity {
                    systemd_unit: Some(unit.into()),
                    ..Identity::default()
                })),
                address: Some("127.0.0.1".into()),
                port: Some(9),
                ..Attrs::default()
            };
            agg.record_for_test(Metric::TcpConnectErrors, a, None, Some(2), start);
        }
        let all = tcp_rows(&agg, &View::default()).0;
        assert_eq!(all.len(), 2);
        let a = View {
            filter: vec![("systemd.unit".into(), "a.service".into())],
            ..View::default()
        };
        let rows = tcp_rows(&agg, &a).0;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].workload, "a.service (curl)");
        assert_eq!(rows[0].errors, 2);
    }

    #[test]
    fn renders_rows() {
        let r = Row {
            workload: "nginx@0123456789ab".into(),
            syscall: "openat".into(),
            rate: 12.5,
            p50: 2e-6,
            p99: 1e-4,
            p999: 2e-3,
            error_ratio: 0.25,
        };
        let t = render(&[r], "syscope");
        assert!(t.contains("nginx@0123456789ab"));
        assert!(t.contains("openat"));
        assert!(t.contains("25.00"));
    }
}

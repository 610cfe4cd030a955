//! The live terminal view, when no OTLP endpoint is configured: the busiest
//! workload x syscall pairs of the last interval, computed from the same
//! series that would be exported.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use crate::aggregate::{quantile::quantile_s, Aggregator, Attrs, HistValue, Metric};

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

/// The `limit` busiest rows of the interval that just ended.
pub fn rows(agg: &Aggregator, limit: usize) -> Vec<Row> {
    let secs = interval_secs(agg);
    let mut errors: HashMap<RowKey, u64> = HashMap::new();
    for (a, s) in &agg.counter(Metric::SyscallErrors).series {
        if let Some(d) = s.delta {
            *errors
                .entry((a.exe.clone(), a.container.clone(), a.syscall.clone()))
                .or_default() += d;
        }
    }
    let mut rows: Vec<(u64, Row)> = agg
        .hist(Metric::SyscallDuration)
        .series
        .iter()
        .filter_map(|(a, s)| {
            let d: &HistValue = s.delta.as_ref()?;
            let n = d.count();
            if n == 0 {
                return None;
            }
            let errs = errors
                .get(&(a.exe.clone(), a.container.clone(), a.syscall.clone()))
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
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.workload.cmp(&b.1.workload)));
    rows.into_iter().take(limit).map(|(_, r)| r).collect()
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

fn workload(a: &Attrs) -> String {
    let exe = a.exe.as_deref().unwrap_or("?");
    match &a.container {
        Some(c) => format!("{exe}@{}", &c[..c.len().min(12)]),
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

/// The `limit` busiest ports and peers of the interval that just ended.
pub fn tcp_rows(agg: &Aggregator, limit: usize) -> (Vec<TcpRow>, TcpTotals) {
    let secs = interval_secs(agg);
    let mut errors: HashMap<(String, String), u64> = HashMap::new();
    for (a, s) in &agg.counter(Metric::TcpConnectErrors).series {
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
    let _ = writeln!(out, "{header}");
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

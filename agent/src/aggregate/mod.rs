//! From kernel keys to exported series: names and containers resolved,
//! series counted against the cardinality limit, values accumulated for the
//! chosen temporality.
//!
//! Several kernel keys can fold into one series (two cgroups of one
//! container, or of no container, with the same process name): series are
//! keyed by their exported attributes, so nothing is reported twice.

pub mod otlp;
pub mod quantile;

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    net::Ipv6Addr,
    sync::Arc,
    time::SystemTime,
};

use syscope_common::{
    tcp::{count_kind, TcpKey},
    SeriesKey,
};

pub use crate::collect::HistValue;

use crate::{
    collect::Deltas,
    config::Temporality,
    enrich::{self, cgroup::CgroupResolver, syscalls::Arch},
};

/// The exported attributes of a syscall series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attrs {
    pub syscall: Arc<str>,
    pub exe: Arc<str>,
    pub container: Option<Arc<str>>,
    /// errno name, for `syscall.errors` only.
    pub error: Option<Arc<str>>,
}

/// The exported attributes of a TCP series; which are set depends on the
/// metric (see `otlp::TCP_METRICS`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpAttrs {
    /// None when the socket's owner is unknown (not tracked, or no socket).
    pub exe: Option<Arc<str>>,
    pub container: Option<Arc<str>>,
    /// Peer address, for client-side metrics.
    pub address: Option<Arc<str>>,
    /// Server port; None when unknown.
    pub port: Option<u16>,
    /// errno name, for `tcp.connect.errors`.
    pub error: Option<Arc<str>>,
    /// `transmit` | `receive`, for `tcp.resets`.
    pub direction: Option<&'static str>,
}

/// Number of TCP histogram / counter metrics (`hist_kind`, `count_kind`).
pub const TCP_HISTS: usize = 4;
pub const TCP_COUNTS: usize = 5;

/// Values a series can hold.
pub trait Value: Default + Clone {
    fn merge(&mut self, other: &Self);
}
impl Value for HistValue {
    fn merge(&mut self, other: &Self) {
        self.add(other)
    }
}
impl Value for u64 {
    fn merge(&mut self, other: &Self) {
        *self += other
    }
}

#[derive(Clone, Debug)]
pub struct Series<V> {
    /// Start of the cumulative accumulation (first seen).
    pub start: SystemTime,
    pub cumulative: V,
    /// This interval's change; `None` when the series did not change.
    pub delta: Option<V>,
    idle: u32,
}

/// All series of one metric, bounded by the cardinality limit. Past the
/// limit, new attribute sets fold into one overflow series
/// (`otel.metric.overflow=true`), as the OpenTelemetry SDKs do.
#[derive(Debug)]
pub struct MetricSeries<V, A = Attrs> {
    pub series: HashMap<A, Series<V>>,
    pub overflow: Option<Series<V>>,
    /// Distinct attribute sets folded into the overflow series since start
    /// (saturates at FOLDED_CAP to stay bounded).
    folded: HashSet<A>,
    folded_saturated: u64,
    limit: usize,
}

const FOLDED_CAP: usize = 65_536;

impl<V: Value, A: Clone + Eq + Hash> MetricSeries<V, A> {
    fn new(limit: usize) -> Self {
        MetricSeries {
            series: HashMap::new(),
            overflow: None,
            folded: HashSet::new(),
            folded_saturated: 0,
            limit: limit.max(2),
        }
    }

    /// Number of distinct attribute sets folded into the overflow series.
    pub fn folded(&self) -> u64 {
        self.folded.len() as u64 + self.folded_saturated
    }

    fn record(&mut self, attrs: A, d: &V, start: SystemTime) {
        let target = if let Some(s) = self.series.get_mut(&attrs) {
            s
        } else if self.series.len() + 1 < self.limit {
            // One slot is kept for the overflow series: at most `limit` in all.
            self.series.entry(attrs).or_insert_with(|| Series {
                start,
                cumulative: V::default(),
                delta: None,
                idle: 0,
            })
        } else {
            if !self.folded.contains(&attrs) {
                if self.folded.len() < FOLDED_CAP {
                    self.folded.insert(attrs);
                } else {
                    self.folded_saturated += 1;
                }
            }
            self.overflow.get_or_insert_with(|| Series {
                start,
                cumulative: V::default(),
                delta: None,
                idle: 0,
            })
        };
        target.cumulative.merge(d);
        target.delta.get_or_insert_with(V::default).merge(d);
        target.idle = 0;
    }

    /// Start a new interval: clear deltas, age series, drop the long idle.
    fn begin_interval(&mut self, max_idle: u32) {
        self.series.retain(|_, s| {
            if s.delta.take().is_none() {
                s.idle += 1;
            }
            s.idle <= max_idle
        });
        if let Some(o) = &mut self.overflow {
            o.delta = None;
        }
    }

    pub fn len(&self) -> usize {
        self.series.len() + self.overflow.is_some() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state behind both exports and the live table.
pub struct Aggregator {
    pub latency: MetricSeries<HistValue>,
    pub errors: MetricSeries<u64>,
    /// TCP histograms, indexed by `hist_kind - 1`.
    pub tcp_hist: [MetricSeries<HistValue, TcpAttrs>; TCP_HISTS],
    /// TCP counters, indexed by `count_kind - 1`.
    pub tcp_counts: [MetricSeries<u64, TcpAttrs>; TCP_COUNTS],
    pub temporality: Temporality,
    /// End of the previous interval (start of the current delta window).
    pub interval_start: SystemTime,
    pub interval_end: SystemTime,
    max_idle: u32,
    arch: Arch,
    names: HashMap<[u8; 16], Arc<str>>,
    syscall_names: HashMap<u32, Arc<str>>,
    errno_names: HashMap<u32, Arc<str>>,
}

impl Aggregator {
    pub fn new(temporality: Temporality, max_series: usize, max_idle: u32) -> Self {
        let now = SystemTime::now();
        Aggregator {
            latency: MetricSeries::new(max_series),
            errors: MetricSeries::new(max_series),
            tcp_hist: std::array::from_fn(|_| MetricSeries::new(max_series)),
            tcp_counts: std::array::from_fn(|_| MetricSeries::new(max_series)),
            temporality,
            interval_start: now,
            interval_end: now,
            max_idle,
            arch: Arch::current(),
            names: HashMap::new(),
            syscall_names: HashMap::new(),
            errno_names: HashMap::new(),
        }
    }

    /// Fold one interval's deltas in (syscalls, then TCP).
    pub fn ingest(
        &mut self,
        deltas: &Deltas,
        tcp: &Deltas<TcpKey>,
        cgroups: &mut CgroupResolver,
        now: SystemTime,
    ) {
        self.interval_start = self.interval_end;
        self.interval_end = now;
        self.latency.begin_interval(self.max_idle);
        self.errors.begin_interval(self.max_idle);
        for m in &mut self.tcp_hist {
            m.begin_interval(self.max_idle);
        }
        for m in &mut self.tcp_counts {
            m.begin_interval(self.max_idle);
        }
        let start = self.interval_start;
        for (k, d) in &tcp.hist {
            let i = k.kind as usize;
            if (1..=TCP_HISTS).contains(&i) {
                let attrs = self.tcp_attrs(k, cgroups);
                self.tcp_hist[i - 1].record(attrs, d, start);
            }
        }
        for (k, n) in &tcp.errors {
            let i = k.kind as usize;
            if (1..=TCP_COUNTS).contains(&i) {
                let attrs = self.tcp_attrs(k, cgroups);
                self.tcp_counts[i - 1].record(attrs, n, start);
            }
        }
        // A new series' cumulative window starts where this interval did:
        // its first events happened after that.
        let start = self.interval_start;
        for (k, d) in &deltas.hist {
            let attrs = self.attrs(k, cgroups, false);
            self.latency.record(attrs, d, start);
        }
        for (k, n) in &deltas.errors {
            let attrs = self.attrs(k, cgroups, true);
            self.errors.record(attrs, n, start);
        }
    }

    fn tcp_attrs(&mut self, k: &TcpKey, cgroups: &mut CgroupResolver) -> TcpAttrs {
        // Zero comm / cgroup: the socket's owner is unknown.
        let exe = (k.comm[0] != 0).then(|| self.exe(&k.comm));
        let container = (k.cgroup_id != 0)
            .then(|| container_of(cgroups, k.cgroup_id))
            .flatten();
        let address = (k.addr != [0; 16]).then(|| Arc::from(addr_to_string(&k.addr)));
        let error = (k.kind == count_kind::CONNECT_ERROR).then(|| match k.code {
            // The application closed the socket before the handshake
            // completed: no network error.
            0 => Arc::from("cancelled"),
            c => self.errno(c),
        });
        let direction = match k.kind {
            count_kind::RESET_SENT => Some("transmit"),
            count_kind::RESET_RECEIVED => Some("receive"),
            _ => None,
        };
        TcpAttrs {
            exe,
            container,
            address,
            port: (k.port != 0).then_some(k.port),
            error,
            direction,
        }
    }

    fn attrs(&mut self, k: &SeriesKey, cgroups: &mut CgroupResolver, with_error: bool) -> Attrs {
        let arch = self.arch;
        let syscall = self
            .syscall_names
            .entry(k.nr)
            .or_insert_with(|| match enrich::syscalls::syscall_name(arch, k.nr) {
                Some(n) => n.into(),
                None => format!("syscall_{}", k.nr).into(),
            })
            .clone();
        let exe = self.exe(&k.comm);
        let container = container_of(cgroups, k.cgroup_id);
        let error = with_error.then(|| self.errno(k.errno));
        Attrs {
            syscall,
            exe,
            container,
            error,
        }
    }

    /// `process.executable.name` of a kernel comm, interned.
    fn exe(&mut self, comm: &[u8; 16]) -> Arc<str> {
        self.names
            .entry(*comm)
            .or_insert_with(|| comm_to_str(comm).into())
            .clone()
    }

    /// `error.type` of an errno, interned.
    fn errno(&mut self, errno: u32) -> Arc<str> {
        self.errno_names
            .entry(errno)
            .or_insert_with(|| match enrich::errno::errno_name(errno) {
                Some(n) => n.into(),
                None => format!("errno_{errno}").into(),
            })
            .clone()
    }
}

fn container_of(cgroups: &mut CgroupResolver, cgroup_id: u64) -> Option<Arc<str>> {
    cgroups
        .resolve(cgroup_id)
        .and_then(|c| c.container_id.as_deref().map(Arc::from))
}

/// An address from the kernel (IPv6, IPv4 v4-mapped) in its usual text form.
pub fn addr_to_string(a: &[u8; 16]) -> String {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// A kernel comm (NUL padded, not necessarily UTF-8) as a string.
pub fn comm_to_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(i: usize) -> Attrs {
        Attrs {
            syscall: format!("s{i}").into(),
            exe: "x".into(),
            container: None,
            error: None,
        }
    }

    #[test]
    fn limit_folds_into_overflow_and_counts_distinct() {
        let mut m = MetricSeries::<u64>::new(4);
        let now = SystemTime::now();
        for i in 0..10 {
            m.record(attrs(i), &1, now);
        }
        // 3 regular + 1 overflow = the limit of 4.
        assert_eq!(m.series.len(), 3);
        assert_eq!(m.len(), 4);
        assert_eq!(m.overflow.as_ref().unwrap().cumulative, 7);
        assert_eq!(m.folded(), 7);
        // The same folded attrs again: not a new folded series.
        m.record(attrs(9), &1, now);
        assert_eq!(m.folded(), 7);
        assert_eq!(m.overflow.as_ref().unwrap().cumulative, 8);
        // Existing series keep updating normally.
        m.record(attrs(0), &5, now);
        assert_eq!(m.series[&attrs(0)].cumulative, 6);
    }

    #[test]
    fn idle_series_expire_and_deltas_reset() {
        let mut m = MetricSeries::<u64>::new(10);
        let now = SystemTime::now();
        m.record(attrs(1), &2, now);
        m.begin_interval(2);
        assert!(m.series[&attrs(1)].delta.is_none());
        assert_eq!(m.series[&attrs(1)].cumulative, 2);
        m.begin_interval(2);
        m.begin_interval(2);
        assert!(m.series.contains_key(&attrs(1)));
        m.begin_interval(2);
        assert!(
            !m.series.contains_key(&attrs(1)),
            "idle for 3 > 2 intervals"
        );
    }

    #[test]
    fn addresses_print_as_v4_or_v6() {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr_to_string(&a), "127.0.0.1");
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(addr_to_string(&b), "::1");
    }

    #[test]
    fn comm_is_trimmed() {
        assert_eq!(comm_to_str(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
        assert_eq!(comm_to_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}

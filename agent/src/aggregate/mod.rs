//! From kernel keys to exported series: names and containers resolved,
//! series counted against the cardinality limit, values accumulated for the
//! chosen temporality.
//!
//! Several kernel keys can fold into one series (two cgroups of one
//! container, or of no container, with the same process name): series are
//! keyed by their exported attributes, so nothing is reported twice.

pub mod metrics;
pub mod otlp;
pub mod quantile;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
    net::Ipv6Addr,
    sync::Arc,
    time::SystemTime,
};

use syscope_common::{
    fold,
    tcp::{CountKind, HistKind, TcpKey},
    SeriesKey,
};

pub use crate::collect::{HistDelta, HistValue};
pub use metrics::{Attr, Metric};

use crate::{
    collect::Deltas,
    config::Temporality,
    enrich::{self, cgroup::CgroupResolver, identity::Identity, syscalls::Arch},
};

/// The exported attributes of a series: only those its metric lists in the
/// catalogue are ever set (see [`Attrs::for_metric`]), so series are keyed
/// by exactly what is exported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attrs {
    pub syscall: Option<Arc<str>>,
    /// None when a socket's owner is unknown (not tracked, or no socket).
    pub exe: Option<Arc<str>>,
    /// Whose the workload is (container, pod, unit), from its cgroup; `None`
    /// when the cgroup is unknown or says nothing.
    pub identity: Option<Arc<Identity>>,
    /// Peer address, for client-side TCP metrics.
    pub address: Option<Arc<str>>,
    /// Server port; None when unknown.
    pub port: Option<u16>,
    /// errno name (or `cancelled` for connects).
    pub error: Option<Arc<str>>,
    /// `transmit` | `receive`.
    pub direction: Option<&'static str>,
}

impl Attrs {
    /// The exported value of `a`, as text (the port in decimal), if set.
    pub fn value(&self, a: Attr) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        fn s(v: &Option<Arc<str>>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        let id =
            |f: fn(&Identity) -> &Option<Arc<str>>| self.identity.as_deref().and_then(|i| s(f(i)));
        match a {
            Attr::SyscallName => s(&self.syscall),
            Attr::ExecutableName => s(&self.exe),
            Attr::ContainerId => id(|i| &i.container_id),
            Attr::ContainerName => id(|i| &i.container_name),
            Attr::K8sNamespace => id(|i| &i.k8s_namespace),
            Attr::K8sPodName => id(|i| &i.k8s_pod_name),
            Attr::K8sPodUid => id(|i| &i.k8s_pod_uid),
            Attr::K8sContainerName => id(|i| &i.k8s_container_name),
            Attr::SystemdUnit => id(|i| &i.systemd_unit),
            Attr::SystemdSlice => id(|i| &i.systemd_slice),
            Attr::ServerAddress => s(&self.address),
            Attr::ServerPort => self.port.map(|p| Cow::Owned(p.to_string())),
            Attr::ErrorType => s(&self.error),
            Attr::IoDirection => self.direction.map(Cow::Borrowed),
        }
    }

    /// Keep only the attributes `m` carries.
    fn for_metric(mut self, m: Metric) -> Attrs {
        fn keep<T>(v: &mut Option<T>, yes: bool) {
            if !yes {
                *v = None;
            }
        }
        keep(&mut self.syscall, m.has(Attr::SyscallName));
        keep(&mut self.exe, m.has(Attr::ExecutableName));
        // The identity attributes come as one set (`metrics::IDENTITY`).
        keep(&mut self.identity, m.has(Attr::ContainerId));
        keep(&mut self.address, m.has(Attr::ServerAddress));
        keep(&mut self.port, m.has(Attr::ServerPort));
        keep(&mut self.error, m.has(Attr::ErrorType));
        keep(&mut self.direction, m.has(Attr::IoDirection));
        self
    }
}

/// Values a series can hold.
pub trait Value: Default + Clone {
    /// What an expired series keeps of its value (see `MetricSeries::retired`).
    type Kept: std::fmt::Debug;
    /// Events counted, to rank series by how busy they are.
    fn events(&self) -> u64;
    fn keep(&self) -> Self::Kept;
    fn restore(k: Self::Kept) -> Self;
}
impl Value for HistValue {
    /// Sum, zero count, split counters and the non-zero buckets: a quiet
    /// series has few.
    type Kept = (
        u64,
        u64,
        [u64; syscope_common::hist::SPLITS],
        Box<[(u16, u64)]>,
    );
    fn events(&self) -> u64 {
        self.count()
    }
    fn keep(&self) -> Self::Kept {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(|(i, &n)| (i as u16, n))
            .collect();
        (self.sum_ns, self.zero, self.split, buckets)
    }
    fn restore((sum_ns, zero, split, buckets): Self::Kept) -> Self {
        let mut v = HistValue {
            sum_ns,
            zero,
            split,
            ..HistValue::default()
        };
        for (i, n) in buckets.iter() {
            if let Some(b) = v.buckets.get_mut(usize::from(*i)) {
                *b = *n;
            }
        }
        v
    }
}
impl Value for u64 {
    type Kept = u64;
    fn events(&self) -> u64 {
        *self
    }
    fn keep(&self) -> u64 {
        *self
    }
    fn restore(k: u64) -> u64 {
        k
    }
}

/// Adding `D`, one interval's change, into a value.
pub trait Merge<D> {
    fn merge(&mut self, d: D);
}
impl Merge<HistDelta<'_>> for HistValue {
    fn merge(&mut self, d: HistDelta<'_>) {
        self.add_delta(d)
    }
}
impl Merge<&HistValue> for HistValue {
    fn merge(&mut self, d: &HistValue) {
        self.add(d)
    }
}
impl Merge<&u64> for u64 {
    fn merge(&mut self, d: &u64) {
        *self += d
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
/// (`otel.metric.overflow=true`), as the OpenTelemetry SDKs do. Before that,
/// under pressure (see [`MetricSeries::begin_interval`]), quiet series give
/// way to new ones, so a churning node keeps showing its new workloads.
#[derive(Debug)]
pub struct MetricSeries<V: Value, A = Attrs> {
    pub series: HashMap<A, Series<V>>,
    pub overflow: Option<Series<V>>,
    /// Distinct attribute sets folded into the overflow series since start
    /// (saturates at FOLDED_CAP to stay bounded).
    folded: HashSet<A>,
    folded_saturated: u64,
    /// Series that gave way under pressure since start.
    evicted: u64,
    /// Series that expired idle, kept (at most `limit`, the oldest go
    /// first) so that one coming back continues its cumulative run, same
    /// start and totals: a rare event shows as an increase to a backend
    /// that saw the series vanish, not as a new series at 1.
    retired: HashMap<A, (SystemTime, V::Kept)>,
    retired_order: VecDeque<A>,
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
            evicted: 0,
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            limit: limit.max(2),
        }
    }

    /// Number of distinct attribute sets folded into the overflow series.
    pub fn folded(&self) -> u64 {
        self.folded.len() as u64 + self.folded_saturated
    }

    fn record<D: Copy>(&mut self, attrs: A, d: D, start: SystemTime)
    where
        V: Merge<D>,
    {
        let target = if let Some(s) = self.series.get_mut(&attrs) {
            s
        } else if self.series.len() + 1 < self.limit {
            // One slot is kept for the overflow series: at most `limit` in all.
            let (start, cumulative) = match self.retired.remove(&attrs) {
                Some((start, kept)) => (start, V::restore(kept)),
                None => (start, V::default()),
            };
            self.series.entry(attrs).or_insert(Series {
                start,
                cumulative,
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

    /// Series that gave way under pressure since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Events the kernel folded (its map was full: no attributes left).
    fn record_overflow<D: Copy>(&mut self, d: D, start: SystemTime)
    where
        V: Merge<D>,
    {
        let o = self.overflow.get_or_insert_with(|| Series {
            start,
            cumulative: V::default(),
            delta: None,
            idle: 0,
        });
        o.cumulative.merge(d);
        o.delta.get_or_insert_with(V::default).merge(d);
    }

    /// Start a new interval: clear deltas, age series, drop the long idle.
    ///
    /// Under pressure (nine tenths of the limit in use), series that did
    /// not change in the last interval give way until four fifths are in
    /// use: the longest quiet first, then the least busy. Series `keep`
    /// says matter (under an SLO, or with errors) stay, and so does every
    /// busy one, since it changed. Nothing is lost: what a series counted
    /// was exported, and one that comes back continues its cumulative run
    /// (see `retired`).
    fn begin_interval(&mut self, max_idle: u32, keep: impl Fn(&A) -> bool) {
        let mut expired = vec![];
        self.series.retain(|a, s| {
            if s.delta.take().is_none() {
                s.idle += 1;
            }
            let live = s.idle <= max_idle;
            if !live {
                expired.push((a.clone(), s.start, s.cumulative.keep()));
            }
            live
        });
        for (a, start, kept) in expired {
            self.retire(a, start, kept);
        }
        if let Some(o) = &mut self.overflow {
            o.delta = None;
        }
        if self.series.len() < self.limit - self.limit / 10 {
            return;
        }
        let mut quiet: Vec<(u32, u64, &A)> = self
            .series
            .iter()
            .filter(|(a, s)| s.idle > 0 && !keep(a))
            .map(|(a, s)| (s.idle, s.cumulative.events(), a))
            .collect();
        quiet.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        let excess = self.series.len() - (self.limit - self.limit / 5);
        let gone: Vec<A> = quiet
            .into_iter()
            .take(excess)
            .map(|(_, _, a)| a.clone())
            .collect();
        self.evicted += gone.len() as u64;
        for a in gone {
            if let Some(s) = self.series.remove(&a) {
                self.retire(a, s.start, s.cumulative.keep());
            }
        }
    }

    /// Keep an expired series' totals, dropping the oldest kept past the
    /// limit (entries of series that came back are skipped lazily).
    fn retire(&mut self, a: A, start: SystemTime, kept: V::Kept) {
        if self.retired.insert(a.clone(), (start, kept)).is_none() {
            self.retired_order.push_back(a);
        }
        while self.retired.len() > self.limit {
            match self.retired_order.pop_front() {
                Some(old) => {
                    self.retired.remove(&old);
                }
                None => break,
            }
        }
        // Attribute sets that came back left stale entries in the order.
        if self.retired_order.len() > 2 * self.limit {
            self.retired_order.retain(|a| self.retired.contains_key(a));
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
    /// Histogram metrics, by `Metric::slot` (`Metric::HISTOGRAMS`).
    pub hists: [MetricSeries<HistValue>; 5],
    /// Counter metrics, by `Metric::slot` (`Metric::COUNTERS`).
    pub counters: [MetricSeries<u64>; 7],
    pub temporality: Temporality,
    /// End of the previous interval (start of the current delta window).
    pub interval_start: SystemTime,
    pub interval_end: SystemTime,
    max_idle: u32,
    /// Workloads whose series never give way under pressure (the SLOs'
    /// matchers); see [`MetricSeries::begin_interval`].
    keep: Vec<Vec<(Attr, String)>>,
    arch: Arch,
    names: HashMap<[u8; 16], Arc<str>>,
    syscall_names: HashMap<u32, Arc<str>>,
    errno_names: HashMap<u32, Arc<str>>,
}

impl Aggregator {
    pub fn new(temporality: Temporality, max_series: usize, max_idle: u32) -> Self {
        let now = SystemTime::now();
        Aggregator {
            hists: std::array::from_fn(|_| MetricSeries::new(max_series)),
            counters: std::array::from_fn(|_| MetricSeries::new(max_series)),
            temporality,
            interval_start: now,
            interval_end: now,
            max_idle,
            keep: Vec::new(),
            arch: Arch::current(),
            names: HashMap::new(),
            syscall_names: HashMap::new(),
            errno_names: HashMap::new(),
        }
    }

    /// Series matching every matcher of one of `keep` (sets of exported
    /// attribute values; an empty set is ignored) stay under pressure.
    pub fn keep_workloads(&mut self, keep: Vec<Vec<(Attr, String)>>) {
        self.keep = keep.into_iter().filter(|m| !m.is_empty()).collect();
    }

    /// The calls (syscall of a workload) with errors in the last interval
    /// or the one before, when the syscall latency series are under
    /// pressure (their latency series stay): empty otherwise.
    fn erring_calls(&self) -> HashSet<Call> {
        let d = &self.hists[Metric::SyscallDuration.slot()];
        if d.series.len() < d.limit - d.limit / 10 {
            return HashSet::new();
        }
        self.counters[Metric::SyscallErrors.slot()]
            .series
            .iter()
            .filter(|(_, s)| s.idle <= 1)
            .map(|(a, _)| call_of(a))
            .collect()
    }

    /// Add what the kernel folded (its maps were full) to each metric's
    /// overflow series; after [`ingest`](Self::ingest), in the same interval.
    pub fn fold(&mut self, folded: &Deltas<u32>) {
        let start = self.interval_start;
        for (slot, d) in &folded.hist {
            let m = match *slot {
                fold::SYSCALL => Some(Metric::SyscallDuration),
                k => u8::try_from(k)
                    .ok()
                    .and_then(HistKind::from_u8)
                    .map(Metric::of_hist),
            };
            if let Some(m) = m {
                self.hists[m.slot()].record_overflow(d, start);
            }
        }
        for (slot, n) in &folded.counters {
            let m = match *slot {
                fold::SYSCALL => Some(Metric::SyscallErrors),
                k => u8::try_from(k)
                    .ok()
                    .and_then(CountKind::from_u8)
                    .map(Metric::of_count),
            };
            if let Some(m) = m {
                self.counters[m.slot()].record_overflow(n, start);
            }
        }
    }

    /// The series of a histogram metric.
    pub fn hist(&self, m: Metric) -> &MetricSeries<HistValue> {
        &self.hists[m.slot()]
    }

    /// The series of a counter metric.
    pub fn counter(&self, m: Metric) -> &MetricSeries<u64> {
        &self.counters[m.slot()]
    }

    /// Live, folded and evicted (under pressure) series of `m`, whichever
    /// its instrument.
    pub fn series_counts(&self, m: Metric) -> (usize, u64, u64) {
        match m.spec().instrument {
            metrics::Instrument::Histogram => {
                let s = self.hist(m);
                (s.len(), s.folded(), s.evicted())
            }
            metrics::Instrument::Counter => {
                let s = self.counter(m);
                (s.len(), s.folded(), s.evicted())
            }
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
        let erring = self.erring_calls();
        for (i, m) in self.hists.iter_mut().enumerate() {
            let metric = Metric::HISTOGRAMS[i];
            let keep = |a: &Attrs| {
                self.keep.iter().any(|k| matches_all(k, a))
                    || metric == Metric::SyscallDuration && erring.contains(&call_of(a))
            };
            m.begin_interval(self.max_idle, keep);
        }
        for m in &mut self.counters {
            m.begin_interval(self.max_idle, |a| {
                self.keep.iter().any(|k| matches_all(k, a))
            });
        }
        // A new series' cumulative window starts where this interval did:
        // its first events happened after that.
        let start = self.interval_start;
        for (k, d) in &deltas.hist {
            let m = Metric::SyscallDuration;
            let attrs = self.syscall_attrs(k, cgroups).for_metric(m);
            self.hists[m.slot()].record(attrs, d, start);
        }
        for (k, n) in &deltas.counters {
            let m = Metric::SyscallErrors;
            let mut attrs = self.syscall_attrs(k, cgroups);
            attrs.error = Some(self.errno(k.errno));
            self.counters[m.slot()].record(attrs.for_metric(m), n, start);
        }
        for (k, d) in &tcp.hist {
            // A kind this agent does not know (a newer kernel object) is skipped.
            let Some(kind) = HistKind::from_u8(k.kind) else {
                continue;
            };
            let m = Metric::of_hist(kind);
            let attrs = self.tcp_attrs(k, cgroups).for_metric(m);
            self.hists[m.slot()].record(attrs, d, start);
        }
        for (k, n) in &tcp.counters {
            let Some(kind) = CountKind::from_u8(k.kind) else {
                continue;
            };
            let m = Metric::of_count(kind);
            let mut attrs = self.tcp_attrs(k, cgroups);
            match kind {
                // The application closed the socket before the handshake
                // completed: no network error.
                CountKind::ConnectError if k.code == 0 => attrs.error = Some("cancelled".into()),
                CountKind::ConnectError => attrs.error = Some(self.errno(k.code)),
                CountKind::ResetSent => attrs.direction = Some("transmit"),
                CountKind::ResetReceived => attrs.direction = Some("receive"),
                CountKind::Retransmit
                | CountKind::ListenDrop
                | CountKind::MultiplexedServer
                | CountKind::MultiplexedClient => {}
            }
            self.counters[m.slot()].record(attrs.for_metric(m), n, start);
        }
    }

    /// Records one series' value directly (tests of what reads the series).
    #[cfg(test)]
    pub fn record_for_test(
        &mut self,
        m: Metric,
        attrs: Attrs,
        hist: Option<HistValue>,
        count: Option<u64>,
        start: SystemTime,
    ) {
        if let Some(h) = hist {
            self.hists[m.slot()].record(attrs.clone().for_metric(m), &h, start);
        }
        if let Some(n) = count {
            self.counters[m.slot()].record(attrs.for_metric(m), &n, start);
        }
    }

    /// Owner, peer and port of a TCP key (zero comm / cgroup: owner unknown).
    fn tcp_attrs(&mut self, k: &TcpKey, cgroups: &mut CgroupResolver) -> Attrs {
        Attrs {
            exe: (k.comm[0] != 0).then(|| self.exe(&k.comm)),
            identity: (k.cgroup_id != 0)
                .then(|| identity_of(cgroups, k.cgroup_id))
                .flatten(),
            address: (k.addr != [0; 16]).then(|| Arc::from(addr_to_string(&k.addr))),
            port: (k.port != 0).then_some(k.port),
            ..Attrs::default()
        }
    }

    fn syscall_attrs(&mut self, k: &SeriesKey, cgroups: &mut CgroupResolver) -> Attrs {
        let arch = self.arch;
        let syscall = self
            .syscall_names
            .entry(k.nr)
            .or_insert_with(|| syscall_label(arch, k.nr).into())
            .clone();
        Attrs {
            syscall: Some(syscall),
            exe: Some(self.exe(&k.comm)),
            identity: identity_of(cgroups, k.cgroup_id),
            ..Attrs::default()
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

/// A workload's syscall: what a syscall's latency and error series share.
type Call = (Option<Arc<str>>, Option<Arc<str>>, Option<Arc<Identity>>);

fn call_of(a: &Attrs) -> Call {
    (a.syscall.clone(), a.exe.clone(), a.identity.clone())
}

/// Whether `a` has every matcher's value (exported text; the port in
/// decimal).
pub fn matches_all(matchers: &[(Attr, String)], a: &Attrs) -> bool {
    matchers
        .iter()
        .all(|(attr, v)| a.value(*attr).is_some_and(|x| x == v.as_str()))
}

/// The identity of a cgroup, `None` when it has none (a plain process in
/// the root or a user session without a unit), so such series fold by
/// process name.
fn identity_of(cgroups: &mut CgroupResolver, cgroup_id: u64) -> Option<Arc<Identity>> {
    cgroups
        .resolve(cgroup_id)
        .map(|c| c.identity.clone())
        .filter(|i| **i != Identity::default())
}

/// `syscall.name` of a kernel syscall number: a compat (32-bit) call, marked
/// with `COMPAT_NR_BIT`, is named from its own table (i386 on x86_64); a
/// number without a name is `syscall_<nr>` (`compat_syscall_<nr>`).
pub fn syscall_label(arch: Arch, nr: u32) -> String {
    use syscope_common::COMPAT_NR_BIT;
    if nr & COMPAT_NR_BIT != 0 {
        let nr = nr & !COMPAT_NR_BIT;
        return match arch
            .compat()
            .and_then(|a| enrich::syscalls::syscall_name(a, nr))
        {
            Some(n) => n.to_string(),
            None => format!("compat_syscall_{nr}"),
        };
    }
    match enrich::syscalls::syscall_name(arch, nr) {
        Some(n) => n.to_string(),
        None => format!("syscall_{nr}"),
    }
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
            syscall: Some(format!("s{i}").into()),
            exe: Some("x".into()),
            ..Attrs::default()
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
    fn quiet_series_give_way_near_the_limit_but_kept_and_busy_ones_stay() {
        let mut m = MetricSeries::<u64>::new(10);
        let now = SystemTime::now();
        // 9 series of 10: at nine tenths. 5 and 6 are the least busy.
        for i in 0..9 {
            m.record(attrs(i), &(10 + i as u64), now);
        }
        m.record(attrs(5), &0, now);
        let keep = |a: &Attrs| *a == attrs(5);
        // All changed in the interval that ended: nothing gives way.
        m.begin_interval(10, keep);
        assert_eq!((m.series.len(), m.evicted()), (9, 0));
        // 0..=3 busy; the quiet rest gives way down to 8 (four fifths),
        // the least busy first, except the kept 5.
        for i in 0..4 {
            m.record(attrs(i), &1, now);
        }
        m.begin_interval(10, keep);
        assert_eq!((m.series.len(), m.evicted()), (8, 1));
        assert!(!m.series.contains_key(&attrs(4)), "4 was the least busy");
        assert!(m.series.contains_key(&attrs(5)), "kept");
        // A new workload has its own series, not the overflow.
        m.record(attrs(20), &3, now);
        assert_eq!(m.series[&attrs(20)].cumulative, 3);
        assert!(m.overflow.is_none());
    }

    #[test]
    fn kernel_folds_go_to_the_overflow_series_of_their_metric() {
        let mut agg = Aggregator::new(Temporality::Delta, 100, 10);
        let mut h = HistValue::default();
        h.buckets[3] = 4;
        h.sum_ns = 40;
        let folded = Deltas {
            hist: [
                (fold::SYSCALL, h),
                (HistKind::ServerRequest as u32, HistValue::default()),
            ]
            .into_iter()
            .collect(),
            counters: vec![
                (fold::SYSCALL, 7),
                (CountKind::Retransmit as u32, 2),
                (31, 5),
            ],
        };
        agg.fold(&folded);
        let o = |m: Metric| agg.counter(m).overflow.as_ref().map(|s| s.cumulative);
        assert_eq!(o(Metric::SyscallErrors), Some(7));
        assert_eq!(o(Metric::of_count(CountKind::Retransmit)), Some(2));
        let d = agg.hist(Metric::SyscallDuration).overflow.as_ref().unwrap();
        assert_eq!(d.cumulative.count(), 4);
        assert_eq!(d.delta.as_ref().unwrap().sum_ns, 40);
        // A slot no metric has (a newer kernel object) is skipped.
        let total: usize = Metric::COUNTERS
            .iter()
            .filter(|&&m| agg.counter(m).overflow.is_some())
            .count();
        assert_eq!(total, 2);
    }

    #[test]
    fn idle_series_expire_and_deltas_reset() {
        let mut m = MetricSeries::<u64>::new(10);
        let now = SystemTime::now();
        m.record(attrs(1), &2, now);
        m.begin_interval(2, |_| false);
        assert!(m.series[&attrs(1)].delta.is_none());
        assert_eq!(m.series[&attrs(1)].cumulative, 2);
        m.begin_interval(2, |_| false);
        m.begin_interval(2, |_| false);
        assert!(m.series.contains_key(&attrs(1)));
        m.begin_interval(2, |_| false);
        assert!(
            !m.series.contains_key(&attrs(1)),
            "idle for 3 > 2 intervals"
        );
        // Back after expiring: the same cumulative run goes on (a backend
        // sees 2 then 5, an increase, not a new series at 3).
        m.record(attrs(1), &3, now + std::time::Duration::from_secs(60));
        assert_eq!(m.series[&attrs(1)].cumulative, 5);
        assert_eq!(m.series[&attrs(1)].start, now);
        assert_eq!(m.series[&attrs(1)].delta, Some(3));
    }

    #[test]
    fn expired_series_kept_are_bounded_oldest_first() {
        let mut m = MetricSeries::<u64>::new(3);
        let now = SystemTime::now();
        for i in 0..5 {
            m.record(attrs(i), &(i as u64 + 1), now);
            m.begin_interval(0, |_| false);
            m.begin_interval(0, |_| false);
        }
        assert!(m.series.is_empty());
        assert_eq!(m.retired.len(), 3);
        // The two oldest were dropped: they start again.
        m.record(attrs(0), &1, now);
        assert_eq!(m.series[&attrs(0)].cumulative, 1);
        m.record(attrs(4), &1, now);
        assert_eq!(m.series[&attrs(4)].cumulative, 6);
    }

    #[test]
    fn kept_histograms_restore_exactly() {
        let mut h = HistValue {
            sum_ns: 77,
            zero: 2,
            split: [1, 0, 3, 0],
            ..HistValue::default()
        };
        h.buckets[0] = 4;
        h.buckets[200] = 9;
        h.buckets[syscope_common::hist::NUM_BUCKETS - 1] = 1;
        assert_eq!(HistValue::restore(h.keep()), h);
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
    fn compat_calls_are_named_from_their_table() {
        use syscope_common::COMPAT_NR_BIT;
        assert_eq!(syscall_label(Arch::X86_64, 20), "writev");
        assert_eq!(syscall_label(Arch::X86_64, 20 | COMPAT_NR_BIT), "getpid");
        assert_eq!(syscall_label(Arch::X86_64, 199 | COMPAT_NR_BIT), "getuid32");
        assert_eq!(
            syscall_label(Arch::X86_64, 222 | COMPAT_NR_BIT),
            "compat_syscall_222"
        );
        assert_eq!(
            syscall_label(Arch::Aarch64, 20 | COMPAT_NR_BIT),
            "compat_syscall_20"
        );
        assert_eq!(syscall_label(Arch::X86_64, 9999), "syscall_9999");
    }

    #[test]
    fn comm_is_trimmed() {
        assert_eq!(comm_to_str(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
        assert_eq!(comm_to_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}

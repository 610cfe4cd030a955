//! Reading the kernel maps once per interval and turning their cumulative
//! counters into per-interval deltas.
//!
//! The kernel's values only grow, except when an entry is deleted (we evict
//! idle ones to make room) and recreated: a shrinking `sum_ns` or error count
//! marks such a reset, and the new value is then the delta. Bucket counters
//! are u32 and wrap; wrapping subtraction gives the right delta as long as
//! fewer than 2^32 events land in one bucket of one series per interval.

use std::{collections::HashMap, hash::Hash, time::Instant};

use syscope_common::{
    counter,
    hist::{NUM_BUCKETS, SPLITS},
    maps,
    tcp::{CountKind, ListenState, TcpKey},
    Histogram, SeriesKey,
};
use tracing::warn;

use crate::{probes::Probes, telemetry::SelfStats};

/// Reads every kernel map once per interval: deltas out, idle entries
/// evicted from the kernel, the kernel's own counters and map fill levels
/// into the self-metrics.
pub struct Collector {
    syscalls: DeltaTracker,
    tcp: DeltaTracker<TcpKey>,
    listeners: ListenerTracker,
    last_kernel: [u64; counter::COUNT as usize],
}

/// One interval's deltas: syscall keys, and TCP keys (histograms, counters
/// and listener drops).
pub struct Interval {
    pub syscalls: Deltas,
    pub tcp: Deltas<TcpKey>,
}

impl Collector {
    /// Kernel entries idle `evict_after` intervals are deleted to make room
    /// (their series live on in userspace for `series_idle_intervals`).
    pub fn new(evict_after: u32) -> Self {
        Collector {
            syscalls: DeltaTracker::new(evict_after),
            tcp: DeltaTracker::new(evict_after),
            listeners: ListenerTracker::default(),
            last_kernel: [0; counter::COUNT as usize],
        }
    }

    pub fn collect(&mut self, probes: &mut Probes, stats: &SelfStats) -> Interval {
        let t0 = Instant::now();
        let entries = |stats: &SelfStats, id: usize, n: usize| {
            SelfStats::set(&stats.map_entries[id], n as u64);
        };
        // An entry deleted between listing and reading is skipped: harmless.
        let hist: Vec<_> = probes.hist.iter().filter_map(Result::ok).collect();
        let errors: Vec<_> = probes.errors.iter().filter_map(Result::ok).collect();
        entries(stats, maps::SYSCALL_LATENCY, hist.len());
        entries(stats, maps::SYSCALL_ERRORS, errors.len());
        let (syscalls, evict) = self.syscalls.update(hist, errors);
        SelfStats::add(
            &stats.events,
            syscalls.hist.iter().map(|(_, d)| d.count()).sum(),
        );
        for k in &evict.hist {
            let _ = probes.hist.remove(k);
        }
        for k in &evict.counters {
            let _ = probes.errors.remove(k);
        }

        probes.poll_listeners();
        let mut tcp = Deltas::default();
        if let Some(maps) = probes.tcp.as_mut() {
            let hist: Vec<_> = maps.hist.iter().filter_map(Result::ok).collect();
            let counts: Vec<_> = maps.counts.iter().filter_map(Result::ok).collect();
            let listeners: Vec<_> = maps.listeners.iter().filter_map(Result::ok).collect();
            entries(stats, maps::TCP_LATENCY, hist.len());
            entries(stats, maps::TCP_COUNTERS, counts.len());
            entries(stats, maps::LISTENERS, listeners.len());
            entries(stats, maps::SOCKETS, maps.socks.keys().count());
            let evict;
            (tcp, evict) = self.tcp.update(hist, counts);
            for k in &evict.hist {
                let _ = maps.hist.remove(k);
            }
            for k in &evict.counters {
                let _ = maps.counts.remove(k);
            }
            let (drops, closed) = self.listeners.update(listeners);
            for sk in &closed {
                let _ = maps.listeners.remove(sk);
            }
            tcp.counters.extend(drops);
        }
        self.kernel_counters(probes, stats);
        SelfStats::set(&stats.collect_duration_us, t0.elapsed().as_micros() as u64);
        Interval { syscalls, tcp }
    }

    /// The kernel's counters into the self-metrics; one warning per
    /// interval per map that dropped updates, never silent.
    fn kernel_counters(&mut self, probes: &Probes, stats: &SelfStats) {
        let now = probes.read_counters();
        for (&cur, v) in now.iter().zip(&stats.kernel) {
            SelfStats::set(v, cur);
        }
        for m in &maps::MAPS {
            let i = counter::map_full(m.id) as usize;
            let grew = now[i].saturating_sub(self.last_kernel[i]);
            if grew > 0 {
                warn!(
                    map = m.label,
                    dropped = grew,
                    "kernel map full: updates dropped this interval; raise limits.kernel_maps.{}",
                    m.label
                );
            }
        }
        self.last_kernel = now;
    }
}

/// What happened in one interval, per kernel key: histograms and counters
/// (syscall errors, or the TCP counters and listener drops).
#[derive(Debug)]
pub struct Deltas<K = SeriesKey> {
    pub hist: Vec<(K, HistValue)>,
    pub counters: Vec<(K, u64)>,
}

impl<K> Default for Deltas<K> {
    fn default() -> Self {
        Deltas {
            hist: vec![],
            counters: vec![],
        }
    }
}

/// Latency histogram counts in the kernel's layout (`syscope_common::hist`),
/// widened to u64: one interval's delta, or an accumulation of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistValue {
    pub sum_ns: u64,
    pub zero: u64,
    pub buckets: Box<[u64; NUM_BUCKETS]>,
    /// Per SLO threshold slot: the durations of the threshold's bucket at
    /// or below it (see `syscope_common::hist::SPLITS`).
    pub split: [u64; SPLITS],
}

impl Default for HistValue {
    fn default() -> Self {
        HistValue {
            sum_ns: 0,
            zero: 0,
            buckets: Box::new([0; NUM_BUCKETS]),
            split: [0; SPLITS],
        }
    }
}

impl HistValue {
    pub fn count(&self) -> u64 {
        self.zero + self.buckets.iter().sum::<u64>()
    }

    pub fn add(&mut self, d: &HistValue) {
        self.sum_ns += d.sum_ns;
        self.zero += d.zero;
        for (a, b) in self.buckets.iter_mut().zip(d.buckets.iter()) {
            *a += b;
        }
        for (a, b) in self.split.iter_mut().zip(d.split.iter()) {
            *a += b;
        }
    }

    /// Durations at or below a threshold, exactly: the buckets wholly below
    /// it, and the split counter of its own bucket (`slot` is its place in
    /// the kernel's `SPLIT_NS`, `bucket` the index it falls in).
    pub fn at_or_below(&self, slot: usize, bucket: usize) -> u64 {
        let below: u64 = self.buckets.iter().take(bucket).sum();
        self.zero + below + self.split.get(slot).copied().unwrap_or(0)
    }

    /// Delta from `prev` to `cur`; `None` prev (or a reset) means all of `cur`.
    pub fn between(prev: Option<&Histogram>, cur: &Histogram) -> HistValue {
        let prev = match prev {
            Some(p) if p.sum_ns <= cur.sum_ns => p,
            _ => &Histogram::ZERO,
        };
        let mut buckets = Box::new([0u64; NUM_BUCKETS]);
        for (d, (c, p)) in buckets
            .iter_mut()
            .zip(cur.buckets.iter().zip(prev.buckets.iter()))
        {
            *d = c.wrapping_sub(*p) as u64;
        }
        HistValue {
            sum_ns: cur.sum_ns - prev.sum_ns,
            zero: cur.zero.wrapping_sub(prev.zero) as u64,
            buckets,
            split: std::array::from_fn(|k| cur.split[k].wrapping_sub(prev.split[k]) as u64),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sum_ns == 0 && self.zero == 0 && self.buckets.iter().all(|&b| b == 0)
    }
}

/// Delta of a monotonic counter, treating a decrease as a reset.
pub fn counter_delta(prev: Option<u64>, cur: u64) -> u64 {
    match prev {
        Some(p) if p <= cur => cur - p,
        _ => cur,
    }
}

struct Prev<V> {
    value: V,
    /// Consecutive intervals without change.
    idle: u32,
}

/// Turns successive reads of the maps into deltas, and picks the entries
/// idle long enough to be evicted from the kernel maps.
pub struct DeltaTracker<K = SeriesKey> {
    hist: HashMap<K, Prev<Histogram>>,
    counters: HashMap<K, Prev<u64>>,
    evict_after: u32,
}

/// Keys to delete from the kernel maps (idle for `evict_after` intervals).
#[derive(Debug)]
pub struct Evictions<K = SeriesKey> {
    pub hist: Vec<K>,
    pub counters: Vec<K>,
}

impl<K> Default for Evictions<K> {
    fn default() -> Self {
        Evictions {
            hist: vec![],
            counters: vec![],
        }
    }
}

impl<K: Copy + Eq + Hash> DeltaTracker<K> {
    pub fn new(evict_after: u32) -> Self {
        DeltaTracker {
            hist: HashMap::new(),
            counters: HashMap::new(),
            evict_after: evict_after.max(1),
        }
    }

    /// Feed one full read of both maps; returns the deltas and the keys the
    /// caller should delete from the kernel (already forgotten here, so a
    /// recreated entry counts from zero).
    pub fn update(
        &mut self,
        hist: impl IntoIterator<Item = (K, Histogram)>,
        counters: impl IntoIterator<Item = (K, u64)>,
    ) -> (Deltas<K>, Evictions<K>) {
        let mut out = Deltas::default();
        let mut ev = Evictions::default();
        let mut seen_h = HashMap::with_capacity(self.hist.len());
        for (k, cur) in hist {
            let prev = self.hist.remove(&k);
            let d = HistValue::between(prev.as_ref().map(|p| &p.value), &cur);
            let idle = if d.is_empty() {
                prev.map_or(0, |p| p.idle) + 1
            } else {
                0
            };
            if idle >= self.evict_after {
                ev.hist.push(k);
                continue;
            }
            if !d.is_empty() {
                out.hist.push((k, d));
            }
            seen_h.insert(k, Prev { value: cur, idle });
        }
        // Entries gone from the kernel map are forgotten.
        self.hist = seen_h;
        let mut seen_e = HashMap::with_capacity(self.counters.len());
        for (k, cur) in counters {
            let prev = self.counters.remove(&k);
            let d = counter_delta(prev.as_ref().map(|p| p.value), cur);
            let idle = if d == 0 {
                prev.map_or(0, |p| p.idle) + 1
            } else {
                0
            };
            if idle >= self.evict_after {
                ev.counters.push(k);
                continue;
            }
            if d != 0 {
                out.counters.push((k, d));
            }
            seen_e.insert(k, Prev { value: cur, idle });
        }
        self.counters = seen_e;
        (out, ev)
    }
}

/// Listener drop counters (read from each listening socket) to deltas.
#[derive(Default)]
pub struct ListenerTracker {
    /// (address, listen time) -> drops at the last read.
    last: HashMap<(u64, u64), u32>,
}

impl ListenerTracker {
    /// Feed one read of the LISTENERS map; returns the drops of this
    /// interval per workload x port (as `CountKind::ListenDrop` keys) and
    /// the closed listeners to delete from the map.
    pub fn update(
        &mut self,
        listeners: impl IntoIterator<Item = (u64, ListenState)>,
    ) -> (Vec<(TcpKey, u64)>, Vec<u64>) {
        let mut out: HashMap<TcpKey, u64> = HashMap::new();
        let mut closed = vec![];
        let mut seen = HashMap::new();
        for (sk, l) in listeners {
            // A listener enters the map when it starts listening, with a
            // fresh counter: first sight counts from zero.
            let id = (sk, l.since_ns);
            let prev = self.last.get(&id).copied().unwrap_or(0);
            let d = l.drops.wrapping_sub(prev) as u64;
            if d > 0 {
                let key = TcpKey {
                    cgroup_id: l.cgroup_id,
                    comm: l.comm,
                    addr: [0; 16],
                    port: l.port,
                    kind: CountKind::ListenDrop as u8,
                    _pad: 0,
                    code: 0,
                };
                *out.entry(key).or_default() += d;
            }
            if l.closed != 0 {
                closed.push(sk);
            } else {
                seen.insert(id, l.drops);
            }
        }
        self.last = seen;
        (out.into_iter().collect(), closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nr: u32) -> SeriesKey {
        SeriesKey {
            cgroup_id: 1,
            comm: *b"test\0\0\0\0\0\0\0\0\0\0\0\0",
            nr,
            errno: 0,
        }
    }

    fn hist(sum: u64, idx: usize, n: u32) -> Histogram {
        let mut h = Histogram::ZERO;
        h.sum_ns = sum;
        h.buckets[idx] = n;
        h
    }

    #[test]
    fn deltas_between_reads() {
        let mut t = DeltaTracker::new(3);
        let (d, _) = t.update([(key(1), hist(100, 5, 2))], [(key(1), 4)]);
        assert_eq!(d.hist[0].1.count(), 2);
        assert_eq!(d.hist[0].1.sum_ns, 100);
        assert_eq!(d.counters, vec![(key(1), 4)]);
        let (d, _) = t.update([(key(1), hist(250, 5, 5))], [(key(1), 9)]);
        assert_eq!(d.hist[0].1.buckets[5], 3);
        assert_eq!(d.hist[0].1.sum_ns, 150);
        assert_eq!(d.counters, vec![(key(1), 5)]);
    }

    #[test]
    fn counter_reset_counts_from_zero() {
        assert_eq!(counter_delta(Some(10), 15), 5);
        assert_eq!(
            counter_delta(Some(10), 3),
            3,
            "entry recreated: 3 new events"
        );
        assert_eq!(counter_delta(None, 7), 7);
        let mut t = DeltaTracker::new(3);
        t.update([(key(1), hist(1000, 5, 10))], []);
        // Recreated entry with a smaller sum: everything in it is new.
        let (d, _) = t.update([(key(1), hist(40, 5, 1))], []);
        assert_eq!(d.hist[0].1.count(), 1);
        assert_eq!(d.hist[0].1.sum_ns, 40);
    }

    #[test]
    fn u32_bucket_wrap_is_a_delta_not_a_reset() {
        let mut prev = hist(1_000, 0, u32::MAX - 1);
        prev.zero = u32::MAX;
        let mut cur = hist(2_000, 0, 3);
        cur.zero = 1;
        let d = HistValue::between(Some(&prev), &cur);
        assert_eq!(d.buckets[0], 5);
        assert_eq!(d.zero, 2);
    }

    #[test]
    fn idle_entries_are_evicted_then_forgotten() {
        let mut t = DeltaTracker::new(2);
        t.update([(key(1), hist(10, 1, 1))], [(key(2), 1)]);
        let (d, ev) = t.update([(key(1), hist(10, 1, 1))], [(key(2), 1)]);
        assert!(d.hist.is_empty() && ev.hist.is_empty());
        let (_, ev) = t.update([(key(1), hist(10, 1, 1))], [(key(2), 1)]);
        assert_eq!(ev.hist, vec![key(1)]);
        assert_eq!(ev.counters, vec![key(2)]);
        // After deletion the kernel recreates the entry from zero.
        let (d, _) = t.update([(key(1), hist(7, 1, 1))], []);
        assert_eq!(d.hist[0].1.count(), 1);
    }
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    fn l(drops: u32, closed: u8) -> ListenState {
        ListenState {
            since_ns: 1,
            cgroup_id: 1,
            comm: *b"srv\0\0\0\0\0\0\0\0\0\0\0\0\0",
            drops,
            port: 8080,
            closed,
            _pad: 0,
        }
    }

    #[test]
    fn listener_drops_become_deltas_and_closed_ones_are_deleted() {
        let mut t = ListenerTracker::default();
        let (d, c) = t.update([(1, l(3, 0)), (2, l(0, 0))]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, 3);
        assert_eq!(d[0].0.port, 8080);
        assert!(c.is_empty());
        let (d, _) = t.update([(1, l(3, 0))]);
        assert!(d.is_empty(), "no change, no delta");
        // Two listeners of one workload and port add up; a closed one
        // reports its final count and is handed back for deletion.
        let (d, c) = t.update([(1, l(5, 1)), (2, l(4, 0))]);
        assert_eq!(d[0].1, 2 + 4);
        assert_eq!(c, vec![1]);
        let (d, _) = t.update([(2, l(4, 0))]);
        assert!(d.is_empty());
        // A new listener at a reused address counts from zero.
        let mut new = l(1, 0);
        new.since_ns = 2;
        let (d, _) = t.update([(2, new)]);
        assert_eq!(d[0].1, 1);
    }
}

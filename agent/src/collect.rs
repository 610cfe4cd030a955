//! Reading the kernel maps once per interval and turning their cumulative
//! counters into per-interval deltas.
//!
//! The kernel's values only grow, except when an entry is deleted (we evict
//! idle ones to make room) and recreated: a shrinking `sum_ns` or error count
//! marks such a reset, and the new value is then the delta. Bucket counters
//! are u32 and wrap; wrapping subtraction gives the right delta as long as
//! fewer than 2^32 events land in one bucket of one series per interval.

use std::{collections::HashMap, hash::Hash, time::Instant};

use aya::{
    maps::{HashMap as AyaHashMap, MapData},
    Pod,
};
use syscope_common::{
    counter,
    hist::{NUM_BUCKETS, SPLITS},
    maps,
    tcp::{CountKind, ListenState, SockState, TcpKey},
    Histogram, SeriesKey, SlotRef,
};
use tracing::warn;

use crate::{
    probes::{batch::BatchReader, slots::SlotMap, Probes},
    telemetry::SelfStats,
};

/// Pairs with their values copied out of a reader's buffers.
fn copied<'a, K, V: Copy + 'a, I>(it: I) -> impl Iterator<Item = (K, V)> + 'a
where
    I: Iterator<Item = (K, &'a V)> + 'a,
    K: 'a,
{
    it.map(|(k, v)| (k, *v))
}

/// A map's fill level into the self-metrics (`syscope.kernel.map.entries`).
fn entries(stats: &SelfStats, id: usize, n: usize) {
    SelfStats::set(&stats.map_entries[id], n as u64);
}

/// Reads every kernel map once per interval: deltas out, idle entries
/// evicted from the kernel, the kernel's own counters and map fill levels
/// into the self-metrics.
pub struct Collector {
    /// The syscall error counters (the latency histograms are `slots`).
    syscalls: CounterTracker,
    slots: SlotTracker,
    /// The TCP counters (the histograms are `tcp_slots`).
    tcp: CounterTracker<TcpKey>,
    tcp_slots: SlotTracker<TcpKey>,
    listeners: ListenerTracker,
    folded: FoldTracker,
    last_kernel: [u64; counter::COUNT as usize],
    readers: Readers,
}

/// One reader per map: its buffers are reused every interval.
struct Readers {
    errors: BatchReader<SeriesKey, u64>,
    tcp_counts: BatchReader<TcpKey, u64>,
    listeners: BatchReader<u64, ListenState>,
    socks: BatchReader<u64, SockState>,
}

/// One interval's deltas: syscall keys, and TCP keys (histograms, counters
/// and listener drops).
pub struct Interval {
    pub syscalls: Deltas,
    pub tcp: Deltas<TcpKey>,
    /// What the kernel folded because a map was full, by fold slot
    /// (`syscope_common::fold`).
    pub folded: Deltas<u32>,
}

impl Collector {
    /// Kernel entries idle `evict_after` intervals are deleted to make room
    /// (their series live on in userspace for `series_idle_intervals`).
    pub fn new(evict_after: u32) -> Self {
        let label = |id: usize| maps::MAPS[id].label;
        Collector {
            syscalls: CounterTracker::new(evict_after),
            slots: SlotTracker::new(maps::SYSCALL_LATENCY, evict_after),
            tcp: CounterTracker::new(evict_after),
            tcp_slots: SlotTracker::new(maps::TCP_LATENCY, evict_after),
            listeners: ListenerTracker::default(),
            folded: FoldTracker::default(),
            last_kernel: [0; counter::COUNT as usize],
            readers: Readers {
                errors: BatchReader::new(label(maps::SYSCALL_ERRORS)),
                tcp_counts: BatchReader::new(label(maps::TCP_COUNTERS)),
                listeners: BatchReader::new(label(maps::LISTENERS)),
                socks: BatchReader::new(label(maps::SOCKETS)),
            },
        }
    }

    pub fn collect(&mut self, probes: &mut Probes, stats: &SelfStats) -> Interval {
        let t0 = Instant::now();
        let syscalls = self.collect_syscalls(&mut probes.hist, &mut probes.errors, stats);

        probes.poll_listeners();
        let kernel = probes.read_counters();
        let mut tcp = Deltas::default();
        if let Some(maps) = probes.tcp.as_mut() {
            let r = &mut self.readers;
            let n_counts = r.tcp_counts.read(&maps.counts);
            entries(stats, maps::TCP_COUNTERS, n_counts);
            self.tcp
                .pressure(pressed(stats, maps::TCP_COUNTERS, n_counts));
            entries(stats, maps::LISTENERS, r.listeners.read(&maps.listeners));
            // Only counted: the batch read's count (the kernel has no
            // cheaper way to tell an LRU map's fill level), or in socket
            // storage, the kernel's stored less freed.
            let socks = if maps.sock_storage {
                let (stored, freed) = (
                    kernel[counter::SOCK_STORED as usize],
                    kernel[counter::SOCK_FREED as usize],
                );
                stored.saturating_sub(freed) as usize
            } else {
                r.socks.read(&maps.socks)
            };
            entries(stats, maps::SOCKETS, socks);
            let evict;
            (tcp, evict) = self.tcp.update(copied(r.tcp_counts.entries()));
            delete(&evict, (&mut r.tcp_counts, &mut maps.counts), &mut tcp);
            self.tcp_slots.collect(&mut maps.hist, stats, &mut tcp.hist);
            let (drops, closed) = self.listeners.update(copied(r.listeners.entries()));
            for sk in &closed {
                let _ = maps.listeners.remove(sk);
            }
            tcp.counters.extend(drops);
        }
        self.kernel_counters(kernel, stats);
        // The folded slots only fill once some map was full.
        let folded = maps::MAPS
            .iter()
            .any(|m| self.last_kernel[counter::map_full(m.id) as usize] > 0)
            .then(|| probes.folded.read())
            .flatten()
            .map_or_else(Deltas::default, |(hist, counts)| {
                self.folded.update(&hist, &counts)
            });
        SelfStats::set(&stats.collect_duration_us, t0.elapsed().as_micros() as u64);
        Interval {
            syscalls,
            tcp,
            folded,
        }
    }

    /// Hands back a consumed interval: its buffers serve the next one.
    pub fn recycle(&mut self, interval: Interval) {
        self.syscalls.recycle(interval.syscalls);
        self.tcp.recycle(interval.tcp);
    }

    /// The syscall half of [`collect`](Self::collect): read the latency and
    /// error maps (in batches), turn them into deltas, delete idle entries
    /// from the kernel, set their fill levels and the events counted. Public
    /// for the benchmark (`examples/collect_bench.rs`), which runs it on
    /// maps of its own.
    pub fn collect_syscalls(
        &mut self,
        hist: &mut SlotMap<SeriesKey>,
        errors: &mut AyaHashMap<MapData, SeriesKey, u64>,
        stats: &SelfStats,
    ) -> Deltas {
        let r = &mut self.readers;
        let n_errors = r.errors.read(errors);
        entries(stats, maps::SYSCALL_ERRORS, n_errors);
        self.syscalls
            .pressure(pressed(stats, maps::SYSCALL_ERRORS, n_errors));
        let (mut syscalls, evict) = self.syscalls.update(copied(r.errors.entries()));
        delete(&evict, (&mut r.errors, errors), &mut syscalls);
        let events = self.slots.collect(hist, stats, &mut syscalls.hist);
        SelfStats::add(&stats.events, events);
        syscalls
    }

    /// The kernel's counters into the self-metrics; one warning per
    /// interval per map that dropped updates, never silent.
    fn kernel_counters(&mut self, now: [u64; counter::COUNT as usize], stats: &SelfStats) {
        for (&cur, v) in now.iter().zip(&stats.kernel) {
            SelfStats::set(v, cur);
        }
        for m in &maps::MAPS {
            let i = counter::map_full(m.id) as usize;
            let grew = now[i].saturating_sub(self.last_kernel[i]);
            if grew > 0 {
                warn!(
                    map = m.label,
                    updates = grew,
                    "kernel map full: updates {} this interval; raise limits.kernel_maps.{}",
                    if m.folds {
                        "folded into the overflow series"
                    } else {
                        "dropped"
                    },
                    m.label
                );
            }
        }
        self.last_kernel = now;
    }
}

/// Deletes evicted counters from their kernel map (`reader` holds the read
/// they were evicted from). What an entry gained between that read and its
/// deletion is added to `out` rather than lost (see [`BatchReader::take`]).
pub fn delete<K: Pod + Eq + Hash>(
    evict: &[(K, usize)],
    (reader, map): (&mut BatchReader<K, u64>, &mut AyaHashMap<MapData, K, u64>),
    out: &mut Deltas<K>,
) {
    for &(k, pos) in evict {
        if let Some(last) = reader.take(map, &k) {
            let read = reader.values().get(pos).copied();
            match counter_delta(read, last) {
                0 => {}
                d => out.counters.push((k, d)),
            }
        }
    }
}

/// Whether map `id`, holding `n` entries at this read, is under pressure:
/// three quarters full. Its entries that did not change since the last read
/// are then deleted from the kernel at once (their counts are in this read),
/// so new workloads find room instead of folding.
fn pressed(stats: &SelfStats, id: usize, n: usize) -> bool {
    let cap = stats.map_capacity[id].load(std::sync::atomic::Ordering::Relaxed);
    cap > 1 && n as u64 * 4 >= cap * 3
}

/// Buckets compared per step when looking for the ones that moved: a
/// branch per chunk instead of per bucket, and the compiler's vector
/// registers for the chunk.
const CHUNK: usize = 8;
const _: () = assert!(NUM_BUCKETS.is_multiple_of(CHUNK));

/// Whether a chunk of buckets moved from `p` to `c`. Unless `all`, a
/// chunk that reads all zeros now is taken as unmoved without reading the
/// held one (cold memory): counts only grow, so it held zeros too, but for
/// a bucket that wrapped to exactly 0, whose increment then shows with its
/// next one (wrapping subtraction) or at the slot's last read after
/// eviction, which compares `all`.
#[inline(always)]
fn chunk_differs(c: &[u32], p: &[u32], all: bool) -> bool {
    (all || c.iter().fold(0, |acc, c| acc | c) != 0)
        && c.iter().zip(p).fold(0, |acc, (c, p)| acc | (c ^ p)) != 0
}

/// The first bucket that moved from `p` to `c` (see [`chunk_differs`]).
fn first_moved(c: &[u32; NUM_BUCKETS], p: &[u32; NUM_BUCKETS], all: bool) -> Option<usize> {
    let (cs, ps) = (c.chunks_exact(CHUNK), p.chunks_exact(CHUNK));
    let j = cs.zip(ps).position(|(c, p)| chunk_differs(c, p, all))?;
    let at = j * CHUNK;
    (at..at + CHUNK).find(|&i| c[i] != p[i])
}

/// The last bucket that moved from `p` to `c` (see [`chunk_differs`]).
fn last_moved(c: &[u32; NUM_BUCKETS], p: &[u32; NUM_BUCKETS], all: bool) -> Option<usize> {
    let (cs, ps) = (c.chunks_exact(CHUNK), p.chunks_exact(CHUNK));
    let j = cs.zip(ps).rposition(|(c, p)| chunk_differs(c, p, all))?;
    let at = j * CHUNK;
    (at..at + CHUNK).rev().find(|&i| c[i] != p[i])
}

/// The kernel's folded slots (cumulative) to deltas, by slot.
#[derive(Default)]
struct FoldTracker {
    hist: Vec<Histogram>,
    counts: Vec<u64>,
}

impl FoldTracker {
    fn update(&mut self, hist: &[Histogram], counts: &[u64]) -> Deltas<u32> {
        let mut out = Deltas::default();
        for (i, cur) in hist.iter().enumerate() {
            let _ = out.hist.push_between(i as u32, self.hist.get(i), cur);
        }
        for (i, &cur) in counts.iter().enumerate() {
            let d = counter_delta(self.counts.get(i).copied(), cur);
            if d != 0 {
                out.counters.push((i as u32, d));
            }
        }
        self.hist = hist.to_vec();
        self.counts = counts.to_vec();
        out
    }
}

/// What happened in one interval, per kernel key: histograms and counters
/// (syscall errors, or the TCP counters and listener drops).
#[derive(Debug)]
pub struct Deltas<K = SeriesKey> {
    pub hist: HistDeltas<K>,
    pub counters: Vec<(K, u64)>,
}

impl<K> Default for Deltas<K> {
    fn default() -> Self {
        Deltas {
            hist: HistDeltas::default(),
            counters: vec![],
        }
    }
}

/// One histogram's change over an interval, sparse: sum, zero count and
/// split counters, and only the range of buckets that changed (a series
/// rarely moves more than a few of its 320 buckets per interval). Added
/// into the dense cumulative [`HistValue`] by [`HistValue::add_delta`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistDelta<'a> {
    pub sum_ns: u64,
    pub zero: u64,
    pub split: [u64; SPLITS],
    /// Kernel bucket index of `buckets[0]`.
    pub first: usize,
    /// Counts from bucket `first` on, up to the last bucket that changed
    /// (the unchanged ones inside the range are zeros). Empty when no
    /// bucket changed.
    pub buckets: &'a [u32],
}

impl HistDelta<'_> {
    pub fn count(&self) -> u64 {
        self.zero + self.buckets.iter().map(|&b| u64::from(b)).sum::<u64>()
    }
}

/// One interval's histogram deltas ([`HistDelta`]), in read order. The
/// changed bucket ranges of all entries sit back to back in one buffer,
/// so a delta costs no allocation of its own.
#[derive(Debug)]
pub struct HistDeltas<K = SeriesKey> {
    entries: Vec<DeltaEntry<K>>,
    buckets: Vec<u32>,
}

/// A [`HistDelta`] as stored: counts narrowed back to the kernel's u32
/// (a delta of wrapping u32 counters fits one), its range by position in
/// `HistDeltas::buckets`.
#[derive(Debug)]
struct DeltaEntry<K> {
    key: K,
    sum_ns: u64,
    zero: u32,
    split: [u32; SPLITS],
    first: u16,
    len: u16,
    at: u32,
}

impl<K> Default for HistDeltas<K> {
    fn default() -> Self {
        HistDeltas {
            entries: vec![],
            buckets: vec![],
        }
    }
}

impl<K> HistDeltas<K> {
    fn clear(&mut self) {
        self.entries.clear();
        self.buckets.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The delta from `prev` to `cur` (`None` prev, or a shrunk sum: the
    /// entry was recreated, all of `cur`), appended unless empty, in one
    /// pass: unchanged buckets are skipped from either end and only the
    /// range between is subtracted. Same result as [`HistValue::between`]
    /// without its 2.5 KiB. Returns the delta's events if one was appended.
    pub fn push_between(
        &mut self,
        key: K,
        prev: Option<&Histogram>,
        cur: &Histogram,
    ) -> Option<u64> {
        self.push(key, prev, cur, true).map(|(events, _)| events)
    }

    /// [`push_between`](Self::push_between), and `prev` brought up to
    /// `cur` by copying only what moved (the buckets outside the delta's
    /// range are equal already). Chunks that read all zeros are skipped
    /// (see [`chunk_differs`]).
    fn push_onto(&mut self, key: K, prev: &mut Histogram, cur: &Histogram) -> Option<u64> {
        let reset = prev.sum_ns > cur.sum_ns;
        let pushed = self.push(key, Some(prev), cur, false);
        if reset {
            *prev = *cur;
        } else if let Some((_, moved)) = &pushed {
            prev.sum_ns = cur.sum_ns;
            prev.zero = cur.zero;
            prev.split = cur.split;
            prev.buckets[moved.clone()].copy_from_slice(&cur.buckets[moved.clone()]);
        }
        pushed.map(|(events, _)| events)
    }

    /// The work of [`push_between`](Self::push_between); also returns the
    /// range of buckets that moved.
    fn push(
        &mut self,
        key: K,
        prev: Option<&Histogram>,
        cur: &Histogram,
        all: bool,
    ) -> Option<(u64, std::ops::Range<usize>)> {
        let prev = match prev {
            Some(p) if p.sum_ns <= cur.sum_ns => p,
            _ => &Histogram::ZERO,
        };
        let (c, p) = (&cur.buckets, &prev.buckets);
        let sum_ns = cur.sum_ns - prev.sum_ns;
        let zero = cur.zero.wrapping_sub(prev.zero);
        let (first, end) = match first_moved(c, p, all) {
            Some(f) => (f, last_moved(c, p, all).map_or(f, |l| l.max(f)) + 1),
            // As `HistValue::is_empty`: the kernel never moves a split
            // counter without its bucket.
            None if sum_ns == 0 && zero == 0 => return None,
            None => (0, 0),
        };
        let at = self.buckets.len();
        let mut events = u64::from(zero);
        self.buckets
            .extend(c[first..end].iter().zip(&p[first..end]).map(|(c, p)| {
                let d = c.wrapping_sub(*p);
                events += u64::from(d);
                d
            }));
        self.entries.push(DeltaEntry {
            key,
            sum_ns,
            zero,
            split: std::array::from_fn(|k| cur.split[k].wrapping_sub(prev.split[k])),
            first: first as u16,
            len: (end - first) as u16,
            at: at as u32,
        });
        Some((events, first..end))
    }

    pub fn iter(&self) -> Iter<'_, K> {
        Iter {
            entries: self.entries.iter(),
            buckets: &self.buckets,
        }
    }

    /// The `i`-th delta.
    pub fn get(&self, i: usize) -> Option<(&K, HistDelta<'_>)> {
        self.entries.get(i).map(|e| e.view(&self.buckets))
    }
}

impl<K> DeltaEntry<K> {
    fn view<'a>(&'a self, buckets: &'a [u32]) -> (&'a K, HistDelta<'a>) {
        let at = self.at as usize;
        (
            &self.key,
            HistDelta {
                sum_ns: self.sum_ns,
                zero: self.zero.into(),
                split: self.split.map(u64::from),
                first: self.first.into(),
                buckets: &buckets[at..at + usize::from(self.len)],
            },
        )
    }
}

/// Iterator over [`HistDeltas`].
pub struct Iter<'a, K> {
    entries: std::slice::Iter<'a, DeltaEntry<K>>,
    buckets: &'a [u32],
}

impl<'a, K> Iterator for Iter<'a, K> {
    type Item = (&'a K, HistDelta<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(|e| e.view(self.buckets))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<'a, K> IntoIterator for &'a HistDeltas<K> {
    type Item = (&'a K, HistDelta<'a>);
    type IntoIter = Iter<'a, K>;

    fn into_iter(self) -> Iter<'a, K> {
        self.iter()
    }
}

/// Dense deltas (tests that build them by hand): counts must fit a u32.
#[cfg(test)]
impl<K> FromIterator<(K, HistValue)> for HistDeltas<K> {
    fn from_iter<I: IntoIterator<Item = (K, HistValue)>>(it: I) -> Self {
        let narrow = |v: u64| u32::try_from(v).expect("a test delta fits a u32");
        let mut out = HistDeltas::default();
        for (key, v) in it {
            let mut h = Histogram::ZERO;
            h.sum_ns = v.sum_ns;
            h.zero = narrow(v.zero);
            h.buckets = (*v.buckets).map(narrow);
            h.split = v.split.map(narrow);
            let _ = out.push_between(key, None, &h);
        }
        out
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

    /// Adds one interval's sparse delta: only its bucket range is touched.
    pub fn add_delta(&mut self, d: HistDelta<'_>) {
        self.sum_ns += d.sum_ns;
        self.zero += d.zero;
        for (a, &b) in self.buckets[d.first..].iter_mut().zip(d.buckets) {
            *a += u64::from(b);
        }
        for (a, b) in self.split.iter_mut().zip(d.split) {
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
    /// Dense: the reference [`HistDeltas::push_between`] is tested against.
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

/// Turns successive reads of a counter map into deltas, and picks the
/// entries idle long enough to be evicted from the kernel map. A read
/// allocates nothing per entry, and in the steady state hashes nothing (see
/// [`Series`]).
pub struct CounterTracker<K = SeriesKey> {
    series: Series<K>,
    evict_after: u32,
    /// The map is under pressure: the next update evicts whatever did not
    /// change since the last read.
    pressed: bool,
    /// Reads so far: entries a read did not see are forgotten after it.
    reads: u64,
    /// The buffers of a consumed interval's deltas ([`recycle`](Self::recycle)).
    spare: Deltas<K>,
}

/// The last value of each entry of one map. A batch read returns a hash map
/// in bucket order, which stays put while its keys do: an entry is found
/// at its position in the last read (no hashing, memory walked in order),
/// and by key through `index` only when the order moved.
struct Series<K> {
    slots: Vec<Slot<K>>,
    /// Key -> slot, for every live slot.
    index: HashMap<K, usize>,
    /// The slot of each position of the last read.
    order: Vec<usize>,
    /// The same for the read in progress.
    next_order: Vec<usize>,
    /// Slots to reuse.
    free: Vec<usize>,
}

struct Slot<K> {
    key: K,
    value: u64,
    /// Consecutive intervals without change.
    idle: u32,
    /// The read that last saw it ([`CounterTracker`]'s `reads`).
    seen: u64,
    live: bool,
}

impl<K: Copy + Eq + Hash> Series<K> {
    fn new() -> Self {
        Series {
            slots: vec![],
            index: HashMap::new(),
            order: vec![],
            next_order: vec![],
            free: vec![],
        }
    }

    /// Entry `pos` of read `read` against what is held for its key:
    /// returns its delta and whether the entry is to be evicted (then it is
    /// forgotten here).
    fn track(&mut self, pos: usize, k: K, cur: u64, read: u64, evict_after: u32) -> (u64, bool) {
        let at = match self.order.get(pos) {
            Some(&s) if self.slots[s].live && self.slots[s].key == k => Some(s),
            _ => self.index.get(&k).copied(),
        };
        let Some(s) = at else {
            if cur == 0 && evict_after <= 1 {
                return (0, true);
            }
            let slot = Slot {
                key: k,
                value: cur,
                idle: u32::from(cur == 0),
                seen: read,
                live: true,
            };
            let s = match self.free.pop() {
                Some(s) => {
                    self.slots[s] = slot;
                    s
                }
                None => {
                    self.slots.push(slot);
                    self.slots.len() - 1
                }
            };
            self.index.insert(k, s);
            self.next_order.push(s);
            return (cur, false);
        };
        let p = &mut self.slots[s];
        if p.value != cur {
            let d = counter_delta(Some(p.value), cur);
            p.value = cur;
            p.idle = 0;
            p.seen = read;
            self.next_order.push(s);
            return (d, false);
        }
        if p.idle + 1 >= evict_after {
            self.forget(s);
            return (0, true);
        }
        p.idle += 1;
        p.seen = read;
        self.next_order.push(s);
        (0, false)
    }

    fn forget(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        slot.live = false;
        self.index.remove(&slot.key);
        self.free.push(s);
    }

    /// After read `read`: entries gone from the kernel map are forgotten.
    fn finish(&mut self, read: u64) {
        for s in 0..self.slots.len() {
            if self.slots[s].live && self.slots[s].seen != read {
                self.forget(s);
            }
        }
        std::mem::swap(&mut self.order, &mut self.next_order);
        self.next_order.clear();
    }
}

impl<K: Copy + Eq + Hash> CounterTracker<K> {
    pub fn new(evict_after: u32) -> Self {
        CounterTracker {
            series: Series::new(),
            evict_after: evict_after.max(1),
            pressed: false,
            reads: 0,
            spare: Deltas::default(),
        }
    }

    /// Whether the map of the next [`update`](Self::update) is under
    /// pressure: entries unchanged since the last read are then evicted at
    /// once instead of after `evict_after` reads.
    pub fn pressure(&mut self, pressed: bool) {
        self.pressed = pressed;
    }

    /// Feed one full read of the map; returns the deltas (their histogram
    /// half empty, for the map's slotted histograms) and the entries the
    /// caller should delete from the kernel, by key and position in the
    /// read (already forgotten here, so a recreated entry counts from zero).
    pub fn update(
        &mut self,
        counters: impl IntoIterator<Item = (K, u64)>,
    ) -> (Deltas<K>, Vec<(K, usize)>) {
        // Into the buffers of an earlier interval if handed back: fresh
        // ones of a few MiB would be page-faulted in again every interval.
        let mut out = std::mem::take(&mut self.spare);
        out.hist.clear();
        out.counters.clear();
        let mut evict = vec![];
        self.reads += 1;
        let read = self.reads;
        let after = if self.pressed { 1 } else { self.evict_after };
        for (pos, (k, cur)) in counters.into_iter().enumerate() {
            let (d, gone) = self.series.track(pos, k, cur, read, after);
            if gone {
                evict.push((k, pos));
            }
            if d != 0 {
                out.counters.push((k, d));
            }
        }
        self.series.finish(read);
        (out, evict)
    }

    /// Hands back deltas [`update`](Self::update) returned, once consumed,
    /// so the next update reuses their buffers.
    pub fn recycle(&mut self, d: Deltas<K>) {
        self.spare = d;
    }
}

/// Where [`SlotTracker`] finds the values of slots and evicts their keys:
/// the kernel's slotted map ([`SlotMap`]), or a test's stand-in.
pub trait SlotValues<K> {
    /// The sum and zero count of `slot`: the fields programs write last,
    /// so unmoved they say the slot is unchanged.
    fn quick(&self, slot: u32) -> Option<(u64, u32)>;
    /// A copy of `slot` as it is now.
    fn read(&self, slot: u32) -> Option<Histogram>;
    /// Evict `key` from `slot`, whose value `counted` was counted for it;
    /// false when the key could not be deleted (it stays).
    fn evict(&mut self, key: K, slot: u32, counted: Histogram) -> bool;
}

impl<K: Pod> SlotValues<K> for SlotMap<K> {
    fn quick(&self, slot: u32) -> Option<(u64, u32)> {
        SlotMap::quick(self, slot)
    }

    fn read(&self, slot: u32) -> Option<Histogram> {
        SlotMap::read(self, slot)
    }

    fn evict(&mut self, key: K, slot: u32, counted: Histogram) -> bool {
        SlotMap::evict(self, key, slot, counted)
    }
}

/// Deltas of a slotted map's histograms (`probes::slots`). A slot holds
/// one series from its claim to its eviction by the agent, so what was
/// counted is held per slot: a read needs no lookup by key, and copies a
/// histogram out of the mapping only when its sum or zero count moved.
pub struct SlotTracker<K = SeriesKey> {
    /// The map's id in `maps::MAPS`.
    id: usize,
    /// The keys and their slots, read in a batch (the values are read in
    /// place).
    keys: BatchReader<K, SlotRef>,
    held: SlotsHeld<K>,
}

/// What was counted of each slot's series.
struct SlotsHeld<K> {
    slots: Vec<SlotHeld<K>>,
    evict_after: u32,
}

struct SlotHeld<K> {
    /// The series in the slot; `None` once evicted (its next key starts
    /// from zero: the slot is zeroed before it is queued again).
    key: Option<K>,
    /// What was counted of it.
    value: Histogram,
    /// Consecutive reads without change.
    idle: u32,
}

impl<K> SlotHeld<K> {
    fn from_zero(key: Option<K>) -> Self {
        SlotHeld {
            key,
            value: Histogram::ZERO,
            idle: 0,
        }
    }
}

impl<K: Copy + Eq + Pod> SlotTracker<K> {
    /// For map `id` of `maps::MAPS`.
    pub fn new(id: usize, evict_after: u32) -> Self {
        SlotTracker {
            id,
            keys: BatchReader::new(maps::MAPS[id].label),
            held: SlotsHeld::new(evict_after),
        }
    }

    /// One read of `map`: deltas into `out`, idle series evicted (after
    /// one idle read when the map is under pressure), its fill level into
    /// `stats`. Returns the events counted.
    pub fn collect(
        &mut self,
        map: &mut SlotMap<K>,
        stats: &SelfStats,
        out: &mut HistDeltas<K>,
    ) -> u64 {
        // Slots in use: the keys', and those evicted at the last read,
        // released only below.
        let n = self.keys.read(&map.keys) + map.held_back();
        entries(stats, self.id, n);
        // What the slots evicted at the last read gained since: counted,
        // not lost; then they serve new series.
        let mut events = 0;
        map.release(|k, counted, now| {
            events += out.push_between(k, Some(counted), now).unwrap_or(0);
        });
        let entries = self.keys.entries().map(|(k, &r)| (k, r));
        events
            + self
                .held
                .update(entries, map, pressed(stats, self.id, n), out)
    }
}

impl<K: Copy + Eq> SlotsHeld<K> {
    fn new(evict_after: u32) -> Self {
        SlotsHeld {
            slots: Vec::new(),
            evict_after: evict_after.max(1),
        }
    }

    /// One read of the keys (`entries`: key and slot) against the slots'
    /// `values`: deltas into `out`, idle series evicted (after one idle
    /// read when `pressed`). Returns the events counted.
    fn update(
        &mut self,
        entries: impl IntoIterator<Item = (K, SlotRef)>,
        values: &mut impl SlotValues<K>,
        pressed: bool,
        out: &mut HistDeltas<K>,
    ) -> u64 {
        let after = if pressed { 1 } else { self.evict_after };
        let mut events = 0;
        for (k, r) in entries {
            let Some((sum, zero)) = values.quick(r.slot) else {
                continue;
            };
            let i = r.slot as usize;
            if i >= self.slots.len() {
                self.slots.resize_with(i + 1, || SlotHeld::from_zero(None));
            }
            let h = &mut self.slots[i];
            if h.key != Some(k) {
                // A new series: its slot started from zero.
                *h = SlotHeld::from_zero(Some(k));
            }
            if h.value.sum_ns == sum && h.value.zero == zero {
                // Unchanged: every duration moves the sum (a nonzero one)
                // or the zero count, and the kernel stores the sum after
                // the bucket (`add_sum` in the eBPF helpers). What a read
                // may already show of an update in flight (a bucket ahead
                // of its sum) is counted with the next change, or in the
                // slot's last read after eviction.
                h.idle += 1;
                if h.idle >= after && values.evict(k, r.slot, h.value) {
                    h.key = None;
                }
                continue;
            }
            // One copy, then everything from it: programs keep adding to
            // the mapped value.
            if let Some(cur) = values.read(r.slot) {
                events += out.push_onto(k, &mut h.value, &cur).unwrap_or(0);
                h.idle = 0;
            }
        }
        events
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
            // First sight counts from the kernel's first read of the
            // counter (at listen: a fresh counter; at seeding: the history
            // of a listener older than the agent, not new drops).
            let id = (sk, l.since_ns);
            let prev = self.last.get(&id).copied().unwrap_or(l.base);
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

    /// The `i`-th histogram delta, dense.
    fn nth(d: &HistDeltas, i: usize) -> HistValue {
        let mut h = HistValue::default();
        h.add_delta(d.get(i).unwrap().1);
        h
    }

    fn hist(sum: u64, idx: usize, n: u32) -> Histogram {
        let mut h = Histogram::ZERO;
        h.sum_ns = sum;
        h.buckets[idx] = n;
        h
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
        // A histogram with a smaller sum (a zeroed slot's new series): all
        // of it is new.
        let mut d = HistDeltas::default();
        d.push_between(key(1), Some(&hist(1000, 5, 10)), &hist(40, 5, 1));
        assert_eq!(nth(&d, 0).count(), 1);
        assert_eq!(nth(&d, 0).sum_ns, 40);
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

    /// The sparse delta, densified, against the dense reference
    /// (`HistValue::between` and its emptiness filter); the count too.
    fn check_sparse(prev: Option<&Histogram>, cur: &Histogram) {
        let want = Some(HistValue::between(prev, cur)).filter(|d| !d.is_empty());
        let mut ds = HistDeltas::default();
        // Something before it, so offsets into the shared buffer are tested.
        let _ = ds.push_between(0u8, None, &hist(1, 7, 9));
        let events = ds.push_between(1u8, prev, cur);
        assert_eq!(events, want.as_ref().map(HistValue::count));
        assert_eq!(ds.len(), 1 + want.is_some() as usize);
        let Some(want) = want else { return };
        let (&k, d) = ds.get(1).unwrap();
        assert_eq!(k, 1);
        assert_eq!(d.count(), want.count());
        let mut got = HistValue::default();
        got.add_delta(d);
        assert_eq!(got, want, "prev {prev:?} cur {cur:?}");
        // The range is tight: it starts and ends at a changed bucket.
        assert_ne!(d.buckets.first(), Some(&0));
        assert_ne!(d.buckets.last(), Some(&0));
        // And adds into an existing value as the dense delta does.
        let mut a = HistValue::default();
        a.add_delta(ds.get(0).unwrap().1);
        let mut b = a.clone();
        a.add_delta(d);
        b.add(&want);
        assert_eq!(a, b);
    }

    #[test]
    fn sparse_delta_edge_cases() {
        let last = NUM_BUCKETS - 1;
        // First and last bucket, alone and together.
        check_sparse(Some(&hist(10, 0, 1)), &hist(20, 0, 4));
        check_sparse(Some(&hist(10, last, 1)), &hist(20, last, 4));
        let mut both = hist(30, 0, 2);
        both.buckets[last] = 5;
        check_sparse(Some(&hist(10, 0, 1)), &both);
        check_sparse(None, &both);
        // u32 wrap of a bucket, the zero count and a split counter.
        let mut prev = hist(1_000, 3, u32::MAX - 1);
        prev.zero = u32::MAX;
        prev.split[2] = u32::MAX;
        let mut cur = hist(2_000, 3, 3);
        cur.zero = 1;
        cur.split[2] = 4;
        check_sparse(Some(&prev), &cur);
        // Reset: a shrunk sum means all of `cur` is new.
        check_sparse(Some(&hist(1_000, 40, 100)), &hist(40, 41, 1));
        check_sparse(Some(&hist(1_000, 40, 100)), &hist(40, 40, 1));
        // Only the zero bucket (sum unchanged: durations of 0 ns).
        let mut z = hist(10, 5, 1);
        z.zero = 3;
        check_sparse(Some(&hist(10, 5, 1)), &z);
        // Only the sum (a bucket wrapped by exactly 2^32: no visible change).
        check_sparse(Some(&hist(10, 5, 1)), &hist(11, 5, 1));
        // Only a split counter: empty, as the dense reference says (the
        // kernel never moves one without its bucket).
        let mut s = hist(10, 5, 1);
        s.split[0] = 1;
        check_sparse(Some(&hist(10, 5, 1)), &s);
        // Nothing changed: filtered out.
        check_sparse(Some(&hist(10, 5, 1)), &hist(10, 5, 1));
        check_sparse(None, &Histogram::ZERO);
    }

    /// Test inputs from `seed`: `rnd(n)` is below `n` (xorshift64*: no
    /// dependency needed).
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    /// Random histograms and random moves between reads, including wraps
    /// and resets, agree with the dense reference.
    #[test]
    fn sparse_delta_matches_dense_on_random_histograms() {
        let mut rnd = rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let mut prev = Histogram::ZERO;
            prev.sum_ns = rnd(1 << 40);
            prev.zero = rnd(1 << 32) as u32;
            for _ in 0..rnd(12) {
                prev.buckets[rnd(NUM_BUCKETS as u64) as usize] = rnd(1 << 32) as u32;
            }
            for k in 0..SPLITS {
                prev.split[k] = rnd(1 << 32) as u32;
            }
            let mut cur = prev;
            // A few buckets move (clustered or spread; may wrap), or none.
            let centre = rnd(NUM_BUCKETS as u64) as usize;
            let spread = 1 + rnd(NUM_BUCKETS as u64) as usize;
            let mut added = 0u64;
            for _ in 0..rnd(6) {
                let i = (centre + rnd(spread as u64) as usize) % NUM_BUCKETS;
                let n = 1 + rnd(1_000) as u32;
                cur.buckets[i] = cur.buckets[i].wrapping_add(n);
                added += u64::from(n);
            }
            match rnd(8) {
                0 => cur.zero = cur.zero.wrapping_add(1 + rnd(5) as u32),
                1 => cur.split[rnd(SPLITS as u64) as usize] += 1,
                _ => {}
            }
            cur.sum_ns += added * rnd(1_000);
            match rnd(10) {
                // Recreated: smaller sum, fresh small counts.
                0 => {
                    cur.sum_ns = rnd(prev.sum_ns.max(1));
                    cur.buckets = [0; NUM_BUCKETS];
                    cur.buckets[centre] = 1 + rnd(9) as u32;
                    check_sparse(Some(&prev), &cur)
                }
                1 => check_sparse(None, &cur),
                _ => check_sparse(Some(&prev), &cur),
            }
        }
    }

    // Counter maps.

    #[test]
    fn counter_deltas_between_reads() {
        let mut t = CounterTracker::new(3);
        let (d, _) = t.update([(key(1), 4)]);
        assert_eq!(d.counters, vec![(key(1), 4)]);
        let (d, _) = t.update([(key(1), 9)]);
        assert_eq!(d.counters, vec![(key(1), 5)]);
        let (d, _) = t.update([(key(1), 9)]);
        assert!(d.counters.is_empty());
    }

    /// Recycled buffers start empty: nothing of the last interval leaks in.
    #[test]
    fn recycled_deltas_start_empty() {
        let mut t = CounterTracker::new(5);
        let (mut d, _) = t.update([(key(1), 1), (key(2), 1)]);
        d.hist.push_between(key(1), None, &hist(10, 3, 1));
        assert_eq!((d.hist.len(), d.counters.len()), (1, 2));
        t.recycle(d);
        let (d, _) = t.update([(key(1), 1), (key(2), 3)]);
        assert!(d.hist.is_empty());
        assert_eq!(d.counters, vec![(key(2), 2)]);
    }

    /// Entries are found by position while the read order holds, by key
    /// when it moved; gone entries are forgotten and their slots reused.
    #[test]
    fn read_order_changes_and_gone_entries() {
        let mut t = CounterTracker::new(10);
        let read = |n: &[(u32, u64)]| -> Vec<(SeriesKey, u64)> {
            n.iter().map(|&(k, v)| (key(k), v)).collect()
        };
        t.update(read(&[(1, 10), (2, 20), (3, 30)]));
        // Reordered, 2 gone, 4 new, 3 changed.
        let (d, _) = t.update(read(&[(3, 35), (4, 40), (1, 10)]));
        let got: Vec<_> = d.counters.iter().map(|(k, v)| (k.nr, *v)).collect();
        assert_eq!(got, vec![(3, 5), (4, 40)]);
        // 2 comes back: it was forgotten, so all of it is new.
        let (d, _) = t.update(read(&[(2, 25), (1, 11), (3, 35), (4, 40)]));
        let got: Vec<_> = d.counters.iter().map(|(k, v)| (k.nr, *v)).collect();
        assert_eq!(got, vec![(2, 25), (1, 1)]);
        assert_eq!(t.series.slots.len(), 4, "the slot of 2 was reused");
        assert_eq!(t.series.index.len(), 4);
    }

    #[test]
    fn idle_counters_are_evicted_then_forgotten() {
        let mut t = CounterTracker::new(2);
        t.update([(key(2), 1)]);
        let (_, ev) = t.update([(key(2), 1)]);
        assert!(ev.is_empty());
        let (_, ev) = t.update([(key(2), 1)]);
        assert_eq!(ev, vec![(key(2), 0)]);
        // After deletion the kernel recreates the entry from zero.
        let (d, _) = t.update([(key(2), 1)]);
        assert_eq!(d.counters, vec![(key(2), 1)]);
        // Under pressure: evicted after one unchanged read.
        t.pressure(true);
        let (_, ev) = t.update([(key(2), 1)]);
        assert_eq!(ev, vec![(key(2), 0)]);
    }

    // Slotted histogram maps, against the kernel's side in memory.

    /// What the programs and the agent's `SlotMap` do to a slotted map, in
    /// memory: values by slot, keys to slots, free slots, and the slots
    /// evicted and waiting for release.
    struct Kernel {
        values: Vec<Histogram>,
        keys: HashMap<SeriesKey, SlotRef>,
        free: Vec<u32>,
        pending: Vec<(SeriesKey, u32, Histogram)>,
    }

    impl Kernel {
        fn new(slots: u32) -> Self {
            Kernel {
                values: vec![Histogram::ZERO; slots as usize],
                keys: HashMap::new(),
                free: (0..slots).rev().collect(),
                pending: vec![],
            }
        }

        /// The value of `k`'s slot, claimed if `k` has none.
        fn value(&mut self, k: SeriesKey) -> &mut Histogram {
            let r = match self.keys.get(&k) {
                Some(&r) => r,
                None => {
                    let slot = self.free.pop().expect("a free slot");
                    let r = SlotRef { slot, gen: 0 };
                    self.keys.insert(k, r);
                    r
                }
            };
            &mut self.values[r.slot as usize]
        }

        /// One read, as `SlotTracker::collect` makes it: release, then
        /// the keys against the values.
        fn collect(&mut self, t: &mut SlotsHeld<SeriesKey>, pressed: bool) -> (HistDeltas, u64) {
            let mut out = HistDeltas::default();
            let mut events = 0;
            for (k, slot, counted) in std::mem::take(&mut self.pending) {
                let now = &mut self.values[slot as usize];
                events += out.push_between(k, Some(&counted), now).unwrap_or(0);
                *now = Histogram::ZERO;
                self.free.push(slot);
            }
            let mut entries: Vec<_> = self.keys.iter().map(|(&k, &r)| (k, r)).collect();
            entries.sort_by_key(|(_, r)| r.slot);
            events += t.update(entries, self, pressed, &mut out);
            (out, events)
        }
    }

    impl SlotValues<SeriesKey> for Kernel {
        fn quick(&self, slot: u32) -> Option<(u64, u32)> {
            self.values.get(slot as usize).map(|h| (h.sum_ns, h.zero))
        }

        fn read(&self, slot: u32) -> Option<Histogram> {
            self.values.get(slot as usize).copied()
        }

        fn evict(&mut self, key: SeriesKey, slot: u32, counted: Histogram) -> bool {
            self.keys.remove(&key);
            self.pending.push((key, slot, counted));
            true
        }
    }

    #[test]
    fn slot_deltas_between_reads() {
        let mut k = Kernel::new(4);
        let mut t = SlotsHeld::new(3);
        *k.value(key(1)) = hist(100, 5, 2);
        let (d, events) = k.collect(&mut t, false);
        assert_eq!((nth(&d, 0).count(), nth(&d, 0).sum_ns, events), (2, 100, 2));
        *k.value(key(1)) = hist(250, 5, 5);
        let (d, events) = k.collect(&mut t, false);
        assert_eq!(
            (nth(&d, 0).buckets[5], nth(&d, 0).sum_ns, events),
            (3, 150, 3)
        );
        let (d, events) = k.collect(&mut t, false);
        assert!(d.is_empty() && events == 0);
    }

    /// Deltas of many slots share one buffer: each reads back its own.
    #[test]
    fn many_deltas_share_one_buffer() {
        let mut k = Kernel::new(50);
        let mut t = SlotsHeld::new(3);
        let read = |r: u32| -> Vec<Histogram> {
            (0..50)
                .map(|i| {
                    let mut h = hist(u64::from(r) * 100 + u64::from(i), i as usize, r);
                    h.buckets[(i as usize * 7) % NUM_BUCKETS] += r * i;
                    h
                })
                .collect()
        };
        let (first, second) = (read(1), read(2));
        for (i, h) in first.iter().enumerate() {
            *k.value(key(i as u32)) = *h;
        }
        k.collect(&mut t, false);
        for (i, h) in second.iter().enumerate() {
            *k.value(key(i as u32)) = *h;
        }
        let (d, events) = k.collect(&mut t, false);
        assert_eq!(d.len(), 50);
        let mut counted = 0;
        for (k, h) in &d {
            let i = k.nr as usize;
            let mut got = HistValue::default();
            got.add_delta(h);
            assert_eq!(got, HistValue::between(Some(&first[i]), &second[i]));
            counted += got.count();
        }
        assert_eq!(events, counted);
    }

    /// A read that caught an update between its bucket and its sum (the
    /// kernel adds the sum last) shows a moved bucket under the old sum: it
    /// is taken as unchanged, and the bucket counted with the next change.
    #[test]
    fn a_bucket_ahead_of_its_sum_counts_with_the_next_change() {
        let mut k = Kernel::new(1);
        let mut t = SlotsHeld::new(10);
        *k.value(key(1)) = hist(100, 5, 1);
        k.collect(&mut t, false);
        *k.value(key(1)) = hist(100, 5, 2);
        let (d, _) = k.collect(&mut t, false);
        assert!(d.is_empty());
        *k.value(key(1)) = hist(150, 5, 2);
        let (d, events) = k.collect(&mut t, false);
        assert_eq!(
            (nth(&d, 0).buckets[5], nth(&d, 0).sum_ns, events),
            (1, 50, 1)
        );
    }

    /// An idle series is evicted with what was counted of it; its slot's
    /// last read, an interval later, counts what the quick test skipped
    /// (a bucket ahead of its sum) and anything that landed since. Then a
    /// new series gets the slot, from zero.
    #[test]
    fn eviction_counts_late_updates_then_the_slot_serves_a_new_series() {
        let mut k = Kernel::new(1);
        let mut t = SlotsHeld::new(2);
        *k.value(key(1)) = hist(100, 5, 1);
        k.collect(&mut t, false);
        // A bucket ahead of its sum: unchanged, then idle twice: evicted.
        *k.value(key(1)) = hist(100, 5, 2);
        k.collect(&mut t, false);
        let (d, _) = k.collect(&mut t, false);
        assert!(d.is_empty() && k.keys.is_empty());
        // An update in flight lands in the slot after the eviction.
        k.values[0].buckets[7] += 1;
        k.values[0].sum_ns += 30;
        let (d, events) = k.collect(&mut t, false);
        assert_eq!(d.len(), 1);
        let (dk, _) = d.get(0).unwrap();
        assert_eq!(*dk, key(1));
        let v = nth(&d, 0);
        assert_eq!(
            (v.buckets[5], v.buckets[7], v.sum_ns, events),
            (1, 1, 30, 2)
        );
        assert_eq!(k.values[0], Histogram::ZERO, "released slots are zeroed");
        *k.value(key(2)) = hist(7, 1, 1);
        let (d, events) = k.collect(&mut t, false);
        assert_eq!(
            (*d.get(0).unwrap().0, nth(&d, 0).sum_ns, events),
            (key(2), 7, 1)
        );
    }

    /// Under pressure an unchanged series goes after one idle read.
    #[test]
    fn pressure_evicts_after_one_idle_read() {
        let mut k = Kernel::new(2);
        let mut t = SlotsHeld::new(10);
        *k.value(key(1)) = hist(10, 1, 1);
        *k.value(key(2)) = hist(10, 1, 1);
        k.collect(&mut t, true);
        *k.value(key(2)) = hist(20, 1, 2);
        k.collect(&mut t, true);
        assert_eq!(k.keys.keys().copied().collect::<Vec<_>>(), vec![key(2)]);
    }

    /// A bucket that wrapped to exactly 0 in a chunk of zeros is not seen
    /// by the quick scan: its increment shows with the next one, or in the
    /// slot's last read after eviction. Nothing is lost.
    #[test]
    fn a_bucket_wrapped_to_zero_is_counted_later_not_lost() {
        let at = 100;
        // Bucket 5 holds `five`, bucket `at` (alone in its chunk) `n`.
        let h = |sum: u64, five: u32, n: u32| {
            let mut h = hist(sum, 5, five);
            h.buckets[at] = n;
            h
        };
        let mut k = Kernel::new(1);
        let mut t = SlotsHeld::new(10);
        *k.value(key(1)) = h(10, 1, u32::MAX);
        k.collect(&mut t, false);
        // One more in bucket `at` (wraps to 0) and one in bucket 5.
        *k.value(key(1)) = h(30, 2, 0);
        let (d, _) = k.collect(&mut t, false);
        assert_eq!(nth(&d, 0).count(), 1);
        *k.value(key(1)) = h(50, 2, 1);
        let (d, _) = k.collect(&mut t, false);
        assert_eq!(nth(&d, 0).buckets[at], 2, "the wrapped one and the new one");
        // Through eviction.
        let mut k = Kernel::new(1);
        let mut t = SlotsHeld::new(1);
        *k.value(key(1)) = h(10, 1, u32::MAX);
        k.collect(&mut t, false);
        *k.value(key(1)) = h(30, 2, 0);
        let (d, _) = k.collect(&mut t, false);
        assert_eq!(nth(&d, 0).count(), 1);
        k.collect(&mut t, false);
        let (d, _) = k.collect(&mut t, false);
        assert_eq!(nth(&d, 0).buckets[at], 1);
    }

    /// Reads of series as the kernel makes them (every duration moves the
    /// sum or the zero count), with idle spells long enough for the agent
    /// to evict them and a new slot after: the deltas add up to what the
    /// kernel counted, bucket by bucket.
    #[test]
    fn deltas_add_up_to_the_kernel_counts() {
        let mut rnd = rng(0x2545_F491_4F6C_DD1D);
        let mut k = Kernel::new(4);
        let mut t = SlotsHeld::new(2);
        // What the kernel counted, over all slots the series had.
        let mut truth = HistValue::default();
        let mut got = HistValue::default();
        for _ in 0..3_000 {
            // Quiet now and then: two idle reads evict the series.
            if rnd(8) != 0 {
                let centre = rnd(NUM_BUCKETS as u64) as usize;
                let h = k.value(key(1));
                for _ in 0..rnd(4) {
                    let ns = 1 + rnd(1_000);
                    match rnd(10) {
                        0 => {
                            h.zero += 1;
                            truth.zero += 1;
                        }
                        _ => {
                            let i = (centre + rnd(60) as usize) % NUM_BUCKETS;
                            h.buckets[i] += 1;
                            truth.buckets[i] += 1;
                            if rnd(3) == 0 {
                                h.split[i % SPLITS] += 1;
                                truth.split[i % SPLITS] += 1;
                            }
                        }
                    }
                    h.sum_ns += ns;
                    truth.sum_ns += ns;
                }
            }
            let (d, _) = k.collect(&mut t, false);
            for (_, h) in &d {
                got.add_delta(h);
            }
        }
        k.collect(&mut t, false);
        let (d, _) = k.collect(&mut t, false);
        for (_, h) in &d {
            got.add_delta(h);
        }
        assert_eq!(got, truth);
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
            base: 0,
            port: 8080,
            closed,
            _pad: [0; 5],
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
        // A listener older than the agent: its drops before the seeding
        // are history, only later ones count.
        let mut old = l(24, 0);
        (old.since_ns, old.base) = (3, 24);
        let (d, _) = t.update([(3, old)]);
        assert!(d.is_empty(), "{d:?}");
        old.drops = 26;
        let (d, _) = t.update([(3, old)]);
        assert_eq!(d[0].1, 2);
    }
}

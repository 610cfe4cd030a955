//! The agent's batch map reader (`BPF_MAP_LOOKUP_BATCH`) on real kernel
//! maps: every entry exactly once, whatever the buffer size, for hash and
//! LRU hash maps, full, partly filled and empty.
//!
//! Needs root (CAP_BPF) to create maps: without it each test says it skipped.

mod common;

use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd as _, OwnedFd},
};

use aya::maps::{HashMap, Map, MapData};
use common::{kernel_at_least, require_root};
use syscope::{
    collect::{delete, CounterTracker},
    probes::batch::{BatchReader, Route},
};
use syscope_common::{Histogram, SeriesKey};

fn key(i: u32) -> SeriesKey {
    SeriesKey {
        cgroup_id: 1000 + u64::from(i),
        comm: *b"batch-test\0\0\0\0\0\0",
        nr: i % 451,
        errno: 0,
    }
}

fn hist(i: u32) -> Histogram {
    let mut h = Histogram::ZERO;
    h.sum_ns = 1_000 * u64::from(i) + 7;
    h.zero = i;
    h.buckets[(i as usize) % h.buckets.len()] = i + 1;
    h.split[(i as usize) % h.split.len()] = i ^ 0x55;
    h
}

/// A syscall-latency-shaped hash map (the agent's key and value types)
/// holding `n` entries.
fn latency_map(max_entries: u32, n: u32) -> HashMap<MapData, SeriesKey, Histogram> {
    let mut m = HashMap::<MapData, SeriesKey, Histogram>::create(max_entries, 0)
        .expect("creating a hash map (BPF_MAP_CREATE)");
    for i in 0..n {
        m.insert(key(i), hist(i), 0).expect("insert");
    }
    m
}

/// What a reader read, by key; fails on a key read twice.
fn by_key(r: &BatchReader<SeriesKey, Histogram>) -> BTreeMap<SeriesKey, Histogram> {
    let mut out = BTreeMap::new();
    for (k, v) in r.entries() {
        assert!(out.insert(k, *v).is_none(), "key read twice: {k:?}");
    }
    out
}

fn expected(n: u32) -> BTreeMap<SeriesKey, Histogram> {
    (0..n).map(|i| (key(i), hist(i))).collect()
}

/// A full map, read with buffers sized from the map (one call) and with a
/// one-entry buffer (many calls, and buckets that do not fit: ENOSPC, grow,
/// retry): the same entries, each once, with their values.
#[test]
fn full_map_read_whole_in_batches() {
    if !require_root() {
        return;
    }
    let n = 4096;
    let map = latency_map(n, n);
    let mut r = BatchReader::new("test");
    assert_eq!(r.read(&map), n as usize);
    assert_eq!(r.route(), Some(Route::Batch));
    assert_eq!(r.capacity(), n as usize, "sized from max_entries, once");
    assert_eq!(by_key(&r), expected(n));

    let mut small = BatchReader::with_capacity("test", 1);
    assert_eq!(small.read(&map), n as usize);
    assert_eq!(small.route(), Some(Route::Batch));
    assert_eq!(by_key(&small), expected(n));

    // The old route gives the same.
    let mut walk = BatchReader::per_key("test");
    assert_eq!(walk.read(&map), n as usize);
    assert_eq!(by_key(&walk), expected(n));
}

/// Buffers are reused: later reads see deletions and updates, and neither
/// grow nor move the buffers.
#[test]
fn reads_reuse_their_buffers() {
    if !require_root() {
        return;
    }
    let mut map = latency_map(1000, 700);
    let mut r = BatchReader::new("test");
    assert_eq!(r.read(&map), 700);
    let (cap, ptr) = (r.capacity(), r.keys().as_ptr());
    for i in 0..300 {
        map.remove(&key(i)).unwrap();
    }
    let mut h = hist(5);
    h.sum_ns += 1;
    map.insert(key(400), h, 0).unwrap();
    assert_eq!(r.read(&map), 400);
    let got = by_key(&r);
    assert_eq!(got.len(), 400);
    assert!(!got.contains_key(&key(0)) && !got.contains_key(&key(299)));
    assert_eq!(got[&key(400)], h);
    assert_eq!(got[&key(699)], hist(699));
    assert_eq!((r.capacity(), r.keys().as_ptr()), (cap, ptr));
}

/// An empty map: zero entries, no error, the batch route kept.
#[test]
fn empty_map_reads_nothing() {
    if !require_root() {
        return;
    }
    let map = latency_map(4096, 0);
    let mut r = BatchReader::new("test");
    assert_eq!(r.read(&map), 0);
    assert!(r.is_empty());
    assert_eq!(r.route(), Some(Route::Batch));
    // And after it was filled and emptied again.
    let mut map = latency_map(64, 64);
    assert_eq!(r.read(&map), 64);
    for i in 0..64 {
        map.remove(&key(i)).unwrap();
    }
    assert_eq!(r.read(&map), 0);
}

/// `BPF_MAP_TYPE_LRU_HASH` (the sockets map's type, which aya opens as a
/// HashMap) made with a raw BPF_MAP_CREATE: the agent counts it with a batch
/// read.
#[test]
fn lru_map_counted_in_batches() {
    if !require_root() {
        return;
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    // union bpf_attr, the map-create member's first fields: map_type,
    // key_size, value_size, max_entries, map_flags.
    let attr: [u32; 5] = [BPF_MAP_TYPE_LRU_HASH, 8, 64, 8192, 0];
    // SAFETY: a valid prefix of bpf_attr of the size passed; the kernel
    // only reads it and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd this test owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let map = Map::from_map_data(MapData::from_fd(fd).unwrap()).unwrap();
    assert!(matches!(map, Map::LruHashMap(_)));
    let mut map = HashMap::<MapData, u64, [u64; 8]>::try_from(map).unwrap();
    let n = 3000u64;
    for sk in 0..n {
        map.insert(0xffff_8880_0000_0000 + sk * 64, [sk; 8], 0)
            .unwrap();
    }
    let mut r = BatchReader::new("sockets");
    assert_eq!(r.read(&map), n as usize);
    assert_eq!(r.route(), Some(Route::Batch));
    let mut keys: Vec<u64> = r.keys().to_vec();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n as usize);
    assert!(r
        .entries()
        .all(|(k, v)| *v == [(k - 0xffff_8880_0000_0000) / 64; 8]));
}

/// An evicted counter is read and deleted in one command: what it gained
/// after the read it was evicted from (a program's update racing the
/// eviction) is in the deltas, not lost. Needs Linux 5.14+ (hash maps'
/// lookup-and-delete); older kernels delete it alone, and the test says so.
#[test]
fn an_update_between_read_and_eviction_is_counted() {
    if !require_root() {
        return;
    }
    let mut count_map = HashMap::<MapData, SeriesKey, u64>::create(8, 0).unwrap();
    for i in 0..7 {
        count_map.insert(key(i), 10 + u64::from(i), 0).unwrap();
    }
    let mut cr = BatchReader::new("c");
    let mut t = CounterTracker::new(3);
    let read = |t: &mut CounterTracker, cr: &mut BatchReader<_, _>| {
        cr.read(&count_map);
        t.update(cr.entries().map(|(k, v)| (k, *v)))
    };
    let (first, _) = read(&mut t, &mut cr);
    assert_eq!(first.counters.len(), 7);
    // Under pressure, nothing changed: all are evicted from this read.
    t.pressure(true);
    let (mut d, ev) = read(&mut t, &mut cr);
    assert!(d.counters.is_empty());
    assert_eq!(ev.len(), 7);
    // Between the read and the eviction, key 3 gains 4 errors.
    count_map.insert(key(3), 13 + 4, 0).unwrap();
    delete(&ev, (&mut cr, &mut count_map), &mut d);
    assert_eq!(count_map.keys().count(), 0, "every evicted entry deleted");
    if !kernel_at_least(5, 14) {
        assert!(d.counters.is_empty());
        eprintln!(
            "SKIPPED PART: this kernel has no lookup-and-delete for hash maps (Linux 5.14+): \
             the update was lost, as documented"
        );
        return;
    }
    assert_eq!(d.counters, vec![(key(3), 4)]);
}

/// (events, sum_ns) of `key` in one interval's deltas.
fn counted(d: &syscope::collect::Deltas, key: &SeriesKey) -> (u64, u64) {
    d.hist
        .iter()
        .filter(|(k, _)| *k == key)
        .fold((0, 0), |(n, s), (_, h)| (n + h.count(), s + h.sum_ns))
}

/// A slotted map (the syscall latency map's layout) through the agent's
/// collection: an evicted series' slot is held back one interval, what
/// still landed in it is counted for that series, and only then does the
/// slot serve a new key, zeroed and with a new generation.
#[test]
fn an_evicted_slot_counts_late_updates_then_serves_a_new_key() {
    use syscope::{collect::Collector, probes::slots::SlotMap, telemetry::SelfStats};
    if !require_root() {
        return;
    }
    let mut slots = SlotMap::<SeriesKey>::create(1).expect("creating a slotted map");
    let mut errors = HashMap::<MapData, SeriesKey, u64>::create(4, 0).expect("an error map");
    let stats = SelfStats::default();
    // Evicted after one idle interval.
    let mut c = Collector::new(1);
    let (a, b) = (key(1), key(2));
    let mut h = Histogram::ZERO;
    h.sum_ns = 100;
    h.buckets[3] = 1;
    let r = slots.claim(&a, &h).expect("a free slot");
    assert_eq!(r.gen, 0);
    // One slot: nothing left for another key.
    assert!(slots.claim(&b, &h).is_none(), "the only slot is taken");

    let d = c.collect_syscalls(&mut slots, &mut errors, &stats);
    assert_eq!(counted(&d, &a), (1, 100));
    // Idle: evicted. Its key goes, its slot is held back.
    let d = c.collect_syscalls(&mut slots, &mut errors, &stats);
    assert_eq!(counted(&d, &a), (0, 0));
    assert!(slots.keys.get(&a, 0).is_err(), "the evicted key is deleted");
    assert!(slots.claim(&b, &h).is_none(), "the slot is held for a read");

    // A program that held the slot across the eviction adds two more.
    h.sum_ns = 300;
    h.buckets[3] = 3;
    slots.store(r, &h);
    let d = c.collect_syscalls(&mut slots, &mut errors, &stats);
    assert_eq!(
        counted(&d, &a),
        (2, 200),
        "late updates counted for the key"
    );
    assert_eq!(
        slots.lookup(r.slot),
        Some(Histogram::ZERO),
        "released zeroed"
    );

    // Now the slot serves another key, under a new generation.
    let mut hb = Histogram::ZERO;
    hb.sum_ns = 50;
    hb.buckets[7] = 5;
    let rb = slots.claim(&b, &hb).expect("the released slot");
    assert_eq!((rb.slot, rb.gen), (r.slot, r.gen + 1));
    let d = c.collect_syscalls(&mut slots, &mut errors, &stats);
    assert_eq!(counted(&d, &b), (5, 50));
    assert_eq!(counted(&d, &a), (0, 0));
}

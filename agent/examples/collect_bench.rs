//! Collection cost at a full map, for `cargo xtask bench` (xtask/src/bench_collect.rs).
//!
//! Makes standalone kernel maps shaped like the agent's syscall maps
//! (`SYSCALL_LATENCY`: a slotted map, `SeriesKey` -> slot of a mapped
//! `Histogram` array; `SYSCALL_ERRORS`: `SeriesKey` -> u64, a hash map; at
//! their default sizes), fills both, and times, in alternating rounds:
//! - (a) key by key: aya's `iter()` over the keys and the error map, and a
//!   lookup per slot of the values array, collected into Vecs;
//! - (b) raw batch: a plain loop of `BPF_MAP_LOOKUP_BATCH` over the keys,
//!   the values array and the error map into preallocated buffers, nothing
//!   else;
//! - (c) the agent's collection: `Collector::collect_syscalls` (keys in a
//!   batch, histograms read in place, deltas, eviction check,
//!   self-metrics), after every entry changed (worst case: a delta per
//!   entry) and when none did (idle series); its deltas handed back after
//!   each (untimed), as the daemon does.
//!
//! Between rounds every entry is updated (untimed). Prints one JSON object.
//! Needs root (CAP_BPF). Usage: collect_bench [--rounds N]

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Instant,
};

use aya::maps::{HashMap, IterableMap as _, MapData};
use syscope::{
    collect::{Collector, Deltas, Interval},
    probes::slots::SlotMap,
    telemetry::SelfStats,
};
use syscope_common::{maps, Histogram, SeriesKey, SlotRef};

fn key(i: u32) -> SeriesKey {
    let mut comm = *b"bench-proc-0000\0";
    comm[11..15].copy_from_slice(format!("{:04}", i % 10_000).as_bytes());
    SeriesKey {
        cgroup_id: 4_000 + u64::from(i / 64),
        comm,
        nr: i % 64,
        errno: 0,
    }
}

/// A histogram with a few busy buckets, as a real series has; `round`
/// moves it on.
fn hist(i: u32, round: u32) -> Histogram {
    let mut h = Histogram::ZERO;
    h.sum_ns = 1_000_000 * u64::from(i + 1) + u64::from(round) * 777;
    h.zero = round;
    for b in 0..8 {
        h.buckets[((i as usize) + b * 13) % h.buckets.len()] = (i + 1) * (b as u32 + 1) + round;
    }
    h
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// (b): BPF_MAP_LOOKUP_BATCH until ENOENT, nothing else. Returns entries.
fn raw_batch(
    fd: i32,
    keys: &mut [u8],
    values: &mut [u8],
    key_size: usize,
    value_size: usize,
) -> usize {
    #[repr(C)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let cap = keys.len() / key_size;
    let (mut tok_in, mut tok_out) = ([0u64; 8], [0u64; 8]);
    let mut total = 0;
    let mut first = true;
    loop {
        let mut a = Attr {
            in_batch: if first { 0 } else { tok_in.as_ptr() as u64 },
            out_batch: tok_out.as_mut_ptr() as u64,
            keys: keys[total * key_size..].as_mut_ptr() as u64,
            values: values[total * value_size..].as_mut_ptr() as u64,
            count: (cap - total) as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: buffers with room for `count` keys and values of the map's
        // sizes, tokens of 64 bytes (>= the u32 a hash map writes).
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut a as *mut Attr,
                56u32,
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        if r < 0 && errno != Some(libc::ENOENT) {
            panic!("BPF_MAP_LOOKUP_BATCH: {}", std::io::Error::last_os_error());
        }
        total += a.count as usize;
        if r < 0 {
            return total;
        }
        assert!(
            total < cap,
            "more entries than max_entries: the map changed while read"
        );
        std::mem::swap(&mut tok_in, &mut tok_out);
        first = false;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let mut rounds = 15u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            _ => panic!("usage: collect_bench [--rounds N]"),
        }
    }
    let hist_n = maps::MAPS[maps::SYSCALL_LATENCY].default_entries;
    let err_n = maps::MAPS[maps::SYSCALL_ERRORS].default_entries;
    let mut slots = SlotMap::<SeriesKey>::create(hist_n).expect("creating maps (root needed)");
    let mut err_map =
        HashMap::<MapData, SeriesKey, u64>::create(err_n, 0).expect("creating a hash map");
    let refs: Vec<_> = (0..hist_n)
        .map(|i| slots.claim(&key(i), &hist(i, 0)).expect("a free slot"))
        .collect();
    let fill =
        |h: &mut SlotMap<SeriesKey>, e: &mut HashMap<MapData, SeriesKey, u64>, round: u32| {
            for (i, &r) in (0..hist_n).zip(&refs) {
                h.store(r, &hist(i, round));
            }
            for i in 0..err_n {
                let mut k = key(i);
                k.errno = 1 + i % 5;
                e.insert(k, u64::from(i) + u64::from(round), 0)
                    .expect("insert");
            }
        };
    fill(&mut slots, &mut err_map, 0);

    let (hk, hv, rs) = (
        size_of::<SeriesKey>(),
        size_of::<Histogram>(),
        size_of::<SlotRef>(),
    );
    let n = hist_n as usize;
    let (mut raw_hk, mut raw_hr) = (vec![0u8; hk * n], vec![0u8; rs * n]);
    // Room for one more: an array read that fills the buffer exactly
    // ends with a call that finds nothing, not ENOENT at once.
    let (mut raw_vk, mut raw_hv) = (vec![0u8; 4 * (n + 1)], vec![0u8; hv * (n + 1)]);
    let (mut raw_ek, mut raw_ev) = (
        vec![0u8; hk * err_n as usize],
        vec![0u8; 8 * err_n as usize],
    );
    let kfd = slots.keys.map().fd().as_fd().as_raw_fd();
    let vfd = slots.values_fd();
    let efd = err_map.map().fd().as_fd().as_raw_fd();

    let stats = SelfStats::default();
    let mut collector = Collector::new(1_000_000);
    // Warm-up: the collector's first read sizes its buffers and learns
    // every series.
    collector.collect_syscalls(&mut slots, &mut err_map, &stats);

    let (mut a, mut b, mut c_changed, mut c_idle) = (vec![], vec![], vec![], vec![]);
    let mut changed_deltas = 0;
    for round in 1..=rounds {
        fill(&mut slots, &mut err_map, round);

        let t = Instant::now();
        let d = collector.collect_syscalls(&mut slots, &mut err_map, &stats);
        c_changed.push(ms(t));
        changed_deltas = d.hist.len() + d.counters.len();
        // Handed back once consumed, as the daemon does after aggregating.
        let recycle = |c: &mut Collector, syscalls| {
            c.recycle(Interval {
                syscalls,
                tcp: Deltas::default(),
                folded: Deltas::default(),
            })
        };
        recycle(&mut collector, d);

        let t = Instant::now();
        let d = collector.collect_syscalls(&mut slots, &mut err_map, &stats);
        c_idle.push(ms(t));
        assert!(d.hist.is_empty() && d.counters.is_empty());
        recycle(&mut collector, d);

        let t = Instant::now();
        let h: Vec<_> = slots
            .keys
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, r)| Some((k, slots.lookup(r.slot)?)))
            .collect();
        let e: Vec<_> = err_map.iter().filter_map(Result::ok).collect();
        a.push(ms(t));
        assert_eq!((h.len(), e.len()), (hist_n as usize, err_n as usize));
        drop((h, e));

        let t = Instant::now();
        let k = raw_batch(kfd, &mut raw_hk, &mut raw_hr, hk, rs);
        let v = raw_batch(vfd, &mut raw_vk, &mut raw_hv, 4, hv);
        let m = raw_batch(efd, &mut raw_ek, &mut raw_ev, hk, 8);
        b.push(ms(t));
        assert_eq!((k, v, m), (n, n, err_n as usize));
    }
    let entries = SelfStats::get(&stats.map_entries[maps::SYSCALL_LATENCY]);
    assert_eq!(entries, u64::from(hist_n));
    println!(
        "{{\"latency_entries\": {hist_n}, \"error_entries\": {err_n}, \"histogram_bytes\": {hv}, \"rounds\": {rounds}, \
         \"deltas_when_changed\": {changed_deltas}, \
         \"per_key_ms\": {:.3}, \"raw_batch_ms\": {:.3}, \"collect_changed_ms\": {:.3}, \"collect_idle_ms\": {:.3}}}",
        median(&mut a),
        median(&mut b),
        median(&mut c_changed),
        median(&mut c_idle)
    );
}

//! The agent's side of a slotted map (`syscope_common::maps::MapKind::Slots`):
//! the keys' hash (key -> slot), the values array mapped into our memory
//! and read in place, each slot's generation, and the queue of free slots.
//!
//! Life of a slot: the agent queues every slot at load; a program claims
//! one for a new key and keeps using it. When the agent evicts the key it
//! deletes the key, then moves the slot's generation (programs holding the
//! slot see that and resolve the key again), and keeps the slot aside with
//! the value it last counted. At the next read, an interval later, anything
//! that still landed in the slot is counted for the evicted key, and the
//! slot is zeroed and queued again.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, Queue},
    Ebpf, Pod,
};
use syscope_common::{
    maps::{MapKind, MapSpec},
    Histogram, SlotRef,
};

use tracing::warn;

use super::ProbeError;

/// `BPF_F_MMAPABLE`, as the eBPF object declares the values array.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A histogram in 8-byte words.
const WORDS: usize = size_of::<Histogram>() / 8;
const _: () = assert!(size_of::<Histogram>() == WORDS * 8);
const _: () = assert!(std::mem::offset_of!(Histogram, sum_ns) == 0);
const _: () = assert!(std::mem::offset_of!(Histogram, zero) == 8);
#[cfg(not(target_endian = "little"))]
compile_error!("the zero count is read as the low half of a word");

/// The values array, mapped: `len` histograms at `base`.
struct Mapped {
    base: NonNull<Histogram>,
    len: usize,
    bytes: usize,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory owned by this value; the
// kernel writes it concurrently, which every access below allows for
// (volatile reads and writes of whole values).
unsafe impl Send for Mapped {}

impl Mapped {
    fn new(map: MapData, len: usize) -> io::Result<Self> {
        // The kernel maps whole pages of 8-byte aligned elements.
        let page = page_size();
        let bytes = (len * size_of::<Histogram>()).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, of no more than
        // the array's size; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapped {
            base,
            len,
            bytes,
            _map: map,
        })
    }

    /// Slot `i` as 8-byte words (`None` beyond the array). Programs add to
    /// the slot with atomic instructions meanwhile, so it is only ever read
    /// with atomic loads, a word at a time: every counter read whole.
    fn words(&self, i: u32) -> Option<&[AtomicU64; WORDS]> {
        let i = i as usize;
        // SAFETY: in bounds of the mapping, 8-byte aligned (page-aligned
        // base, size a multiple of 8); atomics may alias memory another
        // party (the kernel) writes atomically.
        (i < self.len).then(|| unsafe { &*self.base.as_ptr().add(i).cast::<[AtomicU64; WORDS]>() })
    }

    /// A copy of slot `i` as it is now (`None` beyond the array). A bucket
    /// may be ahead of the sum (the kernel adds the sum last): the reader
    /// counts such a bucket with the next change (see `collect`).
    fn read(&self, i: u32) -> Option<Histogram> {
        let w = self.words(i)?;
        let mut out = [0u64; WORDS];
        for (o, w) in out.iter_mut().zip(w) {
            *o = w.load(Ordering::Relaxed);
        }
        // SAFETY: `Histogram` is repr(C) plain data of exactly these words
        // (asserted below), valid for any bit pattern.
        Some(unsafe { std::mem::transmute::<[u64; WORDS], Histogram>(out) })
    }

    /// The sum and zero count of slot `i` (the fields written last).
    fn quick(&self, i: u32) -> Option<(u64, u32)> {
        let w = self.words(i)?;
        // The sum is word 0, the zero count the low half of word 1
        // (asserted below; x86_64 and aarch64 are little-endian).
        Some((
            w[0].load(Ordering::Relaxed),
            w[1].load(Ordering::Relaxed) as u32,
        ))
    }

    /// Zero slot `i`: only for a slot no program holds.
    fn clear(&mut self, i: u32) {
        self.store(i, &Histogram::ZERO);
    }

    /// Overwrite slot `i` (tests stand in for the kernel with it).
    fn store(&mut self, i: u32, h: &Histogram) {
        // SAFETY: plain data of exactly `WORDS` words.
        let src = unsafe { std::mem::transmute::<Histogram, [u64; WORDS]>(*h) };
        if let Some(w) = self.words(i) {
            for (w, v) in w.iter().zip(src) {
                w.store(v, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A slotted map of histograms keyed by `K`.
pub struct SlotMap<K> {
    /// key -> slot: read in batches each interval.
    pub keys: HashMap<MapData, K, SlotRef>,
    gens: Array<MapData, u32>,
    free: Queue<MapData, u32>,
    values: Mapped,
    /// Evicted at the last read, released at the next: (key, slot, the
    /// value counted for the key).
    pending: Vec<(K, u32, Histogram)>,
}

impl<K: Pod> SlotMap<K> {
    /// The maps of `spec` from the loaded object, every slot queued.
    pub fn take(ebpf: &mut Ebpf, spec: &'static MapSpec) -> Result<Self, ProbeError> {
        let MapKind::Slots { values, gens, free } = spec.kind else {
            return Err(ProbeError::Missing(spec.object));
        };
        let err = |source| ProbeError::Map {
            name: spec.label,
            source,
        };
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(ProbeError::Missing(name));
        let keys = HashMap::try_from(take(spec.object)?).map_err(err)?;
        let gens = Array::try_from(take(gens)?).map_err(err)?;
        let free = Queue::try_from(take(free)?).map_err(err)?;
        let values = match take(values)? {
            Map::Array(m) => m,
            _ => return Err(ProbeError::Missing(values)),
        };
        Self::assemble(keys, gens, free, values).map_err(err)
    }

    /// A standalone slotted map of `entries` (benchmarks and tests).
    pub fn create(entries: u32) -> Result<Self, MapError> {
        let keys = HashMap::create(entries, 0)?;
        let gens = Array::create(entries, 0)?;
        let free = Queue::create(entries, 0)?;
        let obj = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
            4,
            size_of::<Histogram>() as u32,
            entries,
            BPF_F_MMAPABLE,
        );
        let values = MapData::create(obj, "slot_values", None)?;
        Self::assemble(keys, gens, free, values)
    }

    fn assemble(
        keys: HashMap<MapData, K, SlotRef>,
        gens: Array<MapData, u32>,
        mut free: Queue<MapData, u32>,
        values: MapData,
    ) -> Result<Self, MapError> {
        let n = values.info()?.max_entries();
        for slot in 0..n.min(free.capacity()) {
            free.push(slot, 0)?;
        }
        let values = Mapped::new(values, n as usize).map_err(|io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error,
            })
        })?;
        Ok(SlotMap {
            keys,
            gens,
            free,
            values,
            pending: Vec::new(),
        })
    }

    /// What a program does for a new key: claim a free slot, store `h`
    /// in it, map `key` to it (tests and benchmarks stand in for the
    /// kernel with this). `None`: no free slot.
    pub fn claim(&mut self, key: &K, h: &Histogram) -> Option<SlotRef> {
        let slot = self.free.pop(0).ok()?;
        let gen = self.gens.get(&slot, 0).ok()?;
        let r = SlotRef { slot, gen };
        self.store(r, h);
        self.keys.insert(key, r, 0).ok()?;
        Some(r)
    }

    /// Overwrite the value of slot `r` (tests and benchmarks: the kernel
    /// only adds).
    pub fn store(&mut self, r: SlotRef, h: &Histogram) {
        self.values.store(r.slot, h);
    }

    /// The values array's fd (benchmarks read it raw).
    pub fn values_fd(&self) -> i32 {
        self.values._map.fd().as_fd().as_raw_fd()
    }

    /// Slot `slot` read with a syscall (`BPF_MAP_LOOKUP_ELEM`), as a reader
    /// without the mapping would (benchmarks).
    pub fn lookup(&self, slot: u32) -> Option<Histogram> {
        super::batch::lookup(&self.values._map, &slot)
            .ok()
            .flatten()
    }

    /// A copy of `slot` as it is now (`None` beyond the array). Programs
    /// add to it meanwhile: the copy is the one consistent view to use.
    pub fn read(&self, slot: u32) -> Option<Histogram> {
        self.values.read(slot)
    }

    /// The sum and zero count of `slot`: the fields programs write last,
    /// so unmoved they say the slot is unchanged (see `collect`).
    pub fn quick(&self, slot: u32) -> Option<(u64, u32)> {
        self.values.quick(slot)
    }

    /// Evict `key` from `slot`, whose value `counted` was counted for it:
    /// the key goes, the slot's generation moves, and the slot waits for
    /// [`release`](Self::release).
    /// False when the key could not be deleted: it stays, and so does its
    /// slot.
    pub fn evict(&mut self, key: K, slot: u32, counted: Histogram) -> bool {
        if self.keys.remove(&key).is_err() {
            return false;
        }
        let moved = self
            .gens
            .get(&slot, 0)
            .and_then(|gen| self.gens.set(slot, gen.wrapping_add(1), 0));
        if let Err(e) = moved {
            // Copies of the slot cached by threads would stay valid: the
            // slot is never handed out again.
            warn!(error = %e, slot, "a slot's generation could not be moved: slot retired");
            return true;
        }
        self.pending.push((key, slot, counted));
        true
    }

    /// Slots evicted and not yet released: in use, not free.
    pub fn held_back(&self) -> usize {
        self.pending.len()
    }

    /// Release the slots evicted at the previous read: `late(key, counted,
    /// now)` is told what each gained since it was counted; then the slot
    /// is zeroed and queued for a new key.
    pub fn release(&mut self, mut late: impl FnMut(K, &Histogram, &Histogram)) {
        for (key, slot, counted) in std::mem::take(&mut self.pending) {
            if let Some(now) = self.values.read(slot) {
                late(key, &counted, &now);
            }
            self.values.clear(slot);
            if let Err(e) = self.free.push(slot, 0) {
                warn!(error = %e, slot, "a released slot could not be queued: slot retired");
            }
        }
    }
}

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
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, Queue},
    Ebpf, Pod,
};
use syscope_common::{
    maps::{MapKind, MapSpec},
    Histogram, SlotRef,
};

use super::ProbeError;

/// `BPF_F_MMAPABLE`, as the eBPF object declares the values array.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

const _: () = assert!(size_of::<Histogram>().is_multiple_of(8));

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

    /// A copy of slot `i` as it is now (`None` beyond the array).
    fn read(&self, i: u32) -> Option<Histogram> {
        let i = i as usize;
        // SAFETY: in bounds; a volatile copy, as programs add to it
        // concurrently (a torn copy is handled by the reader: see
        // `collect`).
        (i < self.len).then(|| unsafe { self.base.as_ptr().add(i).read_volatile() })
    }

    /// The sum and zero count of slot `i` (the fields written last).
    fn quick(&self, i: u32) -> Option<(u64, u32)> {
        let i = i as usize;
        // SAFETY: in bounds; volatile reads of aligned fields.
        (i < self.len).then(|| unsafe {
            let h = self.base.as_ptr().add(i);
            (
                (&raw const (*h).sum_ns).read_volatile(),
                (&raw const (*h).zero).read_volatile(),
            )
        })
    }

    /// Zero slot `i`: only for a slot no program holds.
    fn clear(&mut self, i: u32) {
        let i = i as usize;
        if i < self.len {
            // SAFETY: in bounds; the slot is out of use (see the module docs).
            unsafe { self.base.as_ptr().add(i).write_volatile(Histogram::ZERO) };
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
    /// Queue pushes refused (a full queue: not expected).
    pub lost_slots: u64,
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
        let n = free.capacity();
        for slot in 0..n {
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
            lost_slots: 0,
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
        let i = r.slot as usize;
        if i < self.values.len {
            // SAFETY: in bounds; a whole-value volatile store.
            unsafe { self.values.base.as_ptr().add(i).write_volatile(*h) };
        }
    }

    /// The values array's fd (benchmarks read it raw).
    pub fn values_fd(&self) -> i32 {
        self.values._map.fd().as_fd().as_raw_fd()
    }

    /// Slot `slot` read with a syscall (`BPF_MAP_LOOKUP_ELEM`), as a reader
    /// without the mapping would (benchmarks).
    pub fn lookup(&self, slot: u32) -> Option<Histogram> {
        let fd = self.values_fd();
        let mut h = Histogram::ZERO;
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut a = ElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: &slot as *const u32 as u64,
            value: &mut h as *mut Histogram as u64,
            flags: 0,
        };
        // SAFETY: BPF_MAP_LOOKUP_ELEM (1) with a valid key and a value
        // buffer of the map's value size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                1,
                &mut a as *mut ElemAttr,
                size_of::<ElemAttr>() as u32,
            )
        };
        (r == 0).then_some(h)
    }

    /// Slots in the array.
    pub fn capacity(&self) -> usize {
        self.values.len
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
    pub fn evict(&mut self, key: K, slot: u32, counted: Histogram) {
        let _ = self.keys.remove(&key);
        let gen = self.gens.get(&slot, 0).unwrap_or(0);
        let _ = self.gens.set(slot, gen.wrapping_add(1), 0);
        self.pending.push((key, slot, counted));
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
            if self.free.push(slot, 0).is_err() {
                self.lost_slots += 1;
            }
        }
    }
}

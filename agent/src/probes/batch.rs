//! Whole-map reads with `BPF_MAP_LOOKUP_BATCH`: a few syscalls per map
//! instead of two per key.
//!
//! aya's `HashMap::iter()` walks a map with one `BPF_MAP_GET_NEXT_KEY` and
//! one `BPF_MAP_LOOKUP_ELEM` per key. The batch command (Linux 5.6+ for hash
//! and LRU hash maps) copies whole buckets of keys and values at once into
//! buffers the caller provides. A [`BatchReader`] owns those buffers: sized
//! to the map's `max_entries` on the first read and reused every interval,
//! so a read allocates nothing per entry (nor per read, unless entries
//! inserted while reading overflow them: then they grow once). Memory is
//! touched only up to the map's fill level.
//!
//! Kernels without batch support for the map type answer EINVAL (the
//! command is unknown before 5.6), ENOTSUPP or EPERM; the reader then falls
//! back to aya's key-by-key walk for good, into the same buffers, and says
//! so once.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::{
    maps::{HashMap, IterableMap as _, MapData},
    Pod,
};
use tracing::{info, warn};

/// `enum bpf_cmd`: BPF_MAP_LOOKUP_ELEM.
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
/// `enum bpf_cmd`: BPF_MAP_LOOKUP_AND_DELETE_ELEM.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
/// `enum bpf_cmd`: BPF_MAP_LOOKUP_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's own ENOTSUPP (not ENOTSUP), which bpf(2) returns as is when
/// a map type has no batch operation.
const ENOTSUPP: i32 = 524;

/// `union bpf_attr`, the member for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Where to resume (a token the previous call wrote); 0 to start.
    in_batch: u64,
    /// Where the kernel writes the token of the next call.
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room in `keys`/`values` (elements). Out: elements written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr`, the member for the `BPF_MAP_*_ELEM` commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// How a reader reads its map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `BPF_MAP_LOOKUP_BATCH`.
    Batch,
    /// aya's iterator: `BPF_MAP_GET_NEXT_KEY` + a lookup per key.
    PerKey,
}

/// Logged once per process: which route map reads take.
static BATCH_LOGGED: AtomicBool = AtomicBool::new(false);

/// Reads a whole hash or LRU hash map into buffers it keeps between reads.
pub struct BatchReader<K, V> {
    /// For log lines: the map's label.
    label: &'static str,
    keys: Vec<K>,
    values: Vec<V>,
    /// Resume tokens (`in_batch`, `out_batch`). The hash table's is a u32
    /// bucket index; other map types use a key, so room for either.
    tokens: [Vec<u64>; 2],
    /// `None` until the first read decides.
    route: Option<Route>,
    /// Whether [`take`](Self::take) can read and delete in one command
    /// (hash maps: Linux 5.14+); `None` until the first take decides.
    take_in_one: Option<bool>,
}

impl<K: Pod, V: Pod> BatchReader<K, V> {
    /// A reader for the map named `label` in logs; buffers are sized on the
    /// first read.
    pub fn new(label: &'static str) -> Self {
        let words = size_of::<K>()
            .max(size_of::<u64>())
            .div_ceil(size_of::<u64>());
        BatchReader {
            label,
            keys: Vec::new(),
            values: Vec::new(),
            tokens: [vec![0; words], vec![0; words]],
            route: None,
            take_in_one: None,
        }
    }

    /// A reader whose buffers start with room for `entries` (not the map's
    /// `max_entries`): tests use a small one to read in many calls.
    pub fn with_capacity(label: &'static str, entries: usize) -> Self {
        let mut r = Self::new(label);
        r.reserve(entries.max(1));
        r
    }

    /// Room in the buffers (entries): grows only when a read needs more.
    pub fn capacity(&self) -> usize {
        self.keys.capacity().min(self.values.capacity())
    }

    /// A reader that always walks key by key (the route of kernels without
    /// batch support; benchmarks and tests).
    pub fn per_key(label: &'static str) -> Self {
        let mut r = Self::new(label);
        r.route = Some(Route::PerKey);
        r
    }

    /// The route taken, once a read decided it.
    pub fn route(&self) -> Option<Route> {
        self.route
    }

    /// The keys of the last read.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The values of the last read, in the order of [`keys`](Self::keys).
    pub fn values(&self) -> &[V] {
        &self.values
    }

    /// Entries of the last read.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The last read as (key, value) pairs: keys copied, values lent from
    /// the buffers.
    pub fn entries(&self) -> impl Iterator<Item = (K, &V)> + '_ {
        self.keys.iter().copied().zip(self.values.iter())
    }

    /// Read the whole map; returns the number of entries. An entry inserted
    /// or deleted during the read may or may not be in it (as with a walk);
    /// one deleted and reinserted may be seen twice (the kernel's buckets
    /// are read one after another).
    pub fn read(&mut self, map: &HashMap<MapData, K, V>) -> usize {
        if self.keys.capacity() == 0 {
            let max = map
                .map()
                .info()
                .map(|i| i.max_entries() as usize)
                .unwrap_or(1024)
                .max(1);
            self.reserve(max);
        }
        if self.route != Some(Route::PerKey) {
            match self.read_batch(map.map()) {
                Ok(()) => {
                    if self.route.is_none() {
                        self.route = Some(Route::Batch);
                        if !BATCH_LOGGED.swap(true, Ordering::Relaxed) {
                            info!("kernel maps read in batches (BPF_MAP_LOOKUP_BATCH)");
                        }
                    }
                    return self.keys.len();
                }
                Err(e) if unsupported(&e) => {
                    warn!(
                        map = self.label,
                        error = %e,
                        "this kernel cannot read this map in batches (BPF_MAP_LOOKUP_BATCH needs \
                         Linux 5.6+): reading it key by key, two syscalls per entry"
                    );
                    self.route = Some(Route::PerKey);
                }
                // Not expected: this read goes key by key, the next tries
                // batches again.
                Err(e) => warn!(
                    map = self.label,
                    error = %e,
                    "batch read of a kernel map failed: reading it key by key this interval"
                ),
            }
        }
        self.read_per_key(map);
        self.keys.len()
    }

    /// Deletes `key` from the map and returns its value at deletion, read
    /// and deleted under the kernel's bucket lock
    /// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`). An update between the agent's
    /// read and the delete is then in the returned value instead of lost
    /// (only a program holding the entry across the delete, nanoseconds,
    /// can still lose one). Kernels before 5.14 cannot do this for hash
    /// maps: the entry is deleted alone and `None` returned, as it is when
    /// the entry was already gone.
    pub fn take(&mut self, map: &mut HashMap<MapData, K, V>, key: &K) -> Option<V> {
        if self.take_in_one != Some(false) {
            match lookup_and_delete(map.map(), key) {
                Ok(v) => {
                    self.take_in_one = Some(true);
                    return v;
                }
                Err(e) if self.take_in_one.is_none() && unsupported(&e) => {
                    info!(
                        map = self.label,
                        error = %e,
                        "this kernel cannot read and delete a map entry in one command \
                         (Linux 5.14+): evicted entries are deleted after their read, and an \
                         update in between is lost"
                    );
                    self.take_in_one = Some(false);
                }
                // Not expected: this entry is deleted alone.
                Err(e) => warn!(map = self.label, error = %e, "lookup-and-delete failed"),
            }
        }
        let _ = map.remove(key);
        None
    }

    fn reserve(&mut self, additional: usize) {
        self.keys.reserve_exact(additional);
        self.values.reserve_exact(additional);
    }

    fn read_per_key(&mut self, map: &HashMap<MapData, K, V>) {
        self.keys.clear();
        self.values.clear();
        // An entry deleted between listing and reading is skipped: harmless.
        for (k, v) in map.iter().filter_map(Result::ok) {
            self.keys.push(k);
            self.values.push(v);
        }
    }

    fn read_batch(&mut self, map: &MapData) -> io::Result<()> {
        self.keys.clear();
        self.values.clear();
        let fd = map.fd().as_fd().as_raw_fd();
        let mut start = true;
        loop {
            let room = (self.keys.capacity() - self.keys.len())
                .min(self.values.capacity() - self.values.len());
            if room == 0 {
                // Entries inserted while reading: more than max_entries seen.
                let more = self.keys.capacity().max(64);
                self.reserve(more);
                continue;
            }
            let [in_batch, out_batch] = &mut self.tokens;
            let mut attr = BatchAttr {
                in_batch: if start { 0 } else { in_batch.as_ptr() as u64 },
                out_batch: out_batch.as_mut_ptr() as u64,
                keys: self.keys.spare_capacity_mut().as_mut_ptr() as u64,
                values: self.values.spare_capacity_mut().as_mut_ptr() as u64,
                count: u32::try_from(room).unwrap_or(u32::MAX),
                map_fd: fd as u32,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` is a valid `bpf_attr.batch` of the size passed;
            // `keys` and `values` point to room for `count` elements each of
            // the map's key and value size (aya checked the sizes of K and V
            // against the map when the HashMap was made), the tokens to
            // buffers of at least the key size and 8 bytes, all live and
            // unaliased for the call. The kernel writes nothing else.
            let res = unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
            let errno = res.as_ref().err().and_then(io::Error::raw_os_error);
            match errno {
                None | Some(libc::ENOENT) => {
                    let n = (attr.count as usize).min(room);
                    // SAFETY: on success and on ENOENT (the end of the map)
                    // the kernel wrote `count` whole keys and values to the
                    // spare capacity, and K and V are plain data (`Pod`).
                    unsafe {
                        self.keys.set_len(self.keys.len() + n);
                        self.values.set_len(self.values.len() + n);
                    }
                    if errno.is_some() {
                        return Ok(());
                    }
                }
                // A bucket holds more entries than there is room for, and
                // nothing was copied: grow, and retry that bucket.
                Some(libc::ENOSPC) => {
                    let more = self.keys.capacity().max(64);
                    self.reserve(more);
                }
                Some(_) => return res,
            }
            // The kernel wrote where to resume (after ENOSPC: the bucket
            // that did not fit).
            self.tokens.swap(0, 1);
            start = false;
        }
    }
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on `map`: the value the entry had when
/// deleted; `None` if there was no entry.
fn lookup_and_delete<K: Pod, V: Pod>(map: &MapData, key: &K) -> io::Result<Option<V>> {
    elem_read(BPF_MAP_LOOKUP_AND_DELETE_ELEM, map, key)
}

/// `key`'s value in `map` by one `BPF_MAP_LOOKUP_ELEM` (`None`: no such
/// key). For maps aya has no typed view of here (a mapped array).
pub(crate) fn lookup<K: Pod, V: Pod>(map: &MapData, key: &K) -> io::Result<Option<V>> {
    // Untyped: the sizes are checked here, against the kernel's.
    let info = map.info().map_err(io::Error::other)?;
    if (info.key_size() as usize, info.value_size() as usize) != (size_of::<K>(), size_of::<V>()) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    elem_read(BPF_MAP_LOOKUP_ELEM, map, key)
}

/// An elem command that reads one value of `map`'s size (`V`'s).
fn elem_read<K: Pod, V: Pod>(cmd: libc::c_long, map: &MapData, key: &K) -> io::Result<Option<V>> {
    let mut value = std::mem::MaybeUninit::<V>::uninit();
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` for the elem commands of the
    // size passed; `key` and `value` point to one key and room for one
    // value of the map's sizes (aya or `lookup` checked K and V against the
    // map), live and unaliased for the call.
    if let Err(e) = unsafe { sys_bpf(cmd, &mut attr) } {
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: on success the kernel wrote a whole value, and V is plain
    // data (`Pod`).
    Ok(Some(unsafe { value.assume_init() }))
}

/// bpf(2): command `cmd` with its attribute `attr`.
///
/// # Safety
/// `attr` is `cmd`'s member of `union bpf_attr`, and every address in it is
/// valid, for the call, for what the kernel reads or writes there.
pub(crate) unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: the caller's contract; the size passed is the attribute's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A,
            size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Errors of kernels (or map types) without batch lookups.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP | libc::EPERM | libc::ENOSYS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attribute layout the kernel expects (`union bpf_attr`, batch).
    #[test]
    fn attr_layout_matches_the_kernel() {
        assert_eq!(size_of::<BatchAttr>(), 56);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::offset_of!(BatchAttr, flags), 48);
    }

    /// The attribute layout of the elem commands (`union bpf_attr`).
    #[test]
    fn elem_attr_layout_matches_the_kernel() {
        assert_eq!(size_of::<ElemAttr>(), 32);
        assert_eq!(std::mem::offset_of!(ElemAttr, key), 8);
        assert_eq!(std::mem::offset_of!(ElemAttr, value), 16);
    }

    #[test]
    fn unsupported_errors() {
        for e in [libc::EINVAL, libc::ENOTSUP, ENOTSUPP, libc::EPERM] {
            assert!(unsupported(&io::Error::from_raw_os_error(e)), "{e}");
        }
        assert!(!unsupported(&io::Error::from_raw_os_error(libc::EFAULT)));
    }
}

//! The catalogue of kernel maps that hold measurements: one entry per map,
//! and everything about a map derives from it.
//!
//! - the eBPF object declares the map under [`MapSpec::object`] with
//!   [`MapSpec::default_entries`] (the loader sets the configured size);
//! - the agent's configuration key is `limits.kernel_maps.<label>`;
//! - self-metrics, logs and docs name it `map=<label>`;
//! - a kernel update that does not fit bumps the counter at [`MapSpec::id`]
//!   (`counter::map_full(id)`);
//! - its kernel memory is [`MapSpec::kernel_bytes`].
//!
//! `COUNTERS`, the folded slots and `SOCKS_LIVE` are fixed-size internals, not measurements:
//! they are not in the catalogue (their few bytes are in [`FIXED_BYTES`]).
//! `THREADS_SEEN` is internal too, sized from the kernel's pid_max (see
//! [`threads_seen_entries`]).

use crate::{
    tcp::{ListenState, SockState, TcpKey},
    Histogram, SeriesKey, SlotRef, ThreadState,
};

/// Which program set uses a map; a set that is off keeps its maps at one
/// entry (they exist in the object either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeSet {
    Syscalls,
    Tcp,
}

/// The kernel's map type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    /// Least-recently-used entries are evicted when full (never "full").
    LruHash,
    /// A hash of keys to [`SlotRef`]s (the object [`MapSpec::object`]) and,
    /// each as many entries: the values in a memory-mappable array the
    /// agent reads in place, each slot's generation, and a queue of free
    /// slots. Writers resolve a key to its slot once and keep the slot
    /// (a thread caches its syscalls' slots, a socket its own), so an update is an array
    /// access, not a hash lookup; the agent hands a slot back to the queue
    /// an interval after it evicted its key and moved its generation.
    Slots {
        values: &'static str,
        gens: &'static str,
        free: &'static str,
    },
}

/// One kernel map.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    /// Index in [`MAPS`] and of its "map full" counter.
    pub id: usize,
    /// Name in the eBPF object.
    pub object: &'static str,
    /// Name everywhere else: `map=<label>`, `limits.kernel_maps.<label>`.
    pub label: &'static str,
    pub set: ProbeSet,
    pub kind: MapKind,
    /// When full, an update is folded into its metric's overflow series
    /// (`crate::fold`) instead of dropped.
    pub folds: bool,
    pub default_entries: u32,
    /// Largest accepted `limits.kernel_maps.<label>` (bounds kernel memory).
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// What an entry is, for docs and `--help`.
    pub holds: &'static str,
}

const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

pub const THREADS: usize = 0;
pub const SYSCALL_LATENCY: usize = 1;
pub const SYSCALL_ERRORS: usize = 2;
pub const SOCKETS: usize = 3;
pub const LISTENERS: usize = 4;
pub const TCP_LATENCY: usize = 5;
pub const TCP_COUNTERS: usize = 6;
pub const SELECTED_CGROUPS: usize = 7;
pub const SELECTED_NAMES: usize = 8;
pub const COUNT: usize = 9;

pub const MAPS: [MapSpec; COUNT] = [
    MapSpec {
        id: THREADS,
        object: "THREADS",
        label: "threads",
        set: ProbeSet::Syscalls,
        kind: MapKind::LruHash,
        folds: false,
        default_entries: 16384,
        max_entries: 1 << 20,
        key_size: size::<u32>(),
        value_size: size::<ThreadState>(),
        holds: "threads with a syscall in flight (or a recent one), on kernels without task storage for tracing programs (before 5.13); LRU, so threads whose exit was missed age out",
    },
    MapSpec {
        id: SYSCALL_LATENCY,
        object: "SYSCALL_LATENCY",
        label: "syscall_latency",
        set: ProbeSet::Syscalls,
        kind: MapKind::Slots {
            values: "SYSCALL_LATENCY_VALUES",
            gens: "SYSCALL_LATENCY_GENS",
            free: "SYSCALL_LATENCY_FREE",
        },
        folds: true,
        default_entries: 4096,
        max_entries: 1 << 16,
        key_size: size::<SeriesKey>(),
        value_size: size::<Histogram>(),
        holds: "syscall latency histograms, one per cgroup x process x syscall, in slots: a thread keeps its syscalls' slots, so an exit adds to an array instead of hashing its series key",
    },
    MapSpec {
        id: SYSCALL_ERRORS,
        object: "SYSCALL_ERRORS",
        label: "syscall_errors",
        set: ProbeSet::Syscalls,
        kind: MapKind::Hash,
        folds: true,
        default_entries: 4096,
        max_entries: 1 << 20,
        key_size: size::<SeriesKey>(),
        value_size: size::<u64>(),
        holds: "syscall error counters, one per cgroup x process x syscall x errno",
    },
    MapSpec {
        id: SOCKETS,
        object: "SOCKETS",
        label: "sockets",
        set: ProbeSet::Tcp,
        kind: MapKind::LruHash,
        folds: false,
        default_entries: 32768,
        max_entries: 1 << 20,
        key_size: size::<u64>(),
        value_size: size::<SockState>(),
        holds: "tracked TCP sockets (owner, role, request phase), on kernels without the socket tracepoints (before 6.3) or task storage (before 5.13); LRU. Elsewhere socket storage holds them, freed with each socket, and this limit caps how many at once: a socket beyond it is not tracked, counted in `full`",
    },
    MapSpec {
        id: LISTENERS,
        object: "LISTENERS",
        label: "listeners",
        set: ProbeSet::Tcp,
        kind: MapKind::Hash,
        folds: false,
        default_entries: 1024,
        max_entries: 1 << 16,
        key_size: size::<u64>(),
        value_size: size::<ListenState>(),
        holds: "listening TCP sockets, for their accept-queue drop counters",
    },
    MapSpec {
        id: TCP_LATENCY,
        object: "TCP_LATENCY",
        label: "tcp_latency",
        set: ProbeSet::Tcp,
        kind: MapKind::Slots {
            values: "TCP_LATENCY_VALUES",
            gens: "TCP_LATENCY_GENS",
            free: "TCP_LATENCY_FREE",
        },
        folds: true,
        default_entries: 2048,
        max_entries: 1 << 16,
        key_size: size::<TcpKey>(),
        value_size: size::<Histogram>(),
        holds: "TCP histograms (connect, request, RTT), one per workload x peer or port x metric, in slots: a socket keeps its request and RTT slots, so a request adds to an array instead of hashing its series key",
    },
    MapSpec {
        id: TCP_COUNTERS,
        object: "TCP_COUNTERS",
        label: "tcp_counters",
        set: ProbeSet::Tcp,
        kind: MapKind::Hash,
        folds: true,
        default_entries: 4096,
        max_entries: 1 << 20,
        key_size: size::<TcpKey>(),
        value_size: size::<u64>(),
        holds: "TCP counters (connect errors, retransmits, resets), one per workload x peer or port x metric x cause",
    },
    MapSpec {
        id: SELECTED_CGROUPS,
        object: "SELECTED_CGROUPS",
        label: "selected_cgroups",
        set: ProbeSet::Syscalls,
        kind: MapKind::Hash,
        folds: false,
        default_entries: 4096,
        max_entries: 1 << 16,
        key_size: size::<u64>(),
        value_size: size::<u8>(),
        holds: "cgroups (containers, pods, units) whose syscalls are measured on demand; written by the agent",
    },
    MapSpec {
        id: SELECTED_NAMES,
        object: "SELECTED_NAMES",
        label: "selected_names",
        set: ProbeSet::Syscalls,
        kind: MapKind::Hash,
        folds: false,
        default_entries: 1024,
        max_entries: 1 << 16,
        key_size: size::<[u8; crate::COMM_LEN]>(),
        value_size: size::<u8>(),
        holds: "process names whose syscalls are measured on demand; written by the agent",
    },
];

/// The map whose label is `label`.
pub fn by_label(label: &str) -> Option<&'static MapSpec> {
    MAPS.iter().find(|m| m.label == label)
}

/// Bytes of the fixed internal maps: `COUNTERS` (per CPU, counted once per
/// CPU by the caller) is excluded; the folded slots (`crate::fold`) are a
/// few histograms and counters, `SOCKS_LIVE` one counter.
pub const FIXED_BYTES: u64 = 4
    + crate::fold::HIST_SLOTS as u64 * size::<Histogram>() as u64
    + crate::fold::COUNT_SLOTS as u64 * 8
    + 8;

/// The kernel's bookkeeping per preallocated hash element beyond its
/// 8-byte aligned key and value (`struct htab_elem` and its share of the
/// free list), as `memlock` in fdinfo showed on 6.18 (within 1 %).
pub const ELEMENT_OVERHEAD: u64 = 64;

impl MapSpec {
    /// Kernel memory of this map with `entries` elements.
    pub const fn kernel_bytes(&self, entries: u32) -> u64 {
        let (key, value) = (round8(self.key_size as u64), round8(self.value_size as u64));
        entries as u64
            * match self.kind {
                MapKind::Hash | MapKind::LruHash => key + value + ELEMENT_OVERHEAD,
                // The keys' hash (to a slot), the values, a generation per
                // slot (array elements are 8-byte aligned), a queue entry.
                MapKind::Slots { .. } => {
                    key + size::<SlotRef>() as u64 + ELEMENT_OVERHEAD + value + 8 + 4
                }
            }
    }
}

/// Kernel memory the maps take with `entries[i]` elements each.
pub fn kernel_bytes(entries: &[u32; COUNT]) -> u64 {
    MAPS.iter()
        .zip(entries)
        .map(|(m, &n)| m.kernel_bytes(n))
        .sum::<u64>()
        + FIXED_BYTES
}

/// Highest thread id the kernel can hand out (PID_MAX_LIMIT on 64-bit).
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// Thread ids per `THREADS_SEEN` word (one bit each, u64 words).
pub const THREADS_SEEN_BITS: u32 = 64;

/// `THREADS_SEEN` (see `names::THREADS_SEEN_MAP`) entries for thread ids
/// below `pid_max`: one bit per id, so 512 KiB at [`PID_MAX_LIMIT`] and 4 KiB
/// at the kernel's default of 32768. Not in [`MAPS`]: not configurable, sized
/// from the kernel's `pid_max`. Ids beyond it (pid_max raised later) are
/// counted as "in flight at attach".
pub const fn threads_seen_entries(pid_max: u32) -> u32 {
    let ids = if pid_max == 0 || pid_max > PID_MAX_LIMIT {
        PID_MAX_LIMIT
    } else {
        pid_max
    };
    ids.div_ceil(THREADS_SEEN_BITS)
}

/// The object's `THREADS_SEEN` size: the kernel's default pid_max.
pub const THREADS_SEEN_DEFAULT_ENTRIES: u32 = threads_seen_entries(32768);

const fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_labels_objects_agree() {
        for (i, m) in MAPS.iter().enumerate() {
            assert_eq!(m.id, i);
            // The object name is the label in capitals: one name, two spellings.
            let mut upper = [0u8; 32];
            for (u, b) in upper.iter_mut().zip(m.label.bytes()) {
                *u = b.to_ascii_uppercase();
            }
            assert_eq!(&upper[..m.label.len()], m.object.as_bytes());
            assert!(by_label(m.label).is_some());
        }
    }
}

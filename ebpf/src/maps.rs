//! The object's maps and load-time constants. Map names and sizes come from
//! `syscope_common::maps::MAPS` (the loader sets the configured sizes);
//! global names from `syscope_common::globals` (the loader overrides them).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, Queue, RingBuf},
};
use syscope_common::{
    counter, fold,
    globals::{fd_off, NO_SPLIT, SOCKIO_NR_WORDS},
    hist::SPLITS,
    maps::{self, MAPS, THREADS_SEEN_DEFAULT_ENTRIES},
    names,
    tcp::{ListenState, SockState, TcpKey},
    Histogram, SeriesKey, SlotRef, ThreadState, COMM_LEN,
};

// Load-time constants (see syscope_common::globals). Read them with
// `helpers::global`, never directly: the compiler would fold the placeholder.
#[no_mangle]
pub(crate) static SELF_TGID: u32 = 0;
#[no_mangle]
pub(crate) static TASK_GROUP_LEADER_OFF: u32 = 0;
#[no_mangle]
pub(crate) static TASK_COMM_OFF: u32 = 0;
#[no_mangle]
pub(crate) static TP_ENTER_ID_OFF: u32 = 8;
#[no_mangle]
pub(crate) static TP_EXIT_ID_OFF: u32 = 8;
#[no_mangle]
pub(crate) static TP_EXIT_RET_OFF: u32 = 16;
#[no_mangle]
pub(crate) static PT_REGS_NR_OFF: u32 = 0;
#[no_mangle]
pub(crate) static NR_EXECVE: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_EXECVEAT: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_PRCTL: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_CLONE: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_CLONE3: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_FORK: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_VFORK: u32 = u32::MAX;
// Socket field offsets (struct sock / sock_common / tcp_sock), from BTF.
#[no_mangle]
pub(crate) static SK_FAMILY_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_NUM_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_DPORT_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_DADDR_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_V6_DADDR_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_ERR_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_DROPS_OFF: u32 = 0;
#[no_mangle]
pub(crate) static TCP_SRTT_OFF: u32 = 0;
#[no_mangle]
pub(crate) static RTT_SAMPLE_NS: u64 = 1_000_000_000;
#[no_mangle]
pub(crate) static SKB_HEAD_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SKB_END_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SHINFO_GSO_SEGS_OFF: u32 = 0;
#[no_mangle]
pub(crate) static TCP_SEQ_OFF: [u32; syscope_common::tcp::seq::COUNT] =
    [0; syscope_common::tcp::seq::COUNT];
#[no_mangle]
pub(crate) static TCP_CLOCK_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SK_STATE_OFF: u32 = 0;
#[no_mangle]
pub(crate) static SOCK_STORE: u32 = 0;
#[no_mangle]
pub(crate) static SOCK_LIMIT: u32 = 0;
// The syscall route of TCP request latency (see `sockio`).
#[no_mangle]
pub(crate) static SYSCALL_SLIS: u32 = 1;
#[no_mangle]
pub(crate) static SOCKIO: u32 = 0;
// SLO thresholds: split counters of the threshold's bucket.
#[no_mangle]
pub(crate) static SPLIT_NS: [u64; SPLITS] = [0; SPLITS];
#[no_mangle]
pub(crate) static SPLIT_IDX: [u32; SPLITS] = [NO_SPLIT; SPLITS];
#[no_mangle]
pub(crate) static SOCKIO_RECV_NRS: [u64; SOCKIO_NR_WORDS] = [0; SOCKIO_NR_WORDS];
#[no_mangle]
pub(crate) static SOCKIO_SEND_NRS: [u64; SOCKIO_NR_WORDS] = [0; SOCKIO_NR_WORDS];
#[no_mangle]
pub(crate) static NR_RECVFROM: u32 = u32::MAX;
#[no_mangle]
pub(crate) static NR_RECVMSG: u32 = u32::MAX;
#[no_mangle]
pub(crate) static PT_REGS_ARG_OFF: [u32; 4] = [0; 4];
#[no_mangle]
pub(crate) static TP_ENTER_ARGS_OFF: u32 = 16;
#[no_mangle]
pub(crate) static FD_OFF: [u32; fd_off::COUNT] = [0; fd_off::COUNT];
// Compat-call flag, renamed task, new cgroup (see syscope_common::globals).
#[no_mangle]
pub(crate) static TASK_COMPAT_OFF: u32 = 0;
#[no_mangle]
pub(crate) static TASK_COMPAT_MASK: u32 = 0;
#[no_mangle]
pub(crate) static TASK_PID_OFF: u32 = 0;
#[no_mangle]
pub(crate) static CGROUP_KN_OFF: u32 = 0;
#[no_mangle]
pub(crate) static KERNFS_ID_OFF: u32 = 0;
#[no_mangle]
pub(crate) static CGROUP_ROOT_OFF: u32 = 0;
#[no_mangle]
pub(crate) static CGROUP_HIERARCHY_OFF: u32 = 0;

/// Threads with a syscall in flight (or recently made one). LRU: threads that
/// exit without us noticing age out instead of filling the map.
#[map(name = "THREADS")]
pub(crate) static THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(MAPS[maps::THREADS].default_entries, 0);

/// A BPF local storage map (task or socket storage) of type `TYPE`, for
/// the `task-storage` objects. aya-ebpf 0.2.1 has no local storage types,
/// so this is libbpf's BTF map definition written out: each number is the
/// length of the array a field points to, the field names are the keys,
/// and the object carries BTF (bpf-linker `--btf`) for the loader to read
/// them. Values are freed by the kernel with their owner, never evicted,
/// and found without hashing.
#[cfg(feature = "task-storage")]
#[repr(C)]
pub(crate) struct LocalStorage<const TYPE: usize, V> {
    r#type: *const [i32; TYPE],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; aya_ebpf::bindings::BPF_F_NO_PREALLOC as usize],
}

/// Thread state per task.
#[cfg(feature = "task-storage")]
pub(crate) type TaskStorage<V> =
    LocalStorage<{ aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize }, V>;

/// TCP socket state per socket, used where `SOCK_STORE` says.
#[cfg(feature = "task-storage")]
pub(crate) type SkStorage<V> =
    LocalStorage<{ aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize }, V>;

// SAFETY: never dereferenced; the kernel owns the map it describes.
#[cfg(feature = "task-storage")]
unsafe impl<const TYPE: usize, V> Sync for LocalStorage<TYPE, V> {}

#[cfg(feature = "task-storage")]
impl<const TYPE: usize, V> LocalStorage<TYPE, V> {
    const fn new() -> Self {
        LocalStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    #[inline(always)]
    fn as_map(&self) -> *mut core::ffi::c_void {
        self as *const Self as *mut core::ffi::c_void
    }

    /// The `value` and `flags` arguments of a storage get: with `init`,
    /// create the value from it if missing.
    #[inline(always)]
    fn get_args(init: Option<&V>) -> (*mut core::ffi::c_void, u64) {
        match init {
            Some(v) => (
                v as *const V as *mut core::ffi::c_void,
                aya_ebpf::bindings::BPF_LOCAL_STORAGE_GET_F_CREATE as u64,
            ),
            None => (core::ptr::null_mut(), 0),
        }
    }
}

#[cfg(feature = "task-storage")]
impl<V> TaskStorage<V> {
    /// The current task's value; with `init`, created from it if missing.
    /// `None` also when the kernel refuses (no memory, or its recursion
    /// guard: another program using task storage on this CPU).
    #[inline(always)]
    pub(crate) fn current(&self, init: Option<&V>) -> Option<*mut V> {
        let (value, flags) = Self::get_args(init);
        // SAFETY: the map is this definition; the task is the current one
        // (a BTF pointer); `value` is null or a whole V to copy from.
        let p = unsafe {
            aya_ebpf::helpers::bpf_task_storage_get(
                self.as_map(),
                aya_ebpf::helpers::bpf_get_current_task_btf() as *mut _,
                value,
                flags,
            )
        };
        (!p.is_null()).then_some(p.cast())
    }
}

#[cfg(feature = "task-storage")]
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "TASK_STATE")]
pub(crate) static TASK_STATE: TaskStorage<ThreadState> = TaskStorage::new();

#[cfg(feature = "task-storage")]
impl<V> SkStorage<V> {
    /// The value of socket `sk` (a typed pointer: a tp_btf argument or an
    /// iterator's socket); with `init`, created from it if missing. `None`
    /// also when the kernel refuses (no memory under the socket's option
    /// memory limit).
    #[inline(always)]
    pub(crate) fn get(&self, sk: u64, init: Option<&V>) -> Option<*mut V> {
        let (value, flags) = Self::get_args(init);
        // SAFETY: the map is this definition; the verifier checks `sk` is
        // a typed socket pointer; `value` is null or a whole V to copy.
        let p = unsafe {
            aya_ebpf::helpers::bpf_sk_storage_get(self.as_map(), sk as *mut _, value, flags)
        };
        (!p.is_null()).then_some(p.cast())
    }

    /// Frees the value of socket `sk`; whether there was one.
    #[inline(always)]
    pub(crate) fn delete(&self, sk: u64) -> bool {
        // SAFETY: as in `get`.
        unsafe { aya_ebpf::helpers::bpf_sk_storage_delete(self.as_map(), sk as *mut _) == 0 }
    }
}

#[cfg(feature = "task-storage")]
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_STATE")]
pub(crate) static SOCK_STATE: SkStorage<SockState> = SkStorage::new();

/// One bit per thread id, set when the thread gets a `THREADS` entry: an
/// exit without an entry is an eviction if the bit is set, a syscall that
/// was in flight at attach if not. Never cleared: a reused id keeps its bit,
/// which only matters for a new task's first exit, told apart by its
/// syscall (clone and friends returning 0).
#[map(name = "THREADS_SEEN")]
pub(crate) static THREADS_SEEN: Array<u64> =
    Array::with_max_entries(THREADS_SEEN_DEFAULT_ENTRIES, 0);

// The syscall latency series, slotted (`MapKind::Slots`): key -> slot,
// the histograms (mapped by the agent), each slot's generation, the free
// slots (the agent fills the queue at load).
#[map(name = "SYSCALL_LATENCY")]
pub(crate) static SYSCALL_LATENCY: HashMap<SeriesKey, SlotRef> =
    HashMap::with_max_entries(MAPS[maps::SYSCALL_LATENCY].default_entries, 0);
#[map(name = "SYSCALL_LATENCY_VALUES")]
pub(crate) static SYSCALL_LATENCY_VALUES: Array<Histogram> =
    Array::with_max_entries(MAPS[maps::SYSCALL_LATENCY].default_entries, BPF_F_MMAPABLE);
#[map(name = "SYSCALL_LATENCY_GENS")]
pub(crate) static SYSCALL_LATENCY_GENS: Array<u32> =
    Array::with_max_entries(MAPS[maps::SYSCALL_LATENCY].default_entries, 0);
#[map(name = "SYSCALL_LATENCY_FREE")]
pub(crate) static SYSCALL_LATENCY_FREE: Queue<u32> =
    Queue::with_max_entries(MAPS[maps::SYSCALL_LATENCY].default_entries, 0);

/// `BPF_F_MMAPABLE`: an array the agent maps into its memory (5.5+).
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map(name = "SYSCALL_ERRORS")]
pub(crate) static SYSCALL_ERRORS: HashMap<SeriesKey, u64> =
    HashMap::with_max_entries(MAPS[maps::SYSCALL_ERRORS].default_entries, 0);

/// The kernel side's own counters (`syscope_common::counter`), per CPU.
#[map(name = "COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Updates that found their measurement map full, one slot per metric
/// (`syscope_common::fold`): folded, not lost.
#[map(name = "FOLDED_HIST")]
pub(crate) static FOLDED_HIST: Array<Histogram> = Array::with_max_entries(fold::HIST_SLOTS, 0);

#[map(name = "FOLDED_COUNTS")]
pub(crate) static FOLDED_COUNTS: Array<u64> = Array::with_max_entries(fold::COUNT_SLOTS, 0);

/// Sockets with state in socket storage now: one counter shared by all
/// CPUs, checked against `SOCK_LIMIT` before a socket is given state.
#[map(name = "SOCKS_LIVE")]
pub(crate) static SOCKS_LIVE: Array<u64> = Array::with_max_entries(1, 0);

/// Tracked TCP sockets (see `syscope_common::tcp`). LRU: a socket whose
/// destruction we miss ages out instead of leaking.
#[map(name = "SOCKETS")]
pub(crate) static SOCKETS: LruHashMap<u64, SockState> =
    LruHashMap::with_max_entries(MAPS[maps::SOCKETS].default_entries, 0);

/// Listening sockets, for their drop counters.
#[map(name = "LISTENERS")]
pub(crate) static LISTENERS: HashMap<u64, ListenState> =
    HashMap::with_max_entries(MAPS[maps::LISTENERS].default_entries, 0);

/// Local ports with a listener, while seeding (see `seed`).
#[map(name = "LISTEN_PORTS")]
pub(crate) static LISTEN_PORTS: HashMap<u32, u32> =
    HashMap::with_max_entries(names::LISTEN_PORTS_ENTRIES, 0);

// The TCP histograms, slotted as SYSCALL_LATENCY.
#[map(name = "TCP_LATENCY")]
pub(crate) static TCP_LATENCY: HashMap<TcpKey, SlotRef> =
    HashMap::with_max_entries(MAPS[maps::TCP_LATENCY].default_entries, 0);
#[map(name = "TCP_LATENCY_VALUES")]
pub(crate) static TCP_LATENCY_VALUES: Array<Histogram> =
    Array::with_max_entries(MAPS[maps::TCP_LATENCY].default_entries, BPF_F_MMAPABLE);
#[map(name = "TCP_LATENCY_GENS")]
pub(crate) static TCP_LATENCY_GENS: Array<u32> =
    Array::with_max_entries(MAPS[maps::TCP_LATENCY].default_entries, 0);
#[map(name = "TCP_LATENCY_FREE")]
pub(crate) static TCP_LATENCY_FREE: Queue<u32> =
    Queue::with_max_entries(MAPS[maps::TCP_LATENCY].default_entries, 0);

#[map(name = "TCP_COUNTERS")]
pub(crate) static TCP_COUNTERS: HashMap<TcpKey, u64> =
    HashMap::with_max_entries(MAPS[maps::TCP_COUNTERS].default_entries, 0);

/// On-demand syscall SLIs (see `names::SELECTION_MAP`): the agent's
/// selection epoch and all flag, and what it selected.
#[map(name = "SELECTION")]
pub(crate) static SELECTION: Array<u32> = Array::with_max_entries(2, 0);

#[map(name = "SELECTED_CGROUPS")]
pub(crate) static SELECTED_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(MAPS[maps::SELECTED_CGROUPS].default_entries, 0);

#[map(name = "SELECTED_NAMES")]
pub(crate) static SELECTED_NAMES: HashMap<[u8; COMM_LEN], u8> =
    HashMap::with_max_entries(MAPS[maps::SELECTED_NAMES].default_entries, 0);

/// Bumped after each rename (see `names::RENAME_EPOCH_MAP`).
#[map(name = "RENAME_EPOCH")]
pub(crate) static RENAME_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Newest name of each renamed task (see `names::RENAMED_MAP`).
#[map(name = "RENAMED")]
pub(crate) static RENAMED: LruHashMap<u32, [u8; COMM_LEN]> =
    LruHashMap::with_max_entries(names::RENAMED_ENTRIES, 0);

/// cgroup births (`syscope_common::CgroupEvent`), read by the agent at once.
#[map(name = "CGROUP_EVENTS")]
pub(crate) static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(names::CGROUP_EVENTS_BYTES, 0);

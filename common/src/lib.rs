//! The contract between syscope's kernel programs and its userspace agent.
//!
//! Everything here is `no_std`, `#[repr(C)]`, fixed-width and padding-free so
//! that the eBPF object and the agent agree byte for byte. The histogram math
//! lives here too: the kernel computes bucket indexes with exactly the function
//! the unit tests check against an `f64` reference.
#![no_std]

pub mod hist;
pub mod maps;
pub mod tcp;

pub use hist::{bucket_index, Bucket};

/// Length of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Per-thread state between `sys_enter` and `sys_exit`, plus the thread's
/// process name, cached so the exit path needs no kernel memory reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadState {
    /// `bpf_ktime_get_ns()` at syscall entry; 0 while no syscall is in flight.
    pub start_ns: u64,
    /// Syscall number seen at entry, with [`COMPAT_NR_BIT`] for a compat
    /// (32-bit) call.
    pub nr: u32,
    /// The rename epoch (`names::RENAME_EPOCH_MAP`) when `comm` was read: a
    /// different current epoch means some process was renamed since, and
    /// `comm` is read again.
    pub epoch: u32,
    /// fd + 1 of the socket I/O syscall in flight when the syscall route
    /// measures TCP requests (`globals::SOCKIO`); 0: none.
    pub io_fd: u32,
    /// Whether this thread's syscalls are measured (`SYSCALL_SLIS` =
    /// `SLIS_SELECTED`): `epoch << 1 | selected`, judged against the
    /// selection epoch (`names::SELECTION_MAP`) in force; 0: not judged yet.
    pub select: u32,
    /// `comm` of the thread group leader: the process name, not the thread's.
    pub comm: [u8; COMM_LEN],
    /// The cgroup the cached series slots below belong to ([`NO_CGROUP`]:
    /// none cached). A move to another cgroup or a new `comm` empties the
    /// cache, so a cached slot always names this thread's series.
    pub slot_cgroup: u64,
    /// Syscall number + 1 of each cached slot (0: empty), at
    /// [`slot_cache_index`] of the number.
    pub slot_nr: [u32; SLOT_CACHE],
    /// The latency series slot of each cached syscall: the exit adds to it
    /// without hashing the series key while its generation holds.
    pub slot_ref: [SlotRef; SLOT_CACHE],
}
const _: () = assert!(core::mem::size_of::<ThreadState>() == 144);

/// Series slots a thread caches: the syscalls a busy thread repeats (an
/// event loop's wait, read and write) each keep one.
pub const SLOT_CACHE: usize = 8;

/// "No cgroup": `ThreadState::slot_cgroup` of an empty cache (cgroup ids
/// are kernfs inode numbers, never this).
pub const NO_CGROUP: u64 = u64::MAX;

/// Where syscall `nr` is cached in `ThreadState::slot_ref`: a
/// multiplicative hash, so numbers that differ by a multiple of
/// [`SLOT_CACHE`] (read 0, epoll_wait 232 on x86_64) need not collide.
#[inline(always)]
pub const fn slot_cache_index(nr: u32) -> usize {
    (nr.wrapping_mul(0x9E37_79B9) >> 29) as usize
}
const _: () = assert!(SLOT_CACHE == 1 << (32 - 29));

/// A series' place in a slotted map (`maps::MapKind::Slots`): its slot in
/// the values array, and the slot's generation when the series got it. The
/// agent moves a slot's generation when it evicts the series, so a cached
/// reference that no longer matches is known to be stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotRef {
    pub slot: u32,
    pub gen: u32,
}

impl SlotRef {
    /// No slot: beyond every values array, so it never passes the check.
    pub const NONE: SlotRef = SlotRef {
        slot: u32::MAX,
        gen: 0,
    };
}

/// Set in a key's syscall number when the call was made through the
/// architecture's compat (32-bit) entry, whose numbers are another table
/// (i386 on x86_64): no native number has this bit.
pub const COMPAT_NR_BIT: u32 = 1 << 31;

/// Longest cgroup path a birth event carries; a longer one keeps its end
/// (the container and unit are the last segments) and sets
/// [`CgroupEvent::TRUNCATED`].
pub const CGROUP_PATH_LEN: usize = 512;

/// A cgroup2 directory the kernel just created (`cgroup_mkdir`), sent
/// through the `CGROUP_EVENTS` ring buffer so the agent resolves its
/// identity at birth, while the runtime's records of it exist.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupEvent {
    /// cgroup id (kernfs inode), as `bpf_get_current_cgroup_id` reports it.
    pub id: u64,
    /// Bytes of `path` used, without a NUL.
    pub len: u32,
    pub flags: u32,
    /// Path from the cgroup2 root, e.g. `/machine.slice/libpod-<id>.scope`.
    pub path: [u8; CGROUP_PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<CgroupEvent>() == 16 + CGROUP_PATH_LEN);

impl CgroupEvent {
    /// The path was longer than [`CGROUP_PATH_LEN`]: `path` is its end.
    pub const TRUNCATED: u32 = 1;
}

/// Key of the latency and error maps: workload x syscall (x errno).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// cgroup v2 id (the kernfs inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Process name (group leader's comm), NUL padded.
    pub comm: [u8; COMM_LEN],
    /// Syscall number (architecture specific).
    pub nr: u32,
    /// Positive errno for the error map; always 0 in the latency map.
    pub errno: u32,
}
const _: () = assert!(core::mem::size_of::<SeriesKey>() == 32);

/// Latency histogram of one series, in OTLP's base-2 exponential layout at
/// scale [`hist::SCALE`]. Cumulative since the entry was created: the agent
/// computes deltas. Bucket counters are u32 and wrap; the agent reads far more
/// often than 2^32 events can land in one bucket of one series.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Sum of all durations in nanoseconds.
    pub sum_ns: u64,
    /// Durations below the first bucket (see [`hist::ZERO_THRESHOLD_S`]).
    pub zero: u32,
    pub _pad: u32,
    /// `buckets[i]` counts OTLP bucket index `i + hist::OTLP_INDEX_OFFSET`.
    pub buckets: [u32; hist::NUM_BUCKETS],
    /// `split[k]`: durations in the bucket of threshold `k`
    /// (`globals::SPLIT_NS`) at or below it; wraps like the buckets.
    pub split: [u32; hist::SPLITS],
}
const _: () =
    assert!(core::mem::size_of::<Histogram>() == 16 + 4 * (hist::NUM_BUCKETS + hist::SPLITS));

impl Histogram {
    pub const ZERO: Histogram = Histogram {
        sum_ns: 0,
        zero: 0,
        _pad: 0,
        buckets: [0; hist::NUM_BUCKETS],
        split: [0; hist::SPLITS],
    };
}

/// Indexes of the kernel's own counters (a per-CPU array), so that nothing the
/// kernel side drops goes unreported. The first [`maps::COUNT`] slots count
/// updates dropped because that map was full (slot = the map's id).
pub mod counter {
    use crate::maps;

    /// Slot of "map `id` was full" (an update was dropped).
    pub const fn map_full(id: usize) -> u32 {
        id as u32
    }
    /// Syscall exits without a recorded entry for a thread that has had no
    /// entry since the programs were loaded: its syscall was in flight at
    /// attach. At most once per thread alive then.
    pub const EXIT_WITHOUT_ENTER: u32 = maps::COUNT as u32;
    /// Syscall exits without a recorded entry for a thread that had one:
    /// the entry was evicted from the (full) LRU thread map, so that syscall
    /// was not measured. Rising: `limits.kernel_maps.threads` is too small.
    pub const THREAD_EVICTED: u32 = maps::COUNT as u32 + 1;
    /// cgroup birth events lost because the ring buffer was full: those
    /// cgroups are resolved by the next tree walk, if they still exist.
    pub const CGROUP_EVENTS_LOST: u32 = maps::COUNT as u32 + 2;
    /// Sockets given state in socket storage, and of those, state freed
    /// with its socket: their difference is the live count (socket storage
    /// has no map to count entries in; see `globals::SOCK_STORE`).
    pub const SOCK_STORED: u32 = maps::COUNT as u32 + 3;
    pub const SOCK_FREED: u32 = maps::COUNT as u32 + 4;
    pub const COUNT: u32 = maps::COUNT as u32 + 5;
    // Syscalls measured are not counted here: the histograms already hold
    // that number, and a counter would cost every syscall a map update.
}

/// Names of the read-only globals the loader sets before loading the object.
pub mod globals {
    /// tgid of the agent itself, excluded in the kernel.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// offsetof(struct task_struct, group_leader), from BTF at load time.
    pub const TASK_GROUP_LEADER_OFF: &str = "TASK_GROUP_LEADER_OFF";
    /// offsetof(struct task_struct, comm), from BTF at load time.
    pub const TASK_COMM_OFF: &str = "TASK_COMM_OFF";
    /// Offsets of `id` and `ret` in the raw_syscalls tracepoint records, from
    /// tracefs format files at load time.
    pub const TP_ENTER_ID_OFF: &str = "TP_ENTER_ID_OFF";
    pub const TP_EXIT_RET_OFF: &str = "TP_EXIT_RET_OFF";
    /// Offset of `id` in the raw_syscalls sys_exit record (the syscall
    /// number, read only when an exit has no recorded entry).
    pub const TP_EXIT_ID_OFF: &str = "TP_EXIT_ID_OFF";
    /// Offset of the syscall number in `struct pt_regs` (x86_64 `orig_ax`,
    /// arm64 `syscallno`), from BTF at load time: the tp_btf sys_exit hook
    /// passes only the registers and the return value.
    pub const PT_REGS_NR_OFF: &str = "PT_REGS_NR_OFF";
    /// Syscalls after which the cached process name is re-read.
    pub const NR_EXECVE: &str = "NR_EXECVE";
    pub const NR_EXECVEAT: &str = "NR_EXECVEAT";
    pub const NR_PRCTL: &str = "NR_PRCTL";
    /// Syscalls that create a task: a new thread's or process's first event
    /// is the exit of one of these, returning 0, with no entry before it.
    /// `u32::MAX` where the architecture has no such syscall (arm64: fork,
    /// vfork).
    pub const NR_CLONE: &str = "NR_CLONE";
    pub const NR_CLONE3: &str = "NR_CLONE3";
    pub const NR_FORK: &str = "NR_FORK";
    pub const NR_VFORK: &str = "NR_VFORK";
    /// Socket field offsets, from BTF at load time (see `tcp`).
    pub const SK_FAMILY_OFF: &str = "SK_FAMILY_OFF";
    pub const SK_NUM_OFF: &str = "SK_NUM_OFF";
    pub const SK_DPORT_OFF: &str = "SK_DPORT_OFF";
    pub const SK_DADDR_OFF: &str = "SK_DADDR_OFF";
    pub const SK_V6_DADDR_OFF: &str = "SK_V6_DADDR_OFF";
    pub const SK_ERR_OFF: &str = "SK_ERR_OFF";
    pub const SK_DROPS_OFF: &str = "SK_DROPS_OFF";
    pub const TCP_SRTT_OFF: &str = "TCP_SRTT_OFF";
    /// sk_buff.head, sk_buff.end and skb_shared_info.gso_segs: the segment
    /// count of a retransmitted skb.
    pub const SKB_HEAD_OFF: &str = "SKB_HEAD_OFF";
    pub const SKB_END_OFF: &str = "SKB_END_OFF";
    pub const SHINFO_GSO_SEGS_OFF: &str = "SHINFO_GSO_SEGS_OFF";
    /// Minimum time between two RTT samples of one socket, in ns.
    pub const RTT_SAMPLE_NS: &str = "RTT_SAMPLE_NS";
    /// sock_common.skc_state, read when seeding sockets older than the agent.
    pub const SK_STATE_OFF: &str = "SK_STATE_OFF";
    /// Offsets of the tcp_sock sequence fields, indexed by
    /// [`crate::tcp::seq`]: a request that starts while the previous
    /// answer is unread (client) or unacknowledged (server) overlaps it
    /// (pipelining, multiplexing); a write is all sent when snd_nxt equals
    /// write_seq.
    pub const TCP_SEQ_OFF: &str = "TCP_SEQ_OFF";
    /// tcp_sock.tcp_clock_cache: the kernel's clock (CLOCK_MONOTONIC, ns)
    /// when the socket last transmitted (or received), which a write that
    /// sent all its bytes read as it transmitted them.
    pub const TCP_CLOCK_OFF: &str = "TCP_CLOCK_OFF";
    /// Whose syscall SLIs the syscall programs record: `SLIS_NONE` (they
    /// run only for the syscall route of TCP request latency), `SLIS_ALL`
    /// (`--probes syscalls`), `SLIS_SELECTED` (on demand: the threads of the
    /// cgroups and process names the agent writes into `SELECTED_CGROUPS`
    /// and `SELECTED_NAMES`).
    pub const SYSCALL_SLIS: &str = "SYSCALL_SLIS";
    pub const SLIS_NONE: u32 = 0;
    pub const SLIS_ALL: u32 = 1;
    pub const SLIS_SELECTED: u32 = 2;
    /// 1: TCP request latency comes from the syscall layer (see `sockio`):
    /// the kernel lacks `sock_send_length`/`sock_recv_length` (before 6.3).
    pub const SOCKIO: &str = "SOCKIO";
    /// 1: TCP socket state lives in socket storage (`SOCK_STATE`), freed
    /// with its socket, instead of the `SOCKETS` LRU hash. Only where every
    /// program reaching it has a typed socket pointer: the task storage
    /// object (5.13+) with the socket tracepoints (6.3+), not `SOCKIO`.
    pub const SOCK_STORE: &str = "SOCK_STORE";
    /// With `SOCK_STORE`: the most sockets given state in socket storage at
    /// once (`limits.kernel_maps.sockets`, as the LRU map's size is
    /// elsewhere); a socket beyond it is not tracked and counts as
    /// `map_full(SOCKETS)`.
    pub const SOCK_LIMIT: &str = "SOCK_LIMIT";
    /// Socket I/O syscalls by number, one bit each (bit `nr % 64` of word
    /// `nr / 64`, numbers below 512): those that receive, those that send.
    pub const SOCKIO_RECV_NRS: &str = "SOCKIO_RECV_NRS";
    pub const SOCKIO_SEND_NRS: &str = "SOCKIO_SEND_NRS";
    /// recvfrom and recvmsg: their flags (MSG_PEEK) are arguments 3 and 2.
    pub const NR_RECVFROM: &str = "NR_RECVFROM";
    pub const NR_RECVMSG: &str = "NR_RECVMSG";
    /// Offsets of syscall arguments 0..3 in `struct pt_regs` (tp_btf
    /// sys_enter), and of `args` in the raw_syscalls sys_enter record.
    pub const PT_REGS_ARG_OFF: &str = "PT_REGS_ARG_OFF";
    pub const TP_ENTER_ARGS_OFF: &str = "TP_ENTER_ARGS_OFF";
    /// fd -> struct sock, from BTF: task_struct.files, files_struct.fdt,
    /// fdtable.max_fds, fdtable.fd, file.f_inode, inode.i_mode,
    /// file.private_data, socket.sk (indexed by `fd_off::*`).
    pub const FD_OFF: &str = "FD_OFF";

    /// Where the "compat syscall in progress" flag is, from BTF at load
    /// time: offset in `task_struct` (x86_64: `thread_info.status`) and the
    /// mask of the flag (x86_64: TS_COMPAT); a mask of 0 marks nothing.
    pub const TASK_COMPAT_OFF: &str = "TASK_COMPAT_OFF";
    pub const TASK_COMPAT_MASK: &str = "TASK_COMPAT_MASK";
    /// offsetof(struct task_struct, pid), from BTF: the renamed task of
    /// `task_rename`.
    pub const TASK_PID_OFF: &str = "TASK_PID_OFF";
    /// offsetof(struct cgroup, kn), (struct kernfs_node, id), (struct
    /// cgroup, root), (struct cgroup_root, hierarchy_id), from BTF: a new
    /// cgroup's id and hierarchy.
    pub const CGROUP_KN_OFF: &str = "CGROUP_KN_OFF";
    pub const KERNFS_ID_OFF: &str = "KERNFS_ID_OFF";
    pub const CGROUP_ROOT_OFF: &str = "CGROUP_ROOT_OFF";
    pub const CGROUP_HIERARCHY_OFF: &str = "CGROUP_HIERARCHY_OFF";

    /// SLO latency thresholds in ns (`[u64; hist::SPLITS]`) and the index of
    /// the bucket each falls in (`[u32; hist::SPLITS]`, `NO_SPLIT` when the
    /// slot is unused): the kernel compares only durations of that bucket.
    pub const SPLIT_NS: &str = "SPLIT_NS";
    pub const SPLIT_IDX: &str = "SPLIT_IDX";
    /// A split slot no bucket index matches.
    pub const NO_SPLIT: u32 = u32::MAX;

    /// Every global above: the object declares exactly these (checked by the
    /// agent's contract test).
    pub const ALL: [&str; 49] = [
        SELF_TGID,
        TASK_GROUP_LEADER_OFF,
        TASK_COMM_OFF,
        TP_ENTER_ID_OFF,
        TP_EXIT_RET_OFF,
        TP_EXIT_ID_OFF,
        PT_REGS_NR_OFF,
        NR_EXECVE,
        NR_EXECVEAT,
        NR_PRCTL,
        NR_CLONE,
        NR_CLONE3,
        NR_FORK,
        NR_VFORK,
        SK_FAMILY_OFF,
        SK_NUM_OFF,
        SK_DPORT_OFF,
        SK_DADDR_OFF,
        SK_V6_DADDR_OFF,
        SK_ERR_OFF,
        SK_DROPS_OFF,
        TCP_SRTT_OFF,
        SKB_HEAD_OFF,
        SKB_END_OFF,
        SHINFO_GSO_SEGS_OFF,
        RTT_SAMPLE_NS,
        TCP_SEQ_OFF,
        TCP_CLOCK_OFF,
        SK_STATE_OFF,
        SYSCALL_SLIS,
        SOCKIO,
        SOCK_STORE,
        SOCK_LIMIT,
        SOCKIO_RECV_NRS,
        SOCKIO_SEND_NRS,
        NR_RECVFROM,
        NR_RECVMSG,
        PT_REGS_ARG_OFF,
        TP_ENTER_ARGS_OFF,
        FD_OFF,
        TASK_COMPAT_OFF,
        TASK_COMPAT_MASK,
        TASK_PID_OFF,
        CGROUP_KN_OFF,
        KERNFS_ID_OFF,
        CGROUP_ROOT_OFF,
        CGROUP_HIERARCHY_OFF,
        SPLIT_NS,
        SPLIT_IDX,
    ];

    /// Words of the socket I/O syscall bitmaps: numbers 0..512.
    pub const SOCKIO_NR_WORDS: usize = 8;

    /// Indexes into `FD_OFF`.
    pub mod fd_off {
        pub const TASK_FILES: usize = 0;
        pub const FILES_FDT: usize = 1;
        pub const FDT_MAX_FDS: usize = 2;
        pub const FDT_FD: usize = 3;
        pub const FILE_INODE: usize = 4;
        pub const INODE_MODE: usize = 5;
        pub const FILE_PRIVATE: usize = 6;
        pub const SOCKET_SK: usize = 7;
        pub const COUNT: usize = 8;
    }
}

/// Folding in the kernel: an update whose measurement map is full (a new
/// workload x syscall, or a new TCP owner x peer, finds no room) is not
/// lost. It is added to one fixed slot per metric, which the agent exports
/// as that metric's overflow series (`otel.metric.overflow=true`), and the
/// map's "full" counter says how many updates went there.
pub mod fold {
    /// Slots of `FOLDED_HIST`: 0 for syscall latency, a TCP histogram's
    /// `HistKind` value for its kind.
    pub const HIST_SLOTS: u32 = 8;
    /// Slots of `FOLDED_COUNTS`: 0 for syscall errors, a TCP counter's
    /// `CountKind` value for its kind.
    pub const COUNT_SLOTS: u32 = 32;
    pub const SYSCALL: u32 = 0;

    // Every kind has its slot, and none is the syscalls' slot.
    const _: () = {
        use crate::tcp::{CountKind, HistKind};
        let mut i = 0;
        while i < HistKind::ALL.len() {
            let k = HistKind::ALL[i] as u32;
            assert!(k != SYSCALL && k < HIST_SLOTS);
            i += 1;
        }
        let mut i = 0;
        while i < CountKind::ALL.len() {
            let k = CountKind::ALL[i] as u32;
            assert!(k != SYSCALL && k < COUNT_SLOTS);
            i += 1;
        }
    };
}

/// Program names and the internal maps in the eBPF object (the measuring
/// maps are in [`maps::MAPS`]).
pub mod names {
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// One bit per thread id: set once the thread has had an entry in
    /// `THREADS` since the programs were loaded (sized with
    /// [`crate::maps::threads_seen_entries`]).
    pub const THREADS_SEEN_MAP: &str = "THREADS_SEEN";
    /// Where an update goes when its measurement map is full (see
    /// [`crate::fold`]): one histogram, and one counter, per metric.
    pub const FOLDED_HIST_MAP: &str = "FOLDED_HIST";
    pub const FOLDED_COUNTS_MAP: &str = "FOLDED_COUNTS";
    /// Sockets with state in socket storage now, one shared counter (see
    /// `globals::SOCK_LIMIT`).
    pub const SOCKS_LIVE_MAP: &str = "SOCKS_LIVE";
    /// Local ports with a listener, filled while seeding (see `SEED_TCP`):
    /// an established socket on such a port was accepted, not connected.
    pub const LISTEN_PORTS_MAP: &str = "LISTEN_PORTS";
    pub const LISTEN_PORTS_ENTRIES: u32 = 4096;
    /// A BPF iterator over every TCP socket (Linux 5.9+), run once after the
    /// TCP programs attach: connections and listeners older than the agent
    /// join `SOCKETS` and `LISTENERS`.
    pub const SEED_TCP: &str = "seed_tcp";
    /// Two u32s written by the agent: [the selection epoch, all]. The epoch
    /// moves whenever `SELECTED_CGROUPS`/`SELECTED_NAMES` change, so every
    /// thread judges itself again at its next syscall; `all` != 0 selects
    /// every thread (an SLO over the whole node).
    pub const SELECTION_MAP: &str = "SELECTION";
    /// Index of the epoch and of the all flag in `SELECTION`.
    pub const SELECTION_EPOCH: u32 = 0;
    pub const SELECTION_ALL: u32 = 1;
    /// One u32, bumped after every process rename (`task_rename`): threads
    /// whose cached name is older read it again.
    pub const RENAME_EPOCH_MAP: &str = "RENAME_EPOCH";
    /// LRU: the newest name of each renamed task, by its thread id, written
    /// before the epoch moves (the tracepoint fires before the kernel copies
    /// the name, so reading `comm` then could still see the old one).
    pub const RENAMED_MAP: &str = "RENAMED";
    /// Entries of `RENAMED`.
    pub const RENAMED_ENTRIES: u32 = 4096;
    /// Ring buffer of [`crate::CgroupEvent`]s.
    pub const CGROUP_EVENTS_MAP: &str = "CGROUP_EVENTS";
    /// Bytes of `CGROUP_EVENTS`: 480 events of 528 bytes (a power of two).
    pub const CGROUP_EVENTS_BYTES: u32 = 256 * 1024;
    /// Process renames (prctl, /proc/<pid>/comm, exec) and exec from any
    /// thread (moves the thread's entry to the id it takes over).
    pub const BTF_RENAME: &str = "task_rename_btf";
    pub const BTF_EXEC: &str = "process_exec_btf";
    /// cgroup births, for identity at birth (tp_btf only).
    pub const BTF_CGROUP_MKDIR: &str = "cgroup_mkdir_btf";
    pub const BTF_ENTER: &str = "sys_enter_btf";
    pub const BTF_EXIT: &str = "sys_exit_btf";
    pub const TP_ENTER: &str = "sys_enter_tp";
    pub const TP_EXIT: &str = "sys_exit_tp";
    pub const BTF_THREAD_EXIT: &str = "thread_exit_btf";
    pub const TP_THREAD_EXIT: &str = "thread_exit_tp";
    /// Trivial programs on the same hooks, for the benchmark's floor.
    pub const FLOOR_ENTER: &str = "floor_enter_btf";
    pub const FLOOR_EXIT: &str = "floor_exit_btf";
    /// Two clock reads and a per-CPU store on the same hooks, for the
    /// least any syscall latency measurement costs (the clock floor).
    pub const FLOOR_CLOCK_ENTER: &str = "floor_clock_enter_btf";
    pub const FLOOR_CLOCK_EXIT: &str = "floor_clock_exit_btf";
    pub const CLOCK_FLOOR_MAP: &str = "CLOCK_FLOOR";
    /// Trivial programs on the socket tracepoints the default's TCP
    /// programs use (6.3+), for the floor of the default.
    pub const FLOOR_SOCK_SEND: &str = "floor_sock_send_btf";
    pub const FLOOR_SOCK_RECV: &str = "floor_sock_recv_btf";
    /// The benchmark's reference design (ebpf/src/floor.rs): a plain
    /// per-thread array and a per-syscall-number histogram array.
    pub const REF_ENTER: &str = "ref_enter_btf";
    pub const REF_EXIT: &str = "ref_exit_btf";
    pub const REF_THREADS_MAP: &str = "REF_THREADS";
    /// The object's size of `REF_THREADS` (the loader sets one entry, or
    /// pid_max in reference mode).
    pub const REF_THREADS_ENTRIES: u32 = 32768;
    pub const REF_HIST_MAP: &str = "REF_HIST";
    /// Syscall numbers the reference histogram covers (x86_64 and aarch64
    /// stay below 512).
    pub const REF_HIST_ENTRIES: u32 = 512;
    /// tp_btf programs on the socket and TCP tracepoints, with their hooks.
    /// Each is attached on its own: a kernel without one hook loses only
    /// the signals that hook serves.
    pub const TCP_STATE: (&str, &str) = ("tcp_state_btf", "inet_sock_set_state");
    pub const SOCK_SEND: (&str, &str) = ("sock_send_btf", "sock_send_length");
    pub const SOCK_RECV: (&str, &str) = ("sock_recv_btf", "sock_recv_length");
    pub const TCP_SEND_RESET: (&str, &str) = ("tcp_send_reset_btf", "tcp_send_reset");
    pub const TCP_RECEIVE_RESET: (&str, &str) = ("tcp_receive_reset_btf", "tcp_receive_reset");
    pub const TCP_DESTROY: (&str, &str) = ("tcp_destroy_btf", "tcp_destroy_sock");
    /// tcp_retransmit_skb gained an `err` argument in Linux 6.17 (and fires
    /// on failed attempts too); older kernels get the two-argument program.
    pub const TCP_RETRANSMIT: (&str, &str) = ("tcp_retransmit_btf", "tcp_retransmit_skb");
    pub const TCP_RETRANSMIT_OLD: &str = "tcp_retransmit_old_btf";
    pub const TCP_PROGRAMS: [(&str, &str); 6] = [
        TCP_STATE,
        SOCK_SEND,
        SOCK_RECV,
        TCP_SEND_RESET,
        TCP_RECEIVE_RESET,
        TCP_DESTROY,
    ];
    /// Not attached: run by the agent (BPF_PROG_TEST_RUN) once per listener
    /// per interval to read its drop counter.
    pub const LISTEN_POLL: &str = "listen_poll";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), no padding (sizes asserted above).
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::SlotRef {}
    unsafe impl aya::Pod for super::CgroupEvent {}
    unsafe impl aya::Pod for super::SeriesKey {}
    unsafe impl aya::Pod for super::Histogram {}
    unsafe impl aya::Pod for super::tcp::TcpKey {}
    unsafe impl aya::Pod for super::tcp::SockState {}
    unsafe impl aya::Pod for super::tcp::ListenState {}
}

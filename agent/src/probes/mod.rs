//! Loading and attaching the kernel programs.
//!
//! Everything that depends on the running kernel is decided here, once, at
//! load time: privileges, BTF offsets, map sizes, and which hook to use
//! (`tp_btf` when the kernel allows it, `raw_syscalls` tracepoints otherwise).

pub mod batch;
pub mod btf;
#[cfg(test)]
mod contract;
pub mod lifecycle;
mod ondemand;
pub mod pidns;
pub mod privilege;
pub mod signals;
pub mod slots;
mod tcp;

pub use ondemand::SelectOutcome;
pub use signals::Signals;
pub use tcp::{IoRoute, TcpHooks, TcpMaps};

use ondemand::{Selection, SyscallLinks};

use std::path::Path;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use syscope_common::{counter, fold, globals, maps, names, Histogram, SeriesKey};
use tracing::{info, warn};

use crate::enrich::syscalls::{syscall_nr, Arch};

/// The kernel programs, built by build.rs from `ebpf/`: thread state in an
/// LRU hash map (every kernel).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/syscope.bpf.o"));
/// The same programs with thread state in task storage (Linux 5.13+).
static OBJECT_TASK_STORAGE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/syscope-task-storage.bpf.o"));

/// Where the syscall programs keep each thread's state between entry and
/// exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadStore {
    /// BPF task storage: found without hashing, freed with its task, never
    /// evicted (Linux 5.13+, tp_btf).
    TaskStorage,
    /// The `threads` LRU hash map, keyed by thread id.
    LruHash,
}

impl ThreadStore {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStore::TaskStorage => "task_storage",
            ThreadStore::LruHash => "lru_hash",
        }
    }
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Which hooks carry the syscall programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// `tp_btf/sys_enter` + `tp_btf/sys_exit` (BTF-enabled raw tracepoints).
    BtfTracepoint,
    /// `tracepoint/raw_syscalls/sys_enter` + `sys_exit` (via tracefs).
    Tracepoint,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::BtfTracepoint => "tp_btf",
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

/// The benchmark's yardsticks (ebpf/src/floor.rs, `cargo xtask bench`):
/// programs that measure what syscope's cost is compared against, attached
/// instead of syscope's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPrograms {
    /// Empty programs on the syscall hooks: what attaching costs.
    Floor,
    /// Two clock reads and a per-CPU store on the syscall hooks: the least
    /// any latency measurement costs.
    FloorClock,
    /// Empty programs on the socket tracepoints the default's TCP programs
    /// use: the least the default costs.
    FloorSock,
    /// The hand-written reference design.
    Reference,
}

impl BenchPrograms {
    /// Its programs and the tp_btf hooks they go on.
    fn programs(self) -> [(&'static str, &'static str); 2] {
        match self {
            BenchPrograms::Floor => [
                (names::FLOOR_ENTER, "sys_enter"),
                (names::FLOOR_EXIT, "sys_exit"),
            ],
            BenchPrograms::FloorClock => [
                (names::FLOOR_CLOCK_ENTER, "sys_enter"),
                (names::FLOOR_CLOCK_EXIT, "sys_exit"),
            ],
            BenchPrograms::FloorSock => [
                (names::FLOOR_SOCK_SEND, "sock_send_length"),
                (names::FLOOR_SOCK_RECV, "sock_recv_length"),
            ],
            BenchPrograms::Reference => [
                (names::REF_ENTER, "sys_enter"),
                (names::REF_EXIT, "sys_exit"),
            ],
        }
    }
}

/// Sizes of the kernel maps (entries) and other load-time choices.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Entries of each kernel map, by `maps::MAPS` id.
    pub kernel_maps: [u32; maps::COUNT],
    /// Force a hook instead of probing (tests, benchmarks).
    pub force_mode: Option<AttachMode>,
    /// Attach only one of the benchmark's yardsticks instead of syscope.
    pub bench: Option<BenchPrograms>,
    /// Thread state in the LRU hash map even where task storage would
    /// serve (tests of the LRU path, the benchmark's side-by-side).
    pub lru_threads: bool,
    /// Attach the syscall programs for every process.
    pub syscalls: bool,
    /// Load the syscall programs for on-demand SLIs (when `syscalls` is
    /// off): attached only while some workload is selected
    /// ([`Probes::select`]).
    pub on_demand: bool,
    /// Attach the TCP programs.
    pub tcp: bool,
    /// Force the route of TCP request latency instead of probing.
    pub force_io: Option<IoRoute>,
    /// SLO latency thresholds (at most `hist::SPLITS`): each histogram
    /// counts exactly the durations at or below each.
    pub thresholds: Vec<std::time::Duration>,
}

/// The split globals for `thresholds`: ns, and the bucket each falls in.
pub fn split_globals(
    thresholds: &[std::time::Duration],
) -> (
    [u64; syscope_common::hist::SPLITS],
    [u32; syscope_common::hist::SPLITS],
) {
    let mut ns = [0u64; syscope_common::hist::SPLITS];
    let mut idx = [globals::NO_SPLIT; syscope_common::hist::SPLITS];
    for (k, t) in thresholds.iter().take(ns.len()).enumerate() {
        let t = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        if let syscope_common::Bucket::Index(i) = syscope_common::bucket_index(t) {
            ns[k] = t;
            idx[k] = i as u32;
        }
    }
    (ns, idx)
}

/// Errors loading or attaching: each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error(
        "kernel BTF not found at {VMLINUX_BTF}: syscope needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 have it)"
    )]
    NoBtf,
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "attaching the syscall programs failed with both tp_btf ({btf}) and tracepoints ({tp})"
    )]
    Attach { btf: String, tp: String },
    #[error(
        "attaching the TCP programs failed ({0}); this kernel lacks a hook the TCP set \
         needs: run with --probes syscalls"
    )]
    TcpAttach(String),
    #[error("eBPF object is missing {0}")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        /// The map's label (`maps::MapSpec::label`).
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded programs and the maps userspace reads. Dropping it detaches.
pub struct Probes {
    /// The syscall hook in use; `None` when the syscall programs are not
    /// attached (they may be attached for the TCP syscall route alone).
    pub mode: Option<AttachMode>,
    /// Which hook serves each signal (or why none does).
    pub signals: Signals,
    /// The syscall programs record syscall SLIs (not only socket I/O).
    syscall_slis: bool,
    /// Whether the syscall programs are attached now (on demand they come
    /// and go); `None` when they are not loaded.
    links: Option<SyscallLinks>,
    /// On-demand SLIs: what is selected (see [`Probes::select`]).
    selection: Option<Selection>,
    /// TCP request latency comes from the syscall programs (before 6.3):
    /// they stay attached.
    tcp_route: bool,
    /// TCP maps, when the TCP set is attached.
    pub tcp: Option<TcpMaps>,
    pub hist: slots::SlotMap<SeriesKey>,
    pub errors: HashMap<MapData, SeriesKey, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Where updates go when a measurement map is full (`fold`).
    pub folded: Folded,
    /// cgroup births, when `cgroup_mkdir` is attached (see `lifecycle`).
    pub cgroup_events: Option<RingBuf<MapData>>,
    pub map_sizes: MapSizes,
    /// The most entries each map's state can take: its size, or for state
    /// in socket storage, the limit the programs check.
    pub map_capacity: MapSizes,
    /// Owns the programs and their links; `None` once detached. The maps
    /// above are separate file descriptors and stay readable after that.
    ebpf: Option<Ebpf>,
}

/// The kernel's folded slots: one histogram and one counter per metric
/// (`syscope_common::fold`), cumulative since load.
pub struct Folded {
    hist: Array<MapData, Histogram>,
    counts: Array<MapData, u64>,
}

impl Folded {
    /// The histogram slots and the counter slots, as they are now; `None`
    /// when a read failed (the caller keeps its last values).
    pub fn read(&self) -> Option<(Vec<Histogram>, Vec<u64>)> {
        let hist = (0..fold::HIST_SLOTS)
            .map(|i| self.hist.get(&i, 0).ok())
            .collect::<Option<_>>()?;
        let counts = (0..fold::COUNT_SLOTS)
            .map(|i| self.counts.get(&i, 0).ok())
            .collect::<Option<_>>()?;
        Some((hist, counts))
    }
}

/// Entries of each kernel map as loaded (by `maps::MAPS` id): the
/// configured size, or 1 for the maps of a set that is off.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes(pub [u32; maps::COUNT]);

/// Take an internal array map out of the object.
fn take_array<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Array<MapData, V>, ProbeError> {
    let m = ebpf.take_map(name).ok_or(ProbeError::Missing(name))?;
    Array::try_from(m).map_err(|source| ProbeError::Map { name, source })
}

/// Take a map out of the object under its catalogue name.
fn take_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    spec: &'static maps::MapSpec,
) -> Result<HashMap<MapData, K, V>, ProbeError> {
    let m = ebpf
        .take_map(spec.object)
        .ok_or(ProbeError::Missing(spec.object))?;
    HashMap::try_from(m).map_err(|source| ProbeError::Map {
        name: spec.label,
        source,
    })
}

/// Load the object, set load-time constants, attach, and hand over the maps.
/// The object with thread state in task storage first, where it may serve;
/// the kernels that cannot load it (before 5.13, or anything it trips on,
/// TCP programs refusing socket storage included) get the LRU hash one, and
/// the log says why.
pub fn load(opts: &LoadOptions) -> Result<Probes, ProbeError> {
    privilege::check()?;
    privilege::raise_memlock();
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(ProbeError::NoBtf);
    }
    // Task storage serves the tp_btf syscall programs only.
    if opts.bench.is_none() && !opts.lru_threads && opts.force_mode != Some(AttachMode::Tracepoint)
    {
        match load_object(opts, ThreadStore::TaskStorage) {
            Ok(p) => return Ok(p),
            Err(e) => info!(
                error = %e,
                "thread and socket state in LRU hash maps: the local storage programs did \
                 not load (task storage from tracing programs needs Linux 5.13+)"
            ),
        }
    }
    load_object(opts, ThreadStore::LruHash)
}

fn load_object(opts: &LoadOptions, store: ThreadStore) -> Result<Probes, ProbeError> {
    let kbtf = btf::Btf::from_file(Path::new(VMLINUX_BTF))?;
    let leader_off = kbtf.member_offset("task_struct", "group_leader")?;
    let comm_off = kbtf.member_offset("task_struct", "comm")?;
    let arch = Arch::current();
    // Where the syscall number is in the registers tp_btf/sys_exit passes.
    let regs_nr = match arch {
        Arch::X86_64 | Arch::I386 => "orig_ax",
        Arch::Aarch64 => "syscallno",
    };
    let regs_nr_off = kbtf.member_offset("pt_regs", regs_nr)?;
    let tp = tracepoint_offsets();
    let nr = |name| syscall_nr(arch, name).unwrap_or(u32::MAX);
    let self_tgid = pidns::kernel_self_tgid();
    let lc = lifecycle::Offsets::from_btf(&kbtf, arch);

    let sk = match opts.tcp {
        true if opts.bench.is_none() => match tcp::SockOffsets::from_btf(&kbtf) {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(error = %e, "TCP probes disabled: socket fields not found in kernel BTF");
                None
            }
        },
        _ => None,
    };
    // Request latency from the socket tracepoints, or from the syscall
    // programs on socket fds where the kernel has no such tracepoints.
    let mut route = sk.map(|_| tcp::IoRoute::choose(&kbtf, opts.force_io));
    let sockio = match route {
        Some(tcp::IoRoute::Syscalls) => {
            match tcp::SockioSetup::from_btf(&kbtf, arch, tp.enter_args) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "TCP request latency unavailable: file and socket fields not found in kernel BTF");
                    route = None;
                    None
                }
            }
        }
        _ => None,
    };
    // Socket state in socket storage where every program reaching it has a
    // typed socket: the task storage object (5.13+: socket storage from
    // tracing programs is 5.11+) with the socket tracepoints.
    let sock_store = store == ThreadStore::TaskStorage
        && sk.is_some()
        && route == Some(tcp::IoRoute::SockTracepoints);
    let on_demand = opts.on_demand && !opts.syscalls && opts.bench.is_none();
    let syscall_programs = opts.syscalls || on_demand || sockio.is_some();

    // A set that is off keeps its maps (they are in the object) at one entry.
    let sys = opts.syscalls || on_demand || opts.bench.is_some();
    let sizes = MapSizes(maps::MAPS.map(|m| {
        let on = match m.set {
            _ if m.id == maps::SELECTED_CGROUPS || m.id == maps::SELECTED_NAMES => on_demand,
            // Task storage instead of the thread map.
            _ if m.id == maps::THREADS && store == ThreadStore::TaskStorage => false,
            // Socket storage instead of the socket map.
            _ if m.id == maps::SOCKETS && sock_store => false,
            // The syscall route needs the thread map, not the SLI maps.
            maps::ProbeSet::Syscalls => sys || (m.id == maps::THREADS && sockio.is_some()),
            maps::ProbeSet::Tcp => opts.tcp,
        };
        if on {
            opts.kernel_maps[m.id]
        } else {
            1
        }
    }));
    let sk_off = sk.unwrap_or_default();
    let sockio_g = sockio.unwrap_or_default();
    let (nr_execve, nr_execveat, nr_prctl) = (nr("execve"), nr("execveat"), nr("prctl"));
    let (nr_clone, nr_clone3) = (nr("clone"), nr("clone3"));
    let (nr_fork, nr_vfork) = (nr("fork"), nr("vfork"));
    let syscall_slis = match (opts.syscalls, on_demand) {
        (true, _) => globals::SLIS_ALL,
        (false, true) => globals::SLIS_SELECTED,
        (false, false) => globals::SLIS_NONE,
    };
    let sockio_on = sockio.is_some() as u32;
    let sock_store_on = sock_store as u32;
    // Socket storage has no size of its own: the sockets limit is checked
    // by the programs instead, and reported as the map's capacity.
    let sock_limit = if sock_store {
        opts.kernel_maps[maps::SOCKETS]
    } else {
        0
    };
    let mut capacity = sizes;
    if sock_store {
        capacity.0[maps::SOCKETS] = sock_limit;
    }
    let (split_ns, split_idx) = split_globals(&opts.thresholds);
    let mut loader = EbpfLoader::new();
    for m in &maps::MAPS {
        loader.map_max_entries(m.object, sizes.0[m.id]);
        if let maps::MapKind::Slots { values, gens, free } = m.kind {
            for name in [values, gens, free] {
                loader.map_max_entries(name, sizes.0[m.id]);
            }
        }
    }
    loader.map_max_entries(
        names::THREADS_SEEN_MAP,
        if (sys || sockio.is_some()) && store == ThreadStore::LruHash {
            maps::threads_seen_entries(pid_max())
        } else {
            1
        },
    );
    // The benchmark's reference design: a slot per thread id, or nothing.
    let reference = opts.bench == Some(BenchPrograms::Reference);
    loader.map_max_entries(
        names::REF_THREADS_MAP,
        if reference { pid_max() } else { 1 },
    );
    loader.map_max_entries(
        names::REF_HIST_MAP,
        if reference {
            names::REF_HIST_ENTRIES
        } else {
            1
        },
    );
    let mut ebpf = loader
        .override_global(globals::SELF_TGID, &self_tgid, true)
        .override_global(globals::TASK_GROUP_LEADER_OFF, &leader_off, true)
        .override_global(globals::TASK_COMM_OFF, &comm_off, true)
        .override_global(globals::TP_ENTER_ID_OFF, &tp.enter_id, true)
        .override_global(globals::TP_EXIT_ID_OFF, &tp.exit_id, true)
        .override_global(globals::TP_EXIT_RET_OFF, &tp.exit_ret, true)
        .override_global(globals::PT_REGS_NR_OFF, &regs_nr_off, true)
        .override_global(globals::NR_EXECVE, &nr_execve, true)
        .override_global(globals::NR_EXECVEAT, &nr_execveat, true)
        .override_global(globals::NR_PRCTL, &nr_prctl, true)
        .override_global(globals::NR_CLONE, &nr_clone, true)
        .override_global(globals::NR_CLONE3, &nr_clone3, true)
        .override_global(globals::NR_FORK, &nr_fork, true)
        .override_global(globals::NR_VFORK, &nr_vfork, true)
        .override_global(globals::SK_FAMILY_OFF, &sk_off.family, true)
        .override_global(globals::SK_NUM_OFF, &sk_off.num, true)
        .override_global(globals::SK_DPORT_OFF, &sk_off.dport, true)
        .override_global(globals::SK_DADDR_OFF, &sk_off.daddr, true)
        .override_global(globals::SK_V6_DADDR_OFF, &sk_off.v6_daddr, true)
        .override_global(globals::SK_ERR_OFF, &sk_off.err, true)
        .override_global(globals::SK_DROPS_OFF, &sk_off.drops, true)
        .override_global(globals::TCP_SRTT_OFF, &sk_off.srtt, true)
        .override_global(globals::SKB_HEAD_OFF, &sk_off.skb_head, true)
        .override_global(globals::SKB_END_OFF, &sk_off.skb_end, true)
        .override_global(globals::SHINFO_GSO_SEGS_OFF, &sk_off.gso_segs, true)
        .override_global(globals::RTT_SAMPLE_NS, &tcp::RTT_SAMPLE_NS, true)
        .override_global(globals::TCP_SEQ_OFF, &sk_off.seq, true)
        .override_global(globals::TCP_CLOCK_OFF, &sk_off.clock, true)
        .override_global(globals::SK_STATE_OFF, &sk_off.state, true)
        .override_global(globals::SYSCALL_SLIS, &syscall_slis, true)
        .override_global(globals::SOCKIO, &sockio_on, true)
        .override_global(globals::SOCK_STORE, &sock_store_on, true)
        .override_global(globals::SOCK_LIMIT, &sock_limit, true)
        .override_global(globals::SOCKIO_RECV_NRS, &sockio_g.recv_nrs, true)
        .override_global(globals::SOCKIO_SEND_NRS, &sockio_g.send_nrs, true)
        .override_global(globals::NR_RECVFROM, &sockio_g.nr_recvfrom, true)
        .override_global(globals::NR_RECVMSG, &sockio_g.nr_recvmsg, true)
        .override_global(globals::PT_REGS_ARG_OFF, &sockio_g.regs_arg, true)
        .override_global(globals::TP_ENTER_ARGS_OFF, &sockio_g.tp_args, true)
        .override_global(globals::FD_OFF, &sockio_g.fd, true)
        .override_global(globals::TASK_COMPAT_OFF, &lc.compat_off, true)
        .override_global(globals::TASK_COMPAT_MASK, &lc.compat_mask, true)
        .override_global(globals::TASK_PID_OFF, &lc.pid, true)
        .override_global(globals::CGROUP_KN_OFF, &lc.cgroup_kn, true)
        .override_global(globals::KERNFS_ID_OFF, &lc.kernfs_id, true)
        .override_global(globals::CGROUP_ROOT_OFF, &lc.cgroup_root, true)
        .override_global(globals::CGROUP_HIERARCHY_OFF, &lc.hierarchy_id, true)
        .override_global(globals::SPLIT_NS, &split_ns, true)
        .override_global(globals::SPLIT_IDX, &split_idx, true)
        // The task storage map: aya creates it, without a type of its own.
        .allow_unsupported_maps()
        .load(match store {
            ThreadStore::TaskStorage => OBJECT_TASK_STORAGE,
            ThreadStore::LruHash => OBJECT,
        })
        .map_err(|e| privilege::explain_load_error(ProbeError::Load(e)))?;
    // Before anything attaches: the free slots must be queued by the time
    // the first syscall exit or TCP request looks for one.
    let hist = slots::SlotMap::take(&mut ebpf, &maps::MAPS[maps::SYSCALL_LATENCY])?;
    let tcp_hist = slots::SlotMap::take(&mut ebpf, &maps::MAPS[maps::TCP_LATENCY])?;

    let mut link_ids = ondemand::LinkIds::None;
    let mode = if let Some(bench) = opts.bench {
        let btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Attach {
            btf: e.to_string(),
            tp: "not tried (the benchmark's programs are tp_btf only)".into(),
        })?;
        for (prog, hook) in bench.programs() {
            attach_btf_program(&mut ebpf, &btf, prog, hook).map_err(|btf| ProbeError::Attach {
                btf,
                tp: "not tried (the benchmark's programs are tp_btf only)".into(),
            })?;
        }
        Some(AttachMode::BtfTracepoint)
    } else if syscall_programs {
        let (m, ids) = attach_syscalls(&mut ebpf, opts.force_mode)?;
        link_ids = ids;
        Some(m)
    } else {
        None
    };
    let mut links = match (mode, opts.bench) {
        (Some(m), None) => Some(SyscallLinks::attached(m, link_ids)),
        _ => None,
    };
    if let Some(mode) = mode {
        info!(
            hook = mode.as_str(),
            thread_state = store.as_str(),
            syscall_slis = opts.syscalls,
            on_demand,
            tcp_request_route = sockio.is_some(),
            "syscall programs attached"
        );
    }
    // On demand, and not needed by the TCP route: nothing is selected yet,
    // so nothing runs on every syscall until something is.
    if let (Some(l), true, None) = (links.as_mut(), on_demand, sockio.as_ref()) {
        l.set(&mut ebpf, false).map_err(|btf| ProbeError::Attach {
            btf,
            tp: "detaching for on-demand SLIs".into(),
        })?;
    }
    // Renames and exec from threads refine the syscall set's thread state;
    // cgroup births name every set's short-lived containers.
    let cgroup_events = if (opts.syscalls || on_demand || opts.tcp) && opts.bench.is_none() {
        lifecycle::attach(&mut ebpf, &lc, opts.syscalls || on_demand)
    } else {
        None
    };
    let tcp = match sk {
        Some(_) => match tcp::attach(&mut ebpf, &kbtf, route.unwrap_or(tcp::IoRoute::Syscalls)) {
            Ok(hooks) => {
                // After attaching, so a socket is either seen new or seeded.
                match tcp::seed(&mut ebpf) {
                    Ok(()) => info!("TCP sockets older than the agent seeded"),
                    Err(e) => {
                        warn!(error = %e, "sockets older than the agent are not measured (the TCP iterator needs Linux 5.9+)")
                    }
                }
                info!(
                    socket_state = if sock_store {
                        "socket_storage"
                    } else {
                        "lru_hash"
                    },
                    "TCP programs attached"
                );
                Ok((hooks, TcpMaps::take(&mut ebpf, sock_store, tcp_hist)?))
            }
            // Socket storage refused: the LRU hash object (which `load`
            // falls back to) may still serve TCP.
            Err(e) if sock_store => return Err(ProbeError::TcpAttach(e)),
            // Syscall SLIs are still worth having on a kernel that lacks
            // the connection tracepoints.
            Err(e) if opts.syscalls => {
                warn!(error = %e, "TCP probes unavailable; continuing with syscalls only");
                Err(e)
            }
            Err(e) => return Err(ProbeError::TcpAttach(e)),
        },
        None if opts.tcp && !opts.syscalls && opts.bench.is_none() => {
            return Err(ProbeError::Missing("socket field offsets in kernel BTF"))
        }
        None if opts.tcp && opts.bench.is_none() => {
            Err("socket field offsets not found in kernel BTF".to_owned())
        }
        None => Err("off (not in --probes)".to_owned()),
    };
    let signals = Signals::new(
        mode,
        opts.syscalls || on_demand,
        route.filter(|_| sk.is_some()),
        tcp.as_ref().map(|(h, _)| h),
    );
    signals.log();
    let tcp = tcp.ok().map(|(_, maps)| maps);

    for m in maps::MAPS.iter().filter(|m| sizes.0[m.id] > 1) {
        info!(
            map = m.label,
            entries = sizes.0[m.id],
            kernel_bytes = m.kernel_bytes(sizes.0[m.id]),
            "kernel map"
        );
    }
    let errors = take_map(&mut ebpf, &maps::MAPS[maps::SYSCALL_ERRORS])?;
    let counters = ebpf
        .take_map(names::COUNTERS_MAP)
        .ok_or(ProbeError::Missing(names::COUNTERS_MAP))
        .and_then(|m| {
            PerCpuArray::try_from(m).map_err(|source| ProbeError::Map {
                name: "counters",
                source,
            })
        })?;
    let folded = Folded {
        hist: take_array(&mut ebpf, names::FOLDED_HIST_MAP)?,
        counts: take_array(&mut ebpf, names::FOLDED_COUNTS_MAP)?,
    };
    let selection = if on_demand {
        Some(Selection::take(&mut ebpf)?)
    } else {
        None
    };
    let probes = Probes {
        mode,
        signals,
        syscall_slis: opts.syscalls || on_demand,
        links,
        selection,
        tcp_route: sockio.is_some(),
        tcp,
        hist,
        errors,
        counters,
        folded,
        cgroup_events,
        map_sizes: sizes,
        map_capacity: capacity,
        ebpf: Some(ebpf),
    };
    Ok(probes)
}

impl Probes {
    /// Detach and unload the programs; the maps stay readable for a final read.
    pub fn detach(&mut self) {
        if self.ebpf.take().is_some() {
            info!("probes detached");
        }
    }

    /// On-demand syscall SLIs: measure the syscalls of the threads in
    /// `cgroups` or named `names` (or of every thread, `all`), and attach
    /// the syscall programs only while something is selected (or the TCP
    /// route needs them). Returns what did not fit the kernel maps.
    /// Nothing to do unless the probes were loaded on demand.
    pub fn select(
        &mut self,
        cgroups: &std::collections::BTreeSet<u64>,
        names: &std::collections::BTreeSet<[u8; syscope_common::COMM_LEN]>,
        all: bool,
    ) -> Result<SelectOutcome, String> {
        let (Some(sel), Some(ebpf)) = (self.selection.as_mut(), self.ebpf.as_mut()) else {
            return Ok(SelectOutcome::default());
        };
        let out = sel.write(cgroups, names, all);
        let want = all || out.cgroups + out.names > 0 || self.tcp_route;
        if let Some(l) = self.links.as_mut() {
            if l.attached != want {
                l.set(ebpf, want)?;
                info!(
                    attached = want,
                    cgroups = out.cgroups,
                    names = out.names,
                    all,
                    "on-demand syscall programs"
                );
            }
        }
        Ok(out)
    }

    /// (run time in ns, runs) of each of `names` that is loaded, from the
    /// kernel's statistics in the program's fdinfo (both 0 unless
    /// `kernel.bpf_stats_enabled` is 1).
    pub fn program_stats<'a>(
        &'a self,
        names: &'a [&'a str],
    ) -> impl Iterator<Item = (usize, u64, u64)> + 'a {
        use std::os::fd::{AsFd, AsRawFd};
        names.iter().enumerate().filter_map(|(i, name)| {
            let p = self.ebpf.as_ref()?.program(name)?;
            let fd = p.fd().ok()?;
            let text =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
                    .ok()?;
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            Some((i, field("run_time_ns:")?, field("run_cnt:")?))
        })
    }

    /// Whether the syscall programs are attached now.
    pub fn syscalls_attached(&self) -> bool {
        self.links.as_ref().is_some_and(|l| l.attached) && self.ebpf.is_some()
    }

    /// One line once everything is attached and the first on-demand
    /// selection is in the kernel: supervisors and tests wait for it.
    pub fn announce(&self) {
        info!(
            hooks = self.hooks(),
            kernel_map_bytes = maps::kernel_bytes(&self.map_sizes.0),
            syscalls_attached = self.syscalls_attached(),
            "probes attached"
        );
    }

    /// What is attached, for status lines: the syscall hook and the TCP set.
    pub fn hooks(&self) -> &'static str {
        match (self.mode.filter(|_| self.syscall_slis), self.tcp.is_some()) {
            (Some(AttachMode::BtfTracepoint), true) => "tp_btf, tcp",
            (Some(AttachMode::BtfTracepoint), false) => "tp_btf",
            (Some(AttachMode::Tracepoint), true) => "tracepoint, tcp",
            (Some(AttachMode::Tracepoint), false) => "tracepoint",
            (None, _) => "tcp",
        }
    }

    /// Refresh every open listener's drop counter in the LISTENERS map
    /// (nothing to do once detached: closed listeners carry final counts).
    pub fn poll_listeners(&mut self) {
        if let (Some(ebpf), Some(tcp)) = (self.ebpf.as_ref(), self.tcp.as_ref()) {
            tcp.poll_listeners(ebpf);
        }
    }

    /// The kernel's own counters, summed over CPUs, indexed by `counter::*`.
    pub fn read_counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }
}

fn attach_syscalls(
    ebpf: &mut Ebpf,
    force: Option<AttachMode>,
) -> Result<(AttachMode, ondemand::LinkIds), ProbeError> {
    let btf_err = if force != Some(AttachMode::Tracepoint) {
        match attach_btf(ebpf) {
            Ok(ids) => return Ok((AttachMode::BtfTracepoint, ondemand::LinkIds::Btf(ids))),
            Err(e) if force == Some(AttachMode::BtfTracepoint) => {
                return Err(ProbeError::Attach {
                    btf: e,
                    tp: "not tried (tp_btf forced)".into(),
                })
            }
            Err(e) => {
                warn!(error = %e, "tp_btf syscall hooks unavailable, falling back to raw_syscalls tracepoints");
                e
            }
        }
    } else {
        "not tried (tracepoint forced)".to_string()
    };
    let tracefs = ensure_tracefs();
    let ids = attach_tp(ebpf).map_err(|tp| ProbeError::Attach {
        btf: btf_err,
        tp: match tracefs {
            Some(why) => format!("{tp}; {why}"),
            None => tp,
        },
    })?;
    Ok((AttachMode::Tracepoint, ondemand::LinkIds::Tp(ids)))
}

/// Load and attach one tp_btf program on `hook`; the error names both.
pub(crate) fn attach_btf_program(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    prog: &str,
    hook: &str,
) -> Result<BtfTracePointLinkId, String> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("no program {prog}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load(hook, btf)
        .map_err(|e| format!("load {prog}: {}", error_chain(&e)))?;
    p.attach()
        .map_err(|e| format!("attach {prog} to {hook}: {}", error_chain(&e)))
}

/// Attach the syscall programs and thread-exit cleanup; the enter and exit
/// links, for on-demand detaching.
fn attach_btf(ebpf: &mut Ebpf) -> Result<Vec<(String, BtfTracePointLinkId)>, String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    let hooks = [
        (names::BTF_ENTER, "sys_enter"),
        (names::BTF_EXIT, "sys_exit"),
        (names::BTF_THREAD_EXIT, "sched_process_exit"),
    ];
    let mut done: Vec<&str> = vec![];
    let mut ids = vec![];
    for (prog, hook) in hooks {
        match attach_btf_program(ebpf, &btf, prog, hook) {
            Ok(id) if prog != names::BTF_THREAD_EXIT => ids.push((prog.to_owned(), id)),
            Ok(_) => {}
            Err(e) => {
                // All or nothing: a half-attached set next to the fallback's
                // programs would count syscalls twice.
                for p in done.iter().chain(std::iter::once(&prog)) {
                    if let Some(Ok(p)) = ebpf.program_mut(p).map(<&mut BtfTracePoint>::try_from) {
                        let _ = p.unload();
                    }
                }
                return Err(e);
            }
        }
        done.push(prog);
    }
    Ok(ids)
}

fn attach_tp(ebpf: &mut Ebpf) -> Result<Vec<(String, TracePointLinkId)>, String> {
    let mut ids = vec![];
    for (prog, hook) in [(names::TP_ENTER, "sys_enter"), (names::TP_EXIT, "sys_exit")] {
        let p: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| format!("no program {prog}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        p.load()
            .map_err(|e| format!("load {prog}: {}", error_chain(&e)))?;
        ids.push((
            prog.to_owned(),
            p.attach("raw_syscalls", hook)
                .map_err(|e| format!("attach {prog}: {}", error_chain(&e)))?,
        ));
    }
    Ok(ids)
}

/// An error with its sources, so "permission denied" deep inside is shown.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Tracepoint attachment reads tracepoint ids from tracefs; mount it if the
/// host has not (needs CAP_SYS_ADMIN). Returns what is wrong with it, if
/// anything, for the attach error.
fn ensure_tracefs() -> Option<String> {
    let events = Path::new(TRACEFS).join("events");
    match std::fs::metadata(&events) {
        Ok(_) => return None,
        // Mounted, but not for us: mode 0700 and no CAP_DAC_OVERRIDE.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some(format!(
                "tracefs is mounted at {TRACEFS} but this process may not read it ({e}): \
                 the tracepoint hook needs read access (root or CAP_DAC_OVERRIDE), \
                 or use the tp_btf hook"
            ))
        }
        Err(_) => {}
    }
    let r = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status();
    match r {
        Ok(s) if s.success() => {
            info!(path = TRACEFS, "mounted tracefs");
            None
        }
        _ => Some(format!(
            "tracefs is not mounted at {TRACEFS} and could not be mounted (needs CAP_SYS_ADMIN)"
        )),
    }
}

/// Offsets of fields in the raw_syscalls tracepoint records.
struct TpOffsets {
    /// sys_enter `id`.
    enter_id: u32,
    /// sys_exit `id`.
    exit_id: u32,
    /// sys_exit `ret`.
    exit_ret: u32,
    /// sys_enter `args`.
    enter_args: u32,
}

/// The raw_syscalls record offsets, from their format files; the
/// long-stable defaults when tracefs is not readable (only the fallback hook
/// uses them).
fn tracepoint_offsets() -> TpOffsets {
    let read = |event: &str, field: &str, default: u32| {
        let path = format!("{TRACEFS}/events/raw_syscalls/{event}/format");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| format_field_offset(&text, field))
            .unwrap_or(default)
    };
    TpOffsets {
        enter_id: read("sys_enter", "id", 8),
        exit_id: read("sys_exit", "id", 8),
        exit_ret: read("sys_exit", "ret", 16),
        enter_args: read("sys_enter", "args", 16),
    }
}

/// The kernel's highest thread id + 1 (`kernel.pid_max`), which sizes the
/// THREADS_SEEN bitmap; the kernel's limit when unreadable.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(maps::PID_MAX_LIMIT)
}

/// Parse `field:long id;\toffset:8;\tsize:8;...` lines of a tracefs format file.
pub fn format_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.trim().parse().ok())
    })
}

/// The kernel map table of docs/metrics.md, rendered from the catalogue.
pub fn maps_doc_table() -> String {
    let mut out = String::from(
        "| map (`map=`) | config key | default | max | kernel memory at default | holds |\n\
         |---|---|---:|---:|---:|---|\n",
    );
    let mib = |b: u64| format!("{:.2} MiB", b as f64 / 1048576.0);
    for m in &maps::MAPS {
        out.push_str(&format!(
            "| `{}` | `limits.kernel_maps.{}` | {} | {} | {} | {} |\n",
            m.label,
            m.label,
            m.default_entries,
            m.max_entries,
            mib(m.kernel_bytes(m.default_entries)),
            m.holds
        ));
    }
    let defaults = maps::MAPS.map(|m| m.default_entries);
    out.push_str(&format!(
        "| all | | | | **{}** | |\n",
        mib(maps::kernel_bytes(&defaults))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md carries the table the map catalogue renders;
    /// regenerate with `SYSCOPE_BLESS=1 cargo test -p syscope maps_doc`.
    #[test]
    fn maps_doc_table_matches_docs() {
        crate::docgen::check_section("maps", &maps_doc_table());
    }

    /// Regression: a TCP attach failure was reported as "attaching the
    /// syscall programs failed".
    #[test]
    fn tcp_attach_failure_names_the_tcp_set() {
        let e = ProbeError::TcpAttach("load sock_send_btf: no such tracepoint".into()).to_string();
        assert!(
            e.contains("TCP programs") && e.contains("--probes syscalls"),
            "{e}"
        );
        assert!(!e.contains("syscall programs"), "{e}");
    }

    #[test]
    fn parses_tracepoint_format() {
        let f = "name: sys_exit\nID: 23\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                 \tfield:long id;\toffset:8;\tsize:8;\tsigned:1;\n\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n";
        assert_eq!(format_field_offset(f, "ret"), Some(16));
        assert_eq!(format_field_offset(f, "id"), Some(8));
        assert_eq!(format_field_offset(f, "args"), None);
        let e = "\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;\n";
        assert_eq!(format_field_offset(e, "args"), Some(16));
    }
}

//! syscope's kernel programs.
//!
//! On every syscall: `sys_enter` stamps the thread's entry time in an LRU map
//! keyed by thread id; `sys_exit` turns it into a duration and adds it, with
//! atomic increments, to a per workload x syscall histogram (OTLP exponential
//! layout, see `syscope_common::hist`) and, for failures, to a per errno
//! counter. Nothing goes through a ring buffer: userspace reads the
//! aggregates once per interval.
//!
//! Two attachments share the same logic: BTF tracepoints (`tp_btf`, cheaper,
//! preferred) and the `raw_syscalls` tracepoints (fallback). The loader picks
//! one at run time.
#![no_std]
#![no_main]
// Inline BPF assembly for atomic adds: core has no atomic RMW on this target.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use syscope_common::{
    counter,
    hist::NUM_BUCKETS,
    maps::{self, MAPS},
    tcp::{
        CountKind, HistKind, phase, role, state, ListenState, SockState, TcpKey, AF_INET,
        AF_INET6,
    },
    Bucket, Histogram, SeriesKey, ThreadState, COMM_LEN,
};

// Load-time constants (see syscope_common::globals); the loader overrides them.
#[no_mangle]
static SELF_TGID: u32 = 0;
#[no_mangle]
static TASK_GROUP_LEADER_OFF: u32 = 0;
#[no_mangle]
static TASK_COMM_OFF: u32 = 0;
#[no_mangle]
static TP_ENTER_ID_OFF: u32 = 8;
#[no_mangle]
static TP_EXIT_RET_OFF: u32 = 16;
#[no_mangle]
static NR_EXECVE: u32 = u32::MAX;
#[no_mangle]
static NR_EXECVEAT: u32 = u32::MAX;
#[no_mangle]
static NR_PRCTL: u32 = u32::MAX;
// Socket field offsets (struct sock / sock_common / tcp_sock), from BTF.
#[no_mangle]
static SK_FAMILY_OFF: u32 = 0;
#[no_mangle]
static SK_NUM_OFF: u32 = 0;
#[no_mangle]
static SK_DPORT_OFF: u32 = 0;
#[no_mangle]
static SK_DADDR_OFF: u32 = 0;
#[no_mangle]
static SK_V6_DADDR_OFF: u32 = 0;
#[no_mangle]
static SK_ERR_OFF: u32 = 0;
#[no_mangle]
static SK_DROPS_OFF: u32 = 0;
#[no_mangle]
static TCP_SRTT_OFF: u32 = 0;
#[no_mangle]
static RTT_SAMPLE_NS: u64 = 1_000_000_000;
#[no_mangle]
static SKB_HEAD_OFF: u32 = 0;
#[no_mangle]
static SKB_END_OFF: u32 = 0;
#[no_mangle]
static SHINFO_GSO_SEGS_OFF: u32 = 0;

// Sizes below are defaults; the loader sets the configured ones.
/// Threads with a syscall in flight (or recently made one). LRU: threads that
/// exit without us noticing age out instead of filling the map.
#[map(name = "THREADS")]
static THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(MAPS[maps::THREADS].default_entries, 0);

#[map(name = "SYSCALL_LATENCY")]
static SYSCALL_LATENCY: HashMap<SeriesKey, Histogram> =
    HashMap::with_max_entries(MAPS[maps::SYSCALL_LATENCY].default_entries, 0);

#[map(name = "SYSCALL_ERRORS")]
static SYSCALL_ERRORS: HashMap<SeriesKey, u64> =
    HashMap::with_max_entries(MAPS[maps::SYSCALL_ERRORS].default_entries, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One all-zero histogram: the initial value for new series (too big for the
/// 512-byte BPF stack).
#[map(name = "ZERO_HIST")]
static ZERO_HIST: Array<Histogram> = Array::with_max_entries(1, 0);

/// Tracked TCP sockets (see `syscope_common::tcp`). LRU: a socket whose
/// destruction we miss ages out instead of leaking.
#[map(name = "SOCKETS")]
static SOCKETS: LruHashMap<u64, SockState> =
    LruHashMap::with_max_entries(MAPS[maps::SOCKETS].default_entries, 0);

/// Listening sockets, for their drop counters.
#[map(name = "LISTENERS")]
static LISTENERS: HashMap<u64, ListenState> =
    HashMap::with_max_entries(MAPS[maps::LISTENERS].default_entries, 0);

#[map(name = "TCP_LATENCY")]
static TCP_LATENCY: HashMap<TcpKey, Histogram> =
    HashMap::with_max_entries(MAPS[maps::TCP_LATENCY].default_entries, 0);

#[map(name = "TCP_COUNTERS")]
static TCP_COUNTERS: HashMap<TcpKey, u64> =
    HashMap::with_max_entries(MAPS[maps::TCP_COUNTERS].default_entries, 0);

#[inline(always)]
fn global<T: Copy>(v: &'static T) -> T {
    // SAFETY: a valid static; volatile so the compiler does not fold the
    // placeholder value the loader replaces.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn bump(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, valid map value pointer.
        unsafe { *p += 1 };
    }
}

/// The process name: the thread group leader's comm. A thread's own comm can
/// be renamed per thread (e.g. "tokio-runtime-w"), which is not a workload.
#[inline(always)]
fn process_comm() -> [u8; COMM_LEN] {
    // SAFETY: reads of kernel memory through the probe helper, which fails
    // cleanly on a bad address.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let leader_off = global(&TASK_GROUP_LEADER_OFF) as usize;
        let comm_off = global(&TASK_COMM_OFF) as usize;
        if leader_off != 0 && comm_off != 0 {
            if let Ok(leader) = bpf_probe_read_kernel(task.add(leader_off) as *const *const u8) {
                if let Ok(comm) =
                    bpf_probe_read_kernel(leader.add(comm_off) as *const [u8; COMM_LEN])
                {
                    return comm;
                }
            }
        }
        bpf_get_current_comm().unwrap_or([0; COMM_LEN])
    }
}

#[inline(always)]
fn on_enter(nr: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == global(&SELF_TGID) {
        return;
    }
    let tid = pid_tgid as u32;
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // Hot path: the thread is known: two stores and the clock read.
        // SAFETY: valid map value pointer; only this thread writes its entry.
        unsafe {
            (*st).nr = nr as u32;
            (*st).start_ns = bpf_ktime_get_ns();
        }
        return;
    }
    let st = ThreadState {
        start_ns: 0,
        nr: nr as u32,
        _pad: 0,
        comm: process_comm(),
    };
    if THREADS.insert(tid, st, BPF_ANY as u64).is_err() {
        bump(counter::map_full(maps::THREADS));
        return;
    }
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // SAFETY: as above. Stamped last so the insert is not measured.
        unsafe { (*st).start_ns = bpf_ktime_get_ns() };
    }
}

#[inline(always)]
fn on_exit(ret: i64) {
    // Stamped first so our own work is not measured.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == global(&SELF_TGID) {
        return;
    }
    let Some(st) = THREADS.get_ptr_mut(pid_tgid as u32) else {
        bump(counter::EXIT_WITHOUT_ENTER);
        return;
    };
    // SAFETY: valid map value pointer; only this thread writes its entry.
    let (start, nr) = unsafe { ((*st).start_ns, (*st).nr) };
    if start == 0 || now < start {
        bump(counter::EXIT_WITHOUT_ENTER);
        return;
    }
    unsafe { (*st).start_ns = 0 };
    if (nr == global(&NR_EXECVE) || nr == global(&NR_EXECVEAT)) && ret == 0
        || nr == global(&NR_PRCTL)
    {
        // A new program image or a rename: the process name may have changed.
        unsafe { (*st).comm = process_comm() };
    }
    let mut key = SeriesKey {
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: unsafe { (*st).comm },
        nr,
        errno: 0,
    };
    record_latency(&key, now - start);
    // Linux returns -1..-4095 for errors; anything else is a value.
    if (-4095..0).contains(&ret) {
        key.errno = (-ret) as u32;
        record_error(&key);
    }
}

/// `lock *(u64 *)p += v`: an atomic add whose result is unused (BPF_ATOMIC
/// BPF_ADD), the cheapest shared counter update the ISA has.
#[inline(always)]
unsafe fn add64(p: *mut u64, v: u64) {
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}

#[inline(always)]
unsafe fn add32(p: *mut u32, v: u32) {
    unsafe {
        core::arch::asm!("lock *(u32 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v as u64)
    };
}

#[inline(always)]
fn record_latency(key: &SeriesKey, ns: u64) {
    hist_add(&SYSCALL_LATENCY, key, ns, counter::map_full(maps::SYSCALL_LATENCY));
}

#[inline(always)]
fn record_error(key: &SeriesKey) {
    count_add(&SYSCALL_ERRORS, key, counter::map_full(maps::SYSCALL_ERRORS));
}

/// Add one duration to the histogram of `key`, creating it if needed;
/// `full` is the counter bumped when the map has no room.
#[inline(always)]
fn hist_add<K>(map: &HashMap<K, Histogram>, key: &K, ns: u64, full: u32) {
    let h = match map.get_ptr_mut(key) {
        Some(h) => h,
        None => {
            let Some(zero) = ZERO_HIST.get_ptr(0) else {
                return;
            };
            // SAFETY: valid map value pointer, never written.
            let zero = unsafe { &*zero };
            if let Err(e) = map.insert(key, zero, BPF_NOEXIST as u64) {
                // -EEXIST: another CPU created it first; anything else: full.
                if e != -17 {
                    bump(full);
                    return;
                }
            }
            match map.get_ptr_mut(key) {
                Some(h) => h,
                None => return,
            }
        }
    };
    // SAFETY: valid map value pointer; shared between CPUs, hence atomics.
    unsafe {
        add64(&raw mut (*h).sum_ns, ns);
        match syscope_common::bucket_index(ns) {
            Bucket::Zero => {
                add32(&raw mut (*h).zero, 1);
            }
            Bucket::Index(i) => {
                if i < NUM_BUCKETS {
                    let b = (&raw mut (*h).buckets).cast::<u32>().add(i);
                    add32(b, 1);
                }
            }
        }
    }
}

/// Add one to the counter of `key`, creating it if needed.
#[inline(always)]
fn count_add<K>(map: &HashMap<K, u64>, key: &K, full: u32) {
    count_add_n(map, key, 1, full)
}

#[inline(always)]
fn count_add_n<K>(map: &HashMap<K, u64>, key: &K, n: u64, full: u32) {
    if let Some(c) = map.get_ptr_mut(key) {
        // SAFETY: valid map value pointer, shared between CPUs.
        unsafe { add64(c, n) };
        return;
    }
    match map.insert(key, n, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(-17) => {
            if let Some(c) = map.get_ptr_mut(key) {
                unsafe { add64(c, n) };
            }
        }
        Err(_) => bump(full),
    }
}

// tp_btf/sys_enter: (struct pt_regs *regs, long id)
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

// tp_btf/sys_exit: (struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1));
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn sys_enter_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file, read by the loader.
    if let Ok(nr) = unsafe { ctx.read_at::<i64>(global(&TP_ENTER_ID_OFF) as usize) } {
        on_enter(nr);
    }
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_exit")]
pub fn sys_exit_tp(ctx: TracePointContext) -> u32 {
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(global(&TP_EXIT_RET_OFF) as usize) } {
        on_exit(ret);
    }
    0
}

/// A thread is gone: drop its state now, so a thread that later reuses the
/// id starts clean (with its own process name) and the map has room.
#[inline(always)]
fn on_thread_exit() {
    let _ = THREADS.remove(bpf_get_current_pid_tgid() as u32);
}

// tp_btf/sched_process_exit runs in the exiting task (every thread, not only
// the last one of a process).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn thread_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    on_thread_exit();
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn thread_exit_tp(_ctx: TracePointContext) -> u32 {
    on_thread_exit();
    0
}

// ---------------------------------------------------------------------------
// TCP: sockets are tracked by kernel address from connect, accept or listen
// (inet_sock_set_state), measured on the send/recv paths of the socket layer,
// and forgotten on destruction (tcp_destroy_sock; LRU as a backstop).

/// Read a `T` at `base + off` in kernel memory.
#[inline(always)]
fn kread<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: the probe helper fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Peer address (v4-mapped for IPv4) and port of a socket.
#[inline(always)]
fn sk_peer(sk: u64) -> ([u8; 16], u16) {
    let mut addr = [0u8; 16];
    match kread::<u16>(sk, global(&SK_FAMILY_OFF)) {
        Some(AF_INET) => {
            if let Some(a) = kread::<[u8; 4]>(sk, global(&SK_DADDR_OFF)) {
                addr[10] = 0xff;
                addr[11] = 0xff;
                addr[12] = a[0];
                addr[13] = a[1];
                addr[14] = a[2];
                addr[15] = a[3];
            }
        }
        Some(AF_INET6) => {
            if let Some(a) = kread::<[u8; 16]>(sk, global(&SK_V6_DADDR_OFF)) {
                addr = a;
            }
        }
        _ => {}
    }
    let port = u16::from_be(kread::<u16>(sk, global(&SK_DPORT_OFF)).unwrap_or(0));
    (addr, port)
}

#[inline(always)]
fn sk_local_port(sk: u64) -> u16 {
    kread::<u16>(sk, global(&SK_NUM_OFF)).unwrap_or(0)
}

#[inline(always)]
fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == global(&SELF_TGID)
}

#[inline(always)]
fn tcp_key(st: &SockState, kind: u8, with_addr: bool) -> TcpKey {
    TcpKey {
        cgroup_id: st.cgroup_id,
        comm: st.comm,
        addr: if with_addr { st.addr } else { [0; 16] },
        port: st.port,
        kind,
        _pad: 0,
        code: 0,
    }
}

#[inline(always)]
fn tcp_hist(key: &TcpKey, ns: u64) {
    hist_add(&TCP_LATENCY, key, ns, counter::map_full(maps::TCP_LATENCY));
}

#[inline(always)]
fn tcp_count(key: &TcpKey) {
    count_add(&TCP_COUNTERS, key, counter::map_full(maps::TCP_COUNTERS));
}

/// Sample the smoothed RTT of `sk` into the RTT histogram.
#[inline(always)]
fn sample_rtt(sk: u64, st: &mut SockState, now: u64) {
    st.rtt_sampled_ns = now;
    // srtt_us holds the smoothed RTT in microseconds, left-shifted by 3.
    if let Some(srtt) = kread::<u32>(sk, global(&TCP_SRTT_OFF)) {
        if srtt != 0 {
            tcp_hist(
                &tcp_key(st, HistKind::Rtt as u8, false),
                (srtt as u64 >> 3) * 1000,
            );
        }
    }
}

#[inline(always)]
fn on_state(sk: u64, old: i32, new: i32) {
    if new == state::SYN_SENT {
        // connect(): in the connecting process's context. The agent's own
        // connections (to the collector) are not a workload's.
        if is_self() {
            return;
        }
        let (addr, port) = sk_peer(sk);
        let st = SockState {
            t_start: unsafe { bpf_ktime_get_ns() },
            rtt_sampled_ns: 0,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm: process_comm(),
            addr,
            port,
            role: role::CLIENT,
            phase: phase::IDLE,
            _pad: 0,
        };
        if SOCKETS.insert(sk, st, BPF_ANY as u64).is_err() {
            bump(counter::map_full(maps::SOCKETS));
        }
    } else if old == state::SYN_SENT {
        // Handshake done or failed, in softirq: the owner is in the entry.
        let now = unsafe { bpf_ktime_get_ns() };
        let Some(st) = SOCKETS.get_ptr_mut(sk) else {
            return;
        };
        // SAFETY: valid map value pointer.
        let st = unsafe { &mut *st };
        if new == state::ESTABLISHED {
            if st.t_start != 0 && now >= st.t_start {
                tcp_hist(&tcp_key(st, HistKind::Connect as u8, true), now - st.t_start);
            }
            st.t_start = 0;
            sample_rtt(sk, st, now);
        } else if new == state::CLOSE {
            // The kernel sets sk_err before moving to CLOSE (refused, timed
            // out, unreachable); 0 means the application gave up first.
            let err = kread::<i32>(sk, global(&SK_ERR_OFF)).unwrap_or(0);
            let mut key = tcp_key(st, CountKind::ConnectError as u8, true);
            key.code = err.unsigned_abs();
            tcp_count(&key);
            st.t_start = 0;
        }
    } else if old == state::SYN_RECV && new == state::ESTABLISHED {
        // An accepted connection, in softirq: the owner is filled in by the
        // first process that reads or writes it.
        let st = SockState {
            t_start: 0,
            rtt_sampled_ns: 0,
            cgroup_id: 0,
            comm: [0; COMM_LEN],
            addr: [0; 16],
            port: sk_local_port(sk),
            role: role::SERVER,
            phase: phase::IDLE,
            _pad: 0,
        };
        if SOCKETS.insert(sk, st, BPF_ANY as u64).is_err() {
            bump(counter::map_full(maps::SOCKETS));
        }
    } else if new == state::LISTEN {
        // listen(): in the listening process's context.
        if is_self() {
            return;
        }
        let l = ListenState {
            since_ns: unsafe { bpf_ktime_get_ns() },
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm: process_comm(),
            drops: kread::<u32>(sk, global(&SK_DROPS_OFF)).unwrap_or(0),
            port: sk_local_port(sk),
            closed: 0,
            _pad: 0,
        };
        if LISTENERS.insert(&sk, &l, BPF_ANY as u64).is_err() {
            bump(counter::map_full(maps::LISTENERS));
        }
    } else if old == state::LISTEN && new == state::CLOSE {
        // The listener goes away: keep its final count for the agent, which
        // deletes the entry after reading it.
        if let Some(l) = LISTENERS.get_ptr_mut(&sk) {
            // SAFETY: valid map value pointer.
            unsafe {
                if let Some(d) = kread::<u32>(sk, global(&SK_DROPS_OFF)) {
                    (*l).drops = d;
                }
                (*l).closed = 1;
            }
        }
    }
}

// tp_btf/inet_sock_set_state: (const struct sock *sk, int oldstate, int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcp_state_btf(ctx: BtfTracePointContext) -> i32 {
    on_state(ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2));
    0
}

/// A read (`sent == false`) or write of `ret` bytes on socket `sk`.
#[inline(always)]
fn on_io(sk: u64, ret: i32, sent: bool) {
    if ret <= 0 {
        return;
    }
    // Only sockets we track: one lookup is all an untracked socket costs.
    let Some(st) = SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: valid map value pointer; concurrent writers of one socket only
    // race on which request boundary they see first.
    let st = unsafe { &mut *st };
    claim_owner(st);
    // A request starts with the first byte one way and ends with the first
    // byte back: server sockets read requests, client sockets write them.
    let (req_dir, kind, with_addr) = if st.role == role::SERVER {
        (phase::READ, HistKind::ServerRequest as u8, false)
    } else {
        (phase::WRITTEN, HistKind::ClientRequest as u8, true)
    };
    let dir = if sent { phase::WRITTEN } else { phase::READ };
    if dir == req_dir {
        if st.phase != req_dir {
            st.phase = req_dir;
            st.t_start = now;
        }
    } else {
        if st.phase == req_dir && st.t_start != 0 && now >= st.t_start {
            tcp_hist(&tcp_key(st, kind, with_addr), now - st.t_start);
        }
        st.phase = dir;
    }
    if now.wrapping_sub(st.rtt_sampled_ns) >= global(&RTT_SAMPLE_NS) {
        sample_rtt(sk, st, now);
    }
}

// tp_btf/sock_send_length: (struct sock *sk, int ret, int flags)
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_btf(ctx: BtfTracePointContext) -> i32 {
    on_io(ctx.arg::<u64>(0), ctx.arg::<i32>(1), true);
    0
}

const MSG_PEEK: i32 = 2;

// tp_btf/sock_recv_length: (struct sock *sk, int ret, int flags)
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_btf(ctx: BtfTracePointContext) -> i32 {
    // A peek leaves the bytes for the real read: not a request boundary.
    if ctx.arg::<i32>(2) & MSG_PEEK == 0 {
        on_io(ctx.arg::<u64>(0), ctx.arg::<i32>(1), false);
    }
    0
}

/// An accepted socket has no owner until a process touches it: the
/// current one, which the caller knows to be in process context.
#[inline(always)]
fn claim_owner(st: &mut SockState) {
    if st.comm[0] == 0 {
        st.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        st.comm = process_comm();
    }
}

/// Count `n` per-socket events under the socket's owner, or under no
/// workload and port 0 when the socket is not tracked (or there is none).
/// `in_process`: the caller runs in the owner's process context.
#[inline(always)]
fn sock_event(sk: u64, kind: u8, n: u64, in_process: bool) {
    let st = if sk != 0 { SOCKETS.get_ptr_mut(sk) } else { None };
    let key = match st {
        Some(st) => {
            // SAFETY: valid map value pointer.
            let st = unsafe { &mut *st };
            if in_process {
                claim_owner(st);
            }
            tcp_key(st, kind, false)
        }
        None => TcpKey {
            cgroup_id: 0,
            comm: [0; COMM_LEN],
            addr: [0; 16],
            port: 0,
            kind,
            _pad: 0,
            code: 0,
        },
    };
    count_add_n(&TCP_COUNTERS, &key, n, counter::map_full(maps::TCP_COUNTERS));
}

/// Segments in a (retransmitted) TCP skb: skb_shinfo(skb)->gso_segs, which
/// TCP keeps at 1 for a single segment.
#[inline(always)]
fn skb_segs(skb: u64) -> u64 {
    let head = kread::<u64>(skb, global(&SKB_HEAD_OFF)).unwrap_or(0);
    let end = kread::<u32>(skb, global(&SKB_END_OFF)).unwrap_or(0);
    if head == 0 || end == 0 {
        return 1;
    }
    match kread::<u16>(head + end as u64, global(&SHINFO_GSO_SEGS_OFF)) {
        Some(n) if n > 0 => n as u64,
        _ => 1,
    }
}

// tp_btf/tcp_retransmit_skb: (const struct sock *sk, const struct sk_buff *skb, int err)
// Fires for failed attempts too (err != 0): those put nothing on the wire.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_btf(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<i32>(2) == 0 {
        let skb = ctx.arg::<u64>(1);
        sock_event(
            ctx.arg::<u64>(0),
            CountKind::Retransmit as u8,
            skb_segs(skb),
            false,
        );
    }
    0
}

// Before 6.10: (const struct sock *sk, const struct sk_buff *skb), success only.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_old_btf(ctx: BtfTracePointContext) -> i32 {
    let skb = ctx.arg::<u64>(1);
    sock_event(
        ctx.arg::<u64>(0),
        CountKind::Retransmit as u8,
        skb_segs(skb),
        false,
    );
    0
}

// tp_btf/tcp_send_reset: (const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    let (sk, skb) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    // No skb: an active reset (close with SO_LINGER 0, abort), sent by the
    // closing process, so an accepted socket never read or written learns
    // its owner here.
    sock_event(sk, CountKind::ResetSent as u8, 1, skb == 0);
    0
}

// tp_btf/tcp_receive_reset: (struct sock *sk)
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    sock_event(ctx.arg::<u64>(0), CountKind::ResetReceived as u8, 1, false);
    0
}

// tp_btf/tcp_destroy_sock: (struct sock *sk). After the last reset or
// retransmit of the socket, so those still find its owner.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = SOCKETS.remove(&ctx.arg::<u64>(0));
    0
}

/// Run by the agent (BPF_PROG_TEST_RUN, args[0] = a listener's address from
/// LISTENERS): copy the listener's drop counter into its entry. Only
/// addresses the kernel itself put there are read, and never after close.
#[raw_tracepoint]
pub fn listen_poll(ctx: RawTracePointContext) -> i32 {
    let sk = ctx.arg::<u64>(0);
    if let Some(l) = LISTENERS.get_ptr_mut(&sk) {
        // SAFETY: valid map value pointer.
        unsafe {
            if (*l).closed == 0 {
                if let Some(d) = kread::<u32>(sk, global(&SK_DROPS_OFF)) {
                    (*l).drops = d;
                }
            }
        }
    }
    0
}

/// The benchmark's floor: programs on the same hooks that do nothing.
#[btf_tracepoint(function = "sys_enter")]
pub fn floor_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

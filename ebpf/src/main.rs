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
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use syscope_common::{
    counter, hist::NUM_BUCKETS, Bucket, Histogram, SeriesKey, ThreadState, COMM_LEN,
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

// Sizes below are defaults; the loader sets the configured ones.
/// Threads with a syscall in flight (or recently made one). LRU: threads that
/// exit without us noticing age out instead of filling the map.
#[map(name = "THREADS")]
static THREADS: LruHashMap<u32, ThreadState> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "SYSCALL_HIST")]
static SYSCALL_HIST: HashMap<SeriesKey, Histogram> = HashMap::with_max_entries(4096, 0);

#[map(name = "SYSCALL_ERRORS")]
static SYSCALL_ERRORS: HashMap<SeriesKey, u64> = HashMap::with_max_entries(4096, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One all-zero histogram: the initial value for new series (too big for the
/// 512-byte BPF stack).
#[map(name = "ZERO_HIST")]
static ZERO_HIST: Array<Histogram> = Array::with_max_entries(1, 0);

#[inline(always)]
fn global(v: &'static u32) -> u32 {
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
        bump(counter::THREAD_MAP_FULL);
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
    let h = match SYSCALL_HIST.get_ptr_mut(key) {
        Some(h) => h,
        None => {
            let Some(zero) = ZERO_HIST.get_ptr(0) else {
                return;
            };
            // SAFETY: valid map value pointer, never written.
            let zero = unsafe { &*zero };
            if let Err(e) = SYSCALL_HIST.insert(key, zero, BPF_NOEXIST as u64) {
                // -EEXIST: another CPU created it first; anything else: full.
                if e != -17 {
                    bump(counter::HIST_MAP_FULL);
                    return;
                }
            }
            match SYSCALL_HIST.get_ptr_mut(key) {
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

#[inline(always)]
fn record_error(key: &SeriesKey) {
    if let Some(c) = SYSCALL_ERRORS.get_ptr_mut(key) {
        // SAFETY: valid map value pointer, shared between CPUs.
        unsafe { add64(c, 1) };
        return;
    }
    match SYSCALL_ERRORS.insert(key, 1u64, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(-17) => {
            if let Some(c) = SYSCALL_ERRORS.get_ptr_mut(key) {
                unsafe { add64(c, 1) };
            }
        }
        Err(_) => bump(counter::ERROR_MAP_FULL),
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

//! The benchmark's floor: programs on the syscall hooks that do nothing, so
//! the cost of the hook itself can be told apart from syscope's work; and
//! the same on the socket tracepoints the default's TCP programs use.
//!
//! The clock floor (`--bench-programs floor-clock`): the least any syscall
//! latency measurement on these hooks does. The entry reads the clock and
//! stores it in a per-CPU slot; the exit reads it again and stores the
//! difference. Nothing per thread, no histogram: a syscall that sleeps
//! gets a wrong duration, so it measures nothing a user could use, only
//! the lower bound of what measuring costs.
//!
//! And the benchmark's reference design (`--bench-programs reference`): the cheapest
//! hand-written syscall latency histogram on the same hooks, to compare
//! syscope's hot path against. On entry it stores the clock and the syscall
//! number in a plain array slot indexed by the thread id (the array has
//! pid_max entries, so no two live threads share a slot and nothing is
//! hashed); on exit it reads the clock, clears the slot and adds the
//! duration to a histogram (syscope's bucket layout) in a plain array indexed
//! by the syscall number, with atomic adds. It omits what syscope does on top:
//! per-workload series (process name, cgroup: a hash key per series),
//! errno counts, skipping the agent's own threads, thread-exit cleanup,
//! renames and exec, SLO threshold counters and the TCP request route.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use syscope_common::{names, Histogram};

use crate::helpers::{add_duration, now_ns};

#[btf_tracepoint(function = "sys_enter")]
pub fn floor_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn floor_sock_send_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn floor_sock_recv_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// The clock floor's one slot per CPU: the last entry's clock, then the
/// duration the exit computed from it.
#[map(name = "CLOCK_FLOOR")]
static CLOCK_FLOOR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// tp_btf/sys_enter: (struct pt_regs *regs, long id)
#[btf_tracepoint(function = "sys_enter")]
pub fn floor_clock_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    if let Some(t) = CLOCK_FLOOR.get_ptr_mut(0) {
        // SAFETY: a valid per-CPU array value pointer; this CPU's own.
        unsafe { *t = now_ns() };
    }
    0
}

// tp_btf/sys_exit: (struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn floor_clock_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    let now = now_ns();
    if let Some(t) = CLOCK_FLOOR.get_ptr_mut(0) {
        // SAFETY: as in `floor_clock_enter_btf`.
        unsafe { *t = now.wrapping_sub(*t) };
    }
    0
}

/// A thread's syscall in flight: its start (0: none) and number.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RefThread {
    start_ns: u64,
    nr: u64,
}

/// One slot per thread id; the loader sizes it to pid_max in reference mode
/// and to one entry otherwise.
#[map(name = "REF_THREADS")]
static REF_THREADS: Array<RefThread> = Array::with_max_entries(names::REF_THREADS_ENTRIES, 0);

/// One histogram per syscall number, shared by all CPUs and processes; one
/// entry unless in reference mode.
#[map(name = "REF_HIST")]
static REF_HIST: Array<Histogram> = Array::with_max_entries(names::REF_HIST_ENTRIES, 0);

// tp_btf/sys_enter: (struct pt_regs *regs, long id)
#[btf_tracepoint(function = "sys_enter")]
pub fn ref_enter_btf(ctx: BtfTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(t) = REF_THREADS.get_ptr_mut(tid) {
        // SAFETY: a valid, aligned array value pointer; only thread `tid`
        // writes its slot.
        unsafe {
            (*t).nr = ctx.arg::<u64>(1);
            (*t).start_ns = now_ns();
        }
    }
    0
}

// tp_btf/sys_exit: (struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn ref_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    let now = now_ns();
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(t) = REF_THREADS.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: as in `ref_enter_btf`.
    let (start, nr) = unsafe { ((*t).start_ns, (*t).nr) };
    if start == 0 || now < start {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*t).start_ns = 0 };
    let ns = now - start;
    let Some(h) = REF_HIST.get_ptr_mut(nr as u32) else {
        return 0;
    };
    // SAFETY: a valid array value pointer shared between CPUs (the same
    // histogram update as syscope's, without the SLO split counters).
    unsafe { add_duration(h, ns) };
    0
}

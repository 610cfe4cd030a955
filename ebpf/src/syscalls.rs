//! Syscall latency and errors.
//!
//! `sys_enter` stamps the thread's entry time in an LRU map keyed by thread
//! id; `sys_exit` turns it into a duration and adds it, with atomic
//! increments, to a per workload x syscall histogram and, for failures, to a
//! per errno counter. Two attachments share the bodies: BTF tracepoints
//! (`tp_btf`, preferred) and the `raw_syscalls` tracepoints (fallback).
//!
//! An exit with no entry for its thread is explained, not just counted:
//! - a new task's first event: clone, clone3, fork or vfork returning 0 in
//!   the child, which never entered it: nothing to count;
//! - a thread that had an entry (its `THREADS_SEEN` bit is set): the entry
//!   was evicted from the full LRU map: `counter::THREAD_EVICTED`;
//! - otherwise the thread has had no entry since the programs were loaded:
//!   its syscall was in flight at attach: `counter::EXIT_WITHOUT_ENTER`.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use syscope_common::{
    counter,
    maps::{self, THREADS_SEEN_BITS},
    SeriesKey, ThreadState,
};

use crate::{
    helpers::{
        add64, bump, cgroup_id, count_add, global, hist_add, is_self_tgid, kread, now_ns,
        process_comm,
    },
    maps::{
        NR_CLONE, NR_CLONE3, NR_EXECVE, NR_EXECVEAT, NR_FORK, NR_PRCTL, NR_VFORK,
        PT_REGS_ARG_OFF, PT_REGS_NR_OFF, SYSCALL_ERRORS, SYSCALL_LATENCY, SYSCALL_SLIS, THREADS,
        THREADS_SEEN, TP_ENTER_ARGS_OFF, TP_ENTER_ID_OFF, TP_EXIT_ID_OFF, TP_EXIT_RET_OFF,
    },
    sockio,
};

// tp_btf/sys_enter: (struct pt_regs *regs, long id)
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    // Socket I/O is read from the registers at exit (see `sys_exit_btf`).
    try_sys_enter(ctx.arg::<i64>(1), None::<fn(usize) -> Option<u64>>);
    0
}

// tp_btf/sys_exit: (struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    // The syscall number and arguments are in the registers, at offsets
    // from BTF (the argument registers survive the call), so the socket
    // I/O route also sees a syscall that was in flight at attach.
    let regs = ctx.arg::<u64>(0);
    try_sys_exit(
        ctx.arg::<i64>(1),
        || kread::<u32>(regs, global(&PT_REGS_NR_OFF)),
        Some(|i: usize| {
            PT_REGS_ARG_OFF
                .get(i)
                .and_then(|o| kread::<u64>(regs, global(o)))
        }),
    );
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn sys_enter_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset of `id` comes from the tracepoint's format file;
    // the helper behind `read_at` fails cleanly on a bad offset.
    if let Ok(nr) = unsafe { ctx.read_at::<i64>(global(&TP_ENTER_ID_OFF) as usize) } {
        // The exit record has no arguments: socket I/O is noted at entry.
        try_sys_enter(
            nr,
            Some(|i: usize| {
                // SAFETY: as above, for `args[i]` (i < 6).
                unsafe { ctx.read_at::<u64>(global(&TP_ENTER_ARGS_OFF) as usize + 8 * i) }.ok()
            }),
        );
    }
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_exit")]
pub fn sys_exit_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: as in `sys_enter_tp`, for `ret`.
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(global(&TP_EXIT_RET_OFF) as usize) } {
        try_sys_exit(
            ret,
            || {
                // SAFETY: as above, for `id`.
                unsafe { ctx.read_at::<i64>(global(&TP_EXIT_ID_OFF) as usize) }
                    .ok()
                    .map(|nr| nr as u32)
            },
            None::<fn(usize) -> Option<u64>>,
        );
    }
    0
}

// tp_btf/sched_process_exit runs in the exiting task (every thread, not only
// the last one of a process).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn thread_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    try_thread_exit();
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn thread_exit_tp(_ctx: TracePointContext) -> u32 {
    try_thread_exit();
    0
}

/// `arg(i)` reads syscall argument `i`, where socket I/O is noted at entry
/// (the tracepoint hook); only the socket I/O route asks.
#[inline(always)]
fn try_sys_enter(nr: i64, arg: Option<impl Fn(usize) -> Option<u64>>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_self_tgid(pid_tgid) {
        return;
    }
    let tid = pid_tgid as u32;
    let io_fd = match arg {
        Some(arg) if sockio::enabled() => sockio::io_fd(nr as u32, arg),
        _ => 0,
    };
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // Hot path: the thread is known: a few stores and the clock read.
        // SAFETY: a valid value pointer; the entry is keyed by this thread's
        // id and only this thread (one CPU at a time) writes it.
        unsafe {
            (*st).nr = nr as u32;
            (*st).io_fd = io_fd;
            (*st).start_ns = now_ns();
        }
        return;
    }
    let st = ThreadState {
        start_ns: 0,
        nr: nr as u32,
        io_fd,
        comm: process_comm(),
    };
    if THREADS.insert(tid, st, BPF_ANY as u64).is_err() {
        bump(counter::map_full(maps::THREADS));
        return;
    }
    mark_seen(tid);
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // SAFETY: as above. Stamped last so the insert is not measured.
        unsafe { (*st).start_ns = now_ns() };
    }
}

/// `nr_at_exit` reads the syscall number from the hook; only an exit
/// without an entry needs it. `arg`: the syscall's arguments, where the hook
/// still has them (tp_btf), for the socket I/O route.
#[inline(always)]
fn try_sys_exit(
    ret: i64,
    nr_at_exit: impl Fn() -> Option<u32>,
    arg: Option<impl Fn(usize) -> Option<u64>>,
) {
    // Stamped first so our own work is not measured.
    let now = now_ns();
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_self_tgid(pid_tgid) {
        return;
    }
    let tid = pid_tgid as u32;
    let Some(st) = THREADS.get_ptr_mut(tid) else {
        if let Some(arg) = arg.as_ref().filter(|_| sockio::enabled() && ret > 0) {
            // In flight at attach (or evicted): still a request boundary.
            if let Some(nr) = nr_at_exit() {
                sockio::at_exit(sockio::io_fd(nr, arg), nr, ret);
            }
        }
        exit_without_entry(tid, ret, nr_at_exit);
        return;
    };
    // SAFETY: a valid value pointer; only this thread writes its entry.
    let (start, nr) = unsafe { ((*st).start_ns, (*st).nr) };
    if start == 0 || now < start {
        // A known thread with no syscall in flight: the kernel skipped the
        // entry tracepoint because the syscall never ran (a seccomp filter
        // or a ptrace tracer rejected it first). Nothing was measured, so
        // nothing was lost: neither in flight at attach nor evicted.
        // (`now < start` cannot happen with a monotonic clock.)
        return;
    }
    // SAFETY: as above.
    let io_fd = unsafe {
        (*st).start_ns = 0;
        core::mem::replace(&mut (*st).io_fd, 0)
    };
    match arg {
        Some(arg) if sockio::enabled() && ret > 0 => {
            sockio::at_exit(sockio::io_fd(nr, arg), nr, ret)
        }
        _ => sockio::at_exit(io_fd, nr, ret),
    }
    if (nr == global(&NR_EXECVE) || nr == global(&NR_EXECVEAT)) && ret == 0
        || nr == global(&NR_PRCTL)
    {
        // A new program image or a rename: the process name may have changed.
        // SAFETY: as above.
        unsafe { (*st).comm = process_comm() };
    }
    if global(&SYSCALL_SLIS) == 0 {
        // Attached for the socket I/O route only.
        return;
    }
    let mut key = SeriesKey {
        cgroup_id: cgroup_id(),
        // SAFETY: as above.
        comm: unsafe { (*st).comm },
        nr,
        errno: 0,
    };
    hist_add(
        &SYSCALL_LATENCY,
        &key,
        now - start,
        counter::map_full(maps::SYSCALL_LATENCY),
    );
    // Linux returns -1..-4095 for errors; anything else is a value.
    if (-4095..0).contains(&ret) {
        key.errno = (-ret) as u32;
        count_add(
            &SYSCALL_ERRORS,
            &key,
            1,
            counter::map_full(maps::SYSCALL_ERRORS),
        );
    }
}

/// An exit whose thread has no entry (see the module docs). Rare: once per
/// new task, once per thread in a syscall at attach, once per eviction.
#[inline(always)]
fn exit_without_entry(tid: u32, ret: i64, nr_at_exit: impl Fn() -> Option<u32>) {
    if ret == 0 {
        if let Some(nr) = nr_at_exit() {
            if nr == global(&NR_CLONE)
                || nr == global(&NR_CLONE3)
                || nr == global(&NR_FORK)
                || nr == global(&NR_VFORK)
            {
                // A new task's first return: it never entered the syscall.
                return;
            }
        }
    }
    if was_seen(tid) {
        bump(counter::THREAD_EVICTED);
    } else {
        bump(counter::EXIT_WITHOUT_ENTER);
    }
}

/// Word and bit of `tid` in `THREADS_SEEN`.
#[inline(always)]
fn seen_slot(tid: u32) -> (u32, u64) {
    (tid / THREADS_SEEN_BITS, 1u64 << (tid % THREADS_SEEN_BITS))
}

/// Record that thread `tid` has (had) an entry in `THREADS`.
#[inline(always)]
fn mark_seen(tid: u32) {
    let (word, bit) = seen_slot(tid);
    // Ids beyond the map (pid_max raised after load) stay unmarked.
    if let Some(w) = THREADS_SEEN.get_ptr_mut(word) {
        // SAFETY: a valid, aligned array value pointer. Only thread `tid`
        // sets its bit, so when the bit is clear adding it is the same as
        // OR-ing it in; other threads add their own bits to the same word
        // atomically (BPF_ADD; BPF_OR would need Linux 5.12).
        unsafe {
            if core::ptr::read_volatile(w) & bit == 0 {
                add64(w, bit);
            }
        }
    }
}

#[inline(always)]
fn was_seen(tid: u32) -> bool {
    let (word, bit) = seen_slot(tid);
    THREADS_SEEN.get_ptr(word).is_some_and(|w| {
        // SAFETY: a valid, aligned array value pointer; other CPUs may add
        // their bits concurrently, hence a volatile read.
        unsafe { core::ptr::read_volatile(w) & bit != 0 }
    })
}

/// A thread is gone: drop its state now, so a thread that later reuses the
/// id starts clean (with its own process name) and the map has room.
#[inline(always)]
fn try_thread_exit() {
    let _ = THREADS.remove(bpf_get_current_pid_tgid() as u32);
}

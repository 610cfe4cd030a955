//! Syscall latency and errors.
//!
//! `sys_enter` stamps the thread's entry time in its thread state: task
//! storage where the kernel has it for tracing programs (5.13+, the
//! `task-storage` object), else an LRU map keyed by thread id (see
//! [`state`]); `sys_exit` turns it into a duration and adds it, with atomic
//! increments, to a per workload x syscall histogram (a slot the thread
//! keeps, see [`latency_hist`]) and, for failures, to a per errno counter.
//! Two attachments share the bodies: BTF tracepoints
//! (`tp_btf`, preferred) and the `raw_syscalls` tracepoints (fallback).
//!
//! An exit with no entry for its thread is explained, not just counted:
//! - a new task's first event: clone, clone3, fork or vfork returning 0 in
//!   the child, which never entered it: nothing to count;
//! - a thread that had an entry (its `THREADS_SEEN` bit is set): the entry
//!   was evicted from the full LRU map: `counter::THREAD_EVICTED`;
//! - otherwise the thread has had no entry since the programs were loaded:
//!   its syscall was in flight at attach: `counter::EXIT_WITHOUT_ENTER`.
//!
//! Names stay true:
//! - a compat (32-bit) call is marked with `COMPAT_NR_BIT` in its number, so
//!   the agent names it from the compat table (i386 on x86_64);
//! - a rename (prctl, a write to /proc/<pid>/comm, exec) is seen by
//!   `task_rename`, which keeps the new name in `RENAMED` and moves
//!   `RENAME_EPOCH`: every thread whose cached name is older reads it again
//!   at its next exit, so all threads of a renamed process follow;
//! - an exec from a non-leader thread takes over the leader's thread id:
//!   `sched_process_exec` moves the thread's entry to that id, so the
//!   execve's own exit finds it and is counted.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use syscope_common::{
    counter, fold,
    globals::{SLIS_ALL, SLIS_SELECTED},
    maps::{self, THREADS_SEEN_BITS},
    names::{SELECTION_ALL, SELECTION_EPOCH},
    slot_cache_index, Histogram, SeriesKey, SlotRef, ThreadState, COMM_LEN, COMPAT_NR_BIT,
    NO_CGROUP, SLOT_CACHE,
};

#[cfg(feature = "task-storage")]
use crate::helpers::btf_read;
#[cfg(not(feature = "task-storage"))]
use aya_ebpf::helpers::bpf_get_current_task;
#[cfg(feature = "task-storage")]
use aya_ebpf::helpers::bpf_get_current_task_btf;

use crate::{
    helpers::{
        add32, add_measured, bump, cgroup_id, count_add, fold_hist, global, is_self_tgid, kread,
        now_ns, process_comm,
    },
    maps::{
        NR_CLONE, NR_CLONE3, NR_EXECVE, NR_EXECVEAT, NR_FORK, NR_PRCTL, NR_VFORK, PT_REGS_ARG_OFF,
        PT_REGS_NR_OFF, RENAMED, RENAME_EPOCH, SELECTED_CGROUPS, SELECTED_NAMES, SELECTION,
        SYSCALL_ERRORS, SYSCALL_LATENCY, SYSCALL_LATENCY_FREE, SYSCALL_LATENCY_GENS,
        SYSCALL_LATENCY_VALUES, SYSCALL_SLIS, TASK_COMPAT_MASK, TASK_COMPAT_OFF, TASK_PID_OFF,
        THREADS_SEEN, TP_ENTER_ARGS_OFF, TP_ENTER_ID_OFF, TP_EXIT_ID_OFF, TP_EXIT_RET_OFF,
    },
    slots::Slots,
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

// tp_btf/task_rename: (struct task_struct *task, const char *comm). Fires
// before the kernel copies the name (prctl, /proc/<pid>/comm, exec).
#[btf_tracepoint(function = "task_rename")]
pub fn task_rename_btf(ctx: BtfTracePointContext) -> i32 {
    try_task_rename(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

// tp_btf/sched_process_exec: (struct task_struct *p, pid_t old_pid,
// struct linux_binprm *bprm), in the task that exec'd, after it took over
// the leader's id.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    try_process_exec(ctx.arg::<u64>(1) as u32);
    0
}

/// The current rename epoch.
#[inline(always)]
fn rename_epoch() -> u32 {
    RENAME_EPOCH.get_ptr(0).map_or(0, |p| {
        // SAFETY: a valid array value pointer; other CPUs add to it, hence
        // a volatile read.
        unsafe { core::ptr::read_volatile(p) }
    })
}

/// `COMPAT_NR_BIT` when the current syscall came through the compat
/// entry (the flag's place and mask come from the loader; mask 0: never).
#[inline(always)]
fn compat_bit() -> u32 {
    let mask = global(&TASK_COMPAT_MASK);
    if mask == 0 {
        return 0;
    }
    match task_status() {
        Some(status) if status & mask != 0 => COMPAT_NR_BIT,
        _ => 0,
    }
}

/// The current task's compat status word. The task storage object runs
/// only where the kernel has `bpf_get_current_task_btf` (5.11+): a plain
/// load, on every syscall entry, instead of a probe helper call.
#[cfg(feature = "task-storage")]
#[inline(always)]
fn task_status() -> Option<u32> {
    // SAFETY: the helper returns the current task, typed and never null.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // SAFETY: a BTF task pointer; the offset (from BTF, a load-time
    // constant) is the status field's, checked by the verifier.
    Some(unsafe { btf_read::<u32>(task, global(&TASK_COMPAT_OFF)) })
}

/// The current task's compat status word (kernels before task storage).
#[cfg(not(feature = "task-storage"))]
#[inline(always)]
fn task_status() -> Option<u32> {
    // SAFETY: the helper returns the current task's address, no
    // preconditions; it is only used as a base for `kread`.
    let task = unsafe { bpf_get_current_task() };
    kread::<u32>(task, global(&TASK_COMPAT_OFF))
}

#[inline(always)]
fn try_task_rename(task: u64, comm: u64) {
    let Some(pid) = kread::<u32>(task, global(&TASK_PID_OFF)) else {
        return;
    };
    let mut name = [0u8; COMM_LEN];
    // SAFETY: the helper bounds the copy by the buffer and fails cleanly on
    // a bad address.
    if unsafe { bpf_probe_read_kernel_str_bytes(comm as *const u8, &mut name) }.is_err() {
        return;
    }
    // The name first, then the epoch: a thread that sees the new epoch
    // finds the new name.
    let _ = RENAMED.insert(pid, name, BPF_ANY as u64);
    if let Some(e) = RENAME_EPOCH.get_ptr_mut(0) {
        // SAFETY: a valid, aligned array value pointer, shared: atomic add.
        unsafe { add32(e, 1) };
    }
}

#[inline(always)]
fn try_process_exec(old_pid: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if old_pid == tid {
        return;
    }
    // A non-leader thread exec'd and now has the leader's id: its entry
    // (with the execve in flight) moves with it.
    state::renumber(old_pid, tid);
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
    let nr = nr as u32 | compat_bit();
    let io_fd = match arg {
        // Compat numbers (COMPAT_NR_BIT set) are not in the I/O bitmaps.
        Some(arg) if sockio::enabled() => sockio::io_fd(nr, arg),
        _ => 0,
    };
    if let Some(st) = state::get(tid) {
        // Hot path: the thread is known: a few stores and the clock read.
        // SAFETY: a valid value pointer; the entry is keyed by this thread's
        // id and only this thread (one CPU at a time) writes it.
        unsafe {
            (*st).nr = nr;
            (*st).io_fd = io_fd;
            (*st).start_ns = if timed(&mut *st, nr) { now_ns() } else { 0 };
        }
        return;
    }
    // The epoch before the name: a rename in between shows as a newer
    // epoch at exit, and the name is read again.
    let st = ThreadState {
        start_ns: 0,
        nr,
        epoch: rename_epoch(),
        io_fd,
        select: 0,
        comm: process_comm(),
        slot_cgroup: NO_CGROUP,
        slot_nr: [0; SLOT_CACHE],
        slot_ref: [SlotRef { slot: 0, gen: 0 }; SLOT_CACHE],
    };
    // Task storage's create fails only without memory (or under its
    // recursion guard): counted as the thread map's.
    let Some(st) = state::create(tid, &st) else {
        bump(counter::map_full(maps::THREADS));
        return;
    };
    // SAFETY: as above. Stamped last so the insert is not measured.
    unsafe {
        if timed(&mut *st, nr) {
            (*st).start_ns = now_ns();
        }
    }
}

/// Whether the exit of syscall `nr` has work to do: a thread whose syscalls
/// are not measured (on demand, not selected) skips the clock reads and
/// returns at once from its exit, unless the socket I/O route needs the
/// exit or the call may rename the process (which may select it).
#[inline(always)]
fn timed(st: &mut ThreadState, nr: u32) -> bool {
    global(&SYSCALL_SLIS) != SLIS_SELECTED
        || sockio::enabled()
        || nr == global(&NR_EXECVE)
        || nr == global(&NR_EXECVEAT)
        || nr == global(&NR_PRCTL)
        || selected(st)
}

/// Whether the thread's syscalls are measured on demand: its process name
/// or its cgroup was selected by the agent (or everything was). Judged once
/// per selection epoch and cached in the thread's entry.
#[inline(always)]
fn selected(st: &mut ThreadState) -> bool {
    let read = |i: u32| {
        SELECTION.get_ptr(i).map_or(0, |p| {
            // SAFETY: a valid array value pointer; the agent writes it,
            // hence a volatile read.
            unsafe { core::ptr::read_volatile(p) }
        })
    };
    let epoch = read(SELECTION_EPOCH);
    if st.select != 0 && st.select >> 1 == epoch & (u32::MAX >> 1) {
        return st.select & 1 != 0;
    }
    let yes = read(SELECTION_ALL) != 0
        || SELECTED_NAMES.get_ptr(st.comm).is_some()
        || SELECTED_CGROUPS.get_ptr(cgroup_id()).is_some();
    st.select = (epoch << 1) | yes as u32;
    yes
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
    // Every thread measured: stamped first, so our own work is not. On
    // demand most threads are not measured, and a clock read is most of
    // what their exit would cost: the clock is read once the state says
    // this thread is (its lookup then counts in the duration).
    let stamp_first = global(&SYSCALL_SLIS) != SLIS_SELECTED;
    let mut now = if stamp_first { now_ns() } else { 0 };
    // The agent's own threads never get state (see `try_sys_enter`), so
    // the hot path needs no thread id where state is task storage.
    let Some(st) = state::current() else {
        let pid_tgid = bpf_get_current_pid_tgid();
        if is_self_tgid(pid_tgid) {
            return;
        }
        let tid = pid_tgid as u32;
        if let Some(arg) = arg.as_ref().filter(|_| sockio::enabled() && ret > 0) {
            // In flight at attach (or evicted): still a request boundary.
            // A compat call's number is from another table: not ours.
            if let Some(nr) = nr_at_exit().filter(|_| compat_bit() == 0) {
                sockio::at_exit(sockio::io_fd(nr, arg), nr, ret);
            }
        }
        exit_without_entry(tid, ret, nr_at_exit);
        return;
    };
    // SAFETY: a valid value pointer; only this thread writes its entry.
    let (start, nr) = unsafe { ((*st).start_ns, (*st).nr) };
    if start != 0 && !stamp_first {
        now = now_ns();
    }
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
    let epoch = rename_epoch();
    // SAFETY: as above.
    let cached_epoch = unsafe { (*st).epoch };
    if (nr == global(&NR_EXECVE) || nr == global(&NR_EXECVEAT)) && ret == 0
        || nr == global(&NR_PRCTL)
    {
        // A new program image or a rename by this thread: the name may have
        // changed, and the kernel has copied it by now.
        // SAFETY: as above.
        unsafe { renamed(&mut *st, process_comm(), epoch) };
    } else if cached_epoch != epoch {
        // Some task was renamed since this thread read its name: the
        // process's new name, if it was its leader, else the leader's comm.
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let comm = match RENAMED.get_ptr(tgid) {
            // SAFETY: a valid value pointer of 16 bytes.
            Some(c) => unsafe { *c },
            None => process_comm(),
        };
        // SAFETY: as above.
        unsafe { renamed(&mut *st, comm, epoch) };
    }
    let record = match global(&SYSCALL_SLIS) {
        SLIS_ALL => true,
        // SAFETY: as above.
        SLIS_SELECTED => selected(unsafe { &mut *st }),
        // Attached for the socket I/O route only.
        _ => false,
    };
    if !record {
        return;
    }
    let cgroup = cgroup_id();
    let ns = now - start;
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    match latency_hist(st, cgroup, nr) {
        // SAFETY: a valid array value pointer, shared between CPUs.
        Some(h) => unsafe { add_measured(h, ns) },
        None => fold_hist(ns, counter::map_full(maps::SYSCALL_LATENCY), fold::SYSCALL),
    }
    // Linux returns -1..-4095 for errors; anything else is a value.
    if (-4095..0).contains(&ret) {
        let key = SeriesKey {
            cgroup_id: cgroup,
            comm: st.comm,
            nr,
            errno: (-ret) as u32,
        };
        count_add(
            &SYSCALL_ERRORS,
            &key,
            1,
            counter::map_full(maps::SYSCALL_ERRORS),
            fold::SYSCALL,
        );
    }
}

/// The thread's process name as read at rename epoch `epoch`. The
/// selection is judged again; the cached series slots go only if the name
/// changed (a rename elsewhere on the host moves the epoch too).
#[inline(always)]
fn renamed(st: &mut ThreadState, comm: [u8; COMM_LEN], epoch: u32) {
    if st.comm != comm {
        st.slot_cgroup = NO_CGROUP;
    }
    st.comm = comm;
    st.epoch = epoch;
    st.select = 0;
}

/// The latency histogram of the thread's series for syscall `nr` (its
/// cgroup is `cgroup`): from the thread's slot cache while the slot's
/// generation holds, else resolved by key and cached. `None`: the map is
/// full.
#[inline(always)]
fn latency_hist(st: &mut ThreadState, cgroup: u64, nr: u32) -> Option<*mut Histogram> {
    let slots = Slots {
        keys: &SYSCALL_LATENCY,
        values: &SYSCALL_LATENCY_VALUES,
        gens: &SYSCALL_LATENCY_GENS,
        free: &SYSCALL_LATENCY_FREE,
    };
    if st.slot_cgroup != cgroup {
        // Another cgroup, or a new name: every cached slot is another
        // series'.
        st.slot_nr = [0; SLOT_CACHE];
        st.slot_cgroup = cgroup;
    }
    let i = slot_cache_index(nr);
    // 0 marks an empty entry: number -1 (a call a tracer cancelled) is
    // never cached.
    let tag = nr.wrapping_add(1);
    if let (Some(&t), Some(&r)) = (st.slot_nr.get(i), st.slot_ref.get(i)) {
        if tag != 0 && t == tag {
            if let Some(h) = slots.live(r) {
                return Some(h);
            }
        }
    }
    let key = SeriesKey {
        cgroup_id: cgroup,
        comm: st.comm,
        nr,
        errno: 0,
    };
    let (r, h) = slots.resolve(&key)?;
    if let (Some(t), Some(c)) = (
        st.slot_nr.get_mut(i).filter(|_| tag != 0),
        st.slot_ref.get_mut(i),
    ) {
        *t = tag;
        *c = r;
    }
    Some(h)
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
    let tid = bpf_get_current_pid_tgid() as u32;
    state::forget(tid);
    // A later task with this id must not inherit the name.
    let _ = RENAMED.remove(tid);
}

/// Where a thread's [`ThreadState`] lives.
#[cfg(feature = "task-storage")]
mod state {
    use syscope_common::ThreadState;

    use crate::maps::TASK_STATE;

    /// The current thread's state (`tid` is the current thread's id).
    #[inline(always)]
    pub(super) fn get(_tid: u32) -> Option<*mut ThreadState> {
        TASK_STATE.current(None)
    }

    /// The current thread's state.
    #[inline(always)]
    pub(super) fn current() -> Option<*mut ThreadState> {
        TASK_STATE.current(None)
    }

    /// Creates the current thread's state from `st`.
    #[inline(always)]
    pub(super) fn create(_tid: u32, st: &ThreadState) -> Option<*mut ThreadState> {
        TASK_STATE.current(Some(st))
    }

    /// The current thread took id `_new` from `_old` (exec from a
    /// non-leader thread): task storage belongs to the task, nothing moves.
    #[inline(always)]
    pub(super) fn renumber(_old: u32, _new: u32) {}

    /// The current thread exits: its task storage goes with it.
    #[inline(always)]
    pub(super) fn forget(_tid: u32) {}
}

/// Where a thread's [`ThreadState`] lives.
#[cfg(not(feature = "task-storage"))]
mod state {
    use aya_ebpf::bindings::BPF_ANY;
    use syscope_common::ThreadState;

    use crate::{
        helpers::add64,
        maps::{THREADS, THREADS_SEEN},
    };

    /// The current thread's state (`tid` is the current thread's id).
    #[inline(always)]
    pub(super) fn get(tid: u32) -> Option<*mut ThreadState> {
        THREADS.get_ptr_mut(tid)
    }

    /// The current thread's state; never the agent's own (a thread id of
    /// the agent's may have been another thread's, whose entry stayed).
    #[inline(always)]
    pub(super) fn current() -> Option<*mut ThreadState> {
        let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
        if crate::helpers::is_self_tgid(pid_tgid) {
            return None;
        }
        get(pid_tgid as u32)
    }

    /// Creates the current thread's state from `st`, marking the id seen
    /// (an exit without an entry is then an eviction).
    #[inline(always)]
    pub(super) fn create(tid: u32, st: &ThreadState) -> Option<*mut ThreadState> {
        THREADS.insert(tid, st, BPF_ANY as u64).ok()?;
        mark_seen(tid);
        THREADS.get_ptr_mut(tid)
    }

    /// The current thread took id `new` from `old` (exec from a non-leader
    /// thread): its entry moves to the new id.
    #[inline(always)]
    pub(super) fn renumber(old: u32, new: u32) {
        let Some(st) = THREADS.get_ptr(old) else {
            return;
        };
        // SAFETY: a valid value pointer; the old id's thread is this one.
        let st = unsafe { *st };
        if THREADS.insert(new, st, BPF_ANY as u64).is_ok() {
            mark_seen(new);
        }
        let _ = THREADS.remove(old);
    }

    /// The current thread exits: its entry goes, so a thread that later
    /// reuses the id starts clean and the map has room.
    #[inline(always)]
    pub(super) fn forget(tid: u32) {
        let _ = THREADS.remove(tid);
    }

    /// Record that thread `tid` has (had) an entry in `THREADS`.
    #[inline(always)]
    fn mark_seen(tid: u32) {
        let (word, bit) = super::seen_slot(tid);
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
}

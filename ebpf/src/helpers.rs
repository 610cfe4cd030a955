//! Helpers shared by the syscall and TCP programs: load-time constants,
//! counters, atomic adds, kernel reads and the histogram/counter updates.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    maps::HashMap,
};
use syscope_common::{
    bucket_index,
    globals::NO_SPLIT,
    hist::{NUM_BUCKETS, SPLITS},
    Bucket, Histogram, COMM_LEN,
};

use crate::maps::{
    COUNTERS, FOLDED_COUNTS, FOLDED_HIST, SELF_TGID, SPLIT_IDX, SPLIT_NS, TASK_COMM_OFF,
    TASK_GROUP_LEADER_OFF,
};

/// `-EEXIST`, what a `BPF_NOEXIST` insert returns when another CPU created
/// the key between our lookup and our insert.
pub(crate) const EEXIST: i32 = -17;

/// A load-time constant (see `maps.rs`).
#[inline(always)]
pub(crate) fn global<T: Copy>(v: &'static T) -> T {
    // SAFETY: `v` is a valid, aligned static; the volatile read keeps the
    // compiler from folding the placeholder value the loader replaces.
    unsafe { core::ptr::read_volatile(v) }
}

/// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds.
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and cannot fail.
    unsafe { bpf_ktime_get_ns() }
}

/// The current task's cgroup v2 id.
#[inline(always)]
pub(crate) fn cgroup_id() -> u64 {
    // SAFETY: the helper takes no arguments and cannot fail.
    unsafe { bpf_get_current_cgroup_id() }
}

/// Whether `pid_tgid` (from `bpf_get_current_pid_tgid`) is the agent's.
#[inline(always)]
pub(crate) fn is_self_tgid(pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 == global(&SELF_TGID)
}

/// Whether the current task belongs to the agent itself.
#[inline(always)]
pub(crate) fn is_self() -> bool {
    is_self_tgid(bpf_get_current_pid_tgid())
}

/// Add one to the kernel's own counter `idx` (`syscope_common::counter`).
#[inline(always)]
pub(crate) fn bump(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: a valid value pointer of a per-CPU array: only this CPU
        // writes it, and a BPF program is not preempted by another on the
        // same CPU for the same hook.
        unsafe { *p += 1 };
    }
}

/// `lock *(u64 *)p += v`: an atomic add whose result is unused (BPF_ATOMIC
/// BPF_ADD), the cheapest shared counter update the ISA has.
///
/// # Safety
/// `p` must point to writable, 8-byte aligned map value memory.
#[inline(always)]
pub(crate) unsafe fn add64(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `p`; the instruction touches only `*p`.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}

/// `lock *(u32 *)p += v`.
///
/// # Safety
/// `p` must point to writable, 4-byte aligned map value memory.
#[inline(always)]
pub(crate) unsafe fn add32(p: *mut u32, v: u32) {
    // SAFETY: the caller guarantees `p`; the instruction touches only `*p`.
    unsafe {
        core::arch::asm!("lock *(u32 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v as u64)
    };
}

/// Read a `T` at `base + off` in kernel memory. `T` must be plain data
/// (integers, byte arrays), valid for any bit pattern.
#[inline(always)]
pub(crate) fn kread<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: the probe helper copies into a local and fails cleanly on a
    // bad address instead of faulting; callers read only plain data types.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Read a `T` at `base + off` where `base` is a BTF-typed kernel pointer
/// (a tp_btf argument, `bpf_get_current_task_btf`, a `bpf_skc_to_*`
/// result): one plain load instead of a probe helper call. The verifier
/// checks the access against the type at load time, which needs `off` to
/// be a load-time constant (a global: `.rodata` is frozen, so the verifier
/// knows its values), and the JIT guards the load against faults.
///
/// # Safety
/// `base` must be such a pointer, non-null, and `off` a field of its type
/// holding a `T`; the verifier rejects the program otherwise.
#[inline(always)]
pub(crate) unsafe fn btf_read<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: as the caller guarantees; a fault reads zeros (JIT fixup).
    unsafe { core::ptr::read((base + off as u64) as *const T) }
}

/// The process name: the thread group leader's comm. A thread's own comm can
/// be renamed per thread (e.g. "tokio-runtime-w"), which is not a workload.
///
/// Read as a string into zeros, so every byte after the name is 0: the name
/// is a map key (series, `SELECTED_NAMES`), and kernels that rename with
/// `strlcpy` (5.10; 6.1 pads) keep the old name's bytes after the new
/// one's NUL: "sh\0hon3" when python3 execs sh.
#[inline(always)]
pub(crate) fn process_comm() -> [u8; COMM_LEN] {
    let leader_off = global(&TASK_GROUP_LEADER_OFF);
    let comm_off = global(&TASK_COMM_OFF);
    if leader_off != 0 && comm_off != 0 {
        // SAFETY: the helper returns the current task's address, no
        // preconditions; it is only used as a base for `kread`.
        let task = unsafe { bpf_get_current_task() };
        if let Some(leader) = kread::<u64>(task, leader_off) {
            let mut comm = [0u8; COMM_LEN];
            // SAFETY: the helper bounds the copy by the buffer, stops at
            // the NUL and fails cleanly on a bad address.
            let read = unsafe {
                bpf_probe_read_kernel_str_bytes((leader + comm_off as u64) as *const u8, &mut comm)
            };
            if read.is_ok() {
                return comm;
            }
        }
    }
    // The helper pads the name with zeros itself.
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// Count `ns` in its bucket of the histogram at `h` (or in its zero count);
/// the bucket. The sum is left to [`add_sum`], last.
///
/// # Safety
/// `h` is a valid map value pointer; other CPUs update the same value, hence
/// only atomic adds. The fields are 8- and 4-byte aligned (`Histogram` is
/// repr(C)); the bucket index is bounds-checked.
#[inline(always)]
unsafe fn add_count(h: *mut Histogram, ns: u64) -> Bucket {
    // SAFETY: per the contract above.
    unsafe {
        let b = bucket_index(ns);
        match b {
            Bucket::Zero => add32(&raw mut (*h).zero, 1),
            Bucket::Index(i) => {
                if i < NUM_BUCKETS {
                    add32((&raw mut (*h).buckets).cast::<u32>().add(i), 1);
                }
            }
        }
        b
    }
}

/// Add `ns` to the sum of the histogram at `h`: the last store of an
/// update. The agent takes a histogram whose sum and zero count did not
/// move as unchanged without reading its buckets, so the counts must be in
/// place before the sum says they moved (atomic adds are ordered on x86;
/// elsewhere a late bucket waits for the next change, or the eviction's
/// full comparison).
///
/// # Safety
/// As for [`add_count`].
#[inline(always)]
unsafe fn add_sum(h: *mut Histogram, ns: u64) {
    // SAFETY: per the contract of `add_count`.
    unsafe { add64(&raw mut (*h).sum_ns, ns) };
}

/// Add `ns` to its bucket and the sum of the histogram at `h`; the bucket.
///
/// # Safety
/// As for [`add_count`].
#[inline(always)]
pub(crate) unsafe fn add_duration(h: *mut Histogram, ns: u64) -> Bucket {
    // SAFETY: per the contract of `add_count`.
    unsafe {
        let b = add_count(h, ns);
        add_sum(h, ns);
        b
    }
}

/// A duration whose map had no room: `full` is the counter bumped and
/// `fold` the slot of `FOLDED_HIST` that takes it instead.
#[inline(always)]
pub(crate) fn fold_hist(ns: u64, full: u32, fold: u32) {
    bump(full);
    if let Some(h) = FOLDED_HIST.get_ptr_mut(fold) {
        // SAFETY: a valid array value pointer, shared.
        unsafe { add_measured(h, ns) };
    }
}

/// `add_duration`, and the split counter of each SLO threshold in the
/// duration's bucket (before the sum, as the bucket).
///
/// # Safety
/// As for [`add_count`].
#[inline(always)]
pub(crate) unsafe fn add_measured(h: *mut Histogram, ns: u64) {
    // SAFETY: per the contract above.
    unsafe {
        if let Bucket::Index(i) = add_count(h, ns) {
            // SLO thresholds: only a duration in a threshold's own bucket is
            // compared (a load and a compare per slot).
            let split = (&raw mut (*h).split).cast::<u32>();
            // An unused slot's index is a constant the verifier sees in
            // the frozen globals: without SLOs the loop is dead code.
            for k in 0..SPLITS {
                if let (Some(idx), Some(t)) = (SPLIT_IDX.get(k), SPLIT_NS.get(k)) {
                    let idx = global(idx);
                    if idx != NO_SPLIT && i as u32 == idx && ns <= global(t) {
                        add32(split.add(k), 1);
                    }
                }
            }
        }
        add_sum(h, ns);
    }
}

/// Add `n` to the counter of `key`, creating it if needed. When the map has
/// no room, `full` is the counter bumped and `fold` the slot of
/// `FOLDED_COUNTS` that takes `n` instead.
#[inline(always)]
pub(crate) fn count_add<K>(map: &HashMap<K, u64>, key: &K, n: u64, full: u32, fold: u32) {
    if let Some(c) = map.get_ptr_mut(key) {
        // SAFETY: a valid, aligned value pointer, shared between CPUs: atomic.
        unsafe { add64(c, n) };
        return;
    }
    match map.insert(key, n, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(EEXIST) => {
            // Another CPU created it between our lookup and insert.
            if let Some(c) = map.get_ptr_mut(key) {
                // SAFETY: as above.
                unsafe { add64(c, n) };
            }
        }
        Err(_) => {
            bump(full);
            if let Some(c) = FOLDED_COUNTS.get_ptr_mut(fold) {
                // SAFETY: as above.
                unsafe { add64(c, n) };
            }
        }
    }
}

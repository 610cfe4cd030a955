//! cgroup births: each new cgroup2 directory is sent to the agent (id and
//! path) through a ring buffer, so its identity (container, pod, unit) is
//! resolved while it exists, however short its life. cgroup v1 hierarchies
//! are skipped: series are keyed by the cgroup2 id.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use syscope_common::{counter, CgroupEvent, CGROUP_PATH_LEN};

use crate::{
    helpers::{bump, global, kread},
    maps::{CGROUP_EVENTS, CGROUP_HIERARCHY_OFF, CGROUP_KN_OFF, CGROUP_ROOT_OFF, KERNFS_ID_OFF},
};

// tp_btf/cgroup_mkdir: (struct cgroup *cgrp, const char *path)
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir_btf(ctx: BtfTracePointContext) -> i32 {
    try_cgroup_mkdir(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

#[inline(always)]
fn try_cgroup_mkdir(cgrp: u64, path: u64) {
    // The default (v2) hierarchy is the one with id 0.
    let Some(root) = kread::<u64>(cgrp, global(&CGROUP_ROOT_OFF)) else {
        return;
    };
    if kread::<i32>(root, global(&CGROUP_HIERARCHY_OFF)) != Some(0) {
        return;
    }
    let Some(kn) = kread::<u64>(cgrp, global(&CGROUP_KN_OFF)) else {
        return;
    };
    let Some(id) = kread::<u64>(kn, global(&KERNFS_ID_OFF)) else {
        return;
    };
    let Some(mut entry) = CGROUP_EVENTS.reserve::<CgroupEvent>(0) else {
        bump(counter::CGROUP_EVENTS_LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved, writable record; the path is
    // copied by the helper, which bounds it by the buffer and fails cleanly
    // on a bad address.
    unsafe {
        (*ev).id = id;
        match bpf_probe_read_kernel_str_bytes(path as *const u8, &mut (*ev).path) {
            Ok(s) => {
                let len = s.len();
                (*ev).len = len as u32;
                // A full buffer: the path may go on; the agent walks the
                // tree for such a cgroup instead.
                (*ev).flags = if len + 1 >= CGROUP_PATH_LEN {
                    CgroupEvent::TRUNCATED
                } else {
                    0
                };
            }
            Err(_) => {
                entry.discard(0);
                return;
            }
        }
    }
    entry.submit(0);
}

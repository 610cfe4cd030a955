//! The programs that keep names and identity true: process renames and exec
//! from any thread (`task_rename`, `sched_process_exec`), compat-call
//! marking (an offset and mask for the syscall programs), and cgroup births
//! (`cgroup_mkdir`, events read by the agent as they come).
//!
//! Each is optional: a kernel without one of the hooks loses only that
//! refinement, said once in the log.

use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use syscope_common::{names, CgroupEvent};
use tracing::{info, warn};

use super::btf::Btf;
use crate::enrich::syscalls::Arch;

/// x86_64's TS_COMPAT in `thread_info.status` ("32-bit syscall active"):
/// a `#define`, so not in BTF; the same value since Linux 2.6.
const X86_TS_COMPAT: u32 = 0x0002;

/// Load-time constants of these programs (all 0 when BTF lacks them: the
/// feature is then off).
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub compat_off: u32,
    pub compat_mask: u32,
    pub pid: u32,
    pub cgroup_kn: u32,
    pub kernfs_id: u32,
    pub cgroup_root: u32,
    pub hierarchy_id: u32,
}

impl Offsets {
    pub fn from_btf(btf: &Btf, arch: Arch) -> Offsets {
        let mut o = Offsets::default();
        // aarch64 marks compat tasks with TIF_32BIT in thread_info.flags;
        // without an arm32 table to name them, they are not marked.
        if arch == Arch::X86_64 {
            match (
                btf.member_offset("task_struct", "thread_info"),
                btf.member_offset("thread_info", "status"),
            ) {
                (Ok(ti), Ok(status)) => {
                    o.compat_off = ti + status;
                    o.compat_mask = X86_TS_COMPAT;
                }
                (a, b) => {
                    let e = a.err().or(b.err()).map(|e| e.to_string());
                    warn!(error = ?e, "thread_info.status not in kernel BTF: 32-bit syscalls are named from the 64-bit table");
                }
            }
        }
        o.pid = btf.member_offset("task_struct", "pid").unwrap_or(0);
        let cg = [
            btf.member_offset("cgroup", "kn"),
            btf.member_offset("kernfs_node", "id"),
            btf.member_offset("cgroup", "root"),
            btf.member_offset("cgroup_root", "hierarchy_id"),
        ];
        if let [Ok(kn), Ok(id), Ok(root), Ok(h)] = cg {
            (o.cgroup_kn, o.kernfs_id, o.cgroup_root, o.hierarchy_id) = (kn, id, root, h);
        }
        o
    }

    fn cgroup_known(&self) -> bool {
        self.cgroup_kn != 0 || self.kernfs_id != 0 || self.cgroup_root != 0
    }
}

/// Attaches the cgroup-birth program and, when `threads` (syscall programs
/// keep thread state), the rename and exec programs, each on its own;
/// returns the cgroup event ring buffer when its program is attached.
pub fn attach(ebpf: &mut Ebpf, o: &Offsets, threads: bool) -> Option<RingBuf<MapData>> {
    let btf = match aya::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "kernel BTF unreadable: renames, exec from threads and cgroup births not followed");
            return None;
        }
    };
    let mut attached = vec![];
    let mut programs = vec![];
    if threads {
        if o.pid != 0 {
            programs.push((names::BTF_RENAME, "task_rename"));
        }
        programs.push((names::BTF_EXEC, "sched_process_exec"));
    }
    if o.cgroup_known() {
        programs.push((names::BTF_CGROUP_MKDIR, "cgroup_mkdir"));
    }
    for (prog, hook) in programs {
        match super::attach_btf_program(ebpf, &btf, prog, hook) {
            Ok(_) => attached.push(hook),
            Err(e) => warn!(error = %e, hook, "hook unavailable: what it follows is not followed"),
        }
    }
    info!(hooks = ?attached, "identity programs attached");
    if !attached.contains(&"cgroup_mkdir") {
        return None;
    }
    let map = ebpf.take_map(names::CGROUP_EVENTS_MAP)?;
    match RingBuf::try_from(map) {
        Ok(rb) => Some(rb),
        Err(e) => {
            warn!(error = %e, "cgroup event ring buffer unusable: cgroups resolved by tree walks only");
            None
        }
    }
}

/// A birth event's cgroup id and path; `None` for a malformed or truncated
/// record (that cgroup is then found by a tree walk, if it still exists).
pub fn parse_event(bytes: &[u8]) -> Option<(u64, String)> {
    if bytes.len() < std::mem::size_of::<CgroupEvent>() {
        return None;
    }
    // SAFETY: the length is checked; CgroupEvent is plain data valid for
    // any bit pattern, read unaligned.
    let ev: CgroupEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if ev.flags & CgroupEvent::TRUNCATED != 0 {
        return None;
    }
    let path = ev.path.get(..ev.len as usize)?;
    let path = std::str::from_utf8(path).ok()?;
    Some((ev.id, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syscope_common::CGROUP_PATH_LEN;

    fn event(id: u64, path: &str, flags: u32) -> Vec<u8> {
        let mut ev = CgroupEvent {
            id,
            len: path.len() as u32,
            flags,
            path: [0; CGROUP_PATH_LEN],
        };
        ev.path[..path.len()].copy_from_slice(path.as_bytes());
        // SAFETY: plain data, read as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&ev as *const CgroupEvent).cast::<u8>(),
                std::mem::size_of::<CgroupEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn events_parse_defensively() {
        assert_eq!(
            parse_event(&event(7, "/a.slice/b.service", 0)),
            Some((7, "/a.slice/b.service".to_string()))
        );
        assert_eq!(parse_event(&event(7, "/x", CgroupEvent::TRUNCATED)), None);
        assert_eq!(parse_event(&[0u8; 10]), None);
        let mut bad = event(1, "/x", 0);
        bad[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse_event(&bad), None);
        let mut utf = event(1, "/xy", 0);
        utf[16] = 0xff;
        assert_eq!(parse_event(&utf), None);
    }
}

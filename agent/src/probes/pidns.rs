//! The agent's own process id as the kernel programs see it.
//!
//! BPF helpers report ids in the initial PID namespace. In a container
//! with its own PID namespace (a pod without hostPID) `getpid()` is a
//! different number, and excluding "our" pid would instead hide whichever
//! host process has it (often the host's init). There the agent excludes
//! nothing and says so: its own few syscalls are then measured too.

use std::os::unix::fs::MetadataExt as _;

use tracing::info;

/// Inode of the initial PID namespace (PROC_PID_INIT_INO, fixed in the
/// kernel ABI since namespaces got inode numbers, Linux 3.8).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// The tgid to exclude in the kernel; 0 (no user process has it) when
/// this process is not in the initial PID namespace.
pub fn kernel_self_tgid() -> u32 {
    let pid = std::process::id();
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) => tgid_for(pid, m.ino()),
        // No /proc/self/ns (very old kernels, odd sandboxes): keep the
        // classic behaviour.
        Err(_) => pid,
    }
}

fn tgid_for(pid: u32, pidns_ino: u64) -> u32 {
    if pidns_ino == PROC_PID_INIT_INO {
        return pid;
    }
    info!(
        "running in a PID namespace (e.g. a pod without hostPID): the agent's own syscalls \
         cannot be excluded in the kernel and are measured too"
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_own_pid_only_in_the_initial_namespace() {
        assert_eq!(tgid_for(1234, PROC_PID_INIT_INO), 1234);
        assert_eq!(tgid_for(1, 4026532301), 0);
    }
}

//! Names and identities: syscall numbers, errno values, cgroups to
//! containers, pods and units.

pub mod cgroup;
pub mod errno;
pub mod identity;
pub mod syscalls;

pub use cgroup::{container_id_from_path, CgroupInfo, CgroupResolver};
pub use errno::errno_name;
pub use syscalls::{syscall_name, syscall_nr, Arch};

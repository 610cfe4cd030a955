//! Names and identities: syscall numbers, errno values, cgroups to containers.

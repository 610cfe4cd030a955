//! TCP request latency from the syscall layer: the route for kernels
//! without the `sock_send_length`/`sock_recv_length` tracepoints (before
//! 6.3), on the syscall programs' own hooks.
//!
//! With tp_btf, exit reads the syscall's arguments from the registers (so a
//! syscall in flight at attach counts too); with the tracepoint hook, entry
//! remembers the fd in the thread's entry. For socket I/O (read, write,
//! readv, writev, send*, recv*, sendfile's output), when bytes moved, the fd
//! is resolved to its `struct sock` (task -> files -> fdtable
//! -> file; a socket inode's `private_data` is its `struct socket`, whose
//! `sk` is the key of `SOCKETS`) and hands it to the same request logic as
//! the tracepoints. Other syscalls pay one bitmap test; I/O on files that
//! are not sockets stops at the inode's mode.

use aya_ebpf::helpers::bpf_get_current_task;
use syscope_common::globals::{fd_off, SOCKIO_NR_WORDS};

use crate::{
    helpers::{global, kread},
    maps::{FD_OFF, NR_RECVFROM, NR_RECVMSG, SOCKIO, SOCKIO_RECV_NRS, SOCKIO_SEND_NRS},
    tcp,
};

/// recv flag: look at the data without consuming it.
const MSG_PEEK: u64 = 2;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Whether the syscall route is on.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    global(&SOCKIO) != 0
}

#[inline(always)]
fn has_bit(bits: &'static [u64; SOCKIO_NR_WORDS], nr: u32) -> bool {
    if nr as usize >= SOCKIO_NR_WORDS * 64 {
        return false;
    }
    let mut i = nr as u64;
    // SAFETY: an empty asm block. It hides `i`'s range from the optimizer,
    // which would otherwise drop the mask below as redundant after the
    // check above; older verifiers (5.10) need the mask itself to bound
    // the index, as they do not link the check to this copy of `nr`.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) i) };
    let w = global(&bits[((i >> 6) as usize) & (SOCKIO_NR_WORDS - 1)]);
    w & (1u64 << (nr & 63)) != 0
}

/// For syscall `nr`: fd + 1 if it is socket I/O (and not a peek), 0 for
/// anything else (`ThreadState::io_fd`). `arg(i)` reads argument `i`.
#[inline(always)]
pub(crate) fn io_fd(nr: u32, arg: impl Fn(usize) -> Option<u64>) -> u32 {
    if !has_bit(&SOCKIO_RECV_NRS, nr) && !has_bit(&SOCKIO_SEND_NRS, nr) {
        return 0;
    }
    // A peek leaves the bytes for the real read: not a request boundary.
    let flags = if nr == global(&NR_RECVFROM) {
        arg(3)
    } else if nr == global(&NR_RECVMSG) {
        arg(2)
    } else {
        Some(0)
    };
    if flags.unwrap_or(0) & MSG_PEEK != 0 {
        return 0;
    }
    match arg(0) {
        // fds are ints: 0..i32::MAX, so fd + 1 fits.
        Some(fd) if fd < i32::MAX as u64 => fd as u32 + 1,
        _ => 0,
    }
}

/// At exit of syscall `nr` on `io_fd` (from [`io_fd`]; 0: not socket I/O),
/// returning `ret`: a request boundary if bytes moved on a tracked TCP socket.
#[inline(always)]
pub(crate) fn at_exit(io_fd: u32, nr: u32, ret: i64) {
    if io_fd == 0 || ret <= 0 {
        return;
    }
    let sk = fd_sock(io_fd - 1);
    if sk != 0 {
        let sent = has_bit(&SOCKIO_SEND_NRS, nr);
        tcp::on_io::<tcp::ByProbe>(sk, ret.min(i32::MAX as i64) as i32, sent);
    }
}

/// The `struct sock` behind the current task's `fd`, or 0 if it is not a
/// socket.
#[inline(always)]
fn fd_sock(fd: u32) -> u64 {
    let off = |i: usize| match FD_OFF.get(i) {
        Some(o) => global(o),
        None => 0,
    };
    // SAFETY: the helper returns the current task's address; it is only
    // used as a base for `kread`.
    let task = unsafe { bpf_get_current_task() };
    let Some(files) = kread::<u64>(task, off(fd_off::TASK_FILES)) else {
        return 0;
    };
    let Some(fdt) = kread::<u64>(files, off(fd_off::FILES_FDT)) else {
        return 0;
    };
    match kread::<u32>(fdt, off(fd_off::FDT_MAX_FDS)) {
        Some(max) if fd < max => {}
        _ => return 0,
    }
    let Some(fds) = kread::<u64>(fdt, off(fd_off::FDT_FD)) else {
        return 0;
    };
    let Some(file) = kread::<u64>(fds + fd as u64 * 8, 0) else {
        return 0;
    };
    if file == 0 {
        return 0;
    }
    let Some(inode) = kread::<u64>(file, off(fd_off::FILE_INODE)) else {
        return 0;
    };
    match kread::<u16>(inode, off(fd_off::INODE_MODE)) {
        Some(mode) if mode & S_IFMT == S_IFSOCK => {}
        _ => return 0,
    }
    let Some(sock) = kread::<u64>(file, off(fd_off::FILE_PRIVATE)) else {
        return 0;
    };
    kread::<u64>(sock, off(fd_off::SOCKET_SK)).unwrap_or(0)
}

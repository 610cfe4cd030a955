//! Seeding: sockets older than the agent (a DaemonSet rollout restarts it
//! under established connections). A BPF iterator over every TCP socket
//! (Linux 5.9+), run once by the agent right after the TCP programs attach,
//! adds listeners and established connections that are not tracked yet.
//! The TCP iterator walks the listening hash before the established one, so
//! by the time a connection is seen, whether its local port has a listener
//! (it was accepted: a server socket) is known.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_skc_to_tcp_sock;

use crate::tcp;

/// `iter/tcp`: ctx is `struct bpf_iter__tcp { struct bpf_iter_meta *meta;
/// struct sock_common *sk_common; uid_t uid; }`; `sk_common` is NULL once
/// the walk is over.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn seed_tcp(ctx: *mut c_void) -> i32 {
    // SAFETY: the verifier types ctx as bpf_iter__tcp: reading its second
    // pointer is a checked context access.
    let sk = unsafe { *(ctx as *const u64).add(1) };
    if sk != 0 {
        // As a full TCP socket: socket storage takes a `struct sock *`, not
        // a `sock_common`. Null for time-wait and request sockets, which
        // are not seeded. The same address either way.
        // SAFETY: a non-null typed socket pointer from the iterator.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
        if tp != 0 {
            tcp::seed(tp);
        }
    }
    0
}

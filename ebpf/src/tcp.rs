//! TCP: sockets are tracked from connect, accept or listen
//! (inet_sock_set_state), in socket storage or by kernel address (see
//! [`socks`]), measured on the send/recv paths of the socket layer, and
//! forgotten on destruction (tcp_destroy_sock; storage goes with its socket,
//! the LRU map is the backstop).
//!
//! `SockState` entries are shared between the socket's process context and
//! softirq on another CPU. Their fields are plain integers: a race can mix
//! two updates of one socket (one request boundary seen late), never reach
//! memory outside the entry, which the verifier bounds. The kept slots
//! outlast a race: a write that lands in another socket's state (an LRU
//! element reused while a program still held it) or in a state whose owner
//! another process just filled in leaves that socket counting into the
//! wrong series until the agent evicts that series (its generation moves).
//! Both need a socket destroyed or first touched by two processes while a
//! program runs on it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_skc_to_tcp_sock,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use syscope_common::{
    counter, maps,
    tcp::{
        phase, role, seq, state, CountKind, HistKind, ListenState, SockState, TcpKey, AF_INET,
        AF_INET6, OVERLAPS_TO_MULTIPLEXED,
    },
    SlotRef, COMM_LEN,
};

use crate::{
    helpers::{
        add_measured, btf_read, bump, cgroup_id, count_add, fold_hist, global, is_self, kread,
        now_ns, process_comm,
    },
    maps::{
        LISTENERS, LISTEN_PORTS, RTT_SAMPLE_NS, SHINFO_GSO_SEGS_OFF, SKB_END_OFF, SKB_HEAD_OFF,
        SK_DADDR_OFF, SK_DPORT_OFF, SK_DROPS_OFF, SK_ERR_OFF, SK_FAMILY_OFF, SK_NUM_OFF,
        SK_STATE_OFF, SK_V6_DADDR_OFF, TCP_CLOCK_OFF, TCP_COUNTERS, TCP_LATENCY, TCP_LATENCY_FREE,
        TCP_LATENCY_GENS, TCP_LATENCY_VALUES, TCP_SEQ_OFF, TCP_SRTT_OFF,
    },
    slots::Slots,
};

/// recv flag: look at the data without consuming it.
const MSG_PEEK: i32 = 2;

/// Between request boundaries, how many reads and writes of a socket
/// there are per check of whether an RTT sample is due (see [`on_io`]).
const RTT_CHECK_EVERY: u8 = 64;

// tp_btf/inet_sock_set_state: (const struct sock *sk, int oldstate, int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcp_state_btf(ctx: BtfTracePointContext) -> i32 {
    try_state(ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2));
    0
}

// tp_btf/sock_send_length: (struct sock *sk, int ret, int flags)
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_btf(ctx: BtfTracePointContext) -> i32 {
    on_io::<ByBtf>(ctx.arg::<u64>(0), ctx.arg::<i32>(1), true);
    0
}

// tp_btf/sock_recv_length: (struct sock *sk, int ret, int flags)
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_btf(ctx: BtfTracePointContext) -> i32 {
    // A peek leaves the bytes for the real read: not a request boundary.
    if ctx.arg::<i32>(2) & MSG_PEEK == 0 {
        on_io::<ByBtf>(ctx.arg::<u64>(0), ctx.arg::<i32>(1), false);
    }
    0
}

// tp_btf/tcp_retransmit_skb: (const struct sock *sk, const struct sk_buff *skb, int err)
// Fires for failed attempts too (err != 0): those put nothing on the wire.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_btf(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<i32>(2) == 0 {
        try_retransmit(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    }
    0
}

// Before 6.17 (the agent reads the argument count from BTF): (const struct
// sock *sk, const struct sk_buff *skb), fired for successful sends only.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_old_btf(ctx: BtfTracePointContext) -> i32 {
    try_retransmit(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

// tp_btf/tcp_send_reset: (const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    let (sk, skb) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    // No skb: an active reset (close with SO_LINGER 0, abort), sent by the
    // closing process, so an accepted socket never read or written learns
    // its owner here.
    sock_event(sk, CountKind::ResetSent, 1, skb == 0);
    0
}

// tp_btf/tcp_receive_reset: (struct sock *sk)
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    sock_event(ctx.arg::<u64>(0), CountKind::ResetReceived, 1, false);
    0
}

// tp_btf/tcp_destroy_sock: (struct sock *sk). After the last reset or
// retransmit of the socket, so those still find its owner.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_btf(ctx: BtfTracePointContext) -> i32 {
    socks::remove(ctx.arg::<u64>(0));
    0
}

/// A socket older than the agent, from the seeding iterator (in the agent's
/// context: the owner is left empty for the first process that reads or
/// writes the socket to claim, as for accepted sockets).
#[inline(always)]
pub(crate) fn seed(sk: u64) {
    match kread::<u8>(sk, global(&SK_STATE_OFF)).map(i32::from) {
        Some(state::LISTEN) => {
            let port = sk_local_port(sk);
            let _ = LISTEN_PORTS.insert(u32::from(port), 1, BPF_ANY as u64);
            if LISTENERS.get_ptr(sk).is_some() {
                return;
            }
            let drops = kread::<u32>(sk, global(&SK_DROPS_OFF)).unwrap_or(0);
            let l = ListenState {
                since_ns: now_ns(),
                cgroup_id: 0,
                comm: [0; COMM_LEN],
                drops,
                base: drops,
                port,
                closed: 0,
                _pad: [0; 5],
            };
            if LISTENERS.insert(sk, l, BPF_ANY as u64).is_err() {
                bump(counter::map_full(maps::LISTENERS));
            }
        }
        Some(state::ESTABLISHED) => {
            if socks::get(sk).is_some() {
                return;
            }
            let local = sk_local_port(sk);
            let server = LISTEN_PORTS.get_ptr(u32::from(local)).is_some();
            let (addr, port) = if server {
                ([0; 16], local)
            } else {
                sk_peer(sk)
            };
            let role = if server { role::SERVER } else { role::CLIENT };
            track(sk, &SockState::new(role, addr, port));
        }
        _ => {}
    }
}

/// Run by the agent (BPF_PROG_TEST_RUN, args[0] = a listener's address from
/// LISTENERS): copy the listener's drop counter into its entry. Only
/// addresses the kernel itself put there are read, and never after close.
#[raw_tracepoint]
pub fn listen_poll(ctx: RawTracePointContext) -> i32 {
    try_listen_poll(ctx.arg::<u64>(0));
    0
}

/// The key of a metric about socket `owner`, or about no known socket (no
/// workload, port 0). `with_addr`: the metric carries the peer address.
#[inline(always)]
fn tcp_key(owner: Option<&SockState>, kind: u8, with_addr: bool) -> TcpKey {
    let (cgroup_id, comm, addr, port) = match owner {
        Some(st) => (
            st.cgroup_id,
            st.comm,
            if with_addr { st.addr } else { [0; 16] },
            st.port,
        ),
        None => (0, [0; COMM_LEN], [0; 16], 0),
    };
    TcpKey {
        cgroup_id,
        comm,
        addr,
        port,
        kind,
        _pad: 0,
        code: 0,
    }
}

/// Add `ns` to the socket's histogram of `kind`: through the slot the
/// socket keeps for its requests and RTT while the slot's generation holds,
/// else resolved by key (and kept). A connect, once per socket, is resolved
/// each time.
#[inline(always)]
fn tcp_hist(st: &mut SockState, kind: HistKind, with_addr: bool, ns: u64) {
    let slots = Slots {
        keys: &TCP_LATENCY,
        values: &TCP_LATENCY_VALUES,
        gens: &TCP_LATENCY_GENS,
        free: &TCP_LATENCY_FREE,
    };
    let kept = match kind {
        HistKind::Connect => SlotRef::NONE,
        HistKind::Rtt => st.rtt_slot,
        _ => st.req_slot,
    };
    let h = match slots.live(kept) {
        Some(h) => Some(h),
        None => slots
            .resolve(&tcp_key(Some(st), kind as u8, with_addr))
            .map(|(r, h)| {
                match kind {
                    HistKind::Connect => {}
                    HistKind::Rtt => st.rtt_slot = r,
                    _ => st.req_slot = r,
                }
                h
            }),
    };
    match h {
        // SAFETY: a valid array value pointer, shared between CPUs.
        Some(h) => unsafe { add_measured(h, ns) },
        None => fold_hist(ns, counter::map_full(maps::TCP_LATENCY), kind as u32),
    }
}

#[inline(always)]
fn tcp_count(key: &TcpKey, n: u64) {
    count_add(
        &TCP_COUNTERS,
        key,
        n,
        counter::map_full(maps::TCP_COUNTERS),
        key.kind as u32,
    );
}

/// Peer address (v4-mapped for IPv4) and port of a socket.
#[inline(always)]
fn sk_peer(sk: u64) -> ([u8; 16], u16) {
    let mut addr = [0u8; 16];
    match kread::<u16>(sk, global(&SK_FAMILY_OFF)) {
        Some(AF_INET) => {
            if let Some(a) = kread::<[u8; 4]>(sk, global(&SK_DADDR_OFF)) {
                addr[10] = 0xff;
                addr[11] = 0xff;
                addr[12] = a[0];
                addr[13] = a[1];
                addr[14] = a[2];
                addr[15] = a[3];
            }
        }
        Some(AF_INET6) => {
            if let Some(a) = kread::<[u8; 16]>(sk, global(&SK_V6_DADDR_OFF)) {
                addr = a;
            }
        }
        _ => {}
    }
    let port = u16::from_be(kread::<u16>(sk, global(&SK_DPORT_OFF)).unwrap_or(0));
    (addr, port)
}

#[inline(always)]
fn sk_local_port(sk: u64) -> u16 {
    kread::<u16>(sk, global(&SK_NUM_OFF)).unwrap_or(0)
}

/// Sample the smoothed RTT of `sk` into the RTT histogram.
#[inline(always)]
fn sample_rtt(sk: u64, st: &mut SockState, now: u64) {
    st.rtt_sampled_ns = now;
    // srtt_us holds the smoothed RTT in microseconds, left-shifted by 3.
    if let Some(srtt) = kread::<u32>(sk, global(&TCP_SRTT_OFF)) {
        if srtt != 0 {
            tcp_hist(st, HistKind::Rtt, false, (srtt as u64 >> 3) * 1000);
        }
    }
}

/// An accepted socket has no owner until a process touches it: the
/// current one, which the caller knows to be in process context. Slots
/// kept before were of the ownerless series.
#[inline(always)]
fn claim_owner(st: &mut SockState) {
    if st.comm[0] == 0 {
        st.cgroup_id = cgroup_id();
        st.comm = process_comm();
        st.req_slot = SlotRef::NONE;
        st.rtt_slot = SlotRef::NONE;
    }
}

/// Track `st` under `sk`, counting a full map.
#[inline(always)]
fn track(sk: u64, st: &SockState) {
    if !socks::insert(sk, st) {
        bump(counter::map_full(maps::SOCKETS));
    }
}

/// Where TCP socket state lives: socket storage where `SOCK_STORE` says
/// (a load-time constant, so the verifier drops the other branch), else
/// the `SOCKETS` LRU hash keyed by the socket's address. Callers pass the
/// socket pointer their hook gave them, typed (tp_btf, the iterator).
mod socks {
    use aya_ebpf::bindings::BPF_ANY;
    use syscope_common::tcp::SockState;

    use crate::maps::SOCKETS;
    #[cfg(feature = "task-storage")]
    use crate::{
        helpers::{add64, bump, global},
        maps::{SOCKS_LIVE, SOCK_LIMIT, SOCK_STATE, SOCK_STORE},
    };
    #[cfg(feature = "task-storage")]
    use syscope_common::counter;

    #[cfg(feature = "task-storage")]
    #[inline(always)]
    fn in_storage() -> bool {
        global(&SOCK_STORE) != 0
    }

    #[inline(always)]
    pub(super) fn get(sk: u64) -> Option<*mut SockState> {
        #[cfg(feature = "task-storage")]
        if in_storage() {
            return SOCK_STATE.get(sk, None);
        }
        SOCKETS.get_ptr_mut(sk)
    }

    /// The state of `sk` in the `SOCKETS` hash, for a socket address with
    /// no type (the syscall route, which never runs with socket storage).
    #[inline(always)]
    pub(super) fn get_hashed(sk: u64) -> Option<*mut SockState> {
        SOCKETS.get_ptr_mut(sk)
    }

    /// Sets the state of `sk` to `st`; false when there is no room.
    #[inline(always)]
    pub(super) fn insert(sk: u64, st: &SockState) -> bool {
        #[cfg(feature = "task-storage")]
        if in_storage() {
            let Some(live) = SOCKS_LIVE.get_ptr_mut(0) else {
                return false;
            };
            let fresh = SOCK_STATE.get(sk, None).is_none();
            // SAFETY: a valid array value pointer; a plain read of a
            // counter other CPUs add to: sockets racing past the limit at
            // once overshoot it by one per CPU, no more.
            if fresh && unsafe { *live } >= u64::from(global(&SOCK_LIMIT)) {
                return false;
            }
            let Some(p) = SOCK_STATE.get(sk, Some(st)) else {
                return false;
            };
            if fresh {
                // SAFETY: as above; an atomic add.
                unsafe { add64(live, 1) };
                bump(counter::SOCK_STORED);
            }
            // SAFETY: a valid value pointer; an existing entry (a socket
            // tracked again: reconnect, listen after connect) is replaced.
            unsafe { *p = *st };
            return true;
        }
        SOCKETS.insert(sk, st, BPF_ANY as u64).is_ok()
    }

    #[inline(always)]
    pub(super) fn remove(sk: u64) {
        #[cfg(feature = "task-storage")]
        if in_storage() {
            if SOCK_STATE.delete(sk) {
                if let Some(live) = SOCKS_LIVE.get_ptr_mut(0) {
                    // SAFETY: a valid array value pointer; an atomic add
                    // of -1.
                    unsafe { add64(live, u64::MAX) };
                }
                bump(counter::SOCK_FREED);
            }
            return;
        }
        let _ = SOCKETS.remove(sk);
    }
}

#[inline(always)]
fn try_state(sk: u64, old: i32, new: i32) {
    if new == state::SYN_SENT {
        on_connect(sk);
    } else if old == state::SYN_SENT {
        on_connect_done(sk, new);
    } else if old == state::SYN_RECV && new == state::ESTABLISHED {
        on_accepted(sk);
    } else if new == state::LISTEN {
        on_listen(sk);
    } else if old == state::LISTEN && new == state::CLOSE {
        on_listen_close(sk);
    }
}

/// connect(): in the connecting process's context.
#[inline(always)]
fn on_connect(sk: u64) {
    // The agent's own connections (to the collector) are not a workload's.
    if is_self() {
        return;
    }
    let (addr, port) = sk_peer(sk);
    let mut st = SockState::new(role::CLIENT, addr, port);
    st.t_start = now_ns();
    st.cgroup_id = cgroup_id();
    st.comm = process_comm();
    track(sk, &st);
}

/// Handshake done or failed, in softirq: the owner is in the entry.
#[inline(always)]
fn on_connect_done(sk: u64, new: i32) {
    let now = now_ns();
    let Some(st) = socks::get(sk) else {
        return;
    };
    // SAFETY: a valid value pointer for this run (see the module docs on
    // concurrent updates).
    let st = unsafe { &mut *st };
    if new == state::ESTABLISHED {
        if st.t_start != 0 && now >= st.t_start {
            tcp_hist(st, HistKind::Connect, true, now - st.t_start);
        }
        st.t_start = 0;
        sample_rtt(sk, st, now);
    } else if new == state::CLOSE {
        // The kernel sets sk_err before moving to CLOSE (refused, timed
        // out, unreachable); 0 means the application gave up first.
        let err = kread::<i32>(sk, global(&SK_ERR_OFF)).unwrap_or(0);
        let mut key = tcp_key(Some(st), CountKind::ConnectError as u8, true);
        key.code = err.unsigned_abs();
        tcp_count(&key, 1);
        st.t_start = 0;
    }
}

/// An accepted connection, in softirq: the owner is filled in by the first
/// process that reads or writes it.
#[inline(always)]
fn on_accepted(sk: u64) {
    track(
        sk,
        &SockState::new(role::SERVER, [0; 16], sk_local_port(sk)),
    );
}

/// listen(): in the listening process's context.
#[inline(always)]
fn on_listen(sk: u64) {
    if is_self() {
        return;
    }
    let drops = kread::<u32>(sk, global(&SK_DROPS_OFF)).unwrap_or(0);
    let l = ListenState {
        since_ns: now_ns(),
        cgroup_id: cgroup_id(),
        comm: process_comm(),
        drops,
        base: drops,
        port: sk_local_port(sk),
        closed: 0,
        _pad: [0; 5],
    };
    if LISTENERS.insert(sk, l, BPF_ANY as u64).is_err() {
        bump(counter::map_full(maps::LISTENERS));
    }
}

/// The listener goes away: keep its final count for the agent, which
/// deletes the entry after reading it.
#[inline(always)]
fn on_listen_close(sk: u64) {
    if let Some(l) = LISTENERS.get_ptr_mut(sk) {
        // SAFETY: a valid value pointer; the agent reads it, only the
        // kernel programs write it, with plain integer stores.
        unsafe {
            if let Some(d) = kread::<u32>(sk, global(&SK_DROPS_OFF)) {
                (*l).drops = d;
            }
            (*l).closed = 1;
        }
    }
}

#[inline(always)]
fn try_listen_poll(sk: u64) {
    if let Some(l) = LISTENERS.get_ptr_mut(sk) {
        // SAFETY: as in `on_listen_close`.
        unsafe {
            if (*l).closed == 0 {
                if let Some(d) = kread::<u32>(sk, global(&SK_DROPS_OFF)) {
                    (*l).drops = d;
                }
            }
        }
    }
}

/// How the I/O path reaches a socket: its tracked state, and the
/// `struct tcp_sock` fields of `sk`. Two ways, by whether the hook's socket
/// pointer is typed ([`ByBtf`]) or a bare address ([`ByProbe`]).
pub(crate) trait TcpFields {
    /// The tracked state of `sk`, if any.
    fn state(sk: u64) -> Option<*mut SockState>;

    /// Whether the sequence fields `TCP_SEQ_OFF[a]` and `[b]` differ
    /// (indexes from [`seq`]). Callers pass constants: a variable index
    /// would need masking for old verifiers.
    fn seq_differ(sk: u64, a: usize, b: usize) -> bool;

    /// After a write: when it transmitted, if it sent all its bytes (the
    /// socket's clock cache, which the kernel refreshes as it transmits);
    /// 0 when not known, so the caller reads the clock.
    fn sent_at(sk: u64) -> u64;
}

/// Through the socket's BTF pointer (the socket tracepoints, 6.3+): one
/// helper call that checks it is a full TCP socket, then plain loads,
/// where the probe helper costs a call per field.
pub(crate) struct ByBtf;

/// With the probe helper (the syscall route: its socket address comes from
/// probe reads and carries no type).
pub(crate) struct ByProbe;

/// Offset of sequence field `i` (see [`TcpFields::seq_differ`]).
#[inline(always)]
fn seq_off(i: usize) -> u32 {
    match TCP_SEQ_OFF.get(i) {
        Some(o) => global(o),
        None => 0,
    }
}

impl TcpFields for ByBtf {
    #[inline(always)]
    fn state(sk: u64) -> Option<*mut SockState> {
        socks::get(sk)
    }

    #[inline(always)]
    fn seq_differ(sk: u64, a: usize, b: usize) -> bool {
        // SAFETY: `sk` is the tracepoint's typed `struct sock *`; the helper
        // returns it as a `tcp_sock` if it is one, else null.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
        if tp == 0 {
            return false;
        }
        // SAFETY: a non-null BTF tcp_sock pointer; the offsets are u32
        // fields of it, from BTF, load-time constants.
        unsafe { btf_read::<u32>(tp, seq_off(a)) != btf_read::<u32>(tp, seq_off(b)) }
    }

    #[inline(always)]
    fn sent_at(sk: u64) -> u64 {
        // SAFETY: as in `seq_differ`.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
        if tp == 0 {
            return 0;
        }
        // SAFETY: as in `seq_differ`; tcp_clock_cache is a u64 field.
        unsafe {
            if btf_read::<u32>(tp, seq_off(seq::SND_NXT))
                != btf_read::<u32>(tp, seq_off(seq::WRITE_SEQ))
            {
                return 0;
            }
            btf_read::<u64>(tp, global(&TCP_CLOCK_OFF))
        }
    }
}

impl TcpFields for ByProbe {
    #[inline(always)]
    fn state(sk: u64) -> Option<*mut SockState> {
        socks::get_hashed(sk)
    }

    #[inline(always)]
    fn seq_differ(sk: u64, a: usize, b: usize) -> bool {
        match (kread::<u32>(sk, seq_off(a)), kread::<u32>(sk, seq_off(b))) {
            (Some(x), Some(y)) => x != y,
            _ => false,
        }
    }

    #[inline(always)]
    fn sent_at(_sk: u64) -> u64 {
        // Three probe reads would cost about what the clock read does.
        0
    }
}

/// The time of a request boundary: for a write that sent all its bytes,
/// when it transmitted them (the clock the kernel read then: one clock
/// read less per boundary write), else now. `last`: the socket's previous
/// boundary. A cached clock older than that is not this write's: a write
/// whose bytes never reached TCP's queue (kernel TLS holding an open
/// record, `MSG_MORE`) leaves `snd_nxt` = `write_seq` from before, so the
/// clock is read instead.
#[inline(always)]
fn boundary_ns<F: TcpFields>(sk: u64, sent: bool, last: u64) -> u64 {
    let t = if sent { F::sent_at(sk) } else { 0 };
    if t != 0 && t >= last {
        t
    } else {
        now_ns()
    }
}

/// A read (`sent == false`) or write of `ret` bytes on socket `sk`, in the
/// process's context: from the socket tracepoints or the syscall route,
/// whose fields `F` reads.
#[inline(always)]
pub(crate) fn on_io<F: TcpFields>(sk: u64, ret: i32, sent: bool) {
    if ret <= 0 {
        return;
    }
    // Only sockets we track: one lookup is all an untracked socket costs.
    let Some(st) = F::state(sk) else {
        return;
    };
    // SAFETY: a valid value pointer for this run; concurrent writers of one
    // socket only race on which request boundary they see first.
    let st = unsafe { &mut *st };
    claim_owner(st);
    // The clock, once a request boundary has read it.
    let mut now = 0;
    if st.phase != phase::OVERLAPPED {
        // A request starts with the first byte one way and ends with the
        // first byte back: server sockets read requests, client sockets
        // write them.
        let (req_dir, kind, with_addr) = if st.role == role::SERVER {
            (phase::READ, HistKind::ServerRequest, false)
        } else {
            (phase::WRITTEN, HistKind::ClientRequest, true)
        };
        let dir = if sent { phase::WRITTEN } else { phase::READ };
        if !sent && st.role == role::CLIENT {
            // Whether this read left answer bytes behind, for the next write.
            st.unread = u8::from(F::seq_differ(sk, seq::RCV_NXT, seq::COPIED_SEQ));
        }
        if dir == req_dir {
            if st.phase != req_dir {
                if st.phase != phase::IDLE && overlaps_answer::<F>(sk, st) {
                    st.overlaps = st.overlaps.saturating_add(1);
                    if st.overlaps >= OVERLAPS_TO_MULTIPLEXED {
                        // Requests overlap: no request/response boundary is
                        // visible without parsing the protocol. Say so, once.
                        st.phase = phase::OVERLAPPED;
                        let mux = if st.role == role::SERVER {
                            CountKind::MultiplexedServer
                        } else {
                            CountKind::MultiplexedClient
                        };
                        tcp_count(&tcp_key(Some(st), mux as u8, with_addr), 1);
                        return;
                    }
                }
                st.phase = req_dir;
                now = boundary_ns::<F>(sk, sent, st.t_start);
                st.t_start = now;
            }
        } else {
            if st.phase == req_dir && st.t_start != 0 {
                now = boundary_ns::<F>(sk, sent, st.t_start);
                if now >= st.t_start {
                    tcp_hist(st, kind, with_addr, now - st.t_start);
                }
                // The last boundary's time: the next one's cached clock
                // must not be older (see `boundary_ns`).
                st.t_start = now;
            }
            st.phase = dir;
        }
    }
    if now == 0 {
        // No boundary (more of a request or an answer, or a multiplexed
        // socket): a clock read is most of what this I/O would cost, so
        // whether an RTT sample is due is checked every
        // `RTT_CHECK_EVERY`th time only; a stream still gets its samples.
        st.between = st.between.wrapping_add(1);
        if !st.between.is_multiple_of(RTT_CHECK_EVERY) {
            return;
        }
        now = now_ns();
    }
    // One place that samples, so the verifier walks one copy of it.
    if now.wrapping_sub(st.rtt_sampled_ns) >= global(&RTT_SAMPLE_NS) {
        sample_rtt(sk, st, now);
    }
}

/// Whether a request starting now overlaps the previous answer: a client
/// whose last read left answer bytes unread (checked then, not now: by the
/// end of this write the answer to it may be in already), a server whose
/// answer is not all acknowledged (snd_una != write_seq). In strict
/// request/response the peer has consumed (and so acknowledged) the whole
/// answer before it sends the next request.
#[inline(always)]
fn overlaps_answer<F: TcpFields>(sk: u64, st: &SockState) -> bool {
    if st.role == role::SERVER {
        F::seq_differ(sk, seq::SND_UNA, seq::WRITE_SEQ)
    } else {
        st.unread != 0
    }
}

/// Count `n` per-socket events under the socket's owner, or under no
/// workload and port 0 when the socket is not tracked (or there is none).
/// `in_process`: the caller runs in the owner's process context.
#[inline(always)]
fn sock_event(sk: u64, kind: CountKind, n: u64, in_process: bool) {
    let st = if sk != 0 { socks::get(sk) } else { None };
    let key = match st {
        Some(st) => {
            // SAFETY: a valid value pointer for this run (see the module docs).
            let st = unsafe { &mut *st };
            if in_process {
                claim_owner(st);
            }
            tcp_key(Some(st), kind as u8, false)
        }
        None => tcp_key(None, kind as u8, false),
    };
    tcp_count(&key, n);
}

/// One retransmission of `skb` on `sk`, counted in segments.
#[inline(always)]
fn try_retransmit(sk: u64, skb: u64) {
    sock_event(sk, CountKind::Retransmit, skb_segs(skb), false);
}

/// Segments in a (retransmitted) TCP skb: skb_shinfo(skb)->gso_segs, which
/// TCP keeps at 1 for a single segment.
#[inline(always)]
fn skb_segs(skb: u64) -> u64 {
    let head = kread::<u64>(skb, global(&SKB_HEAD_OFF)).unwrap_or(0);
    let end = kread::<u32>(skb, global(&SKB_END_OFF)).unwrap_or(0);
    if head == 0 || end == 0 {
        return 1;
    }
    match kread::<u16>(head + end as u64, global(&SHINFO_GSO_SEGS_OFF)) {
        Some(n) if n > 0 => n as u64,
        _ => 1,
    }
}

//! TCP socket SLIs: the kernel/user contract for connect latency and errors,
//! request latency per port, RTT, retransmits, resets and listen drops.
//!
//! Sockets are tracked by their kernel address from the moment they start
//! connecting, are accepted, or start listening.

use crate::{SlotRef, COMM_LEN};

/// What a [`TcpKey`] in the histogram map measures. Histogram and counter
/// kinds are distinct types with disjoint numbers, so a key of one map can
/// never be read as the other's.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HistKind {
    /// SYN sent to established (`tcp.connect.duration`).
    Connect = 1,
    /// Server socket: first request byte read to first response byte written.
    ServerRequest = 2,
    /// Client socket: first request byte written to first response byte read.
    ClientRequest = 3,
    /// Smoothed RTT, sampled.
    Rtt = 4,
}

impl HistKind {
    pub const ALL: [HistKind; 4] = [
        HistKind::Connect,
        HistKind::ServerRequest,
        HistKind::ClientRequest,
        HistKind::Rtt,
    ];
    pub fn from_u8(k: u8) -> Option<HistKind> {
        Self::ALL.into_iter().find(|h| *h as u8 == k)
    }
}

/// What a [`TcpKey`] in the counter map counts.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountKind {
    /// A connect that failed; `code` is the errno (0: closed by the
    /// application before it completed).
    ConnectError = 16,
    Retransmit = 17,
    ResetSent = 18,
    ResetReceived = 19,
    /// Listen drops: read from the listener's counter, not a kernel map key.
    ListenDrop = 20,
    /// A server (client) connection whose requests overlapped: a request
    /// started while the previous answer was still unacknowledged (while the
    /// last read had left answer bytes unread).
    /// Its request latency is no longer measured.
    MultiplexedServer = 21,
    MultiplexedClient = 22,
}

impl CountKind {
    pub const ALL: [CountKind; 7] = [
        CountKind::ConnectError,
        CountKind::Retransmit,
        CountKind::ResetSent,
        CountKind::ResetReceived,
        CountKind::ListenDrop,
        CountKind::MultiplexedServer,
        CountKind::MultiplexedClient,
    ];
    pub fn from_u8(k: u8) -> Option<CountKind> {
        Self::ALL.into_iter().find(|c| *c as u8 == k)
    }
}

/// Role of a tracked socket.
pub mod role {
    pub const CLIENT: u8 = 1;
    pub const SERVER: u8 = 2;
}

/// Request/response phase of a tracked socket.
pub mod phase {
    pub const IDLE: u8 = 0;
    /// Bytes were read and nothing written since.
    pub const READ: u8 = 1;
    /// Bytes were written and nothing read since.
    pub const WRITTEN: u8 = 2;
    /// Requests overlapped (pipelining, multiplexing): not measured.
    pub const OVERLAPPED: u8 = 3;
}

/// The `tcp_sock` sequence fields the request logic compares, by their
/// index in `globals::TCP_SEQ_OFF` (offsets from BTF).
pub mod seq {
    /// Next byte expected from the peer.
    pub const RCV_NXT: usize = 0;
    /// Next byte the application reads: unread bytes when below `RCV_NXT`.
    pub const COPIED_SEQ: usize = 1;
    /// First byte sent and not acknowledged.
    pub const SND_UNA: usize = 2;
    /// Next byte the application writes.
    pub const WRITE_SEQ: usize = 3;
    /// Next byte to send: all written bytes are sent when equal to
    /// `WRITE_SEQ`.
    pub const SND_NXT: usize = 4;
    pub const COUNT: usize = 5;
}

/// Request starts that overlapped the previous answer before a connection
/// counts as multiplexed. One is forgiven: a TLS 1.3 client sends its
/// Finished while the server's session tickets are still unread.
pub const OVERLAPS_TO_MULTIPLEXED: u8 = 2;

/// Linux TCP states (include/net/tcp_states.h), stable ABI.
pub mod state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const CLOSE: i32 = 7;
    pub const LISTEN: i32 = 10;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Key of the TCP histogram and counter maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpKey {
    pub cgroup_id: u64,
    /// Process name (group leader's comm); zero when the socket's owner is
    /// unknown (e.g. a reset sent for a port nobody listens on).
    pub comm: [u8; COMM_LEN],
    /// Peer (server) address as IPv6, IPv4 as `::ffff:a.b.c.d`; all zero when
    /// the metric carries no address.
    pub addr: [u8; 16],
    /// Server port (host order): the peer's for client sockets, the local
    /// one for server sockets; 0 when unknown.
    pub port: u16,
    /// A [`HistKind`] in the histogram map, a [`CountKind`] in the counter map.
    pub kind: u8,
    pub _pad: u8,
    /// errno for `count_kind::CONNECT_ERROR`, else 0.
    pub code: u32,
}
const _: () = assert!(core::mem::size_of::<TcpKey>() == 48);

/// Per-socket state, keyed by the socket's kernel address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockState {
    /// Connect start (client, until established), then the time of the
    /// socket's last request boundary (the current request's start while
    /// one is in flight), in `bpf_ktime_get_ns` time.
    pub t_start: u64,
    /// When RTT was last sampled (0: never).
    pub rtt_sampled_ns: u64,
    /// Owner: cgroup and process name, from the connecting process or the
    /// first one to read or write an accepted socket.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// Peer address (client sockets), as in [`TcpKey::addr`].
    pub addr: [u8; 16],
    pub port: u16,
    pub role: u8,
    pub phase: u8,
    /// Request starts seen to overlap the previous answer.
    pub overlaps: u8,
    /// Client sockets: the last read left bytes unread (rcv_nxt !=
    /// copied_seq just after it).
    pub unread: u8,
    /// Reads and writes that were no request boundary, wrapping: every
    /// 64th checks whether an RTT sample is due (boundaries read the clock
    /// and check anyway).
    pub between: u8,
    pub _pad: u8,
    /// The slots of the socket's request and RTT series
    /// (`maps::TCP_LATENCY`), [`SlotRef::NONE`] until resolved; emptied
    /// when the owner, part of their keys, is filled in.
    pub req_slot: SlotRef,
    pub rtt_slot: SlotRef,
}
const _: () = assert!(core::mem::size_of::<SockState>() == 80);

impl SockState {
    /// A socket of `role` to peer `addr` and `port`, idle, with no owner
    /// yet and no slots.
    pub const fn new(role: u8, addr: [u8; 16], port: u16) -> SockState {
        SockState {
            t_start: 0,
            rtt_sampled_ns: 0,
            cgroup_id: 0,
            comm: [0; COMM_LEN],
            addr,
            port,
            role,
            phase: phase::IDLE,
            overlaps: 0,
            unread: 0,
            between: 0,
            _pad: 0,
            req_slot: SlotRef::NONE,
            rtt_slot: SlotRef::NONE,
        }
    }
}

/// A listening socket, keyed by its kernel address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenState {
    /// When it started listening: tells a new listener from an old one that
    /// had the same kernel address.
    pub since_ns: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The listener's `sk_drops` at the last poll (or at close).
    pub drops: u32,
    /// `sk_drops` when the kernel first saw it (listen, or the seeding of a
    /// listener older than the agent): drops before that are not new.
    pub base: u32,
    pub port: u16,
    /// 1 once the listener closed: `drops` is final, the agent deletes it.
    pub closed: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<ListenState>() == 48);

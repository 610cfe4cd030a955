//! The TCP program set: socket field offsets from BTF, attachment, and the
//! maps the agent reads. Listener drop counters live in the listening
//! socket itself; the agent asks the kernel for them once per interval by
//! running a small program per listener (BPF_PROG_TEST_RUN), since no
//! tracepoint fires when a full accept queue drops a SYN.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{HashMap, MapData},
    programs::{BtfTracePoint, Iter, RawTracePoint},
    Ebpf,
};
use syscope_common::{
    globals::{fd_off, SOCKIO_NR_WORDS},
    maps, names,
    tcp::{seq, ListenState, SockState, TcpKey},
};
use tracing::debug;

use super::{
    attach_btf_program,
    btf::{Btf, BtfError},
    error_chain,
    slots::SlotMap,
    ProbeError,
};
use crate::enrich::syscalls::{syscall_nr, Arch};

/// Minimum time between two RTT samples of one socket: RTT is read on the
/// send/recv path, at most this often per socket, so it costs nothing extra
/// on most calls.
pub const RTT_SAMPLE_NS: u64 = 1_000_000_000;

/// Offsets of the socket fields the programs read (see the ebpf globals).
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOffsets {
    pub family: u32,
    pub num: u32,
    pub dport: u32,
    pub daddr: u32,
    pub v6_daddr: u32,
    pub err: u32,
    pub drops: u32,
    pub srtt: u32,
    pub skb_head: u32,
    pub skb_end: u32,
    pub gso_segs: u32,
    /// The tcp_sock sequence fields, by `syscope_common::tcp::seq` index
    /// (globals::TCP_SEQ_OFF).
    pub seq: [u32; seq::COUNT],
    /// tcp_sock.tcp_clock_cache (globals::TCP_CLOCK_OFF).
    pub clock: u32,
    pub state: u32,
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SockOffsets, super::btf::BtfError> {
        // struct sock embeds struct sock_common (usually at 0; read anyway).
        let common = btf.member_offset("sock", "__sk_common")?;
        let c = |m| btf.member_offset("sock_common", m).map(|o| common + o);
        Ok(SockOffsets {
            family: c("skc_family")?,
            state: c("skc_state")?,
            num: c("skc_num")?,
            dport: c("skc_dport")?,
            daddr: c("skc_daddr")?,
            v6_daddr: c("skc_v6_daddr")?,
            err: btf.member_offset("sock", "sk_err")?,
            drops: btf.member_offset("sock", "sk_drops")?,
            srtt: btf.member_offset("tcp_sock", "srtt_us")?,
            skb_head: btf.member_offset("sk_buff", "head")?,
            skb_end: btf.member_offset("sk_buff", "end")?,
            gso_segs: btf.member_offset("skb_shared_info", "gso_segs")?,
            seq: {
                let mut off = [0; seq::COUNT];
                for (i, field) in [
                    (seq::RCV_NXT, "rcv_nxt"),
                    (seq::COPIED_SEQ, "copied_seq"),
                    (seq::SND_UNA, "snd_una"),
                    (seq::WRITE_SEQ, "write_seq"),
                    (seq::SND_NXT, "snd_nxt"),
                ] {
                    off[i] = btf.member_offset("tcp_sock", field)?;
                }
                off
            },
            clock: btf.member_offset("tcp_sock", "tcp_clock_cache")?,
        })
    }
}

/// Load-time constants of the syscall route (see the ebpf `sockio` module).
#[derive(Clone, Copy, Debug, Default)]
pub struct SockioSetup {
    pub recv_nrs: [u64; SOCKIO_NR_WORDS],
    pub send_nrs: [u64; SOCKIO_NR_WORDS],
    pub nr_recvfrom: u32,
    pub nr_recvmsg: u32,
    /// Offsets of syscall arguments 0..3 in `struct pt_regs`, valid at entry
    /// and at exit.
    pub regs_arg: [u32; 4],
    /// Offset of `args` in the raw_syscalls sys_enter record.
    pub tp_args: u32,
    pub fd: [u32; fd_off::COUNT],
}

/// Syscalls that move bytes on a socket, received or sent. sendfile's
/// output (its first argument) can be a socket; splice and io_uring are
/// not covered.
const RECV_SYSCALLS: [&str; 5] = ["read", "readv", "recvfrom", "recvmsg", "recvmmsg"];
const SEND_SYSCALLS: [&str; 6] = [
    "write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile",
];

impl SockioSetup {
    pub fn from_btf(btf: &Btf, arch: Arch, tp_args: u32) -> Result<SockioSetup, BtfError> {
        let bits = |names: &[&str]| {
            let mut w = [0u64; SOCKIO_NR_WORDS];
            for nr in names.iter().filter_map(|n| syscall_nr(arch, n)) {
                if let Some(word) = w.get_mut(nr as usize / 64) {
                    *word |= 1 << (nr % 64);
                }
            }
            w
        };
        let regs_arg = match arch {
            // The syscall ABI's argument registers (r10, not rcx, for the 4th).
            Arch::X86_64 | Arch::I386 => [
                btf.member_offset("pt_regs", "di")?,
                btf.member_offset("pt_regs", "si")?,
                btf.member_offset("pt_regs", "dx")?,
                btf.member_offset("pt_regs", "r10")?,
            ],
            // x0 holds the return value at exit; orig_x0 keeps argument 0.
            Arch::Aarch64 => {
                let r = btf.member_offset("pt_regs", "regs")?;
                [
                    btf.member_offset("pt_regs", "orig_x0")?,
                    r + 8,
                    r + 16,
                    r + 24,
                ]
            }
        };
        let mut fd = [0u32; fd_off::COUNT];
        fd[fd_off::TASK_FILES] = btf.member_offset("task_struct", "files")?;
        fd[fd_off::FILES_FDT] = btf.member_offset("files_struct", "fdt")?;
        fd[fd_off::FDT_MAX_FDS] = btf.member_offset("fdtable", "max_fds")?;
        fd[fd_off::FDT_FD] = btf.member_offset("fdtable", "fd")?;
        fd[fd_off::FILE_INODE] = btf.member_offset("file", "f_inode")?;
        fd[fd_off::INODE_MODE] = btf.member_offset("inode", "i_mode")?;
        fd[fd_off::FILE_PRIVATE] = btf.member_offset("file", "private_data")?;
        fd[fd_off::SOCKET_SK] = btf.member_offset("socket", "sk")?;
        Ok(SockioSetup {
            recv_nrs: bits(&RECV_SYSCALLS),
            send_nrs: bits(&SEND_SYSCALLS),
            nr_recvfrom: syscall_nr(arch, "recvfrom").unwrap_or(u32::MAX),
            nr_recvmsg: syscall_nr(arch, "recvmsg").unwrap_or(u32::MAX),
            regs_arg,
            tp_args,
            fd,
        })
    }
}

/// Where TCP request boundaries (and RTT samples) come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoRoute {
    /// tp_btf `sock_send_length` + `sock_recv_length` (Linux 6.3+): only
    /// socket I/O runs a program.
    SockTracepoints,
    /// The syscall programs, on read/write/send*/recv*/sendfile of socket
    /// fds (any kernel): every syscall runs them.
    Syscalls,
}

impl IoRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            IoRoute::SockTracepoints => "sock",
            IoRoute::Syscalls => "syscalls",
        }
    }

    /// The best route this kernel offers, unless one is forced.
    pub fn choose(btf: &Btf, force: Option<IoRoute>) -> IoRoute {
        let has = |(_, hook): (&str, &str)| btf.tracepoint_args(hook).is_some();
        match force {
            Some(r) => r,
            None if has(names::SOCK_SEND) && has(names::SOCK_RECV) => IoRoute::SockTracepoints,
            None => IoRoute::Syscalls,
        }
    }
}

/// What the TCP set attached: per optional hook, the variant or why not.
#[derive(Clone, Debug)]
pub struct TcpHooks {
    /// The socket tracepoints, when the route is `SockTracepoints`.
    pub sock_io: Result<(), String>,
    /// `tcp_retransmit_skb` with `err` (6.17+) or without.
    pub retransmit: Result<&'static str, String>,
    pub send_reset: Result<(), String>,
    pub receive_reset: Result<(), String>,
}

/// Attach the TCP programs and load the listener poll. Connection tracking
/// (`inet_sock_set_state`, `tcp_destroy_sock`) is required; every other
/// hook is attached on its own, so a kernel without one loses only what it
/// serves.
pub fn attach(ebpf: &mut Ebpf, kbtf: &Btf, route: IoRoute) -> Result<TcpHooks, String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    let mut done: Vec<&str> = vec![];
    // Destruction first: a socket tracked from the first state change is
    // then always forgotten, and counted out of socket storage's live count.
    for (prog, hook) in [names::TCP_DESTROY, names::TCP_STATE] {
        if let Err(e) = attach_btf_program(ebpf, &btf, prog, hook) {
            for p in done.iter().chain(std::iter::once(&prog)) {
                unload(ebpf, p);
            }
            return Err(e);
        }
        done.push(prog);
    }
    let optional = |ebpf: &mut Ebpf, (prog, hook): (&str, &str)| -> Result<(), String> {
        if kbtf.tracepoint_args(hook).is_none() {
            return Err(format!("this kernel has no tracepoint {hook}"));
        }
        attach_btf_program(ebpf, &btf, prog, hook).map(|_| ())
    };
    let sock_io = match route {
        IoRoute::SockTracepoints => optional(ebpf, names::SOCK_SEND).and_then(|()| {
            // Both or neither: sends alone would leave requests open.
            optional(ebpf, names::SOCK_RECV).inspect_err(|_| unload(ebpf, names::SOCK_SEND.0))
        }),
        IoRoute::Syscalls => Err("not used: the syscall route serves socket I/O".into()),
    };
    let send_reset = optional(ebpf, names::TCP_SEND_RESET);
    let receive_reset = optional(ebpf, names::TCP_RECEIVE_RESET);
    // The retransmit hook's arguments changed in 6.17: the kernel's BTF
    // says which form this one has.
    let (prog, hook) = names::TCP_RETRANSMIT;
    let retransmit = match kbtf.tracepoint_args(hook) {
        None => Err(format!("this kernel has no tracepoint {hook}")),
        Some(n) if n >= 3 => optional(ebpf, (prog, hook)).map(|()| "tcp_retransmit_skb (err)"),
        Some(_) => optional(ebpf, (names::TCP_RETRANSMIT_OLD, hook))
            .map(|()| "tcp_retransmit_skb (no err, before 6.17)"),
    };
    let poll: &mut RawTracePoint = ebpf
        .program_mut(names::LISTEN_POLL)
        .ok_or_else(|| format!("no program {}", names::LISTEN_POLL))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    poll.load()
        .map_err(|e| format!("load {}: {}", names::LISTEN_POLL, error_chain(&e)))?;
    Ok(TcpHooks {
        sock_io,
        retransmit,
        send_reset,
        receive_reset,
    })
}

fn unload(ebpf: &mut Ebpf, prog: &str) {
    if let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut BtfTracePoint>::try_from) {
        let _ = p.unload();
    }
}

/// Run the seeding iterator once: connections and listeners older than the
/// agent join the tracked ones (see ebpf/src/seed.rs).
pub fn seed(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    let prog: &mut Iter = ebpf
        .program_mut(names::SEED_TCP)
        .ok_or_else(|| format!("no program {}", names::SEED_TCP))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    prog.load("tcp", &btf)
        .map_err(|e| format!("load {}: {}", names::SEED_TCP, error_chain(&e)))?;
    let link = prog
        .attach()
        .and_then(|id| prog.take_link(id))
        .map_err(|e| format!("attach {}: {}", names::SEED_TCP, error_chain(&e)))?;
    // Reading the iterator's file runs it over every socket; it prints nothing.
    let mut f = link
        .into_file()
        .map_err(|e| format!("open {}: {e}", names::SEED_TCP))?;
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut sink)
        .map_err(|e| format!("run {}: {e}", names::SEED_TCP))?;
    let _ = prog.unload();
    Ok(())
}

/// The TCP maps userspace reads.
pub struct TcpMaps {
    /// Tracked sockets: only counted (a batch read, `probes::batch`). Empty
    /// when socket state is in socket storage (`sock_storage`).
    pub socks: HashMap<MapData, u64, SockState>,
    /// Socket state lives in socket storage (`globals::SOCK_STORE`): the
    /// kernel's stored and freed counters give the live count.
    pub sock_storage: bool,
    pub hist: SlotMap<TcpKey>,
    pub counts: HashMap<MapData, TcpKey, u64>,
    pub listeners: HashMap<MapData, u64, ListenState>,
}

impl TcpMaps {
    /// `hist` was taken at load, before any program could need a slot.
    pub fn take(
        ebpf: &mut Ebpf,
        sock_storage: bool,
        hist: SlotMap<TcpKey>,
    ) -> Result<TcpMaps, ProbeError> {
        fn map<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            id: usize,
        ) -> Result<HashMap<MapData, K, V>, ProbeError> {
            super::take_map(ebpf, &maps::MAPS[id])
        }
        Ok(TcpMaps {
            socks: map(ebpf, maps::SOCKETS)?,
            sock_storage,
            hist,
            counts: map(ebpf, maps::TCP_COUNTERS)?,
            listeners: map(ebpf, maps::LISTENERS)?,
        })
    }

    /// Run the poll program once per open listener.
    pub fn poll_listeners(&self, ebpf: &Ebpf) {
        let Some(Ok(poll)) = ebpf
            .program(names::LISTEN_POLL)
            .map(<&RawTracePoint>::try_from)
        else {
            return;
        };
        let Ok(fd) = poll.fd() else { return };
        let fd = fd.as_fd().as_raw_fd();
        let open: Vec<u64> = self
            .listeners
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, l)| l.closed == 0)
            .map(|(sk, _)| sk)
            .collect();
        for sk in open {
            if let Err(e) = test_run(fd, &[sk]) {
                debug!(error = %e, "listener poll failed");
            }
        }
    }
}

/// `bpf(BPF_PROG_TEST_RUN)` with `args` as the raw tracepoint arguments.
fn test_run(prog_fd: i32, args: &[u64]) -> std::io::Result<()> {
    // The leading fields of union bpf_attr's `test` member (uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        ctx_size_in: std::mem::size_of_val(args) as u32,
        ctx_in: args.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix and `args`
    // outlives the call; the kernel only reads ctx_in.
    unsafe { super::batch::sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_running_kernel() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: no kernel BTF");
            return;
        }
        let o = SockOffsets::from_btf(&Btf::from_file(path).unwrap()).unwrap();
        // Relations that hold on every kernel: distinct fields, the ports
        // next to each other in the same 32-bit word (skc_portpair).
        assert_eq!(o.num, o.dport + 2);
        assert!(o.err > o.family && o.srtt > o.err);
    }
}

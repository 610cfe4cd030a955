//! The TCP program set: socket field offsets from BTF, attachment, and the
//! maps the agent reads. Listener drop counters live in the listening
//! socket itself; the agent asks the kernel for them once per interval by
//! running a small program per listener (BPF_PROG_TEST_RUN), since no
//! tracepoint fires when a full accept queue drops a SYN.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{HashMap, MapData},
    programs::{BtfTracePoint, RawTracePoint},
    Ebpf,
};
use syscope_common::{
    maps, names,
    tcp::{ListenState, SockState, TcpKey},
    Histogram,
};
use tracing::debug;

use super::{btf::Btf, error_chain, ProbeError};

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
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SockOffsets, super::btf::BtfError> {
        // struct sock embeds struct sock_common (usually at 0; read anyway).
        let common = btf.member_offset("sock", "__sk_common")?;
        let c = |m| btf.member_offset("sock_common", m).map(|o| common + o);
        Ok(SockOffsets {
            family: c("skc_family")?,
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
        })
    }
}

/// Attach every TCP program, all or nothing, and load the listener poll.
pub fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    let mut done: Vec<&str> = vec![];
    let all = names::TCP_PROGRAMS
        .iter()
        .chain(std::iter::once(&names::TCP_DESTROY));
    for &(prog, hook) in all {
        if let Err(e) = attach_one(ebpf, &btf, prog, hook) {
            for p in done.iter().chain(std::iter::once(&prog)) {
                if let Some(Ok(p)) = ebpf.program_mut(p).map(<&mut BtfTracePoint>::try_from) {
                    let _ = p.unload();
                }
            }
            return Err(e);
        }
        done.push(prog);
    }
    // The retransmit hook's arguments changed across kernels: try the
    // current form, then the older one.
    let (prog, hook) = names::TCP_RETRANSMIT;
    if let Err(new) = attach_one(ebpf, &btf, prog, hook) {
        if let Err(old) = attach_one(ebpf, &btf, names::TCP_RETRANSMIT_OLD, hook) {
            for p in &done {
                if let Some(Ok(p)) = ebpf.program_mut(p).map(<&mut BtfTracePoint>::try_from) {
                    let _ = p.unload();
                }
            }
            return Err(format!("{new}; {old}"));
        }
    }
    let poll: &mut RawTracePoint = ebpf
        .program_mut(names::LISTEN_POLL)
        .ok_or_else(|| format!("no program {}", names::LISTEN_POLL))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    poll.load()
        .map_err(|e| format!("load {}: {}", names::LISTEN_POLL, error_chain(&e)))?;
    Ok(())
}

fn attach_one(ebpf: &mut Ebpf, btf: &aya::Btf, prog: &str, hook: &str) -> Result<(), String> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("no program {prog}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load(hook, btf)
        .map_err(|e| format!("load {prog}: {}", error_chain(&e)))?;
    p.attach()
        .map_err(|e| format!("attach {prog} to {hook}: {}", error_chain(&e)))?;
    Ok(())
}

/// The TCP maps userspace reads.
pub struct TcpMaps {
    /// Tracked sockets: only counted (a key walk, one syscall per entry).
    pub socks: HashMap<MapData, u64, SockState>,
    pub hist: HashMap<MapData, TcpKey, Histogram>,
    pub counts: HashMap<MapData, TcpKey, u64>,
    pub listeners: HashMap<MapData, u64, ListenState>,
}

impl TcpMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<TcpMaps, ProbeError> {
        fn map<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            id: usize,
        ) -> Result<HashMap<MapData, K, V>, ProbeError> {
            super::take_map(ebpf, &maps::MAPS[id])
        }
        Ok(TcpMaps {
            socks: map(ebpf, maps::SOCKETS)?,
            hist: map(ebpf, maps::TCP_LATENCY)?,
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
    let attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        ctx_size_in: std::mem::size_of_val(args) as u32,
        ctx_in: args.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix and `args`
    // outlives the call; the kernel only reads ctx_in.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &attr as *const TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

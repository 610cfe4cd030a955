//! Which hook serves each signal on this kernel, decided once at load: logged
//! at start, printed by `syscope check`, reported by the health endpoint and
//! the `syscope.signal.hook` self-metric. The signals are the metrics of the
//! catalogue (`aggregate::metrics`), so the list cannot drift from what is
//! exported.

use std::fmt::Write as _;

use tracing::{info, warn};

use super::{AttachMode, IoRoute, TcpHooks};
use crate::aggregate::metrics::Metric;

/// One signal (metric) and its hook, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalHook {
    pub metric: Metric,
    pub hook: Result<String, String>,
}

/// Every signal of the catalogue, in its order.
#[derive(Clone, Debug, Default)]
pub struct Signals(pub Vec<SignalHook>);

impl Signals {
    /// `mode`: the syscall programs' hook, if attached; `syscalls`: they
    /// record syscall SLIs; `route`: where TCP request boundaries come from;
    /// `tcp`: what the TCP set attached, or why it did not.
    pub fn new(
        mode: Option<AttachMode>,
        syscalls: bool,
        route: Option<IoRoute>,
        tcp: Result<&TcpHooks, &String>,
    ) -> Signals {
        let sys_hook = |m: AttachMode| match m {
            AttachMode::BtfTracepoint => "tp_btf/sys_enter + sys_exit",
            AttachMode::Tracepoint => "tracepoint/raw_syscalls/sys_enter + sys_exit",
        };
        let syscall = match (mode, syscalls) {
            (Some(m), true) => Ok(sys_hook(m).to_owned()),
            (_, false) => Err("off (not in --probes)".to_owned()),
            (None, true) => Err("the syscall programs did not attach".to_owned()),
        };
        let io = match (route, tcp) {
            (_, Err(e)) => Err(e.clone()),
            (Some(IoRoute::SockTracepoints), Ok(h)) => h
                .sock_io
                .clone()
                .map(|()| "tp_btf/sock_send_length + sock_recv_length".to_owned()),
            (Some(IoRoute::Syscalls), Ok(_)) => match mode {
                Some(m) => Ok(format!("socket I/O syscalls ({})", sys_hook(m))),
                None => Err("the syscall programs did not attach".to_owned()),
            },
            (None, Ok(_)) => Err("no route: file and socket fields not in kernel BTF".to_owned()),
        };
        let state = "tp_btf/inet_sock_set_state";
        let with = |base: &str| tcp.map(|_| base.to_owned()).map_err(Clone::clone);
        let hook = |m: Metric| -> Result<String, String> {
            match m {
                Metric::SyscallDuration | Metric::SyscallErrors => syscall.clone(),
                Metric::TcpConnectDuration | Metric::TcpConnectErrors => with(state),
                Metric::TcpServerRequestDuration
                | Metric::TcpClientRequestDuration
                | Metric::TcpServerMultiplexed
                | Metric::TcpClientMultiplexed => io.clone(),
                // Sampled at connect and, at most once a second, on I/O.
                Metric::TcpRtt => match &io {
                    Ok(_) => Ok(format!("srtt_us read at {state} and on socket I/O")),
                    Err(_) => with(&format!("srtt_us read at {state} only")),
                },
                Metric::TcpRetransmits => tcp
                    .map_err(Clone::clone)
                    .and_then(|h| h.retransmit.clone())
                    .map(|v| format!("tp_btf/{v}")),
                Metric::TcpResets => match tcp {
                    Err(e) => Err(e.clone()),
                    Ok(h) => match (&h.send_reset, &h.receive_reset) {
                        (Ok(()), Ok(())) => Ok("tp_btf/tcp_send_reset + tcp_receive_reset".into()),
                        (Ok(()), Err(e)) => Ok(format!("tp_btf/tcp_send_reset only ({e})")),
                        (Err(e), Ok(())) => Ok(format!("tp_btf/tcp_receive_reset only ({e})")),
                        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
                    },
                },
                Metric::TcpListenDrops => {
                    with(&format!("{state} + sk_drops read by BPF_PROG_TEST_RUN"))
                }
            }
        };
        Signals(
            Metric::all()
                .map(|metric| SignalHook {
                    metric,
                    hook: hook(metric),
                })
                .collect(),
        )
    }

    /// One log line per signal: which variant attached, or why none did.
    pub fn log(&self) {
        for s in &self.0 {
            match &s.hook {
                Ok(h) => info!(signal = s.metric.spec().name, hook = %h, "signal"),
                Err(e) if e.starts_with("off") => {}
                Err(e) => warn!(signal = s.metric.spec().name, reason = %e, "signal unavailable"),
            }
        }
    }

    /// `{"syscall.duration":{"hook":"..."},"tcp.rtt":{"unavailable":"..."},...}`
    pub fn json(&self) -> String {
        let mut s = String::from("{");
        for (i, sig) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let (k, v) = match &sig.hook {
                Ok(h) => ("hook", h),
                Err(e) => ("unavailable", e),
            };
            let _ = write!(
                s,
                "{}:{{{}:{}}}",
                json_str(sig.metric.spec().name),
                json_str(k),
                json_str(v)
            );
        }
        s.push('}');
        s
    }

    /// Aligned `signal  hook` lines for people.
    pub fn table(&self) -> String {
        let w = self
            .0
            .iter()
            .map(|s| s.metric.spec().name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for s in &self.0 {
            let text = match &s.hook {
                Ok(h) => h.clone(),
                Err(e) => format!("none: {e}"),
            };
            let _ = writeln!(out, "  {:w$}  {text}", s.metric.spec().name);
        }
        out
    }

    pub fn served(&self) -> impl Iterator<Item = &SignalHook> {
        self.0.iter().filter(|s| s.hook.is_ok())
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> TcpHooks {
        TcpHooks {
            sock_io: Err("not used".into()),
            retransmit: Ok("tcp_retransmit_skb (no err, before 6.17)"),
            send_reset: Ok(()),
            receive_reset: Err("this kernel has no tracepoint tcp_receive_reset".into()),
        }
    }

    #[test]
    fn every_metric_has_a_line_and_the_route_decides_request_latency() {
        let h = hooks();
        let s = Signals::new(
            Some(AttachMode::BtfTracepoint),
            false,
            Some(IoRoute::Syscalls),
            Ok(&h),
        );
        assert_eq!(s.0.len(), Metric::COUNT);
        let get = |m: Metric| s.0.iter().find(|x| x.metric == m).unwrap().hook.clone();
        assert!(get(Metric::SyscallDuration).unwrap_err().starts_with("off"));
        assert!(get(Metric::TcpServerRequestDuration)
            .unwrap()
            .starts_with("socket I/O syscalls"));
        assert_eq!(
            get(Metric::TcpRetransmits).unwrap(),
            "tp_btf/tcp_retransmit_skb (no err, before 6.17)"
        );
        assert!(get(Metric::TcpResets).unwrap().contains("only"));
        let json = s.json();
        assert!(
            json.starts_with("{\"syscall.duration\":{\"unavailable\":"),
            "{json}"
        );
    }

    #[test]
    fn tcp_failure_explains_every_tcp_signal() {
        let e = "load tcp_state_btf: denied".to_owned();
        let s = Signals::new(Some(AttachMode::Tracepoint), true, None, Err(&e));
        for x in &s.0 {
            if x.metric.spec().name.starts_with("tcp.") {
                assert_eq!(x.hook.as_ref().unwrap_err(), &e, "{:?}", x.metric);
            } else {
                assert!(x.hook.as_ref().unwrap().starts_with("tracepoint/"));
            }
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

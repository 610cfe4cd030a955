//! `syscope check`: the preflight. For this machine and configuration: the
//! kernel, BTF, capabilities present and missing, how BPF memory is
//! accounted, the memory the kernel maps will take, and, by really loading
//! and attaching the programs (then detaching them), which hook serves each
//! signal or why none can. Exit status 0 when every requested probe set
//! runs, 1 when one cannot.

use std::fmt::Write as _;

use syscope_common::maps;

use crate::{
    config::Config,
    probes::{self, privilege, signals::json_str, IoRoute, LoadOptions, Signals},
};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What the preflight found.
pub struct Report {
    pub kernel: String,
    pub arch: &'static str,
    pub btf: Option<u64>,
    pub caps: Option<u64>,
    pub missing_caps: Vec<&'static str>,
    /// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    pub memlock_accounting: bool,
    pub memlock_limit: Option<u64>,
    /// (label, entries, bytes) of the maps the requested sets use.
    pub maps: Vec<(&'static str, u32, u64)>,
    pub syscalls: SetResult,
    pub tcp: SetResult,
    pub signals: Signals,
    /// Why loading failed, if it did.
    pub error: Option<String>,
}

/// A probe set: requested, and whether it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetResult {
    Off,
    Runs,
    /// Syscall SLIs on demand: loaded, attached only while selected.
    OnDemand,
    Fails,
}

impl SetResult {
    fn as_str(self) -> &'static str {
        match self {
            SetResult::Off => "off",
            SetResult::Runs => "runs",
            SetResult::OnDemand => {
                "on demand (loaded and verified; attached while a workload is selected)"
            }
            SetResult::Fails => "cannot run",
        }
    }
}

impl Report {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.syscalls != SetResult::Fails && self.tcp != SetResult::Fails
    }
}

/// Run the preflight: really load and attach with `cfg`'s probe sets and map
/// sizes, then detach.
pub fn run(cfg: &Config, force_io: Option<IoRoute>) -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let caps = privilege::effective_caps();
    let missing_caps = caps.map(privilege::missing_caps).unwrap_or_default();
    let sets = |s: maps::ProbeSet| match s {
        maps::ProbeSet::Syscalls => cfg.probes.syscalls,
        maps::ProbeSet::Tcp => cfg.probes.tcp,
    };
    let map_list = maps::MAPS
        .iter()
        .filter(|m| sets(m.set))
        .map(|m| {
            let n = cfg.limits.kernel_maps[m.id];
            (m.label, n, m.kernel_bytes(n))
        })
        .collect();
    let mut r = Report {
        kernel: kernel.clone(),
        arch: std::env::consts::ARCH,
        btf: std::fs::metadata(VMLINUX_BTF).ok().map(|m| m.len()),
        caps,
        missing_caps,
        memlock_accounting: !privilege::charges_bpf_to_memcg(&kernel),
        memlock_limit: memlock_limit(),
        maps: map_list,
        syscalls: SetResult::Off,
        tcp: SetResult::Off,
        signals: Signals::default(),
        error: None,
    };
    let loaded = probes::load(&LoadOptions {
        kernel_maps: cfg.limits.kernel_maps,
        force_mode: None,
        bench: None,
        lru_threads: false,
        syscalls: cfg.probes.syscalls,
        on_demand: crate::app::on_demand(cfg),
        tcp: cfg.probes.tcp,
        force_io,
        thresholds: crate::slo::definition::thresholds(&cfg.slos),
    });
    match loaded {
        Ok(mut p) => {
            let on_demand = crate::app::on_demand(cfg);
            r.syscalls = match (cfg.probes.syscalls || on_demand, p.mode.is_some()) {
                (false, _) => SetResult::Off,
                (true, true) if on_demand => SetResult::OnDemand,
                (true, true) => SetResult::Runs,
                (true, false) => SetResult::Fails,
            };
            r.tcp = match (cfg.probes.tcp, p.tcp.is_some()) {
                (false, _) => SetResult::Off,
                (true, true) => SetResult::Runs,
                (true, false) => SetResult::Fails,
            };
            r.signals = p.signals.clone();
            // The maps as loaded: the TCP syscall route also uses `threads`.
            r.maps = maps::MAPS
                .iter()
                .filter(|m| p.map_sizes.0[m.id] > 1)
                .map(|m| {
                    let n = p.map_sizes.0[m.id];
                    (m.label, n, m.kernel_bytes(n))
                })
                .collect();
            p.detach();
        }
        Err(e) => {
            r.error = Some(probes::error_chain(&e));
            let fails = |on| if on { SetResult::Fails } else { SetResult::Off };
            r.syscalls = fails(cfg.probes.syscalls);
            r.tcp = fails(cfg.probes.tcp);
        }
    }
    r
}

fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / 1048576.0)
}

impl Report {
    fn map_bytes(&self) -> u64 {
        self.maps.iter().map(|m| m.2).sum()
    }

    fn memlock_text(&self) -> String {
        let limit = self.memlock_limit.map_or("unlimited".into(), mib);
        if self.memlock_accounting {
            format!(
                "charged to RLIMIT_MEMLOCK (kernel before 5.11): limit {limit}, the maps need {} \
                 (the agent raises the limit when it may)",
                mib(self.map_bytes())
            )
        } else {
            format!("charged to the memory cgroup (5.11+); RLIMIT_MEMLOCK {limit} is not consulted")
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "kernel        Linux {} ({})", self.kernel, self.arch);
        let _ = writeln!(
            s,
            "BTF           {}",
            match self.btf {
                Some(n) => format!("{VMLINUX_BTF} ({})", mib(n)),
                None => format!("missing: no {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF=y needed)"),
            }
        );
        let _ = writeln!(
            s,
            "capabilities  {}",
            match (self.caps, self.missing_caps.is_empty()) {
                (None, _) => "unknown (/proc/self/status unreadable)".to_owned(),
                (Some(c), true) => format!("CAP_BPF and CAP_PERFMON present (effective {c:#x})"),
                (Some(c), false) => format!(
                    "missing {} (effective {c:#x}): run as root or grant CAP_BPF and CAP_PERFMON",
                    self.missing_caps.join(", ")
                ),
            }
        );
        let _ = writeln!(s, "BPF memory    {}", self.memlock_text());
        let _ = writeln!(s, "kernel maps   {} in all", mib(self.map_bytes()));
        for (label, n, b) in &self.maps {
            let _ = writeln!(s, "  {label:14} {n:>8} entries  {:>10}", mib(*b));
        }
        let _ = writeln!(
            s,
            "probe sets    syscalls: {}, tcp: {}",
            self.syscalls.as_str(),
            self.tcp.as_str()
        );
        if !self.signals.0.is_empty() {
            let _ = writeln!(s, "signals");
            s.push_str(&self.signals.table());
        }
        match &self.error {
            Some(e) => {
                let _ = writeln!(s, "result        FAILED: {e}");
            }
            None if self.ok() => {
                let _ = writeln!(s, "result        ok");
            }
            None => {
                let _ = writeln!(s, "result        FAILED: a requested probe set cannot run");
            }
        }
        s
    }

    pub fn json(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("null".into(), |n| n.to_string());
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"kernel\":{},\"arch\":{},\"btf\":{{\"path\":{},\"present\":{},\"bytes\":{}}}",
            json_str(&self.kernel),
            json_str(self.arch),
            json_str(VMLINUX_BTF),
            self.btf.is_some(),
            opt(self.btf)
        );
        let missing: Vec<String> = self.missing_caps.iter().map(|c| json_str(c)).collect();
        let _ = write!(
            s,
            ",\"capabilities\":{{\"effective\":{},\"missing\":[{}]}}",
            self.caps
                .map_or("null".into(), |c| json_str(&format!("{c:#x}"))),
            missing.join(",")
        );
        let _ = write!(
            s,
            ",\"bpf_memory\":{{\"accounting\":{},\"memlock_limit_bytes\":{}}}",
            json_str(if self.memlock_accounting {
                "rlimit_memlock"
            } else {
                "memcg"
            }),
            opt(self.memlock_limit)
        );
        let maps: Vec<String> = self
            .maps
            .iter()
            .map(|(l, n, b)| format!("{}:{{\"entries\":{n},\"bytes\":{b}}}", json_str(l)))
            .collect();
        let _ = write!(
            s,
            ",\"kernel_maps\":{{\"total_bytes\":{},\"maps\":{{{}}}}}",
            self.map_bytes(),
            maps.join(",")
        );
        let _ = write!(
            s,
            ",\"probe_sets\":{{\"syscalls\":{},\"tcp\":{}}}",
            json_str(self.syscalls.as_str()),
            json_str(self.tcp.as_str())
        );
        let _ = write!(s, ",\"signals\":{}", self.signals.json());
        let _ = write!(
            s,
            ",\"ok\":{},\"error\":{}}}",
            self.ok(),
            self.error.as_deref().map_or("null".into(), json_str)
        );
        s
    }
}

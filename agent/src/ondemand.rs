//! Which workloads have their syscalls measured when the syscall set is not
//! on for every process (the default): decided once per interval, written
//! to the kernel by `probes::Probes::select`.
//!
//! Selected, as long as they are configured or burning:
//! - the workloads of `syscall_workloads` (each `attribute=value` alone);
//! - the workloads of every SLO on a syscall metric (its SLI needs them);
//! - for `slo_detail` after a page-level burn starts (renewed while it
//!   burns), the workloads of the burning SLO: its matchers and the
//!   processes behind its series, so the diagnosis has syscall detail.
//!
//! A process name is matched in the kernel (its first 15 bytes, as the
//! kernel keeps it); container, pod and unit attributes select the cgroups
//! whose identity matches, so a selector that names both selects the whole
//! cgroup. A selection with no attribute at all (an SLO over the whole
//! node) selects every thread.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use syscope_common::COMM_LEN;

use crate::{
    aggregate::{Aggregator, Attr, Attrs, Metric},
    config::ondemand::OnDemandConfig,
    enrich::cgroup::CgroupResolver,
    probes::{Probes, SelectOutcome},
    slo::engine::{matches, BurnChange, Tracked},
};

/// Process names a burning SLO's detail selects at most; past it, every
/// thread is (an SLO whose series come from that many programs is a
/// node-wide one).
pub const MAX_OWNER_NAMES: usize = 64;

/// Intervals of syscall detail before a burn's diagnosis is given again.
pub const DETAIL_INTERVALS: u32 = 3;

/// A burning SLO's detail.
#[derive(Debug)]
struct Burning {
    until: Instant,
    /// Process names behind its series at the burn's start.
    owners: BTreeSet<String>,
    /// Intervals left before its diagnosis is due again; `None`: given.
    due_in: Option<u32>,
}

/// The selection, kept across intervals.
#[derive(Debug)]
pub struct OnDemand {
    cfg: OnDemandConfig,
    burning: BTreeMap<usize, Burning>,
}

impl OnDemand {
    pub fn new(cfg: &OnDemandConfig) -> Self {
        OnDemand {
            cfg: cfg.clone(),
            burning: BTreeMap::new(),
        }
    }

    /// Follow this interval's burn changes: a burn that starts selects its
    /// SLO's workloads for `slo_detail`; a burn still paging renews it.
    pub fn observe(
        &mut self,
        changes: &[BurnChange],
        slos: &[Tracked],
        agg: &Aggregator,
        now: Instant,
    ) {
        if self.cfg.slo_detail.is_zero() {
            return;
        }
        for c in changes.iter().filter(|c| c.started && !c.detail) {
            let s = &slos[c.slo];
            self.burning.insert(
                c.slo,
                Burning {
                    until: now + self.cfg.slo_detail,
                    owners: owners(s, agg),
                    // Syscall SLOs are measured already: their first
                    // diagnosis had the detail.
                    due_in: (!on_syscalls(s)).then_some(DETAIL_INTERVALS),
                },
            );
        }
        for (i, b) in &mut self.burning {
            if !slos[*i].status.paging.is_empty() {
                b.until = b.until.max(now + self.cfg.slo_detail);
            }
        }
        self.burning.retain(|_, b| b.until > now);
    }

    /// The SLOs whose burn diagnosis is due again now that their
    /// workloads' syscalls have been measured for [`DETAIL_INTERVALS`].
    pub fn detail_due(&mut self, slos: &[Tracked]) -> Vec<BurnChange> {
        let mut out = vec![];
        for (i, b) in &mut self.burning {
            if let Some(n) = b.due_in.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    b.due_in = None;
                    if !slos[*i].status.paging.is_empty() {
                        out.push(BurnChange {
                            slo: *i,
                            started: true,
                            detail: true,
                            status: slos[*i].status.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Write what is selected now into the kernel (and attach or detach
    /// the syscall programs with it).
    pub fn apply(
        &self,
        probes: &mut Probes,
        cgroups: &CgroupResolver,
        slos: &[Tracked],
    ) -> Result<SelectOutcome, String> {
        let mut sel = Wanted::default();
        for w in &self.cfg.workloads {
            sel.add(std::slice::from_ref(w), cgroups);
        }
        for s in slos.iter().filter(|s| on_syscalls(s)) {
            sel.add(&s.def.matchers, cgroups);
        }
        for (i, b) in &self.burning {
            let s = &slos[*i];
            let identity: Vec<_> = s
                .def
                .matchers
                .iter()
                .filter(|(a, _)| *a != Attr::ExecutableName && is_identity(*a))
                .cloned()
                .collect();
            if !identity.is_empty() {
                sel.add(&identity, cgroups);
            }
            if b.owners.len() > MAX_OWNER_NAMES
                || (b.owners.is_empty() && s.def.matchers.is_empty())
            {
                sel.all = true;
            }
            for name in &b.owners {
                sel.names.insert(comm_key(name));
            }
        }
        probes.select(&sel.cgroups, &sel.names, sel.all)
    }

    /// Whether anything can ever be selected: without, the syscall programs
    /// are not even loaded.
    pub fn possible(cfg: &OnDemandConfig, slos: &[crate::slo::Slo]) -> bool {
        !cfg.workloads.is_empty()
            || slos
                .iter()
                .any(|s| s.metrics().iter().any(|m| is_syscall(*m)))
            || (!slos.is_empty() && !cfg.slo_detail.is_zero())
    }
}

#[derive(Default)]
struct Wanted {
    cgroups: BTreeSet<u64>,
    names: BTreeSet<[u8; COMM_LEN]>,
    all: bool,
}

impl Wanted {
    /// One selector: all of `matchers` at once.
    fn add(&mut self, matchers: &[(Attr, String)], cgroups: &CgroupResolver) {
        let identity: Vec<&(Attr, String)> =
            matchers.iter().filter(|(a, _)| is_identity(*a)).collect();
        if identity.is_empty() {
            match matchers.iter().find(|(a, _)| *a == Attr::ExecutableName) {
                Some((_, name)) => {
                    self.names.insert(comm_key(name));
                }
                // Nothing to tell workloads apart (other attributes, such
                // as a port, are not a workload's): every thread.
                None => self.all = true,
            }
            return;
        }
        for (id, info) in cgroups.live() {
            let attrs = Attrs {
                identity: Some(info.identity.clone()),
                ..Attrs::default()
            };
            if identity
                .iter()
                .all(|(a, v)| attrs.value(*a).is_some_and(|x| x == v.as_str()))
            {
                self.cgroups.insert(id);
            }
        }
    }
}

fn is_identity(a: Attr) -> bool {
    crate::aggregate::metrics::IDENTITY.contains(&a)
}

fn is_syscall(m: Metric) -> bool {
    matches!(m, Metric::SyscallDuration | Metric::SyscallErrors)
}

fn on_syscalls(s: &Tracked) -> bool {
    s.def.metrics().iter().any(|m| is_syscall(*m))
}

/// The kernel's form of a process name: its first 15 bytes, NUL padded.
pub fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut k = [0u8; COMM_LEN];
    let b = name.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// The process names behind `s`'s series this interval (or ever, if none
/// moved this interval).
fn owners(s: &Tracked, agg: &Aggregator) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in s.def.metrics() {
        let mut add = |a: &Attrs| {
            if matches(&s.def, a) {
                if let Some(e) = &a.exe {
                    out.insert(e.to_string());
                }
            }
        };
        match m.spec().instrument {
            crate::aggregate::metrics::Instrument::Histogram => {
                agg.hist(m).series.keys().for_each(&mut add)
            }
            crate::aggregate::metrics::Instrument::Counter => {
                agg.counter(m).series.keys().for_each(&mut add)
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_the_kernels_15_bytes() {
        assert_eq!(&comm_key("redis-server")[..13], b"redis-server\0");
        let k = comm_key("a-very-long-process-name");
        assert_eq!(&k[..15], b"a-very-long-pro");
        assert_eq!(k[15], 0);
    }
}

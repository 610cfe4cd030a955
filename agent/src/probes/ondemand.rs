//! On-demand syscall SLIs: the syscall programs attach only while some
//! workload is selected, and measure only the selected threads.
//!
//! The agent writes the selection (cgroup ids and process names) into two
//! kernel maps and moves the selection epoch; each thread judges itself
//! again at its next syscall against the new epoch and caches the answer
//! (`ThreadState::select`), so a thread that is not selected pays the hooks
//! and a thread lookup at each (no clock read: the exit reads it after the
//! lookup, for threads it measures), and nothing at all while no workload
//! is selected (the programs are detached). Where the syscall programs
//! also carry the TCP request route (kernels before 6.3), every thread's
//! syscalls are still stamped.

use std::collections::BTreeSet;

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint, TracePoint,
    },
    Ebpf,
};
use syscope_common::{maps, names, COMM_LEN};
use tracing::warn;

use super::{error_chain, take_map, AttachMode, ProbeError};

/// The enter and exit programs' links, by program name.
pub enum LinkIds {
    None,
    Btf(Vec<(String, BtfTracePointLinkId)>),
    Tp(Vec<(String, TracePointLinkId)>),
}

/// The syscall programs' enter and exit links: detached while nothing is
/// selected, attached again (already loaded and verified) when something is.
pub struct SyscallLinks {
    mode: AttachMode,
    ids: LinkIds,
    pub attached: bool,
}

impl SyscallLinks {
    pub fn attached(mode: AttachMode, ids: LinkIds) -> Self {
        SyscallLinks {
            mode,
            ids,
            attached: true,
        }
    }

    /// Attach (`on`) or detach the enter and exit programs.
    pub fn set(&mut self, ebpf: &mut Ebpf, on: bool) -> Result<(), String> {
        if self.attached == on {
            return Ok(());
        }
        let progs = match self.mode {
            AttachMode::BtfTracepoint => [names::BTF_ENTER, names::BTF_EXIT],
            AttachMode::Tracepoint => [names::TP_ENTER, names::TP_EXIT],
        };
        let hooks = ["sys_enter", "sys_exit"];
        match (&mut self.ids, on) {
            (LinkIds::Btf(ids), false) => {
                for (prog, id) in ids.drain(..) {
                    let p: &mut BtfTracePoint = program(ebpf, &prog)?;
                    p.detach(id)
                        .map_err(|e| format!("detach {prog}: {}", error_chain(&e)))?;
                }
            }
            (LinkIds::Tp(ids), false) => {
                for (prog, id) in ids.drain(..) {
                    let p: &mut TracePoint = program(ebpf, &prog)?;
                    p.detach(id)
                        .map_err(|e| format!("detach {prog}: {}", error_chain(&e)))?;
                }
            }
            (ids, true) => {
                *ids = match self.mode {
                    AttachMode::BtfTracepoint => {
                        let mut v = vec![];
                        for prog in progs {
                            let p: &mut BtfTracePoint = program(ebpf, prog)?;
                            let id = p
                                .attach()
                                .map_err(|e| format!("attach {prog}: {}", error_chain(&e)))?;
                            v.push((prog.to_owned(), id));
                        }
                        LinkIds::Btf(v)
                    }
                    AttachMode::Tracepoint => {
                        let mut v = vec![];
                        for (prog, hook) in progs.into_iter().zip(hooks) {
                            let p: &mut TracePoint = program(ebpf, prog)?;
                            let id = p
                                .attach("raw_syscalls", hook)
                                .map_err(|e| format!("attach {prog}: {}", error_chain(&e)))?;
                            v.push((prog.to_owned(), id));
                        }
                        LinkIds::Tp(v)
                    }
                };
            }
            (LinkIds::None, false) => {}
        }
        self.attached = on;
        Ok(())
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// What a selection came to in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelectOutcome {
    /// cgroups and process names selected (in the kernel maps).
    pub cgroups: usize,
    pub names: usize,
    /// Selected but not written: the map was full.
    pub turned_away: u64,
}

/// The selection maps and what they hold.
pub struct Selection {
    control: Array<MapData, u32>,
    cgroup_map: HashMap<MapData, u64, u8>,
    name_map: HashMap<MapData, [u8; COMM_LEN], u8>,
    cgroups: BTreeSet<u64>,
    names: BTreeSet<[u8; COMM_LEN]>,
    all: bool,
    epoch: u32,
}

impl Selection {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let control = ebpf
            .take_map(names::SELECTION_MAP)
            .ok_or(ProbeError::Missing(names::SELECTION_MAP))
            .and_then(|m| {
                Array::try_from(m).map_err(|source| ProbeError::Map {
                    name: "selection",
                    source,
                })
            })?;
        let mut s = Selection {
            control,
            cgroup_map: take_map(ebpf, &maps::MAPS[maps::SELECTED_CGROUPS])?,
            name_map: take_map(ebpf, &maps::MAPS[maps::SELECTED_NAMES])?,
            cgroups: BTreeSet::new(),
            names: BTreeSet::new(),
            all: false,
            epoch: 0,
        };
        // Epoch 0 is "never judged" in a thread's cache: start at 1.
        s.bump();
        Ok(s)
    }

    /// Make the kernel's selection `cgroups`, `names` and `all`.
    pub fn write(
        &mut self,
        cgroups: &BTreeSet<u64>,
        names: &BTreeSet<[u8; COMM_LEN]>,
        all: bool,
    ) -> SelectOutcome {
        let mut changed = false;
        let mut turned_away = 0;
        for gone in self
            .cgroups
            .difference(cgroups)
            .copied()
            .collect::<Vec<_>>()
        {
            let _ = self.cgroup_map.remove(&gone);
            self.cgroups.remove(&gone);
            changed = true;
        }
        for new in cgroups.difference(&self.cgroups.clone()) {
            if self.cgroup_map.insert(new, 1, 0).is_ok() {
                self.cgroups.insert(*new);
                changed = true;
            } else {
                turned_away += 1;
            }
        }
        for gone in self.names.difference(names).copied().collect::<Vec<_>>() {
            let _ = self.name_map.remove(&gone);
            self.names.remove(&gone);
            changed = true;
        }
        for new in names.difference(&self.names.clone()) {
            if self.name_map.insert(new, 1, 0).is_ok() {
                self.names.insert(*new);
                changed = true;
            } else {
                turned_away += 1;
            }
        }
        if all != self.all {
            if let Err(e) = self.control.set(names::SELECTION_ALL, all as u32, 0) {
                warn!(error = %e, "writing the on-demand selection");
            }
            self.all = all;
            changed = true;
        }
        if changed {
            self.bump();
        }
        if turned_away > 0 {
            warn!(
                turned_away,
                "on-demand syscall selection does not fit its kernel maps; raise \
                 limits.kernel_maps.selected_cgroups or selected_names"
            );
        }
        SelectOutcome {
            cgroups: self.cgroups.len(),
            names: self.names.len(),
            turned_away,
        }
    }

    /// Every thread judges itself again at its next syscall.
    fn bump(&mut self) {
        // The kernel keeps `epoch << 1` in 32 bits.
        self.epoch = (self.epoch % (u32::MAX >> 1)) + 1;
        if let Err(e) = self.control.set(names::SELECTION_EPOCH, self.epoch, 0) {
            warn!(error = %e, "writing the on-demand selection epoch");
        }
    }
}

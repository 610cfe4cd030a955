//! On-demand syscall SLIs: which workloads' syscalls are measured when the
//! `syscalls` probe set is not on for every process (`syscall_workloads`),
//! and for how long a burning SLO's workloads are (`slo_detail`).

use std::time::Duration;

use super::env::{self, Vars};
use super::layer::{Bounds, Setting};
use super::settings::Parser;
use super::{invalid, ConfigError};
use crate::aggregate::metrics::{Attr, IDENTITY};

/// Syscall SLIs beyond the default probe sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDemandConfig {
    /// Workloads whose syscalls are always measured: each `attribute =
    /// value` selects on its own (a union).
    pub workloads: Vec<(Attr, String)>,
    /// How long a burning SLO's workloads have their syscalls measured
    /// after its burn starts (renewed while it burns); zero: never.
    pub slo_detail: Duration,
}

pub const DEFAULT_SLO_DETAIL: Duration = Duration::from_secs(15 * 60);

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            workloads: Vec::new(),
            slo_detail: DEFAULT_SLO_DETAIL,
        }
    }
}

/// The attributes a selection can name: the process name and the identity
/// set (a process name is matched in the kernel, the others by cgroup).
pub fn selectable() -> impl Iterator<Item = Attr> {
    std::iter::once(Attr::ExecutableName).chain(IDENTITY)
}

/// `attribute=value,...` (the file's list is joined with commas).
fn workloads(key: &str, raw: &str) -> Result<Vec<(Attr, String)>, ConfigError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(invalid(
                key,
                format!("expected attribute=value, got {part:?}"),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        let Some(attr) = selectable().find(|a| a.key() == k) else {
            let keys: Vec<&str> = selectable().map(Attr::key).collect();
            return Err(invalid(
                key,
                format!("unknown attribute {k:?}; one of {}", keys.join(", ")),
            ));
        };
        if v.is_empty() || v.len() > 1024 {
            return Err(invalid(key, format!("{k}: expected a non-empty value")));
        }
        out.push((attr, v.to_owned()));
    }
    Ok(out)
}

pub(super) const SYSCALL_WORKLOADS: Setting<Parser<Vec<(Attr, String)>>> = Setting {
    flag: Some("--syscall-workloads"),
    env: &[env::SYSCALL_WORKLOADS],
    key: "syscall_workloads",
    accepts: workloads,
};

pub(super) const SLO_DETAIL: Setting<Bounds<Duration>> = Setting {
    flag: Some("--slo-detail"),
    env: &[env::SLO_DETAIL],
    key: "slo_detail",
    accepts: Bounds {
        min: Duration::ZERO,
        max: Duration::from_secs(24 * 3600),
    },
};

pub(super) fn resolve(
    flag_workloads: Option<&str>,
    flag_detail: Option<&str>,
    vars: &Vars<'_>,
    file_workloads: Option<Vec<String>>,
    file_detail: Option<String>,
) -> Result<OnDemandConfig, ConfigError> {
    Ok(OnDemandConfig {
        workloads: SYSCALL_WORKLOADS
            .resolve(flag_workloads, vars, file_workloads.map(|l| l.join(",")))?
            .unwrap_or_default(),
        slo_detail: SLO_DETAIL
            .resolve(flag_detail, vars, file_detail)?
            .unwrap_or(DEFAULT_SLO_DETAIL),
    })
}

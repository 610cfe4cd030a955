//! The `[identity]` section (where names come from, how many cgroups are
//! kept and for how long) and the live table's view (`--filter`, `--sort`,
//! `not_failures`): their settings and how they resolve.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::env::Vars;
use super::layer::{Bounds, Setting};
use super::settings::Parser;
use super::{invalid, ConfigError};
use crate::enrich::{cgroup, identity::Sources};
use crate::table::{self, SortBy, View};

/// Where identity comes from and how much of it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    pub sources: Sources,
    /// cgroups whose identity is kept, live and departed together.
    pub max_cgroups: usize,
    /// How long a removed cgroup's identity is kept.
    pub retention: Duration,
    /// The agent's own identity, for its self-metrics only.
    pub own: Vec<(String, String)>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            sources: Sources::default(),
            max_cgroups: cgroup::MAX_ENTRIES,
            retention: cgroup::DEFAULT_RETENTION,
            own: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIdentity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_logs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_logs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub podman_storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cgroups: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

impl FileIdentity {
    pub fn of(c: &IdentityConfig) -> Self {
        let s = |p: &PathBuf| Some(p.display().to_string());
        FileIdentity {
            pod_logs: s(&c.sources.pod_logs),
            container_logs: s(&c.sources.container_logs),
            podman_storage: s(&c.sources.podman_storage),
            docker_root: s(&c.sources.docker_root),
            max_cgroups: Some(c.max_cgroups as u64),
            retention: Some(humantime::format_duration(c.retention).to_string()),
        }
    }
}

/// An absolute directory path (it need not exist: a node without podman
/// has no podman store).
pub(super) fn abs_path(key: &str, raw: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(raw);
    if raw.is_empty() || !p.is_absolute() || raw.len() > 4096 {
        return Err(invalid(
            key,
            format!("expected an absolute path, got {raw:?}"),
        ));
    }
    Ok(p)
}

pub(super) const POD_LOGS: Setting<Parser<PathBuf>> = Setting {
    flag: None,
    env: &[],
    key: "identity.pod_logs",
    accepts: abs_path,
};

pub(super) const CONTAINER_LOGS: Setting<Parser<PathBuf>> = Setting {
    flag: None,
    env: &[],
    key: "identity.container_logs",
    accepts: abs_path,
};

pub(super) const PODMAN_STORAGE: Setting<Parser<PathBuf>> = Setting {
    flag: None,
    env: &[],
    key: "identity.podman_storage",
    accepts: abs_path,
};

pub(super) const DOCKER_ROOT: Setting<Parser<PathBuf>> = Setting {
    flag: None,
    env: &[],
    key: "identity.docker_root",
    accepts: abs_path,
};

/// Each entry is a path and its names (a few hundred bytes).
pub(super) const MAX_CGROUPS: Setting<Bounds<u64>> = Setting {
    flag: None,
    env: &[],
    key: "identity.max_cgroups",
    accepts: Bounds {
        min: 16,
        max: 1_000_000,
    },
};

pub(super) const RETENTION: Setting<Bounds<Duration>> = Setting {
    flag: None,
    env: &[],
    key: "identity.retention",
    accepts: Bounds {
        min: Duration::ZERO,
        max: Duration::from_secs(24 * 3600),
    },
};

fn kv_list(key: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let list = super::env::parse_kv_list(key, raw, false)?;
    if list.iter().any(|(k, _)| k.is_empty()) {
        return Err(invalid(key, "attribute names must not be empty"));
    }
    Ok(list)
}

/// The file writes it as the variable does (`key=value,...`).
pub(super) const SELF_ATTRIBUTES: Setting<Parser<Vec<(String, String)>>> = Setting {
    flag: None,
    env: &[super::env::SELF_ATTRIBUTES],
    key: "resource.self_attributes",
    accepts: kv_list,
};

pub(super) fn resolve_identity(
    vars: &Vars<'_>,
    f: FileIdentity,
    own: Option<String>,
) -> Result<IdentityConfig, ConfigError> {
    let d = IdentityConfig::default();
    let path = |s: &Setting<Parser<PathBuf>>, v: Option<String>, def: PathBuf| {
        s.resolve(None, vars, v).map(|p| p.unwrap_or(def))
    };
    Ok(IdentityConfig {
        sources: Sources {
            pod_logs: path(&POD_LOGS, f.pod_logs, d.sources.pod_logs)?,
            container_logs: path(&CONTAINER_LOGS, f.container_logs, d.sources.container_logs)?,
            podman_storage: path(&PODMAN_STORAGE, f.podman_storage, d.sources.podman_storage)?,
            docker_root: path(&DOCKER_ROOT, f.docker_root, d.sources.docker_root)?,
        },
        max_cgroups: MAX_CGROUPS
            .resolve(None, vars, f.max_cgroups)?
            .map_or(d.max_cgroups, |n| n as usize),
        retention: RETENTION
            .resolve(None, vars, f.retention)?
            .unwrap_or(d.retention),
        own: SELF_ATTRIBUTES
            .resolve(None, vars, own)?
            .unwrap_or_default(),
    })
}

/// `key=value[,key=value]`, keys among the exported attributes.
fn filter(key: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(invalid(key, format!("expected key=value, got {part:?}")));
        };
        let k = k.trim();
        if !table::filter_keys().any(|x| x == k) {
            let keys: Vec<&str> = table::filter_keys().collect();
            return Err(invalid(
                key,
                format!("unknown attribute {k:?}; one of {}", keys.join(", ")),
            ));
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn sort(key: &str, raw: &str) -> Result<SortBy, ConfigError> {
    SortBy::parse(raw.trim()).ok_or_else(|| {
        let names: Vec<&str> = SortBy::NAMES.iter().map(|(n, _)| *n).collect();
        invalid(
            key,
            format!("expected one of {}, got {raw:?}", names.join(", ")),
        )
    })
}

/// errno names, comma separated (the file's list is joined with commas).
fn errnos(key: &str, raw: &str) -> Result<Vec<String>, ConfigError> {
    let known = |n: &str| (1..4096).any(|e| crate::enrich::errno_name(e) == Some(n));
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|n| {
            if known(n) {
                Ok(n.to_string())
            } else {
                Err(invalid(key, format!("unknown errno name {n:?}")))
            }
        })
        .collect()
}

pub(super) const FILTER: Setting<Parser<Vec<(String, String)>>> = Setting {
    flag: Some("--filter"),
    env: &[],
    key: "table_filter",
    accepts: filter,
};

pub(super) const SORT: Setting<Parser<SortBy>> = Setting {
    flag: Some("--sort"),
    env: &[],
    key: "table_sort",
    accepts: sort,
};

pub(super) const NOT_FAILURES: Setting<Parser<Vec<String>>> = Setting {
    flag: None,
    env: &[],
    key: "not_failures",
    accepts: errnos,
};

pub(super) fn resolve_view(
    rows: usize,
    filter_flag: Option<&str>,
    sort_flag: Option<&str>,
    vars: &Vars<'_>,
    file: (Option<String>, Option<String>, Option<Vec<String>>),
) -> Result<View, ConfigError> {
    let d = View::default();
    Ok(View {
        rows,
        filter: FILTER
            .resolve(filter_flag, vars, file.0)?
            .unwrap_or_default(),
        sort: SORT.resolve(sort_flag, vars, file.1)?.unwrap_or_default(),
        not_failures: NOT_FAILURES
            .resolve(None, vars, file.2.map(|l| l.join(",")))?
            .unwrap_or(d.not_failures),
    })
}

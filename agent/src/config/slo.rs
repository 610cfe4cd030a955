//! SLO settings: the `[[slo]]` tables (in the config file, or in a file of
//! their own, `slo_file` / `--slo-file` / `SYSCOPE_SLO_FILE`) and where their
//! history is kept across restarts (`state_dir`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env::{self, Vars};
use super::identity::abs_path;
use super::layer::Setting;
use super::settings::Parser;
use super::ConfigError;
use crate::slo::{self, definition::FileSlo, Slo};

pub(super) const SLO_FILE: Setting<Parser<PathBuf>> = Setting {
    flag: Some("--slo-file"),
    env: &[env::SLO_FILE],
    key: "slo_file",
    accepts: abs_path,
};

pub(super) const STATE_DIR: Setting<Parser<PathBuf>> = Setting {
    flag: Some("--state-dir"),
    env: &[env::STATE_DIR],
    key: "state_dir",
    accepts: abs_path,
};

/// A file of `[[slo]]` tables and nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SloFile {
    #[serde(default)]
    slo: Vec<FileSlo>,
}

/// The SLOs of the config file and of the SLO file, together (one name
/// space), and the state directory.
pub(super) fn resolve(
    flag_file: Option<&str>,
    flag_state: Option<&str>,
    vars: &Vars<'_>,
    mut inline: Vec<FileSlo>,
    file_key: Option<String>,
    state_key: Option<String>,
) -> Result<(Vec<Slo>, Option<PathBuf>), ConfigError> {
    if let Some(path) = SLO_FILE.resolve(flag_file, vars, file_key)? {
        inline.extend(read(&path)?.slo);
    }
    let state = STATE_DIR.resolve(flag_state, vars, state_key)?;
    Ok((slo::definition::resolve(&inline)?, state))
}

fn read(path: &Path) -> Result<SloFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_owned(),
        message: super::file::describe(&e, &text),
    })
}

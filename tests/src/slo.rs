//! SLO test helpers: definition files for a test, and the burn events a
//! receiver got.

use std::{path::PathBuf, time::Duration};

use crate::{LogRecord, Receiver};

/// An SLO config file for this test (`body`: its `[[slo]]` tables).
pub fn slo_file(name: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{name}.slo.toml"));
    std::fs::write(&path, body).unwrap();
    path
}

/// A config file of one SLO (`table`: its keys) on the workload `exe`.
pub fn slo_of(exe: &str, table: &str) -> PathBuf {
    slo_file(
        exe,
        &format!("[[slo]]\n{table}\n[slo.match]\n\"process.executable.name\" = \"{exe}\"\n"),
    )
}

/// The `syscope.slo.burn` events of `slo` in `state` (`started`, `detail`,
/// `stopped`), once at least one has arrived within `timeout`.
pub fn burn_events(rx: &Receiver, timeout: Duration, slo: &str, state: &str) -> Vec<LogRecord> {
    let is = |l: &LogRecord| {
        l.attributes.get("event.name").map(String::as_str) == Some("syscope.slo.burn")
            && l.attributes.get("slo.name").map(String::as_str) == Some(slo)
            && l.attributes.get("slo.burn.state").map(String::as_str) == Some(state)
    };
    let logs = rx.wait_for_logs(timeout, |ls| ls.iter().any(is));
    logs.into_iter().filter(is).collect()
}

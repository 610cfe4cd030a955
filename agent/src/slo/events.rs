//! What the agent says when a page-level burn starts or stops: one line for
//! the log, and (with OTLP export) a log record through the exporter.

use std::fmt::Write as _;

use super::{diagnosis::Finding, engine::BurnChange, engine::Tracked, WINDOWS};

/// `event.name` of the burn log records.
pub const EVENT_NAME: &str = "syscope.slo.burn";

/// The burn rates as `5m=33.3 30m=33.3 ...`.
pub fn rates(b: &BurnChange) -> String {
    let mut out = String::new();
    for (w, r) in WINDOWS.iter().zip(b.status.burn) {
        let _ = write!(
            out,
            "{}{}={r:.1}",
            if out.is_empty() { "" } else { " " },
            w.label
        );
    }
    out
}

/// One human line: the SLO, what happened, the burn rates, the diagnosis.
pub fn summary(s: &Tracked, b: &BurnChange, findings: &[Finding]) -> String {
    let mut out = if b.started {
        let a = b.status.paging.first();
        format!(
            "SLO {} is burning its error budget: burn rate above {} over {} and {} (objective {}, budget left {:.1} %); burn rates {}",
            s.def.name,
            a.map_or(0.0, |a| a.factor),
            a.map_or("", |a| a.long.label),
            a.map_or("", |a| a.short.label),
            s.def.objective,
            b.status.remaining * 100.0,
            rates(b)
        )
    } else {
        format!(
            "SLO {} stopped burning at a page-level rate (budget left {:.1} %); burn rates {}",
            s.def.name,
            b.status.remaining * 100.0,
            rates(b)
        )
    };
    if !findings.is_empty() {
        out.push_str("; what changed against the last hour: ");
        for (i, f) in findings.iter().enumerate() {
            let _ = write!(out, "{}{}. {f}", if i == 0 { "" } else { "; " }, i + 1);
        }
    }
    out
}

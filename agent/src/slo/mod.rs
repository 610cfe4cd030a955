//! Service level objectives at the edge: definitions (`definition.rs`, from
//! the `[[slo]]` tables of the config), good and bad events counted per SLO
//! from the raw measurements (`engine.rs`), burn rates and error budgets over
//! a bounded history that may survive restarts (`history.rs`), and the rules
//! and dashboards generated from the same definitions (`rules.rs`,
//! `dashboard.rs`).
//!
//! Every window, burn-rate factor and name used by the engine, the rules and
//! the dashboard is defined here once.

pub mod dashboard;
pub mod definition;
pub mod rules;

use std::time::Duration;

pub use definition::{Availability, Sli, Slo};

/// Most distinct latency thresholds over all SLOs: the kernel counts the
/// events at or below each in the bucket the threshold falls in
/// (`syscope_common::hist::SPLITS`), which is what makes latency SLIs exact.
pub const MAX_THRESHOLDS: usize = syscope_common::hist::SPLITS;

/// A burn-rate window: its label (`slo.window`) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub label: &'static str,
    pub length: Duration,
}

const fn w(label: &'static str, secs: u64) -> Window {
    Window {
        label,
        length: Duration::from_secs(secs),
    }
}

/// The burn-rate windows exported as `syscope.slo.burn_rate{slo.window}`,
/// shortest first: the SRE Workbook's multi-window, multi-burn-rate set.
pub const WINDOWS: [Window; 7] = [
    w("5m", 300),
    w("30m", 1800),
    w("1h", 3600),
    w("2h", 7200),
    w("6h", 21600),
    w("1d", 86400),
    w("3d", 259200),
];

/// The longest burn-rate window.
pub const LONGEST: Window = WINDOWS[6];

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub const fn label(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window burn-rate alert: fires while the burn rate is above
/// `factor` over both the long and the short window (SRE Workbook, ch. 5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurnAlert {
    pub severity: Severity,
    pub factor: f64,
    pub long: Window,
    pub short: Window,
}

/// The four alerts: 2 % of a 30-day budget in 1 h, 5 % in 6 h (page);
/// 10 % in 1 d, 10 % in 3 d (ticket).
pub const ALERTS: [BurnAlert; 4] = [
    BurnAlert {
        severity: Severity::Page,
        factor: 14.4,
        long: WINDOWS[2],
        short: WINDOWS[0],
    },
    BurnAlert {
        severity: Severity::Page,
        factor: 6.0,
        long: WINDOWS[4],
        short: WINDOWS[1],
    },
    BurnAlert {
        severity: Severity::Ticket,
        factor: 3.0,
        long: WINDOWS[5],
        short: WINDOWS[3],
    },
    BurnAlert {
        severity: Severity::Ticket,
        factor: 1.0,
        long: WINDOWS[6],
        short: WINDOWS[4],
    },
];

/// Attribute keys of the SLO metrics.
pub const ATTR_NAME: &str = "slo.name";
pub const ATTR_OUTCOME: &str = "slo.outcome";
pub const ATTR_WINDOW: &str = "slo.window";

/// Instrument of an SLO metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SloInstrument {
    /// Monotonic sum, cumulative since the agent started.
    Counter,
    Gauge,
}

/// One SLO metric: what the engine exports (OTLP scope `syscope.slo`, and
/// the Prometheus endpoint by the usual translation), what the rules and the
/// dashboard query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SloMetric {
    pub name: &'static str,
    pub unit: &'static str,
    pub instrument: SloInstrument,
    pub description: &'static str,
    pub attrs: &'static [&'static str],
}

impl SloMetric {
    /// The Prometheus name (`syscope_slo_events_total`, ...).
    pub fn prometheus_name(&self) -> String {
        let kind = match self.instrument {
            SloInstrument::Counter => crate::prometheus::translate::Kind::Counter,
            SloInstrument::Gauge => crate::prometheus::translate::Kind::Gauge,
        };
        crate::prometheus::translate::metric_name(self.name, self.unit, kind)
    }
}

pub const EVENTS: SloMetric = SloMetric {
    name: "syscope.slo.events",
    unit: "{event}",
    instrument: SloInstrument::Counter,
    description: "Events of each SLO, good or bad, counted exactly from the kernel's measurements.",
    attrs: &[ATTR_NAME, ATTR_OUTCOME],
};
pub const OBJECTIVE: SloMetric = SloMetric {
    name: "syscope.slo.objective",
    unit: "1",
    instrument: SloInstrument::Gauge,
    description: "The SLO's objective: the fraction of events that must be good.",
    attrs: &[ATTR_NAME],
};
pub const BURN_RATE: SloMetric = SloMetric {
    name: "syscope.slo.burn_rate",
    unit: "1",
    instrument: SloInstrument::Gauge,
    description: "(bad / total events over the window) / (1 - objective), from what this agent saw; 0 without events.",
    attrs: &[ATTR_NAME, ATTR_WINDOW],
};
pub const BUDGET_REMAINING: SloMetric = SloMetric {
    name: "syscope.slo.error_budget.remaining",
    unit: "1",
    instrument: SloInstrument::Gauge,
    description: "Error budget left over the SLO's window (1 - burn rate over it); negative when overspent.",
    attrs: &[ATTR_NAME],
};
pub const HISTORY: SloMetric = SloMetric {
    name: "syscope.slo.history",
    unit: "s",
    instrument: SloInstrument::Gauge,
    description: "How much of the past the burn rates and budget cover (agent uptime, or the state directory's history): a window longer than this is only partly observed.",
    attrs: &[ATTR_NAME],
};

/// Every SLO metric, in export order.
pub const METRICS: [SloMetric; 5] = [EVENTS, OBJECTIVE, BURN_RATE, BUDGET_REMAINING, HISTORY];

/// The OTLP scope of the SLO metrics.
pub const SCOPE: &str = "syscope.slo";

/// `slo.outcome` values of `syscope.slo.events`.
pub const GOOD: &str = "good";
pub const BAD: &str = "bad";

/// Burn rate from event counts: the bad fraction over the budgeted one.
/// No events burn nothing (0, never NaN).
pub fn burn_rate(good: u64, bad: u64, objective: f64) -> f64 {
    let total = good + bad;
    if total == 0 {
        return 0.0;
    }
    (bad as f64 / total as f64) / (1.0 - objective)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rate_of_the_issue_mix() {
        // 20 good, 10 bad at 0.99: a third bad, 33.3 times the budget.
        let b = burn_rate(20, 10, 0.99);
        assert!((b - 100.0 / 3.0).abs() < 1e-9, "{b}");
        assert_eq!(burn_rate(0, 0, 0.99), 0.0);
    }

    #[test]
    fn prometheus_names() {
        assert_eq!(EVENTS.prometheus_name(), "syscope_slo_events_total");
        assert_eq!(BURN_RATE.prometheus_name(), "syscope_slo_burn_rate_ratio");
        assert_eq!(
            BUDGET_REMAINING.prometheus_name(),
            "syscope_slo_error_budget_remaining_ratio"
        );
        assert_eq!(HISTORY.prometheus_name(), "syscope_slo_history_seconds");
    }

    #[test]
    fn alerts_pair_long_and_short_windows_in_the_set() {
        for a in ALERTS {
            assert!(a.long.length > a.short.length);
            assert!(WINDOWS.contains(&a.long) && WINDOWS.contains(&a.short));
        }
    }
}

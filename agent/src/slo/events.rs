//! What the agent says when a page-level burn starts or stops: one line for
//! the log, and (with OTLP export) a log record through the exporter.

use std::{fmt::Write as _, time::SystemTime};

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, ArrayValue, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

use super::{diagnosis::Finding, engine::BurnChange, engine::Tracked, WINDOWS};
use crate::aggregate::otlp::kv_str;

/// `event.name` of the burn log records.
pub const EVENT_NAME: &str = "syscope.slo.burn";
/// `started` | `detail` (the burn goes on; its diagnosis again, now with
/// the syscalls measured on demand since it started) | `stopped`.
pub const ATTR_STATE: &str = "slo.burn.state";
/// The ranked findings, one line each (string array).
pub const ATTR_DIAGNOSIS: &str = "slo.diagnosis";

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
    let mut out = if b.detail {
        format!(
            "SLO {} is still burning its error budget (budget left {:.1} %), its workloads' syscalls measured since the burn started; burn rates {}",
            s.def.name,
            b.status.remaining * 100.0,
            rates(b)
        )
    } else if b.started {
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
        out.push_str("; what changed in the last minute against the hour before: ");
        for (i, f) in findings.iter().enumerate() {
            let _ = write!(out, "{}{}. {f}", if i == 0 { "" } else { "; " }, i + 1);
        }
    }
    out
}

/// The `slo.burn.state` of `b`.
pub fn state(b: &BurnChange) -> &'static str {
    match (b.started, b.detail) {
        (_, true) => "detail",
        (true, false) => "started",
        (false, false) => "stopped",
    }
}

/// The burn as an OTLP log record (event `syscope.slo.burn`): the body is
/// [`summary`]; the attributes carry the same facts for queries.
pub fn log_request(
    resource: &Resource,
    s: &Tracked,
    b: &BurnChange,
    findings: &[Finding],
    now: SystemTime,
) -> ExportLogsServiceRequest {
    let t = crate::aggregate::otlp::nanos(now);
    let double = |k: &str, v: f64| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
        ..Default::default()
    };
    let mut attributes = vec![
        kv_str("event.name", EVENT_NAME),
        kv_str(super::ATTR_NAME, s.def.name.as_str()),
        kv_str(ATTR_STATE, state(b)),
        double(super::OBJECTIVE.name, s.def.objective),
        double(super::BUDGET_REMAINING.name, b.status.remaining),
    ];
    for (w, r) in WINDOWS.iter().zip(b.status.burn) {
        attributes.push(double(&format!("{}.{}", super::BURN_RATE.name, w.label), r));
    }
    if !findings.is_empty() {
        attributes.push(KeyValue {
            key: ATTR_DIAGNOSIS.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: findings
                        .iter()
                        .map(|f| AnyValue {
                            value: Some(any_value::Value::StringValue(f.to_string())),
                        })
                        .collect(),
                })),
            }),
            ..Default::default()
        });
    }
    let (severity_number, severity_text) = if b.started {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(crate::aggregate::otlp::scope(super::SCOPE)),
                log_records: vec![LogRecord {
                    time_unix_nano: t,
                    observed_time_unix_nano: t,
                    severity_number: severity_number as i32,
                    severity_text: severity_text.into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(summary(s, b, findings))),
                    }),
                    attributes,
                    event_name: EVENT_NAME.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

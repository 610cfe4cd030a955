//! What /healthz and /readyz report: liveness is "the runtime answers";
//! readiness is "programs attached, and exports succeed or have failed for
//! less than `health.max_export_failure`" (the exporter's own health rule).
//! Without an OTLP endpoint (live table) readiness is attachment alone.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::export::{ExportHealth, ExportStatus};

/// Shared between the collect loop (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct HealthState {
    started: Instant,
    inner: Mutex<Phase>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Loading and attaching the programs.
    Starting,
    Attached {
        hook: &'static str,
        signals: String,
        export: Option<ExportHealth>,
    },
    /// Shutting down: programs detached or about to be.
    Stopping,
}

/// One evaluation of the state, rendered as the endpoints' JSON bodies.
#[derive(Debug, Clone)]
pub struct Report {
    pub ready: bool,
    /// `starting`, `ready`, `export_failing` or `stopping`.
    pub status: &'static str,
    pub attached: bool,
    pub hook: Option<&'static str>,
    /// Which hook serves each signal (JSON object), once attached.
    pub signals: Option<String>,
    pub uptime: Duration,
    /// `None` in table mode (no endpoint).
    pub export: Option<ExportStatus>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            started: Instant::now(),
            inner: Mutex::new(Phase::Starting),
        }
    }
}

impl HealthState {
    fn set(&self, phase: Phase) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    pub fn attached(&self, hook: &'static str, signals: String, export: Option<ExportHealth>) {
        self.set(Phase::Attached {
            hook,
            signals,
            export,
        });
    }

    pub fn stopping(&self) {
        self.set(Phase::Stopping);
    }

    pub fn report(&self) -> Report {
        let phase = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let uptime = self.started.elapsed();
        match phase {
            Phase::Starting => Report {
                ready: false,
                status: "starting",
                attached: false,
                hook: None,
                signals: None,
                uptime,
                export: None,
            },
            Phase::Stopping => Report {
                ready: false,
                status: "stopping",
                attached: false,
                hook: None,
                signals: None,
                uptime,
                export: None,
            },
            Phase::Attached {
                hook,
                signals,
                export,
            } => {
                let export = export.map(|e| e.status());
                let healthy = export.as_ref().is_none_or(|e| e.healthy);
                Report {
                    ready: healthy,
                    status: if healthy { "ready" } else { "export_failing" },
                    attached: true,
                    hook: Some(hook),
                    signals: Some(signals),
                    uptime,
                    export,
                }
            }
        }
    }
}

impl Report {
    /// The /readyz body. Ages rather than timestamps, so a reader need not
    /// trust the node's clock; error texts stay in the log (they may name
    /// the endpoint), so the endpoint can face the node network.
    pub fn readyz_json(&self) -> String {
        let mut s = String::with_capacity(320);
        let _ = write!(
            s,
            "{{\"status\":\"{}\",\"ready\":{},\"attached\":{},\"hook\":{},\"uptime_seconds\":{}",
            self.status,
            self.ready,
            self.attached,
            self.hook.map_or("null".into(), |h| format!("\"{h}\"")),
            secs(self.uptime),
        );
        if let Some(sig) = &self.signals {
            let _ = write!(s, ",\"signals\":{sig}");
        }
        match &self.export {
            None => s.push_str(",\"export\":{\"enabled\":false}"),
            Some(e) => {
                let age = |t: Option<SystemTime>| {
                    t.and_then(|t| SystemTime::now().duration_since(t).ok())
                };
                let _ = write!(
                    s,
                    ",\"export\":{{\"enabled\":true,\"healthy\":{},\"last_success_age_seconds\":{},\
                     \"last_failure_age_seconds\":{},\"failing_for_seconds\":{},\
                     \"consecutive_failures\":{},\"buffered_intervals\":{},\
                     \"max_failure_seconds\":{}}}",
                    e.healthy,
                    opt_secs(age(e.last_success)),
                    opt_secs(e.last_failure_age),
                    opt_secs(e.failing_for),
                    e.consecutive_failures,
                    e.buffered,
                    secs(e.max_failure),
                );
            }
        }
        s.push('}');
        s
    }

    /// The /healthz body: the process answers; nothing else is implied.
    pub fn healthz_json(&self) -> String {
        format!(
            "{{\"status\":\"alive\",\"uptime_seconds\":{}}}",
            secs(self.uptime)
        )
    }
}

/// Seconds with millisecond precision: a JSON number, never NaN.
fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "null".to_owned(), secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_attached_and_after_stopping() {
        let state = HealthState::default();
        let r = state.report();
        assert!(!r.ready && !r.attached);
        assert_eq!(r.status, "starting");
        assert!(
            r.readyz_json().starts_with(
                "{\"status\":\"starting\",\"ready\":false,\"attached\":false,\"hook\":null,"
            ),
            "{}",
            r.readyz_json()
        );
        // Table mode: attachment alone decides.
        state.attached("tp_btf", "{}".into(), None);
        let r = state.report();
        assert!(r.ready && r.attached);
        let json = r.readyz_json();
        assert!(json.contains("\"hook\":\"tp_btf\""), "{json}");
        assert!(json.ends_with(",\"export\":{\"enabled\":false}}"), "{json}");
        state.stopping();
        assert_eq!(state.report().status, "stopping");
        assert!(!state.report().ready);
        assert!(state
            .report()
            .healthz_json()
            .starts_with("{\"status\":\"alive\""));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(secs(Duration::from_millis(1500)), "1.500");
        assert_eq!(opt_secs(None), "null");
    }
}

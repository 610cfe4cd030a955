//! The agent's own metrics (`syscope.*`): counted here with atomics, read by
//! the OpenTelemetry SDK's observable instruments and by the live table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters every stage updates. Plain atomics: cheap on the hot paths,
/// readable from the SDK callbacks without locks.
#[derive(Debug, Default)]
pub struct SelfStats {
    /// OTLP export attempts that failed (each retry counts).
    pub export_failures: AtomicU64,
    /// Export requests delivered.
    pub export_successes: AtomicU64,
    /// Intervals dropped because the unsent buffer was full.
    pub export_dropped_intervals: AtomicU64,
    /// Intervals waiting in the unsent buffer right now (a gauge).
    pub export_buffered_intervals: AtomicU64,
    /// Duration of the last successful export, in microseconds (a gauge).
    pub export_duration_us: AtomicU64,
    /// Duration of the last collection, in microseconds (a gauge).
    pub collect_duration_us: AtomicU64,
}

impl SelfStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

//! The export task: a bounded buffer of unsent intervals, sent oldest first,
//! retried with exponential backoff (never waiting more than one interval)
//! while the collector is unreachable. Every attempt carries the agent's own
//! metrics, read at that moment, as a second scope of the interval's request.
//!
//! Delivery is at least once for what the buffer holds: an interval leaves
//! the buffer only when a collector accepted it, or when it is dropped
//! (counted in `syscope.export.dropped{reason}` and logged). A request the
//! collector received but whose answer was lost (timeout, reset) is sent
//! again: the one case of a duplicate.
//!
//! Log requests (SLO events, [`ExportHandle::submit_logs`]) share the buffer,
//! the retries and the counters: each takes one slot, as an interval does.
//! They are rare and each one matters, so:
//! - they are sent first: the task takes the oldest log request before any
//!   buffered interval, so an event is not held behind a backlog;
//! - a full buffer makes room by dropping the oldest *metrics* interval; a
//!   log request is dropped for room only when the whole buffer is log
//!   requests (then the oldest one goes), and an interval arriving at a
//!   buffer full of log requests is itself dropped, never a log request;
//! - every dropped log request is counted in the same
//!   `syscope.export.dropped{reason}` (the self-metrics have one attribute
//!   per metric, so no `signal`) and logged at error level with
//!   `signal=logs`.
//!
//! Log requests carry no self-metrics scope: those travel with intervals.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{Client, ExportError, Settings};
use crate::telemetry::{DropReason, SelfMetrics, SelfStats};

/// Failing for this many export intervals makes the exporter unhealthy; a
/// collector restart should not flap a health check.
const UNHEALTHY_AFTER_INTERVALS: u32 = 3;

/// After the grace period the task gets this long to finish its bookkeeping
/// before it is aborted.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(50);

/// Bound for any configured delay, so deadline arithmetic cannot overflow.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// `now + d` without the overflow panic of `Instant + Duration`.
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_DELAY))
        .unwrap_or(now)
}

/// One buffered export request: an interval's metrics or log records.
#[derive(Debug)]
enum Payload {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    fn signal(&self) -> Signal {
        match self {
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }
}

/// Which OTLP signal a request carries (the `signal` field of the log lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Metrics,
    Logs,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        })
    }
}

type Request = Arc<Payload>;

/// State shared by the handle (submit, health) and the task (send).
#[derive(Debug)]
struct Shared {
    /// Unsent requests, oldest first. The one being sent stays here until
    /// delivered so that overflow can still drop it and shutdown counts it
    /// as unsent.
    queue: Mutex<VecDeque<Request>>,
    capacity: usize,
    /// Wakes the idle task on submit.
    wake: Notify,
    stats: Arc<SelfStats>,
    health: Mutex<HealthState>,
    unhealthy_after: Duration,
}

#[derive(Debug, Default)]
struct HealthState {
    last_success: Option<SystemTime>,
    consecutive_failures: u64,
    failing_since: Option<(Instant, SystemTime)>,
    last_failure: Option<Instant>,
    last_error: Option<String>,
}

/// Never panics on a poisoned lock: the data (a queue, counters) stays
/// consistent at every await-free step, so the last value is usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The request to send next: the oldest log request, else the oldest
    /// interval.
    fn next(&self) -> Option<Request> {
        let queue = lock(&self.queue);
        queue
            .iter()
            .find(|r| r.signal() == Signal::Logs)
            .or_else(|| queue.front())
            .cloned()
    }

    /// Removes `req` if it is still queued (overflow may have dropped it
    /// while it was being sent). Returns whether it was, and how many remain.
    fn remove(&self, req: &Request) -> (bool, usize) {
        let mut queue = lock(&self.queue);
        let at = queue.iter().position(|r| Arc::ptr_eq(r, req));
        if let Some(at) = at {
            queue.remove(at);
        }
        SelfStats::set(&self.stats.export_buffered_intervals, queue.len() as u64);
        (at.is_some(), queue.len())
    }

    /// Queues `payload`, making room in a full buffer by the rules in the
    /// module doc. Returns the signal of what was dropped for it, if any.
    fn push(&self, payload: Payload) -> Option<Signal> {
        let signal = payload.signal();
        let mut queue = lock(&self.queue);
        let mut dropped = None;
        if queue.len() >= self.capacity {
            let oldest_metrics = queue.iter().position(|r| r.signal() == Signal::Metrics);
            match (oldest_metrics, signal) {
                (Some(at), _) => {
                    queue.remove(at);
                    dropped = Some(Signal::Metrics);
                }
                // Only log requests buffered: the new interval gives way.
                (None, Signal::Metrics) => return Some(Signal::Metrics),
                (None, Signal::Logs) => {
                    queue.pop_front();
                    dropped = Some(Signal::Logs);
                }
            }
        }
        queue.push_back(Arc::new(payload));
        SelfStats::set(&self.stats.export_buffered_intervals, queue.len() as u64);
        dropped
    }

    /// How many queued requests carry each signal: (metrics, logs).
    fn count_by_signal(&self) -> (usize, usize) {
        let queue = lock(&self.queue);
        let logs = queue.iter().filter(|r| r.signal() == Signal::Logs).count();
        (queue.len() - logs, logs)
    }

    fn buffered(&self) -> usize {
        lock(&self.queue).len()
    }

    fn status(&self) -> ExportStatus {
        let health = lock(&self.health);
        let healthy = health
            .failing_since
            .is_none_or(|(since, _)| since.elapsed() < self.unhealthy_after);
        ExportStatus {
            healthy,
            last_success: health.last_success,
            consecutive_failures: health.consecutive_failures,
            failing_since: health.failing_since.map(|(_, at)| at),
            failing_for: health.failing_since.map(|(since, _)| since.elapsed()),
            last_failure_age: health.last_failure.map(|at| at.elapsed()),
            max_failure: self.unhealthy_after,
            last_error: health.last_error.clone(),
            buffered: self.buffered(),
        }
    }

    fn record_success(&self) {
        let mut health = lock(&self.health);
        health.last_success = Some(SystemTime::now());
        health.consecutive_failures = 0;
        health.failing_since = None;
        health.last_error = None;
    }

    /// Counts `n` requests of `signal` that will never be delivered and logs
    /// them with their reason: the log and `syscope.export.dropped{reason}`
    /// agree (log requests count there too, one per request).
    fn record_drop(&self, reason: DropReason, signal: Signal, n: u64, err: Option<&ExportError>) {
        if n == 0 {
            return;
        }
        let stats = &self.stats;
        SelfStats::add(&stats.export_dropped[reason as usize], n);
        let total = stats.dropped(reason);
        let error = err.map(tracing::field::display);
        match (reason, signal) {
            (DropReason::BufferFull, Signal::Metrics) => warn!(
                %reason,
                %signal,
                dropped_intervals = n,
                dropped_total = total,
                buffer_intervals = self.capacity,
                "OTLP export buffer full: dropped the oldest unsent interval"
            ),
            // A lost event: an error, not a warning.
            (DropReason::BufferFull, Signal::Logs) => error!(
                %reason,
                %signal,
                dropped_requests = n,
                dropped_total = total,
                buffer_intervals = self.capacity,
                "OTLP export buffer full of log requests: dropped the oldest unsent log request"
            ),
            (DropReason::Rejected, Signal::Metrics) => error!(
                %reason,
                %signal,
                dropped_intervals = n,
                dropped_total = total,
                error,
                "OTLP export rejected by the collector (not retryable): dropped the interval"
            ),
            (DropReason::Rejected, Signal::Logs) => error!(
                %reason,
                %signal,
                dropped_requests = n,
                dropped_total = total,
                error,
                "OTLP log export rejected by the collector (not retryable): dropped the log request"
            ),
            (DropReason::Shutdown, Signal::Metrics) => error!(
                %reason,
                %signal,
                dropped_intervals = n,
                dropped_total = total,
                "OTLP export shut down with intervals unsent: dropped them"
            ),
            (DropReason::Shutdown, Signal::Logs) => error!(
                %reason,
                %signal,
                dropped_requests = n,
                dropped_total = total,
                "OTLP export shut down with log requests unsent: dropped them"
            ),
        }
    }

    fn record_failure(&self, err: &ExportError) {
        let mut health = lock(&self.health);
        health.consecutive_failures += 1;
        health.last_failure = Some(Instant::now());
        health
            .failing_since
            .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
        health.last_error = Some(err.to_string());
    }
}

/// A point-in-time view of the exporter, for a health endpoint.
#[derive(Clone, Debug)]
pub struct ExportStatus {
    /// False once exports have failed (retryably or not) for longer than
    /// `max_failure` without a success.
    pub healthy: bool,
    pub last_success: Option<SystemTime>,
    /// Failed attempts since the last success (each retry counts).
    pub consecutive_failures: u64,
    pub failing_since: Option<SystemTime>,
    /// How long exports have been failing, on the monotonic clock.
    pub failing_for: Option<Duration>,
    /// Time since the last failed attempt (kept after a success).
    pub last_failure_age: Option<Duration>,
    /// The limit `failing_for` is held against (`Settings::max_failure`).
    pub max_failure: Duration,
    pub last_error: Option<String>,
    pub buffered: usize,
}

/// A cloneable read-only view of the exporter's health, for a health
/// endpoint that lives apart from the collect loop owning the handle.
#[derive(Clone, Debug)]
pub struct ExportHealth {
    shared: Arc<Shared>,
}

impl ExportHealth {
    pub fn is_healthy(&self) -> bool {
        self.shared.status().healthy
    }

    pub fn status(&self) -> ExportStatus {
        self.shared.status()
    }
}

/// Feeds the export task. Not `Clone`: [`ExportHandle::shutdown`] consumes
/// it, so nothing can submit after shutdown started.
#[derive(Debug)]
pub struct ExportHandle {
    shared: Arc<Shared>,
    /// The shutdown deadline; `None` while running. Dropping the handle
    /// closes the channel, which stops the task without a flush.
    shutdown: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

/// Starts the export task on the current tokio runtime. Fails only on bad
/// settings (endpoint, headers); an unreachable collector is retried.
pub fn spawn(settings: Settings, stats: Arc<SelfStats>) -> Result<ExportHandle, ExportError> {
    let client = Client::new(&settings)?;
    let capacity = settings.buffer_intervals.max(1);
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::with_capacity(capacity)),
        capacity,
        wake: Notify::new(),
        stats,
        health: Mutex::new(HealthState::default()),
        unhealthy_after: settings
            .max_failure
            .unwrap_or_else(|| settings.interval.saturating_mul(UNHEALTHY_AFTER_INTERVALS))
            .min(MAX_DELAY),
    });
    let (shutdown, shutdown_rx) = watch::channel(None);
    let worker = Worker {
        own: SelfMetrics::new(Arc::clone(&shared.stats), settings.temporality),
        shared: Arc::clone(&shared),
        client,
        backoff: Backoff::new(settings.initial_backoff, settings.retry_cap()),
        warn_every: settings.interval,
        shutdown: shutdown_rx,
        outage: None,
        dropped_mark: 0,
    };
    debug!(
        target = worker.client.target(),
        logs_target = worker.client.logs_target(),
        protocol = ?settings.protocol,
        buffer_intervals = capacity,
        "OTLP export started"
    );
    let task = tokio::spawn(worker.run());
    Ok(ExportHandle {
        shared,
        shutdown,
        task,
    })
}

impl ExportHandle {
    /// Queues one interval's request without waiting. When the buffer is
    /// full the oldest interval is dropped: recent data is worth more. Log
    /// requests are never dropped for an interval: if the buffer holds only
    /// those, this interval is dropped instead (counted and logged).
    pub fn submit(&self, req: ExportMetricsServiceRequest) {
        self.enqueue(Payload::Metrics(req));
    }

    /// Queues one log request (e.g. an SLO event) without waiting; the task
    /// sends it at once, before any buffered interval, with the same
    /// transport, retries and backoff. A full buffer drops its oldest
    /// interval to make room, or, holding only log requests, the oldest of
    /// those; a dropped log request is counted in
    /// `syscope.export.dropped{reason}` and logged at error level.
    pub fn submit_logs(&self, req: ExportLogsServiceRequest) {
        self.enqueue(Payload::Logs(req));
    }

    fn enqueue(&self, payload: Payload) {
        if let Some(signal) = self.shared.push(payload) {
            self.shared
                .record_drop(DropReason::BufferFull, signal, 1, None);
        }
        self.shared.wake.notify_one();
    }

    /// Requests (intervals and log requests) waiting to be sent, including
    /// one in flight.
    pub fn buffered(&self) -> usize {
        self.shared.buffered()
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.status().healthy
    }

    pub fn status(&self) -> ExportStatus {
        self.shared.status()
    }

    /// A cloneable read-only view for a health endpoint: it cannot submit,
    /// and the task still stops when this handle is shut down or dropped.
    pub fn health(&self) -> ExportHealth {
        ExportHealth {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting intervals and tries to deliver everything buffered
    /// within `grace`. Returns how many intervals were left unsent.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let deadline = after(grace);
        // Fails only if the task already ended; the count below still holds.
        let _ = self.shutdown.send(Some(deadline));
        self.shared.wake.notify_one();
        let mut task = self.task;
        // The task stops itself at the deadline between attempts; a send in
        // flight (up to `timeout` long) is cut off here instead. Its request
        // is still in the queue, so it counts as unsent.
        let hard_stop = deadline.checked_add(SHUTDOWN_MARGIN).unwrap_or(deadline);
        if tokio::time::timeout_at(hard_stop, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
        let (metrics, logs) = self.shared.count_by_signal();
        let left = metrics + logs;
        SelfStats::set(&self.shared.stats.export_buffered_intervals, left as u64);
        if left > 0 {
            for (signal, n) in [(Signal::Logs, logs), (Signal::Metrics, metrics)] {
                self.shared
                    .record_drop(DropReason::Shutdown, signal, n as u64, None);
            }
        } else {
            info!("OTLP export shut down, everything delivered");
        }
        left
    }
}

/// The outage being ridden out: for one warning per interval instead of one
/// per retry, and for the recovery summary.
#[derive(Debug)]
struct Outage {
    since: Instant,
    attempts: u64,
    last_warning: Instant,
    dropped_before: u64,
    delivered: u64,
}

struct Worker {
    shared: Arc<Shared>,
    /// The agent's own metrics, added to every attempt.
    own: SelfMetrics,
    client: Client,
    backoff: Backoff,
    warn_every: Duration,
    shutdown: watch::Receiver<Option<Instant>>,
    outage: Option<Outage>,
    /// Intervals dropped when things were last fine, so an outage summary
    /// includes drops from just before its first failed attempt.
    dropped_mark: u64,
}

impl Worker {
    async fn run(mut self) {
        loop {
            // Also marks the value seen, so `changed()` below waits for news.
            let deadline = *self.shutdown.borrow_and_update();
            let Some(req) = self.shared.next() else {
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    () = self.shared.wake.notified() => {}
                    changed = self.shutdown.changed() => {
                        if changed.is_err() {
                            return; // handle dropped without shutdown
                        }
                    }
                }
                continue;
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let started = Instant::now();
            let (result, snapshot) = match &*req {
                Payload::Metrics(metrics) => {
                    // The self-metrics as of now, in this attempt only: a
                    // delivered one moves the delta baseline, a failed one is
                    // read again later.
                    let snapshot = self.own.snapshot();
                    let attempt = with_scope(metrics, self.own.scope(&snapshot));
                    (self.client.send(attempt).await, Some(snapshot))
                }
                Payload::Logs(logs) => (self.client.send_logs(logs.clone()).await, None),
            };
            let delay = match result {
                Ok(()) => {
                    if let Some(snapshot) = snapshot {
                        self.own.acknowledge(snapshot);
                    }
                    self.on_success(&req, started.elapsed());
                    continue;
                }
                Err(err) if err.is_retryable() => self.on_retryable(&err),
                Err(err) => {
                    self.on_rejected(&req, &err);
                    continue;
                }
            };
            // Never sleep past the shutdown deadline: the grace is for sending.
            let wake_at = match deadline {
                Some(d) => after(delay).min(d),
                None => after(delay),
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                // Shutdown began: use the grace for one more attempt now.
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn on_success(&mut self, req: &Request, took: Duration) {
        let stats = &self.shared.stats;
        SelfStats::add(&stats.export_successes, 1);
        if let Payload::Metrics(m) = &**req {
            use prost::Message;
            // What each interval costs the backend, before compression.
            SelfStats::set(&stats.export_request_bytes, m.encoded_len() as u64);
        }
        SelfStats::set(
            &stats.export_duration_us,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        self.shared.record_success();
        self.backoff.reset();
        let (_, left) = self.shared.remove(req);
        debug!(signal = %req.signal(), took_us = took.as_micros(), "OTLP export delivered");
        if let Some(outage) = &mut self.outage {
            outage.delivered += 1;
            // Recovered once the backlog is drained, not at the first success.
            if left == 0 {
                info!(
                    recovered_intervals = outage.delivered,
                    dropped_intervals = stats.dropped_total().saturating_sub(outage.dropped_before),
                    failed_attempts = outage.attempts,
                    outage = ?outage.since.elapsed(),
                    "OTLP export recovered: buffered requests delivered"
                );
                self.outage = None;
            }
        }
        if self.outage.is_none() {
            self.dropped_mark = stats.dropped_total();
        }
    }

    /// Counts and logs a retryable failure; returns how long to wait.
    fn on_retryable(&mut self, err: &ExportError) -> Duration {
        let stats = &self.shared.stats;
        SelfStats::add(&stats.export_failures, 1);
        self.shared.record_failure(err);
        let delay = self.backoff.next();
        // A server's Retry-After wins over our schedule, within our bound.
        let delay = err.retry_after().map_or(delay, |d| d.min(self.backoff.max));
        let now = Instant::now();
        let buffered = self.shared.buffered();
        match &mut self.outage {
            None => {
                warn!(
                    error = %err,
                    buffered_intervals = buffered,
                    retry_in = ?delay,
                    "OTLP export failed; buffering intervals and retrying"
                );
                self.outage = Some(Outage {
                    since: now,
                    attempts: 1,
                    last_warning: now,
                    dropped_before: self.dropped_mark,
                    delivered: 0,
                });
            }
            Some(outage) => {
                outage.attempts += 1;
                if now.duration_since(outage.last_warning) >= self.warn_every {
                    outage.last_warning = now;
                    warn!(
                        error = %err,
                        failed_attempts = outage.attempts,
                        failing_for = ?outage.since.elapsed(),
                        buffered_intervals = buffered,
                        dropped_intervals = stats.dropped_total().saturating_sub(outage.dropped_before),
                        "OTLP export still failing"
                    );
                } else {
                    debug!(error = %err, retry_in = ?delay, "OTLP export retry failed");
                }
            }
        }
        delay
    }

    /// The collector refused this request for good (bad data, auth...):
    /// resending cannot help, so the interval is dropped.
    fn on_rejected(&mut self, req: &Request, err: &ExportError) {
        let stats = &self.shared.stats;
        SelfStats::add(&stats.export_failures, 1);
        self.shared.record_failure(err);
        // The collector answered, so it is up: no reason to wait before the next.
        self.backoff.reset();
        let (removed, _) = self.shared.remove(req);
        // If overflow already dropped it, it was counted then.
        self.shared.record_drop(
            DropReason::Rejected,
            req.signal(),
            u64::from(removed),
            Some(err),
        );
    }
}

/// Exponential backoff with +-20 % jitter, so many agents restarted
/// together do not retry in lockstep.
#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays start at `initial` and never exceed `max` (which wins over
    /// `initial`: it is the promise of a retry within one interval).
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        // A zero delay would never grow: retry in a tight loop.
        let max = max.clamp(Duration::from_millis(1), MAX_DELAY);
        let initial = initial.clamp(Duration::from_millis(1), max);
        let seed = RandomState::new().build_hasher().finish();
        Self {
            initial,
            max,
            current: initial,
            rng: seed | 1,
        }
    }

    pub(super) fn reset(&mut self) {
        self.current = self.initial;
    }

    pub(super) fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = base.saturating_mul(2).min(self.max);
        let jittered = base.as_secs_f64() * (0.8 + 0.4 * self.random_unit());
        Duration::try_from_secs_f64(jittered)
            .unwrap_or(base)
            .min(self.max)
    }

    /// xorshift64*: plenty for jitter, and no extra dependency.
    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The interval's request with `scope` added to its resource (a request
/// without one gets a resource-less entry: only tests submit those).
fn with_scope(
    req: &ExportMetricsServiceRequest,
    scope: ScopeMetrics,
) -> ExportMetricsServiceRequest {
    let mut req = req.clone();
    match req.resource_metrics.first_mut() {
        Some(rm) => rm.scope_metrics.push(scope),
        None => req.resource_metrics.push(ResourceMetrics {
            scope_metrics: vec![scope],
            ..Default::default()
        }),
    }
    req
}

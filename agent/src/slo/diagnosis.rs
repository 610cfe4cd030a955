//! What changed when an SLO starts or stops burning: for the workloads the
//! SLO matches, what changed in the last minute against the hour before,
//! ranked.
//!
//! [`Baseline`] keeps, per series of the metrics that can explain a burn,
//! the intervals of the recent window ([`RECENT`], the last minute; with
//! longer intervals, the current one) apart, and folds an interval into
//! the past only when it leaves that window. The past is an exponentially
//! decayed sum (time constant [`HORIZON`], one hour) of what each interval
//! brought: calls (or events), their seconds, and a sum of squares that
//! tells how much an interval's value moves. Rates divide the decayed
//! counts by the decayed time the past covers (all series alike), so a
//! series that appeared ten minutes ago has a low rate over the hour
//! rather than the rate of its ten minutes.
//! [`Baseline::diagnose`] compares the recent window's totals (the
//! aggregator's current deltas, `Series::delta`, included, whether or not
//! the interval was observed yet) with that past, for the series in the
//! SLO's scope that had events in the window: those that satisfy every
//! matcher of the SLO on an attribute their metric carries and belong to
//! a workload (process and identity) the SLO's own series belong to, or
//! are on a port they are on (see `Scope`): with a `server.port` matcher,
//! the server's syscalls and the port's peers and drops, not every
//! process's syscalls.
//!
//! Why a window and not the current interval: a burn shows when clients
//! fail or give up, often an interval or two after the cause. SYNs
//! dropped by a full accept queue at 0 s and at 1 s (the retransmit) make
//! connects that give up at 1.5 s: with 1 s intervals the errors, and the
//! burn, come an interval or two after the drops. Kept in the window, the
//! drops are compared with the past before them rather than folded into
//! it as expected.
//!
//! # Scoring
//!
//! Every finding is scored in *seconds added to the workloads in the
//! recent window*, so kinds rank together:
//!
//! - latencies (`syscall.latency`, `tcp.connect.duration`,
//!   `tcp.client.request.duration`, `tcp.rtt`): calls in the window ×
//!   (mean in the window − mean in the past); a series without calls in
//!   the past counts fully (its past mean is 0). Time a thread spends
//!   waiting for another party ([`WAITS`]: socket reads, poll/epoll/select,
//!   futex, accept, wait) and the time of a peer's requests and connects
//!   contain that party's slowness, which is reported on its own when it
//!   runs here: those count [`WAIT_WEIGHT`] (half). A sleep is the thread's
//!   own doing and counts fully, so a handler that starts sleeping ranks
//!   above the longer reads of its clients.
//! - events (`syscall.errors`, `tcp.connect.errors`, `tcp.resets`,
//!   `tcp.listen.drops`, `tcp.retransmits`): events in the window above the
//!   past's rate over the window's length, times a cost: a failure or a
//!   dropped connection [`ERROR_COST_S`] (1 s: a dropped SYN is retried
//!   after the initial RTO of 1 s; a failed request weighs about as much as
//!   a second's wait), a retransmit [`RETRANSMIT_COST_S`] (0.2 s, the least
//!   RTO). A failed syscall, for a latency SLO, costs at most the SLO's
//!   threshold (what a bad event is): a process's start-up ENOENTs must not
//!   outrank the sleep that made its requests slow.
//!
//! A change is a finding only when it is clear of the noise a steady
//! workload makes: a mean at least [`GROWTH`] times the past's and more
//! than [`SIGMAS`] times the spread of the past intervals' means above it;
//! a count at least [`GROWTH`] times the expected and [`SIGMAS`] times the
//! larger of its Poisson deviation and the past intervals' spread (times
//! √ of the window's intervals) above it (any listen drop above the
//! expected counts); and a score of at least [`MIN_SCORE_S`].
//!
//! Without a past before the window (an agent younger than the window plus
//! an interval), the past is taken as empty: everything in the window
//! counts fully, and the costs alone rank it (the drops of a full accept
//! queue above the connect errors they cause, a sleep above the reads
//! waiting for it). Series the baseline does not know are new (past 0),
//! unless it turned series away for lack of room within the horizon: then
//! they may be old ones it had no room for, and are left out rather than
//! reported as new. The aggregator's overflow series (attributes unknown)
//! are left out.
//!
//! # Memory
//!
//! At most `max_series` series, all metrics together. Each is one map entry
//! of 168 bytes on 64-bit (the attributes, 96, whose strings are `Arc`s
//! the aggregator interned or shares; the past, 3 × f64; the recent ring's
//! header, 32; the time last seen: a test pins it) plus the hash table's
//! control byte and slack, ≈ 195 bytes, and a peer address string (≤ 60
//! bytes) the aggregator may no longer hold; and its recent ring: 16 bytes
//! per interval of the window in which it had events, at most
//! [`RECENT_MAX_INTERVALS`] (with 1 s intervals up to 60, a 64-slot
//! allocation of 1 KiB; with 10 s intervals 6, 128 bytes), freed once the
//! series is idle for the window. Under 1.3 KB a series with 1 s intervals
//! (13 MB for 10 000), under 400 bytes with 10 s intervals (4 MB). A
//! series without events for [`HORIZON`] is forgotten; a new series takes
//! the place of the longest idle one when full, and is turned away
//! (counted, [`Baseline::turned_away`]) when every tracked series had
//! events this interval.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    time::{Duration, Instant, SystemTime},
};

use crate::aggregate::{Aggregator, Attr, Attrs, HistValue, Metric};
use crate::enrich::identity::Identity;
use std::sync::Arc;

use super::Slo;

/// How far back the baseline looks: the decay's time constant, and how
/// long an idle series is remembered.
pub const HORIZON: Duration = Duration::from_secs(3600);
/// The recent window a diagnosis looks at: the intervals of the last
/// minute (with longer intervals, the current one). A burn is noticed
/// when the clients fail or give up, often an interval or two after the
/// cause (a dropped SYN is retried after 1 s, 3 s, ...): the window keeps
/// the cause in view, and out of the past it is compared with.
pub const RECENT: Duration = Duration::from_secs(60);
/// At most this many intervals in the recent window (short intervals).
pub const RECENT_MAX_INTERVALS: usize = 64;
/// A mean or a count must grow at least this much to be a finding.
pub const GROWTH: f64 = 1.5;
/// ... and stand this many standard errors above the baseline.
pub const SIGMAS: f64 = 3.0;
/// Least score (seconds added in the recent window) of a finding.
pub const MIN_SCORE_S: f64 = 0.01;
/// Weight of the added time of [`WAITS`] and of peers' durations.
pub const WAIT_WEIGHT: f64 = 0.5;
/// Seconds charged per excess error, reset or listen drop.
pub const ERROR_COST_S: f64 = 1.0;
/// Seconds charged per excess retransmit.
pub const RETRANSMIT_COST_S: f64 = 0.2;

/// Syscalls that wait for another party (a peer, another thread, a child):
/// their added time is usually that party's, reported on its own.
pub const WAITS: [&str; 26] = [
    "read",
    "readv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "futex",
    "futex_waitv",
    "accept",
    "accept4",
    "connect",
    "wait4",
    "waitid",
    "io_getevents",
    "io_pgetevents",
    "io_uring_enter",
    "pause",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "msgrcv",
];

/// `Finding::kind` values.
pub mod kind {
    pub const SYSCALL_LATENCY: &str = "syscall.latency";
    pub const SYSCALL_ERRORS: &str = "syscall.errors";
    pub const CONNECT_DURATION: &str = "tcp.connect.duration";
    pub const CLIENT_REQUEST_DURATION: &str = "tcp.client.request.duration";
    pub const CONNECT_ERRORS: &str = "tcp.connect.errors";
    pub const RETRANSMITS: &str = "tcp.retransmits";
    pub const RESETS: &str = "tcp.resets";
    pub const RTT: &str = "tcp.rtt";
    pub const LISTEN_DROPS: &str = "tcp.listen.drops";
}

/// The metrics the baseline tracks, in [`Baseline`]'s slot order. The
/// server request duration is what latency SLOs measure (the symptom), and
/// the multiplexing counters explain nothing: neither is tracked.
const TRACKED: [Metric; 9] = [
    Metric::SyscallDuration,
    Metric::SyscallErrors,
    Metric::TcpConnectDuration,
    Metric::TcpConnectErrors,
    Metric::TcpClientRequestDuration,
    Metric::TcpRtt,
    Metric::TcpRetransmits,
    Metric::TcpResets,
    Metric::TcpListenDrops,
];

/// One thing that changed, ranked by `score`.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// One of [`kind`]'s values.
    pub kind: &'static str,
    /// What changed, and whose: `clock_nanosleep (nginx)`,
    /// `ECONNREFUSED on connect (api)`, `127.0.0.1:5432 ECONNREFUSED (api)`,
    /// `port 8080 (server)`.
    pub subject: String,
    /// The recent window: the mean in seconds (unit `s`), or the events.
    pub now: f64,
    /// The past before it: the mean in seconds, or the events expected in
    /// a window of this length at the past's rate.
    pub baseline: f64,
    /// `s` for latencies, else the metric's unit (`{error}`, ...).
    pub unit: &'static str,
    /// What changed in the kind's own unit: seconds added, or events above
    /// the expected.
    pub excess: f64,
    /// Seconds added to the workloads in the recent window (module docs):
    /// the rank.
    pub score: f64,
}

impl fmt::Display for Finding {
    /// One line: `clock_nanosleep (server): 50.1 ms per call, was 0 (+1.50 s
    /// recently)`, `port 8080 (server): 12 listen drops, expected 0.0
    /// (+12.0 recently)`: recently is the recent window ([`RECENT`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            kind::SYSCALL_LATENCY => "per call",
            kind::CONNECT_DURATION => "per connect",
            kind::CLIENT_REQUEST_DURATION => "per request",
            kind::RTT => "RTT",
            kind::SYSCALL_ERRORS => "errors",
            kind::CONNECT_ERRORS => "connect errors",
            kind::RETRANSMITS => "retransmits",
            kind::RESETS => "resets",
            kind::LISTEN_DROPS => "listen drops",
            other => other,
        };
        if self.unit == "s" {
            write!(
                f,
                "{}: {} {what}, was {} (+{} recently)",
                self.subject,
                seconds(self.now),
                seconds(self.baseline),
                seconds(self.excess)
            )
        } else {
            write!(
                f,
                "{}: {:.0} {what}, expected {:.1} (+{:.1} recently)",
                self.subject, self.now, self.baseline, self.excess
            )
        }
    }
}

/// Seconds for a person: `0`, `12.3 µs`, `50.1 ms`, `1.50 s`.
fn seconds(s: f64) -> String {
    if s == 0.0 {
        "0".into()
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// What some intervals brought to a series: calls (or events), their
/// seconds (histograms), and the squares that give how much the interval
/// values move: histograms Σ calls × mean², counters Σ events².
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Acc {
    count: f64,
    sum_s: f64,
    sq: f64,
}

impl Acc {
    fn of_hist(h: &HistValue) -> Acc {
        let count = h.count() as f64;
        let sum_s = h.sum_ns as f64 * 1e-9;
        Acc {
            count,
            sum_s,
            sq: if count > 0.0 {
                sum_s * sum_s / count
            } else {
                0.0
            },
        }
    }

    fn of_count(n: u64) -> Acc {
        let count = n as f64;
        Acc {
            count,
            sum_s: 0.0,
            sq: count * count,
        }
    }

    /// `self` decayed by `f`, plus `other`.
    fn fold(self, f: f64, other: Acc) -> Acc {
        Acc {
            count: self.count * f + other.count,
            sum_s: self.sum_s * f + other.sum_s,
            sq: self.sq * f + other.sq,
        }
    }
}

/// What one interval of the recent window brought to a series: 16 bytes
/// (the squares follow from the count and the seconds).
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// The interval's number ([`Baseline`]'s `window`).
    seq: u32,
    count: u32,
    sum_s: f64,
}

impl Rec {
    fn of(seq: u32, acc: Acc) -> Rec {
        Rec {
            seq,
            count: acc.count.min(f64::from(u32::MAX)) as u32,
            sum_s: acc.sum_s,
        }
    }

    fn acc(self, hist: bool) -> Acc {
        let count = f64::from(self.count);
        Acc {
            count,
            sum_s: self.sum_s,
            sq: if !hist {
                count * count
            } else if count > 0.0 {
                self.sum_s * self.sum_s / count
            } else {
                0.0
            },
        }
    }
}

/// One tracked series: the decayed past before the recent window, the
/// intervals of the recent window in which it had events (oldest first;
/// at most one per interval of the window, so at most
/// [`RECENT_MAX_INTERVALS`]), and when it last had events.
#[derive(Clone, Debug)]
struct Track {
    base: Acc,
    recent: VecDeque<Rec>,
    seen: Instant,
}

/// The recent window and the hour before it, per series (module docs).
pub struct Baseline {
    /// Per [`TRACKED`] metric.
    series: [HashMap<Attrs, Track>; TRACKED.len()],
    max_series: usize,
    /// Decayed seconds and intervals observed before the recent window.
    base_s: f64,
    base_n: f64,
    /// The observed intervals of the recent window, oldest first: number
    /// and length in seconds.
    window: VecDeque<(u32, f64)>,
    /// Number of the next interval observed.
    next_seq: u32,
    /// `Aggregator::interval_end` of the interval observed last.
    observed_end: Option<SystemTime>,
    last_now: Option<Instant>,
    turned_away: u64,
    turned_away_at: Option<Instant>,
}

/// The decay over `dt_s` seconds.
fn decay(dt_s: f64) -> f64 {
    (-dt_s / HORIZON.as_secs_f64()).exp()
}

/// Length of the aggregator's current interval, when it has one.
fn interval_s(agg: &Aggregator) -> Option<f64> {
    agg.interval_end
        .duration_since(agg.interval_start)
        .ok()
        .map(|d| d.as_secs_f64())
        .filter(|s| *s > 0.0)
}

/// This interval's values of the series of `m` that changed.
fn deltas(agg: &Aggregator, m: Metric) -> Vec<(&Attrs, Acc)> {
    if Metric::HISTOGRAMS.contains(&m) {
        agg.hist(m)
            .series
            .iter()
            .filter_map(|(a, s)| s.delta.as_ref().map(|d| (a, Acc::of_hist(d))))
            .collect()
    } else {
        agg.counter(m)
            .series
            .iter()
            .filter_map(|(a, s)| s.delta.map(|d| (a, Acc::of_count(d))))
            .collect()
    }
}

/// This interval's value of one series of `m`, if it changed.
fn delta(agg: &Aggregator, m: Metric, attrs: &Attrs) -> Option<Acc> {
    if Metric::HISTOGRAMS.contains(&m) {
        let s = agg.hist(m).series.get(attrs)?;
        s.delta.as_ref().map(Acc::of_hist)
    } else {
        let s = agg.counter(m).series.get(attrs)?;
        s.delta.map(Acc::of_count)
    }
}

/// `base` after the intervals `leaving` (oldest first) join it, taking
/// their values from the front of `recent`; and how many entries of
/// `recent` that used.
fn folded(base: Acc, recent: &VecDeque<Rec>, leaving: &[(u32, f64)], hist: bool) -> (Acc, usize) {
    let mut base = base;
    let mut used = 0;
    for &(seq, len_s) in leaving {
        let add = match recent.get(used) {
            Some(r) if r.seq == seq => {
                used += 1;
                r.acc(hist)
            }
            _ => Acc::default(),
        };
        base = base.fold(decay(len_s), add);
    }
    (base, used)
}

impl Baseline {
    pub fn new(max_series: usize) -> Self {
        Baseline {
            series: std::array::from_fn(|_| HashMap::new()),
            max_series,
            base_s: 0.0,
            base_n: 0.0,
            window: VecDeque::new(),
            next_seq: 0,
            observed_end: None,
            last_now: None,
            turned_away: 0,
            turned_away_at: None,
        }
    }

    /// Series tracked, all metrics together (at most `max_series`).
    pub fn len(&self) -> usize {
        self.series.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New series not tracked for lack of room, since start.
    pub fn turned_away(&self) -> u64 {
        self.turned_away
    }

    /// How much past the baseline holds, the recent window included
    /// (decayed: it tends to the horizon, 3600 s, and reaches 63 % of it
    /// after an hour).
    pub fn covered(&self) -> Duration {
        let recent: f64 = self.window.iter().map(|w| w.1).sum();
        Duration::from_secs_f64(self.base_s + recent)
    }

    /// How many of the oldest observed intervals leave the recent window
    /// when one of `len_s` seconds joins it: the window keeps the newest
    /// intervals that fit in [`RECENT`], at most [`RECENT_MAX_INTERVALS`],
    /// and always the newest.
    fn leaving(&self, len_s: f64) -> usize {
        let mut total: f64 = self.window.iter().map(|w| w.1).sum::<f64>() + len_s;
        let mut n = self.window.len() + 1;
        let mut k = 0;
        // A millisecond of slack: sixty 1 s intervals measured a little
        // long still fill a minute.
        while n > 1 && (n > RECENT_MAX_INTERVALS || total > RECENT.as_secs_f64() + 1e-3) {
            total -= self.window[k].1;
            k += 1;
            n -= 1;
        }
        k
    }

    /// Adds the aggregator's current interval to the recent window, and
    /// folds the intervals that leave it into the past; call once per
    /// interval after `Aggregator::ingest` (a second call for the same
    /// interval does nothing).
    pub fn observe(&mut self, agg: &Aggregator, now: Instant) {
        if self.observed_end == Some(agg.interval_end) {
            return;
        }
        let dt = interval_s(agg)
            .or_else(|| self.last_now.map(|t| now.duration_since(t).as_secs_f64()))
            .unwrap_or(0.0);
        // The oldest intervals of the recent window join the past.
        let k = self.leaving(dt);
        let leaving: Vec<(u32, f64)> = self.window.drain(..k).collect();
        for &(_, len_s) in &leaving {
            let f = decay(len_s);
            self.base_s = self.base_s * f + len_s;
            self.base_n = self.base_n * f + 1.0;
        }
        for (slot, map) in self.series.iter_mut().enumerate() {
            let hist = Metric::HISTOGRAMS.contains(&TRACKED[slot]);
            for t in map.values_mut() {
                let (base, used) = folded(t.base, &t.recent, &leaving, hist);
                t.base = base;
                t.recent.drain(..used);
                if t.recent.is_empty() && t.recent.capacity() > 0 {
                    t.recent = VecDeque::new();
                }
            }
            map.retain(|_, t| now.duration_since(t.seen) <= HORIZON);
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.window.push_back((seq, dt));

        // This interval joins the recent window.
        let mut new: Vec<(usize, Attrs, Acc)> = Vec::new();
        for (slot, m) in TRACKED.into_iter().enumerate() {
            for (attrs, acc) in deltas(agg, m) {
                if acc.count == 0.0 {
                    continue;
                }
                match self.series[slot].get_mut(attrs) {
                    Some(t) => {
                        // The window holds at most RECENT_MAX_INTERVALS
                        // intervals, so this never folds; it only bounds.
                        while t.recent.len() >= RECENT_MAX_INTERVALS {
                            let hist = Metric::HISTOGRAMS.contains(&m);
                            let old = t.recent.pop_front().map(|r| r.acc(hist));
                            t.base = t.base.fold(1.0, old.unwrap_or_default());
                        }
                        t.recent.push_back(Rec::of(seq, acc));
                        t.seen = now;
                    }
                    None => new.push((slot, attrs.clone(), acc)),
                }
            }
        }
        let room = self.max_series.saturating_sub(self.len());
        if new.len() > room {
            self.evict_idlest(new.len() - room, now);
        }
        // When not all fit, the busiest are kept.
        new.sort_by(|a, b| b.2.count.total_cmp(&a.2.count));
        for (slot, attrs, acc) in new {
            if self.len() < self.max_series {
                self.series[slot].insert(
                    attrs,
                    Track {
                        base: Acc::default(),
                        recent: VecDeque::from([Rec::of(seq, acc)]),
                        seen: now,
                    },
                );
            } else {
                self.turned_away += 1;
                self.turned_away_at = Some(now);
            }
        }
        self.observed_end = Some(agg.interval_end);
        self.last_now = Some(now);
    }

    /// Forgets up to `n` series without events this interval, the longest
    /// idle first.
    fn evict_idlest(&mut self, n: usize, now: Instant) {
        let mut idle: Vec<(Instant, usize, Attrs)> = self
            .series
            .iter()
            .enumerate()
            .flat_map(|(slot, map)| {
                map.iter()
                    .filter(|(_, t)| t.seen < now)
                    .map(move |(a, t)| (t.seen, slot, a.clone()))
            })
            .collect();
        idle.sort_by_key(|(seen, _, _)| *seen);
        for (_, slot, attrs) in idle.into_iter().take(n) {
            self.series[slot].remove(&attrs);
        }
    }

    /// Whether series were turned away within the horizon: a series the
    /// baseline does not know may then be an old one it had no room for,
    /// not a new one.
    fn crowded(&self) -> bool {
        match (self.turned_away_at, self.last_now) {
            (Some(at), Some(last)) => last.duration_since(at) <= HORIZON,
            _ => false,
        }
    }

    /// What changed in the recent window (the last [`RECENT`], the
    /// aggregator's current interval included) against the past before
    /// it, for the series in the SLO's scope (`Scope`) that had events
    /// in the window, best first, at most `max_findings`. Without a past
    /// before the window (a young agent) the past is taken as empty: what
    /// the window holds counts fully. Works before or after `observe` for
    /// the same interval.
    pub fn diagnose(&self, agg: &Aggregator, slo: &Slo, max_findings: usize) -> Vec<Finding> {
        // The recent window as it is once the current interval is observed.
        let observed = self.observed_end == Some(agg.interval_end);
        let (k, current_s) = if observed {
            (0, 0.0)
        } else {
            let s = interval_s(agg)
                .or_else(|| self.window.back().map(|w| w.1))
                .unwrap_or(0.0);
            (self.leaving(s), s)
        };
        let leaving: Vec<(u32, f64)> = self.window.iter().take(k).copied().collect();
        let (mut base_s, mut base_n) = (self.base_s, self.base_n);
        for &(_, len_s) in &leaving {
            let f = decay(len_s);
            base_s = base_s * f + len_s;
            base_n = base_n * f + 1.0;
        }
        let window_s = self.window.iter().skip(k).map(|w| w.1).sum::<f64>() + current_s;
        let window_n = (self.window.len() - k + usize::from(!observed)) as f64;
        if window_s <= 0.0 {
            return Vec::new();
        }
        let crowded = self.crowded();
        // A failed syscall costs, at most, what a bad event of the SLO does:
        // its threshold for a latency SLO (the start-up ENOENTs of a process
        // must not outrank the sleep that made its requests slow).
        let call_error_cost = match &slo.sli {
            crate::slo::Sli::Latency { threshold, .. } => threshold.as_secs_f64().min(ERROR_COST_S),
            crate::slo::Sli::Availability(_) => ERROR_COST_S,
        };
        let scope = Scope::of(agg, slo);
        let mut out = Vec::new();
        let mut judge = |m: Metric, attrs: &Attrs, recent: Acc, base: Acc| {
            if recent.count == 0.0 || !scope.covers(m, attrs, &slo.matchers) {
                return;
            }
            let finding = if m.spec().unit == "s" {
                latency(m, attrs, recent, base)
            } else if base_s > 0.0 && base_n > 0.0 {
                // Events per interval move by their spread over the past
                // intervals (over the window's intervals: √n times it), or
                // by Poisson noise, the larger.
                let mean_n = base.count / base_n;
                let sd = (base.sq / base_n - mean_n * mean_n).max(0.0).sqrt();
                let expected = base.count / base_s * window_s;
                events(
                    m,
                    attrs,
                    recent.count,
                    expected,
                    sd * window_n.sqrt(),
                    call_error_cost,
                )
            } else {
                events(m, attrs, recent.count, 0.0, 0.0, call_error_cost)
            };
            out.extend(finding.filter(|f| f.score >= MIN_SCORE_S));
        };
        for (slot, m) in TRACKED.into_iter().enumerate() {
            let hist = Metric::HISTOGRAMS.contains(&m);
            for (attrs, t) in &self.series[slot] {
                let (base, used) = folded(t.base, &t.recent, &leaving, hist);
                let mut recent = t
                    .recent
                    .iter()
                    .skip(used)
                    .fold(Acc::default(), |a, r| a.fold(1.0, r.acc(hist)));
                if !observed {
                    if let Some(d) = delta(agg, m, attrs) {
                        recent = recent.fold(1.0, d);
                    }
                }
                judge(m, attrs, recent, base);
            }
            // Series the baseline does not know: new ones (no past), or,
            // once it turned series away, maybe old ones it had no room
            // for. Observed, an unknown series was turned away.
            if observed || crowded {
                continue;
            }
            for (attrs, d) in deltas(agg, m) {
                if !self.series[slot].contains_key(attrs) {
                    judge(m, attrs, d, Acc::default());
                }
            }
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.kind.cmp(b.kind))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        out.truncate(max_findings);
        out
    }
}

/// A workload: process name and identity.
type Owner = (Option<Arc<str>>, Option<Arc<Identity>>);

/// The workloads an SLO is about: the owners (process and identity) of the
/// series its own metrics count, and the ports they are on. A series of
/// another metric is in scope when it satisfies the matchers it carries
/// and belongs to one of those owners or is on one of those ports: the
/// server's syscalls, not every process's; the listen drops of the port
/// the SLO's clients connect to, whoever listens. Before the SLO has any
/// series, the matchers alone decide.
struct Scope {
    owners: std::collections::HashSet<Owner>,
    ports: std::collections::HashSet<u16>,
}

impl Scope {
    fn of(agg: &Aggregator, slo: &Slo) -> Scope {
        let mut scope = Scope {
            owners: Default::default(),
            ports: Default::default(),
        };
        let mut add = |a: &Attrs| {
            if crate::slo::engine::matches(slo, a) {
                if a.exe.is_some() {
                    scope.owners.insert((a.exe.clone(), a.identity.clone()));
                }
                if let Some(p) = a.port {
                    scope.ports.insert(p);
                }
            }
        };
        for m in slo.metrics() {
            if Metric::HISTOGRAMS.contains(&m) {
                agg.hist(m).series.keys().for_each(&mut add);
            } else {
                agg.counter(m).series.keys().for_each(&mut add);
            }
        }
        scope
    }

    fn covers(&self, m: Metric, attrs: &Attrs, matchers: &[(Attr, String)]) -> bool {
        if !matches(m, attrs, matchers) {
            return false;
        }
        if self.owners.is_empty() && self.ports.is_empty() {
            return true;
        }
        let owned = attrs.exe.is_some()
            && self
                .owners
                .contains(&(attrs.exe.clone(), attrs.identity.clone()));
        owned || attrs.port.is_some_and(|p| self.ports.contains(&p))
    }
}

/// Whether a series of `m` satisfies every matcher on an attribute `m`
/// carries.
fn matches(m: Metric, attrs: &Attrs, matchers: &[(Attr, String)]) -> bool {
    matchers
        .iter()
        .filter(|(a, _)| m.has(*a))
        .all(|(a, v)| attrs.value(*a).as_deref() == Some(v.as_str()))
}

/// A latency finding: the mean grew clear of the past's noise.
fn latency(m: Metric, attrs: &Attrs, now: Acc, base: Acc) -> Option<Finding> {
    if now.count < 1.0 {
        return None;
    }
    let mean = now.sum_s / now.count;
    // The baseline's mean, and how much the mean of an interval moves
    // about it (count-weighted spread of the past intervals' means).
    let (was, sd) = if base.count > 0.0 {
        let mean_b = base.sum_s / base.count;
        let spread = (base.sq / base.count - mean_b * mean_b).max(0.0).sqrt();
        (mean_b, spread)
    } else {
        (0.0, 0.0)
    };
    let per_call = mean - was;
    if per_call <= 0.0 || (base.count > 0.0 && (mean < GROWTH * was || per_call <= SIGMAS * sd)) {
        return None;
    }
    let excess = now.count * per_call;
    let (kind, subject, weight) = match m {
        Metric::SyscallDuration => {
            let name = attrs.syscall.as_deref().unwrap_or("?");
            let weight = if WAITS.contains(&name) {
                WAIT_WEIGHT
            } else {
                1.0
            };
            (
                kind::SYSCALL_LATENCY,
                format!("{name}{}", who(attrs)),
                weight,
            )
        }
        Metric::TcpConnectDuration => (
            kind::CONNECT_DURATION,
            format!("{}{}", peer(attrs), who(attrs)),
            WAIT_WEIGHT,
        ),
        Metric::TcpClientRequestDuration => (
            kind::CLIENT_REQUEST_DURATION,
            format!("{}{}", peer(attrs), who(attrs)),
            WAIT_WEIGHT,
        ),
        Metric::TcpRtt => (kind::RTT, format!("{}{}", port(attrs), who(attrs)), 1.0),
        _ => return None,
    };
    Some(Finding {
        kind,
        subject,
        now: mean,
        baseline: was,
        unit: "s",
        excess,
        score: weight * excess,
    })
}

/// An event finding: more events than the past's rate gives a window of
/// this length, clear of Poisson noise.
fn events(
    m: Metric,
    attrs: &Attrs,
    now: f64,
    expected: f64,
    sd: f64,
    call_error_cost: f64,
) -> Option<Finding> {
    let excess = now - expected;
    let any_counts = m == Metric::TcpListenDrops;
    if excess < 1.0
        || (!any_counts && (now < GROWTH * expected || excess < SIGMAS * expected.sqrt().max(sd)))
    {
        return None;
    }
    let error = attrs.error.as_deref().unwrap_or("?");
    let (kind, subject, cost) = match m {
        Metric::SyscallErrors => {
            if crate::table::DEFAULT_NOT_FAILURES.contains(&error) {
                return None;
            }
            let call = attrs.syscall.as_deref().unwrap_or("?");
            (
                kind::SYSCALL_ERRORS,
                format!("{error} on {call}{}", who(attrs)),
                call_error_cost,
            )
        }
        Metric::TcpConnectErrors => (
            kind::CONNECT_ERRORS,
            format!("{} {error}{}", peer(attrs), who(attrs)),
            ERROR_COST_S,
        ),
        Metric::TcpRetransmits => (
            kind::RETRANSMITS,
            format!("{}{}", port(attrs), who(attrs)),
            RETRANSMIT_COST_S,
        ),
        Metric::TcpResets => {
            let way = match attrs.direction {
                Some("transmit") => " sent",
                Some("receive") => " received",
                _ => "",
            };
            (
                kind::RESETS,
                format!("{}{way}{}", port(attrs), who(attrs)),
                ERROR_COST_S,
            )
        }
        Metric::TcpListenDrops => (
            kind::LISTEN_DROPS,
            format!("{}{}", port(attrs), who(attrs)),
            ERROR_COST_S,
        ),
        _ => return None,
    };
    Some(Finding {
        kind,
        subject,
        now,
        baseline: expected,
        unit: m.spec().unit,
        excess,
        score: cost * excess,
    })
}

/// ` (exe)`, ` (exe, pod/container)`, or nothing when the owner is unknown.
fn who(a: &Attrs) -> String {
    let id = a.identity.as_deref().and_then(|i| i.display());
    match (a.exe.as_deref(), id) {
        (Some(e), Some(i)) => format!(" ({e}, {i})"),
        (Some(e), None) => format!(" ({e})"),
        (None, Some(i)) => format!(" ({i})"),
        (None, None) => String::new(),
    }
}

/// `127.0.0.1:5432`, `[::1]:5432`.
fn peer(a: &Attrs) -> String {
    let addr = a.address.as_deref().unwrap_or("?");
    let port = a.port.map_or_else(|| "?".into(), |p| p.to_string());
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// `port 8080`, or `unknown port`.
fn port(a: &Attrs) -> String {
    a.port
        .map_or_else(|| "unknown port".into(), |p| format!("port {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Temporality;
    use crate::enrich::identity::Identity;
    use crate::slo::Sli;
    use std::sync::Arc;
    use syscope_common::{bucket_index, Bucket};

    const STEP: Duration = Duration::from_secs(10);
    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    /// Intervals one after another, each a fresh aggregator (only deltas
    /// matter here) whose window is the interval's.
    struct Clock {
        t0: Instant,
        s0: SystemTime,
        step: Duration,
        i: u32,
    }

    impl Clock {
        fn new() -> Self {
            Clock::every(STEP)
        }
        fn every(step: Duration) -> Self {
            Clock {
                t0: Instant::now(),
                s0: SystemTime::now(),
                step,
                i: 0,
            }
        }
        fn next(&mut self) -> Aggregator {
            self.i += 1;
            let mut agg = Aggregator::new(Temporality::Delta, 100_000, 5);
            agg.interval_end = self.s0 + self.step * self.i;
            agg.interval_start = agg.interval_end - self.step;
            agg
        }
        fn now(&self) -> Instant {
            self.t0 + self.step * self.i
        }
    }

    fn hist(n: u64, each_ns: u64) -> HistValue {
        let mut h = HistValue::default();
        for _ in 0..n {
            h.sum_ns += each_ns;
            match bucket_index(each_ns) {
                Bucket::Zero => h.zero += 1,
                Bucket::Index(i) => h.buckets[i] += 1,
            }
        }
        h
    }

    fn sys(exe: &str, call: &str) -> Attrs {
        Attrs {
            syscall: Some(call.into()),
            exe: Some(exe.into()),
            ..Attrs::default()
        }
    }

    fn err(exe: &str, call: &str, errno: &str) -> Attrs {
        Attrs {
            error: Some(errno.into()),
            ..sys(exe, call)
        }
    }

    fn tcp(exe: &str, port: u16) -> Attrs {
        Attrs {
            exe: Some(exe.into()),
            port: Some(port),
            ..Attrs::default()
        }
    }

    fn to(exe: &str, addr: &str, port: u16) -> Attrs {
        Attrs {
            address: Some(addr.into()),
            ..tcp(exe, port)
        }
    }

    fn time(agg: &mut Aggregator, m: Metric, a: Attrs, n: u64, each_ns: u64) {
        let start = agg.interval_start;
        agg.record_for_test(m, a, Some(hist(n, each_ns)), None, start);
    }

    fn count(agg: &mut Aggregator, m: Metric, a: Attrs, n: u64) {
        let start = agg.interval_start;
        agg.record_for_test(m, a, None, Some(n), start);
    }

    fn slo(matchers: &[(Attr, &str)]) -> Slo {
        Slo {
            name: "web".into(),
            sli: Sli::Latency {
                metric: Metric::TcpServerRequestDuration,
                threshold: Duration::from_millis(20),
            },
            objective: 0.99,
            window: Duration::from_secs(30 * 86_400),
            matchers: matchers.iter().map(|(a, v)| (*a, v.to_string())).collect(),
            min_events: 30,
        }
    }

    /// A server on 8080 and its client, 100 requests an interval; `slow`
    /// adds a 50 ms sleep to each request.
    fn web(agg: &mut Aggregator, slow: bool) {
        let sleep = if slow { 50 * MS } else { 0 };
        time(
            agg,
            Metric::SyscallDuration,
            sys("server", "accept4"),
            100,
            MS,
        );
        time(
            agg,
            Metric::SyscallDuration,
            sys("server", "read"),
            100,
            20 * US,
        );
        time(
            agg,
            Metric::SyscallDuration,
            sys("server", "write"),
            100,
            15 * US,
        );
        if slow {
            let s = sys("server", "clock_nanosleep");
            time(agg, Metric::SyscallDuration, s, 100, sleep + 100 * US);
        }
        time(
            agg,
            Metric::SyscallDuration,
            sys("client", "connect"),
            100,
            60 * US,
        );
        time(
            agg,
            Metric::SyscallDuration,
            sys("client", "write"),
            100,
            10 * US,
        );
        // The client waits for the whole request, sleep included.
        let wait = sleep + 100 * US + 150 * US;
        time(
            agg,
            Metric::SyscallDuration,
            sys("client", "read"),
            100,
            wait,
        );
        let peer = to("client", "127.0.0.1", 8080);
        time(
            agg,
            Metric::TcpClientRequestDuration,
            peer.clone(),
            100,
            wait,
        );
        time(agg, Metric::TcpConnectDuration, peer, 100, 40 * US);
        time(agg, Metric::TcpRtt, tcp("server", 8080), 10, 50 * US);
    }

    /// `n` intervals of `f` observed.
    fn run(b: &mut Baseline, c: &mut Clock, n: u32, mut f: impl FnMut(&mut Aggregator, u32)) {
        for k in 0..n {
            let mut agg = c.next();
            f(&mut agg, k);
            b.observe(&agg, c.now());
        }
    }

    fn lines(f: &[Finding]) -> String {
        f.iter().map(|f| format!("{f}\n")).collect()
    }

    #[test]
    fn only_the_slos_workloads_and_ports_are_diagnosed() {
        // A young agent: no past, so everything recent counts fully. A
        // daemon elsewhere on the host sleeps a second at a time; the SLO's
        // server (its request series on 8080) is what the diagnosis is
        // about, and the peers on its port.
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        let mut agg = c.next();
        web(&mut agg, true);
        time(
            &mut agg,
            Metric::TcpServerRequestDuration,
            tcp("server", 8080),
            100,
            50 * MS,
        );
        time(
            &mut agg,
            Metric::SyscallDuration,
            sys("daemon", "clock_nanosleep"),
            30,
            1000 * MS,
        );
        let s = slo(&[(Attr::ServerPort, "8080")]);
        let got = b.diagnose(&agg, &s, 10);
        b.observe(&agg, c.now());
        assert_eq!(
            got[0].subject,
            "clock_nanosleep (server)",
            "{}",
            lines(&got)
        );
        assert!(
            got.iter()
                .all(|f| !f.subject.contains("daemon") && f.subject != "read (client)"),
            "{}",
            lines(&got)
        );
        // The client's requests to the port are the port's.
        assert!(got
            .iter()
            .any(|f| f.kind == kind::CLIENT_REQUEST_DURATION
                && f.subject == "127.0.0.1:8080 (client)"));
    }

    #[test]
    fn a_handler_that_starts_sleeping_puts_the_sleep_first() {
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        run(&mut b, &mut c, 30, |agg, _| web(agg, false));
        let mut agg = c.next();
        web(&mut agg, true);
        let s = slo(&[(Attr::ServerPort, "8080")]);
        // Before and after the interval is observed: the same answer.
        let before = b.diagnose(&agg, &s, 10);
        b.observe(&agg, c.now());
        let after = b.diagnose(&agg, &s, 10);
        assert_eq!(before, after);
        let f = &after[0];
        assert_eq!(f.kind, kind::SYSCALL_LATENCY, "{}", lines(&after));
        assert_eq!(f.subject, "clock_nanosleep (server)");
        assert_eq!(
            f.to_string(),
            "clock_nanosleep (server): 50.1 ms per call, was 0 (+5.01 s recently)"
        );
        // The client's longer waits are there too, below it, at half weight.
        let client_read = after
            .iter()
            .find(|f| f.subject == "read (client)")
            .unwrap_or_else(|| panic!("{}", lines(&after)));
        assert!((client_read.score - 0.5 * client_read.excess).abs() < 1e-9);
        assert!(client_read.excess > 4.9 && client_read.score < f.score / 1.9);
        assert!(after
            .iter()
            .any(|f| f.kind == kind::CLIENT_REQUEST_DURATION
                && f.subject == "127.0.0.1:8080 (client)"));
        // Nothing steady is a finding.
        assert!(
            after.iter().all(|f| !f.subject.starts_with("accept4")
                && !f.subject.starts_with("write")
                && f.kind != kind::RTT
                && f.kind != kind::CONNECT_DURATION),
            "{}",
            lines(&after)
        );
        assert_eq!(b.diagnose(&agg, &s, 1).len(), 1);
    }

    #[test]
    fn an_accept_queue_overflow_yields_listen_drops_on_the_matched_port() {
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        // Another listener drops steadily; ours never did.
        run(&mut b, &mut c, 30, |agg, _| {
            web(agg, false);
            count(agg, Metric::TcpListenDrops, tcp("other", 9090), 5);
        });
        let mut agg = c.next();
        web(&mut agg, false);
        count(&mut agg, Metric::TcpListenDrops, tcp("server", 8080), 12);
        count(&mut agg, Metric::TcpListenDrops, tcp("other", 9090), 50);
        // The clients whose SYNs were dropped retried after 1 s.
        let peer = to("client", "127.0.0.1", 8080);
        time(&mut agg, Metric::TcpConnectDuration, peer, 12, 1_000 * MS);
        let got = b.diagnose(&agg, &slo(&[(Attr::ServerPort, "8080")]), 10);
        let f = &got[0];
        assert_eq!(f.kind, kind::LISTEN_DROPS, "{}", lines(&got));
        assert_eq!(f.subject, "port 8080 (server)");
        assert_eq!(f.now, 12.0);
        assert_eq!(
            f.to_string(),
            "port 8080 (server): 12 listen drops, expected 0.0 (+12.0 recently)"
        );
        assert!(got.iter().any(|f| f.kind == kind::CONNECT_DURATION));
        assert!(!got.iter().any(|f| f.subject.contains("9090")));

        // A single drop above what the port usually drops is a finding.
        let mut agg = c.next();
        web(&mut agg, false);
        count(&mut agg, Metric::TcpListenDrops, tcp("other", 9090), 6);
        let got = b.diagnose(&agg, &slo(&[(Attr::ServerPort, "9090")]), 10);
        assert_eq!(got.len(), 1, "{}", lines(&got));
        assert_eq!(got[0].kind, kind::LISTEN_DROPS);
        assert_eq!(got[0].subject, "port 9090 (other)");
    }

    #[test]
    fn matchers_apply_only_to_the_attributes_a_metric_carries() {
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        let web_id = Arc::new(Identity {
            container_name: Some("web".into()),
            ..Identity::default()
        });
        let in_web = |a: Attrs| Attrs {
            identity: Some(web_id.clone()),
            ..a
        };
        run(&mut b, &mut c, 10, |agg, _| web(agg, false));
        let mut agg = c.next();
        let sleep = 50 * MS;
        time(
            &mut agg,
            Metric::SyscallDuration,
            sys("server", "nanosleep"),
            10,
            sleep,
        );
        time(
            &mut agg,
            Metric::SyscallDuration,
            sys("other", "nanosleep"),
            10,
            sleep,
        );
        let boxed = in_web(sys("server", "fsync"));
        time(&mut agg, Metric::SyscallDuration, boxed, 10, sleep);
        let enoent = err("server", "openat", "ENOENT");
        count(&mut agg, Metric::SyscallErrors, enoent, 20);
        count(&mut agg, Metric::TcpRetransmits, tcp("server", 8080), 30);
        count(&mut agg, Metric::TcpRetransmits, tcp("server", 9090), 30);
        let refused = Attrs {
            error: Some("ECONNREFUSED".into()),
            ..to("server", "10.0.0.7", 5432)
        };
        count(&mut agg, Metric::TcpConnectErrors, refused, 20);
        let subjects = |m: &[(Attr, &str)]| -> Vec<String> {
            let mut s: Vec<String> = b
                .diagnose(&agg, &slo(m), 100)
                .into_iter()
                .map(|f| format!("{} {}", f.kind, f.subject))
                .collect();
            s.sort();
            s
        };
        // The port excludes the retransmits of 9090 and the connect errors
        // to 5432, not the syscalls (no port); the name excludes `other`.
        assert_eq!(
            subjects(&[(Attr::ServerPort, "8080"), (Attr::ExecutableName, "server")]),
            [
                "syscall.errors ENOENT on openat (server)",
                "syscall.latency fsync (server, web)",
                "syscall.latency nanosleep (server)",
                "tcp.retransmits port 8080 (server)",
            ]
        );
        // Identity attributes: a series without them does not match.
        assert_eq!(
            subjects(&[(Attr::ContainerName, "web")]),
            ["syscall.latency fsync (server, web)"]
        );
        // The errno of a connect, and the peer refusing them.
        let got = subjects(&[(Attr::ServerAddress, "10.0.0.7")]);
        assert!(
            got.contains(&"tcp.connect.errors 10.0.0.7:5432 ECONNREFUSED (server)".to_string()),
            "{got:?}"
        );
        // Retransmits carry no address: the address matcher keeps them all.
        assert!(
            got.contains(&"tcp.retransmits port 9090 (server)".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn errnos_that_grew_and_the_peers_refusing_connects() {
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        let steady = |agg: &mut Aggregator| {
            time(
                agg,
                Metric::SyscallDuration,
                sys("api", "connect"),
                100,
                60 * US,
            );
            count(
                agg,
                Metric::SyscallErrors,
                err("api", "openat", "ENOENT"),
                20,
            );
            count(
                agg,
                Metric::SyscallErrors,
                err("api", "read", "EAGAIN"),
                500,
            );
        };
        run(&mut b, &mut c, 30, |agg, _| steady(agg));
        let mut agg = c.next();
        steady(&mut agg);
        // Not failures, however many.
        count(
            &mut agg,
            Metric::SyscallErrors,
            err("api", "read", "EAGAIN"),
            5000,
        );
        let refused = err("api", "connect", "ECONNREFUSED");
        count(&mut agg, Metric::SyscallErrors, refused, 40);
        let peer = Attrs {
            error: Some("ECONNREFUSED".into()),
            ..to("api", "::1", 5432)
        };
        count(&mut agg, Metric::TcpConnectErrors, peer, 40);
        let got = b.diagnose(&agg, &slo(&[(Attr::ExecutableName, "api")]), 10);
        // The SLO is a latency one: a failed syscall costs its threshold,
        // a refused connect a retry (1 s).
        assert_eq!(
            lines(&got),
            "[::1]:5432 ECONNREFUSED (api): 40 connect errors, expected 0.0 (+40.0 recently)\n\
             ECONNREFUSED on connect (api): 40 errors, expected 0.0 (+40.0 recently)\n"
        );
        assert_eq!(got[0].unit, "{error}");
        assert_eq!(got[0].score, 40.0 * ERROR_COST_S);
    }

    #[test]
    fn attribute_values_are_as_exported() {
        let a = Attrs {
            port: Some(8080),
            direction: Some("receive"),
            ..sys("nginx", "read")
        };
        assert_eq!(a.value(Attr::ServerPort).as_deref(), Some("8080"));
        assert_eq!(a.value(Attr::ExecutableName).as_deref(), Some("nginx"));
        assert_eq!(a.value(Attr::IoDirection).as_deref(), Some("receive"));
        assert_eq!(a.value(Attr::ContainerName), None);
    }

    /// A steady workload that jitters (±25 % durations, ±30 % counts, a
    /// blocking wait whose mean swings ±50 %) gives no finding.
    #[test]
    fn a_steady_workload_gives_no_findings() {
        let jitter = |k: u32, salt: u32, pct: u64| -> u64 {
            // Deterministic pseudo-random in 100 ± pct.
            let x = (k.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % 1000;
            100 - pct + u64::from(x) * 2 * pct / 1000
        };
        let workload = |agg: &mut Aggregator, k: u32| {
            let j = |salt, pct| jitter(k, salt, pct);
            let n = 100 * j(1, 30) / 100;
            time(
                agg,
                Metric::SyscallDuration,
                sys("server", "read"),
                n,
                20 * US * j(2, 25) / 100,
            );
            time(
                agg,
                Metric::SyscallDuration,
                sys("server", "write"),
                n,
                15 * US * j(3, 25) / 100,
            );
            let ep = sys("server", "epoll_wait");
            time(
                agg,
                Metric::SyscallDuration,
                ep,
                20,
                200 * MS * j(4, 50) / 100,
            );
            let fsync = sys("server", "fdatasync");
            time(
                agg,
                Metric::SyscallDuration,
                fsync,
                1 + k as u64 % 3,
                3 * MS * j(5, 40) / 100,
            );
            let peer = to("server", "10.0.0.7", 5432);
            time(
                agg,
                Metric::TcpClientRequestDuration,
                peer,
                n,
                2 * MS * j(6, 25) / 100,
            );
            time(
                agg,
                Metric::TcpRtt,
                tcp("server", 8080),
                10,
                50 * US * j(7, 25) / 100,
            );
            count(
                agg,
                Metric::SyscallErrors,
                err("server", "read", "EAGAIN"),
                5 * n,
            );
            let enoent = err("server", "openat", "ENOENT");
            count(agg, Metric::SyscallErrors, enoent, 20 * j(8, 30) / 100);
            if k.is_multiple_of(4) {
                count(agg, Metric::TcpRetransmits, tcp("server", 8080), 2);
            }
        };
        let s = slo(&[(Attr::ExecutableName, "server")]);
        // 10 s intervals (a window of 6), 1 s intervals (60), each once
        // there is a past before the window.
        for (step, from) in [(STEP, 30), (Duration::from_secs(1), 90)] {
            let (mut b, mut c) = (Baseline::new(1000), Clock::every(step));
            run(&mut b, &mut c, from, workload);
            for k in from..from + 120 {
                let mut agg = c.next();
                workload(&mut agg, k);
                let got = b.diagnose(&agg, &s, 10);
                assert!(got.is_empty(), "{step:?}, interval {k}:\n{}", lines(&got));
                b.observe(&agg, c.now());
            }
        }
    }

    #[test]
    fn without_a_past_everything_counts_fully() {
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        let mut agg = c.next();
        web(&mut agg, true);
        let before = b.diagnose(&agg, &slo(&[]), 10);
        assert_eq!(b.covered(), Duration::ZERO);
        b.observe(&agg, c.now());
        assert_eq!(before, b.diagnose(&agg, &slo(&[]), 10));
        assert_eq!(before[0].subject, "clock_nanosleep (server)");
        assert_eq!(before[0].baseline, 0.0);
        // The steady series are there too (nothing to compare them with),
        // ranked by what they cost.
        assert!(before.iter().any(|f| f.subject == "accept4 (server)"));
        assert_eq!(b.covered(), STEP);
    }

    /// Port 8080's accept queue is full (backlog 0): 20 clients' SYNs are
    /// dropped (`Drop`: and retransmitted), twice, 1 s apart; the clients
    /// give up at 1.5 s (`GiveUp`: their connects fail after 1.5 s; a
    /// script sleeps a second). With 1 s intervals the burn starts an
    /// interval or two after the drops.
    #[derive(Clone, Copy, PartialEq)]
    enum Queue {
        Calm,
        Drop,
        GiveUp,
    }

    fn queue(agg: &mut Aggregator, q: Queue) {
        match q {
            Queue::Calm => {}
            Queue::Drop => {
                count(agg, Metric::TcpListenDrops, tcp("server", 8080), 20);
                count(agg, Metric::TcpRetransmits, tcp("client", 8080), 20);
            }
            Queue::GiveUp => {
                let peer = Attrs {
                    error: Some("ETIMEDOUT".into()),
                    ..to("client", "127.0.0.1", 8080)
                };
                count(agg, Metric::TcpConnectErrors, peer, 20);
                let e = err("client", "connect", "ETIMEDOUT");
                count(agg, Metric::SyscallErrors, e, 20);
                let connect = sys("client", "connect");
                time(agg, Metric::SyscallDuration, connect, 20, 1_500 * MS);
                let sleep = sys("script", "clock_nanosleep");
                time(agg, Metric::SyscallDuration, sleep, 1, 1_000 * MS);
            }
        }
    }

    /// Runs `qs` (one a second, with the web traffic), diagnoses the last
    /// before and after observing it (the same answer), returns that.
    fn burn(b: &mut Baseline, c: &mut Clock, qs: &[Queue]) -> Vec<Finding> {
        let s = slo(&[(Attr::ServerPort, "8080")]);
        let (last, first) = qs.split_last().unwrap();
        run(b, c, first.len() as u32, |agg, k| {
            web(agg, false);
            queue(agg, first[k as usize]);
        });
        let mut agg = c.next();
        web(&mut agg, false);
        queue(&mut agg, *last);
        let before = b.diagnose(&agg, &s, 10);
        b.observe(&agg, c.now());
        assert_eq!(before, b.diagnose(&agg, &s, 10));
        before
    }

    #[test]
    fn listen_drops_an_interval_or_two_before_the_burn_are_still_named() {
        use Queue::*;
        let drops = |got: &[Finding]| -> Option<f64> {
            got.iter()
                .find(|f| f.kind == kind::LISTEN_DROPS && f.subject == "port 8080 (server)")
                .map(|f| f.now)
        };
        let second = Duration::from_secs(1);
        let steady = || {
            let (mut b, mut c) = (Baseline::new(1000), Clock::every(second));
            run(&mut b, &mut c, 120, |agg, _| web(agg, false));
            (b, c)
        };
        // Dropped at 0 s and 1 s, given up at 1.5 s: the drops lead.
        let (mut b, mut c) = steady();
        let got = burn(&mut b, &mut c, &[Drop, Drop, GiveUp]);
        assert_eq!(got[0].kind, kind::LISTEN_DROPS, "{}", lines(&got));
        assert_eq!(
            got[0].to_string(),
            "port 8080 (server): 40 listen drops, expected 0.0 (+40.0 recently)"
        );
        assert!(got.iter().any(|f| f.kind == kind::CONNECT_ERRORS));
        // One interval, or two, between the drops and the burn.
        for qs in [&[Drop, GiveUp][..], &[Drop, Calm, GiveUp]] {
            let (mut b, mut c) = steady();
            let got = burn(&mut b, &mut c, qs);
            assert_eq!(drops(&got), Some(20.0), "{}", lines(&got));
        }
        // Drops that left the window are the past: the same again is less
        // of a change, and a burn long after names no drops.
        let (mut b, mut c) = steady();
        let got = burn(&mut b, &mut c, &[Drop; 1]);
        assert_eq!(drops(&got), Some(20.0));
        run(&mut b, &mut c, 60, |agg, _| web(agg, false));
        let got = burn(&mut b, &mut c, &[GiveUp]);
        assert_eq!(drops(&got), None, "{}", lines(&got));
        let got = burn(&mut b, &mut c, &[Drop]);
        let f = got.iter().find(|f| f.kind == kind::LISTEN_DROPS).unwrap();
        assert!(f.baseline > 0.0 && f.excess < 20.0, "{f}");
    }

    #[test]
    fn a_young_agent_names_the_drops_of_its_first_intervals() {
        use Queue::*;
        let second = Duration::from_secs(1);
        // The agent starts a second before the workload, whose SYNs are
        // dropped at once and again a second later.
        for qs in [&[Drop, Drop, GiveUp][..], &[Calm, Drop, Drop, GiveUp]] {
            let (mut b, mut c) = (Baseline::new(1000), Clock::every(second));
            let got = burn(&mut b, &mut c, qs);
            assert_eq!(
                got[0].to_string(),
                "port 8080 (server): 40 listen drops, expected 0.0 (+40.0 recently)",
                "{}",
                lines(&got)
            );
        }
        // Dropped only in the first interval: still named.
        let (mut b, mut c) = (Baseline::new(1000), Clock::every(second));
        let got = burn(&mut b, &mut c, &[Drop, Calm, GiveUp]);
        assert!(
            got.iter()
                .any(|f| f.kind == kind::LISTEN_DROPS && f.now == 20.0),
            "{}",
            lines(&got)
        );
        // A handler that starts sleeping in the third second.
        let (mut b, mut c) = (Baseline::new(1000), Clock::every(second));
        run(&mut b, &mut c, 2, |agg, _| web(agg, false));
        let mut agg = c.next();
        web(&mut agg, true);
        let got = b.diagnose(&agg, &slo(&[(Attr::ServerPort, "8080")]), 10);
        assert_eq!(
            got[0].subject,
            "clock_nanosleep (server)",
            "{}",
            lines(&got)
        );
        // ... or in the third interval of 10 s.
        let (mut b, mut c) = (Baseline::new(1000), Clock::new());
        run(&mut b, &mut c, 2, |agg, _| web(agg, false));
        let mut agg = c.next();
        web(&mut agg, true);
        let got = b.diagnose(&agg, &slo(&[(Attr::ServerPort, "8080")]), 10);
        assert_eq!(
            got[0].subject,
            "clock_nanosleep (server)",
            "{}",
            lines(&got)
        );
    }

    #[test]
    fn the_recent_window_is_bounded() {
        assert_eq!(std::mem::size_of::<Rec>(), 16);
        let ring = |b: &Baseline| -> (usize, usize) {
            let t = &b.series[0][&sys("server", "read")];
            (t.recent.len(), t.recent.capacity())
        };
        let read = |agg: &mut Aggregator, _| {
            time(agg, Metric::SyscallDuration, sys("server", "read"), 1, MS);
        };
        // A minute of 1 s intervals; of 10 s; a single long interval.
        for (step_ms, n) in [(1_000, 60), (10_000, 6), (120_000, 1)] {
            let (mut b, mut c) = (
                Baseline::new(10),
                Clock::every(Duration::from_millis(step_ms)),
            );
            run(&mut b, &mut c, 200, read);
            assert_eq!(b.window.len(), n, "{step_ms} ms");
            assert_eq!(ring(&b).0, n, "{step_ms} ms");
            // The allocation the memory docs count: 64 slots at most.
            assert!(ring(&b).1 <= RECENT_MAX_INTERVALS, "{step_ms} ms");
        }
        // Short intervals: at most RECENT_MAX_INTERVALS.
        let (mut b, mut c) = (Baseline::new(10), Clock::every(Duration::from_millis(100)));
        run(&mut b, &mut c, 1000, read);
        assert_eq!(b.window.len(), RECENT_MAX_INTERVALS);
        let (len, cap) = ring(&b);
        assert_eq!(len, RECENT_MAX_INTERVALS);
        assert!(cap <= 2 * RECENT_MAX_INTERVALS, "{cap}");
        let recent: f64 = b.window.iter().map(|w| w.1).sum();
        assert!((recent - 6.4).abs() < 1e-6, "{recent}");
        // Idle for the window, a series frees its ring.
        run(&mut b, &mut c, 64, |_, _| {});
        assert_eq!(ring(&b), (0, 0));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_idle_series_make_room() {
        assert!(
            std::mem::size_of::<(Attrs, Track)>() <= 168,
            "{} bytes a series",
            std::mem::size_of::<(Attrs, Track)>()
        );
        let (mut b, mut c) = (Baseline::new(50), Clock::new());
        let many = |agg: &mut Aggregator, from: u32, n: u32| {
            for i in from..from + n {
                let a = sys("server", &format!("call{i}"));
                time(agg, Metric::SyscallDuration, a, 1, MS);
            }
        };
        // 200 series at once: 50 tracked, 150 turned away.
        run(&mut b, &mut c, 1, |agg, _| many(agg, 0, 200));
        assert_eq!(b.len(), 50);
        assert_eq!(b.turned_away(), 150);
        // While full of active series, an unknown series may be an old one
        // turned away: it is not reported as new.
        let mut agg = c.next();
        many(&mut agg, 0, 200);
        time(
            &mut agg,
            Metric::SyscallDuration,
            sys("server", "nanosleep"),
            10,
            50 * MS,
        );
        assert!(b.diagnose(&agg, &slo(&[]), 10).is_empty());
        b.observe(&agg, c.now());
        assert_eq!(b.len(), 50);
        // New series take the places of idle ones.
        run(&mut b, &mut c, 1, |agg, _| many(agg, 1000, 20));
        assert_eq!(b.len(), 50);
        // After an hour without events, every series is forgotten.
        run(&mut b, &mut c, 361, |_, _| {});
        assert_eq!(b.len(), 0);
        // ... and once nothing was turned away for an hour, an unknown
        // series is new again.
        let mut agg = c.next();
        time(
            &mut agg,
            Metric::SyscallDuration,
            sys("server", "nanosleep"),
            10,
            50 * MS,
        );
        let got = b.diagnose(&agg, &slo(&[]), 10);
        assert_eq!(got.len(), 1, "{}", lines(&got));
        assert!(b.covered() > Duration::from_secs(2000));
    }
}

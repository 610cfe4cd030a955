//! The agent's own metrics (`syscope.*`): every stage counts into
//! [`SelfStats`] (atomics), [`CATALOGUE`] describes each metric once, and
//! [`SelfMetrics`] encodes them as a second scope (`syscope.self`) that the
//! exporter adds to every request it sends: same resource, buffer and
//! retries as the SLIs, so an outage is reported once the collector is back.
//! docs/metrics.md's table and the live table's header read the same numbers.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric as OtlpMetric,
    NumberDataPoint, ScopeMetrics, Sum,
};
use syscope_common::{counter, maps};

use crate::aggregate::{otlp, Metric};

/// The scope the agent's own metrics travel under, beside the SLIs' `syscope`.
pub const SCOPE: &str = "syscope.self";

/// Counters every stage updates. Plain atomics: cheap on the hot paths,
/// read without locks when a request is sent.
#[derive(Debug)]
pub struct SelfStats {
    /// When counting started: the start of every cumulative self-metric.
    pub started: SystemTime,
    /// OTLP export attempts that failed (each retry counts).
    pub export_failures: AtomicU64,
    /// Export requests delivered.
    pub export_successes: AtomicU64,
    /// Protobuf size of the last metrics request delivered (SLIs and SLOs).
    pub export_request_bytes: AtomicU64,
    /// Intervals never delivered, by [`DropReason`].
    pub export_dropped: [AtomicU64; DropReason::COUNT],
    /// Intervals waiting in the unsent buffer right now (a gauge).
    pub export_buffered_intervals: AtomicU64,
    /// Duration of the last successful export, in microseconds (a gauge).
    pub export_duration_us: AtomicU64,
    /// Duration of the last collection, in microseconds (a gauge).
    pub collect_duration_us: AtomicU64,
    /// Syscalls measured (from the histograms' counts).
    pub events: AtomicU64,
    /// The kernel's counters (`syscope_common::counter`), totals since load.
    pub kernel: [AtomicU64; counter::COUNT as usize],
    /// Per kernel map (by `maps::MAPS` id): configured capacity, and entries
    /// at the last read (gauges; see [`entries_counted`]).
    pub map_capacity: [AtomicU64; maps::COUNT],
    pub map_entries: [AtomicU64; maps::COUNT],
    /// Series kept per metric before folding into the overflow series.
    pub series_limit: AtomicU64,
    /// Per SLI metric (by `Metric::index`): live series (gauge), and
    /// attribute sets folded into the overflow series since start (counter).
    pub series_active: [AtomicU64; Metric::COUNT],
    pub series_folded: [AtomicU64; Metric::COUNT],
    /// Series that gave way to new ones under pressure since start.
    pub series_evicted: [AtomicU64; Metric::COUNT],
    /// Per SLI metric: 1 when a kernel hook serves it (gauge).
    pub signal_served: [AtomicU64; Metric::COUNT],
    /// Prometheus endpoint: scrapes answered (counter), connections closed
    /// at the limit or a deadline (counter), last rendering's duration (µs)
    /// and text size (gauges).
    pub prometheus_scrapes: AtomicU64,
    pub prometheus_connections_closed: AtomicU64,
    pub prometheus_render_us: AtomicU64,
    pub prometheus_exposition_bytes: AtomicU64,
    /// cgroup identity cache (`enrich::cgroup`): entries kept (live and
    /// departed) and its bound (gauges), departed ones among them (gauge),
    /// births learned from the kernel and entries not kept because it was
    /// full (counters).
    pub identity_entries: AtomicU64,
    pub identity_capacity: AtomicU64,
    pub identity_departed: AtomicU64,
    pub identity_births: AtomicU64,
    pub identity_dropped: AtomicU64,
    /// SLO burn diagnosis (`slo::diagnosis`): series in its baseline and
    /// its bound (gauges), new series it had no room for (counter); failed
    /// writes of the SLO history to the state directory (counter).
    pub diagnosis_series: AtomicU64,
    pub diagnosis_capacity: AtomicU64,
    pub diagnosis_turned_away: AtomicU64,
    pub slo_state_write_failures: AtomicU64,
    pub syscalls_attached: AtomicU64,
    /// Per program of [`PROGRAMS`]: run time (µs) and runs, from the
    /// kernel's statistics (`kernel.bpf_stats_enabled`).
    pub program_run_us: [AtomicU64; PROGRAMS.len()],
    pub program_runs: [AtomicU64; PROGRAMS.len()],
    pub bpf_stats_enabled: AtomicU64,
    pub syscalls_selected_cgroups: AtomicU64,
    pub syscalls_selected_names: AtomicU64,
    pub syscalls_selection_turned_away: AtomicU64,
    /// The agent's own identity (`resource.self_attributes`), set once at
    /// start: attributes of the `syscope.self` scope.
    pub own_attributes: std::sync::OnceLock<Vec<(String, String)>>,
}

impl Default for SelfStats {
    fn default() -> Self {
        fn zeros<const N: usize>() -> [AtomicU64; N] {
            std::array::from_fn(|_| AtomicU64::new(0))
        }
        Self {
            started: SystemTime::now(),
            export_failures: AtomicU64::new(0),
            export_successes: AtomicU64::new(0),
            export_request_bytes: AtomicU64::new(0),
            export_dropped: zeros(),
            export_buffered_intervals: AtomicU64::new(0),
            export_duration_us: AtomicU64::new(0),
            collect_duration_us: AtomicU64::new(0),
            events: AtomicU64::new(0),
            kernel: zeros(),
            map_capacity: zeros(),
            map_entries: zeros(),
            series_limit: AtomicU64::new(0),
            series_active: zeros(),
            series_folded: zeros(),
            series_evicted: zeros(),
            signal_served: zeros(),
            prometheus_scrapes: AtomicU64::new(0),
            prometheus_connections_closed: AtomicU64::new(0),
            prometheus_render_us: AtomicU64::new(0),
            prometheus_exposition_bytes: AtomicU64::new(0),
            identity_entries: AtomicU64::new(0),
            identity_capacity: AtomicU64::new(0),
            identity_departed: AtomicU64::new(0),
            identity_births: AtomicU64::new(0),
            identity_dropped: AtomicU64::new(0),
            diagnosis_series: AtomicU64::new(0),
            diagnosis_capacity: AtomicU64::new(0),
            diagnosis_turned_away: AtomicU64::new(0),
            slo_state_write_failures: AtomicU64::new(0),
            syscalls_attached: AtomicU64::new(0),
            program_run_us: zeros(),
            program_runs: zeros(),
            bpf_stats_enabled: AtomicU64::new(0),
            syscalls_selected_cgroups: AtomicU64::new(0),
            syscalls_selected_names: AtomicU64::new(0),
            syscalls_selection_turned_away: AtomicU64::new(0),
            own_attributes: std::sync::OnceLock::new(),
        }
    }
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

    /// Intervals dropped for `reason` since start.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        Self::get(&self.export_dropped[reason as usize])
    }

    /// Intervals dropped for any reason since start.
    pub fn dropped_total(&self) -> u64 {
        self.export_dropped.iter().map(Self::get).sum()
    }

    /// One-line health summary for logs and the live table: updates
    /// dropped by full maps (only maps that dropped any), series, folds.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| Self::get(a);
        let full: Vec<String> = maps::MAPS
            .iter()
            .filter_map(|m| {
                let n = g(&self.kernel[counter::map_full(m.id) as usize]);
                (n > 0).then(|| format!("{}={n}", m.label))
            })
            .collect();
        let series: u64 = self.series_active.iter().map(g).sum();
        let folded: u64 = self.series_folded.iter().map(g).sum();
        format!(
            "events={} map_full({}) series={} folded={} collect={}µs",
            g(&self.events),
            if full.is_empty() {
                "none".to_owned()
            } else {
                full.join(" ")
            },
            series,
            folded,
            g(&self.collect_duration_us),
        )
    }
}

/// Why an interval was never delivered (`syscope.export.dropped{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    BufferFull,
    Rejected,
    Shutdown,
}

impl DropReason {
    pub const COUNT: usize = 3;
    pub const ALL: [DropReason; Self::COUNT] = [Self::BufferFull, Self::Rejected, Self::Shutdown];

    /// The `reason` attribute's value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::BufferFull => "buffer_full",
            Self::Rejected => "rejected",
            Self::Shutdown => "shutdown",
        }
    }

    /// When it happens, for docs.
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::BufferFull => "the collector was unreachable (or kept failing) for longer than `buffer_intervals` intervals: the oldest unsent interval made room for the newest",
            Self::Rejected => "the collector answered with an error the OTLP spec says not to retry (HTTP 400, 401, 403, 404, 413, 500, ...; gRPC `INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED`, `INTERNAL`, `RESOURCE_EXHAUSTED` without `RetryInfo`, ...)",
            Self::Shutdown => "still unsent when `shutdown_grace` ended; the agent is exiting, so only its log reports these",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The programs whose cost is reported (`program=<name>`): those that run
/// per event (syscalls, socket and TCP events, process and cgroup life), and
/// the listener poll the agent runs once per listener per interval.
pub const PROGRAMS: [&str; 17] = {
    use syscope_common::names as n;
    [
        n::BTF_ENTER,
        n::BTF_EXIT,
        n::TP_ENTER,
        n::TP_EXIT,
        n::BTF_THREAD_EXIT,
        n::BTF_RENAME,
        n::BTF_EXEC,
        n::BTF_CGROUP_MKDIR,
        n::TCP_STATE.0,
        n::SOCK_SEND.0,
        n::SOCK_RECV.0,
        n::TCP_SEND_RESET.0,
        n::TCP_RECEIVE_RESET.0,
        n::TCP_DESTROY.0,
        n::TCP_RETRANSMIT.0,
        n::TCP_RETRANSMIT_OLD,
        n::LISTEN_POLL,
    ]
};

/// Whether `syscope.kernel.map.entries` is reported for a map: all but
/// `threads`, whose entries would take one syscall each to count (an LRU
/// map keeps no count the agent can read).
pub fn entries_counted(m: &maps::MapSpec) -> bool {
    m.id != maps::THREADS
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instrument {
    /// Monotonic sum, in the SLIs' temporality.
    Counter,
    /// The value now.
    Gauge,
}

/// The attribute that tells a metric's points apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// `map=<label>`, one point per kernel map.
    Map,
    /// `map=<label>` for the maps whose entries are counted.
    CountedMap,
    /// `metric=<name>`, one point per SLI metric.
    Metric,
    /// `reason=<reason>`, one point per [`DropReason`].
    Reason,
    /// `program=<name>`, one point per program of [`PROGRAMS`].
    Program,
}

impl Dimension {
    pub const fn key(self) -> &'static str {
        match self {
            Self::Map | Self::CountedMap => "map",
            Self::Metric => "metric",
            Self::Reason => "reason",
            Self::Program => "program",
        }
    }

    /// Each point's index into its `SelfStats` array, and attribute value.
    pub fn values(self) -> Vec<(usize, &'static str)> {
        let maps = |keep: fn(&maps::MapSpec) -> bool| {
            maps::MAPS
                .iter()
                .filter(|m| keep(m))
                .map(|m| (m.id, m.label))
                .collect()
        };
        match self {
            Self::Map => maps(|_| true),
            Self::CountedMap => maps(entries_counted),
            Self::Metric => Metric::all().map(|m| (m.index(), m.spec().name)).collect(),
            Self::Reason => DropReason::ALL
                .iter()
                .map(|r| (*r as usize, r.label()))
                .collect(),
            Self::Program => PROGRAMS.iter().copied().enumerate().collect(),
        }
    }
}

/// How a point's value is read (by its dimension index, 0 without one).
#[derive(Clone, Copy)]
pub enum Read {
    /// An integer.
    Count(fn(&SelfStats, usize) -> u64),
    /// Microseconds, exported as seconds (a double).
    Micros(fn(&SelfStats, usize) -> u64),
}

/// One self-metric: everything the encoder and the docs need.
pub struct SelfMetric {
    pub name: &'static str,
    pub unit: &'static str,
    pub instrument: Instrument,
    pub description: &'static str,
    pub dimension: Option<Dimension>,
    pub read: Read,
}

impl SelfMetric {
    /// (index, attribute value) of each point; one point without attribute.
    fn points(&self) -> Vec<(usize, Option<&'static str>)> {
        match self.dimension {
            Some(d) => d.values().into_iter().map(|(i, v)| (i, Some(v))).collect(),
            None => vec![(0, None)],
        }
    }

    fn raw(&self, stats: &SelfStats, index: usize) -> u64 {
        match self.read {
            Read::Count(f) | Read::Micros(f) => f(stats, index),
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    SelfStats::get(a)
}

/// Every self-metric the agent exports, in export (and docs) order.
pub const CATALOGUE: [SelfMetric; 39] = {
    use Dimension::*;
    use Instrument::*;
    use Read::*;
    [
        SelfMetric {
            name: "syscope.kernel.map.full",
            unit: "{update}",
            instrument: Counter,
            description: "Kernel updates that found a map full: folded into the metric's overflow series (syscall and TCP measurements), or dropped (the other maps).",
            dimension: Some(Map),
            read: Count(|s, i| get(&s.kernel[counter::map_full(i) as usize])),
        },
        SelfMetric {
            name: "syscope.kernel.map.entries",
            unit: "{entry}",
            instrument: Gauge,
            description: "Entries in a kernel map at the last read (not `threads`: counting an LRU map's entries takes a syscall each).",
            dimension: Some(CountedMap),
            read: Count(|s, i| get(&s.map_entries[i])),
        },
        SelfMetric {
            name: "syscope.kernel.map.capacity",
            unit: "{entry}",
            instrument: Gauge,
            description: "Configured capacity of a kernel map.",
            dimension: Some(Map),
            read: Count(|s, i| get(&s.map_capacity[i])),
        },
        SelfMetric {
            name: "syscope.signal.served",
            unit: "1",
            instrument: Gauge,
            description: "1 when a kernel hook on this node serves the metric, 0 when none can (which hook, or why none: the startup log, `/readyz`, `syscope check`).",
            dimension: Some(Metric),
            read: Count(|s, i| get(&s.signal_served[i])),
        },
        SelfMetric {
            name: "syscope.series.limit",
            unit: "{series}",
            instrument: Gauge,
            description: "Series kept per metric before folding into the overflow series.",
            dimension: None,
            read: Count(|s, _| get(&s.series_limit)),
        },
        SelfMetric {
            name: "syscope.kernel.events",
            unit: "{syscall}",
            instrument: Counter,
            description: "Syscalls measured in the kernel.",
            dimension: None,
            read: Count(|s, _| get(&s.events)),
        },
        SelfMetric {
            name: "syscope.kernel.exits_unmatched",
            unit: "{event}",
            instrument: Counter,
            description: "Syscall exits without a recorded entry, of threads that were in a syscall when the programs attached.",
            dimension: None,
            read: Count(|s, _| get(&s.kernel[counter::EXIT_WITHOUT_ENTER as usize])),
        },
        SelfMetric {
            name: "syscope.kernel.threads_evicted",
            unit: "{syscall}",
            instrument: Counter,
            description: "Syscalls not measured because their thread's entry was evicted from the full LRU thread map (raise `limits.kernel_maps.threads`).",
            dimension: None,
            read: Count(|s, _| get(&s.kernel[counter::THREAD_EVICTED as usize])),
        },
        SelfMetric {
            name: "syscope.kernel.cgroup_events_lost",
            unit: "{event}",
            instrument: Counter,
            description: "cgroup births the kernel could not report (event ring buffer full); such cgroups are resolved by the next tree walk if they still exist.",
            dimension: None,
            read: Count(|s, _| get(&s.kernel[counter::CGROUP_EVENTS_LOST as usize])),
        },
        SelfMetric {
            name: "syscope.identity.cgroups",
            unit: "{cgroup}",
            instrument: Gauge,
            description: "cgroups whose identity (container, pod, unit) is kept: live ones and removed ones within `identity.retention`.",
            dimension: None,
            read: Count(|s, _| get(&s.identity_entries)),
        },
        SelfMetric {
            name: "syscope.identity.capacity",
            unit: "{cgroup}",
            instrument: Gauge,
            description: "Most cgroups whose identity is kept (`identity.max_cgroups`).",
            dimension: None,
            read: Count(|s, _| get(&s.identity_capacity)),
        },
        SelfMetric {
            name: "syscope.identity.departed",
            unit: "{cgroup}",
            instrument: Gauge,
            description: "Removed cgroups whose identity is still kept, so late series keep it.",
            dimension: None,
            read: Count(|s, _| get(&s.identity_departed)),
        },
        SelfMetric {
            name: "syscope.identity.births",
            unit: "{cgroup}",
            instrument: Counter,
            description: "cgroups resolved at birth, from the kernel's cgroup_mkdir events.",
            dimension: None,
            read: Count(|s, _| get(&s.identity_births)),
        },
        SelfMetric {
            name: "syscope.identity.dropped",
            unit: "{cgroup}",
            instrument: Counter,
            description: "cgroups whose identity was not kept because the cache was full (raise `identity.max_cgroups`).",
            dimension: None,
            read: Count(|s, _| get(&s.identity_dropped)),
        },
        SelfMetric {
            name: "syscope.diagnosis.series",
            unit: "{series}",
            instrument: Gauge,
            description: "Series whose last hour the SLO burn diagnosis keeps (only with SLOs).",
            dimension: None,
            read: Count(|s, _| get(&s.diagnosis_series)),
        },
        SelfMetric {
            name: "syscope.diagnosis.capacity",
            unit: "{series}",
            instrument: Gauge,
            description: "Most series the diagnosis keeps (`limits.max_series_per_metric`; 0 without SLOs, when there is no diagnosis).",
            dimension: None,
            read: Count(|s, _| get(&s.diagnosis_capacity)),
        },
        SelfMetric {
            name: "syscope.diagnosis.turned_away",
            unit: "{series}",
            instrument: Counter,
            description: "New series the diagnosis had no room for (they are left out of diagnoses for an hour).",
            dimension: None,
            read: Count(|s, _| get(&s.diagnosis_turned_away)),
        },
        SelfMetric {
            name: "syscope.slo.state.write_failures",
            unit: "{write}",
            instrument: Counter,
            description: "Failed writes of the SLO history to the state directory (the SLOs go on in memory; the log says why).",
            dimension: None,
            read: Count(|s, _| get(&s.slo_state_write_failures)),
        },
        SelfMetric {
            name: "syscope.kernel.program.run_time",
            unit: "s",
            instrument: Counter,
            description: "Time the kernel spent running each program, what syscope costs the node's CPUs (0 unless `kernel.bpf_stats_enabled` is 1: the kernel counts only then, at a cost of its own).",
            dimension: Some(Program),
            read: Micros(|s, i| get(&s.program_run_us[i])),
        },
        SelfMetric {
            name: "syscope.kernel.program.runs",
            unit: "{run}",
            instrument: Counter,
            description: "Runs of each program (0 unless `kernel.bpf_stats_enabled` is 1); run_time / runs is its cost per event.",
            dimension: Some(Program),
            read: Count(|s, i| get(&s.program_runs[i])),
        },
        SelfMetric {
            name: "syscope.kernel.program.stats_enabled",
            unit: "1",
            instrument: Gauge,
            description: "1 while `kernel.bpf_stats_enabled` is 1 (sysctl), so the program run time and runs are counted.",
            dimension: None,
            read: Count(|s, _| get(&s.bpf_stats_enabled)),
        },
        SelfMetric {
            name: "syscope.syscalls.attached",
            unit: "1",
            instrument: Gauge,
            description: "1 while the syscall programs are attached: always with `--probes syscalls`; on demand, only while some workload is selected (or the TCP route of kernels before 6.3 needs them).",
            dimension: None,
            read: Count(|s, _| get(&s.syscalls_attached)),
        },
        SelfMetric {
            name: "syscope.syscalls.selected.cgroups",
            unit: "{cgroup}",
            instrument: Gauge,
            description: "cgroups whose syscalls are measured on demand (`syscall_workloads`, syscall SLOs, burning SLOs).",
            dimension: None,
            read: Count(|s, _| get(&s.syscalls_selected_cgroups)),
        },
        SelfMetric {
            name: "syscope.syscalls.selected.names",
            unit: "{process}",
            instrument: Gauge,
            description: "Process names whose syscalls are measured on demand.",
            dimension: None,
            read: Count(|s, _| get(&s.syscalls_selected_names)),
        },
        SelfMetric {
            name: "syscope.syscalls.selection.turned_away",
            unit: "{workload}",
            instrument: Counter,
            description: "Selected cgroups and names that did not fit their kernel maps (raise `limits.kernel_maps.selected_cgroups` or `selected_names`).",
            dimension: None,
            read: Count(|s, _| get(&s.syscalls_selection_turned_away)),
        },
        SelfMetric {
            name: "syscope.series.active",
            unit: "{series}",
            instrument: Gauge,
            description: "Series currently exported, per SLI metric.",
            dimension: Some(Metric),
            read: Count(|s, i| get(&s.series_active[i])),
        },
        SelfMetric {
            name: "syscope.series.overflow",
            unit: "{series}",
            instrument: Counter,
            description: "Attribute sets folded into the overflow series by the cardinality limit.",
            dimension: Some(Metric),
            read: Count(|s, i| get(&s.series_folded[i])),
        },
        SelfMetric {
            name: "syscope.series.evicted",
            unit: "{series}",
            instrument: Counter,
            description: "Quiet series that gave way to new ones near the cardinality limit (not under an SLO, no recent errors).",
            dimension: Some(Metric),
            read: Count(|s, i| get(&s.series_evicted[i])),
        },
        SelfMetric {
            name: "syscope.export.failures",
            unit: "{attempt}",
            instrument: Counter,
            description: "Failed OTLP export attempts (each retry counts).",
            dimension: None,
            read: Count(|s, _| get(&s.export_failures)),
        },
        SelfMetric {
            name: "syscope.export.successes",
            unit: "{request}",
            instrument: Counter,
            description: "Delivered OTLP export requests.",
            dimension: None,
            read: Count(|s, _| get(&s.export_successes)),
        },
        SelfMetric {
            name: "syscope.export.request.size",
            unit: "By",
            instrument: Gauge,
            description: "Size of the last metrics request delivered over OTLP (protobuf, before compression; the SLI and SLO scopes).",
            dimension: None,
            read: Count(|s, _| get(&s.export_request_bytes)),
        },
        SelfMetric {
            name: "syscope.export.dropped",
            unit: "{interval}",
            instrument: Counter,
            description: "Intervals never delivered, by reason (each is also logged).",
            dimension: Some(Reason),
            read: Count(|s, i| get(&s.export_dropped[i])),
        },
        SelfMetric {
            name: "syscope.export.buffered",
            unit: "{interval}",
            instrument: Gauge,
            description: "Intervals waiting to be sent, the one in flight included.",
            dimension: None,
            read: Count(|s, _| get(&s.export_buffered_intervals)),
        },
        SelfMetric {
            name: "syscope.export.duration",
            unit: "s",
            instrument: Gauge,
            description: "Duration of the last successful OTLP export.",
            dimension: None,
            read: Micros(|s, _| get(&s.export_duration_us)),
        },
        SelfMetric {
            name: "syscope.collect.duration",
            unit: "s",
            instrument: Gauge,
            description: "Duration of the last read of the kernel maps.",
            dimension: None,
            read: Micros(|s, _| get(&s.collect_duration_us)),
        },
        SelfMetric {
            name: "syscope.prometheus.scrapes",
            unit: "{scrape}",
            instrument: Counter,
            description: "Scrapes the Prometheus endpoint answered (0 when it is off).",
            dimension: None,
            read: Count(|s, _| get(&s.prometheus_scrapes)),
        },
        SelfMetric {
            name: "syscope.prometheus.connections.closed",
            unit: "{connection}",
            instrument: Counter,
            description: "Prometheus endpoint connections closed early: at the 256-connection limit (oldest first) or past a deadline (head 2 s, answer 10 s).",
            dimension: None,
            read: Count(|s, _| get(&s.prometheus_connections_closed)),
        },
        SelfMetric {
            name: "syscope.prometheus.render.duration",
            unit: "s",
            instrument: Gauge,
            description: "Duration of the last rendering of the Prometheus exposition (both formats, once per interval; a scrape only sends it).",
            dimension: None,
            read: Micros(|s, _| get(&s.prometheus_render_us)),
        },
        SelfMetric {
            name: "syscope.prometheus.exposition.size",
            unit: "By",
            instrument: Gauge,
            description: "Size of the last text exposition.",
            dimension: None,
            read: Count(|s, _| get(&s.prometheus_exposition_bytes)),
        },
    ]
};

/// Every point's raw value at one moment, in catalogue order.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: SystemTime,
    values: Vec<u64>,
}

/// Encodes the self-metrics for the exporter. Delta counters are measured
/// from the last snapshot a collector acknowledged, so a failed, rejected or
/// dropped request loses no increment: the next delivered one carries it.
#[derive(Debug)]
pub struct SelfMetrics {
    stats: Arc<SelfStats>,
    delta: bool,
    acked: Snapshot,
}

impl SelfMetrics {
    /// `temporality`: the SLIs'; anything but `Delta` is cumulative.
    pub fn new(stats: Arc<SelfStats>, temporality: AggregationTemporality) -> Self {
        let points = CATALOGUE.iter().map(|m| m.points().len()).sum();
        let acked = Snapshot {
            at: stats.started,
            values: vec![0; points],
        };
        Self {
            stats,
            delta: temporality == AggregationTemporality::Delta,
            acked,
        }
    }

    /// Reads every point now.
    pub fn snapshot(&self) -> Snapshot {
        let s = &*self.stats;
        let values = CATALOGUE
            .iter()
            .flat_map(|m| m.points().into_iter().map(move |(i, _)| m.raw(s, i)))
            .collect();
        Snapshot {
            at: SystemTime::now(),
            values,
        }
    }

    /// A collector accepted a request that carried `delivered`: later deltas
    /// start there.
    pub fn acknowledge(&mut self, delivered: Snapshot) {
        self.acked = delivered;
    }

    /// The `syscope.self` scope for `now`.
    pub fn scope(&self, now: &Snapshot) -> ScopeMetrics {
        let time = otlp::nanos(now.at);
        let (start, temporality) = if self.delta {
            (self.acked.at, AggregationTemporality::Delta)
        } else {
            (self.stats.started, AggregationTemporality::Cumulative)
        };
        let mut slot = 0;
        let metrics = CATALOGUE
            .iter()
            .map(|m| {
                let data_points = m
                    .points()
                    .into_iter()
                    .map(|(_, label)| {
                        let mut raw = now.values[slot];
                        if self.delta && m.instrument == Instrument::Counter {
                            raw = raw.saturating_sub(self.acked.values[slot]);
                        }
                        slot += 1;
                        let value = match m.read {
                            Read::Count(_) => number_data_point::Value::AsInt(
                                i64::try_from(raw).unwrap_or(i64::MAX),
                            ),
                            Read::Micros(_) => {
                                // Divided, not multiplied by 1e-6: the nearest double to the
                                // decimal, so 3236 µs prints as 0.003236.
                                number_data_point::Value::AsDouble(raw as f64 / 1e6)
                            }
                        };
                        NumberDataPoint {
                            attributes: m
                                .dimension
                                .zip(label)
                                .map(|(d, v)| otlp::kv_str(d.key(), v))
                                .into_iter()
                                .collect(),
                            start_time_unix_nano: match m.instrument {
                                Instrument::Counter => otlp::nanos(start),
                                Instrument::Gauge => 0,
                            },
                            time_unix_nano: time,
                            value: Some(value),
                            ..Default::default()
                        }
                    })
                    .collect();
                let data = match m.instrument {
                    Instrument::Counter => metric::Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: temporality as i32,
                        is_monotonic: true,
                    }),
                    Instrument::Gauge => metric::Data::Gauge(Gauge { data_points }),
                };
                OtlpMetric {
                    name: m.name.into(),
                    description: m.description.into(),
                    unit: m.unit.into(),
                    data: Some(data),
                    ..Default::default()
                }
            })
            .collect();
        let mut scope = otlp::scope(SCOPE);
        scope.attributes = self
            .stats
            .own_attributes
            .get()
            .into_iter()
            .flatten()
            .map(|(k, v)| otlp::kv_str(k, v.as_str()))
            .collect();
        ScopeMetrics {
            scope: Some(scope),
            metrics,
            ..Default::default()
        }
    }
}

/// docs/metrics.md's table of self-metrics, from the catalogue.
pub fn doc_table() -> String {
    let mut out = String::from(
        "| metric | instrument | unit | attribute | meaning |\n|---|---|---|---|---|\n",
    );
    for m in &CATALOGUE {
        let attribute = match m.dimension {
            None => String::new(),
            Some(Dimension::Metric) => "`metric` = the SLI metric's name".to_owned(),
            Some(d) => {
                let values: Vec<String> =
                    d.values().iter().map(|(_, v)| format!("`{v}`")).collect();
                format!("`{}` = {}", d.key(), values.join(" \\| "))
            }
        };
        let instrument = match m.instrument {
            Instrument::Counter => "counter",
            Instrument::Gauge => "gauge",
        };
        out.push_str(&format!(
            "| `{}` | {instrument} | `{}` | {attribute} | {} |\n",
            m.name, m.unit, m.description
        ));
    }
    out
}

/// docs/metrics.md's table of drop reasons, from [`DropReason`].
pub fn drop_reasons_doc_table() -> String {
    let mut out = String::from("| `reason` | when |\n|---|---|\n");
    for r in DropReason::ALL {
        out.push_str(&format!("| `{}` | {} |\n", r.label(), r.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points<'a>(scope: &'a ScopeMetrics, name: &str) -> &'a [NumberDataPoint] {
        let m = scope.metrics.iter().find(|m| m.name == name).unwrap();
        match m.data.as_ref().unwrap() {
            metric::Data::Sum(s) => &s.data_points,
            metric::Data::Gauge(g) => &g.data_points,
            _ => panic!("{name}"),
        }
    }

    fn int(p: &NumberDataPoint) -> i64 {
        match p.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            ref v => panic!("{v:?}"),
        }
    }

    fn by_attr<'a>(ps: &'a [NumberDataPoint], value: &str) -> &'a NumberDataPoint {
        ps.iter()
            .find(|p| p.attributes[0].value == otlp::kv_str("", value).value)
            .unwrap()
    }

    #[test]
    fn names_are_unique_and_labels_come_from_their_catalogues() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        let stats = Arc::new(SelfStats::default());
        let own = SelfMetrics::new(stats, AggregationTemporality::Cumulative);
        let scope = own.scope(&own.snapshot());
        assert_eq!(scope.scope.as_ref().unwrap().name, SCOPE);
        assert_eq!(points(&scope, "syscope.kernel.map.full").len(), maps::COUNT);
        assert_eq!(
            points(&scope, "syscope.kernel.map.entries").len(),
            maps::COUNT - 1,
            "threads' entries are not counted"
        );
        let overflow = points(&scope, "syscope.series.overflow");
        assert_eq!(overflow.len(), Metric::COUNT);
        assert_eq!(
            overflow[0].attributes,
            vec![otlp::kv_str("metric", Metric::SyscallDuration.spec().name)]
        );
        assert_eq!(
            points(&scope, "syscope.export.dropped").len(),
            DropReason::COUNT
        );
    }

    /// Delta counters restart at the last acknowledged snapshot, so what a
    /// failed request carried is sent again; gauges are just the value now.
    /// The agent's own identity is on its scope, nowhere else.
    #[test]
    fn own_identity_on_the_self_scope() {
        let stats = Arc::new(SelfStats::default());
        let own = SelfMetrics::new(stats.clone(), AggregationTemporality::Cumulative);
        assert!(own
            .scope(&own.snapshot())
            .scope
            .unwrap()
            .attributes
            .is_empty());
        stats
            .own_attributes
            .set(vec![("k8s.pod.name".into(), "syscope-x7k2p".into())])
            .unwrap();
        let scope = own.scope(&own.snapshot()).scope.unwrap();
        assert_eq!(scope.name, SCOPE);
        assert_eq!(
            scope.attributes,
            [otlp::kv_str("k8s.pod.name", "syscope-x7k2p")]
        );
    }

    #[test]
    fn delta_counts_from_the_acknowledged_snapshot() {
        let stats = Arc::new(SelfStats::default());
        let mut own = SelfMetrics::new(Arc::clone(&stats), AggregationTemporality::Delta);
        let dropped =
            |s: &ScopeMetrics| int(by_attr(points(s, "syscope.export.dropped"), "buffer_full"));
        SelfStats::add(&stats.export_dropped[DropReason::BufferFull as usize], 3);
        SelfStats::set(&stats.export_buffered_intervals, 5);
        let failed = own.snapshot();
        assert_eq!(dropped(&own.scope(&failed)), 3);
        // Not acknowledged: the next attempt carries those 3 plus 2 more.
        SelfStats::add(&stats.export_dropped[DropReason::BufferFull as usize], 2);
        let delivered = own.snapshot();
        let scope = own.scope(&delivered);
        assert_eq!(dropped(&scope), 5);
        assert_eq!(int(&points(&scope, "syscope.export.buffered")[0]), 5);
        let start = points(&scope, "syscope.export.dropped")[0].start_time_unix_nano;
        assert_eq!(start, otlp::nanos(stats.started));
        own.acknowledge(delivered.clone());
        let next = own.scope(&own.snapshot());
        assert_eq!(dropped(&next), 0);
        assert_eq!(int(&points(&next, "syscope.export.buffered")[0]), 5);
        let p = &points(&next, "syscope.export.dropped")[0];
        assert_eq!(p.start_time_unix_nano, otlp::nanos(delivered.at));
        let Some(metric::Data::Sum(sum)) = &next.metrics[0].data else {
            panic!()
        };
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
    }

    #[test]
    fn cumulative_counts_since_start_and_durations_are_seconds() {
        let stats = Arc::new(SelfStats::default());
        let mut own = SelfMetrics::new(Arc::clone(&stats), AggregationTemporality::Cumulative);
        SelfStats::add(&stats.export_failures, 4);
        SelfStats::set(&stats.collect_duration_us, 1_500);
        let snap = own.snapshot();
        own.acknowledge(snap);
        let scope = own.scope(&own.snapshot());
        let failures = &points(&scope, "syscope.export.failures")[0];
        assert_eq!(int(failures), 4);
        assert_eq!(failures.start_time_unix_nano, otlp::nanos(stats.started));
        assert_eq!(
            points(&scope, "syscope.collect.duration")[0].value,
            Some(number_data_point::Value::AsDouble(0.0015))
        );
    }

    #[test]
    fn doc_tables_match_docs() {
        crate::docgen::check_section("self-metrics", &doc_table());
        crate::docgen::check_section("drop-reasons", &drop_reasons_doc_table());
    }
}

//! The agent's own metrics (`syscope.*`): counted here with atomics, exported
//! through the OpenTelemetry SDK's observable instruments (opentelemetry-otlp,
//! same endpoint as the SLIs), and shown in the live table's header.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::{metrics::MeterProvider as _, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    metrics::{periodic_reader_with_async_runtime::PeriodicReader, SdkMeterProvider},
    runtime, Resource,
};
use syscope_common::{counter, maps};

use crate::{
    aggregate::Metric,
    config::{Compression, Config, Protocol},
};

/// Counters every stage updates. Plain atomics: cheap on the hot paths,
/// readable from the SDK callbacks without locks.
#[derive(Debug, Default)]
pub struct SelfStats {
    /// OTLP export attempts that failed (each retry counts).
    pub export_failures: AtomicU64,
    /// Export requests delivered.
    pub export_successes: AtomicU64,
    /// Intervals dropped: buffer full, or rejected by the collector.
    pub export_dropped_intervals: AtomicU64,
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
    /// at the last read (gauges).
    pub map_capacity: [AtomicU64; maps::COUNT],
    pub map_entries: [AtomicU64; maps::COUNT],
    /// Series kept per metric before folding into the overflow series.
    pub series_limit: AtomicU64,
    /// Per SLI metric (by `Metric::index`): live series (gauge), and
    /// attribute sets folded into the overflow series since start (counter).
    pub series_active: [AtomicU64; Metric::COUNT],
    pub series_folded: [AtomicU64; Metric::COUNT],
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

/// Self-metric names, in one place (see docs/metrics.md).
pub mod names {
    pub const KERNEL_MAP_FULL: &str = "syscope.kernel.map.full";
    pub const KERNEL_MAP_ENTRIES: &str = "syscope.kernel.map.entries";
    pub const KERNEL_MAP_CAPACITY: &str = "syscope.kernel.map.capacity";
    pub const SERIES_LIMIT: &str = "syscope.series.limit";
    pub const KERNEL_EVENTS: &str = "syscope.kernel.events";
    pub const KERNEL_UNMATCHED: &str = "syscope.kernel.exits_unmatched";
    pub const KERNEL_THREADS_EVICTED: &str = "syscope.kernel.threads_evicted";
    pub const SERIES_ACTIVE: &str = "syscope.series.active";
    pub const SERIES_OVERFLOW: &str = "syscope.series.overflow";
    pub const EXPORT_FAILURES: &str = "syscope.export.failures";
    pub const EXPORT_SUCCESSES: &str = "syscope.export.successes";
    pub const EXPORT_DROPPED: &str = "syscope.export.dropped";
    pub const EXPORT_BUFFERED: &str = "syscope.export.buffered";
    pub const EXPORT_DURATION: &str = "syscope.export.duration";
    pub const COLLECT_DURATION: &str = "syscope.collect.duration";
}

/// Set up the SDK pipeline for the self-metrics; `None` without an endpoint.
/// Must be called inside the tokio runtime.
pub fn init_sdk(cfg: &Config, stats: Arc<SelfStats>) -> anyhow::Result<Option<SdkMeterProvider>> {
    let Some(ex) = &cfg.export else {
        return Ok(None);
    };
    let headers: std::collections::HashMap<String, String> = ex.headers.iter().cloned().collect();
    let exporter = match ex.protocol {
        Protocol::Grpc => {
            let mut md = tonic::metadata::MetadataMap::new();
            for (k, v) in &ex.headers {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    v.parse(),
                ) {
                    md.insert(k, v);
                }
            }
            let b = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(ex.grpc_endpoint())
                .with_timeout(ex.timeout)
                .with_metadata(md);
            let b = match ex.compression {
                Compression::Gzip => b.with_compression(opentelemetry_otlp::Compression::Gzip),
                Compression::None => b,
            };
            b.build()?
        }
        Protocol::HttpProtobuf => {
            let b = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(ex.http_url())
                .with_timeout(ex.timeout)
                .with_headers(headers)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            let b = match ex.compression {
                Compression::Gzip => b.with_compression(opentelemetry_otlp::Compression::Gzip),
                Compression::None => b,
            };
            b.build()?
        }
    };
    let reader = PeriodicReader::builder(exporter, runtime::Tokio)
        .with_interval(cfg.interval)
        .build();
    let mut res = Resource::builder().with_service_name(cfg.resource.service_name.clone());
    for (k, v) in &cfg.resource.attributes {
        if k != "service.name" {
            res = res.with_attribute(KeyValue::new(k.clone(), v.clone()));
        }
    }
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            res.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .with_attribute(KeyValue::new(
                    "host.name",
                    crate::aggregate::otlp::hostname(),
                ))
                .build(),
        )
        .build();
    register(&provider, stats);
    Ok(Some(provider))
}

/// name, unit, description, and how to read it.
type CounterDef = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SelfStats) -> u64,
);

fn register(provider: &SdkMeterProvider, stats: Arc<SelfStats>) {
    let meter = provider.meter("syscope");
    let s = stats.clone();
    let _ = meter
        .u64_observable_counter(names::KERNEL_MAP_FULL)
        .with_unit("{update}")
        .with_description("Kernel updates dropped because a map was full.")
        .with_callback(move |o| {
            for m in &maps::MAPS {
                o.observe(
                    SelfStats::get(&s.kernel[counter::map_full(m.id) as usize]),
                    &[KeyValue::new("map", m.label)],
                );
            }
        })
        .build();
    for (name, desc, gauges) in [
        (
            names::KERNEL_MAP_ENTRIES,
            "Entries in the kernel maps at the last read.",
            (|s: &SelfStats| &s.map_entries) as fn(&SelfStats) -> &[AtomicU64; maps::COUNT],
        ),
        (
            names::KERNEL_MAP_CAPACITY,
            "Configured capacity of the kernel maps.",
            |s: &SelfStats| &s.map_capacity,
        ),
    ] {
        let s = stats.clone();
        let _ = meter
            .u64_observable_gauge(name)
            .with_unit("{entry}")
            .with_description(desc)
            .with_callback(move |o| {
                for m in &maps::MAPS {
                    o.observe(
                        SelfStats::get(&gauges(&s)[m.id]),
                        &[KeyValue::new("map", m.label)],
                    );
                }
            })
            .build();
    }
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::SERIES_LIMIT)
        .with_unit("{series}")
        .with_description("Series kept per metric before folding into the overflow series.")
        .with_callback(move |o| o.observe(SelfStats::get(&s.series_limit), &[]))
        .build();
    let simple_counters: [CounterDef; 6] = [
        (
            names::KERNEL_EVENTS,
            "{syscall}",
            "Syscalls measured in the kernel.",
            |s| SelfStats::get(&s.events),
        ),
        (
            names::KERNEL_UNMATCHED,
            "{event}",
            "Syscall exits without a recorded entry, of threads that were in a syscall when the programs attached.",
            |s| SelfStats::get(&s.kernel[counter::EXIT_WITHOUT_ENTER as usize]),
        ),
        (
            names::KERNEL_THREADS_EVICTED,
            "{syscall}",
            "Syscalls not measured because their thread's entry was evicted from the full LRU thread map (raise limits.kernel_maps.threads).",
            |s| SelfStats::get(&s.kernel[counter::THREAD_EVICTED as usize]),
        ),
        (
            names::EXPORT_FAILURES,
            "{attempt}",
            "Failed OTLP export attempts.",
            |s| SelfStats::get(&s.export_failures),
        ),
        (
            names::EXPORT_SUCCESSES,
            "{request}",
            "Delivered OTLP export requests.",
            |s| SelfStats::get(&s.export_successes),
        ),
        (
            names::EXPORT_DROPPED,
            "{interval}",
            "Intervals never delivered (buffer full or rejected).",
            |s| SelfStats::get(&s.export_dropped_intervals),
        ),
    ];
    for (name, unit, desc, read) in simple_counters {
        let s = stats.clone();
        let _ = meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(desc)
            .with_callback(move |o| o.observe(read(&s), &[]))
            .build();
    }
    let s = stats.clone();
    let _ = meter
        .u64_observable_counter(names::SERIES_OVERFLOW)
        .with_unit("{series}")
        .with_description(
            "Attribute sets folded into the overflow series by the cardinality limit.",
        )
        .with_callback(move |o| {
            for m in Metric::all() {
                o.observe(
                    SelfStats::get(&s.series_folded[m.index()]),
                    &[KeyValue::new("metric", m.spec().name)],
                );
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::SERIES_ACTIVE)
        .with_unit("{series}")
        .with_description("Series currently exported, per metric.")
        .with_callback(move |o| {
            for m in Metric::all() {
                o.observe(
                    SelfStats::get(&s.series_active[m.index()]),
                    &[KeyValue::new("metric", m.spec().name)],
                );
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::EXPORT_BUFFERED)
        .with_unit("{interval}")
        .with_description("Intervals waiting to be sent.")
        .with_callback(move |o| o.observe(SelfStats::get(&s.export_buffered_intervals), &[]))
        .build();
    let s = stats.clone();
    let _ = meter
        .f64_observable_gauge(names::EXPORT_DURATION)
        .with_unit("s")
        .with_description("Duration of the last successful OTLP export.")
        .with_callback(move |o| o.observe(SelfStats::get(&s.export_duration_us) as f64 * 1e-6, &[]))
        .build();
    let s = stats;
    let _ = meter
        .f64_observable_gauge(names::COLLECT_DURATION)
        .with_unit("s")
        .with_description("Duration of the last read of the kernel maps.")
        .with_callback(move |o| {
            o.observe(SelfStats::get(&s.collect_duration_us) as f64 * 1e-6, &[])
        })
        .build();
}

/// Shut the SDK pipeline down (final self-metrics export) within `grace`.
pub async fn shutdown_sdk(provider: SdkMeterProvider, grace: Duration) {
    let r = tokio::time::timeout(
        grace,
        tokio::task::spawn_blocking(move || provider.shutdown()),
    )
    .await;
    if !matches!(r, Ok(Ok(Ok(())))) {
        tracing::debug!("self-metrics pipeline did not shut down cleanly within the grace period");
    }
}

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
use syscope_common::counter;

use crate::{
    aggregate::{
        otlp::{TCP_COUNT_METRICS, TCP_HIST_METRICS},
        TCP_COUNTS, TCP_HISTS,
    },
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
    /// Configured limits, reported so dashboards can show use against them:
    /// kernel map capacities (latency, errors, threads) and series per metric.
    pub kernel_hist_capacity: AtomicU64,
    pub kernel_error_capacity: AtomicU64,
    pub kernel_thread_capacity: AtomicU64,
    pub series_limit: AtomicU64,
    /// Entries in the kernel latency / error maps at the last read (gauges).
    pub kernel_hist_entries: AtomicU64,
    pub kernel_error_entries: AtomicU64,
    /// Live series per metric (gauges) and attribute sets folded into the
    /// overflow series since start (counters).
    pub series_latency: AtomicU64,
    pub series_errors: AtomicU64,
    pub series_folded_latency: AtomicU64,
    pub series_folded_errors: AtomicU64,
    /// TCP maps: capacities and entries at the last read.
    pub kernel_socket_capacity: AtomicU64,
    pub kernel_listener_capacity: AtomicU64,
    pub kernel_tcp_hist_capacity: AtomicU64,
    pub kernel_tcp_count_capacity: AtomicU64,
    pub kernel_tcp_hist_entries: AtomicU64,
    pub kernel_tcp_count_entries: AtomicU64,
    pub kernel_listener_entries: AtomicU64,
    pub kernel_socket_entries: AtomicU64,
    /// TCP series per metric (histograms by `hist_kind - 1`, then counters
    /// by `count_kind - 1`): live, and folded into overflow since start.
    pub series_tcp: [AtomicU64; TCP_METRIC_SLOTS],
    pub series_folded_tcp: [AtomicU64; TCP_METRIC_SLOTS],
}

/// Slots of [`SelfStats::series_tcp`].
pub const TCP_METRIC_SLOTS: usize = TCP_HISTS + TCP_COUNTS;

/// Metric name of each TCP slot (tcp.resets appears twice: both directions).
pub fn tcp_metric_name(slot: usize) -> &'static str {
    if slot < TCP_HISTS {
        TCP_HIST_METRICS[slot].0
    } else {
        TCP_COUNT_METRICS[slot - TCP_HISTS].0
    }
}

/// Sum per metric name over the TCP slots of `a`.
fn per_tcp_metric(a: &[AtomicU64; TCP_METRIC_SLOTS]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = vec![];
    for (i, v) in a.iter().enumerate() {
        let name = tcp_metric_name(i);
        let v = SelfStats::get(v);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += v,
            None => out.push((name, v)),
        }
    }
    out
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

    /// One-line health summary for logs and the live table.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| Self::get(a);
        format!(
            "events={} map_full(hist={} errors={} threads={}) series(latency={} errors={} folded={}) collect={}µs",
            g(&self.events),
            g(&self.kernel[counter::HIST_MAP_FULL as usize]),
            g(&self.kernel[counter::ERROR_MAP_FULL as usize]),
            g(&self.kernel[counter::THREAD_MAP_FULL as usize]),
            g(&self.series_latency),
            g(&self.series_errors),
            g(&self.series_folded_latency) + g(&self.series_folded_errors),
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
            for (i, map) in [
                (counter::HIST_MAP_FULL, "latency"),
                (counter::ERROR_MAP_FULL, "errors"),
                (counter::THREAD_MAP_FULL, "threads"),
                (counter::TCP_HIST_MAP_FULL, "tcp_hist"),
                (counter::TCP_COUNT_MAP_FULL, "tcp_counters"),
                (counter::SOCK_MAP_FULL, "sockets"),
                (counter::LISTEN_MAP_FULL, "listeners"),
            ] {
                o.observe(
                    SelfStats::get(&s.kernel[i as usize]),
                    &[KeyValue::new("map", map)],
                );
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::KERNEL_MAP_ENTRIES)
        .with_unit("{entry}")
        .with_description("Entries in the kernel aggregation maps.")
        .with_callback(move |o| {
            o.observe(
                SelfStats::get(&s.kernel_hist_entries),
                &[KeyValue::new("map", "latency")],
            );
            o.observe(
                SelfStats::get(&s.kernel_error_entries),
                &[KeyValue::new("map", "errors")],
            );
            for (v, map) in [
                (&s.kernel_tcp_hist_entries, "tcp_hist"),
                (&s.kernel_tcp_count_entries, "tcp_counters"),
                (&s.kernel_listener_entries, "listeners"),
                (&s.kernel_socket_entries, "sockets"),
            ] {
                o.observe(SelfStats::get(v), &[KeyValue::new("map", map)]);
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::KERNEL_MAP_CAPACITY)
        .with_unit("{entry}")
        .with_description("Configured capacity of the kernel maps.")
        .with_callback(move |o| {
            o.observe(
                SelfStats::get(&s.kernel_hist_capacity),
                &[KeyValue::new("map", "latency")],
            );
            o.observe(
                SelfStats::get(&s.kernel_error_capacity),
                &[KeyValue::new("map", "errors")],
            );
            o.observe(
                SelfStats::get(&s.kernel_thread_capacity),
                &[KeyValue::new("map", "threads")],
            );
            for (v, map) in [
                (&s.kernel_tcp_hist_capacity, "tcp_hist"),
                (&s.kernel_tcp_count_capacity, "tcp_counters"),
                (&s.kernel_socket_capacity, "sockets"),
                (&s.kernel_listener_capacity, "listeners"),
            ] {
                o.observe(SelfStats::get(v), &[KeyValue::new("map", map)]);
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::SERIES_LIMIT)
        .with_unit("{series}")
        .with_description("Series kept per metric before folding into the overflow series.")
        .with_callback(move |o| o.observe(SelfStats::get(&s.series_limit), &[]))
        .build();
    let simple_counters: [CounterDef; 5] = [
        (
            names::KERNEL_EVENTS,
            "{syscall}",
            "Syscalls measured in the kernel.",
            |s| SelfStats::get(&s.events),
        ),
        (
            names::KERNEL_UNMATCHED,
            "{event}",
            "Syscall exits without a recorded entry (in flight at attach, or evicted).",
            |s| SelfStats::get(&s.kernel[counter::EXIT_WITHOUT_ENTER as usize]),
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
            let m = |n: &'static str| [KeyValue::new("metric", n)];
            o.observe(
                SelfStats::get(&s.series_folded_latency),
                &m("syscall.duration"),
            );
            o.observe(
                SelfStats::get(&s.series_folded_errors),
                &m("syscall.errors"),
            );
            for (name, v) in per_tcp_metric(&s.series_folded_tcp) {
                o.observe(v, &m(name));
            }
        })
        .build();
    let s = stats.clone();
    let _ = meter
        .u64_observable_gauge(names::SERIES_ACTIVE)
        .with_unit("{series}")
        .with_description("Series currently exported, per metric.")
        .with_callback(move |o| {
            let m = |n: &'static str| [KeyValue::new("metric", n)];
            o.observe(SelfStats::get(&s.series_latency), &m("syscall.duration"));
            o.observe(SelfStats::get(&s.series_errors), &m("syscall.errors"));
            for (name, v) in per_tcp_metric(&s.series_tcp) {
                o.observe(v, &m(name));
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

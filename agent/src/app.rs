//! The daemon: load the probes, then once per interval collect -> aggregate
//! -> export (or print), until SIGINT/SIGTERM; then detach, collect and
//! export one last time within the grace period.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::resource::v1::Resource;
use syscope_common::counter;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use syscope_common::tcp::TcpKey;

use crate::{
    aggregate::{otlp, Aggregator, TCP_HISTS},
    collect::{DeltaTracker, Deltas, ListenerTracker},
    config::{Config, ProcessEnv},
    enrich::cgroup::CgroupResolver,
    export::{self, ExportHandle},
    probes::{self, LoadOptions, Probes},
    service::Service,
    table,
    telemetry::{self, SelfStats},
};

/// Everything one collection cycle touches.
pub struct Pipeline {
    pub probes: Probes,
    pub tracker: DeltaTracker,
    pub tcp_tracker: DeltaTracker<TcpKey>,
    pub listeners: ListenerTracker,
    pub agg: Aggregator,
    pub cgroups: CgroupResolver,
    pub stats: Arc<SelfStats>,
    resource: Resource,
    last_kernel: [u64; counter::COUNT as usize],
}

impl Pipeline {
    pub fn new(cfg: &Config, probes: Probes, stats: Arc<SelfStats>) -> Self {
        let sizes = probes.map_sizes;
        SelfStats::set(&stats.kernel_hist_capacity, sizes.hist.into());
        SelfStats::set(&stats.kernel_error_capacity, sizes.errors.into());
        SelfStats::set(&stats.kernel_thread_capacity, sizes.threads.into());
        SelfStats::set(&stats.series_limit, cfg.limits.max_series_per_metric as u64);
        if probes.tcp.is_some() {
            let t = sizes.tcp;
            SelfStats::set(&stats.kernel_socket_capacity, t.sockets.into());
            SelfStats::set(&stats.kernel_listener_capacity, t.listeners.into());
            SelfStats::set(&stats.kernel_tcp_hist_capacity, t.hist.into());
            SelfStats::set(&stats.kernel_tcp_count_capacity, t.counts.into());
        }
        Pipeline {
            probes,
            // Kernel entries idle this long are deleted to make room; their
            // series live on in userspace for series_idle_intervals.
            tracker: DeltaTracker::new(cfg.limits.series_idle_intervals.max(2)),
            tcp_tracker: DeltaTracker::new(cfg.limits.series_idle_intervals.max(2)),
            listeners: ListenerTracker::default(),
            agg: Aggregator::new(
                cfg.temporality,
                cfg.limits.max_series_per_metric,
                cfg.limits.series_idle_intervals,
            ),
            cgroups: CgroupResolver::new(),
            stats,
            resource: otlp::resource(&cfg.resource),
            last_kernel: [0; counter::COUNT as usize],
        }
    }

    /// Read the kernel maps and fold this interval into the series.
    pub fn collect(&mut self) {
        let t0 = Instant::now();
        let mut read_errors = 0u64;
        let hist: Vec<_> = self
            .probes
            .hist
            .iter()
            .filter_map(|r| r.map_err(|_| read_errors += 1).ok())
            .collect();
        let errors: Vec<_> = self
            .probes
            .errors
            .iter()
            .filter_map(|r| r.map_err(|_| read_errors += 1).ok())
            .collect();
        if read_errors > 0 {
            // An entry deleted between listing and reading: harmless, rare.
            tracing::debug!(read_errors, "map entries vanished while reading");
        }
        SelfStats::set(&self.stats.kernel_hist_entries, hist.len() as u64);
        SelfStats::set(&self.stats.kernel_error_entries, errors.len() as u64);
        let (deltas, evict) = self.tracker.update(hist, errors);
        let events: u64 = deltas.hist.iter().map(|(_, d)| d.count()).sum();
        SelfStats::add(&self.stats.events, events);
        for k in &evict.hist {
            let _ = self.probes.hist.remove(k);
        }
        for k in &evict.errors {
            let _ = self.probes.errors.remove(k);
        }
        let tcp = self.collect_tcp();
        self.agg
            .ingest(&deltas, &tcp, &mut self.cgroups, SystemTime::now());
        self.record_kernel_counters();
        let s = &self.stats;
        for (i, m) in self.agg.tcp_hist.iter().enumerate() {
            SelfStats::set(&s.series_tcp[i], m.len() as u64);
            SelfStats::set(&s.series_folded_tcp[i], m.folded());
        }
        for (i, m) in self.agg.tcp_counts.iter().enumerate() {
            SelfStats::set(&s.series_tcp[TCP_HISTS + i], m.len() as u64);
            SelfStats::set(&s.series_folded_tcp[TCP_HISTS + i], m.folded());
        }
        SelfStats::set(&s.series_latency, self.agg.latency.len() as u64);
        SelfStats::set(&s.series_errors, self.agg.errors.len() as u64);
        SelfStats::set(&s.series_folded_latency, self.agg.latency.folded());
        SelfStats::set(&s.series_folded_errors, self.agg.errors.folded());
        SelfStats::set(&s.collect_duration_us, t0.elapsed().as_micros() as u64);
    }

    /// Read the TCP maps (and the listeners' drop counters) into deltas.
    fn collect_tcp(&mut self) -> Deltas<TcpKey> {
        self.probes.poll_listeners();
        let Some(maps) = self.probes.tcp.as_mut() else {
            return Deltas::default();
        };
        let hist: Vec<_> = maps.hist.iter().filter_map(Result::ok).collect();
        let counts: Vec<_> = maps.counts.iter().filter_map(Result::ok).collect();
        let listeners: Vec<_> = maps.listeners.iter().filter_map(Result::ok).collect();
        let s = &self.stats;
        SelfStats::set(&s.kernel_tcp_hist_entries, hist.len() as u64);
        SelfStats::set(&s.kernel_tcp_count_entries, counts.len() as u64);
        SelfStats::set(&s.kernel_listener_entries, listeners.len() as u64);
        SelfStats::set(&s.kernel_socket_entries, maps.socks.keys().count() as u64);
        let (mut deltas, evict) = self.tcp_tracker.update(hist, counts);
        for k in &evict.hist {
            let _ = maps.hist.remove(k);
        }
        for k in &evict.errors {
            let _ = maps.counts.remove(k);
        }
        let (drops, closed) = self.listeners.update(listeners);
        for sk in &closed {
            let _ = maps.listeners.remove(sk);
        }
        deltas.errors.extend(drops);
        deltas
    }

    fn record_kernel_counters(&mut self) {
        let now = self.probes.read_counters();
        for (i, (&cur, last)) in now.iter().zip(self.last_kernel.iter()).enumerate() {
            SelfStats::set(&self.stats.kernel[i], cur);
            let grew = cur.saturating_sub(*last);
            let full = [
                counter::HIST_MAP_FULL,
                counter::ERROR_MAP_FULL,
                counter::THREAD_MAP_FULL,
                counter::TCP_HIST_MAP_FULL,
                counter::TCP_COUNT_MAP_FULL,
                counter::SOCK_MAP_FULL,
                counter::LISTEN_MAP_FULL,
            ];
            if grew > 0 && full.contains(&(i as u32)) {
                // Once per interval per map, never silent.
                warn!(
                    map = counter::NAMES[i],
                    dropped = grew,
                    "kernel map full: updates dropped this interval; raise the limit (see --help, [limits])"
                );
            }
        }
        self.last_kernel = now;
    }

    pub fn request(
        &self,
    ) -> Option<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>
    {
        otlp::build_request(&self.agg, &self.resource)
    }
}

/// How to attach, from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Force a hook instead of probing (`--hook`).
    pub force_mode: Option<probes::AttachMode>,
    /// Attach the benchmark's empty programs instead (see xtask bench).
    pub floor_only: bool,
}

/// Run until a signal; returns after the final export.
pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM while the programs load is held until the
    // loop, which then detaches, flushes and exits cleanly.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let stats = Arc::new(SelfStats::default());
    let mut service = Service::start(&cfg.health, &ProcessEnv).await?;
    let probes = probes::load(&LoadOptions {
        kernel_series: cfg.limits.kernel_series,
        kernel_error_series: cfg.limits.kernel_error_series,
        kernel_threads: cfg.limits.kernel_threads,
        force_mode: opts.force_mode,
        floor_only: opts.floor_only,
        syscalls: cfg.probes.syscalls,
        tcp: cfg.probes.tcp.then_some(probes::TcpSizes {
            sockets: cfg.limits.kernel_sockets,
            listeners: cfg.limits.kernel_listeners,
            hist: cfg.limits.kernel_tcp_series,
            counts: cfg.limits.kernel_tcp_counters,
        }),
    })?;
    let mut pipe = Pipeline::new(&cfg, probes, stats.clone());
    let exporter = cfg
        .export_settings()
        .map(|settings| export::spawn(settings, stats.clone()))
        .transpose()
        .context("setting up the OTLP exporter")?;
    let sdk = telemetry::init_sdk(&cfg, stats.clone()).context("setting up self-metrics")?;
    match &cfg.export {
        Some(e) => {
            info!(endpoint = %e.endpoint, protocol = ?e.protocol, interval = ?cfg.interval, "exporting over OTLP")
        }
        None => {
            info!(interval = ?cfg.interval, "no OTLP endpoint configured: printing a live table")
        }
    }

    // Ready only now: everything is set up, and a SIGTERM gets the final flush.
    service.attached(
        pipe.probes.hooks(),
        exporter.as_ref().map(ExportHandle::health),
    );
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => cycle(&mut pipe, exporter.as_ref(), &cfg),
            () = service.watchdog() => {}
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
        }
    }

    // Detach first so the last read holds everything up to now, then flush.
    let deadline = Instant::now() + cfg.shutdown_grace;
    service.stopping();
    pipe.probes.detach();
    cycle(&mut pipe, exporter.as_ref(), &cfg);
    if let Some(ex) = exporter {
        // Logs an error itself when intervals are left unsent.
        ex.shutdown(remaining(deadline)).await;
    }
    if let Some(p) = sdk {
        telemetry::shutdown_sdk(p, remaining(deadline)).await;
    }
    info!("stopped");
    Ok(())
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn cycle(pipe: &mut Pipeline, exporter: Option<&ExportHandle>, cfg: &Config) {
    pipe.collect();
    match exporter {
        Some(ex) => {
            if let Some(req) = pipe.request() {
                ex.submit(req);
            }
        }
        None => {
            let rows = table::rows(&pipe.agg, cfg.table_rows);
            let header = format!(
                "syscope {} | probes={} | {}",
                humantime::format_rfc3339_seconds(SystemTime::now()),
                pipe.probes.hooks(),
                pipe.stats.summary()
            );
            print!("{}", table::render(&rows, &header));
            if pipe.probes.tcp.is_some() {
                let (rows, totals) = table::tcp_rows(&pipe.agg, cfg.table_rows);
                print!("{}", table::render_tcp(&rows, &totals));
            }
        }
    }
}

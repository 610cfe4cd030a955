//! The daemon: load the probes, then once per interval collect -> aggregate
//! -> export (or print), until SIGINT/SIGTERM; then detach, collect and
//! export one last time within the grace period.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    metrics::v1::{AggregationTemporality, ScopeMetrics},
    resource::v1::Resource,
};
use std::os::fd::{AsRawFd, RawFd};
use syscope_common::maps;
use tokio::{
    io::{
        unix::{AsyncFd, AsyncFdReadyGuard},
        Interest,
    },
    signal::unix::{signal, SignalKind},
};
use tracing::info;

use crate::{
    aggregate::{otlp, Aggregator, Metric},
    collect::Collector,
    config::{Config, ProcessEnv, Temporality},
    enrich::cgroup::CgroupResolver,
    export::{self, ExportHandle},
    ondemand::OnDemand,
    probes::{self, LoadOptions, Probes},
    prometheus,
    service::Service,
    slo::{
        diagnosis::{Baseline, Finding},
        engine::{BurnChange, Engine},
    },
    table,
    telemetry::{SelfMetrics, SelfStats},
};

/// The state one interval touches: the kernel side, the collector that
/// reads it, the aggregator that names and keeps the series.
pub struct Daemon {
    pub probes: Probes,
    pub collector: Collector,
    pub agg: Aggregator,
    pub cgroups: CgroupResolver,
    pub stats: Arc<SelfStats>,
    resource: Resource,
    /// The agent's own metrics in cumulative form, for Prometheus.
    own_cumulative: SelfMetrics,
    /// SLOs evaluated at the edge.
    pub slo: Engine,
    /// Burns that started or stopped in the last interval, with what
    /// changed in the SLO's workloads.
    pub burns: Vec<(BurnChange, Vec<Finding>)>,
    /// The last hour of the workloads, for diagnoses (only with SLOs).
    baseline: Option<Baseline>,
    /// Whose syscalls are measured, when not everyone's.
    on_demand: Option<OnDemand>,
}

impl Daemon {
    /// `slo`: the SLO engine, built before the programs load (its state
    /// directory must be usable first).
    pub fn new(cfg: &Config, probes: Probes, stats: Arc<SelfStats>, slo: Engine) -> Self {
        for m in &maps::MAPS {
            SelfStats::set(
                &stats.map_capacity[m.id],
                probes.map_capacity.0[m.id].into(),
            );
        }
        SelfStats::set(&stats.series_limit, cfg.limits.max_series_per_metric as u64);
        for s in &probes.signals.0 {
            SelfStats::set(
                &stats.signal_served[s.metric.index()],
                s.hook.is_ok() as u64,
            );
        }
        SelfStats::set(&stats.identity_capacity, cfg.identity.max_cgroups as u64);
        if !cfg.slos.is_empty() {
            SelfStats::set(
                &stats.diagnosis_capacity,
                cfg.limits.max_series_per_metric as u64,
            );
        }
        let mut agg = Aggregator::new(
            cfg.temporality,
            cfg.limits.max_series_per_metric,
            cfg.limits.series_idle_intervals,
        );
        // The SLOs' workloads stay visible on a busy node. (A syscall
        // selection is not a reason: selecting a whole slice would keep all.)
        agg.keep_workloads(cfg.slos.iter().map(|s| s.matchers.clone()).collect());
        let mut d = Daemon {
            on_demand: on_demand(cfg).then(|| OnDemand::new(&cfg.on_demand)),
            baseline: (!slo.is_empty()).then(|| Baseline::new(cfg.limits.max_series_per_metric)),
            slo,
            burns: Vec::new(),
            probes,
            collector: Collector::new(cfg.limits.series_idle_intervals.max(2)),
            agg,
            cgroups: CgroupResolver::new().configure(
                cfg.identity.sources.clone(),
                cfg.identity.max_cgroups,
                cfg.identity.retention,
            ),
            own_cumulative: SelfMetrics::new(
                Arc::clone(&stats),
                AggregationTemporality::Cumulative,
            ),
            stats,
            resource: otlp::resource(&cfg.resource),
        };
        // The configured workloads are measured from the start.
        d.cgroups.refresh();
        d.select();
        d
    }

    /// Write the on-demand selection into the kernel (attaching or
    /// detaching the syscall programs with it).
    fn select(&mut self) {
        if let Some(od) = &self.on_demand {
            match od.apply(&mut self.probes, &self.cgroups, self.slo.slos()) {
                Ok(out) => {
                    SelfStats::set(&self.stats.syscalls_selected_cgroups, out.cgroups as u64);
                    SelfStats::set(&self.stats.syscalls_selected_names, out.names as u64);
                    SelfStats::add(&self.stats.syscalls_selection_turned_away, out.turned_away);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "on-demand syscall programs: attaching or detaching failed")
                }
            }
        }
        SelfStats::set(
            &self.stats.syscalls_attached,
            self.probes.syscalls_attached() as u64,
        );
    }

    /// Read the kernel maps and fold this interval into the series.
    pub fn collect(&mut self) {
        let interval = self.collector.collect(&mut self.probes, &self.stats);
        self.drain_cgroup_events();
        self.cgroups.refresh();
        self.agg.ingest(
            &interval.syscalls,
            &interval.tcp,
            &mut self.cgroups,
            SystemTime::now(),
        );
        self.agg.fold(&interval.folded);
        self.collector.recycle(interval);
        let (changes, save_failed) = self.slo.observe(&self.agg, self.agg.interval_end);
        if save_failed {
            SelfStats::add(&self.stats.slo_state_write_failures, 1);
        }
        let mut changes = changes;
        if let Some(od) = &mut self.on_demand {
            od.observe(
                &changes,
                self.slo.slos(),
                &self.agg,
                std::time::Instant::now(),
            );
            changes.extend(od.detail_due(self.slo.slos()));
        }
        self.burns = changes
            .into_iter()
            .map(|b| {
                let findings = match &self.baseline {
                    Some(base) => {
                        base.diagnose(&self.agg, &self.slo.slos()[b.slo].def, DIAGNOSIS_FINDINGS)
                    }
                    None => Vec::new(),
                };
                (b, findings)
            })
            .collect();
        self.select();
        if let Some(base) = &mut self.baseline {
            base.observe(&self.agg, std::time::Instant::now());
            SelfStats::set(&self.stats.diagnosis_series, base.len() as u64);
            SelfStats::set(&self.stats.diagnosis_turned_away, base.turned_away());
        }
        for (b, findings) in &self.burns {
            let s = &self.slo.slos()[b.slo];
            let text = crate::slo::events::summary(s, b, findings);
            if b.started {
                tracing::warn!(slo = %s.def.name, "{text}");
            } else {
                info!(slo = %s.def.name, "{text}");
            }
        }
        let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        SelfStats::set(&self.stats.bpf_stats_enabled, stats_on as u64);
        // The kernel's counts only move while its statistics are on: one
        // sysctl read per interval instead of a fdinfo read per program.
        if stats_on {
            for (i, ns, runs) in self.probes.program_stats(&crate::telemetry::PROGRAMS) {
                SelfStats::set(&self.stats.program_run_us[i], ns / 1000);
                SelfStats::set(&self.stats.program_runs[i], runs);
            }
        }
        let id = self.cgroups.stats();
        SelfStats::set(&self.stats.identity_entries, id.entries);
        SelfStats::set(&self.stats.identity_departed, id.departed);
        SelfStats::set(&self.stats.identity_births, id.births);
        SelfStats::set(&self.stats.identity_dropped, id.dropped);
        for m in Metric::all() {
            let (live, folded, evicted) = self.agg.series_counts(m);
            SelfStats::set(&self.stats.series_active[m.index()], live as u64);
            SelfStats::set(&self.stats.series_folded[m.index()], folded);
            SelfStats::set(&self.stats.series_evicted[m.index()], evicted);
        }
    }

    /// Resolve the cgroups the kernel reported as born since the last call,
    /// while their runtime's and kubelet's records exist.
    pub fn drain_cgroup_events(&mut self) {
        let Some(rb) = self.probes.cgroup_events.as_mut() else {
            return;
        };
        let mut born = false;
        while let Some(item) = rb.next() {
            if let Some((id, path)) = probes::lifecycle::parse_event(&item) {
                self.cgroups.learn(id, &path);
                born = true;
            }
        }
        // A new container of a selected pod is measured from its start.
        if born {
            self.select();
        }
    }

    /// This interval's request (the exporter adds the self-metrics).
    pub fn request(&self) -> ExportMetricsServiceRequest {
        let mut req = otlp::build_request(&self.agg, &self.resource);
        self.add_slo_scope(&mut req, self.agg.temporality);
        req
    }

    /// The SLO metrics as their own scope (`syscope.slo`).
    fn add_slo_scope(&self, req: &mut ExportMetricsServiceRequest, t: Temporality) {
        let metrics = self
            .slo
            .metrics(t, self.agg.interval_end, self.agg.interval_start);
        if metrics.is_empty() {
            return;
        }
        if let Some(rm) = req.resource_metrics.first_mut() {
            rm.scope_metrics.push(ScopeMetrics {
                scope: Some(otlp::scope(crate::slo::SCOPE)),
                metrics,
                ..Default::default()
            });
        }
    }

    /// Everything the Prometheus endpoint shows: the SLIs cumulative,
    /// whatever OTLP's temporality, and the self-metrics read now.
    pub fn cumulative_request(&self) -> ExportMetricsServiceRequest {
        let mut req = otlp::build_request_as(&self.agg, &self.resource, Temporality::Cumulative);
        self.add_slo_scope(&mut req, Temporality::Cumulative);
        let own = self.own_cumulative.scope(&self.own_cumulative.snapshot());
        if let Some(rm) = req.resource_metrics.first_mut() {
            rm.scope_metrics.push(own);
        }
        req
    }
}

/// Findings a burn event carries at most.
const DIAGNOSIS_FINDINGS: usize = 5;

/// How to attach, from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Force a hook instead of probing (`--hook`).
    pub force_mode: Option<probes::AttachMode>,
    /// Force the route of TCP request latency (tests, benchmarks).
    pub force_io: Option<probes::IoRoute>,
    /// Attach one of the benchmark's yardsticks instead (see xtask bench).
    pub bench: Option<probes::BenchPrograms>,
    /// Thread state in the LRU hash map even where task storage serves.
    pub lru_threads: bool,
}

/// Whether syscall SLIs come on demand: the syscall set is not on for
/// every process, and something may select a workload.
pub fn on_demand(cfg: &Config) -> bool {
    !cfg.probes.syscalls && OnDemand::possible(&cfg.on_demand, &cfg.slos)
}

/// Run until a signal; returns after the final export.
pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM while the programs load is held until the
    // loop, which then detaches, flushes and exits cleanly.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let stats = Arc::new(SelfStats::default());
    let _ = stats.own_attributes.set(cfg.identity.own.clone());
    let mut service = Service::start(&cfg.health, &ProcessEnv).await?;
    // Bound before the programs load, as health is: a taken port exits now.
    let prometheus = match cfg.prometheus {
        Some(settings) => Some(prometheus::Endpoint::start(settings, stats.clone()).await?),
        None => None,
    };
    // Before the programs load: an unusable state directory stops here.
    let slo = Engine::new(
        &cfg.slos,
        &cfg.table.not_failures,
        cfg.state_dir.as_deref(),
        SystemTime::now(),
    )?;
    let probes = probes::load(&LoadOptions {
        kernel_maps: cfg.limits.kernel_maps,
        force_mode: opts.force_mode,
        bench: opts.bench,
        lru_threads: opts.lru_threads,
        syscalls: cfg.probes.syscalls,
        on_demand: on_demand(&cfg),
        tcp: cfg.probes.tcp,
        force_io: opts.force_io,
        thresholds: crate::slo::definition::thresholds(&cfg.slos),
    })?;
    let mut daemon = Daemon::new(&cfg, probes, stats.clone(), slo);
    daemon.probes.announce();
    let exporter = cfg
        .export
        .clone()
        .map(|settings| export::spawn(settings, stats.clone()))
        .transpose()
        .context("setting up the OTLP exporter")?;
    if let Some(e) = &cfg.export {
        info!(endpoint = %e.endpoint, protocol = ?e.protocol, interval = ?cfg.interval, "exporting over OTLP");
    }
    if let Some(p) = &prometheus {
        // Something to scrape before the first interval ends.
        p.publish(&daemon.cumulative_request());
        info!(address = %p.local_addr(), interval = ?cfg.interval, "serving Prometheus metrics at /metrics");
    }
    if cfg.show_table {
        info!(interval = ?cfg.interval, "no exporter configured: printing a live table");
    } else if cfg.export.is_none() && prometheus.is_none() {
        info!(interval = ?cfg.interval, "exporters none: collecting, exporting nothing");
    }

    // Ready only now: everything is set up, and a SIGTERM gets the final flush.
    service.attached(
        daemon.probes.hooks(),
        daemon.probes.signals.json(),
        exporter.as_ref().map(ExportHandle::health),
    );
    // cgroup births are resolved as they come, not at the next interval.
    let births = daemon.probes.cgroup_events.as_ref().and_then(|rb| {
        // SAFETY: the descriptor belongs to the ring buffer in
        // `daemon.probes`, which outlives `births` (declared after it,
        // dropped before it) and is never closed or replaced meanwhile.
        unsafe { AsyncFd::register_with_interest(Fd(rb.as_raw_fd()), Interest::READABLE) }.ok()
    });
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => cycle(&mut daemon, exporter.as_ref(), prometheus.as_ref(), &cfg),
            ready = readable(births.as_ref()) => {
                daemon.drain_cgroup_events();
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
            }
            () = service.watchdog() => {}
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
        }
    }

    // Detach first so the last read holds everything up to now, then flush.
    let deadline = Instant::now() + cfg.shutdown_grace;
    service.stopping();
    daemon.probes.detach();
    cycle(&mut daemon, exporter.as_ref(), prometheus.as_ref(), &cfg);
    if !daemon.slo.save() {
        SelfStats::add(&daemon.stats.slo_state_write_failures, 1);
    }
    if let Some(ex) = exporter {
        // Logs an error itself when intervals are left unsent.
        ex.shutdown(remaining(deadline)).await;
    }
    info!("stopped");
    Ok(())
}

/// A descriptor owned elsewhere (the ring buffer in `Probes`, which lives
/// as long as the loop), for `AsyncFd`.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Readiness of `fd`, or never without one.
async fn readable(fd: Option<&AsyncFd<Fd>>) -> std::io::Result<AsyncFdReadyGuard<'_, Fd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn cycle(
    daemon: &mut Daemon,
    exporter: Option<&ExportHandle>,
    prometheus: Option<&prometheus::Endpoint>,
    cfg: &Config,
) {
    daemon.collect();
    // Every interval, points or not: the request carries the self-metrics.
    if let Some(ex) = exporter {
        // A burn's event goes first: the exporter sends log requests ahead
        // of buffered intervals.
        for (b, findings) in &daemon.burns {
            let s = &daemon.slo.slos()[b.slo];
            ex.submit_logs(crate::slo::events::log_request(
                &daemon.resource,
                s,
                b,
                findings,
                SystemTime::now(),
            ));
        }
        ex.submit(daemon.request());
    }
    if let Some(p) = prometheus {
        p.publish(&daemon.cumulative_request());
    }
    if cfg.show_table {
        let rows = table::rows(&daemon.agg, &cfg.table);
        let header = format!(
            "syscope {} | probes={} | {}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            daemon.probes.hooks(),
            daemon.stats.summary()
        );
        print!("{header}\n{}", table::render_slos(daemon.slo.slos()));
        if rows.is_empty() && !daemon.probes.syscalls_attached() {
            println!(
                "(syscall SLIs on demand: no workload selected now; --probes syscalls,tcp \
                 measures every process)"
            );
        } else {
            print!("{}", table::render(&rows, ""));
        }
        if daemon.probes.tcp.is_some() {
            let (rows, totals) = table::tcp_rows(&daemon.agg, &cfg.table);
            print!("{}", table::render_tcp(&rows, &totals));
        }
    }
}

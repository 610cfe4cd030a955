//! syscope: eBPF TCP SLIs for every workload on a host, syscall SLIs on demand,
//! exported over OTLP.
//!
//! The flow, one module per stage: `probes` (load and attach the kernel
//! programs) -> `collect` (read the maps, compute deltas, evict idle entries) -> `aggregate`
//! (series, cardinality limits, temporality, OTLP encoding) -> `export`
//! (OTLP transport), `prometheus` (pull endpoint) or `table` (live terminal view); with `config`, `enrich`
//! (names, containers) and `telemetry` (the agent's own metrics) beside them.
//! `app` wires them into the daemon; `service` faces the supervisor
//! (health endpoint, systemd notifications).

pub mod aggregate;
pub mod app;
pub mod check;
pub mod collect;
pub mod config;
#[cfg(test)]
mod docgen;
pub mod enrich;
pub mod export;
pub mod ondemand;
pub mod probes;
pub mod prometheus;
pub mod service;
pub mod slo;
pub mod table;
pub mod telemetry;

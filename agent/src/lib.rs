//! syscope: eBPF syscall latency and error SLIs for every workload on a host,
//! exported over OTLP.
//!
//! The flow, one module per stage: `probes` (load and attach the kernel
//! programs) -> `collect` (read the maps, compute deltas) -> `aggregate`
//! (series, cardinality limits, temporality) -> `export` (OTLP) or `table`
//! (live terminal view); with `config`, `enrich` (names, containers) and
//! `telemetry` (the agent's own metrics) beside them.

pub mod config;
pub mod enrich;
pub mod export;
pub mod telemetry;

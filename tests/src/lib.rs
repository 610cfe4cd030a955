//! Test harness: a real OTLP receiver (rotel-agent), a parser for what it received, a real
//! Prometheus server, and a workload process with a known truth.

pub mod docs;
pub mod otlp_text;
pub mod prom;
pub mod receiver;
pub mod slo;
pub mod tls;
pub mod workload;

pub use docs::assert_documented_attributes;
pub use otlp_text::{
    latest, select, ExpHistogram, LogRecord, MetricPoint, PointValue, Temporality,
};
pub use prom::{http_get, prometheus_path, Prometheus};
pub use receiver::{free_port, free_ports, rotel_agent_path, workspace_root, Receiver};
pub use workload::{
    output_durations_s, output_field, run_named, spawn_named, unique_name, workload_bin,
};

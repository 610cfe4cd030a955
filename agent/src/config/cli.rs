//! Command-line flags. Values are kept as raw strings and validated in
//! [`super::load`], so a bad flag gets the same error format (naming the
//! flag) as a bad environment variable or file key.

use std::fmt::Write;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use super::{env, EXAMPLE_TOML};

/// Flags; `Cli::parse()` in main, `Cli::try_parse_from` in tests.
#[derive(Clone, Debug, Default, Parser)]
#[command(
    name = "syscope",
    version,
    // The description in agent/Cargo.toml (also the image's and the .deb's).
    about,
    // -h and --help both print everything below: the environment and file
    // sections are the main documentation of the configuration.
    disable_help_flag = true,
    after_help = after_help(),
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML config file (format below)
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Collector base URL, http(s)://HOST[:PORT][/PATH] (gRPC also HOST:PORT); without one, a live table is shown
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Exporters: otlp | prometheus | otlp,prometheus | none (default: otlp with an endpoint, else the live table)
    #[arg(long, value_name = "LIST")]
    pub exporters: Option<String>,

    /// Prometheus endpoint host (GET /metrics): IP, localhost (default) or a name
    #[arg(long, value_name = "HOST")]
    pub prometheus_host: Option<String>,

    /// Prometheus endpoint port, 1 to 65535 (default 9464)
    #[arg(long, value_name = "PORT")]
    pub prometheus_port: Option<String>,

    /// PEM CA bundle that verifies the collector (default: the built-in Mozilla roots)
    #[arg(long, value_name = "PATH")]
    pub certificate: Option<PathBuf>,

    /// PEM client certificate chain for mTLS (with --client-key)
    #[arg(long, value_name = "PATH")]
    pub client_certificate: Option<PathBuf>,

    /// PEM client private key for mTLS (with --client-certificate)
    #[arg(long, value_name = "PATH")]
    pub client_key: Option<PathBuf>,

    /// true: plaintext to a scheme-less gRPC endpoint; false (default): TLS
    #[arg(long, value_name = "BOOL")]
    pub insecure: Option<String>,

    /// OTLP transport: grpc (default) | http/protobuf
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<String>,

    /// Export compression: gzip | none (default)
    #[arg(long, value_name = "COMPRESSION")]
    pub compression: Option<String>,

    /// Export interval, 100ms to 1h, e.g. 10s or 500ms (default 60s with OTLP export; 5s without)
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,

    /// Aggregation temporality: cumulative (default) | delta | lowmemory (= delta)
    #[arg(long, value_name = "TEMPORALITY")]
    pub temporality: Option<String>,

    /// service.name resource attribute (default syscope)
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,

    /// Series kept per metric, 2 to 1000000 (default 2000)
    #[arg(long, value_name = "N")]
    pub max_series: Option<String>,

    /// Unsent intervals kept while the collector is down, 1 to 10000 (default 60)
    #[arg(long, value_name = "N")]
    pub buffer_intervals: Option<String>,

    /// Log filter, RUST_LOG syntax (default info)
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Rows in the live table, 1 to 10000 (default 20)
    #[arg(long, value_name = "N")]
    pub table_rows: Option<String>,

    /// Live table: only series with these attributes, e.g. k8s.namespace.name=shop (comma separated key=value)
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub filter: Option<String>,

    /// Live table order: rate (default), p50, p99, p99.9 or errors (error ratio)
    #[arg(long, value_name = "ORDER")]
    pub sort: Option<String>,

    /// Probe sets on for every process, comma separated: syscalls, tcp (default tcp; syscalls on demand)
    #[arg(long, value_name = "LIST")]
    pub probes: Option<String>,

    /// Workloads whose syscalls are measured when the syscall set is not on for all, e.g. process.executable.name=redis-server,k8s.namespace.name=shop
    #[arg(long, value_name = "ATTR=VALUE,...")]
    pub syscall_workloads: Option<String>,

    /// How long a burning SLO's workloads have their syscalls measured, 0s to 1day (default 15m; 0s: never)
    #[arg(long, value_name = "DURATION")]
    pub slo_detail: Option<String>,

    /// A TOML file of [[slo]] tables, added to those of the config file
    #[arg(long, value_name = "PATH")]
    pub slo_file: Option<String>,

    /// Directory where SLO history survives restarts (default: none, in memory)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,

    /// Print the resolved configuration as TOML (header values redacted) and exit
    #[arg(long)]
    pub print_config: bool,

    /// Health endpoint IP:PORT (/healthz, /readyz), e.g. 127.0.0.1:9479; off (default) disables it
    #[arg(long, value_name = "ADDR")]
    pub health_address: Option<String>,

    /// Syscall hooks: auto (tp_btf, else raw_syscalls tracepoints), tp_btf or tracepoint
    #[arg(long, value_name = "HOOK", value_parser = ["auto", "tp_btf", "tracepoint"], default_value = "auto")]
    pub hook: String,

    /// TCP request latency from: auto (the socket tracepoints where the kernel has them, 6.3+; else the syscall programs on socket fds), sock or syscalls
    #[arg(long, value_name = "ROUTE", value_parser = ["auto", "sock", "syscalls"], default_value = "auto")]
    pub tcp_io_hook: String,

    /// Benchmark only: attach one of its yardsticks (ebpf/src/floor.rs) instead of syscope
    #[arg(long, hide = true, value_enum, value_name = "PROGRAMS")]
    pub bench_programs: Option<crate::probes::BenchPrograms>,

    /// Tests and benchmarks: thread state in the LRU hash map even where task storage serves
    #[arg(long, hide = true)]
    pub lru_threads: bool,

    /// Print help: flags, environment variables and the config file
    #[arg(short = 'h', long = "help", action = ArgAction::HelpLong)]
    help: Option<bool>,
}

/// Subcommands; without one the agent runs.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Preflight: kernel, BTF, capabilities, map memory, and which hook serves each signal (loads and detaches the programs); exits 1 when a requested probe set cannot run
    Check {
        /// text (default) or json
        #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// SLOs as code, from the configured [[slo]] definitions
    Slo {
        #[command(subcommand)]
        what: SloCommand,
    },
}

/// What `syscope slo` prints.
#[derive(Clone, Debug, Subcommand)]
pub enum SloCommand {
    /// Prometheus recording and multi-window burn-rate alerting rules (YAML)
    Rules,
    /// A Grafana dashboard (JSON): budgets, burn rates, good/bad rates and the SLIs
    Dashboard,
}

fn after_help() -> String {
    let mut s = String::from(
        "Precedence: flag > environment variable > config file > default.\n\
         Without an endpoint anywhere, nothing is exported and a live table is shown.\n\
         An invalid configuration exits with status 2.\n\
         \n\
         Environment variables (empty values count as unset):\n",
    );
    for (name, help) in env::DOCS {
        let _ = writeln!(s, "  {name}");
        for line in help.lines() {
            let _ = writeln!(s, "      {line}");
        }
    }
    s.push_str(
        "\nNot supported (yet): set to anything but what they accept, these exit with status 2.\n\
         Trace and log variables (OTEL_TRACES_*, OTEL_LOGS_*, ...) do not apply and are ignored.\n",
    );
    // Variables refused for the same reason share one text.
    for (i, r) in env::REFUSED.iter().enumerate() {
        let _ = writeln!(s, "  {}", r.name);
        let doc = r.doc();
        if env::REFUSED
            .get(i + 1)
            .is_some_and(|next| next.doc() == doc)
        {
            continue;
        }
        for line in wrap(&doc, 84) {
            let _ = writeln!(s, "      {line}");
        }
    }
    s.push_str("\nConfig file (--config PATH), with every key:\n");
    for line in EXAMPLE_TOML.lines() {
        // No indent on blank lines: trailing spaces would show in diffs of the help.
        let indent = if line.is_empty() { "" } else { "    " };
        let _ = writeln!(s, "{indent}{line}");
    }
    s
}

/// Lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

//! `syscope`: parse the configuration, set up logging, run the daemon.

use std::process::ExitCode;

use clap::Parser as _;
use syscope::{
    config::{self, Cli, Command, ProcessEnv, SloCommand},
    probes::{AttachMode, IoRoute},
};

fn main() -> ExitCode {
    abort_on_panic();
    // Bad usage (an unknown flag, a --hook that is not one of its values)
    // is clap's to report: it names the flag and exits with status 2.
    let cli = Cli::parse();
    let cfg = match config::load(&cli, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syscope: {e}");
            return ExitCode::from(config::EXIT_CODE_INVALID_CONFIG as u8);
        }
    };
    if cli.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    // SLOs as code: generated from the checked definitions, nothing loaded.
    if let Some(Command::Slo { what }) = &cli.command {
        if cfg.slos.is_empty() {
            eprintln!("syscope: no SLOs defined: add [[slo]] tables to --config or --slo-file");
            return ExitCode::from(config::EXIT_CODE_INVALID_CONFIG as u8);
        }
        match what {
            SloCommand::Rules => print!("{}", syscope::slo::rules::render(&cfg.slos)),
            SloCommand::Dashboard => print!("{}", syscope::slo::dashboard::render(&cfg.slos)),
        }
        return ExitCode::SUCCESS;
    }
    let force_io = match cli.tcp_io_hook.as_str() {
        "sock" => Some(IoRoute::SockTracepoints),
        "syscalls" => Some(IoRoute::Syscalls),
        _ => None,
    };
    // The preflight reports on stdout; the loader's own lines stay quiet.
    let log = match cli.command {
        Some(Command::Check { .. } | Command::Slo { .. }) => "warn",
        None => cfg.log.as_str(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: the journal and container logs
        // would store them verbatim.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(Command::Check { output }) = &cli.command {
        let report = syscope::check::run(&cfg, force_io);
        match output.as_str() {
            "json" => println!("{}", report.json()),
            _ => print!("{}", report.text()),
        }
        return if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // One thread is plenty: the work is one map read per interval and the
    // exporter's I/O; it keeps the agent's CPU and memory small.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("syscope: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(syscope::app::run(
        cfg,
        syscope::app::RunOptions {
            force_mode: match cli.hook.as_str() {
                "tp_btf" => Some(AttachMode::BtfTracepoint),
                "tracepoint" => Some(AttachMode::Tracepoint),
                _ => None,
            },
            force_io,
            bench: cli.bench_programs,
            lru_threads: cli.lru_threads,
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("syscope: {}", syscope::probes::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A panic anywhere, in any thread or tokio task, ends the process, so that
/// the kernel detaches the programs with it. Without this, tokio would catch
/// a task's panic and the process could hang with its programs attached.
/// It logs first, then aborts whatever the build profile.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{info}");
        } else {
            print(info);
        }
        eprintln!("syscope: panicked; aborting so that the kernel detaches the programs");
        std::process::abort();
    }));
}

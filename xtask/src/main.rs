//! Project tasks: `cargo xtask <setup|build|run|test|bench|image|deb|vmtest>`.
//!
//! Each task installs what it needs first (idempotently), so the README's two
//! commands work on a fresh Debian 12 machine as root.

mod bench;
mod bench_collect;
mod deploy;
mod vmtest;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

/// Debian packages: the BPF-capable rustc with its prebuilt `core`, the LLVM
/// that bpf-linker links against, bpftrace, redis, wrk and bpftool for the
/// benchmark, iproute2 (ip, tc) and procps (sysctl) for the TCP tests'
/// network namespaces and the benchmark, and nginx and ab for the TCP tests
/// (and the benchmark).
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftrace",
    "python3-venv",
    "iproute2",
    "procps",
    // Real servers and clients for the TCP truth tests (HTTP/1.1 keep-alive).
    "nginx",
    "apache2-utils",
    // Packaging and its tests (deploy/): the image is built and run with
    // podman on runc (crun fails on hybrid cgroup hosts); strip and
    // dpkg-shlibdeps for the image and the .deb.
    "podman",
    "runc",
    "binutils",
    "dpkg-dev",
    // Other kernels under qemu (vmtest): the emulator, the guests' static
    // busybox, depmod/modprobe for the kernels' modules, xz for their .ko.xz.
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    // Export backends the tests run for real: Prometheus 2.42 scraping the
    // agent (tests/tests/prometheus.rs); nginx (listed above) and stunnel terminating TLS
    // in front of the receiver, openssl making the certificates (tls.rs).
    "prometheus",
    "stunnel4",
    "openssl",
    // The benchmark's server throughput section (bench/servers.rs): a
    // private redis-server driven by redis-benchmark, nginx (above) driven
    // by wrk; bpftool names the kernel programs in its per-program times.
    "redis-server",
    "redis-tools",
    "wrk",
    "bpftool",
];
/// Renders deploy/kubernetes (kustomize) in the tests, when no kubectl is installed.
const KUBECTL_PACKAGE: &str = "kubernetes-client";
/// Validates the Kubernetes manifests offline, in the tests' venv.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
const BPF_LINKER_VERSION: &str = "0.13.0";
const ROTEL_VERSION: &str = "0.0.1a15";

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
  setup          install what building and testing need (apt packages, bpf-linker, the OTLP test receiver)
  build          setup, then build the agent: target/release/syscope
  run [ARGS]     build, then run the agent (as root) with ARGS, e.g. `cargo xtask run -- --interval 2s`
  test           build, then lint (rustfmt, clippy), unit tests, the integration tests on the real kernel,
                 and the syscall and TCP truth checks on Debian's 5.10, 6.1 and 6.12 kernels under qemu
  bench [ARGS]   build, then the overhead benchmark (see README); `--quick` for a short run,
                 `--servers` for the server section alone
  image [--archive PATH]  build, then the container image (podman): localhost/syscope:<version>
  deb            build, then the Debian package: target/deb/syscope_<version>-1_<arch>.deb
  vmtest [--kernel 5.10|6.1|6.12|all] [-- TEST ARGS]
                 build, then the kernel-facing integration tests on Debian's kernels under qemu
                 (docs/kernels.md; `cargo xtask vmtest --help` for its options)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|_| build()),
        Some("run") => setup().and_then(|_| build()).and_then(|_| run(&args[1..])),
        Some("test") => setup().and_then(|_| build()).and_then(|_| test()),
        Some("bench") => setup()
            .and_then(|_| build())
            .and_then(|_| bench::run(&root(), &args[1..])),
        Some("image") => setup()
            .and_then(|_| build())
            .and_then(|_| deploy::image(&args[1..])),
        Some("deb") => setup()
            .and_then(|_| build())
            .and_then(|_| deploy::deb().map(drop)),
        // Options are checked (and --help answered) before the build.
        Some("vmtest") => vmtest::check_args(&args[1..])
            .and_then(|_| setup())
            .and_then(|_| build())
            .and_then(|_| vmtest::run(&args[1..])),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo")
        })
        .join("bin")
}

fn setup() -> Result<()> {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .chain((!kubectl).then_some(KUBECTL_PACKAGE))
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {missing:?}: run `cargo xtask setup` as root (apt-get)");
        }
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    let linker = cargo_bin_dir().join("bpf-linker");
    let have = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if !have {
        sh(cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env(
                "PATH",
                format!(
                    "/usr/lib/llvm-22/bin:{}",
                    env::var("PATH").unwrap_or_default()
                ),
            ))?;
    }

    // The OTLP receiver for the integration tests. pip puts the binary in
    // site-packages, not bin/: link it to a stable path.
    let venv = root().join(".venv");
    let rotel = venv.join("bin/rotel-agent");
    if !rotel.exists() {
        if !venv.join("bin/pip").exists() {
            sh(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        sh(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            &format!("rotel=={ROTEL_VERSION}"),
        ]))?;
        let lib = std::fs::read_dir(venv.join("lib"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.exists())
            .context("rotel installed but rotel-agent not found in site-packages")?;
        std::os::unix::fs::symlink(&lib, &rotel)?;
    }
    if !venv.join("bin/kubernetes-validate").exists() {
        sh(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
        ]))?;
    }
    Ok(())
}

fn build() -> Result<()> {
    sh(cargo().current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "syscope",
        "-p",
        "syscope-tests",
        "--bins",
    ]))?;
    eprintln!("agent: {}", root().join("target/release/syscope").display());
    Ok(())
}

/// The agent by hand: a look at one machine, so every process's syscalls
/// too (`--probes syscalls,tcp`) unless the arguments or the environment
/// choose the probe sets.
fn run(args: &[String]) -> Result<()> {
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let mut cmd = Command::new(root().join("target/release/syscope"));
    let chosen = args.iter().any(|a| a.starts_with("--probes"))
        || std::env::var_os("SYSCOPE_PROBES").is_some();
    if !chosen {
        cmd.args(["--probes", "syscalls,tcp"]);
    }
    sh(cmd.args(args))
}

/// The kernel programs' sources: every .rs file under ebpf/src.
fn ebpf_sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    let mut dirs = vec![root.join("ebpf/src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Clippy on the kernel programs. No clippy can target BPF here: Debian's
/// rustc-web (the compiler with a BPF `core`) ships no clippy-driver, and
/// rustup's clippy has no BPF `core` (no rust-src to build one). So the
/// crate is checked for the host target with the userspace toolchain's
/// clippy: the same source, lints and types (aya-ebpf builds for the host
/// too); only code generation, which clippy does not do, is BPF-specific.
fn clippy_ebpf(root: &Path) -> Result<()> {
    let mut c = cargo();
    c.current_dir(root.join("ebpf"))
        .args(["clippy", "--locked", "--target-dir"])
        .arg(root.join("target/ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        // Only these crates may use nightly features (inline BPF asm), as in
        // agent/build.rs.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf,syscope_ebpf")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS");
    sh(&mut c)
}

fn test() -> Result<()> {
    let r = root();
    sh(cargo().current_dir(&r).args(["fmt", "--all", "--check"]))?;
    // The kernel programs are their own workspace (not in `--all`).
    sh(Command::new("rustfmt")
        .args(["--edition", "2021", "--check"])
        .args(ebpf_sources(&r)?))?;
    sh(cargo().current_dir(&r).args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    clippy_ebpf(&r)?;
    // Unit tests (no privileges needed), then the integration tests on the
    // real kernel, one at a time: they share the kernel's syscall hooks.
    sh(cargo()
        .current_dir(&r)
        .args(["test", "--release", "--workspace", "--lib", "--bins"]))?;
    if !is_root() {
        eprintln!("integration tests need root (CAP_BPF, CAP_PERFMON): they will report themselves skipped");
    }
    // Each skipped test appends a line here (tests/tests/common: skip).
    let skip_log = r.join("target/skipped-tests.txt");
    std::fs::write(&skip_log, "").with_context(|| format!("truncating {}", skip_log.display()))?;
    let mut integration = cargo();
    integration
        .current_dir(&r)
        .args([
            "test",
            "--release",
            "-p",
            "syscope-tests",
            "--tests",
            "--",
            "--test-threads=1",
        ])
        .env("SYSCOPE_SKIP_LOG", &skip_log)
        .env("SYSCOPE_BIN", r.join("target/release/syscope"))
        .env("SYSCOPE_ROTEL", r.join(".venv/bin/rotel-agent"));
    // The packaged forms, built once here for tests/tests/deploy.rs.
    integration.env("SYSCOPE_DEB", deploy::deb()?);
    if is_root() {
        integration.env("SYSCOPE_IMAGE", deploy::build_image()?);
    }
    let run = sh(&mut integration);
    // Listed even when the run failed: a skip may be why.
    let skipped: Vec<String> = std::fs::read_to_string(&skip_log)
        .with_context(|| format!("reading {}", skip_log.display()))?
        .lines()
        .filter_map(|l| l.strip_prefix("SKIPPED "))
        .map(str::to_owned)
        .collect();
    if skipped.is_empty() {
        eprintln!("integration tests: none skipped");
    } else {
        eprintln!(
            "\n{} integration tests skipped (libtest shows a skip as passed):",
            skipped.len()
        );
        for s in &skipped {
            eprintln!("  {s}");
        }
    }
    run?;
    if !skipped.is_empty() {
        if under_ci() {
            bail!(
                "{} tests skipped under CI, where all must run",
                skipped.len()
            );
        }
        if is_root() {
            bail!(
                "{} tests skipped although running as root, where all must run",
                skipped.len()
            );
        }
    }
    // The kernel matrix: the syscall truth checks and every TCP test on
    // Debian's 5.10, 6.1 and 6.12 under qemu (about 2-3 minutes each;
    // docs/kernels.md), and the README's kernel x signal table checked
    // against what `syscope check` says in each.
    if is_root() {
        vmtest::run(&["--set".to_owned(), "focused".to_owned()])?;
    } else {
        eprintln!("kernel matrix (cargo xtask vmtest) skipped: it boots kernels as root");
        if under_ci() {
            bail!("the kernel matrix must run under CI");
        }
    }
    Ok(())
}

/// `CI` set, as CI services do (`CI=true`).
fn under_ci() -> bool {
    env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

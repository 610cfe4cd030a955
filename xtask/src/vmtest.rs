//! `cargo xtask vmtest`: syscope's kernel-facing integration tests on the
//! kernels a fleet runs, each booted under qemu.
//!
//! The kernels are Debian's own packages (bullseye's 5.10, bookworm's 6.1 and
//! 6.12), downloaded from the archive and extracted, never installed, and
//! cached outside the repository. Each guest boots a tiny initramfs (busybox
//! and the kernel's own virtio + 9p modules), mounts the host's root
//! read-only over 9p, and chroots into it: the test executables, the agent
//! and the OTLP receiver built on the host run unchanged. Nothing is built
//! inside a guest: under TCG that would take hours.
//!
//! See docs/kernels.md for what it downloads, where it caches, how long it
//! takes and the results measured.

use std::{
    collections::{hash_map::DefaultHasher, BTreeMap, BTreeSet},
    env, fmt,
    fmt::Write as _,
    fs,
    hash::{Hash, Hasher},
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, root, sh};

const USAGE: &str = "usage: cargo xtask vmtest [options] [-- TEST ARGS]

Boots Debian's kernel packages under qemu and runs the kernel-facing
integration tests inside each guest (see docs/kernels.md).

options:
  --kernel K[:SET]   5.10, 6.1, 6.12 or all (the default); repeatable; an
                     optional :SET picks that kernel's test set
  --set SET          the test set for kernels without their own :SET:
                     focused (default), syscalls, tcp, full, identity, ondemand
  --allow-fail K     report K's failure but do not fail the run (repeatable)
  --timeout MIN      kill a guest after MIN minutes (default 15)
  --accel tcg|kvm    default: kvm only where a real one (kvm_intel/kvm_amd) is loaded

TEST ARGS go to every test executable (libtest arguments); filters among
them replace the set's own filters.
";

/// Where kernels, apt lists and initramfs images are kept: outside the
/// repository, shared by every worktree. `SYSCOPE_VMTEST_CACHE` overrides.
const DEFAULT_CACHE: &str = "/var/cache/syscope-vmtest";
/// apt lists older than this are refreshed before picking a kernel.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TIMEOUT_MIN: u64 = 15;
/// A console line no test can print by accident: the guest's init prints it
/// with a per-run nonce and the test command's exit status.
const MARKER: &str = "SYSCOPE-VMTEST-DONE";
/// Prefix of the guest's `syscope check --output json` line (then the nonce).
const CHECK_MARKER: &str = "SYSCOPE-CHECK";
/// Console lines kept for the report of a failed or hung guest.
const TAIL_LINES: usize = 40;

/// A Debian release that carries kernels, with the suites searched.
struct Dist {
    codename: &'static str,
    /// Suites from the main archive, then from the security archive: point
    /// releases and security updates both ship kernels.
    suites: &'static [&'static str],
    security_suites: &'static [&'static str],
}

const BULLSEYE: Dist = Dist {
    codename: "bullseye",
    suites: &["bullseye"],
    security_suites: &["bullseye-security"],
};
const BOOKWORM: Dist = Dist {
    codename: "bookworm",
    suites: &["bookworm", "bookworm-updates"],
    security_suites: &["bookworm-security"],
};

/// A kernel series: packages named `<prefix><N><suffix>`, the newest N wins.
struct Series {
    name: &'static str,
    dist: &'static Dist,
    prefix: &'static str,
    suffix: &'static str,
}

const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        dist: &BULLSEYE,
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64",
    },
    Series {
        name: "6.1",
        dist: &BOOKWORM,
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    Series {
        name: "6.12",
        dist: &BOOKWORM,
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
    },
];

/// The test executables (tests/tests/<name>.rs) a set runs, each with its
/// libtest filters (none: all of its tests).
struct TestSet {
    name: &'static str,
    binaries: &'static [(&'static str, &'static [&'static str])],
}

const SYSCALL_TRUTHS: &[&str] = &[
    "failing_calls_counted_exactly",
    "sleep_latency_within_bucket_error",
    // The kernel's fold of a full map into the overflow series.
    "full_kernel_map_is_counted_not_silent",
];

const SETS: &[TestSet] = &[
    // The exact-count syscall checks, every TCP test, the on-demand tests
    // and the batch map reads (and lookup-and-delete, 5.14+, or its
    // fallback): about 6 minutes per kernel under TCG on 2 cores.
    TestSet {
        name: "focused",
        binaries: &[
            ("syscalls", SYSCALL_TRUTHS),
            ("tcp", &[]),
            ("ondemand", &[]),
            ("batch", &[]),
        ],
    },
    TestSet {
        name: "syscalls",
        binaries: &[("syscalls", SYSCALL_TRUTHS)],
    },
    TestSet {
        name: "tcp",
        binaries: &[("tcp", &[])],
    },
    TestSet {
        name: "full",
        binaries: &[("syscalls", &[]), ("tcp", &[])],
    },
    // Syscall SLIs on demand: programs detached and attached again, the
    // kernel's selection by process name, a burn's detail.
    TestSet {
        name: "ondemand",
        binaries: &[("ondemand", &[])],
    },
    // The identity programs (renames, exec from threads, compat calls,
    // cgroup births) and the cgroup layouts; podman is not in the guest.
    TestSet {
        name: "identity",
        binaries: &[("identity", IDENTITY_CHECKS)],
    },
];

const IDENTITY_CHECKS: &[&str] = &[
    "identity_programs_attach",
    "compat_syscalls_named_from_their_table",
    "rename_applies_to_every_thread",
    "exec_from_a_thread_is_counted",
    "kubelet_",
    "systemd_unit_on_every_point",
];

/// The kernel modules a guest needs to mount the host's root over 9p (and a
/// virtio RNG, so nothing waits for entropy); their dependencies come from
/// the kernel's modules.dep. Built in: nothing to load.
const INITRAMFS_MODULES: &[(&str, bool)] = &[
    // (name, required)
    ("virtio_pci", true),
    ("9pnet_virtio", true),
    ("9p", true),
    ("virtio_rng", false),
];

struct Options {
    kernels: Vec<(&'static Series, &'static TestSet)>,
    allow_fail: BTreeSet<String>,
    timeout: Duration,
    kvm: bool,
    test_args: Vec<String>,
}

fn series(name: &str) -> Result<Vec<&'static Series>> {
    if name == "all" {
        return Ok(SERIES.iter().collect());
    }
    SERIES
        .iter()
        .find(|s| s.name == name)
        .map(|s| vec![s])
        .with_context(|| format!("unknown kernel {name:?}: one of 5.10, 6.1, 6.12, all"))
}

fn test_set(name: &str) -> Result<&'static TestSet> {
    SETS.iter().find(|s| s.name == name).with_context(|| {
        format!(
            "unknown test set {name:?}: one of focused, syscalls, tcp, full, identity, ondemand"
        )
    })
}

fn parse_args(args: &[String]) -> Result<Options> {
    let (opts, test_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let mut kernels: Vec<(String, Option<String>)> = Vec::new();
    let mut set = "focused".to_string();
    let mut allow_fail = BTreeSet::new();
    let mut timeout = DEFAULT_TIMEOUT_MIN;
    let mut accel: Option<String> = None;
    let mut it = opts.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--kernel" => {
                let v = value("--kernel")?;
                let (k, s) = match v.split_once(':') {
                    Some((k, s)) => (k.to_string(), Some(s.to_string())),
                    None => (v, None),
                };
                kernels.push((k, s));
            }
            "--set" => set = value("--set")?,
            "--allow-fail" => {
                let k = value("--allow-fail")?;
                series(&k)?;
                allow_fail.insert(k);
            }
            "--timeout" => {
                let v = value("--timeout")?;
                timeout = v
                    .parse()
                    .with_context(|| format!("--timeout {v:?}: minutes, a whole number"))?;
            }
            "--accel" => accel = Some(value("--accel")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let default_set = test_set(&set)?;
    if kernels.is_empty() {
        kernels.push(("all".into(), None));
    }
    let mut chosen: Vec<(&'static Series, &'static TestSet)> = Vec::new();
    for (k, s) in &kernels {
        let ts = match s {
            Some(s) => test_set(s)?,
            None => default_set,
        };
        for sr in series(k)? {
            // A kernel named twice: the last choice of set wins.
            chosen.retain(|(c, _)| c.name != sr.name);
            chosen.push((sr, ts));
        }
    }
    // `--allow-fail all` is accepted by series(): expand it.
    if allow_fail.remove("all") {
        allow_fail.extend(SERIES.iter().map(|s| s.name.to_string()));
    }
    let kvm = match accel.as_deref() {
        None => real_kvm(),
        Some("kvm") => true,
        Some("tcg") => false,
        Some(o) => bail!("--accel {o:?}: tcg or kvm"),
    };
    Ok(Options {
        kernels: chosen,
        allow_fail,
        timeout: Duration::from_secs(timeout * 60),
        kvm,
        test_args,
    })
}

/// A hardware KVM (not the nested `kvm_pvm` these machines have, which
/// cannot boot these kernels: see /work/shared/TOOLCHAIN.md).
fn real_kvm() -> bool {
    (Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists())
        && Path::new("/dev/kvm").exists()
}

pub fn check_args(args: &[String]) -> Result<()> {
    parse_args(args).map(drop)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse_args(args)?;
    if env::consts::ARCH != "x86_64" {
        bail!("vmtest boots Debian's amd64 kernels: it needs an x86_64 host");
    }
    let cache = env::var_os("SYSCOPE_VMTEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_CACHE.into());
    let repo = root();
    let exes = test_executables(&repo)?;
    let work = repo.join("target/vmtest");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let mirrors = Mirrors::from_host();
    let mut outcomes = Vec::new();
    for (series, set) in &o.kernels {
        let t = Instant::now();
        // One kernel that cannot be fetched or booted fails alone: the
        // others still run.
        let outcome = Kernel::prepare(series, &cache, &mirrors)
            .and_then(|kernel| {
                eprintln!(
                    "vmtest {}: {} {} ready in {:.0?} at {}",
                    series.name,
                    kernel.package,
                    kernel.version,
                    t.elapsed(),
                    kernel.dir.display()
                );
                let first = boot(&o, series, set, &kernel, &exes, &repo, &work)?;
                // A guest that ran no test at all did not get as far as
                // the tests (an emulation hiccup at boot): once more, said
                // loudly. A test that ran and failed is never retried.
                if first.ok() || first.passed + first.failed > 0 {
                    return Ok(first);
                }
                eprintln!(
                    "vmtest {}: no test ran ({}); booting once more",
                    series.name, first.result
                );
                boot(&o, series, set, &kernel, &exes, &repo, &work)
            })
            .unwrap_or_else(|e| Outcome::not_run(series.name, set.name, e));
        eprintln!("vmtest {}: {}", series.name, outcome.line());
        outcomes.push(outcome);
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n| kernel | package version | accel | set | result | wall time | tests passed/failed |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for r in &outcomes {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {}/{} |",
            r.release,
            r.version,
            if o.kvm { "kvm" } else { "tcg" },
            r.set,
            r.result,
            minutes(r.wall),
            r.passed,
            r.failed
        );
    }
    print!("{table}");
    for r in outcomes.iter().filter(|r| !r.ok()) {
        println!("\n{} ({}): {}", r.series, r.release, r.result);
        for t in &r.failed_tests {
            println!("  failed:  {t}");
        }
        for s in &r.skipped {
            println!("  skipped: {s}");
        }
        for e in r.errors.iter().take(5) {
            println!("  agent:   {e}");
        }
        if r.log.as_os_str().is_empty() {
            continue;
        }
        println!("  console: {}", r.log.display());
        if r.failed_tests.is_empty() {
            println!("  last console lines:");
            for l in &r.tail {
                println!("    {l}");
            }
        }
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|r| !r.ok() && !o.allow_fail.contains(r.series))
        .map(|r| r.series)
        .collect();
    let allowed: Vec<&str> = outcomes
        .iter()
        .filter(|r| !r.ok() && o.allow_fail.contains(r.series))
        .map(|r| r.series)
        .collect();
    if !allowed.is_empty() {
        println!("\nfailures allowed by --allow-fail: {}", allowed.join(", "));
    }
    // The table says what the kernels offer, whatever the tests said.
    let table = signal_table(&repo, &outcomes);
    if !failed.is_empty() {
        bail!("kernels failed: {}", failed.join(", "));
    }
    table
}

const TABLE_BEGIN: &str = "<!-- kernel-signals:begin (cargo xtask vmtest writes this) -->";
const TABLE_END: &str = "<!-- kernel-signals:end -->";

/// The README's kernel x signal x hook table, from what `syscope check` said
/// in each guest and on this host. Once every kernel of the matrix ran: the
/// README must match it (`SYSCOPE_BLESS=1` rewrites it).
fn signal_table(repo: &Path, outcomes: &[Outcome]) -> Result<()> {
    let mut cols: Vec<(String, serde_json::Value)> = Vec::new();
    for s in SERIES {
        match outcomes
            .iter()
            .find(|o| o.series == s.name)
            .and_then(|o| o.check.clone())
        {
            Some(c) => cols.push((s.name.to_string(), c)),
            None => return Ok(()), // a partial matrix says nothing about the others
        }
    }
    if is_root() {
        // Every set on: the table says which hook serves each signal.
        let out = Command::new(repo.join("target/release/syscope"))
            .args(["--probes", "syscalls,tcp", "check", "--output", "json"])
            .stderr(Stdio::null())
            .output()
            .context("running syscope check on this host")?;
        let host: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing syscope check --output json")?;
        let release = host["kernel"].as_str().unwrap_or("?");
        let series: String = release.split('.').take(2).collect::<Vec<_>>().join(".");
        cols.push((format!("{series} (this host)"), host));
    }
    let table = render_signal_table(&cols);
    print!("\nsignals and hooks per kernel (syscope check):\n{table}");
    let readme = repo.join("README.md");
    let text = fs::read_to_string(&readme)?;
    let (Some(b), Some(e)) = (text.find(TABLE_BEGIN), text.find(TABLE_END)) else {
        bail!("README.md has no {TABLE_BEGIN} ... {TABLE_END} section");
    };
    let current = &text[b + TABLE_BEGIN.len()..e];
    let want = format!("\n{table}");
    if current == want {
        return Ok(());
    }
    if env::var_os("SYSCOPE_BLESS").is_some() {
        let new = format!("{}{TABLE_BEGIN}{want}{}", &text[..b], &text[e..]);
        fs::write(&readme, new)?;
        println!("README.md: kernel signal table rewritten");
        return Ok(());
    }
    bail!(
        "README.md's kernel signal table differs from what the matrix saw (above): \
         rerun with SYSCOPE_BLESS=1 to rewrite it"
    )
}

/// Rows: signals; columns: kernels; cells: the hook, or "none" and why.
fn render_signal_table(cols: &[(String, serde_json::Value)]) -> String {
    let mut t = String::from("| signal |");
    for (k, _) in cols {
        let _ = write!(t, " {k} |");
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(cols.len()));
    t.push('\n');
    let names: Vec<String> = cols
        .first()
        .and_then(|(_, c)| c["signals"].as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let _ = write!(t, "| `{name}` |");
        for (_, c) in cols {
            let sig = &c["signals"][&name];
            let cell = match (sig["hook"].as_str(), sig["unavailable"].as_str()) {
                (Some(h), _) => h.to_string(),
                (None, Some(why)) => format!("**none**: {why}"),
                _ => "?".into(),
            };
            let _ = write!(t, " {} |", cell.replace('|', "\\|"));
        }
        t.push('\n');
    }
    t
}

/// `name -> path` of the prebuilt integration test executables, built on the
/// host now if stale (cargo prints each one's path in its JSON messages).
fn test_executables(repo: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = cargo();
    cmd.current_dir(repo)
        .args([
            "test",
            "--release",
            "-p",
            "syscope-tests",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit());
    eprintln!("+ {cmd:?}");
    let out = cmd.output().context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the integration tests failed: {}", out.status);
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Without a JSON crate in xtask: cargo's messages are one object per
        // line, and these two string fields never hold escapes here.
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(exe), Some(name)) = (
            json_str(line, "\"executable\":\""),
            line.split_once("\"target\":{")
                .and_then(|(_, t)| json_str(t, "\"name\":\"")),
        ) else {
            continue;
        };
        exes.insert(name.to_string(), PathBuf::from(exe));
    }
    Ok(exes)
}

fn json_str<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let (_, rest) = s.split_once(key)?;
    rest.split_once('"').map(|(v, _)| v)
}

/// The archive URLs the host's own apt sources use (so a local mirror or
/// proxy is reused), else deb.debian.org.
struct Mirrors {
    archive: String,
    security: String,
}

impl Mirrors {
    fn from_host() -> Mirrors {
        let mut text = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut files: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
                .collect();
            files.sort();
            for f in files {
                text.push('\n');
                text.push_str(&fs::read_to_string(f).unwrap_or_default());
            }
        }
        // Both formats: `deb [opts] URI suite...` and deb822 `URIs: URI`.
        let uris: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| {
                if let Some(u) = l.strip_prefix("URIs:") {
                    u.split_whitespace().collect::<Vec<_>>()
                } else if l.starts_with("deb ") {
                    l.split_whitespace()
                        .filter(|w| w.contains("://"))
                        .take(1)
                        .collect()
                } else {
                    Vec::new()
                }
            })
            .map(|u| u.trim_end_matches('/'))
            .collect();
        let pick = |tail: &str, default: &str| {
            uris.iter()
                .find(|u| u.ends_with(tail))
                .map_or_else(|| default.to_string(), |u| u.to_string())
        };
        Mirrors {
            archive: pick("/debian", "http://deb.debian.org/debian"),
            security: pick("/debian-security", "http://deb.debian.org/debian-security"),
        }
    }
}

/// apt with a private sources list, lists and cache per Debian release: the
/// host's own apt state is neither read nor changed.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path, dist: &Dist, mirrors: &Mirrors) -> Result<Apt> {
        let dir = cache.join("apt").join(dist.codename);
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache"))?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let signed = if Path::new(keyring).exists() {
            format!(" [signed-by={keyring}]")
        } else {
            String::new()
        };
        let mut list = String::new();
        for s in dist.suites {
            let _ = writeln!(list, "deb{signed} {} {s} main", mirrors.archive);
        }
        for s in dist.security_suites {
            let _ = writeln!(list, "deb{signed} {} {s} main", mirrors.security);
        }
        let path = dir.join("sources.list");
        let changed = fs::read_to_string(&path).ok().as_deref() != Some(list.as_str());
        if changed {
            fs::write(&path, &list)?;
        }
        let apt = Apt { dir };
        let stamp = apt.dir.join("updated");
        let fresh = !changed
            && fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < LISTS_MAX_AGE);
        if !fresh {
            let r = sh(Command::new("apt-get")
                .args(apt.opts())
                .args(["-q", "update"]));
            match r {
                Ok(()) => fs::write(&stamp, "")?,
                // Offline: older lists (or a cached kernel) may still do.
                Err(e) => eprintln!("vmtest: apt-get update for {}: {e:#}", dist.codename),
            }
        }
        Ok(apt)
    }

    fn opts(&self) -> Vec<String> {
        let mut v = vec![
            format!(
                "-oDir::Etc::SourceList={}",
                self.dir.join("sources.list").display()
            ),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={}", self.dir.join("lists").display()),
            format!("-oDir::Cache={}", self.dir.join("cache").display()),
        ];
        if is_root() {
            // Downloads go to our own directory, which _apt cannot write.
            v.push("-oAPT::Sandbox::User=root".into());
        }
        v
    }

    fn cache_query(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("apt-cache")
            .args(self.opts())
            .args(args)
            .output()
            .context("running apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The newest package of the series and its version.
    fn newest(&self, s: &Series) -> Result<(String, String)> {
        let names = self.cache_query(&["pkgnames", s.prefix])?;
        let package = names
            .lines()
            .filter_map(|n| {
                let abi = n.strip_prefix(s.prefix)?.strip_suffix(s.suffix)?;
                Some((abi.parse::<u32>().ok()?, n))
            })
            .max()
            .map(|(_, n)| n.to_string())
            .with_context(|| {
                format!(
                    "no {}N{} package in {} (apt lists in {})",
                    s.prefix,
                    s.suffix,
                    s.dist.codename,
                    self.dir.display()
                )
            })?;
        let show = self.cache_query(&["show", "--no-all-versions", &package])?;
        let version = show
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("apt-cache show {package}: no Version"))?
            .to_string();
        Ok((package, version))
    }
}

/// An extracted kernel package in the cache.
struct Kernel {
    package: String,
    version: String,
    /// `uname -r`
    release: String,
    dir: PathBuf,
    vmlinuz: PathBuf,
    initramfs: PathBuf,
}

impl Kernel {
    fn prepare(s: &Series, cache: &Path, mirrors: &Mirrors) -> Result<Kernel> {
        let kernels = cache.join("kernels");
        fs::create_dir_all(&kernels).with_context(|| {
            format!(
                "creating {} (run as root, or set SYSCOPE_VMTEST_CACHE)",
                kernels.display()
            )
        })?;
        let picked = Apt::new(cache, s.dist, mirrors).and_then(|apt| {
            let (package, version) = apt.newest(s)?;
            Ok((apt, package, version))
        });
        let (package, version, dir) = match picked {
            Ok((apt, package, version)) => {
                eprintln!(
                    "vmtest {}: newest in {}: {package} {version}",
                    s.name,
                    s.dist
                        .suites
                        .iter()
                        .chain(s.dist.security_suites)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let dir = kernels.join(format!("{package}_{version}"));
                if !dir.join("complete").exists() {
                    download(&apt, &package, &version, &dir)?;
                    // The series' older kernels: superseded (about 120-400 MB each).
                    for (_, old) in cached(&kernels, s).filter(|(_, p)| *p != dir) {
                        eprintln!(
                            "vmtest {}: removing the superseded {}",
                            s.name,
                            old.display()
                        );
                        let _ = fs::remove_dir_all(old);
                    }
                }
                (package, version, dir)
            }
            Err(e) => {
                // No archive: the newest kernel of the series already cached.
                let cached = cached(&kernels, s).max().map(|(_, p)| p).with_context(|| {
                    format!(
                        "{e:#}; and no {} kernel cached in {}",
                        s.name,
                        kernels.display()
                    )
                })?;
                eprintln!(
                    "vmtest {}: {e:#}; using the cached {}",
                    s.name,
                    cached.display()
                );
                let name = cached.file_name().unwrap().to_string_lossy().into_owned();
                let (p, v) = name.split_once('_').context("cache entry name")?;
                (p.to_string(), v.to_string(), cached)
            }
        };
        let release = fs::read_to_string(dir.join("complete"))?.trim().to_string();
        let vmlinuz = dir.join(format!("root/boot/vmlinuz-{release}"));
        let initramfs = initramfs(&dir, &release)?;
        Ok(Kernel {
            package,
            version,
            release,
            dir,
            vmlinuz,
            initramfs,
        })
    }
}

/// The complete cache entries of a series, with their package's ABI number.
fn cached(kernels: &Path, s: &Series) -> impl Iterator<Item = (u32, PathBuf)> {
    let entries = fs::read_dir(kernels).into_iter().flatten().flatten();
    let prefix = s.prefix;
    let suffix = s.suffix;
    entries.map(|e| e.path()).filter_map(move |p| {
        let name = p.file_name()?.to_str()?.to_string();
        let (pkg, version) = name.split_once('_')?;
        if version.contains(".partial-") {
            return None;
        }
        let abi: u32 = pkg
            .strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse()
            .ok()?;
        p.join("complete").exists().then_some((abi, p))
    })
}

/// Downloads and extracts the package into `dir` (built beside it and renamed
/// into place, so an interrupted run leaves no half entry), with the
/// modules.dep that the package's postinst would have made.
fn download(apt: &Apt, package: &str, version: &str, dir: &Path) -> Result<()> {
    remove_stale_partials(dir.parent().context("cache entry without a parent")?);
    let tmp = partial(dir);
    fs::create_dir_all(&tmp)?;
    sh(Command::new("apt-get")
        .current_dir(&tmp)
        .args(apt.opts())
        .args(["-q", "download", &format!("{package}={version}")]))?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = tmp.join("root");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb)?;
    let release = single_entry(&root.join("lib/modules"))?;
    sh(Command::new(sbin("depmod"))
        .arg("-b")
        .arg(&root)
        .arg(&release))?;
    fs::write(tmp.join("complete"), format!("{release}\n"))?;
    if fs::rename(&tmp, dir).is_err() && dir.join("complete").exists() {
        // Another run (another worktree) finished the same kernel first.
        fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

/// `<path>.partial-<pid>`: where a cache entry is built before it is renamed
/// into place, so neither an interrupted run nor a concurrent one (another
/// worktree) leaves a half entry. Not with_extension: versions have dots.
fn partial(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial-{}", path.display(), std::process::id()))
}

/// Removes the partial entries of runs that are gone.
fn remove_stale_partials(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".partial-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn single_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in {}, found {names:?}", dir.display()),
    }
}

/// kmod's tools live in sbin, which a non-login PATH may lack.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| name.into())
}

/// Modules to insmod, dependencies first: (name, path relative to the
/// modules dir). Built-in ones are skipped; a missing optional one too.
fn module_closure(modules: &Path) -> Result<Vec<(String, String)>> {
    let dep_text = fs::read_to_string(modules.join("modules.dep"))?;
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let name_of = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((m, d)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            name_of(m),
            (m.to_string(), d.split_whitespace().map(name_of).collect()),
        );
    }
    let builtin: BTreeSet<String> = builtin.lines().map(name_of).collect();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, String)>,
    ) {
        if !seen.insert(m.to_string()) {
            return;
        }
        if let Some((path, ds)) = deps.get(m) {
            for d in ds {
                visit(d, deps, seen, order);
            }
            order.push((m.to_string(), path.clone()));
        }
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for (m, required) in INITRAMFS_MODULES {
        if deps.contains_key(*m) {
            visit(m, &deps, &mut seen, &mut order);
        } else if !builtin.contains(*m) && *required {
            bail!(
                "{m} is neither a module nor built in ({}): cannot mount the host's root",
                modules.display()
            );
        }
    }
    Ok(order)
}

fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("reading {name}"));
    };
    // busybox's insmod takes plain .ko only: decompress on the host.
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {name}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The guest's /init. It mounts the host's root, makes the places tests
/// write to writable (tmpfs), mounts the kernel's own filesystems there,
/// runs the run script (`SYSCOPE_VMTEST_RUN`, from the kernel command line)
/// chrooted, and prints the marker with its status.
fn init_script(insmods: &str, modprobe: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
# The syscope vmtest guest's init, written by xtask/src/vmtest.rs.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "vmtest: guest up: Linux $(uname -r), $(nproc) CPUs"
{insmods}
R=/hostroot
# msize: 9p's default (8 KiB on older kernels) makes every read a round trip.
if ! mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot $R; then
    echo "vmtest: cannot mount the host's root over 9p"
    poweroff -f
fi
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/shm $R/dev/pts
mount -t devpts devpts $R/dev/pts
for d in dev/shm tmp run var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $R/$d; done
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t bpf bpf $R/sys/fs/bpf
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
ip link set lo up
hostname syscope-vmtest
# The kernel's own module requests (veth, qdiscs, ...) load from its
# package in the cache, with the host's modprobe.
cat > /bin/modprobe-host <<EOF
#!/bin/busybox sh
exec /bin/busybox chroot $R {modprobe} "\$@"
EOF
chmod 755 /bin/modprobe-host
echo /bin/modprobe-host > /proc/sys/kernel/modprobe
# As in a Debian root shell: 5.10 charges BPF maps to RLIMIT_MEMLOCK.
ulimit -l 8192
echo "vmtest: running $SYSCOPE_VMTEST_RUN"
chroot $R /bin/sh "$SYSCOPE_VMTEST_RUN"
echo "{MARKER} $SYSCOPE_VMTEST_NONCE status=$?"
poweroff -f
"#
    )
}

/// The kernel's initramfs: built once per kernel and init script (the name
/// carries a hash of both), kept in the kernel's cache entry.
fn initramfs(dir: &Path, release: &str) -> Result<PathBuf> {
    let modules = dir.join("root/lib/modules").join(release);
    let closure = module_closure(&modules)?;
    let mut insmods = String::new();
    for (name, _) in &closure {
        let _ = writeln!(
            insmods,
            "insmod /modules/{name}.ko || echo \"vmtest: insmod {name} failed\""
        );
    }
    let modprobe = format!(
        "{} -d {}",
        sbin("modprobe").display(),
        dir.join("root").display()
    );
    let init = init_script(&insmods, &modprobe);
    let busybox = Path::new("/bin/busybox");
    let mut h = DefaultHasher::new();
    init.hash(&mut h);
    fs::metadata(busybox)
        .context("/bin/busybox missing: apt-get install busybox-static")?
        .len()
        .hash(&mut h);
    let path = dir.join(format!("initramfs-{:016x}.cpio", h.finish()));
    if path.exists() {
        return Ok(path);
    }
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "hostroot", "modules"] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for init's stdio before /init runs.
    cpio.char_dev("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &fs::read(busybox)?);
    cpio.file("init", 0o755, init.as_bytes());
    for (name, rel) in &closure {
        cpio.file(
            &format!("modules/{name}.ko"),
            0o644,
            &module_bytes(&modules.join(rel))?,
        );
    }
    remove_stale_partials(dir);
    let tmp = partial(&path);
    fs::write(&tmp, cpio.finish())?;
    // Older images (another init script) are of no further use.
    for e in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("initramfs-") && n.ends_with(".cpio") {
            // Another run may be removing it too.
            let _ = fs::remove_file(e.path());
        }
    }
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A "newc" cpio archive, as the kernel unpacks an initramfs (no cpio tool
/// needed; uncompressed: a few MiB, read once).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            let _ = write!(h, "{f:08x}");
        }
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest runs chrooted into the host's root: each test
/// executable of the set in turn, one test at a time (they share the
/// kernel's hooks), with the environment `cargo xtask test` gives them.
fn run_script(
    repo: &Path,
    set: &TestSet,
    exes: &BTreeMap<String, PathBuf>,
    test_args: &[String],
    kvm: bool,
) -> Result<String> {
    let rotel = env::var_os("SYSCOPE_ROTEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv/bin/rotel-agent"));
    let mut s = String::from("#!/bin/sh\n# Written by cargo xtask vmtest (xtask/src/vmtest.rs).\n");
    let _ = writeln!(
        s,
        "cd {} || exit 2",
        shell_quote(&repo.join("tests").to_string_lossy())
    );
    let mut vars = vec![
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME", "/root".into()),
        ("TMPDIR", "/tmp".into()),
        ("RUST_BACKTRACE", "1".into()),
        (
            "SYSCOPE_BIN",
            repo.join("target/release/syscope")
                .to_string_lossy()
                .into_owned(),
        ),
        ("SYSCOPE_ROTEL", rotel.to_string_lossy().into_owned()),
    ];
    if let Ok(ci) = env::var("CI") {
        vars.push(("CI", ci));
    }
    if !kvm {
        // Timing tests widen their bounds under emulation (tests/tests/tcp.rs).
        vars.push(("SYSCOPE_EMULATED", "1".into()));
    }
    for (k, v) in vars {
        let _ = writeln!(s, "export {k}={}", shell_quote(&v));
    }
    // The workload runs under names given by hard links made beside its
    // binary (tests/src/workload.rs): in the guest only tmpfs is writable.
    let workload = repo.join("target/release/syscope-workload");
    let _ = writeln!(
        s,
        "mkdir -p /tmp/vmtest && cp {} /tmp/vmtest/ || exit 2",
        shell_quote(&workload.to_string_lossy())
    );
    s.push_str("export SYSCOPE_WORKLOAD=/tmp/vmtest/syscope-workload\n");
    // The preflight's view of this kernel, for the README's signal table.
    let _ = writeln!(
        s,
        "echo \"{CHECK_MARKER} $SYSCOPE_VMTEST_NONCE $(\"$SYSCOPE_BIN\" --probes syscalls,tcp check --output json 2>/dev/null)\""
    );
    let has_filter = test_args.iter().any(|a| !a.starts_with('-'));
    s.push_str("rc=0\n");
    for (bin, filters) in set.binaries {
        let exe = exes
            .get(*bin)
            .with_context(|| format!("no test executable {bin:?} among {:?}", exes.keys()))?;
        let mut cmd = vec![
            exe.to_string_lossy().into_owned(),
            "--test-threads=1".into(),
        ];
        if !has_filter {
            cmd.extend(filters.iter().map(|f| f.to_string()));
        }
        cmd.extend(test_args.iter().cloned());
        let cmd: Vec<String> = cmd.iter().map(|a| shell_quote(a)).collect();
        let _ = writeln!(s, "echo 'vmtest: tests/{bin}'");
        let _ = writeln!(s, "{} || rc=1", cmd.join(" "));
    }
    s.push_str("exit $rc\n");
    Ok(s)
}

struct Outcome {
    series: &'static str,
    release: String,
    version: String,
    set: &'static str,
    result: Verdict,
    wall: Duration,
    passed: u32,
    failed: u32,
    failed_tests: Vec<String>,
    skipped: Vec<String>,
    /// Distinct ERROR lines of the agent's log (the tests print it when
    /// they fail), without their timestamps: often the cause in one line.
    errors: BTreeSet<String>,
    tail: Vec<String>,
    log: PathBuf,
    /// `syscope check --output json`, as the guest printed it.
    check: Option<serde_json::Value>,
}

enum Verdict {
    Pass,
    Fail(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail(why) => write!(f, "FAIL ({why})"),
        }
    }
}

impl Outcome {
    fn not_run(series: &'static str, set: &'static str, e: anyhow::Error) -> Outcome {
        Outcome {
            series,
            release: "(not run)".into(),
            version: "?".into(),
            set,
            result: Verdict::Fail(format!("{e:#}")),
            wall: Duration::ZERO,
            passed: 0,
            failed: 0,
            failed_tests: Vec::new(),
            skipped: Vec::new(),
            errors: BTreeSet::new(),
            tail: Vec::new(),
            log: PathBuf::new(),
            check: None,
        }
    }

    fn ok(&self) -> bool {
        matches!(self.result, Verdict::Pass)
    }

    fn line(&self) -> String {
        format!(
            "{} in {}: {} passed, {} failed, {} skipped",
            self.result,
            minutes(self.wall),
            self.passed,
            self.failed,
            self.skipped.len()
        )
    }
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// Boots one kernel with the run script and follows its console.
fn boot(
    o: &Options,
    series: &'static Series,
    set: &'static TestSet,
    kernel: &Kernel,
    exes: &BTreeMap<String, PathBuf>,
    repo: &Path,
    work: &Path,
) -> Result<Outcome> {
    let dir = work.join(series.name);
    fs::create_dir_all(&dir)?;
    let script = dir.join("run.sh");
    fs::write(&script, run_script(repo, set, exes, &o.test_args, o.kvm)?)?;
    let log_path = dir.join("console.log");
    let mut log = fs::File::create(&log_path)?;
    let nonce = format!(
        "{:x}{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let mut q = Command::new("qemu-system-x86_64");
    if o.kvm {
        q.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // Single-threaded TCG: with thread=multi, 6.12 died at boot about
        // one time in three (an int3 left over from the kernel patching its
        // own code, seen by the other vCPU).
        q.args(["-accel", "tcg,thread=single", "-cpu", "max"]);
    }
    q.args(["-smp", "2", "-m", "2G", "-nographic", "-monitor", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-nic", "none"])
        .args(["-device", "virtio-rng-pci"])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .arg("-append")
        .arg(format!(
            // Unknown `KEY=value` parameters (without a dot) reach init's
            // environment. panic=-1 with -no-reboot: a panic ends qemu.
            "console=ttyS0 quiet panic=-1 rdinit=/init \
             SYSCOPE_VMTEST_RUN={} SYSCOPE_VMTEST_NONCE={nonce}",
            script.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("+ {q:?}");
    let start = Instant::now();
    let mut child = q.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = strip_escapes(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
            buf.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut deadline = start + o.timeout;
    let marker = format!("{MARKER} {nonce} status=");
    let check_marker = format!("{CHECK_MARKER} {nonce} ");
    let mut check = None;
    let mut status: Option<i32> = None;
    let mut timed_out = false;
    let mut tail: Vec<String> = Vec::new();
    let mut passed = 0;
    let mut failed = 0;
    let mut failed_tests = Vec::new();
    let mut skipped = Vec::new();
    let mut errors = BTreeSet::new();
    let mut current = String::new();
    // libtest lists the failed tests' names, indented, under its last
    // "failures:" header before "test result:".
    let mut failures: Option<Vec<String>> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // After the marker only the power-off was left to wait for.
                timed_out = status.is_none();
                let _ = child.kill();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let _ = writeln!(log, "{line}");
        println!("[{}] {line}", series.name);
        if let Some(json) = line.strip_prefix(&check_marker) {
            check = serde_json::from_str(json).ok();
        } else if let Some(st) = line.strip_prefix(&marker) {
            status = st.trim().parse().ok();
            deadline = deadline.min(Instant::now() + Duration::from_secs(60));
        } else if let Some(bin) = line.strip_prefix("vmtest: tests/") {
            current = bin.to_string();
        } else if let Some(r) = line.strip_prefix("test result: ") {
            let (p, f) = libtest_counts(r);
            passed += p;
            failed += f;
            let names = failures.take().unwrap_or_default();
            failed_tests.extend(names.into_iter().map(|t| format!("{current}::{t}")));
        } else if line == "failures:" {
            failures = Some(Vec::new());
        } else if let (Some(names), Some(name)) = (failures.as_mut(), line.strip_prefix("    ")) {
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                names.push(name.to_string());
            }
        }
        if let Some(i) = line.find(" ERROR ") {
            errors.insert(line[i + 1..].to_string());
        }
        // A skip is written past libtest's capture, so it may share a line
        // with libtest's "test x ... ".
        if let Some(i) = line.find("SKIPPED ") {
            skipped.push(line[i + "SKIPPED ".len()..].to_string());
        }
        tail.push(line);
        if tail.len() > TAIL_LINES {
            tail.remove(0);
        }
    }
    let exit = child.wait()?;
    let wall = start.elapsed();
    let result = if timed_out {
        Verdict::Fail(format!("no result after {}: killed", minutes(o.timeout)))
    } else {
        match status {
            None => Verdict::Fail(format!("the guest stopped without a result (qemu: {exit})")),
            Some(0) if passed == 0 => Verdict::Fail("no tests ran".into()),
            Some(0) if !skipped.is_empty() => {
                Verdict::Fail(format!("{} skipped as root", skipped.len()))
            }
            Some(0) => Verdict::Pass,
            Some(_) if failed > 0 => Verdict::Fail(format!("{failed} failed")),
            Some(st) => Verdict::Fail(format!("tests exited {st}")),
        }
    };
    Ok(Outcome {
        series: series.name,
        release: kernel.release.clone(),
        version: kernel.version.clone(),
        set: set.name,
        result,
        wall,
        passed,
        failed,
        failed_tests,
        skipped,
        errors,
        tail,
        log: log_path,
        check,
    })
}

/// The line without terminal escapes and control characters: SeaBIOS resets
/// the terminal (ESC c), libtest colours its results on the guest's tty.
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                // A CSI sequence ends with a byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // Character set selection: one more byte.
                Some('(' | ')') => {
                    chars.next();
                }
                _ => {}
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// (passed, failed) from libtest's "ok. 3 passed; 1 failed; ..." line.
fn libtest_counts(r: &str) -> (u32, u32) {
    let count = |what: &str| {
        r.split(';')
            .find_map(|part| {
                let part = part
                    .trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ");
                part.strip_suffix(what)?.trim().parse().ok()
            })
            .unwrap_or(0)
    };
    (count(" passed"), count(" failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_line() {
        assert_eq!(
            libtest_counts(
                "ok. 4 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out; finished in 52.10s"
            ),
            (4, 0)
        );
        assert_eq!(
            libtest_counts("FAILED. 7 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.8s"),
            (7, 3)
        );
    }

    #[test]
    fn console_escapes_removed() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(
            strip_escapes("test result: \x1b[32mok\x1b(B\x1b[m\x0f. 4 passed"),
            "test result: ok. 4 passed"
        );
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn run_script_quotes_and_filters() {
        let mut exes = BTreeMap::new();
        exes.insert(
            "syscalls".to_string(),
            PathBuf::from("/r/target/release/deps/syscalls-1"),
        );
        exes.insert(
            "tcp".to_string(),
            PathBuf::from("/r/target/release/deps/tcp-2"),
        );
        exes.insert(
            "ondemand".to_string(),
            PathBuf::from("/r/target/release/deps/ondemand-3"),
        );
        exes.insert(
            "batch".to_string(),
            PathBuf::from("/r/target/release/deps/batch-4"),
        );
        let s = run_script(Path::new("/r"), &SETS[0], &exes, &[], false).unwrap();
        assert!(s.contains("'/r/target/release/deps/syscalls-1' '--test-threads=1' 'failing_calls_counted_exactly'"));
        assert!(s.contains("'/r/target/release/deps/tcp-2' '--test-threads=1' || rc=1"));
        assert!(s.contains("'/r/target/release/deps/ondemand-3' '--test-threads=1' || rc=1"));
        assert!(s.contains("'/r/target/release/deps/batch-4' '--test-threads=1' || rc=1"));
        // A filter of the caller's replaces the set's.
        let s = run_script(Path::new("/r"), &SETS[0], &exes, &["it's".into()], false).unwrap();
        assert!(s.contains("'--test-threads=1' 'it'\\''s' || rc=1"));
        assert!(!s.contains("failing_calls"));
    }
}

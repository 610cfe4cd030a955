//! Packaging: `cargo xtask image` (OCI image, podman) and `cargo xtask deb`
//! (Debian package, dpkg-deb). Both start from the release binary, stripped.
//!
//! The image has no base: its root filesystem is assembled here from the
//! binary, the shared libraries `ldd` names (glibc's loader included) and a
//! few /etc files, so glibc's getaddrinfo resolves the collector's name from
//! the runtime's /etc/hosts and /etc/resolv.conf (files and dns are built
//! into libc.so.6 since glibc 2.34: no NSS modules to copy).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{root, sh};

/// The version every artifact carries: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The one-line description, from agent/Cargo.toml (the one copy: `--help`,
/// the image label and the package use it).
fn description() -> Result<String> {
    let manifest = fs::read_to_string(root().join("agent/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("description = \""))
        .and_then(|l| l.strip_suffix('"'))
        .map(str::to_owned)
        .context("no description in agent/Cargo.toml")
}
/// Debian revision of the package built here.
const DEB_REVISION: &str = "1";

/// Image name and tag, as `podman images` shows them.
pub fn image_name() -> String {
    format!("localhost/syscope:{VERSION}")
}

/// `cargo xtask image [--archive PATH]`: build the image; with `--archive`
/// also save it as an OCI archive (for `ctr images import`, `skopeo`, ...).
pub fn image(args: &[String]) -> Result<()> {
    let archive = match args {
        [] => None,
        [flag, path] if flag == "--archive" => Some(PathBuf::from(path)),
        _ => bail!("usage: cargo xtask image [--archive PATH]"),
    };
    let name = build_image()?;
    if let Some(path) = archive {
        let _ = fs::remove_file(&path);
        sh(Command::new("podman")
            .args(["save", "--format", "oci-archive", "-o"])
            .arg(&path)
            .arg(&name))?;
        eprintln!("saved: {}", path.display());
    }
    Ok(())
}

/// Assembles the root filesystem and builds the image; returns its name.
pub fn build_image() -> Result<String> {
    let dir = root().join("target/image");
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)?;
    }
    let bin = root().join("target/release/syscope");
    install_stripped(&bin, &rootfs.join("usr/bin/syscope"))?;
    for lib in shared_libraries(&bin)? {
        let rel = lib
            .strip_prefix("/")
            .context("ldd printed a relative path")?;
        // fs::copy follows symlinks: each soname becomes the real file.
        copy(&lib, &rootfs.join(rel), 0o755)?;
    }
    let etc = root().join("deploy/container/etc");
    for name in ["nsswitch.conf", "passwd", "group"] {
        copy(&etc.join(name), &rootfs.join("etc").join(name), 0o644)?;
    }
    let name = image_name();
    sh(Command::new("podman")
        .args(["build", "--quiet", "--pull=never", "--no-cache"])
        // Same bytes, same image: timestamps from the last commit.
        .args(["--timestamp", &source_date_epoch()])
        .args([
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
        ])
        .args([
            "--label",
            &format!("org.opencontainers.image.description={}", description()?),
        ])
        .args(["-t", &name, "-f"])
        .arg(root().join("deploy/container/Containerfile"))
        .arg(&dir))?;
    // The image this name pointed at before is now untagged: drop it (and
    // only ours), so repeated test runs do not pile up images.
    sh(Command::new("podman").args([
        "image",
        "prune",
        "-f",
        "--filter",
        "label=org.opencontainers.image.title=syscope",
    ]))?;
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", &name])
        .output()?;
    let size: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    eprintln!(
        "image: {name} ({:.1} MiB uncompressed)",
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(name)
}

/// Absolute paths of the shared objects `bin` loads, the loader included.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    ensure!(out.status.success(), "ldd {} failed", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no path.
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            let path = path.split(" (").next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    ensure!(
        libs.iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")),
        "no dynamic loader in ldd's output:\n{text}"
    );
    Ok(libs)
}

/// `cargo xtask deb`: target/deb/syscope_<version>-1_<arch>.deb.
pub fn deb() -> Result<PathBuf> {
    let work = root().join("target/deb/work");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    // dpkg-shlibdeps expects debian/<package>/ below a directory holding
    // debian/control.
    let pkg = work.join("debian/syscope");
    let r = root();
    install_stripped(
        &r.join("target/release/syscope"),
        &pkg.join("usr/bin/syscope"),
    )?;
    let files: &[(&str, &str, u32)] = &[
        (
            "deploy/systemd/syscope.service",
            "lib/systemd/system/syscope.service",
            0o644,
        ),
        (
            "deploy/systemd/syscope.toml",
            "etc/syscope/syscope.toml",
            0o644,
        ),
        // May hold OTEL_EXPORTER_OTLP_HEADERS credentials; systemd reads it
        // as root before starting the service.
        (
            "deploy/systemd/syscope.env",
            "etc/syscope/syscope.env",
            0o600,
        ),
        ("README.md", "usr/share/doc/syscope/README.md", 0o644),
        ("docs/metrics.md", "usr/share/doc/syscope/metrics.md", 0o644),
        ("docs/slo.md", "usr/share/doc/syscope/slo.md", 0o644),
        (
            "docs/syscope.example.toml",
            "usr/share/doc/syscope/syscope.example.toml",
            0o644,
        ),
        (
            "deploy/debian/copyright",
            "usr/share/doc/syscope/copyright",
            0o644,
        ),
        ("deploy/debian/postinst", "DEBIAN/postinst", 0o755),
        ("deploy/debian/prerm", "DEBIAN/prerm", 0o755),
        ("deploy/debian/postrm", "DEBIAN/postrm", 0o755),
    ];
    for (from, to, mode) in files {
        copy(&r.join(from), &pkg.join(to), *mode)?;
    }
    write(
        &pkg.join("DEBIAN/conffiles"),
        "/etc/syscope/syscope.toml\n/etc/syscope/syscope.env\n",
        0o644,
    )?;

    write(
        &work.join("debian/control"),
        "Source: syscope\n\nPackage: syscope\nArchitecture: any\n",
        0o644,
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(&work)
        .args(["-O", "debian/syscope/usr/bin/syscope"])
        .output()
        .context("running dpkg-shlibdeps (apt-get install dpkg-dev)")?;
    let shlibs = String::from_utf8_lossy(&out.stdout);
    let depends = shlibs
        .trim()
        .strip_prefix("shlibs:Depends=")
        .with_context(|| {
            format!(
                "dpkg-shlibdeps: {shlibs}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .to_owned();
    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture"))?;
    let version = format!("{VERSION}-{DEB_REVISION}");
    let installed_kib = dir_size(&pkg, &pkg.join("DEBIAN"))?.div_ceil(1024);
    let summary = description()?;
    let control = format!(
        "Package: syscope\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: syscope maintainers <maintainers@syscope.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/syscope/syscope\n\
         Description: {summary}\n \
         syscope attaches eBPF programs to the kernel's syscall, socket and TCP\n \
         hooks, aggregates latency histograms and error counts per workload in\n \
         the kernel, and exports them as OpenTelemetry metrics. Runs as a\n \
         systemd service with only CAP_BPF and CAP_PERFMON. Needs Linux with BTF.\n"
    );
    write(&pkg.join("DEBIAN/control"), &control, 0o644)?;
    sh(Command::new("sh")
        .current_dir(&pkg)
        .arg("-c")
        .arg("find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums"))?;
    fs::set_permissions(
        pkg.join("DEBIAN/md5sums"),
        fs::Permissions::from_mode(0o644),
    )?;

    let out = root().join(format!("target/deb/syscope_{version}_{arch}.deb"));
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&pkg)
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", source_date_epoch()))?;
    let size = fs::metadata(&out)?.len();
    eprintln!(
        "package: {} ({:.1} MiB)",
        out.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(out)
}

/// Copies the release binary without symbols: a third of the size.
fn install_stripped(bin: &Path, to: &Path) -> Result<()> {
    ensure!(
        bin.exists(),
        "{} missing: run `cargo xtask build`",
        bin.display()
    );
    fs::create_dir_all(to.parent().unwrap())?;
    sh(Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(to)
        .arg(bin))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::write(to, text)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Bytes of regular files under `dir`, except under `skip`.
fn dir_size(dir: &Path, skip: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if p == skip {
            continue;
        }
        let m = fs::symlink_metadata(&p)?;
        total += if m.is_dir() {
            dir_size(&p, skip)?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// The last commit's time, so rebuilding the same commit gives the same
/// artifacts; the epoch if this is not a git checkout.
fn source_date_epoch() -> String {
    stdout_of(
        Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["log", "-1", "--format=%ct"]),
    )
    .unwrap_or_else(|_| "0".into())
}

fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

//! Builds the kernel programs (`ebpf/`) for bpfel-unknown-none and places the
//! object in OUT_DIR, where `src/probes` embeds it.
//!
//! Two toolchains work (see ../README.md):
//! - Debian's: rustc-web (/usr/bin/rustc) ships a prebuilt `core` for the BPF
//!   targets, so no rust-src or -Z build-std is needed. Preferred when present.
//! - Upstream: rustup nightly with rust-src, building core with -Z build-std.
//!
//! Either way `bpf-linker` must be on PATH (`cargo xtask setup` installs it).
//! `SYSCOPE_BPF_RUSTC` overrides the compiler of the Debian route;
//! `SYSCOPE_BPF_TOOLCHAIN=debian|nightly` forces a route.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest
        .join("../ebpf")
        .canonicalize()
        .expect("ebpf/ next to agent/");
    let common_dir = manifest.join("../common");
    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    for v in ["SYSCOPE_BPF_RUSTC", "SYSCOPE_BPF_TOOLCHAIN", "PATH"] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let route = choose_route();
    // Two objects: thread state in an LRU hash (every kernel), and in task
    // storage (5.13+; its map is defined in BTF, so that object carries
    // BTF). The loader tries the second first where it can.
    build_object(&route, &ebpf_dir, &out_dir, None, "syscope.bpf.o");
    build_object(
        &route,
        &ebpf_dir,
        &out_dir,
        Some("task-storage"),
        "syscope-task-storage.bpf.o",
    );
}

/// Builds the eBPF crate (with cargo `feature`, if any) into `out_dir/name`.
fn build_object(route: &Route, ebpf_dir: &Path, out_dir: &Path, feature: Option<&str>, name: &str) {
    let target_dir = out_dir.join(match feature {
        Some(f) => format!("ebpf-target-{f}"),
        None => "ebpf-target".to_string(),
    });
    let mut cmd = match route {
        Route::Debian { rustc } => {
            let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.env("RUSTC", rustc)
                // Only these crates may use nightly features (inline BPF asm).
                .env("RUSTC_BOOTSTRAP", "aya_ebpf,syscope_ebpf");
            c.args(["build", "--release", "--target", "bpfel-unknown-none"]);
            c
        }
        Route::Nightly => {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo", "build", "--release"]);
            c.args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"]);
            c
        }
    };
    cmd.current_dir(ebpf_dir)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--locked");
    if let Some(f) = feature {
        // BTF maps need the object's BTF, which bpf-linker writes only when
        // asked (from the debug info the release profile keeps).
        cmd.args(["--features", f, "--config"])
            .arg(r#"target.bpfel-unknown-none.rustflags=["-C", "link-arg=--btf"]"#);
    }
    // The outer cargo's settings are for the host build, not the BPF one.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME"
            || k == "RUSTFLAGS"
            || k == "RUSTC_WRAPPER"
            || k == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    if matches!(route, Route::Nightly) {
        cmd.env_remove("RUSTC").env_remove("RUSTC_BOOTSTRAP");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for the eBPF programs ({route:?}): {e}"));
    if !status.success() {
        panic!(
            "building the eBPF programs failed ({route:?}); run `cargo xtask setup` to install \
             rustc-web, libstd-rust-web-dev-bpf and bpf-linker"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/syscope-ebpf");
    let out = out_dir.join(name);
    if feature.is_none() {
        std::fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
        return;
    }
    // Only the map definitions need BTF. The line and function info of
    // .BTF.ext is dropped (and the DWARF): aya 0.14 relocates the line info of programs
    // with subprograms into duplicate offsets, which the kernel rejects
    // ("Invalid line_info"), and the programs verify without it.
    let objcopy = llvm_objcopy();
    let status = Command::new(&objcopy)
        .args(["--remove-section=.BTF.ext", "--remove-section=.rel.BTF.ext"])
        // The DWARF the BTF was made from: a megabyte the loader never reads.
        .arg("--strip-debug")
        .arg(&obj)
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", objcopy.display()));
    assert!(
        status.success(),
        "{} failed on {}",
        objcopy.display(),
        obj.display()
    );
}

/// llvm-objcopy: LLVM 22's (Debian's llvm-22, which `cargo xtask setup`
/// installs for bpf-linker), else whichever is on PATH.
fn llvm_objcopy() -> PathBuf {
    [
        "/usr/lib/llvm-22/bin/llvm-objcopy",
        "/usr/bin/llvm-objcopy-22",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("llvm-objcopy"))
}

#[derive(Debug)]
enum Route {
    Debian { rustc: PathBuf },
    Nightly,
}

fn choose_route() -> Route {
    let debian = || {
        let rustc = env::var_os("SYSCOPE_BPF_RUSTC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
        let has_core = sysroot_has(Command::new(&rustc), "lib/rustlib/bpfel-unknown-none/lib");
        has_core.then_some(Route::Debian { rustc })
    };
    match env::var("SYSCOPE_BPF_TOOLCHAIN").as_deref() {
        Ok("nightly") => return Route::Nightly,
        Ok("debian") => {
            return debian().expect("SYSCOPE_BPF_TOOLCHAIN=debian but no rustc with a BPF core")
        }
        _ => {}
    }
    if let Some(r) = debian() {
        return r;
    }
    let mut nightly = Command::new("rustup");
    nightly.args(["run", "nightly", "rustc"]);
    if sysroot_has(nightly, "lib/rustlib/src/rust/library/core") {
        return Route::Nightly;
    }
    panic!(
        "no toolchain can build the eBPF programs: install Debian's rustc-web and \
         libstd-rust-web-dev-bpf (or rustup nightly with rust-src), and bpf-linker; \
         `cargo xtask setup` does this"
    );
}

/// Whether the sysroot `rustc` (the command) reports contains directory `rel`.
fn sysroot_has(mut rustc: Command, rel: &str) -> bool {
    rustc
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let sysroot = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&sysroot).join(rel).is_dir()
        })
        .unwrap_or(false)
}

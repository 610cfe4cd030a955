//! Running the `syscope-workload` binary under a chosen process name.

use crate::receiver::workspace_root;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Longest name the kernel keeps in `comm` (TASK_COMM_LEN - 1).
pub const MAX_NAME: usize = 15;

/// The built `syscope-workload` binary: `$SYSCOPE_WORKLOAD`, else next to the running test
/// binary (`target/<profile>/deps/..`), else `<root>/target/release/syscope-workload`.
pub fn workload_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SYSCOPE_WORKLOAD") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; cargo puts [[bin]]s one level up.
    // This follows CARGO_TARGET_DIR and the profile the tests were built with.
    let beside_tests = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        let dir = if dir.ends_with("deps") {
            dir.parent()?
        } else {
            dir
        };
        Some(dir.join("syscope-workload"))
    });
    if let Some(p) = beside_tests.filter(|p| p.is_file()) {
        return p;
    }
    let p = workspace_root().join("target/release/syscope-workload");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --release -p syscope-tests` \
         (or set SYSCOPE_WORKLOAD)",
        p.display()
    );
    p
}

/// A process name unique to this test process and call, at most 15 bytes:
/// up to 7 alphanumerics of `prefix`, then a base-36 tag of pid and a counter.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let prefix: String = prefix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(7)
        .collect();
    let tag = base36(
        u64::from(std::process::id()) * 1_000_000 + u64::from(SEQ.fetch_add(1, Ordering::Relaxed)),
    );
    let mut name = format!("{prefix}{tag}");
    name.truncate(MAX_NAME);
    name
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// Runs the workload as an executable called `name` (so `comm` and
/// `process.executable.name` are `name`), stdout piped, stderr inherited.
/// `args` are the workload's, e.g. `["fail-open", "5", "--start-after", "500"]`.
pub fn spawn_named(name: &str, args: &[&str]) -> Child {
    assert!(
        !name.is_empty() && name.len() <= MAX_NAME && !name.contains('/'),
        "process name {name:?} must be 1..={MAX_NAME} bytes without '/'"
    );
    static SEQ: AtomicU32 = AtomicU32::new(0);
    static CLEANED: std::sync::Once = std::sync::Once::new();
    let bin = workload_bin();
    // Next to the binary (same filesystem, so a hard link works), one directory per call so
    // parallel tests never race on a path.
    let root = bin.parent().unwrap().join("syscope-named");
    CLEANED.call_once(|| remove_stale(&root));
    let dir = root.join(format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let exe = dir.join(name);
    if std::fs::hard_link(&bin, &exe).is_err() {
        std::fs::copy(&bin, &exe)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), exe.display()));
    }
    let mut tries = 0;
    loop {
        // Cargo's LD_LIBRARY_PATH would make the dynamic loader probe its
        // directories (failing openat/newfstatat calls): not the workload's truth.
        let spawned = Command::new(&exe)
            .env_remove("LD_LIBRARY_PATH")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(child) => return child,
            // A copied file can be briefly "busy" while another test thread forks with the
            // copy's write descriptor still open: retry.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {}: {e}", exe.display()),
        }
    }
}

/// Removes the links of earlier test processes that are gone (`<pid>-<seq>` directories).
fn remove_stale(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs the named workload to completion and panics unless it succeeded; returns its output.
pub fn run_named(name: &str, args: &[&str]) -> Output {
    let out = spawn_named(name, args)
        .wait_with_output()
        .expect("wait for workload");
    assert!(
        out.status.success(),
        "workload {name} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `key=value` from a workload's stdout (every TCP command prints its truths so).
pub fn output_field(out: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("workload printed no {key}=:\n{text}"))
        .to_string()
}

/// A `key=ns,ns,...` field as seconds, sorted.
pub fn output_durations_s(out: &Output, key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = output_field(out, key)
        .split(',')
        .map(|n| n.parse::<f64>().unwrap() * 1e-9)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn unique_names_fit_comm() {
        let a = unique_name("syscope-fail-open");
        let b = unique_name("syscope-fail-open");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME && a.starts_with("syscope"), "{a}");
    }

    #[test]
    fn named_workload_runs_under_its_name() {
        let name = unique_name("wl");
        let mut child = spawn_named(&name, &["wait-signal"]);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
        assert_eq!(comm.trim_end(), name);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, format!("signal={}\n", libc::SIGTERM));
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn workload_commands_report_their_truth() {
        let name = unique_name("wl");
        let out = run_named(&name, &["distinct", "24", "--start-after", "10"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let calls: Vec<&str> = text.lines().filter(|l| l.starts_with("syscall=")).collect();
        assert_eq!(calls.len(), 24);
        assert!(calls.contains(&"syscall=close errno=EBADF"));
        assert!(calls.contains(&"syscall=statx errno=ENOENT"));
        let out = run_named(&name, &["fail-open", "3"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok fail-open n=3\n");
        let out = run_named(&name, &["--start-after=5", "getppid", "1000"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let ns: f64 = text
            .trim()
            .strip_prefix("ns_per_call=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(ns > 0.0);
        let t = std::time::Instant::now();
        run_named(&name, &["sleep", "3", "20"]);
        assert!(t.elapsed() >= Duration::from_millis(60));
        let bad = spawn_named(&name, &["nonsense"]).wait().unwrap();
        assert_eq!(bad.code(), Some(2));
    }
}

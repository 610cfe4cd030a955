//! Test cgroups: a cgroup v2 tree made for a test (removed on drop), and
//! the workload run inside one of its cgroups under a name of its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Child,
};

use syscope_tests::workload_bin;

/// The cgroup2 mount (hybrid hosts: /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(sep + 1) == Some(&"cgroup2") && f[3] == "/").then(|| PathBuf::from(f[4]))
    })
}

/// A cgroup subtree created for one test, removed (deepest first) on drop.
pub struct Tree {
    top: PathBuf,
}

impl Tree {
    pub fn new(mount: &Path, top: &str) -> Tree {
        let top = mount.join(top);
        fs::create_dir_all(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
        Tree { top }
    }

    /// Creates `rel` (a path below the top) and returns its directory.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let d = self.top.join(rel.trim_start_matches('/'));
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        fn rm(d: &Path) {
            for e in fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
            let _ = fs::remove_dir(d);
        }
        rm(&self.top);
    }
}

/// A copy of the workload binary named `name` (so its `comm` is `name`),
/// in a directory of its own; [`finish`] removes it.
pub fn named_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("syscope-id-bin-{name}"));
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let _ = fs::remove_file(&exe);
    fs::copy(workload_bin(), &exe).unwrap();
    exe
}

/// Runs the workload as an executable named `name`, in `cgroup` from its
/// first instruction (the child joins it between fork and exec), so every
/// syscall it makes is the cgroup's.
pub fn run_in(cgroup: &Path, name: &str, args: &[&str]) -> Child {
    use std::os::unix::{ffi::OsStrExt, process::CommandExt};
    let exe = named_copy(name);
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(args)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls (open, write, close) on a path
    // built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0": the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {} in {}: {e}", exe.display(), cgroup.display()))
}

/// Waits for the workload; removes the copy of the binary named after it.
pub fn finish(child: Child, name: &str) {
    let out = child.wait_with_output().unwrap();
    let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("syscope-id-bin-{name}")));
    assert!(out.status.success(), "workload failed: {out:?}");
}

//! Running the real agent binary for a test.
#![allow(dead_code)] // each test binary uses a different part

pub mod cgroup;
pub mod truth;

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// Root (or CAP_BPF + CAP_PERFMON) is needed to load programs: false, with
/// the skip recorded (see [`skip`]), when the tests do not run as root.
#[track_caller]
pub fn require_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip("loading eBPF programs needs root (CAP_BPF, CAP_PERFMON)");
        return false;
    }
    true
}

/// Whether the running kernel is at least `major.minor`.
#[allow(dead_code)] // not every test binary asks
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
}

/// Records that the calling test is skipped, and why; the test then
/// returns early, which libtest shows as passed. So the skip is printed
/// past libtest's output capture, and appended as
/// `SKIPPED <binary>::<test>: <reason>` to the file named by
/// `SYSCOPE_SKIP_LOG`, which `cargo xtask test` lists and counts at the end
/// (and fails on, as root or under CI). Under CI (`CI` set) the test fails
/// here instead: CI must run everything.
#[track_caller]
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let caller = std::panic::Location::caller();
    let binary = std::path::Path::new(caller.file())
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("SKIPPED {binary}::{test}: {reason} ({caller})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("SYSCOPE_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "CI must run every test, but this one skipped: {reason}"
    );
}

pub fn agent_bin() -> PathBuf {
    std::env::var_os("SYSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| syscope_tests::workspace_root().join("target/release/syscope"))
}

/// The agent as a child process; stdout and stderr captured; SIGKILLed on drop.
pub struct Agent {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn drain(r: impl Read + Send + 'static, buf: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
}

impl Agent {
    /// Start with `args` and extra `env` (OTEL_* from the test's own
    /// environment are removed), and wait until the probes are attached.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let bin = agent_bin();
        assert!(
            bin.exists(),
            "{} missing: run `cargo xtask build`",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.args(args);
        let agent = Agent::spawn(cmd, env);
        agent.wait_attached();
        agent
    }

    /// Start exporting to `rx` over gRPC every second, with `extra` flags.
    pub fn exporting_to(rx: &syscope_tests::Receiver, extra: &[&str]) -> Agent {
        let endpoint = rx.grpc_endpoint();
        let mut args = vec!["--endpoint", endpoint.as_str(), "--interval", "1s"];
        args.extend_from_slice(extra);
        Agent::start(&args, &[])
    }

    /// Starts `cmd` (the agent, or a wrapper that execs it) with the same
    /// environment and capture as [`Agent::start`], without waiting.
    pub fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Agent {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SYSCOPE_LOG", "info").env("NO_COLOR", "1");
        // The signals' truth tests measure every process's syscalls; the
        // default (syscall SLIs on demand) is tested with its own value.
        cmd.env("SYSCOPE_PROBES", "syscalls,tcp");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn syscope");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stdout.take().unwrap(), stdout.clone());
        drain(child.stderr.take().unwrap(), stderr.clone());
        Agent {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (up to 30 s) until the probes are attached; panics if the
    /// agent exits first.
    pub fn wait_attached(&self) {
        let agent = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.stderr().contains("probes attached") {
            if let Some(st) = agent.exit_status() {
                panic!(
                    "syscope exited ({st}) before attaching:\n{}",
                    agent.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "syscope did not attach:\n{}",
                agent.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        // try_wait needs &mut; poll /proc instead to keep &self.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        stat.contains(") Z ").then(ExitStatus::default)
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGTERM, then wait (up to 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    /// Waits (up to 30 s) for the exit status, e.g. after someone else
    /// signalled the agent.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "syscope did not exit after SIGTERM:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

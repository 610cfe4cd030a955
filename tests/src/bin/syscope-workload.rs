//! A workload with a known truth for syscope's integration tests.
//!
//! Every operation is exactly one raw syscall (`libc::syscall`, not libc wrappers, which may
//! map to other syscalls: glibc's nanosleep() is clock_nanosleep, fstat() is newfstatat).
//!
//! Usage: syscope-workload [--start-after <ms>] <command>
//!   fail-open <n>        n x openat(AT_FDCWD, "/nonexistent/syscope-<pid>", O_RDONLY) -> ENOENT
//!   sleep <n> <ms>       n x clock_nanosleep(CLOCK_MONOTONIC, 0, <ms>)
//!   getppid <n>          n x getppid in a tight loop; prints `ns_per_call=<f64>`
//!   distinct <k>         k different failing syscalls, once each; prints `syscall=<name> errno=<E>`
//!   list                 prints the `distinct` table without running it
//!   wait-signal          prints `ready`, then blocks until SIGTERM, SIGINT or SIGUSR1
//!
//! `--start-after <ms>` first waits with ppoll(2) (a syscall no command uses) so the agent can
//! attach without the wait polluting the measured syscalls. Exit status: 0 done, 2 usage,
//! 3 a syscall did not behave as expected.

use std::ffi::CString;
use std::io::Write;
use std::process::exit;
use std::time::{Duration, Instant};

type Long = libc::c_long;

/// One raw syscall. Ok(return value) or Err(errno).
fn sys(nr: Long, args: [Long; 6]) -> Result<Long, i32> {
    // SAFETY: callers pass pointers to live buffers of the sizes they announce, or null/-1.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if r == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EINTR => "EINTR",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        _ => "other",
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("syscope-workload: {msg}");
    exit(3)
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "syscope-workload: {msg}\nusage: syscope-workload [--start-after <ms>] \
         fail-open <n> | sleep <n> <ms> | getppid <n> | distinct <k> | list | wait-signal"
    );
    exit(2)
}

fn num<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> T {
    arg.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage(&format!("expected a number for {what}")))
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Waits with ppoll (no fds) so the wait never counts as clock_nanosleep or openat.
fn start_after(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        let ts = timespec(left);
        let _ = sys(libc::SYS_ppoll, [0, 0, &ts as *const _ as Long, 0, 0, 0]);
    }
}

fn path_arg(p: &CString) -> Long {
    p.as_ptr() as Long
}

fn fail_open(n: u64) {
    let path = CString::new(format!("/nonexistent/syscope-{}", std::process::id())).unwrap();
    for _ in 0..n {
        let r = sys(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as Long,
                path_arg(&path),
                libc::O_RDONLY as Long,
                0,
                0,
                0,
            ],
        );
        if r != Err(libc::ENOENT) {
            fail(&format!("openat returned {r:?}, expected Err(ENOENT)"));
        }
    }
    println!("ok fail-open n={n}");
}

fn sleep(n: u64, ms: u64) {
    let ts = timespec(Duration::from_millis(ms));
    // Each sleep's real duration (Instant reads the vDSO clock: no syscall),
    // the truth the kernel-side histogram is checked against.
    let mut took = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        let r = sys(
            libc::SYS_clock_nanosleep,
            [
                libc::CLOCK_MONOTONIC as Long,
                0,
                &ts as *const _ as Long,
                0,
                0,
                0,
            ],
        );
        if r != Ok(0) {
            fail(&format!("clock_nanosleep returned {r:?}"));
        }
        took.push(t0.elapsed().as_nanos().to_string());
    }
    println!("durations_ns={}", took.join(","));
    println!("ok sleep n={n} ms={ms}");
}

fn getppid(n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sys(libc::SYS_getppid, [0; 6]).ok());
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("ns_per_call={ns}");
}

/// What the `distinct` calls point at: a path under a missing directory and a scratch buffer.
struct Ctx {
    path: CString,
    attr: CString,
    buf: Vec<u8>,
}

impl Ctx {
    fn p(&self) -> Long {
        path_arg(&self.path)
    }
    fn b(&self) -> Long {
        self.buf.as_ptr() as Long
    }
}

type Call = fn(&Ctx) -> Result<Long, i32>;

/// The `distinct` table: (syscall name, expected errno, call). Each call fails at once,
/// on fd -1 (EBADF) or on a path under a missing directory (ENOENT).
fn distinct_table() -> Vec<(&'static str, i32, Call)> {
    const AT: Long = libc::AT_FDCWD as Long;
    let (ebadf, enoent) = (libc::EBADF, libc::ENOENT);
    let t: [(&'static str, i32, Call); 24] = [
        ("close", ebadf, |_| {
            sys(libc::SYS_close, [-1, 0, 0, 0, 0, 0])
        }),
        ("read", ebadf, |c| {
            sys(libc::SYS_read, [-1, c.b(), 1, 0, 0, 0])
        }),
        ("write", ebadf, |c| {
            sys(libc::SYS_write, [-1, c.b(), 1, 0, 0, 0])
        }),
        ("fstat", ebadf, |c| {
            sys(libc::SYS_fstat, [-1, c.b(), 0, 0, 0, 0])
        }),
        ("fsync", ebadf, |_| {
            sys(libc::SYS_fsync, [-1, 0, 0, 0, 0, 0])
        }),
        ("fdatasync", ebadf, |_| {
            sys(libc::SYS_fdatasync, [-1, 0, 0, 0, 0, 0])
        }),
        ("dup", ebadf, |_| sys(libc::SYS_dup, [-1, 0, 0, 0, 0, 0])),
        ("fchdir", ebadf, |_| {
            sys(libc::SYS_fchdir, [-1, 0, 0, 0, 0, 0])
        }),
        ("fchmod", ebadf, |_| {
            sys(libc::SYS_fchmod, [-1, 0o644, 0, 0, 0, 0])
        }),
        ("fchown", ebadf, |_| {
            sys(libc::SYS_fchown, [-1, -1, -1, 0, 0, 0])
        }),
        ("ftruncate", ebadf, |_| {
            sys(libc::SYS_ftruncate, [-1, 0, 0, 0, 0, 0])
        }),
        ("flock", ebadf, |_| {
            sys(libc::SYS_flock, [-1, libc::LOCK_SH as Long, 0, 0, 0, 0])
        }),
        ("lseek", ebadf, |_| {
            sys(libc::SYS_lseek, [-1, 0, 0, 0, 0, 0])
        }),
        ("getdents64", ebadf, |c| {
            sys(
                libc::SYS_getdents64,
                [-1, c.b(), c.buf.len() as Long, 0, 0, 0],
            )
        }),
        ("syncfs", ebadf, |_| {
            sys(libc::SYS_syncfs, [-1, 0, 0, 0, 0, 0])
        }),
        ("fstatfs", ebadf, |c| {
            sys(libc::SYS_fstatfs, [-1, c.b(), 0, 0, 0, 0])
        }),
        ("fgetxattr", ebadf, |c| {
            sys(
                libc::SYS_fgetxattr,
                [-1, c.attr.as_ptr() as Long, c.b(), 0, 0, 0],
            )
        }),
        ("pread64", ebadf, |c| {
            sys(libc::SYS_pread64, [-1, c.b(), 1, 0, 0, 0])
        }),
        ("pwrite64", ebadf, |c| {
            sys(libc::SYS_pwrite64, [-1, c.b(), 1, 0, 0, 0])
        }),
        ("unlinkat", enoent, |c| {
            sys(libc::SYS_unlinkat, [AT, c.p(), 0, 0, 0, 0])
        }),
        ("mkdirat", enoent, |c| {
            sys(libc::SYS_mkdirat, [AT, c.p(), 0o700, 0, 0, 0])
        }),
        ("faccessat", enoent, |c| {
            sys(
                libc::SYS_faccessat,
                [AT, c.p(), libc::F_OK as Long, 0, 0, 0],
            )
        }),
        ("readlinkat", enoent, |c| {
            sys(
                libc::SYS_readlinkat,
                [AT, c.p(), c.b(), c.buf.len() as Long, 0, 0],
            )
        }),
        // mask 0x7ff = STATX_BASIC_STATS
        ("statx", enoent, |c| {
            sys(libc::SYS_statx, [AT, c.p(), 0, 0x7ff, c.b(), 0])
        }),
    ];
    t.to_vec()
}

fn distinct(k: usize) {
    let table = distinct_table();
    let ctx = Ctx {
        path: CString::new(format!("/nonexistent/syscope-{}/x", std::process::id())).unwrap(),
        attr: CString::new("user.syscope").unwrap(),
        buf: vec![0; 4096],
    };
    if k > table.len() {
        usage(&format!(
            "distinct supports at most {} syscalls",
            table.len()
        ));
    }
    for (name, want, call) in table.iter().take(k) {
        match call(&ctx) {
            Err(e) if e == *want => println!("syscall={name} errno={}", errno_name(e)),
            r => fail(&format!(
                "{name} returned {r:?}, expected Err({})",
                errno_name(*want)
            )),
        }
    }
    println!("ok distinct k={k}");
}

fn wait_signal() {
    // SAFETY: plain signal-mask calls on a local, initialised sigset.
    let sig = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        // Blocked signals stay pending for sigwait instead of killing the process.
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        println!("ready");
        let _ = std::io::stdout().flush();
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    };
    println!("signal={sig}");
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut delay = 0;
    if let Some(i) = args.iter().position(|a| a == "--start-after") {
        delay = num(args.get(i + 1), "--start-after");
        args.drain(i..i + 2);
    } else if let Some(i) = args.iter().position(|a| a.starts_with("--start-after=")) {
        delay = num(
            Some(&args[i]["--start-after=".len()..].to_string()),
            "--start-after",
        );
        args.remove(i);
    }
    let cmd = args.first().map(String::as_str).unwrap_or("");
    if cmd == "list" {
        for (name, e, _) in distinct_table() {
            println!("syscall={name} errno={}", errno_name(e));
        }
        return;
    }
    if delay > 0 {
        start_after(delay);
    }
    match cmd {
        "fail-open" => fail_open(num(args.get(1), "n")),
        "sleep" => sleep(num(args.get(1), "n"), num(args.get(2), "ms")),
        "getppid" => getppid(num(args.get(1), "n")),
        "distinct" => distinct(num(args.get(1), "k")),
        "wait-signal" => wait_signal(),
        _ => usage("unknown command"),
    }
}

//! A workload with a known truth for syscope's integration tests.
//!
//! Every operation is exactly one raw syscall (`libc::syscall`, not libc wrappers, which may
//! map to other syscalls: glibc's nanosleep() is clock_nanosleep, fstat() is newfstatat).
//!
//! Usage: syscope-workload [--start-after <ms>] <command>
//!   fail-open <n>        n x openat(AT_FDCWD, "/nonexistent/syscope-<pid>", O_RDONLY) -> ENOENT
//!   sleep <n> <ms>       n x clock_nanosleep(CLOCK_MONOTONIC, 0, <ms>)
//!   getppid <n>          n x getppid in a tight loop; prints `ns_per_call=<f64>`
//!   getppid-cpus <n>     the same in one thread per CPU, each pinned to its CPU, all at
//!                        once; prints the slowest thread's `ns_per_call=<f64>`
//!   distinct <k>         k different failing syscalls, once each; prints `syscall=<name> errno=<E>`
//!   list                 prints the `distinct` table without running it
//!   wait-signal          prints `ready`, then blocks until SIGTERM, SIGINT or SIGUSR1
//!   threads <n>          n short-lived threads, 8 at a time, each one getppid, then exits
//!   threads-blocked <n> <ms>  n threads at once, each blocked in one clock_nanosleep(<ms>)
//!
//! Identity and naming commands:
//!   int80-getpid <n>     n x getpid through the 32-bit entry (`int 0x80`, i386 number 20);
//!                        x86_64 only (exit 2 elsewhere)
//!   rename <prctl|proc> <name> <n>
//!                        a second thread makes one getppid, then the main thread renames
//!                        the process (prctl(PR_SET_NAME), or a write to /proc/<pid>/comm),
//!                        then the second thread makes n getppid
//!   exec-thread <path> [args...]  a second thread execve()s path with args (the main thread
//!                        waits in pause); exit 3 if the execve returns
//!   churn <prefix> <n> <k> <c>
//!                        n forked children, one after another, named <prefix><i> (prctl),
//!                        each making k fchdir(-1) (EBADF); then a child <prefix>canary
//!                        making c openat (ENOENT) 100 ms apart
//!
//! TCP commands (IPv4; each prints `port=<p>` and its own measurements):
//!   tcp-refused <n> [ip] [port]    n connects to a closed port on loopback (127.0.0.1, or
//!                                  e.g. ::1; a port just free, or `port`), each ECONNREFUSED
//!   tcp-connect <n>                n connects to a loopback listener (accepted, closed)
//!   tcp-reqresp <c> <r> <ms>       c connections x r requests; the server answers after ms;
//!                                  prints `client_ns=` and `server_ns=` per request
//!   tcp-reqresp-old <r> <ms> <go>  one connection, one exchange, prints `port=`, waits until the
//!                                  file <go> exists, then r timed requests as tcp-reqresp
//!   tcp-reqresp-us spin|sleep <us,us,...>  one connection; request i answered after the i-th
//!                                  delay (µs), spinning (placed to the µs) or sleeping in
//!                                  clock_nanosleep; prints `port=` and the server's `server_ns=`
//!   tcp-stream-overlap <mib>       one request answered with mib MiB, the client writing a byte
//!                                  per 16 KiB read (overlapping requests, as HTTP/2 flow control)
//!   tcp-listen-flood <n>           n connects to a backlog-0 listener never accepted; prints
//!                                  `listen_drops=` (the netns's TcpExt ListenDrops delta)
//!   tcp-timeout <ip> <port>        one connect that must fail with ETIMEDOUT; prints the
//!                                  `total_retrans=` TCP_INFO showed while it was retried
//!   tcp-hold <n> <ms>              n loopback connections held open for ms, then closed
//!   tcp-reset                      the server closes with SO_LINGER 0; the client sees the RST
//!   tcp-echo-server <ip> <port> <bytes>  answers every read with <bytes> bytes, forever
//!   tcp-lossy <ip> <port> <n> <netns> <iface> <ms>
//!                                  n exchanges with an echo server, then one while the server's
//!                                  <ip> is removed from <iface> in <netns> for <ms>; prints
//!                                  `total_retrans=` and the
//!                                  `rtt_min_us=`/`rtt_max_us=` TCP_INFO showed
//!
//!   tcp-load keepalive <n>         n 64-byte request/responses on one loopback connection
//!   tcp-load connect <n>           n loopback connections, one request/response each;
//!                                  either takes [server_cpu client_cpu]: pins the two threads
//!                                  both print `ns_per_request=` (the benchmark's load)
//!
//! `--netns <name>` first joins the network namespace /run/netns/<name>.
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
         fail-open <n> | sleep <n> <ms> | getppid <n> | getppid-cpus <n> | distinct <k> | list | wait-signal | \
         threads <n> | threads-blocked <n> <ms>"
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

/// A path under a directory that does not exist: opening it fails ENOENT.
fn missing_path() -> CString {
    CString::new(format!("/nonexistent/syscope-{}", std::process::id())).unwrap()
}

/// openat of `path` for reading.
fn open_at(path: &CString) -> Result<Long, i32> {
    sys(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as Long,
            path_arg(path),
            libc::O_RDONLY as Long,
            0,
            0,
            0,
        ],
    )
}

fn fail_open(n: u64) {
    let path = missing_path();
    for _ in 0..n {
        let r = open_at(&path);
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
        nanosleep(&ts);
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

/// `getppid` in one thread per CPU at once: the threads share the process's
/// series, so the kernel's histogram updates contend between CPUs.
fn getppid_cpus(n: u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let start = std::sync::Arc::new(std::sync::Barrier::new(cpus));
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let start = start.clone();
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in
                // bounds for cpu < CPU_SETSIZE; the call only reads the set.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        fail(&format!("pinning to CPU {cpu}"));
                    }
                }
                start.wait();
                let t0 = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(sys(libc::SYS_getppid, [0; 6]).ok());
                }
                t0.elapsed().as_nanos() as f64 / n.max(1) as f64
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(f64::MAX))
        .fold(0.0, f64::max);
    println!("cpus={cpus}");
    println!("ns_per_call={slowest}");
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

/// `n` threads, `batch` alive at a time, each running `work` once.
fn spawn_threads(n: u64, batch: u64, work: impl Fn() + Send + Sync + Copy + 'static) {
    let mut done = 0;
    while done < n {
        let now = batch.min(n - done);
        let handles: Vec<_> = (0..now)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(work)
                    .unwrap_or_else(|e| fail(&format!("spawning a thread: {e}")))
            })
            .collect();
        for h in handles {
            if h.join().is_err() {
                fail("a thread panicked");
            }
        }
        done += now;
    }
}

/// Short-lived threads: each new thread's first event is the exit of the
/// clone3 (or clone) that created it, with no entry before it.
fn threads(n: u64) {
    spawn_threads(n, 8, || {
        std::hint::black_box(sys(libc::SYS_getppid, [0; 6]).ok());
    });
    println!("ok threads n={n}");
}

/// One raw clock_nanosleep (no libc wrapper, so exactly one syscall).
fn nanosleep(ts: &libc::timespec) {
    let r = sys(
        libc::SYS_clock_nanosleep,
        [
            libc::CLOCK_MONOTONIC as Long,
            0,
            ts as *const _ as Long,
            0,
            0,
            0,
        ],
    );
    if r != Ok(0) {
        fail(&format!("clock_nanosleep returned {r:?}"));
    }
}

/// Many threads blocked in a syscall at once: with a thread map smaller than
/// n, entries of sleeping threads are evicted before they wake.
fn threads_blocked(n: u64, ms: u64) {
    let ts = timespec(Duration::from_millis(ms));
    spawn_threads(n, n, move || {
        nanosleep(&ts);
    });
    println!("ok threads-blocked n={n} ms={ms}");
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--netns") {
        let name = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| usage("--netns NAME"));
        tcp::join_netns(&name);
        args.drain(i..i + 2);
    }
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
        "getppid-cpus" => getppid_cpus(num(args.get(1), "n")),
        "distinct" => distinct(num(args.get(1), "k")),
        "wait-signal" => wait_signal(),
        "threads" => threads(num(args.get(1), "n")),
        "threads-blocked" => threads_blocked(num(args.get(1), "n"), num(args.get(2), "ms")),
        "int80-getpid" => int80_getpid(num(args.get(1), "n")),
        "rename" => rename(
            args.get(1).unwrap_or_else(|| usage("prctl | proc")),
            args.get(2).unwrap_or_else(|| usage("name")),
            num(args.get(3), "n"),
        ),
        "exec-thread" => exec_thread(&args[1..]),
        "churn" => churn(
            args.get(1).unwrap_or_else(|| usage("prefix")),
            num(args.get(2), "n"),
            num(args.get(3), "k"),
            num(args.get(4), "c"),
        ),
        "tcp-refused" => tcp::refused(
            num(args.get(1), "n"),
            args.get(2).map_or("127.0.0.1", String::as_str),
            args.get(3).map_or(0, |_| num::<u16>(args.get(3), "port")),
        ),
        "tcp-connect" => tcp::connect(num(args.get(1), "n")),
        "tcp-reqresp" => tcp::reqresp(
            num(args.get(1), "connections"),
            num(args.get(2), "requests"),
            num(args.get(3), "ms"),
            None,
        ),
        "tcp-reqresp-old" => tcp::reqresp(
            1,
            num(args.get(1), "requests"),
            num(args.get(2), "ms"),
            Some(
                args.get(3)
                    .map(String::as_str)
                    .unwrap_or_else(|| usage("go file")),
            ),
        ),
        "tcp-listen-flood" => tcp::listen_flood(num(args.get(1), "n"), args.get(2)),
        "tcp-reset" => tcp::reset(),
        "tcp-reqresp-us" => tcp::reqresp_us(
            args.get(1).map_or("", String::as_str) == "sleep",
            args.get(2).map_or("", String::as_str),
        ),
        "tcp-stream-overlap" => tcp::stream_overlap(num(args.get(1), "MiB")),
        "tcp-timeout" => tcp::timeout(
            args.get(1).unwrap_or_else(|| usage("ip")),
            num(args.get(2), "port"),
        ),
        "tcp-hold" => tcp::hold(num(args.get(1), "n"), num(args.get(2), "ms")),
        "tcp-load" => tcp::load(
            args.get(1).unwrap_or_else(|| usage("keepalive | connect")),
            num(args.get(2), "n"),
            args.get(3).map(|_| {
                (
                    num(args.get(3), "server_cpu"),
                    num(args.get(4), "client_cpu"),
                )
            }),
        ),
        "tcp-echo-server" => tcp::echo_server(
            args.get(1).unwrap_or_else(|| usage("ip")),
            num(args.get(2), "port"),
            num(args.get(3), "bytes"),
        ),
        "tcp-lossy" => tcp::lossy(
            args.get(1).unwrap_or_else(|| usage("ip")),
            num(args.get(2), "port"),
            num(args.get(3), "n"),
            args.get(4).unwrap_or_else(|| usage("netns")),
            args.get(5).unwrap_or_else(|| usage("iface")),
            num(args.get(6), "ms"),
        ),
        _ => usage("unknown command"),
    }
}

/// n x getpid through the i386 entry: the kernel numbers it 20 in the
/// 32-bit table (x86_64's 20 is writev).
#[cfg(target_arch = "x86_64")]
fn int80_getpid(n: u64) {
    // The pid to expect is read the same way, so every getpid is a 32-bit one.
    let mut want: Long = 20;
    // SAFETY: as below.
    unsafe { std::arch::asm!("int 0x80", inout("rax") want, options(nostack)) };
    for _ in 1..n {
        let mut r: Long = 20;
        // SAFETY: i386 getpid takes no arguments and touches no memory;
        // `int 0x80` clobbers only eax (the result) on return.
        unsafe { std::arch::asm!("int 0x80", inout("rax") r, options(nostack)) };
        if r != want {
            fail(&format!("int 0x80 getpid returned {r}, want {want}"));
        }
    }
    println!("ok int80-getpid n={n} pid={want}");
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_getpid(_n: u64) {
    usage("int80-getpid needs x86_64")
}

/// Fork a child named `name` (prctl) that runs `body`, then `_exit(0)`s;
/// wait for it. Children are forked, not exec'd: no loader, so their only
/// failing calls are the ones `body` makes.
fn fork_named(name: &str, body: impl FnOnce()) {
    let c = CString::new(name).unwrap();
    // SAFETY: this process is single-threaded here, so the child may run
    // any code; it leaves through `_exit` (no atexit handlers, no flush).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => fail("fork failed"),
        0 => {
            if sys(
                libc::SYS_prctl,
                [libc::PR_SET_NAME as Long, c.as_ptr() as Long, 0, 0, 0, 0],
            )
            .is_err()
            {
                // SAFETY: as above.
                unsafe { libc::_exit(3) };
            }
            body();
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a live int.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                fail(&format!("child {name} failed: status {status}"));
            }
        }
    }
}

/// Churn of process names: `n` short-lived children named `<prefix><i>`,
/// each making `k` failing fchdir(-1) (EBADF), one after another as fast as
/// they fork; then one child named `<prefix>canary` making `c` failing
/// openat (ENOENT), 100 ms apart: a new workload arriving after the churn.
fn churn(prefix: &str, n: u64, k: u64, c: u64) {
    if prefix.len() + 6 > 15 {
        usage("prefix: at most 9 bytes");
    }
    for i in 0..n {
        fork_named(&format!("{prefix}{i}"), || {
            for _ in 0..k {
                if sys(libc::SYS_fchdir, [-1, 0, 0, 0, 0, 0]) != Err(libc::EBADF) {
                    // SAFETY: in the forked child, as in `fork_named`.
                    unsafe { libc::_exit(4) };
                }
            }
        });
    }
    println!("ok churn n={n} k={k}");
    let path = missing_path();
    fork_named(&format!("{prefix}canary"), || {
        for _ in 0..c {
            if open_at(&path) != Err(libc::ENOENT) {
                // SAFETY: in the forked child, as in `fork_named`.
                unsafe { libc::_exit(5) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    println!("ok canary c={c}");
}

/// A thread that made a syscall under the old name keeps running after the
/// process is renamed: its later calls must carry the new name.
fn rename(how: &str, name: &str, n: u64) {
    use std::sync::{Arc, Barrier};
    if name.is_empty() || name.len() > 15 {
        usage("name: 1 to 15 bytes");
    }
    let before = Arc::new(Barrier::new(2));
    let after = Arc::new(Barrier::new(2));
    let (b, a) = (before.clone(), after.clone());
    let t = std::thread::spawn(move || {
        let _ = sys(libc::SYS_getppid, [0; 6]);
        b.wait();
        a.wait();
        for _ in 0..n {
            let _ = sys(libc::SYS_getppid, [0; 6]);
        }
    });
    before.wait();
    match how {
        "prctl" => {
            let c = CString::new(name).unwrap();
            if let Err(e) = sys(
                libc::SYS_prctl,
                [libc::PR_SET_NAME as Long, c.as_ptr() as Long, 0, 0, 0, 0],
            ) {
                fail(&format!("prctl: errno {e}"));
            }
        }
        "proc" => {
            let path = format!("/proc/{}/comm", std::process::id());
            if let Err(e) = std::fs::write(&path, name) {
                fail(&format!("write {path}: {e}"));
            }
        }
        _ => usage("rename prctl | proc"),
    }
    after.wait();
    t.join().unwrap_or_else(|_| fail("thread panicked"));
    println!("ok rename n={n}");
}

/// execve from a non-main thread: the kernel gives it the leader's id.
fn exec_thread(args: &[String]) {
    let Some(path) = args.first() else {
        usage("exec-thread <path> [args...]")
    };
    let c: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_else(|_| usage("NUL in argument")))
        .collect();
    let _ = path;
    std::thread::spawn(move || {
        let mut argv: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let r = sys(
            libc::SYS_execve,
            [
                argv[0] as Long,
                argv.as_ptr() as Long,
                envp.as_ptr() as Long,
                0,
                0,
                0,
            ],
        );
        fail(&format!("execve returned {r:?}"));
    });
    loop {
        // SAFETY: pause has no arguments; the exec ends this process image.
        unsafe { libc::pause() };
    }
}

/// TCP workloads: real sockets with a known truth.
mod tcp {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::fail;

    const REQ: usize = 64;

    pub fn join_netns(name: &str) {
        let path = format!("/run/netns/{name}");
        let f = std::fs::File::open(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
        // SAFETY: a valid namespace fd; the process is still single-threaded.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            fail(&format!(
                "setns {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }

    fn loopback_listener(backlog: i32) -> TcpListener {
        let l =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| fail(&e.to_string()));
        // std listens with 128; re-listen with the backlog asked for.
        // SAFETY: listen(2) on a socket we own.
        unsafe { libc::listen(l.as_raw_fd(), backlog) };
        l
    }

    fn port(l: &TcpListener) -> u16 {
        l.local_addr().unwrap().port()
    }

    /// `n` connects refused, to `port` or, when 0, to a port just free.
    pub fn refused(n: u64, ip: &str, port: u16) {
        let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|_| fail("bad ip"));
        // A port that was just free: nobody listens there now.
        let p = match port {
            0 => TcpListener::bind((ip, 0))
                .unwrap_or_else(|e| fail(&e.to_string()))
                .local_addr()
                .unwrap()
                .port(),
            p => p,
        };
        for _ in 0..n {
            match TcpStream::connect((ip, p)) {
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                r => fail(&format!("connect to closed port {p}: {r:?}")),
            }
        }
        println!("port={p}");
    }

    pub fn connect(n: u64) {
        let l = loopback_listener(128);
        let p = port(&l);
        let acceptor = std::thread::spawn(move || {
            for _ in 0..n {
                let _ = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
            }
        });
        for _ in 0..n {
            let s = TcpStream::connect((Ipv4Addr::LOCALHOST, p))
                .unwrap_or_else(|e| fail(&e.to_string()));
            drop(s);
        }
        acceptor.join().unwrap();
        println!("port={p}");
    }

    /// With `go`: one untimed exchange per connection first, then `port=`
    /// is printed and the client waits for the file `go` to exist (the
    /// agent starts meanwhile: a connection older than the agent).
    pub fn reqresp(conns: u64, reqs: u64, ms: u64, go: Option<&str>) {
        let l = loopback_listener(128);
        let p = port(&l);
        let delay = Duration::from_millis(ms);
        let warmup = usize::from(go.is_some());
        let server = std::thread::spawn(move || {
            let mut took = vec![];
            for _ in 0..conns {
                let (mut s, _) = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
                let mut buf = [0u8; REQ];
                let mut n = 0;
                // Until the client closes.
                while s.read_exact(&mut buf).is_ok() {
                    let t0 = Instant::now();
                    std::thread::sleep(delay);
                    s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
                    if n >= warmup {
                        took.push(t0.elapsed().as_nanos().to_string());
                    }
                    n += 1;
                }
            }
            took
        });
        let mut took = vec![];
        for _ in 0..conns {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, p))
                .unwrap_or_else(|e| fail(&e.to_string()));
            s.set_nodelay(true).unwrap();
            let mut buf = [7u8; REQ];
            if let Some(go) = go {
                s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                println!("port={p}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                while !std::path::Path::new(go).exists() {
                    super::start_after(20);
                }
            }
            for _ in 0..reqs {
                s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
                // From the write's completion, as the kernel stamps it: on
                // loopback the write itself carries the segment to the
                // server, which takes milliseconds under emulation (qemu TCG).
                let t0 = Instant::now();
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                took.push(t0.elapsed().as_nanos().to_string());
            }
            let _ = s.shutdown(Shutdown::Write);
        }
        let server_took = server.join().unwrap();
        if go.is_none() {
            println!("port={p}");
        }
        println!("client_ns={}", took.join(","));
        println!("server_ns={}", server_took.join(","));
    }

    /// TcpExt ListenDrops of this network namespace.
    fn listen_drops() -> u64 {
        let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            if !names.starts_with("TcpExt:") {
                continue;
            }
            let i = names.split_whitespace().position(|n| n == "ListenDrops");
            if let Some(v) = i.and_then(|i| values.split_whitespace().nth(i)) {
                return v.parse().unwrap_or(0);
            }
        }
        fail("no TcpExt ListenDrops in /proc/net/netstat")
    }

    /// A backlog-0 listener flooded with `n` connects. With `go`: flooded
    /// once, its port and `drops_before` printed, then, once the file `go`
    /// exists, flooded again; `listen_drops` is the last flood's.
    pub fn listen_flood(n: u64, go: Option<&String>) {
        let l = loopback_listener(0);
        let p = port(&l);
        if let Some(go) = go {
            let before = flood(p, n);
            println!("port={p}");
            println!("drops_before={before}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let t0 = Instant::now();
            while !std::path::Path::new(go).exists() {
                if t0.elapsed() > Duration::from_secs(120) {
                    fail("the go file never appeared");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let drops = flood(p, n);
        drop(l);
        println!("port={p}");
        println!("listen_drops={drops}");
    }

    /// `n` connects to port `p` whose queue is full; the namespace's
    /// ListenDrops they caused.
    fn flood(p: u16, n: u64) -> u64 {
        let before = listen_drops();
        let mut clients = vec![];
        for _ in 0..n {
            clients.push(connect_nonblocking(Ipv4Addr::LOCALHOST, p));
        }
        // SYNs the full queue drops are retransmitted (1 s, then 3 s): wait
        // for the first round, then stop the clients before counting.
        std::thread::sleep(Duration::from_millis(1500));
        for fd in clients {
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
        }
        std::thread::sleep(Duration::from_millis(100));
        listen_drops() - before
    }

    /// The benchmark's load: a server thread answering every 64-byte request
    /// at once, a client timing n requests (kept alive, or one per connection).
    /// `pin`: the CPUs of the server and the client thread.
    pub fn load(mode: &str, n: u64, pin: Option<(usize, usize)>) {
        let per_conn = match mode {
            "keepalive" => n,
            "connect" => 1,
            _ => super::usage("tcp-load keepalive|connect <n>"),
        };
        let l = loopback_listener(1024);
        let p = port(&l);
        std::thread::spawn(move || {
            if let Some((cpu, _)) = pin {
                pin_thread(cpu);
            }
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; REQ];
                while s.read_exact(&mut buf).is_ok() {
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                }
            }
        });
        if let Some((_, cpu)) = pin {
            pin_thread(cpu);
        }
        let mut buf = [3u8; REQ];
        let t0 = Instant::now();
        let mut done = 0;
        while done < n {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, p))
                .unwrap_or_else(|e| fail(&e.to_string()));
            s.set_nodelay(true).unwrap();
            for _ in 0..per_conn.min(n - done) {
                s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                done += 1;
            }
        }
        println!(
            "ns_per_request={}",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
    }

    /// Pin the calling thread to one CPU.
    fn pin_thread(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity(0 = this thread) only touch it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                fail(&format!(
                    "pinning to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }

    pub fn timeout(ip: &str, port: u16) {
        let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| fail("bad ip"));
        // Non-blocking, so TCP_INFO can be read while the SYN is retried:
        // the kernel zeroes the counters when the failed connect is undone.
        let fd = connect_nonblocking(ip, port);
        let mut retrans = 0;
        loop {
            let info = tcp_info(fd);
            // tcpi_state 2 = SYN_SENT.
            if info.tcpi_state != 2 {
                break;
            }
            retrans = retrans.max(info.tcpi_total_retrans);
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as u32;
        // SAFETY: getsockopt into a local int, then close, on our descriptor.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut len,
            );
            libc::close(fd);
        }
        if err != libc::ETIMEDOUT {
            fail(&format!(
                "connect {ip}:{port}: expected ETIMEDOUT, got errno {err}"
            ));
        }
        println!("total_retrans={retrans}");
    }

    pub fn hold(n: u64, ms: u64) {
        let l = loopback_listener(1024);
        let p = port(&l);
        let mut held = vec![];
        for _ in 0..n {
            let c = TcpStream::connect((Ipv4Addr::LOCALHOST, p))
                .unwrap_or_else(|e| fail(&e.to_string()));
            let (s, _) = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
            held.push((c, s));
        }
        println!("port={p}");
        println!("held");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(ms));
        drop(held);
    }

    pub fn reset() {
        let l = loopback_listener(8);
        let p = port(&l);
        let mut c =
            TcpStream::connect((Ipv4Addr::LOCALHOST, p)).unwrap_or_else(|e| fail(&e.to_string()));
        let (s, _) = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a valid linger struct.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const _ as *const libc::c_void,
                std::mem::size_of_val(&linger) as u32,
            )
        };
        drop(s); // RST
        let mut buf = [0u8; 8];
        match c.read(&mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
            r => fail(&format!("expected ECONNRESET, got {r:?}")),
        }
        println!("port={p}");
    }

    /// One connection; request i is answered after `delays[i]` µs. Prints
    /// bounds of what the kernel can measure for each request: `inner_ns`
    /// (the server's read returned .. its write began: the kernel's request
    /// starts before and ends after) and `outer_ns` (the client's write
    /// began .. the server's write returned: the kernel's lies within).
    /// Spinning runs at SCHED_FIFO when allowed, so nothing preempts it.
    pub fn reqresp_us(sleep: bool, spec: &str) {
        let delays: Vec<u64> = spec
            .split(',')
            .map(|d| {
                d.parse()
                    .unwrap_or_else(|_| fail(&format!("bad delay {d:?}")))
            })
            .collect();
        let l = loopback_listener(1);
        let p = port(&l);
        let n = delays.len();
        let server = std::thread::spawn(move || {
            if !sleep {
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: this thread, a valid param; failure leaves it as is.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            }
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
            let mut buf = [0u8; REQ];
            let mut stamps = vec![];
            for d in delays {
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                let t0 = Instant::now();
                let d = Duration::from_micros(d);
                if sleep {
                    std::thread::sleep(d);
                } else {
                    while t0.elapsed() < d {
                        std::hint::spin_loop();
                    }
                }
                let t1 = Instant::now();
                s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
                stamps.push((t0, t1, Instant::now()));
            }
            stamps
        });
        let mut s =
            TcpStream::connect((Ipv4Addr::LOCALHOST, p)).unwrap_or_else(|e| fail(&e.to_string()));
        s.set_nodelay(true).unwrap();
        let mut buf = [7u8; REQ];
        let mut sent = vec![];
        for _ in 0..n {
            sent.push(Instant::now());
            s.write_all(&buf).unwrap_or_else(|e| fail(&e.to_string()));
            s.read_exact(&mut buf)
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        let _ = s.shutdown(Shutdown::Write);
        let stamps = server.join().unwrap();
        let ns = |d: Duration| d.as_nanos().to_string();
        let list = |f: &dyn Fn(usize) -> Duration| -> String {
            (0..n).map(|i| ns(f(i))).collect::<Vec<_>>().join(",")
        };
        println!("port={p}");
        println!("server_ns={}", list(&|i| stamps[i].2 - stamps[i].0));
        println!("inner_ns={}", list(&|i| stamps[i].1 - stamps[i].0));
        println!("outer_ns={}", list(&|i| stamps[i].2 - sent[i]));
    }

    /// One request answered with `mib` MiB; the client writes one byte after
    /// every 16 KiB it reads, as an HTTP/2 client sends WINDOW_UPDATEs while
    /// a download is under way: its "requests" overlap the answer.
    pub fn stream_overlap(mib: usize) {
        let l = loopback_listener(1);
        let p = port(&l);
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(&e.to_string()));
            let mut req = [0u8; REQ];
            s.read_exact(&mut req)
                .unwrap_or_else(|e| fail(&e.to_string()));
            let chunk = vec![1u8; 1 << 16];
            for _ in 0..mib * 16 {
                s.write_all(&chunk).unwrap_or_else(|e| fail(&e.to_string()));
            }
            // Read the client's bytes to its close: closing with them unread
            // would reset the connection under the client's last reads.
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        });
        let mut s =
            TcpStream::connect((Ipv4Addr::LOCALHOST, p)).unwrap_or_else(|e| fail(&e.to_string()));
        s.write_all(&[7u8; REQ])
            .unwrap_or_else(|e| fail(&e.to_string()));
        let mut buf = vec![0u8; 1 << 14];
        let mut left = mib << 20;
        let mut updates = 0;
        while left > 0 {
            let n = s.read(&mut buf).unwrap_or_else(|e| fail(&e.to_string()));
            if n == 0 {
                fail("the server closed early");
            }
            left = left.saturating_sub(n);
            if left > 0 {
                s.write_all(&[0u8]).unwrap_or_else(|e| fail(&e.to_string()));
                updates += 1;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        server.join().unwrap();
        println!("port={p}");
        println!("updates={updates}");
    }

    pub fn echo_server(ip: &str, port: u16, bytes: usize) {
        let l = TcpListener::bind((ip, port))
            .unwrap_or_else(|e| fail(&format!("bind {ip}:{port}: {e}")));
        println!("ready");
        let _ = std::io::stdout().flush();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let reply = vec![1u8; bytes];
                let mut buf = [0u8; REQ];
                while s.read_exact(&mut buf).is_ok() {
                    if s.write_all(&reply).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// The kernel's TCP_INFO of a socket.
    fn tcp_info(fd: std::os::fd::RawFd) -> libc::tcp_info {
        // SAFETY: getsockopt into a zeroed, correctly sized tcp_info.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as u32;
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut libc::c_void,
                &mut len,
            );
            info
        }
    }

    /// A non-blocking IPv4 socket with its connect started; its descriptor.
    fn connect_nonblocking(ip: Ipv4Addr, port: u16) -> i32 {
        // SAFETY: plain socket calls on a descriptor we own; a valid sockaddr.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            libc::connect(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sa) as u32,
            );
            fd
        }
    }

    /// Remove or restore the server's address in its namespace. Without it
    /// the server's namespace silently drops what arrives, while the client's
    /// retransmissions still go out on the wire (a link down would stop them
    /// at the sender, where they count as failed attempts, not retransmits).
    fn server_addr(netns: &str, iface: &str, ip: &str, op: &str) {
        let cidr = format!("{ip}/24");
        let st = std::process::Command::new("ip")
            .args(["-n", netns, "addr", op, &cidr, "dev", iface])
            .status()
            .unwrap_or_else(|e| fail(&format!("ip: {e}")));
        if !st.success() {
            fail(&format!(
                "ip -n {netns} addr {op} {cidr} dev {iface} failed"
            ));
        }
    }

    pub fn lossy(ip: &str, port: u16, n: u64, netns: &str, iface: &str, ms: u64) {
        let addr: SocketAddr = format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|_| fail("address"));
        let mut s =
            TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
        s.set_nodelay(true).unwrap();
        let (mut lo, mut hi) = (u32::MAX, 0);
        let mut seen = |s: &TcpStream| {
            let rtt = tcp_info(s.as_raw_fd()).tcpi_rtt;
            lo = lo.min(rtt);
            hi = hi.max(rtt);
        };
        seen(&s);
        let req = [9u8; REQ];
        let mut reply = vec![];
        let exchange = |s: &mut TcpStream, reply: &mut Vec<u8>| {
            s.write_all(&req).unwrap_or_else(|e| fail(&e.to_string()));
            let mut chunk = [0u8; 65536];
            // One reply is whatever the server sends per request: read until
            // the socket has been quiet for a moment.
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let got = s
                .read(&mut chunk)
                .unwrap_or_else(|e| fail(&format!("read: {e}")));
            reply.extend_from_slice(&chunk[..got]);
        };
        let start = Instant::now();
        for _ in 0..n {
            exchange(&mut s, &mut reply);
            seen(&s);
        }
        // Keep exchanging for at least 2.5 s so RTT is sampled more than once.
        while start.elapsed() < Duration::from_millis(2500) {
            exchange(&mut s, &mut reply);
            seen(&s);
        }
        // Drain what is still in flight from the last replies.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut sink = [0u8; 65536];
        while let Ok(k) = s.read(&mut sink) {
            if k == 0 {
                break;
            }
        }
        let before = tcp_info(s.as_raw_fd()).tcpi_total_retrans;
        server_addr(netns, iface, ip, "del");
        s.write_all(&req).unwrap_or_else(|e| fail(&e.to_string()));
        std::thread::sleep(Duration::from_millis(ms));
        server_addr(netns, iface, ip, "add");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let got = s
            .read(&mut sink)
            .unwrap_or_else(|e| fail(&format!("read after outage: {e}")));
        if got == 0 {
            fail("connection closed during the outage");
        }
        // The agent may sample RTT after the outage too: count that state.
        seen(&s);
        let after = tcp_info(s.as_raw_fd()).tcpi_total_retrans;
        if after <= before {
            fail("no retransmission during the outage");
        }
        drop(s);
        println!("total_retrans={after}");
        println!("rtt_min_us={lo}");
        println!("rtt_max_us={hi}");
    }
}

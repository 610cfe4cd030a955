//! Identity end to end on the real kernel and real cgroups: processes placed
//! in cgroups laid out as systemd and the kubelet lay them out carry the
//! unit, the pod and the container on every point; names come from a pod
//! log tree the test builds in a temp dir (the agent's configurable path).
//!
//! Needs root (cgroup writes, CAP_BPF) and a cgroup2 mount. Cgroups are
//! created under a top-level directory unique to the test, removed at the
//! end.

mod common;

use std::{fs, path::PathBuf, time::Duration};

use common::{
    cgroup::{cgroup2_mount, finish, named_copy, run_in, Tree},
    require_root, skip, Agent,
};
use syscope_tests::{unique_name, MetricPoint, Receiver};

const WAIT: Duration = Duration::from_secs(30);

fn errors<'a>(pts: &'a [MetricPoint], name: &str) -> Vec<&'a MetricPoint> {
    pts.iter()
        .filter(|p| {
            p.name == "syscall.errors"
                && p.has_attrs(&[
                    ("process.executable.name", name),
                    ("syscall.name", "openat"),
                    ("error.type", "ENOENT"),
                ])
        })
        .collect()
}

/// The points of process `name`.
fn of_process<'a>(pts: &'a [MetricPoint], name: &str) -> Vec<&'a MetricPoint> {
    pts.iter()
        .filter(|p| p.attr("process.executable.name") == Some(name))
        .collect()
}

fn setup() -> Option<PathBuf> {
    if !require_root() {
        return None;
    }
    let Some(mount) = cgroup2_mount() else {
        skip("no cgroup2 mount on this host");
        return None;
    };
    Some(mount)
}

/// A process in `…/shop.slice/web.service` carries `systemd.unit` and
/// `systemd.slice` on every point, and the exact error count.
#[test]
fn systemd_unit_on_every_point() {
    let Some(mount) = setup() else { return };
    let name = unique_name("unit");
    let tree = Tree::new(&mount, &format!("syscope-{name}.slice"));
    let unit = tree.mkdir("shop.slice/web.service");
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    finish(run_in(&unit, &name, &["fail-open", "17"]), &name);
    let pts = rx.wait_for(WAIT, |p| {
        errors(p, &name).last().and_then(|p| p.number()) == Some(17.0)
    });
    let mine = of_process(&pts, &name);
    assert!(!mine.is_empty());
    for p in &mine {
        assert_eq!(p.attr("systemd.unit"), Some("web.service"), "{p:?}");
        assert_eq!(p.attr("systemd.slice"), Some("shop.slice"), "{p:?}");
        assert_eq!(p.attr("container.id"), None, "{p:?}");
        assert_eq!(p.attr("k8s.pod.uid"), None, "{p:?}");
    }
    let e = errors(&pts, &name);
    assert!(e.iter().all(|p| p.number() == Some(17.0)), "{e:?}");
    syscope_tests::assert_documented_attributes(&pts);
}

/// On demand (the default probe sets), `systemd.slice=<slice>` selects the
/// cgroups of that slice's units in the kernel: a unit that existed before
/// the agent and one born after it (selected at its birth) are measured
/// exactly; the same program outside the slice is not measured at all.
#[test]
fn a_selected_slice_is_measured_alone_on_demand() {
    let Some(mount) = setup() else { return };
    let name = unique_name("odslice");
    let tree = Tree::new(&mount, &format!("syscope-{name}.slice"));
    let slice = format!("{name}.slice");
    let before = tree.mkdir(&format!("{slice}/a.service"));
    let rx = Receiver::start();
    let sel = format!("systemd.slice={slice}");
    let endpoint = rx.grpc_endpoint();
    let _agent = Agent::start(
        &[
            "--endpoint",
            &endpoint,
            "--interval",
            "1s",
            "--syscall-workloads",
            &sel,
        ],
        &[("SYSCOPE_PROBES", "tcp")],
    );
    let selected = |p: &[MetricPoint]| {
        syscope_tests::latest(p, "syscope.syscalls.selected.cgroups", &[])
            .and_then(MetricPoint::number)
    };
    rx.wait_for(WAIT, |p| selected(p) == Some(1.0));
    let after = tree.mkdir(&format!("{slice}/b.service"));
    rx.wait_for(WAIT, |p| selected(p) == Some(2.0));
    finish(run_in(&before, &name, &["fail-open", "17"]), &name);
    finish(run_in(&after, &name, &["fail-open", "17"]), &name);
    // The same program in the test's own cgroup: not selected.
    let outside = tree.mkdir("elsewhere.service");
    finish(run_in(&outside, &name, &["fail-open", "5"]), &name);
    let in_unit = |p: &MetricPoint, unit: &str| p.attr("systemd.unit") == Some(unit);
    let pts = rx.wait_for(WAIT, |p| {
        let e = errors(p, &name);
        e.iter()
            .any(|p| in_unit(p, "a.service") && p.number() == Some(17.0))
            && e.iter()
                .any(|p| in_unit(p, "b.service") && p.number() == Some(17.0))
    });
    std::thread::sleep(Duration::from_millis(2500));
    let pts = [pts, rx.points()].concat();
    for p in errors(&pts, &name) {
        assert_eq!(p.attr("systemd.slice"), Some(slice.as_str()), "{p:?}");
        assert_eq!(p.number(), Some(17.0), "{p:?}");
    }
    assert!(
        !pts.iter().any(|p| p.name.starts_with("syscall.")
            && p.attr("systemd.unit") == Some("elsewhere.service")),
        "a process outside the slice was measured"
    );
}

/// A fake kubelet pod log tree: `pods/<ns>_<pod>_<uid>/<container>/0.log`
/// and `containers/<pod>_<ns>_<container>-<id>.log`, as the kubelet lays
/// them out, in a temp dir removed on drop.
struct PodLogs {
    dir: PathBuf,
}

impl PodLogs {
    fn new(tag: &str, ns: &str, pod: &str, uid: &str, container: &str, id: &str) -> PodLogs {
        let dir = std::env::temp_dir().join(format!("syscope-podlogs-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        let cdir = dir
            .join("pods")
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container);
        fs::create_dir_all(&cdir).unwrap();
        fs::write(cdir.join("0.log"), "").unwrap();
        fs::create_dir_all(dir.join("containers")).unwrap();
        std::os::unix::fs::symlink(
            cdir.join("0.log"),
            dir.join("containers")
                .join(format!("{pod}_{ns}_{container}-{id}.log")),
        )
        .unwrap();
        PodLogs { dir }
    }

    /// A config file pointing the agent at this tree.
    fn config(&self) -> PathBuf {
        let path = self.dir.join("syscope.toml");
        fs::write(
            &path,
            format!(
                "[identity]\npod_logs = \"{}\"\ncontainer_logs = \"{}\"\n",
                self.dir.join("pods").display(),
                self.dir.join("containers").display()
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A random-looking id of `n` hex digits, unique to this test run.
fn hex_id(seed: &str, n: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < n {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, i, std::process::id()).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    out.truncate(n);
    out
}

fn uuid(seed: &str) -> String {
    let h = hex_id(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One kubelet layout: `rel(uid, id)` is the container's cgroup below the
/// test's top directory.
fn kubelet_layout(driver: &str, rel: impl Fn(&str, &str) -> String) {
    let Some(mount) = setup() else { return };
    let name = unique_name(driver);
    let (ns, pod, container) = ("shop", "web-7d4b9c8f5-x2x9q", "nginx");
    let uid = uuid(&name);
    let id = hex_id(&format!("{name}-c"), 64);
    let logs = PodLogs::new(&name, ns, pod, &uid, container, &id);
    let tree = Tree::new(&mount, &format!("syscope-{name}"));
    let cgroup = tree.mkdir(&rel(&uid, &id));
    let rx = Receiver::start();
    let config = logs.config();
    let _agent = Agent::exporting_to(&rx, &["--config", config.to_str().unwrap()]);
    finish(run_in(&cgroup, &name, &["fail-open", "23"]), &name);
    let pts = rx.wait_for(WAIT, |p| {
        errors(p, &name).last().and_then(|p| p.number()) == Some(23.0)
    });
    let want = [
        ("k8s.namespace.name", ns),
        ("k8s.pod.name", pod),
        ("k8s.pod.uid", uid.as_str()),
        ("k8s.container.name", container),
        ("container.id", id.as_str()),
    ];
    let mine = of_process(&pts, &name);
    assert!(!mine.is_empty());
    for p in &mine {
        for (k, v) in want {
            assert_eq!(p.attr(k), Some(v), "{k} on {p:?}");
        }
        assert_eq!(p.attr("systemd.unit"), None, "{p:?}");
    }
    // Exact: every error counted once, none lost to the move.
    let e = errors(&pts, &name);
    assert!(e.iter().all(|p| p.number() == Some(23.0)), "{e:?}");
    syscope_tests::assert_documented_attributes(&pts);
}

/// kubelet's systemd cgroup driver with containerd.
#[test]
fn kubelet_systemd_driver_layout() {
    kubelet_layout("ksd", |uid, id| {
        format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        )
    });
}

/// kubelet's cgroupfs driver.
#[test]
fn kubelet_cgroupfs_driver_layout() {
    kubelet_layout("kfs", |uid, id| {
        format!("kubepods/besteffort/pod{uid}/{id}")
    });
}

fn count(pts: &[MetricPoint], exe: &str, syscall: &str) -> Option<u64> {
    syscope_tests::select(
        pts,
        "syscall.duration",
        &[("process.executable.name", exe), ("syscall.name", syscall)],
    )
    .last()
    .and_then(|p| p.exp_histogram())
    .map(|h| h.count)
}

/// getpid through `int 0x80` is exported as getpid (i386's 20), not as
/// x86_64's 20 (writev).
#[test]
fn compat_syscalls_named_from_their_table() {
    if !require_root() {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        skip("int 0x80 exists on x86_64 only (aarch64's arm32 table is not built in)");
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    let name = unique_name("int80");
    let out = syscope_tests::run_named(&name, &["int80-getpid", "13"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok int80-getpid n=13"), "{text}");
    let pts = rx.wait_for(WAIT, |p| count(p, &name, "getpid") == Some(13));
    assert_eq!(
        count(&pts, &name, "writev"),
        None,
        "compat getpid named from the 64-bit table"
    );
    syscope_tests::assert_documented_attributes(&pts);
}

/// After the main thread renames the process, another thread's later calls
/// carry the new name: prctl(PR_SET_NAME) and a write to /proc/<pid>/comm.
#[test]
fn rename_applies_to_every_thread() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    for how in ["prctl", "proc"] {
        let old = unique_name("renold");
        let new = unique_name("rennew");
        syscope_tests::run_named(&old, &["rename", how, &new, "11"]);
        let pts = rx.wait_for(WAIT, |p| {
            count(p, &new, "getppid") == Some(11) && count(p, &old, "getppid") == Some(1)
        });
        std::thread::sleep(Duration::from_millis(1500));
        let pts2 = rx.points();
        assert_eq!(count(&pts2, &new, "getppid"), Some(11), "{how}");
        assert_eq!(count(&pts2, &old, "getppid"), Some(1), "{how}");
        drop(pts);
    }
}

/// An execve from a non-main thread is counted, under the new image's name.
#[test]
fn exec_from_a_thread_is_counted() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &[]);
    let name = unique_name("execthr");
    let image = unique_name("execimg");
    let exe = named_copy(&image);
    syscope_tests::run_named(
        &name,
        &["exec-thread", exe.to_str().unwrap(), "getppid", "5"],
    );
    let pts = rx.wait_for(WAIT, |p| {
        count(p, &image, "execve") == Some(1) && count(p, &image, "getppid") == Some(5)
    });
    let _ = fs::remove_dir_all(exe.parent().unwrap());
    // The one execve under the old name is the one that started it.
    assert_eq!(count(&pts, &name, "execve"), Some(1));
}

/// The agent image (`$SYSCOPE_IMAGE`, else `localhost/syscope:<version>`,
/// which `cargo xtask image` builds); it has the libraries the workload
/// needs, which is mounted into it.
fn image() -> Option<String> {
    let name = std::env::var("SYSCOPE_IMAGE")
        .unwrap_or_else(|_| format!("localhost/syscope:{}", env!("CARGO_PKG_VERSION")));
    let exists = std::process::Command::new("podman")
        .args(["image", "exists", &name])
        .status()
        .is_ok_and(|s| s.success());
    exists.then_some(name)
}

/// podman here: runc (crun fails on hybrid cgroups) and no rlimits
/// (setrlimit is refused in this VM).
fn podman() -> std::process::Command {
    let dir = std::env::temp_dir().join("syscope-id-podman");
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let mut c = std::process::Command::new("podman");
    c.env("CONTAINERS_CONF", conf);
    c
}

/// A podman container that lives well under a second, with a 5 s
/// interval: its cgroup is gone before the agent collects, yet all its
/// series keep `container.id` and `container.name` (resolved at birth).
#[test]
fn short_lived_container_keeps_its_identity() {
    if !require_root() {
        return;
    }
    let Some(image) = image() else {
        skip("no syscope image for podman: run `cargo xtask image` (or set SYSCOPE_IMAGE)");
        return;
    };
    let rx = Receiver::start();
    let endpoint = rx.grpc_endpoint();
    let _agent = Agent::start(&["--endpoint", &endpoint, "--interval", "5s"], &[]);
    let exe = unique_name("podwl");
    let bin = named_copy(&exe);
    let container = unique_name("idshort");
    let cidfile = std::env::temp_dir().join(format!("syscope-id-{container}.cid"));
    let started = std::time::Instant::now();
    let out = podman()
        .args(["run", "--rm", "--name", &container, "--cidfile"])
        .arg(&cidfile)
        .arg("-v")
        .arg(format!("{}:/x:ro", bin.parent().unwrap().display()))
        .args([
            "--entrypoint",
            &format!("/x/{exe}"),
            &image,
            "fail-open",
            "7",
        ])
        .output()
        .expect("podman run");
    let lived = started.elapsed();
    let _ = fs::remove_dir_all(bin.parent().unwrap());
    assert!(out.status.success(), "podman run: {out:?}");
    let id = fs::read_to_string(&cidfile).unwrap().trim().to_string();
    let _ = fs::remove_file(&cidfile);
    assert_eq!(id.len(), 64, "{id:?}");
    eprintln!("container {container} ({id}) lived {lived:?} including podman's own start and stop");
    // At least 7: the image has no ld.so.cache, so the loader's own
    // probing of library paths adds failed opens.
    let pts = rx.wait_for(Duration::from_secs(40), |p| {
        errors(p, &exe)
            .last()
            .and_then(|p| p.number())
            .is_some_and(|n| n >= 7.0)
    });
    let mine = of_process(&pts, &exe);
    assert!(mine.len() > 3, "{mine:?}");
    for p in &mine {
        assert_eq!(p.attr("container.id"), Some(id.as_str()), "{p:?}");
        assert_eq!(p.attr("container.name"), Some(container.as_str()), "{p:?}");
    }
    syscope_tests::assert_documented_attributes(&pts);
}

/// The default probe sets (TCP for every process, syscalls on demand with
/// nothing selected): a container cgroup (`docker-<id>.scope`) that lives
/// well under a second, removed before the agent collects, still names its
/// TCP series: cgroup births are followed whatever the probe sets.
#[test]
fn short_lived_container_keeps_its_identity_by_default() {
    let Some(mount) = setup() else { return };
    let name = unique_name("tcpshort");
    let tree = Tree::new(&mount, &format!("syscope-{name}.slice"));
    let rx = Receiver::start();
    let endpoint = rx.grpc_endpoint();
    let agent = Agent::start(
        &["--endpoint", &endpoint, "--interval", "5s"],
        &[("SYSCOPE_PROBES", "tcp")],
    );
    assert!(
        agent
            .stderr()
            .contains(r#"identity programs attached hooks=["cgroup_mkdir"]"#),
        "{}",
        agent.stderr()
    );
    let id = hex_id(&name, 64);
    let scope = tree.mkdir(&format!("docker-{id}.scope"));
    let started = std::time::Instant::now();
    finish(run_in(&scope, &name, &["tcp-refused", "7"]), &name);
    fs::remove_dir(&scope).expect("rmdir the container's cgroup");
    eprintln!("container cgroup lived {:?}", started.elapsed());
    let by = [
        ("process.executable.name", name.as_str()),
        ("error.type", "ECONNREFUSED"),
    ];
    let pts = rx.wait_for(Duration::from_secs(40), |p| {
        syscope_tests::latest(p, "tcp.connect.errors", &by).and_then(MetricPoint::number)
            == Some(7.0)
    });
    let mine = of_process(&pts, &name);
    assert!(!mine.is_empty());
    for p in &mine {
        assert_eq!(p.attr("container.id"), Some(id.as_str()), "{p:?}");
    }
    syscope_tests::assert_documented_attributes(&pts);
}

/// Churn: K short-lived pods (cgroupfs driver layout, each with its own uid
/// and container id, removed as soon as its process exits) run the same
/// program. Every error is still counted exactly once, under its own pod,
/// and the series that identity adds are measured: without identity the K
/// pods fold into one set of series per program; with it, one set per pod.
#[test]
fn churn_cardinality_is_measured() {
    let Some(mount) = setup() else { return };
    const K: usize = 12;
    const N: u64 = 3;
    let name = unique_name("churn");
    let logs_root = std::env::temp_dir().join(format!("syscope-podlogs-{name}"));
    let tree = Tree::new(&mount, &format!("syscope-{name}"));
    let mut pods = vec![];
    for i in 0..K {
        let uid = uuid(&format!("{name}-{i}"));
        let id = hex_id(&format!("{name}-c{i}"), 64);
        let pod = format!("web-{i}");
        let cdir = logs_root
            .join("pods")
            .join(format!("shop_{pod}_{uid}"))
            .join("app");
        fs::create_dir_all(&cdir).unwrap();
        fs::create_dir_all(logs_root.join("containers")).unwrap();
        fs::write(
            logs_root
                .join("containers")
                .join(format!("{pod}_shop_app-{id}.log")),
            "",
        )
        .unwrap();
        pods.push((uid, id, pod));
    }
    let config = logs_root.join("syscope.toml");
    fs::write(
        &config,
        format!(
            "[identity]\npod_logs = \"{}\"\ncontainer_logs = \"{}\"\n",
            logs_root.join("pods").display(),
            logs_root.join("containers").display()
        ),
    )
    .unwrap();
    let rx = Receiver::start();
    let _agent = Agent::exporting_to(&rx, &["--config", config.to_str().unwrap()]);
    for (uid, id, _) in &pods {
        let dir = tree.mkdir(&format!("kubepods/besteffort/pod{uid}/{id}"));
        finish(run_in(&dir, &name, &["fail-open", &N.to_string()]), &name);
        // Gone before the agent's next collection.
        fs::remove_dir(&dir).unwrap();
    }
    let total = |p: &[MetricPoint]| -> f64 {
        // The latest cumulative value of each series, summed.
        let mut last: std::collections::BTreeMap<String, f64> = Default::default();
        for e in errors(p, &name) {
            last.insert(
                e.attr("k8s.pod.uid").unwrap_or("").to_string(),
                e.number().unwrap_or(0.0),
            );
        }
        last.values().sum()
    };
    let pts = rx.wait_for(WAIT, |p| total(p) >= (K as u64 * N) as f64);
    std::thread::sleep(Duration::from_millis(1500));
    let pts = [pts, rx.points()].concat();
    assert_eq!(total(&pts), (K as u64 * N) as f64, "every error once");
    let mine: Vec<&MetricPoint> = pts
        .iter()
        .filter(|p| p.attr("process.executable.name") == Some(name.as_str()))
        .filter(|p| p.name == "syscall.duration" || p.name == "syscall.errors")
        .collect();
    for p in &mine {
        let uid = p.attr("k8s.pod.uid").expect("pod uid on every point");
        let (_, id, pod) = pods.iter().find(|(u, _, _)| u == uid).unwrap();
        assert_eq!(p.attr("container.id"), Some(id.as_str()));
        assert_eq!(p.attr("k8s.pod.name"), Some(pod.as_str()));
        assert_eq!(p.attr("k8s.container.name"), Some("app"));
    }
    let identity = [
        "container.id",
        "container.name",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.pod.uid",
        "k8s.container.name",
        "systemd.unit",
        "systemd.slice",
    ];
    let key = |p: &MetricPoint, with_identity: bool| -> String {
        let mut a: Vec<String> = p
            .attributes
            .iter()
            .filter(|(k, _)| with_identity || !identity.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        a.sort();
        format!("{} {}", p.name, a.join(","))
    };
    let count = |with: bool| {
        mine.iter()
            .map(|p| key(p, with))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let (before, after) = (count(false), count(true));
    eprintln!(
        "cardinality: {K} short-lived pods of one program: {before} series without identity, \
         {after} with it ({:.1} per pod)",
        after as f64 / K as f64
    );
    assert!(after > before && after <= before * K, "{before} -> {after}");
    let _ = fs::remove_dir_all(&logs_root);
}

/// Every program that keeps names and identity true attaches on this kernel
/// (each is optional to the agent, which only warns without one: this is
/// where a kernel that refuses one shows).
#[test]
fn identity_programs_attach() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start();
    let agent = Agent::exporting_to(&rx, &[]);
    let log = agent.stderr();
    assert!(
        log.contains(r#"identity programs attached hooks=["task_rename", "sched_process_exec", "cgroup_mkdir"]"#),
        "{log}"
    );
}

/// The live table shows a unit's process under the unit's name, and
/// `--filter systemd.unit=<unit>` leaves only that unit's rows.
#[test]
fn live_table_shows_the_unit_and_filters_by_it() {
    let Some(mount) = setup() else { return };
    let name = unique_name("tabunit");
    let unit = format!("{name}.service");
    let tree = Tree::new(&mount, &format!("syscope-{name}.slice"));
    let dir = tree.mkdir(&format!("shop.slice/{unit}"));
    let filter = format!("systemd.unit={unit}");
    let agent = Agent::start(
        &["--interval", "1s", "--filter", &filter, "--sort", "errors"],
        &[],
    );
    finish(run_in(&dir, &name, &["fail-open", "2000"]), &name);
    let deadline = std::time::Instant::now() + WAIT;
    let want = format!("{unit} ({name})");
    loop {
        let out = agent.stdout();
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| {
                !l.starts_with("syscope ") && !l.starts_with("WORKLOAD") && !l.starts_with('(')
            })
            .filter(|l| !l.starts_with("TCP:"))
            .collect();
        if let Some(row) = rows.iter().find(|l| l.contains("openat")) {
            // The table truncates the workload to 28 characters.
            let shown: String = want.chars().take(27).collect();
            assert!(row.starts_with(&shown), "{row:?} does not name {want}");
            // Nothing but the unit passes the filter (its processes: the
            // workload, and the test's fork child before its exec), and the
            // last table printed is sorted by error ratio (the last column).
            let in_unit = format!("{unit} (");
            assert!(rows.iter().all(|l| l.starts_with(&in_unit)), "{out}");
            let last = out.rsplit("WORKLOAD").next().unwrap();
            let ratios: Vec<f64> = last
                .lines()
                .filter(|l| l.starts_with(&in_unit))
                .filter_map(|l| l.split_whitespace().last()?.parse().ok())
                .collect();
            assert!(ratios.windows(2).all(|w| w[0] >= w[1]), "{ratios:?}\n{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no row for {want}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

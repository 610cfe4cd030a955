//! The shipped deployments (deploy/), checked the way users run them: the
//! Kubernetes manifests validate offline and grant only what the hooks
//! need; the image runs under podman with exactly the manifest's
//! capabilities and seccomp profile, exports to a real collector by host
//! name and flushes on `podman stop`; the systemd unit verifies and its
//! privileges suffice (non-root user, two ambient capabilities, sd_notify);
//! the .deb installs the right files with the right modes; /readyz follows
//! the collector.
//!
//! Needs root for the kernel and for podman/dpkg; without it (or without
//! podman) each test says why it skipped. `cargo xtask test` builds the image
//! and the .deb once and passes them in SYSCOPE_IMAGE and SYSCOPE_DEB; run
//! alone, this file builds them itself (once) with `cargo xtask`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{agent_bin, require_root, Agent};
use syscope_tests::{
    free_port, run_named, select, unique_name, workspace_root, MetricPoint, Receiver,
};

const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ helpers

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = workspace_root().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok_stdout(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("syscope-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn errors_of(points: &[MetricPoint], exe: &str) -> Option<f64> {
    select(
        points,
        "syscall.errors",
        &[
            ("process.executable.name", exe),
            ("syscall.name", "openat"),
            ("error.type", "ENOENT"),
        ],
    )
    .filter_map(|p| p.number())
    .last()
}

/// Refused connects of `exe`: the shipped configuration's default probe
/// sets measure TCP for every process (syscalls on demand).
fn refused_of(points: &[MetricPoint], exe: &str) -> Option<f64> {
    select(
        points,
        "tcp.connect.errors",
        &[
            ("process.executable.name", exe),
            ("error.type", "ECONNREFUSED"),
        ],
    )
    .filter_map(|p| p.number())
    .last()
}

/// GET `path` on 127.0.0.1:`port`: (status, body), or None if nobody answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.get(9..12)?.parse().ok()?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((code, body))
}

/// Polls /readyz until `want` holds; returns the body that satisfied it.
fn wait_ready(port: u16, what: &str, mut want: impl FnMut(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some((code, body)) = http_get(port, "/readyz") {
            if want(code, &body) {
                return body;
            }
            last = Some((code, body));
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never became {what}; last answer {last:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A JSON number field of a flat-enough body, e.g. `"failing_for_seconds":2.5`.
fn json_number(body: &str, key: &str) -> Option<f64> {
    let rest = body.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// --------------------------------------------------------- the manifests

/// What the tests need from deploy/kubernetes, read with PyYAML (shipped
/// with kubernetes-validate in the venv) from the kustomize output, so that
/// the podman run below uses exactly what a cluster would.
struct Manifest {
    facts: BTreeMap<String, String>,
    /// The ConfigMap's syscope.toml.
    config_toml: String,
}

const FACTS_PY: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
ds = kinds["DaemonSet"]
pod = ds["spec"]["template"]["spec"]
(c,) = pod["containers"]
sc = c["securityContext"]
out = {}
out["kinds"] = ",".join(sorted(kinds))
out["namespace"] = ",".join(sorted({d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs}))
out["cap_add"] = ",".join(sc["capabilities"]["add"])
out["cap_drop"] = ",".join(sc["capabilities"]["drop"])
for k in ["privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsUser"]:
    out[k] = str(sc.get(k))
for k in ["hostPID", "hostNetwork", "hostIPC", "automountServiceAccountToken"]:
    out[k] = str(pod.get(k))
sp = sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile")
out["seccomp"] = "%s:%s" % (sp["type"], sp.get("localhostProfile", ""))
out["args"] = " ".join(c.get("args", []))
out["image"] = c["image"]
vols = {v["name"]: v for v in pod["volumes"]}
mounts = []
for m in c["volumeMounts"]:
    v = vols[m["name"]]
    src = v["hostPath"]["path"] if "hostPath" in v else "configMap:" + v["configMap"]["name"]
    mounts.append("%s=%s:%s" % (src, m["mountPath"], "ro" if m.get("readOnly") else "rw"))
out["mounts"] = " ".join(mounts)
for e in c["env"]:
    if "value" in e:
        out["env." + e["name"]] = e["value"]
    else:
        out["env." + e["name"]] = "fieldRef:" + e["valueFrom"]["fieldRef"]["fieldPath"]
port = {p["name"]: p["containerPort"] for p in c["ports"]}
for probe in ["livenessProbe", "readinessProbe"]:
    g = c[probe]["httpGet"]
    out[probe] = "%s:%s" % (g["path"], port.get(g["port"], g["port"]))
r = c["resources"]
out["resources"] = "requests=%s limits=%s" % (sorted(r.get("requests", {})), sorted(r.get("limits", {})))
out["memory_limit"] = r["limits"]["memory"]
out["tolerations"] = ",".join(t.get("operator", "") + ":" + t.get("key", "") for t in pod.get("tolerations", []))
for k, v in sorted(out.items()):
    print("%s\t%s" % (k, v))
print("config_toml\t" + kinds["ConfigMap"]["data"]["syscope.toml"].encode().hex())
"#;

/// The rendered manifests: `kubectl kustomize deploy/kubernetes` when
/// kubectl is installed (setup installs it), else the files concatenated.
fn rendered_manifests() -> String {
    let dir = deploy_dir().join("kubernetes");
    if have("kubectl") {
        return ok_stdout(Command::new("kubectl").arg("kustomize").arg(&dir));
    }
    eprintln!("kubectl not installed: validating the files without kustomize");
    ["namespace", "serviceaccount", "configmap", "daemonset"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(format!("{f}.yaml"))).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        let dir = temp_dir("manifest");
        let path = dir.join("rendered.yaml");
        std::fs::write(&path, rendered_manifests()).unwrap();
        let text = ok_stdout(
            Command::new(venv_bin("python"))
                .args(["-c", FACTS_PY])
                .arg(&path),
        );
        let mut facts: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let hex = facts.remove("config_toml").expect("ConfigMap syscope.toml");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        Manifest {
            facts,
            config_toml: String::from_utf8(bytes).unwrap(),
        }
    })
}

impl Manifest {
    fn get(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .unwrap_or_else(|| panic!("manifest fact {key} missing: {:?}", self.facts))
    }

    /// The added capabilities, lowercase, as podman takes them.
    fn caps(&self) -> Vec<String> {
        self.get("cap_add")
            .split(',')
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// (host path, container path) of the read-only host mounts.
    fn host_mounts(&self) -> Vec<(String, String)> {
        self.get("mounts")
            .split(' ')
            .filter(|m| !m.starts_with("configMap:"))
            .map(|m| {
                let (src, rest) = m.split_once('=').unwrap();
                let (dst, mode) = rest.rsplit_once(':').unwrap();
                assert_eq!(mode, "ro", "host mount {m} must be read-only");
                (src.to_owned(), dst.to_owned())
            })
            .collect()
    }
}

#[test]
fn kubernetes_manifests_validate_offline() {
    let validate = venv_bin("kubernetes-validate");
    let dir = temp_dir("validate");
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, rendered_manifests()).unwrap();
    let files = ["namespace", "serviceaccount", "configmap", "daemonset"]
        .map(|f| deploy_dir().join(format!("kubernetes/{f}.yaml")));
    // The oldest and the newest schema the validator ships that matter here.
    for version in ["1.30.0", "1.37.0"] {
        let out = ok_stdout(
            Command::new(&validate)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&rendered)
                .args(&files),
        );
        assert_eq!(
            out.matches("passed for resource").count(),
            8,
            "expected 4 resources, twice:\n{out}"
        );
    }
    // And the validator is not a rubber stamp: a misspelt field fails.
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(&files[3]).unwrap();
    std::fs::write(
        &bad,
        text.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
    )
    .unwrap();
    let out = run(Command::new(&validate).arg("--strict").arg(&bad));
    assert!(!out.status.success(), "misspelt field accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubernetes_pod_gets_only_what_the_hooks_need() {
    let m = manifest();
    assert_eq!(
        m.get("kinds"),
        "ConfigMap,DaemonSet,Namespace,ServiceAccount"
    );
    assert_eq!(m.get("namespace"), "syscope");
    assert_eq!(m.get("cap_drop"), "ALL");
    assert_eq!(m.get("cap_add"), "BPF,PERFMON");
    assert_eq!(m.get("privileged"), "False");
    assert_eq!(m.get("allowPrivilegeEscalation"), "False");
    assert_eq!(m.get("readOnlyRootFilesystem"), "True");
    for host in ["hostPID", "hostNetwork", "hostIPC"] {
        assert_ne!(m.get(host), "True", "{host}");
    }
    assert_eq!(m.get("automountServiceAccountToken"), "False");
    assert_eq!(m.get("seccomp"), "Localhost:syscope.json");
    assert!(deploy_dir().join("seccomp/syscope.json").is_file());
    let mounts: Vec<String> = m
        .host_mounts()
        .into_iter()
        .map(|(src, dst)| format!("{src}->{dst}"))
        .collect();
    assert_eq!(
        mounts,
        [
            "/sys/kernel/btf->/sys/kernel/btf",
            "/sys/fs/cgroup->/sys/fs/cgroup",
            "/sys/kernel/tracing->/sys/kernel/tracing",
            "/var/log/pods->/var/log/pods",
            "/var/log/containers->/var/log/containers",
        ]
    );
    assert_eq!(m.get("livenessProbe"), "/healthz:9479");
    assert_eq!(m.get("readinessProbe"), "/readyz:9479");
    assert!(m.config_toml.contains("address = \"0.0.0.0:9479\""));
    assert_eq!(
        m.get("resources"),
        "requests=['cpu', 'memory'] limits=['cpu', 'memory']"
    );
    assert_eq!(m.get("tolerations"), "Exists:");
    assert_eq!(
        m.get("env.OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://otel-collector.observability.svc:4317"
    );
    assert_eq!(m.get("env.K8S_NODE_NAME"), "fieldRef:spec.nodeName");
    assert_eq!(m.get("env.K8S_POD_NAME"), "fieldRef:metadata.name");
    assert_eq!(m.get("env.K8S_POD_UID"), "fieldRef:metadata.uid");
    assert_eq!(
        m.get("env.K8S_NAMESPACE_NAME"),
        "fieldRef:metadata.namespace"
    );
    // The resource is the node; the agent's own pod is on its self-metrics
    // only, never on the resource every workload's series share.
    let attrs = m.get("env.OTEL_RESOURCE_ATTRIBUTES");
    assert_eq!(
        attrs,
        "host.name=$(K8S_NODE_NAME),k8s.node.name=$(K8S_NODE_NAME)"
    );
    let own = m.get("env.SYSCOPE_SELF_ATTRIBUTES");
    for attr in [
        "k8s.pod.name=$(K8S_POD_NAME)",
        "k8s.pod.uid=$(K8S_POD_UID)",
        "k8s.namespace.name=$(K8S_NAMESPACE_NAME)",
    ] {
        assert!(own.contains(attr), "{attr} missing from {own}");
    }
    // The ConfigMap parses as the agent's configuration.
    let dir = temp_dir("configmap");
    let path = dir.join("syscope.toml");
    std::fs::write(&path, &m.config_toml).unwrap();
    let printed = ok_stdout(
        Command::new(agent_bin())
            .arg("--print-config")
            .arg("--config")
            .arg(&path),
    );
    assert!(printed.contains("address = \"0.0.0.0:9479\""), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ----------------------------------------------------------- the image

/// Why container tests cannot run here, if they cannot.
fn container_skip_reason() -> Option<&'static str> {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (podman, CAP_BPF, CAP_PERFMON)");
    }
    if !have("podman") {
        return Some("podman is not installed: run `cargo xtask setup`");
    }
    None
}

/// The image under test: `$SYSCOPE_IMAGE`, else built once with
/// `cargo xtask image`.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(name) = std::env::var("SYSCOPE_IMAGE") {
            return name;
        }
        cargo_xtask("image");
        format!("localhost/syscope:{}", env!("CARGO_PKG_VERSION"))
    })
}

fn cargo_xtask(task: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["xtask", task])
        .status()
        .expect("cargo xtask");
    assert!(st.success(), "cargo xtask {task} failed");
}

/// A test-private containers.conf: runc (crun fails on hybrid cgroup
/// hosts) and no default ulimits (setrlimit is refused in some VMs).
fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("syscope-podman-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("containers.conf");
        std::fs::write(
            &path,
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        path
    })
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", containers_conf());
    c
}

/// Removes the container (if still there) when the test ends, passing or not.
struct ContainerName(String);

impl Drop for ContainerName {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `podman run` with the manifest's security settings. `caps` replaces the
/// manifest's added capabilities; `seccomp` false leaves podman's default
/// profile in place. Kubernetes-only parts differ on purpose: host network
/// (the collector runs on the host) with the health endpoint on loopback.
fn podman_run(
    name: &str,
    caps: &[String],
    seccomp: bool,
    config_dir: &Path,
    env: &[(&str, String)],
) -> Command {
    let m = manifest();
    let mut c = podman();
    c.args(["run", "--rm", "--name", name])
        .args(["--cap-drop=all", &format!("--cap-add={}", caps.join(","))])
        .args(["--security-opt", "no-new-privileges"])
        .args(["--read-only", "--user", "0:0"])
        .args(["--memory", &podman_size(m.get("memory_limit"))])
        .args(["--network=host", "--add-host", "collector:127.0.0.1"]);
    if seccomp {
        assert_eq!(m.get("seccomp"), "Localhost:syscope.json");
        let profile = deploy_dir().join("seccomp/syscope.json");
        c.arg("--security-opt")
            .arg(format!("seccomp={}", profile.display()));
    }
    for (src, dst) in m.host_mounts() {
        // A node without the kubelet's log tree (this test host) gets an
        // empty directory in its place, as a node with no pods would have.
        let src = if std::path::Path::new(&src).exists() {
            src.to_string()
        } else {
            let empty = std::env::temp_dir().join("syscope-deploy-empty");
            std::fs::create_dir_all(&empty).unwrap();
            empty.display().to_string()
        };
        c.args(["-v", &format!("{src}:{dst}:ro")]);
    }
    c.arg("-v")
        .arg(format!("{}:/etc/syscope:ro", config_dir.display()));
    for (k, v) in env {
        c.args(["-e", &format!("{k}={v}")]);
    }
    c.arg(image());
    c.args(m.get("args").split(' '));
    c
}

/// A Kubernetes quantity ("256Mi") as podman takes it ("256m").
fn podman_size(quantity: &str) -> String {
    match quantity.strip_suffix("Mi") {
        Some(n) => format!("{n}m"),
        None => match quantity.strip_suffix("Gi") {
            Some(n) => format!("{n}g"),
            None => panic!("unexpected memory quantity {quantity}"),
        },
    }
}

/// The pod's environment with the downward API filled in as the kubelet
/// would, and the collector Service replaced by rotel on the host.
fn pod_env(m: &Manifest, endpoint: String, health_port: u16) -> Vec<(&'static str, String)> {
    let downward = [
        ("K8S_NODE_NAME", "node-a"),
        ("K8S_POD_NAME", "syscope-x7k2p"),
        ("K8S_POD_UID", "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"),
        ("K8S_NAMESPACE_NAME", "syscope"),
    ];
    let expand = |var: &str| {
        let mut text = m.get(var).to_owned();
        for (k, v) in downward {
            text = text.replace(&format!("$({k})"), v);
        }
        assert!(!text.contains("$("), "unexpanded reference in {text}");
        text
    };
    vec![
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            expand("env.OTEL_RESOURCE_ATTRIBUTES"),
        ),
        (
            "SYSCOPE_SELF_ATTRIBUTES",
            expand("env.SYSCOPE_SELF_ATTRIBUTES"),
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("SYSCOPE_HEALTH_ADDRESS", format!("127.0.0.1:{health_port}")),
    ]
}

/// The image runs with exactly the manifest's capabilities and seccomp
/// profile, resolves the collector's host name, attaches, answers /readyz,
/// and on `podman stop` exports the last interval before exiting 0. The
/// ConfigMap's 60 s interval means that last export is the only one.
#[test]
fn container_with_manifest_privileges_exports_and_flushes_on_stop() {
    if let Some(why) = container_skip_reason() {
        common::skip(why);
        return;
    }
    let m = manifest();
    let image = image();
    let size: u64 = ok_stdout(podman().args(["image", "inspect", "--format", "{{.Size}}", image]))
        .trim()
        .parse()
        .unwrap();
    eprintln!("image {image}: {:.1} MiB", size as f64 / 1048576.0);
    assert!(size < 32 << 20, "image is {size} bytes");

    let rx = Receiver::start();
    let config = temp_dir("container");
    std::fs::write(config.join("syscope.toml"), &m.config_toml).unwrap();
    let health = free_port();
    let name = format!("syscope-test-{}", std::process::id());
    let _guard = ContainerName(name.clone());
    let endpoint = format!("http://collector:{}", rx.grpc_port());
    let cmd = podman_run(
        &name,
        &m.caps(),
        true,
        &config,
        &pod_env(m, endpoint, health),
    );
    let mut agent = Agent::spawn(cmd, &[]);
    agent.wait_attached();
    let body = wait_ready(health, "ready", |code, _| code == 200);
    // The shipped configuration's default: TCP for every process, no
    // syscall program (nothing is selected on demand).
    assert!(body.contains("\"hook\":\"tcp\""), "{body}");
    assert!(body.contains("\"enabled\":true"), "{body}");

    let exe = unique_name("podstop");
    run_named(&exe, &["tcp-refused", "23"]);
    // Nothing is sent before the 60 s interval ends...
    thread::sleep(Duration::from_millis(500));
    assert_eq!(refused_of(&rx.points(), &exe), None);
    // ...so what arrives after `podman stop` is the shutdown flush.
    ok_stdout(podman().args(["stop", "-t", "20", &name]));
    let status = agent.wait_exit();
    let logs = agent.stderr();
    assert!(status.success(), "exit {status}:\n{logs}");
    assert!(logs.contains("SIGTERM: shutting down"), "{logs}");
    assert!(logs.contains("everything delivered"), "{logs}");
    let points = rx.wait_for(WAIT, |p| refused_of(p, &exe) == Some(23.0));
    let by_exe = [("process.executable.name", exe.as_str())];
    let p = select(&points, "tcp.connect.errors", &by_exe)
        .next()
        .unwrap();
    for (k, v) in [
        ("k8s.node.name", "node-a"),
        ("host.name", "node-a"),
        ("service.name", "syscope"),
    ] {
        assert_eq!(
            p.resource.get(k).map(String::as_str),
            Some(v),
            "{k}: {:?}",
            p.resource
        );
    }
    // The agent's own pod is not the workloads' resource.
    for k in ["k8s.pod.name", "k8s.pod.uid", "k8s.namespace.name"] {
        assert_eq!(p.resource.get(k), None, "{k}: {:?}", p.resource);
    }
    let _ = std::fs::remove_dir_all(&config);
}

/// Without one of the manifest's capabilities the agent exits non-zero
/// naming it; with both but podman's default seccomp profile (what
/// RuntimeDefault gives on many runtimes) it names seccomp, which is why
/// the manifest ships its own profile.
#[test]
fn container_without_a_capability_or_the_profile_fails_naming_it() {
    if let Some(why) = container_skip_reason() {
        common::skip(why);
        return;
    }
    let m = manifest();
    let config = temp_dir("nocap");
    std::fs::write(config.join("syscope.toml"), &m.config_toml).unwrap();
    let env = pod_env(m, "http://collector:4317".into(), free_port());
    let all = m.caps();
    let mut cases: Vec<(Vec<String>, bool, String)> = all
        .iter()
        .map(|cap| {
            let rest: Vec<String> = all.iter().filter(|c| *c != cap).cloned().collect();
            let msg = format!("missing capabilities: CAP_{}", cap.to_ascii_uppercase());
            (rest, true, msg)
        })
        .collect();
    cases.push((all.clone(), false, "seccomp".into()));
    for (i, (caps, seccomp, want)) in cases.into_iter().enumerate() {
        let name = format!("syscope-test-{}-nocap{i}", std::process::id());
        let _guard = ContainerName(name.clone());
        let cmd = podman_run(&name, &caps, seccomp, &config, &env);
        // Spawned, not waited for blindly: an agent that does start would
        // run forever.
        let mut agent = Agent::spawn(cmd, &[]);
        let deadline = Instant::now() + WAIT;
        while agent.is_running() {
            assert!(
                !agent.stderr().contains("probes attached") && Instant::now() < deadline,
                "caps {caps:?} seccomp {seccomp}: started:\n{}",
                agent.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
        let status = agent.wait_exit();
        let err = agent.stderr();
        assert!(!status.success(), "caps {caps:?} seccomp {seccomp}:\n{err}");
        assert!(
            err.contains(&want),
            "caps {caps:?} seccomp {seccomp}: no {want:?}:\n{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&config);
}

// ----------------------------------------------------------- the health endpoint

/// /readyz: not ready while the collector has been unreachable for longer
/// than health.max_export_failure, ready again once it is back, twice
/// (collector started late; then stopped and restarted on the same port).
/// Never 200 without attached programs.
#[test]
fn readiness_follows_the_collector() {
    if !require_root() {
        return;
    }
    let [grpc, http] = syscope_tests::free_ports::<2>();
    let health = free_port();
    let dir = temp_dir("readyz");
    let config = dir.join("syscope.toml");
    std::fs::write(
        &config,
        "[export]\nmax_backoff = \"200ms\"\n\n[health]\nmax_export_failure = \"2s\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--endpoint", &format!("http://127.0.0.1:{grpc}")])
        .args(["--interval", "500ms"])
        .args(["--health-address", &format!("127.0.0.1:{health}")]);
    let agent = Agent::spawn(cmd, &[]);
    // From the first answer on: 200 only with programs attached.
    let mut starting = 0;
    let failing = wait_ready(health, "not ready (export failing)", |code, body| {
        assert!(
            code == 503 || body.contains("\"attached\":true"),
            "{code} {body}"
        );
        starting += usize::from(body.contains("\"status\":\"starting\""));
        code == 503 && body.contains("\"status\":\"export_failing\"")
    });
    eprintln!("answers while starting: {starting}");
    assert!(agent.stderr().contains("probes attached"));
    assert!(
        json_number(&failing, "failing_for_seconds").unwrap() >= 2.0,
        "{failing}"
    );
    assert!(failing.contains("\"attached\":true"), "{failing}");

    for round in 0..2 {
        let rx = Receiver::start_on(grpc, http);
        let ready = wait_ready(health, "ready", |code, _| code == 200);
        assert!(ready.contains("\"failing_for_seconds\":null"), "{ready}");
        assert!(
            json_number(&ready, "last_success_age_seconds").is_some(),
            "{ready}"
        );
        drop(rx);
        if round == 0 {
            let body = wait_ready(health, "not ready again", |code, _| code == 503);
            assert!(body.contains("export_failing"), "{body}");
        }
    }
    assert!(agent.is_running(), "{}", agent.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Health settings fail like every other setting: status 2 naming the
/// flag, variable or key; a taken address stops the agent before it loads
/// anything, naming health.address.
#[test]
fn health_settings_fail_naming_the_key() {
    let syscope = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(agent_bin());
        c.args(args).env_remove("SYSCOPE_HEALTH_ADDRESS");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(&mut c);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = syscope(&["--health-address", "localhost:80"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--health-address") && err.contains("localhost:80"),
        "{err}"
    );
    let (code, err) = syscope(&[], &[("SYSCOPE_HEALTH_ADDRESS", "9479")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("SYSCOPE_HEALTH_ADDRESS"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = syscope(&["--health-address", &addr], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("health.address") && err.contains(&addr),
        "{err}"
    );
}

// ----------------------------------------------------------- systemd

fn unit_text() -> String {
    std::fs::read_to_string(deploy_dir().join("systemd/syscope.service")).unwrap()
}

/// The values of `key=` in the unit (every assignment, in order).
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_verifies_and_keeps_its_security_score() {
    if !have("systemd-analyze") {
        common::skip("systemd-analyze is not installed");
        return;
    }
    let dir = temp_dir("unit");
    // verify checks that ExecStart's binary exists: point it at the build.
    let unit = dir.join("syscope.service");
    let text = unit_text();
    assert!(text.contains("ExecStart=/usr/bin/syscope "));
    std::fs::write(
        &unit,
        text.replace(
            "ExecStart=/usr/bin/syscope ",
            &format!("ExecStart={} ", agent_bin().display()),
        ),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    let err = String::from_utf8_lossy(&out.stderr);
    // Unknown keys are only warned about: any output is a failure here.
    assert!(out.status.success() && err.trim().is_empty(), "{err}");

    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for syscope.service: ")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("systemd-analyze security: {score}");
    // The figure in the README; lower is better.
    assert!(score <= 1.6, "exposure {score} > 1.6:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit's privileges suffice: run the agent the way systemd would
/// (setpriv: an unprivileged uid as with DynamicUser=, the unit's bounding
/// and ambient capabilities, no_new_privs) with the shipped config file,
/// and check sd_notify: READY=1 after attach, WATCHDOG=1 at half of
/// WATCHDOG_USEC, STOPPING=1 on SIGTERM, over an abstract socket.
#[test]
fn systemd_unit_privileges_suffice_and_notify_works() {
    if !require_root() {
        return;
    }
    let text = unit_text();
    assert_eq!(unit_values(&text, "DynamicUser"), ["yes"]);
    assert_eq!(unit_values(&text, "NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values(&text, "Type"), ["notify"]);
    let bounding = unit_values(&text, "CapabilityBoundingSet").join(" ");
    let ambient = unit_values(&text, "AmbientCapabilities").join(" ");
    assert_eq!(bounding, ambient);
    // CAP_BPF -> +bpf, as setpriv wants them.
    let caps: Vec<String> = ambient
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert_eq!(caps, ["+bpf", "+perfmon"]);
    let caps = caps.join(",");
    let exec = unit_values(&text, "ExecStart").join("");
    // A world-readable copy of the binary and the config: the checkout may
    // sit below a directory the unprivileged uid cannot enter (/root).
    let dir = temp_dir("unitpriv");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("syscope");
    std::fs::copy(agent_bin(), &bin).unwrap();
    let config = dir.join("syscope.toml");
    std::fs::copy(deploy_dir().join("systemd/syscope.toml"), &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a == "/etc/syscope/syscope.toml" {
                config.display().to_string()
            } else {
                a.to_owned()
            }
        })
        .collect();

    let socket_name = format!("syscope-test-notify-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&socket_name).unwrap()).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let rx = Receiver::start();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=61999", "--regid=61999", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg("--no-new-privs")
        .arg(&bin)
        .args(&args)
        .args(["--interval", "1s", "--health-address", "off"]);
    let endpoint = rx.grpc_endpoint();
    let notify_socket = format!("@{socket_name}");
    let mut agent = Agent::spawn(
        cmd,
        &[
            // EnvironmentFile= semantics: the variable beats the file.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let recv = |agent: &Agent| {
        let mut buf = [0u8; 512];
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}):\n{}", agent.stderr()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&agent);
    assert!(first.starts_with("READY=1"), "{first}");
    agent.wait_attached();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    // CAP_PERFMON = 38, CAP_BPF = 39: exactly these, nothing else.
    assert_eq!(field("CapEff:"), (1 << 38) | (1 << 39), "{status}");
    assert_eq!(field("CapBnd:"), (1 << 38) | (1 << 39), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("61999")),
        "{status}"
    );

    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let msg = recv(&agent);
        assert_eq!(msg, "WATCHDOG=1");
        pings += 1;
    }
    // Half of WATCHDOG_USEC (1 s): two pings in about a second.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let exe = unique_name("unitpriv");
    run_named(&exe, &["fail-open", "11"]);
    rx.wait_for(WAIT, |p| errors_of(p, &exe) == Some(11.0));

    let st = agent.terminate();
    assert!(st.success(), "{st}:\n{}", agent.stderr());
    let stopping = loop {
        let msg = recv(&agent);
        if msg != "WATCHDOG=1" {
            break msg;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ----------------------------------------------------------- the .deb

fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(p) = std::env::var_os("SYSCOPE_DEB") {
            return PathBuf::from(p);
        }
        cargo_xtask("deb");
        let dir = workspace_root().join("target/deb");
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.to_string_lossy()
                        .contains(&format!("syscope_{}-", env!("CARGO_PKG_VERSION")))
            })
            .expect("cargo xtask deb made no package")
    })
}

#[test]
fn deb_has_the_right_files_modes_and_conffiles() {
    if !have("dpkg-deb") {
        common::skip("dpkg-deb is not installed (not a Debian system)");
        return;
    }
    let deb = deb();
    let info = ok_stdout(Command::new("dpkg-deb").arg("--info").arg(deb));
    assert!(info.contains(" Package: syscope\n"), "{info}");
    assert!(
        info.contains(&format!(" Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains(" Depends: libc6 (>= "), "{info}");
    let conffiles = ok_stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    );
    assert_eq!(
        conffiles,
        "/etc/syscope/syscope.toml\n/etc/syscope/syscope.env\n"
    );
    let contents = ok_stdout(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let listed: BTreeMap<&str, (&str, &str)> = contents
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.last()?, (*f.first()?, *f.get(1)?)))
        })
        .collect();
    for (path, mode) in [
        ("./usr/bin/syscope", "-rwxr-xr-x"),
        ("./lib/systemd/system/syscope.service", "-rw-r--r--"),
        ("./etc/syscope/syscope.toml", "-rw-r--r--"),
        ("./etc/syscope/syscope.env", "-rw-------"),
        ("./usr/share/doc/syscope/README.md", "-rw-r--r--"),
        ("./usr/share/doc/syscope/copyright", "-rw-r--r--"),
        ("./usr/share/doc/syscope/syscope.example.toml", "-rw-r--r--"),
    ] {
        assert_eq!(
            listed.get(path),
            Some(&(mode, "root/root")),
            "{path}:\n{contents}"
        );
    }
    let size = std::fs::metadata(deb).unwrap().len();
    eprintln!("{}: {:.1} MiB", deb.display(), size as f64 / 1048576.0);
}

/// `dpkg --root` into a throwaway root: files land with their modes, the
/// installed binary accepts the shipped config, conffiles are registered,
/// and purge removes everything.
#[test]
fn deb_installs_and_purges_in_a_throwaway_root() {
    if !require_root() {
        return;
    }
    if !have("dpkg") {
        common::skip("dpkg is not installed (not a Debian system)");
        return;
    }
    let deb = deb();
    let root = temp_dir("dpkgroot");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    let dpkg = || {
        let mut c = Command::new("dpkg");
        // Scripts run outside the chroot with DPKG_ROOT set (they then
        // leave the host's systemd alone); libc6 is not in this root.
        c.arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends"]);
        c
    };
    ok_stdout(dpkg().arg("-i").arg(deb));
    let mode = |p: &str| {
        let m = std::fs::metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!((m.uid(), m.gid()), (0, 0), "{p}");
        m.permissions().mode() & 0o7777
    };
    assert_eq!(mode("usr/bin/syscope"), 0o755);
    assert_eq!(mode("etc/syscope/syscope.env"), 0o600);
    assert_eq!(mode("etc/syscope/syscope.toml"), 0o644);
    assert_eq!(mode("lib/systemd/system/syscope.service"), 0o644);
    assert_eq!(
        std::fs::read_to_string(root.join("lib/systemd/system/syscope.service")).unwrap(),
        unit_text()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/doc/syscope/syscope.example.toml")).unwrap(),
        std::fs::read_to_string(workspace_root().join("docs/syscope.example.toml")).unwrap()
    );
    // The packaged binary runs and accepts the packaged configuration.
    let printed = ok_stdout(
        Command::new(root.join("usr/bin/syscope"))
            .arg("--print-config")
            .arg("--config")
            .arg(root.join("etc/syscope/syscope.toml")),
    );
    assert!(
        printed.contains("endpoint = \"http://localhost:4317\""),
        "{printed}"
    );
    assert!(
        printed.contains("address = \"127.0.0.1:9479\""),
        "{printed}"
    );
    let registered = ok_stdout(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args(["-W", "-f=${Status}|${Conffiles}", "syscope"]),
    );
    assert!(
        registered.starts_with("install ok installed|"),
        "{registered}"
    );
    assert!(
        registered.contains("/etc/syscope/syscope.env "),
        "{registered}"
    );
    assert!(
        registered.contains("/etc/syscope/syscope.toml "),
        "{registered}"
    );

    ok_stdout(dpkg().args(["--purge", "syscope"]));
    for gone in [
        "usr/bin/syscope",
        "etc/syscope",
        "lib/systemd/system/syscope.service",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    let _ = std::fs::remove_dir_all(&root);
}

//! Whose a cgroup is: container, Kubernetes pod and container, systemd
//! unit, from the node alone.
//!
//! The cgroup path gives the ids (container id, pod uid) and the systemd
//! unit; names come from what the kubelet and the container runtimes leave
//! readable on disk: the kubelet's pod log tree (`/var/log/pods/<namespace>_
//! <pod>_<uid>/`) and container log links (`/var/log/containers/<pod>_
//! <namespace>_<container>-<id>.log`), podman's container store and
//! docker's container configs. No runtime socket, no API token.
//!
//! Paths and directory listings are input: every length is bounded, every
//! name is checked against the syntax its source allows, and anything that
//! does not fit is left unknown rather than guessed.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Longest cgroup path parsed (the kernel's own trace buffer is 1024).
pub const MAX_PATH: usize = 4096;
/// Directory entries read per listing, so a huge log directory costs a
/// bounded walk.
pub const MAX_DIR_ENTRIES: usize = 100_000;
/// Largest runtime metadata file read (podman's containers.json grows with
/// the containers on the host).
pub const MAX_FILE: u64 = 64 << 20;

/// Where the node-local sources are; defaults are the kubelet's and the
/// runtimes' own locations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// The kubelet's pod log tree.
    pub pod_logs: PathBuf,
    /// The kubelet's container log links.
    pub container_logs: PathBuf,
    /// podman's (containers/storage) graph root.
    pub podman_storage: PathBuf,
    /// docker's data root.
    pub docker_root: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            pod_logs: "/var/log/pods".into(),
            container_logs: "/var/log/containers".into(),
            podman_storage: "/var/lib/containers/storage".into(),
            docker_root: "/var/lib/docker".into(),
        }
    }
}

/// Which runtime's naming a container cgroup follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    /// A bare 64-hex directory (cgroupfs drivers): the runtime is not named.
    Unknown,
}

/// What the path alone says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathIds {
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// Pod uid in its API form (dashes), under a `kubepods` subtree only.
    pub pod_uid: Option<String>,
    /// Innermost systemd unit (`nginx.service`, `session-3.scope`) outside
    /// containers and pods.
    pub systemd_unit: Option<String>,
    /// The slice that holds it (`shop.slice`).
    pub systemd_slice: Option<String>,
}

/// The identity attributes of one cgroup; each `None` when not knowable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub container_id: Option<Arc<str>>,
    pub container_name: Option<Arc<str>>,
    pub k8s_namespace: Option<Arc<str>>,
    pub k8s_pod_name: Option<Arc<str>>,
    pub k8s_pod_uid: Option<Arc<str>>,
    pub k8s_container_name: Option<Arc<str>>,
    pub systemd_unit: Option<Arc<str>>,
    pub systemd_slice: Option<Arc<str>>,
}

impl Identity {
    /// Whether a name the path promises is still missing (the runtime or
    /// the kubelet may write it a moment after the cgroup appears).
    pub fn incomplete(&self, ids: &PathIds) -> bool {
        let pod_missing = ids.pod_uid.is_some()
            && (self.k8s_pod_name.is_none()
                || (ids.container_id.is_some() && self.k8s_container_name.is_none()));
        let name_missing = matches!(ids.runtime, Some(Runtime::Docker | Runtime::Podman))
            && self.container_name.is_none();
        pod_missing || name_missing
    }

    /// The best short name for a person: pod/container, container name,
    /// unit; `None` for a plain process.
    pub fn display(&self) -> Option<String> {
        match (&self.k8s_pod_name, &self.k8s_container_name) {
            (Some(p), Some(c)) => return Some(format!("{p}/{c}")),
            (Some(p), None) => return Some(p.to_string()),
            _ => {}
        }
        if let Some(n) = &self.container_name {
            return Some(n.to_string());
        }
        if let Some(id) = &self.container_id {
            return Some(id[..id.len().min(12)].to_string());
        }
        self.systemd_unit.as_deref().map(str::to_string)
    }
}

/// Resolves the names of a cgroup path from `sources`.
pub fn resolve(path: &str, sources: &Sources) -> (PathIds, Identity) {
    let ids = parse_path(path);
    let mut out = Identity {
        container_id: ids.container_id.as_deref().map(Arc::from),
        k8s_pod_uid: ids.pod_uid.as_deref().map(Arc::from),
        systemd_unit: ids.systemd_unit.as_deref().map(Arc::from),
        systemd_slice: ids.systemd_slice.as_deref().map(Arc::from),
        ..Identity::default()
    };
    if let Some(uid) = &ids.pod_uid {
        if let Some((ns, pod)) = k8s_pod(&sources.pod_logs, uid) {
            if let Some(cid) = &ids.container_id {
                out.k8s_container_name =
                    k8s_container(&sources.container_logs, &ns, &pod, cid).map(Arc::from);
            }
            out.k8s_namespace = Some(ns.into());
            out.k8s_pod_name = Some(pod.into());
        }
    } else if let Some(cid) = &ids.container_id {
        out.container_name = match ids.runtime {
            Some(Runtime::Podman) => podman_name(&sources.podman_storage, cid),
            Some(Runtime::Docker) => docker_name(&sources.docker_root, cid),
            _ => None,
        }
        .map(Arc::from);
    }
    (ids, out)
}

/// Prefixes of per-container cgroup directories (systemd drivers name
/// them `<prefix><id>.scope`; cgroupfs drivers drop the `.scope`). Their
/// `-conmon-` siblings hold the runtime's monitor, not the container, and
/// do not match because what follows the prefix is then not a bare id.
const CONTAINER_PREFIXES: [(&str, Runtime); 4] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::Crio),
    ("libpod-", Runtime::Podman),
];

/// Unit suffixes of systemd's cgroup directories (slices hold units).
const UNIT_SUFFIXES: [&str; 6] = [
    ".service", ".scope", ".socket", ".mount", ".swap", ".device",
];

/// What a cgroup path says by itself. The innermost container wins, so
/// processes in sub-cgroups a container makes for itself (systemd inside a
/// container) still count as that container; a pod uid counts only under a
/// `kubepods` ancestor; a systemd unit only outside containers and pods.
pub fn parse_path(path: &str) -> PathIds {
    let mut ids = PathIds::default();
    if path.len() > MAX_PATH {
        return ids;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let container = segs
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| container_of_segment(s).map(|(id, rt)| (i, id, rt)));
    let kube = segs
        .iter()
        .position(|s| *s == "kubepods" || *s == "kubepods.slice");
    if let Some(k) = kube {
        // The pod segment is below kubepods and above the container.
        let end = container.map_or(segs.len(), |(i, _, _)| i);
        ids.pod_uid = segs
            .get(k + 1..end)
            .unwrap_or(&[])
            .iter()
            .find_map(|s| pod_uid_of_segment(s));
    }
    if let Some((_, id, rt)) = container {
        ids.container_id = Some(id.to_string());
        ids.runtime = Some(rt);
    }
    if container.is_none() && kube.is_none() {
        if let Some(u) = segs
            .iter()
            .rposition(|s| UNIT_SUFFIXES.iter().any(|x| unit_name(s, x)))
        {
            ids.systemd_unit = Some(segs[u].to_string());
            ids.systemd_slice = segs[..u]
                .iter()
                .rev()
                .find(|s| unit_name(s, ".slice"))
                .map(|s| s.to_string());
        }
    }
    ids
}

/// `s` is `<name><suffix>` with a non-empty name of the characters systemd
/// allows in unit names.
fn unit_name(s: &str, suffix: &str) -> bool {
    s.strip_suffix(suffix).is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 255
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    })
}

fn container_of_segment(segment: &str) -> Option<(&str, Runtime)> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    if is_container_id(name) {
        return Some((name, Runtime::Unknown));
    }
    CONTAINER_PREFIXES.iter().find_map(|(prefix, rt)| {
        name.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (id, *rt))
    })
}

/// 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod uid of a kubelet pod cgroup: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd driver). A uid is
/// a UUID, or 32 hex digits for static pods (a hash of the manifest).
fn pod_uid_of_segment(segment: &str) -> Option<String> {
    let raw = match segment.strip_suffix(".slice") {
        Some(unit) => unit.rsplit_once("-pod")?.1,
        None => segment.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

fn is_pod_uid(s: &str) -> bool {
    let hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [a] => hex(a, 32),
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        _ => false,
    }
}

/// A Kubernetes name: DNS subdomain characters (a label is a subset).
fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
}

/// Names of the entries of `dir`, at most [`MAX_DIR_ENTRIES`].
fn list(dir: &Path) -> impl Iterator<Item = String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
}

/// Namespace and pod name of pod `uid`, from its log directory
/// `<namespace>_<pod>_<uid>` (neither name can hold `_`).
pub fn k8s_pod(pod_logs: &Path, uid: &str) -> Option<(String, String)> {
    let suffix = format!("_{uid}");
    list(pod_logs).find_map(|name| {
        let rest = name.strip_suffix(&suffix)?;
        let (ns, pod) = rest.split_once('_')?;
        (is_k8s_name(ns) && is_k8s_name(pod)).then(|| (ns.to_string(), pod.to_string()))
    })
}

/// The container name of container `id` of pod `ns`/`pod`, from the
/// kubelet's link `<pod>_<ns>_<container>-<id>.log`.
pub fn k8s_container(container_logs: &Path, ns: &str, pod: &str, id: &str) -> Option<String> {
    let prefix = format!("{pod}_{ns}_");
    let suffix = format!("-{id}.log");
    list(container_logs).find_map(|name| {
        let c = name.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
        is_k8s_name(c).then(|| c.to_string())
    })
}

/// A file's text, if it is at most [`MAX_FILE`] bytes.
fn read_bounded(path: &Path) -> Option<String> {
    let f = fs::File::open(path).ok()?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= MAX_FILE).then_some(text)
}

/// A container name as the runtimes allow them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_container_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// podman's name for container `id`, from containers/storage's container
/// records (`overlay-containers/containers.json`, and
/// `volatile-containers.json` where `--rm` containers are kept).
pub fn podman_name(storage: &Path, id: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Record {
        id: String,
        #[serde(default)]
        names: Vec<String>,
    }
    ["containers.json", "volatile-containers.json"]
        .iter()
        .filter_map(|f| read_bounded(&storage.join("overlay-containers").join(f)))
        .filter_map(|text| serde_json::from_str::<Vec<Record>>(&text).ok())
        .flatten()
        .find(|r| r.id == id)
        .and_then(|r| r.names.into_iter().find(|n| is_container_name(n)))
}

/// docker's name for container `id` (`containers/<id>/config.v2.json`,
/// `"Name": "/<name>"`).
pub fn docker_name(root: &Path, id: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: String,
    }
    let text = read_bounded(&root.join("containers").join(id).join("config.v2.json"))?;
    let c: Config = serde_json::from_str(&text).ok()?;
    let name = c.name.strip_prefix('/').unwrap_or(&c.name);
    is_container_name(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f7c1b0e9a2d4c6b8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f";
    const UID: &str = "0b7c5c1a-4f2e-4d3b-9a8c-1e2f3a4b5c6d";
    const UID_: &str = "0b7c5c1a_4f2e_4d3b_9a8c_1e2f3a4b5c6d";

    #[test]
    fn kubelet_layouts() {
        let cases = [
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            // kind: the node is itself a container.
            format!("/system.slice/docker-{ID}.scope/kubepods/burstable/pod{UID}/{ID}"),
        ];
        for p in cases {
            let ids = parse_path(&p);
            assert_eq!(ids.pod_uid.as_deref(), Some(UID), "{p}");
            assert_eq!(ids.container_id.as_deref(), Some(ID), "{p}");
            assert_eq!(ids.systemd_unit, None, "{p}");
        }
        // The pod's own cgroup: a uid, no container.
        let ids = parse_path(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(ids.pod_uid.as_deref(), Some(UID));
        assert_eq!(ids.container_id, None);
        // Static pods: 32 hex digits.
        let ids = parse_path("/kubepods/pod0123456789abcdef0123456789abcdef/x");
        assert_eq!(
            ids.pod_uid.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn no_pod_outside_kubepods_or_malformed() {
        for p in [
            format!("/system.slice/pod{UID}/{ID}"),
            "/kubepods/podnot-a-uid/x".to_string(),
            format!("/kubepods/pod{}", &UID[1..]),
            format!("/kubepods/pod{}", UID.to_uppercase()),
        ] {
            assert_eq!(parse_path(&p).pod_uid, None, "{p}");
        }
    }

    #[test]
    fn systemd_units() {
        let ids = parse_path("/x.slice/demo.service");
        assert_eq!(ids.systemd_unit.as_deref(), Some("demo.service"));
        assert_eq!(ids.systemd_slice.as_deref(), Some("x.slice"));
        let ids = parse_path("/user.slice/user-0.slice/session-3.scope");
        assert_eq!(ids.systemd_unit.as_deref(), Some("session-3.scope"));
        assert_eq!(ids.systemd_slice.as_deref(), Some("user-0.slice"));
        // A delegated subtree: the unit above the sub-cgroup.
        let ids = parse_path("/system.slice/app.service/worker");
        assert_eq!(ids.systemd_unit.as_deref(), Some("app.service"));
        let ids = parse_path("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service");
        assert_eq!(ids.systemd_unit.as_deref(), Some("x.service"));
        assert_eq!(ids.systemd_slice.as_deref(), Some("app.slice"));
        for p in [
            "/",
            "",
            "/x.slice",
            "/.service",
            "/a b.service",
            "/plain/dir",
        ] {
            assert_eq!(parse_path(p).systemd_unit, None, "{p}");
        }
        // Containers are containers, not units.
        let ids = parse_path(&format!("/machine.slice/libpod-{ID}.scope"));
        assert_eq!(ids.systemd_unit, None);
        assert_eq!(ids.runtime, Some(Runtime::Podman));
        let ids = parse_path(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(ids.container_id, None);
        assert_eq!(
            ids.systemd_unit.as_deref(),
            Some(&*format!("libpod-conmon-{ID}.scope"))
        );
    }

    #[test]
    fn oversized_and_odd_paths_are_harmless() {
        assert_eq!(parse_path(&"/a".repeat(MAX_PATH)), PathIds::default());
        assert_eq!(parse_path("////"), PathIds::default());
        assert_eq!(parse_path("/kubepods.slice/-pod.slice"), PathIds::default());
        let junk: String = (0..3000u32)
            .map(|i| char::from_u32(i % 0x7f + 1).unwrap())
            .collect();
        let _ = parse_path(&junk);
    }

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let d = std::env::temp_dir().join(format!("syscope-id-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Tmp(d)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names_from_the_log_tree() {
        let t = Tmp::new("logs");
        let sources = Sources {
            pod_logs: t.0.join("pods"),
            container_logs: t.0.join("containers"),
            podman_storage: t.0.join("podman"),
            docker_root: t.0.join("docker"),
        };
        fs::create_dir_all(
            sources
                .pod_logs
                .join(format!("shop_web-7d4b9c8f5-x2x9q_{UID}/nginx")),
        )
        .unwrap();
        fs::create_dir_all(sources.pod_logs.join("other_pod_0123")).unwrap();
        fs::create_dir_all(&sources.container_logs).unwrap();
        fs::write(
            sources
                .container_logs
                .join(format!("web-7d4b9c8f5-x2x9q_shop_nginx-{ID}.log")),
            "",
        )
        .unwrap();
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let (ids, id) = resolve(&path, &sources);
        assert_eq!(id.k8s_namespace.as_deref(), Some("shop"));
        assert_eq!(id.k8s_pod_name.as_deref(), Some("web-7d4b9c8f5-x2x9q"));
        assert_eq!(id.k8s_pod_uid.as_deref(), Some(UID));
        assert_eq!(id.k8s_container_name.as_deref(), Some("nginx"));
        assert_eq!(id.container_id.as_deref(), Some(ID));
        assert!(!id.incomplete(&ids));
        assert_eq!(id.display().as_deref(), Some("web-7d4b9c8f5-x2x9q/nginx"));
        // Another container of the pod (the sandbox): the pod, no container name.
        let other = ID.replace('3', "4");
        let (ids, id) = resolve(&format!("/kubepods/besteffort/pod{UID}/{other}"), &sources);
        assert_eq!(id.k8s_pod_name.as_deref(), Some("web-7d4b9c8f5-x2x9q"));
        assert_eq!(id.k8s_container_name, None);
        assert!(id.incomplete(&ids));
        // Missing tree: ids only.
        let none = Sources {
            pod_logs: t.0.join("nope"),
            ..sources.clone()
        };
        let (_, id) = resolve(&path, &none);
        assert_eq!(id.k8s_pod_name, None);
        assert_eq!(id.k8s_pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn names_from_runtimes() {
        let t = Tmp::new("rt");
        let sources = Sources {
            pod_logs: t.0.join("pods"),
            container_logs: t.0.join("containers"),
            podman_storage: t.0.join("podman"),
            docker_root: t.0.join("docker"),
        };
        let store = sources.podman_storage.join("overlay-containers");
        fs::create_dir_all(&store).unwrap();
        fs::write(
            store.join("volatile-containers.json"),
            format!(r#"[{{"id":"{ID}","names":["shortlived"],"image":"x"}}]"#),
        )
        .unwrap();
        fs::write(store.join("containers.json"), "not json").unwrap();
        let (_, id) = resolve(&format!("/machine.slice/libpod-{ID}.scope"), &sources);
        assert_eq!(id.container_name.as_deref(), Some("shortlived"));
        assert_eq!(id.display().as_deref(), Some("shortlived"));
        let dir = sources.docker_root.join("containers").join(ID);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.v2.json"), r#"{"Name":"/db","Other":1}"#).unwrap();
        let (_, id) = resolve(&format!("/system.slice/docker-{ID}.scope"), &sources);
        assert_eq!(id.container_name.as_deref(), Some("db"));
        fs::write(dir.join("config.v2.json"), r#"{"Name":"/../etc"}"#).unwrap();
        let (ids, id) = resolve(&format!("/system.slice/docker-{ID}.scope"), &sources);
        assert_eq!(id.container_name, None);
        assert!(id.incomplete(&ids));
    }
}

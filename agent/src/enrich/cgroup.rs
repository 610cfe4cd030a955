//! cgroup v2 ids to cgroup paths and container ids.
//!
//! The kernel programs key series by `bpf_get_current_cgroup_id()`: the inode
//! number of the task's cgroup directory in the cgroup2 filesystem (kernfs).
//! There is no syscall that turns such an id back into a path, so the resolver
//! walks the cgroup2 tree and indexes directories by inode, caching the result
//! and rescanning, rate limited, when an id it has not seen shows up.

use std::collections::HashMap;
use std::fs;

use super::identity::{self, Identity, PathIds, Sources};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many cgroups are indexed, so a host with a runaway number of
/// cgroups cannot make the agent's memory grow without bound.
pub const MAX_ENTRIES: usize = 65_536;

/// Default minimum time between two tree walks.
pub const DEFAULT_MIN_RESCAN: Duration = Duration::from_secs(1);

/// What a cgroup id resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Path relative to the cgroup2 mount, e.g.
    /// `/system.slice/docker-<id>.scope`; `/` for the root cgroup.
    pub path: String,
    /// The container's 64-hex id, if the path is a known container layout.
    pub container_id: Option<String>,
    /// What the path says (ids, unit).
    pub ids: PathIds,
    /// Ids and names, resolved when the cgroup was first seen.
    pub identity: Arc<Identity>,
    /// When the cgroup was first seen: names still missing are retried
    /// only for [`NAME_RETRY_WINDOW`] after it.
    first_seen: Instant,
}

/// How long after a cgroup appears the names its path promises are looked
/// for again on each tree walk (the kubelet writes a container's log link
/// after creating it). Past it, what is missing stays missing: a pod's
/// sandbox container, for one, never gets a log link, and retrying it on
/// every walk would list the log directories once per sandbox per interval.
pub const NAME_RETRY_WINDOW: Duration = Duration::from_secs(60);

impl CgroupInfo {
    fn new(path: String, sources: &Sources, first_seen: Instant) -> Self {
        let (ids, identity) = identity::resolve(&path, sources);
        CgroupInfo {
            container_id: ids.container_id.clone(),
            path,
            ids,
            identity: Arc::new(identity),
            first_seen,
        }
    }

    /// A name the path promises is still missing, and may yet appear.
    fn retry_names(&self, now: Instant) -> bool {
        self.identity.incomplete(&self.ids)
            && now.saturating_duration_since(self.first_seen) < NAME_RETRY_WINDOW
    }
}

/// Identity cache counters, for the self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityStats {
    /// cgroups known: live ones and departed ones still kept.
    pub entries: u64,
    /// Of those, cgroups already removed, kept for `retention`.
    pub departed: u64,
    /// cgroups learned at birth (from the kernel's mkdir events).
    pub births: u64,
    /// Entries not kept because the cache was full (cumulative).
    pub dropped: u64,
}

/// Resolves cgroup ids to [`CgroupInfo`], caching what it has seen.
///
/// A cgroup is resolved when it is first seen: from the kernel's mkdir
/// event ([`CgroupResolver::learn`]) or a tree walk. When it is gone from
/// the tree it is kept for `retention`, so the series of a container that
/// lived a second still carry its identity when the interval ends.
#[derive(Debug)]
pub struct CgroupResolver {
    /// Where cgroup2 is mounted; `None` disables resolution.
    mount: Option<PathBuf>,
    /// Inode of the mount's own directory (the root cgroup), if it could be
    /// read.
    root_ino: Option<u64>,
    root_info: Arc<CgroupInfo>,
    min_rescan: Duration,
    last_scan: Option<Instant>,
    cache: HashMap<u64, Arc<CgroupInfo>>,
    /// Removed cgroups and when they were found gone.
    departed: HashMap<u64, (Arc<CgroupInfo>, Instant)>,
    max_entries: usize,
    retention: Duration,
    sources: Sources,
    births: u64,
    dropped: u64,
    warned_full: bool,
}

/// Default time a removed cgroup's identity is kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

impl CgroupResolver {
    /// A resolver for this host's cgroup2 mount, found in
    /// `/proc/self/mountinfo`. Without one (a pure cgroup v1 host) every id
    /// resolves to `None`, which is said once here rather than per lookup.
    pub fn new() -> Self {
        let mount = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| cgroup2_mount_from_mountinfo(&text));
        match mount {
            Some(mount) => Self::with_root(mount, DEFAULT_MIN_RESCAN),
            None => {
                tracing::warn!("no cgroup2 mount found: cgroup ids will not be resolved to paths");
                Self::build(None, DEFAULT_MIN_RESCAN)
            }
        }
    }

    /// A resolver for the cgroup2 tree at `root`, walking it at most once per
    /// `min_rescan`. Any directory tree works, which is what the tests use.
    pub fn with_root(root: impl Into<PathBuf>, min_rescan: Duration) -> Self {
        Self::build(Some(root.into()), min_rescan)
    }

    fn build(mount: Option<PathBuf>, min_rescan: Duration) -> Self {
        let root_ino = mount
            .as_deref()
            .and_then(|m| fs::metadata(m).ok())
            .map(|md| md.ino());
        let sources = Sources::default();
        CgroupResolver {
            mount,
            root_ino,
            root_info: Arc::new(CgroupInfo::new("/".to_string(), &sources, Instant::now())),
            min_rescan,
            last_scan: None,
            cache: HashMap::new(),
            departed: HashMap::new(),
            max_entries: MAX_ENTRIES,
            retention: DEFAULT_RETENTION,
            sources,
            births: 0,
            dropped: 0,
            warned_full: false,
        }
    }

    /// Where names come from, how many cgroups are kept and for how long
    /// after they are gone.
    pub fn configure(mut self, sources: Sources, max_entries: usize, retention: Duration) -> Self {
        self.sources = sources;
        self.max_entries = max_entries.max(1);
        self.retention = retention;
        self
    }

    /// The cgroup2 mount this resolver reads, if any.
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// Counters for the self-metrics.
    pub fn stats(&self) -> IdentityStats {
        IdentityStats {
            entries: (self.cache.len() + self.departed.len()) as u64,
            departed: self.departed.len() as u64,
            births: self.births,
            dropped: self.dropped,
        }
    }

    /// A cgroup the kernel just created (`cgroup_mkdir`): resolve it now,
    /// while the runtime's and the kubelet's records of it exist. `path` is
    /// relative to the cgroup2 root.
    pub fn learn(&mut self, id: u64, path: &str) {
        self.births += 1;
        if self.mount.is_none() || self.cache.contains_key(&id) {
            return;
        }
        if self.cache.len() + self.departed.len() >= self.max_entries {
            self.expire(Instant::now());
            if self.cache.len() + self.departed.len() >= self.max_entries {
                self.dropped += 1;
                return;
            }
        }
        self.cache.insert(
            id,
            Arc::new(CgroupInfo::new(
                path.to_string(),
                &self.sources,
                Instant::now(),
            )),
        );
    }

    /// The live cgroups known now (departed ones are not), by id.
    pub fn live(&self) -> impl Iterator<Item = (u64, &CgroupInfo)> {
        self.cache.iter().map(|(id, info)| (*id, &**info))
    }

    /// The path and container of cgroup `id`, or `None` if it is not (yet)
    /// known. A miss triggers a tree walk unless one ran within `min_rescan`,
    /// so a flood of unknown (or bogus) ids costs one walk per interval.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        self.mount.as_ref()?;
        // kernfs gives the root cgroup id 1; also accept the mount's inode in
        // case the "mount" is some other tree (tests, bind mounts).
        if id == 1 || Some(id) == self.root_ino {
            return Some(self.root_info.clone());
        }
        if let Some(info) = self.cache.get(&id) {
            return Some(info.clone());
        }
        if let Some((info, _)) = self.departed.get(&id) {
            return Some(info.clone());
        }
        if !self.due() {
            return None;
        }
        self.rescan();
        self.cache.get(&id).cloned()
    }

    fn due(&self) -> bool {
        self.last_scan
            .is_none_or(|last| last.elapsed() >= self.min_rescan)
    }

    /// Once per interval: walk the tree (rate limited) so removed cgroups
    /// move to `departed` and names that were missing at birth are retried,
    /// and forget departed cgroups older than `retention`.
    pub fn refresh(&mut self) {
        if self.mount.is_some() && self.due() {
            self.rescan();
        }
        self.expire(Instant::now());
    }

    fn expire(&mut self, now: Instant) {
        let retention = self.retention;
        self.departed
            .retain(|_, (_, gone)| now.saturating_duration_since(*gone) < retention);
    }

    /// Rebuilds the cache from the tree. Entries whose path did not change
    /// keep their `Arc` (names retried if incomplete); removed ones move to
    /// `departed`.
    fn rescan(&mut self) {
        let now = Instant::now();
        self.last_scan = Some(now);
        let Some(mount) = self.mount.clone() else {
            return;
        };
        let mut old = std::mem::take(&mut self.cache);
        let mut fresh = HashMap::new();
        let mut full = false;
        // Room for live cgroups: what departed ones leave.
        let room = self.max_entries.saturating_sub(self.departed.len());
        // Depth-first with an explicit stack: (directory, its cgroup path).
        let mut stack = vec![(mount.clone(), String::new())];
        let mut root_readable = false;
        'walk: while let Some((dir, path)) = stack.pop() {
            // A cgroup removed mid-walk fails to read; skip it.
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            if dir == mount {
                root_readable = true;
            }
            for entry in entries.flatten() {
                // cgroup directories are the only directories in cgroupfs
                // (control files are regular files); never follow symlinks.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if fresh.len() >= room {
                    full = true;
                    break 'walk;
                }
                let child = format!("{path}/{}", entry.file_name().to_string_lossy());
                // readdir's d_ino is the kernfs inode, the same number stat
                // reports, so no stat per cgroup is needed.
                let ino = entry.ino();
                let info = match old.remove(&ino) {
                    Some(info) if info.path == child && !info.retry_names(now) => info,
                    Some(info) if info.path == child => Arc::new(CgroupInfo::new(
                        child.clone(),
                        &self.sources,
                        info.first_seen,
                    )),
                    _ => Arc::new(CgroupInfo::new(child.clone(), &self.sources, now)),
                };
                fresh.insert(ino, info);
                stack.push((entry.path(), child));
            }
        }
        if !root_readable {
            // The mount itself is unreadable (gone, permissions): keep what we
            // had rather than forget every cgroup.
            tracing::debug!(mount = %mount.display(), "cgroup2 mount unreadable, keeping cache");
            self.cache = old;
            return;
        }
        if full {
            self.dropped += 1;
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    max = self.max_entries,
                    "more cgroups than the resolver indexes; some cgroup ids stay unresolved"
                );
            }
        } else {
            // What the walk did not find is gone: keep its identity a while.
            for (id, info) in old {
                if self.departed.len() + fresh.len() >= self.max_entries {
                    self.dropped += 1;
                    continue;
                }
                self.departed.insert(id, (info, now));
            }
        }
        self.cache = fresh;
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// The mount point of the cgroup2 filesystem described by `mountinfo` (the
/// text of `/proc/<pid>/mountinfo`), preferring a mount of the hierarchy's
/// root over a bind mount of a subtree.
pub fn cgroup2_mount_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 7 {
            continue;
        }
        // The optional fields vary in number; " - " ends them.
        let Some(sep) = fields.iter().skip(6).position(|&f| f == "-") else {
            continue;
        };
        if fields.get(6 + sep + 1) != Some(&"cgroup2") {
            continue;
        }
        let mount = PathBuf::from(unescape_mountinfo(fields[4]));
        if fields[3] == "/" {
            return Some(mount);
        }
        fallback.get_or_insert(mount);
    }
    fallback
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container id in a cgroup path, if the path follows a known container
/// runtime layout (see [`identity::parse_path`]): `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope` (with
/// or without `.scope`), or a bare `<id>` directory (`/docker/<id>`,
/// `/kubepods/burstable/pod<uid>/<id>`). `<id>` is 64 lowercase hex digits.
pub fn container_id_from_path(path: &str) -> Option<String> {
    identity::parse_path(path).container_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const ID: &str = "3f7c1b0e9a2d4c6b8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f";

    #[test]
    fn container_ids_in_known_layouts() {
        let paths = [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/system.slice/cri-containerd-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod0b7c5c1a_4f2e_4d3b_9a8c_1e2f3a4b5c6d.slice/\
                 cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/burstable/pod0b7c5c1a-4f2e-4d3b-9a8c-1e2f3a4b5c6d/{ID}"),
            format!("/kubepods/besteffort/pod0b7c5c1a-4f2e-4d3b-9a8c-1e2f3a4b5c6d/crio-{ID}"),
            format!(
                "/kubepods.slice/kubepods-pod0b7c5c1a_4f2e_4d3b_9a8c_1e2f3a4b5c6d.slice/\
                 crio-{ID}.scope"
            ),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            // A container running its own systemd: a sub-cgroup of the scope.
            format!("/system.slice/docker-{ID}.scope/init.scope"),
            format!("/system.slice/docker-{ID}.scope/system.slice/nginx.service"),
        ];
        for path in paths {
            assert_eq!(container_id_from_path(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn no_container_id_elsewhere() {
        let paths = [
            "/".to_string(),
            String::new(),
            "/system.slice/sshd.service".to_string(),
            "/user.slice/user-0.slice/session-1.scope".to_string(),
            "/system.slice/docker.service".to_string(),
            "/kubepods.slice/kubepods-burstable.slice".to_string(),
            // The runtime monitors beside the container are not the container.
            format!("/kubepods.slice/kubepods-besteffort.slice/crio-conmon-{ID}.scope"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // Not 64 lowercase hex digits.
            format!("/docker/{}", &ID[..63]),
            format!("/docker/{ID}0"),
            format!("/docker/{}", ID.to_uppercase()),
            format!("/system.slice/docker-{}.scope", &ID[1..]),
            format!("/system.slice/unknown-{ID}.scope"),
        ];
        for path in paths {
            assert_eq!(container_id_from_path(&path), None, "{path}");
        }
    }

    #[test]
    fn mountinfo_hybrid_and_pure_v2() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_from_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // Optional fields (shared:N) before the separator.
        let v2 = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            cgroup2_mount_from_mountinfo(v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_prefers_root_and_unescapes() {
        let text = "\
50 24 0:30 /kubepods /host\\040cg rw - cgroup2 cgroup2 rw
51 24 0:30 / /mnt/cgroup\\040v2 rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_from_mountinfo(text),
            Some(PathBuf::from("/mnt/cgroup v2"))
        );
        let only_subtree = "50 24 0:30 /kubepods /host\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_from_mountinfo(only_subtree),
            Some(PathBuf::from("/host cg"))
        );
    }

    #[test]
    fn mountinfo_without_cgroup2() {
        let text = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
garbage
41 31 0:38 / /weird rw,relatime cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount_from_mountinfo(text), None);
        assert_eq!(cgroup2_mount_from_mountinfo(""), None);
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape_mountinfo(r"a\040b"), "a b");
        assert_eq!(unescape_mountinfo(r"tab\011x\134"), "tab\tx\\");
        assert_eq!(unescape_mountinfo(r"end\04"), r"end\04");
        assert_eq!(unescape_mountinfo(r"\"), r"\");
        assert_eq!(unescape_mountinfo(r"\999"), r"\999");
    }

    /// A directory tree under the temp dir, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "syscope-cgroup-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempTree(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let p = self.0.join(rel.trim_start_matches('/'));
            fs::create_dir_all(&p).unwrap();
            fs::metadata(&p).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolves_a_tree() {
        let tree = TempTree::new();
        let docker = format!("/system.slice/docker-{ID}.scope");
        let sshd = tree.mkdir("/system.slice/sshd.service");
        let system = tree.mkdir("/system.slice");
        let container = tree.mkdir(&docker);
        let nested = tree.mkdir(&format!("{docker}/init.scope"));
        // Control files are not cgroups.
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        let file_ino = fs::metadata(tree.0.join("system.slice/cgroup.procs"))
            .unwrap()
            .ino();

        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO);
        let root_ino = fs::metadata(&tree.0).unwrap().ino();
        for id in [1, root_ino] {
            let info = r.resolve(id).unwrap();
            assert_eq!(info.path, "/");
            assert_eq!(info.container_id, None);
        }
        let info = r.resolve(sshd).unwrap();
        assert_eq!(info.path, "/system.slice/sshd.service");
        assert_eq!(info.container_id, None);
        assert_eq!(r.resolve(system).unwrap().path, "/system.slice");
        let info = r.resolve(container).unwrap();
        assert_eq!(info.path, docker);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let info = r.resolve(nested).unwrap();
        assert_eq!(info.path, format!("{docker}/init.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(r.resolve(file_ino), None);
        assert_eq!(r.cache.len(), 4);
    }

    #[test]
    fn rescans_are_rate_limited() {
        let tree = TempTree::new();
        let a = tree.mkdir("/a");
        let mut r = CgroupResolver::with_root(&tree.0, Duration::from_secs(3600));
        assert_eq!(r.resolve(a).unwrap().path, "/a");
        // A cgroup created after the walk stays unknown until the interval
        // has passed, however often it is asked for.
        let b = tree.mkdir("/b");
        for _ in 0..100 {
            assert_eq!(r.resolve(b), None);
        }
        // Known ids are still answered from the cache.
        assert_eq!(r.resolve(a).unwrap().path, "/a");
        // Once the interval has passed, the next miss walks again.
        r.min_rescan = Duration::ZERO;
        assert_eq!(r.resolve(b).unwrap().path, "/b");
    }

    #[test]
    fn rescan_drops_removed_cgroups_and_keeps_arcs() {
        let tree = TempTree::new();
        let a = tree.mkdir("/a");
        let b = tree.mkdir("/b");
        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO);
        let a_info = r.resolve(a).unwrap();
        assert!(r.resolve(b).is_some());
        // Create before removing: ext4 and tmpfs reuse a freed inode at once
        // (kernfs does not reuse cgroup ids, so the real tree is unaffected).
        let c = tree.mkdir("/c");
        fs::remove_dir(tree.0.join("b")).unwrap();
        assert_eq!(r.resolve(c).unwrap().path, "/c");
        assert!(!r.cache.contains_key(&b), "removed cgroup still cached");
        // The surviving entry is the same allocation as before the rescan.
        assert!(Arc::ptr_eq(&a_info, &r.resolve(a).unwrap()));
    }

    #[test]
    fn cache_is_bounded() {
        let tree = TempTree::new();
        for i in 0..10 {
            tree.mkdir(&format!("/d{i}"));
        }
        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO);
        r.max_entries = 4;
        r.resolve(u64::MAX);
        assert_eq!(r.cache.len(), 4);
        assert!(r.warned_full);
    }

    /// A cgroup learned at birth and removed before any walk keeps its
    /// identity for `retention`, then is forgotten; the cache is bounded and
    /// what does not fit is counted.
    #[test]
    fn births_are_kept_after_removal_for_retention_bounded() {
        let tree = TempTree::new();
        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO).configure(
            Sources::default(),
            3,
            Duration::from_millis(200),
        );
        let short = format!("/machine.slice/libpod-{ID}.scope");
        // Never in the tree: born and gone between two walks.
        r.learn(1001, &short);
        assert_eq!(r.stats().births, 1);
        let info = r.resolve(1001).unwrap();
        assert_eq!(info.identity.container_id.as_deref(), Some(ID));
        r.refresh();
        let st = r.stats();
        assert_eq!((st.entries, st.departed), (1, 1));
        assert_eq!(r.resolve(1001).unwrap().path, short);
        std::thread::sleep(Duration::from_millis(250));
        r.refresh();
        assert_eq!(r.stats().entries, 0);
        assert_eq!(r.resolve(1001), None);
        // Bounded: a fourth birth does not fit, and is counted.
        for id in 1..=4 {
            r.learn(id, &format!("/u{id}.slice/x.service"));
        }
        let st = r.stats();
        assert_eq!((st.entries, st.dropped, st.births), (3, 1, 5));
        assert_eq!(r.resolve(4), None);
    }

    /// A name written a moment after the cgroup appears is found by a later
    /// walk, within the retry window.
    #[test]
    fn missing_names_are_retried_while_young() {
        let tree = TempTree::new();
        let docker = tree.0.join("docker-root");
        let sources = Sources {
            docker_root: docker.clone(),
            ..Sources::default()
        };
        let ino = tree.mkdir(&format!("/system.slice/docker-{ID}.scope"));
        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO).configure(
            sources,
            100,
            DEFAULT_RETENTION,
        );
        let info = r.resolve(ino).unwrap();
        assert_eq!(info.identity.container_name, None);
        assert!(info.retry_names(Instant::now()));
        assert!(!info.retry_names(info.first_seen + NAME_RETRY_WINDOW));
        let dir = docker.join("containers").join(ID);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.v2.json"), r#"{"Name":"/late"}"#).unwrap();
        r.refresh();
        let info = r.resolve(ino).unwrap();
        assert_eq!(info.identity.container_name.as_deref(), Some("late"));
        assert!(!info.retry_names(Instant::now()));
    }

    #[test]
    fn unreadable_mount_keeps_cache() {
        let tree = TempTree::new();
        let a = tree.mkdir("/a");
        let mut r = CgroupResolver::with_root(&tree.0, Duration::ZERO);
        assert!(r.resolve(a).is_some());
        r.mount = Some(tree.0.join("does-not-exist"));
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.resolve(a).unwrap().path, "/a");
    }

    #[test]
    fn no_mount_resolves_nothing() {
        let mut r = CgroupResolver::build(None, Duration::ZERO);
        assert_eq!(r.mount(), None);
        assert_eq!(r.resolve(1), None);
        assert_eq!(r.resolve(12345), None);
    }

    /// Resolves this test process's own cgroup on the real cgroup2 mount;
    /// skipped on hosts without one.
    #[test]
    fn resolves_own_cgroup() {
        let Some(mount) = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| cgroup2_mount_from_mountinfo(&t))
        else {
            eprintln!("no cgroup2 mount; skipping");
            return;
        };
        let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
            eprintln!("no cgroup v2 line in /proc/self/cgroup; skipping");
            return;
        };
        // Outside our cgroup namespace's view (or a cgroup removed under
        // us), the path cannot be joined onto the mount.
        let Ok(md) = fs::metadata(mount.join(path.trim_start_matches('/'))) else {
            eprintln!("cannot stat {path} under {}; skipping", mount.display());
            return;
        };
        let mut r = CgroupResolver::new();
        assert_eq!(r.mount(), Some(mount.as_path()));
        let info = r.resolve(md.ino()).expect("own cgroup resolves");
        assert_eq!(info.path, path);
    }
}

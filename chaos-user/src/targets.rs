//! Targets: cgroup v2 directories, resolved to the ids the kernel uses.
//!
//! A rule on a cgroup covers its whole subtree. The id of a cgroup v2
//! directory is its kernfs inode number (`cgroup_id()` in
//! include/linux/cgroup.h is `kernfs_node`'s id, which is what `stat`
//! reports as `st_ino` on 64-bit machines); its level is its depth below the
//! root of the hierarchy, as `bpf_skb_ancestor_cgroup_id` counts it.

use std::{
    fmt, fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt},
    path::{Component, Path, PathBuf},
};

use chaos_abi::cgroup::MAX_LEVEL;

use crate::error::{Error, Result};

/// `CGROUP2_SUPER_MAGIC` (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A mounted cgroup v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFs {
    /// Where it is mounted, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub mount: PathBuf,
    /// The hierarchy path the mount shows (`/` unless we are inside a cgroup
    /// namespace or a bind mount of a subtree).
    pub root: PathBuf,
}

/// A resolved target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The directory, under the mount.
    pub path: PathBuf,
    /// The cgroup id (`bpf_get_current_cgroup_id` and friends).
    pub id: u64,
    /// Depth below the hierarchy root (root = 0).
    pub level: u32,
    /// What the user named, when it was not the cgroup itself: e.g.
    /// `docker container web (3f2a1b0c9d8e)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(w) = &self.workload {
            write!(f, "{w}, ")?;
        }
        write!(f, "cgroup {} (id {})", self.path.display(), self.id)
    }
}

/// Whether targets that stand for the host are allowed: the root cgroup,
/// the cgroups holding PID 1 or chaos itself, systemd's top-level slices and
/// the kubelet's `kubepods*` (see `host_cgroup`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowHost(pub bool);

impl CgroupFs {
    /// Find the cgroup v2 mount of this machine from /proc/self/mountinfo.
    pub fn discover() -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::environment(format!("cannot read /proc/self/mountinfo: {e}")))?;
        Self::from_mountinfo(&mountinfo).ok_or_else(|| {
            Error::environment(
                "no cgroup v2 hierarchy is mounted; mount one with \
                 `mount -t cgroup2 none /sys/fs/cgroup` (or boot with systemd.unified_cgroup_hierarchy=1)",
            )
        })
    }

    /// Parse mountinfo (proc(5)): fields 4 (root) and 5 (mount point), then
    /// after the `-` separator the filesystem type.
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = left.split_whitespace().collect();
            Some(Self {
                root: PathBuf::from(unescape_mountinfo(fields.get(3)?)),
                mount: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
            })
        })
    }

    /// Resolve `--cgroup PATH`: a directory under the mount, or a hierarchy
    /// path (`/system.slice/nginx.service`) relative to it.
    pub fn resolve_path(&self, path: &Path, allow_host: AllowHost) -> Result<Target> {
        let dir = if path.starts_with(&self.mount) {
            path.to_path_buf()
        } else {
            let rel = path.strip_prefix("/").unwrap_or(path);
            self.mount.join(rel)
        };
        let dir = normalize(&dir);
        if dir.to_str().is_none() {
            // Events, reports and the state file are JSON: text only.
            return Err(Error::invalid(format!(
                "cgroup {} has a name that is not valid UTF-8, which chaos cannot record in its events, \
                 reports and state file; give the cgroup a UTF-8 name",
                dir.display()
            )));
        }
        if !dir.starts_with(&self.mount) {
            return Err(Error::invalid(format!(
                "{} is outside the cgroup v2 hierarchy mounted at {}",
                path.display(),
                self.mount.display()
            )));
        }
        let meta = fs::metadata(&dir).map_err(|_| Error::NoSuchCgroup {
            path: dir.clone(),
            example: self.mount.join("system.slice/my.service").display().to_string(),
        })?;
        if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
            return Err(Error::invalid(format!(
                "{} is not a cgroup v2 directory (it has no cgroup.procs)",
                dir.display()
            )));
        }
        let rel = dir.strip_prefix(&self.mount).expect("checked above");
        let level = depth(&self.root) + depth(rel);
        if level > MAX_LEVEL {
            return Err(Error::invalid(format!(
                "{} is {level} levels deep; chaos supports targets down to level {MAX_LEVEL}",
                dir.display()
            )));
        }
        let target = Target { path: dir, id: meta.ino(), level, workload: None };
        self.check_host(&target, allow_host)?;
        Ok(target)
    }

    /// Resolve `--pid PID` to the cgroup v2 directory the process is in.
    pub fn resolve_pid(&self, proc_root: &Path, pid: i32, allow_host: AllowHost) -> Result<Target> {
        let path = self.cgroup_of(proc_root, pid)?;
        self.resolve_path(&path, allow_host)
    }

    /// The directory of `pid`'s cgroup v2 (the `0::` line of /proc/PID/cgroup).
    pub fn cgroup_of(&self, proc_root: &Path, pid: i32) -> Result<PathBuf> {
        if pid <= 0 {
            return Err(Error::invalid(format!("--pid {pid}: a pid is a positive number")));
        }
        // Bytes, not text: a cgroup's name may be any bytes but `/` and NUL.
        let text =
            fs::read(proc_root.join(pid.to_string()).join("cgroup")).map_err(|_| Error::NoSuchPid(pid))?;
        let hierarchy_path =
            text.split(|b| *b == b'\n').find_map(|l| l.strip_prefix(b"0::")).ok_or_else(|| {
                Error::environment(format!(
                    "process {pid} is in no cgroup v2 (no 0:: line in /proc/{pid}/cgroup)"
                ))
            })?;
        // /proc/PID/cgroup is relative to our cgroup namespace root, which
        // is what the mount shows as its root.
        let start = hierarchy_path.iter().position(|b| *b != b'/').unwrap_or(hierarchy_path.len());
        Ok(self.mount.join(std::ffi::OsStr::from_bytes(&hierarchy_path[start..])))
    }

    fn check_host(&self, target: &Target, allow_host: AllowHost) -> Result<()> {
        if allow_host.0 {
            return Ok(());
        }
        let ours = std::process::id() as i32;
        match self.host_cgroup(&target.path, Path::new("/proc"), ours) {
            None => Ok(()),
            Some(why) => Err(Error::invalid(format!(
                "{} {why}: attacking it would hit the host, not one workload; target a cgroup below it \
                 (e.g. /system.slice/my.service), or pass --allow-host (`allow-host: true` in an experiment \
                 file) if you mean it",
                target.path.display()
            ))),
        }
    }

    /// Why `dir` stands for the host rather than a workload, if it does:
    /// the root; a cgroup holding PID 1's or chaos's own (an attack there
    /// reaches init, or chaos and its probes); or a top-level grouping of
    /// systemd (`*.slice`, `init.scope`: every service, every user session,
    /// every VM) or of the kubelet (`kubepods*` and its QoS classes: every
    /// pod).
    fn host_cgroup(&self, dir: &Path, proc_root: &Path, ours: i32) -> Option<String> {
        if dir == self.mount {
            return Some("is the root cgroup (every process on the host)".into());
        }
        for (pid, who) in [(1, "PID 1 (init)"), (ours, "chaos itself")] {
            if let Ok(cg) = self.cgroup_of(proc_root, pid)
                && normalize(&cg).starts_with(dir)
            {
                return Some(format!("holds {who}"));
            }
        }
        let rel = dir.strip_prefix(&self.mount).ok()?;
        let names: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        let kubepods = |n: &str| n.starts_with("kubepods");
        match names.as_slice() {
            [top]
                if top.ends_with(".slice") || *top == "init.scope" || *top == "machine" || kubepods(top) =>
            {
                Some(format!("is a top-level grouping of the host ({top})"))
            }
            [top, class]
                if kubepods(top)
                    && (["burstable", "besteffort"].contains(class)
                        || (class.starts_with("kubepods-") && class.ends_with(".slice"))) =>
            {
                Some(format!("is a Kubernetes QoS class ({top}/{class}: every pod of that class)"))
            }
            _ => None,
        }
    }

    /// True when `path` is on a cgroup v2 filesystem (statfs magic).
    pub fn is_cgroup2(path: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct we own.
        unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
        }
    }
}

/// The pids in a cgroup and all its descendants.
pub fn pids_in_subtree(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
            );
        }
    }
    pids
}

/// The ids of a cgroup and its descendants: on cgroup v2 a cgroup's id is
/// its directory's inode number (`cgroup_id()` is the kernfs node id,
/// which kernfs gives as the inode number: fs/kernfs/inode.c).
pub fn ids_in_subtree(dir: &Path) -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = fs::metadata(&d) {
            ids.insert(meta.ino());
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
            );
        }
    }
    ids
}

fn depth(path: &Path) -> u32 {
    path.components().filter(|c| matches!(c, Component::Normal(_))).count() as u32
}

/// Lexically resolve `.` and `..` (cgroupfs has no symlinks).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:29 / /sys/fs/cgroup/net_cls rw,nosuid - cgroup cgroup rw,net_cls
";

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let fs = CgroupFs::from_mountinfo(HYBRID).unwrap();
        assert_eq!(fs.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(fs.root, Path::new("/"));
    }

    #[test]
    fn no_cgroup2_is_none() {
        assert_eq!(CgroupFs::from_mountinfo("33 31 0:29 / /sys/fs/cgroup/x rw - cgroup cgroup rw\n"), None);
    }

    #[test]
    fn unescapes_spaces() {
        let info = "40 31 0:30 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(CgroupFs::from_mountinfo(info).unwrap().mount, Path::new("/mnt/my cg"));
    }

    /// A fake hierarchy: directories with a `cgroup.procs` file each.
    struct FakeTree {
        dir: PathBuf,
    }

    impl FakeTree {
        fn new(name: &str, dirs: &[&str]) -> Self {
            let dir = std::env::temp_dir().join(format!("chaos-targets-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.procs"), "1\n").unwrap();
            for d in dirs {
                fs::create_dir_all(dir.join(d)).unwrap();
                fs::write(dir.join(d).join("cgroup.procs"), "").unwrap();
            }
            Self { dir }
        }
        fn fs(&self) -> CgroupFs {
            CgroupFs { mount: self.dir.clone(), root: PathBuf::from("/") }
        }
    }

    impl Drop for FakeTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn resolves_absolute_and_hierarchy_paths_to_the_same_target() {
        let tree = FakeTree::new("paths", &["a/b"]);
        let fs = tree.fs();
        let abs = fs.resolve_path(&tree.dir.join("a/b"), AllowHost(false)).unwrap();
        let rel = fs.resolve_path(Path::new("/a/b"), AllowHost(false)).unwrap();
        let dotted = fs.resolve_path(Path::new("a/./x/../b"), AllowHost(false)).unwrap();
        assert_eq!(abs, rel);
        assert_eq!(abs, dotted);
        assert_eq!(abs.level, 2);
        assert_eq!(abs.id, fs::metadata(tree.dir.join("a/b")).unwrap().ino());
    }

    #[test]
    fn level_counts_the_namespace_root() {
        let tree = FakeTree::new("nsroot", &["a"]);
        let fs = CgroupFs { root: PathBuf::from("/kubepods/pod1"), ..tree.fs() };
        assert_eq!(fs.resolve_path(Path::new("a"), AllowHost(false)).unwrap().level, 3);
    }

    #[test]
    fn missing_cgroup_names_the_path() {
        let tree = FakeTree::new("missing", &[]);
        let err = tree.fs().resolve_path(Path::new("nope"), AllowHost(false)).unwrap_err();
        assert!(matches!(err, Error::NoSuchCgroup { .. }), "{err}");
        assert!(err.to_string().contains(&tree.dir.join("nope").display().to_string()), "{err}");
    }

    #[test]
    fn escaping_the_hierarchy_is_refused() {
        let tree = FakeTree::new("escape", &[]);
        let err = tree.fs().resolve_path(Path::new("../../etc"), AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("outside the cgroup v2 hierarchy"), "{err}");
    }

    #[test]
    fn root_needs_allow_host() {
        let tree = FakeTree::new("root", &[]);
        let err = tree.fs().resolve_path(&tree.dir, AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("--allow-host"), "{err}");
        assert_eq!(tree.fs().resolve_path(&tree.dir, AllowHost(true)).unwrap().level, 0);
    }

    #[test]
    fn host_groupings_need_allow_host() {
        let tree = FakeTree::new(
            "host",
            &[
                "system.slice",
                "system.slice/nginx.service",
                "user.slice",
                "init.scope",
                "machine.slice",
                "kubepods.slice/kubepods-burstable.slice/pod1",
                "kubepods/besteffort/pod2",
                "svc/chaos/child",
                "apps/init",
                "app.service",
            ],
        );
        let fs = tree.fs();
        // A fake /proc: PID 1 in /apps/init, "chaos" (pid 77) in /svc/chaos.
        let proc_root = tree.dir.join("proc");
        for (pid, cg) in [(1, "/apps/init"), (77, "/svc/chaos")] {
            fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
            fs::write(proc_root.join(format!("{pid}/cgroup")), format!("0::{cg}\n")).unwrap();
        }
        let why = |p: &str| fs.host_cgroup(&normalize(&tree.dir.join(p)), &proc_root, 77);
        for refused in [
            "",
            "system.slice",
            "user.slice",
            "init.scope",
            "machine.slice",
            "kubepods.slice",
            "kubepods.slice/kubepods-burstable.slice",
            "kubepods",
            "kubepods/besteffort",
            "svc",
            "svc/chaos",
            "apps",
            "apps/init",
        ] {
            assert!(why(refused).is_some(), "/{refused} accepted");
        }
        for accepted in [
            "system.slice/nginx.service",
            "kubepods.slice/kubepods-burstable.slice/pod1",
            "svc/chaos/child",
            "app.service",
        ] {
            assert_eq!(why(accepted), None, "/{accepted}");
        }
        // Through resolve_path: refused with the flag named, allowed with it.
        let err = fs.resolve_path(Path::new("/system.slice"), AllowHost(false)).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::Invalid);
        assert!(
            err.to_string().contains("top-level grouping") && err.to_string().contains("--allow-host"),
            "{err}"
        );
        assert!(fs.resolve_path(Path::new("/system.slice"), AllowHost(true)).is_ok());
        assert!(fs.resolve_path(Path::new("/system.slice/nginx.service"), AllowHost(false)).is_ok());
    }

    #[test]
    fn non_utf8_cgroups_are_refused_not_panicked_on() {
        use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _};
        let tree = FakeTree::new("utf8", &[]);
        let name = OsStr::from_bytes(b"bad\xff");
        fs::create_dir(tree.dir.join(name)).unwrap();
        fs::write(tree.dir.join(name).join("cgroup.procs"), "").unwrap();
        let err = tree.fs().resolve_path(&Path::new("/").join(name), AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
        // The same cgroup through a process in it (/proc/PID/cgroup is bytes).
        let proc_root = tree.dir.join("proc");
        fs::create_dir_all(proc_root.join("42")).unwrap();
        fs::write(proc_root.join("42/cgroup"), b"0::/bad\xff\n").unwrap();
        let err = tree.fs().resolve_pid(&proc_root, 42, AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn directory_without_cgroup_procs_is_refused() {
        let tree = FakeTree::new("plain", &[]);
        fs::create_dir(tree.dir.join("plain")).unwrap();
        let err = tree.fs().resolve_path(Path::new("plain"), AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("not a cgroup v2 directory"), "{err}");
    }

    #[test]
    fn too_deep_is_refused() {
        let deep: String = (0..=MAX_LEVEL).map(|i| format!("l{i}/")).collect();
        let tree = FakeTree::new("deep", &[deep.as_str()]);
        let err = tree.fs().resolve_path(Path::new(&deep), AllowHost(false)).unwrap_err();
        assert!(err.to_string().contains("levels deep"), "{err}");
    }

    #[test]
    fn pid_resolves_through_proc_cgroup() {
        let tree = FakeTree::new("pid", &["svc/x"]);
        let proc_root = tree.dir.join("proc");
        fs::create_dir_all(proc_root.join("42")).unwrap();
        fs::write(proc_root.join("42/cgroup"), "12:net_cls:/\n0::/svc/x\n").unwrap();
        let t = tree.fs().resolve_pid(&proc_root, 42, AllowHost(false)).unwrap();
        assert_eq!(t.path, tree.dir.join("svc/x"));
        assert!(matches!(tree.fs().resolve_pid(&proc_root, 43, AllowHost(false)), Err(Error::NoSuchPid(43))));
        assert!(tree.fs().resolve_pid(&proc_root, -1, AllowHost(false)).is_err());
    }

    #[test]
    fn subtree_pids_include_descendants() {
        let tree = FakeTree::new("subtree", &["a/b"]);
        fs::write(tree.dir.join("a/cgroup.procs"), "10\n11\n").unwrap();
        fs::write(tree.dir.join("a/b/cgroup.procs"), "12\n").unwrap();
        let mut pids = pids_in_subtree(&tree.dir.join("a"));
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12]);
    }
}

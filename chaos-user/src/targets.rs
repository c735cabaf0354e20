//! Targets: cgroup v2 directories, resolved to the ids the kernel uses.
//!
//! A rule on a cgroup covers its whole subtree. The id of a cgroup v2
//! directory is its kernfs inode number (`cgroup_id()` in
//! include/linux/cgroup.h is `kernfs_node`'s id, which is what `stat`
//! reports as `st_ino` on 64-bit machines); its level is its depth below the
//! root of the hierarchy, as `bpf_skb_ancestor_cgroup_id` counts it.

use std::{
    fmt, fs,
    os::unix::fs::MetadataExt,
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
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup {} (id {})", self.path.display(), self.id)
    }
}

/// Whether targets at the host's top (the root cgroup, PID 1's cgroup) are
/// allowed.
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
        let target = Target { path: dir, id: meta.ino(), level };
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
        let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
            .map_err(|_| Error::NoSuchPid(pid))?;
        let hierarchy_path = text.lines().find_map(|l| l.strip_prefix("0::")).ok_or_else(|| {
            Error::environment(format!(
                "process {pid} is in no cgroup v2 (no 0:: line in /proc/{pid}/cgroup)"
            ))
        })?;
        // /proc/PID/cgroup is relative to our cgroup namespace root, which
        // is what the mount shows as its root.
        let rel = hierarchy_path.trim_start_matches('/');
        Ok(self.mount.join(rel))
    }

    fn check_host(&self, target: &Target, allow_host: AllowHost) -> Result<()> {
        if allow_host.0 {
            return Ok(());
        }
        if target.path == self.mount {
            return Err(Error::invalid(format!(
                "{} is the root cgroup: that would hit every process on the host; pass --allow-host if you mean it",
                target.path.display()
            )));
        }
        if let Ok(init) = self.cgroup_of(Path::new("/proc"), 1)
            && normalize(&init) == target.path
            && init != self.mount
        {
            return Err(Error::invalid(format!(
                "{} is PID 1's cgroup; pass --allow-host if you mean it",
                target.path.display()
            )));
        }
        Ok(())
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

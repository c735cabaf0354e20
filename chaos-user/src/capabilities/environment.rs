//! Probes of the environment rather than of program types.

use std::{fs, path::Path};

use crate::targets::CgroupFs;

/// Effective capabilities chaos needs, from /proc/self/status (CapEff).
/// Bits from include/uapi/linux/capability.h.
const NEEDED: &[(u32, &str)] =
    &[(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF")];

pub fn root() -> Result<String, String> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    let missing: Vec<&str> =
        NEEDED.iter().filter(|(bit, _)| eff & (1 << bit) == 0).map(|(_, n)| *n).collect();
    if missing.is_empty() {
        Ok("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN present".into())
    } else {
        Err(format!("missing {}; run chaos as root (sudo)", missing.join(", ")))
    }
}

pub fn cgroup_v2() -> Result<String, String> {
    let fs = CgroupFs::discover().map_err(|e| e.to_string())?;
    if !CgroupFs::is_cgroup2(&fs.mount) {
        return Err(format!("{} is listed as cgroup2 but statfs disagrees", fs.mount.display()));
    }
    Ok(format!("mounted at {}", fs.mount.display()))
}

/// Whether `controller` is on the cgroup v2 hierarchy (listed in the
/// root's `cgroup.controllers`): where a v1 hierarchy holds it, the v2
/// hierarchy does not have it (a controller is on one hierarchy at a time,
/// Documentation/admin-guide/cgroup-v2.rst, "Mounting"). `file` is the
/// control file chaos uses, for the message.
pub fn cgroup_controller(controller: &str, file: &str) -> Result<String, String> {
    let fs = CgroupFs::discover().map_err(|e| e.to_string())?;
    let listed = fs.mount.join("cgroup.controllers");
    let text = std::fs::read_to_string(&listed).map_err(|e| format!("reading {}: {e}", listed.display()))?;
    if text.split_whitespace().any(|c| c == controller) {
        return Ok(format!(
            "in {} (targets need it in their parent's cgroup.subtree_control)",
            listed.display()
        ));
    }
    // The io controller was blkio on v1 (block/blk-cgroup.c names its
    // legacy hierarchy so).
    let v1_name = if controller == "io" { "blkio" } else { controller };
    let v1 = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| {
        l.split(" - ").nth(1).is_some_and(|fs_part| {
            let mut f = fs_part.split_whitespace();
            f.next() == Some("cgroup") && f.nth(1).is_some_and(|opts| opts.split(',').any(|o| o == v1_name))
        })
    });
    Err(if v1 {
        format!(
            "the {controller} controller is bound to a cgroup v1 hierarchy, so the v2 hierarchy has no {file} \
             (boot with systemd.unified_cgroup_hierarchy=1, or unmount the v1 {v1_name} hierarchy)"
        )
    } else {
        format!("{} does not list {controller} (a kernel without the controller)", listed.display())
    })
}

/// Run `f` on a thread of its own in a mount namespace of its own, so that
/// what it mounts is seen by no other process and goes away with the thread
/// (the namespace dies with its last task: `put_mnt_ns()` in
/// fs/namespace.c), even when chaos is killed: nothing to record, nothing
/// to recover, no mount point another user could have made. A thread may
/// unshare CLONE_NEWNS on its own (it implies CLONE_FS, which
/// `check_unshare_flags()` in kernel/fork.c allows for one thread).
pub fn in_private_mountns<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(format!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error()));
            }
            // The copy shares propagation with the host's mounts where those
            // are shared (Documentation/filesystems/sharedsubtree.rst): make
            // every mount a slave first, so that nothing mounted here
            // propagates back.
            // SAFETY: valid C strings; no data argument.
            if unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
            } != 0
            {
                return Err(format!("making / a slave mount: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "thread panicked inside a private mount namespace".to_owned())?
    })
}

/// `mount -t FSTYPE FSTYPE AT`, in the calling thread's mount namespace.
fn mount_fs(fstype: &std::ffi::CStr, at: &std::ffi::CStr) -> Result<(), String> {
    // SAFETY: valid C strings; no data argument.
    if unsafe { libc::mount(fstype.as_ptr(), at.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
        return Err(format!(
            "mount -t {} on {}: {}",
            fstype.to_string_lossy(),
            at.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Mount a bpffs instance in a private mount namespace (on /sys/fs/bpf,
/// the mount point the kernel makes for it, `bpf_init()` in
/// kernel/bpf/inode.c): it vanishes with the namespace.
pub fn bpffs() -> Result<String, String> {
    let mounted = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("bpf"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    in_private_mountns(|| mount_fs(c"bpf", c"/sys/fs/bpf"))??;
    Ok(match mounted {
        Some(at) => format!("mounted at {at}"),
        None => "supported, not mounted (mount -t bpf bpf /sys/fs/bpf to inspect with bpftool)".into(),
    })
}

/// Whether inet_diag destroys sockets: a SOCK_DESTROY request for a socket
/// that does not exist, in a throwaway network namespace, answers ENOENT
/// where the kernel can destroy and EOPNOTSUPP where it cannot (see
/// `attach::sock_diag::can_destroy`).
pub fn sock_destroy() -> Result<String, String> {
    match crate::attach::netns::in_private_netns(crate::attach::sock_diag::can_destroy) {
        Ok(Ok(true)) => Ok("SOCK_DESTROY of a missing socket answered ENOENT: supported".into()),
        Ok(Ok(false)) => {
            Err("SOCK_DESTROY is not supported: the kernel lacks CONFIG_INET_DIAG_DESTROY".into())
        }
        Ok(Err(e)) | Err(e) => Err(format!("SOCK_DESTROY probe: {e}")),
    }
}

/// The kernel lockdown mode, from securityfs (mounted on a temporary
/// directory when it is not mounted already).
pub fn lockdown() -> Option<String> {
    read_securityfs("lockdown").map(|text| {
        // "none integrity [confidentiality]": the bracketed one is active.
        text.split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
            .unwrap_or(text)
    })
}

/// The active LSMs, e.g. `lockdown,capability,landlock,bpf`.
pub fn active_lsms() -> Option<String> {
    read_securityfs("lsm")
}

fn read_securityfs(file: &str) -> Option<String> {
    let standard = Path::new("/sys/kernel/security").join(file);
    if let Ok(text) = fs::read_to_string(&standard) {
        return Some(text.trim().to_owned());
    }
    // Not mounted: mount it where the kernel expects it
    // (`securityfs_init()` in security/inode.c), in a private mount
    // namespace.
    in_private_mountns(|| {
        mount_fs(c"securityfs", c"/sys/kernel/security").ok()?;
        fs::read_to_string(&standard).ok()
    })
    .ok()
    .flatten()
    .map(|t| t.trim().to_owned())
}

/// Run `f` where tracefs is mounted at /sys/kernel/tracing, where aya looks
/// for it (it finds the ids of tracepoints there): here if it is mounted
/// already, else on a thread with tracefs mounted in a private mount
/// namespace, which nobody else sees and which ends with the thread (the
/// perf events made meanwhile keep what they need).
pub fn with_tracefs<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(f());
    }
    in_private_mountns(|| {
        mount_fs(c"tracefs", c"/sys/kernel/tracing")
            .map_err(|e| format!("tracefs is not mounted and mounting it failed: {e}"))?;
        Ok(f())
    })?
}

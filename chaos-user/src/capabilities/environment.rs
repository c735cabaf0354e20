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

/// Mount a bpffs instance on a temporary directory and unmount it.
pub fn bpffs() -> Result<String, String> {
    let mounted = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("bpf"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    let dir = std::env::temp_dir().join(format!("chaos-bpffs-probe-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = mount_probe("bpf", &dir);
    let _ = fs::remove_dir(&dir);
    result?;
    Ok(match mounted {
        Some(at) => format!("mounted at {at}"),
        None => "supported, not mounted (mount -t bpf bpf /sys/fs/bpf to inspect with bpftool)".into(),
    })
}

fn mount_probe(fstype: &str, dir: &Path) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, ty, target) = (c(fstype), c(fstype), c(&dir.to_string_lossy()));
    // SAFETY: valid C strings; we unmount what we mounted right away.
    unsafe {
        if libc::mount(src.as_ptr(), target.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(format!("mount -t {fstype}: {}", std::io::Error::last_os_error()));
        }
        libc::umount2(target.as_ptr(), libc::MNT_DETACH);
    }
    Ok(())
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
    let dir = std::env::temp_dir().join(format!("chaos-securityfs-{}", std::process::id()));
    fs::create_dir_all(&dir).ok()?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (ty, target) = (c("securityfs"), c(&dir.to_string_lossy()));
    // SAFETY: valid C strings; unmounted before returning.
    let text = unsafe {
        if libc::mount(ty.as_ptr(), target.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) != 0 {
            None
        } else {
            let t = fs::read_to_string(dir.join(file)).ok();
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            t
        }
    };
    let _ = fs::remove_dir(&dir);
    text.map(|t| t.trim().to_owned())
}

/// Make sure tracefs is mounted where aya looks for it. Returns whether we
/// mounted it (the caller unmounts).
pub fn ensure_tracefs() -> Result<bool, String> {
    let path = Path::new("/sys/kernel/tracing");
    if path.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(false);
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (ty, target) = (c("tracefs"), c("/sys/kernel/tracing"));
    // SAFETY: valid C strings.
    if unsafe { libc::mount(ty.as_ptr(), target.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) } != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(true)
}

pub fn unmount_tracefs() {
    let target = std::ffi::CString::new("/sys/kernel/tracing").expect("no NUL");
    // SAFETY: valid C string.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

//! What the agent checks about its own pod before it runs any attack: the
//! capabilities, host namespaces and host paths of deploy/agent.yaml, and
//! on kernels before 5.11 the RLIMIT_MEMLOCK they charge BPF memory to. An
//! item missing does not stop the agent (a DaemonSet pod that exits only
//! loops in CrashLoopBackOff, and the attacks would wait with no reason
//! given): each attack that needs it is refused, and its status names the
//! item and the line of the pod spec that gives it.
//!
//! Run once, first thing in `main`, while the process has one thread: it
//! may move the process into the node's cgroup namespace (setns(2) with
//! CLONE_NEWCGROUP changes only the calling thread's namespace, and the
//! threads started later inherit it).

use std::{
    ffi::CString,
    fs,
    os::{
        fd::AsRawFd,
        unix::{fs::MetadataExt as _, net::UnixStream},
    },
    path::{Path, PathBuf},
};

use chaos::targets::CgroupFs;

/// Where the agent's guardians live (chaos-user/src/guardian.rs): a cgroup
/// beside the agent's own, in its pod's cgroup. The container runtime
/// kills every process of the container's cgroup when it stops or kills
/// the container (runc's `signalAllProcesses`); guardians there would die
/// with the agent and restore nothing. Beside it, they are still charged
/// to the pod, and go when the pod does. Not at the node's root: kernfs
/// makes a hierarchy's root directory 0555 (fs/kernfs/dir.c,
/// `kernfs_create_root`), so only CAP_DAC_OVERRIDE could.
pub const GUARDIANS: &str = "chaos-guardians";

/// Something the agent's pod lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What it is and how to give it, in the pod spec's words.
    pub what: String,
    /// The kinds it stops; empty: every kind.
    pub kinds: &'static [&'static str],
}

/// The capabilities (include/uapi/linux/capability.h bits) and what for;
/// deploy/agent.yaml gives each with the same reason.
const CAPABILITIES: &[(u32, &str, &[&str], &str)] = &[
    (39, "BPF", &[], "programs and maps"),
    (38, "PERFMON", &[], "tracing and LSM programs, bpf_probe_read_kernel"),
    (12, "NET_ADMIN", &[], "tc, cgroup socket programs, qdiscs"),
    (21, "SYS_ADMIN", &[], "setns() into the node's cgroup namespace and the pods' network namespaces"),
    (
        19,
        "SYS_PTRACE",
        &[],
        "/proc/PID/ns of processes holding capabilities the agent has not (the node's init, pods)",
    ),
    (5, "KILL", &["kill"], "signals to processes of other users"),
];

/// CAP_SYS_RESOURCE's bit: not in the DaemonSet, needed only on kernels
/// that charge BPF memory to RLIMIT_MEMLOCK (below).
const CAP_SYS_RESOURCE: u32 = 24;

/// The RLIMIT_MEMLOCK an agent needs on a kernel before 5.11. Until then
/// the kernel charges every map and program to the loading user's locked
/// memory and refuses with EPERM past RLIMIT_MEMLOCK (`bpf_charge_memlock`,
/// kernel/bpf/syscall.c; 5.11 moved the charge to the memory cgroup). The
/// user is the node's root, so the sum is shared with every root process
/// on the node. Measured on 5.10 (fdinfo's `memlock`): io-error's maps take
/// 11.2 MiB, pause's 7.5 MiB, net-partition's 1.1 MiB; twice the largest,
/// rounded up.
const MEMLOCK_NEEDED: u64 = 32 << 20;

/// Why BPF memory would be refused here: on a kernel before 5.11
/// (`release`: major, minor), with a hard RLIMIT_MEMLOCK of `hard` bytes
/// below [`MEMLOCK_NEEDED`] that the agent cannot raise (aya raises the
/// limit to infinity on the first EPERM, which takes CAP_SYS_RESOURCE).
pub fn memlock_shortfall(release: (u32, u32), hard: u64, cap_sys_resource: bool) -> Option<String> {
    if release >= (5, 11) || hard == libc::RLIM_INFINITY || hard >= MEMLOCK_NEEDED || cap_sys_resource {
        return None;
    }
    Some(format!(
        "this kernel ({}.{}) charges BPF memory to RLIMIT_MEMLOCK (until 5.11), whose hard limit here is {} KiB, \
         under the {} MiB an attack may need: add SYS_RESOURCE to securityContext.capabilities.add (on nodes \
         before 5.11 only; the chart's agent.sysResource), or start the container runtime with \
         LimitMEMLOCK=infinity",
        release.0,
        release.1,
        hard >> 10,
        MEMLOCK_NEEDED >> 20
    ))
}

/// Why `kind` cannot run here, if it cannot.
pub fn refusal(kind: &str, missing: &[Missing]) -> Option<String> {
    let reasons: Vec<&str> = missing
        .iter()
        .filter(|m| m.kinds.is_empty() || m.kinds.contains(&kind))
        .map(|m| m.what.as_str())
        .collect();
    (!reasons.is_empty()).then(|| format!("the agent's pod cannot run {kind}: {}", reasons.join("; ")))
}

/// What [`check`] found.
pub struct Checked {
    pub missing: Vec<Missing>,
    /// The guardians' cgroup, made.
    pub guardians: Option<PathBuf>,
    /// The cgroup the agent's own is in (its pod's), where it makes
    /// cgroups of its own: the guardians', the probes' scratch ones.
    pub home: Option<PathBuf>,
    /// The state directory, checked.
    pub state: Option<PathBuf>,
}

/// Check the pod the agent runs in, and join the node's cgroup namespace.
pub fn check() -> Checked {
    let mut missing = Vec::new();
    let eff = effective_capabilities();
    if let Some(eff) = eff {
        for (bit, name, kinds, why) in CAPABILITIES {
            if eff & (1 << bit) == 0 {
                missing.push(Missing {
                    what: format!(
                        "it lacks CAP_{name} ({why}): add {name} to securityContext.capabilities.add"
                    ),
                    kinds,
                });
            }
        }
    }
    if let Some(release) = kernel_release()
        && release < (5, 11)
    {
        // The soft limit up to the hard one needs no capability (and is
        // all a hard limit high enough asks for); every kind loads maps.
        let hard = raise_memlock_to_hard();
        let cap = eff.is_some_and(|eff| eff & (1 << CAP_SYS_RESOURCE) != 0);
        if let Some(what) = memlock_shortfall(release, hard, cap) {
            missing.push(Missing { what, kinds: &[] });
        }
    }
    let mut all = |what: String| missing.push(Missing { what, kinds: &[] });

    // The CRI, and through it whether we see the node's processes: the
    // runtime's pid as our namespace numbers it (SO_PEERCRED, translated
    // by the kernel: 0 when it is not visible from here, net/core/sock.c
    // cred_to_ucred / pid_vnr).
    let socket = chaos::runtime::cri_socket();
    let runtime_pid = match UnixStream::connect(&socket) {
        Err(e) => {
            all(format!(
                "no CRI socket at {} ({e}): mount the node's CRI socket (a hostPath volume; \
                 CONTAINER_RUNTIME_ENDPOINT names another)",
                socket.display()
            ));
            None
        }
        Ok(s) => match peer_pid(&s) {
            Some(0) | None => {
                all("the container runtime's processes are not visible: set hostPID: true (the CRI \
                     answers with the node's pids)"
                    .into());
                None
            }
            Some(pid) => Some(pid),
        },
    };
    let in_container = runtime_pid.is_some_and(|pid| ns(pid, "mnt") != ns_self("mnt"));

    // The node's cgroup namespace: a container runtime gives a container
    // one of its own on cgroup v2, where /proc/PID/cgroup of the pods
    // reads "/../.." paths relative to the agent's own cgroup.
    if runtime_pid.is_some()
        && ns(1, "cgroup") != ns_self("cgroup")
        && let Err(e) = enter_cgroupns(1)
    {
        all(format!(
            "cannot enter the node's cgroup namespace (/proc/1/ns/cgroup: {e}): the agent needs hostPID, \
             CAP_SYS_ADMIN and CAP_SYS_PTRACE"
        ));
    }

    // The node's whole cgroup2 hierarchy, writable: the agent's own cgroup
    // must be found under it as the node's namespace names it.
    let (mut guardians, mut home) = (None, None);
    match CgroupFs::discover() {
        Err(e) => all(format!("{e}: mount the node's /sys/fs/cgroup (a hostPath volume)")),
        Ok(fs) => {
            let own = own_cgroup();
            let seen = own.as_ref().is_some_and(|rel| fs.mount.join(rel).join("cgroup.procs").exists());
            if !seen {
                all(format!(
                    "{} is not the node's cgroup v2 hierarchy (the agent's own cgroup {} is not under it): \
                     mount the node's /sys/fs/cgroup (a hostPath volume)",
                    fs.mount.display(),
                    own.map_or_else(|| "?".into(), |p| format!("/{}", p.display()))
                ));
            } else if read_only(&fs.mount) {
                all(format!(
                    "{} is mounted read-only: mount the node's /sys/fs/cgroup read-write (a hostPath volume, \
                     not the runtime's own read-only mount)",
                    fs.mount.display()
                ));
            } else if let Some(parent) = own.as_ref().and_then(|own| own.parent()) {
                let pod = fs.mount.join(parent);
                let dir = pod.join(GUARDIANS);
                match make_cgroup(&dir) {
                    Ok(()) => {
                        guardians = Some(dir);
                        home = Some(pod);
                    }
                    Err(e) => all(format!("cannot make the guardians' cgroup {}: {e}", dir.display())),
                }
            }
        }
    }

    // The state files: on the node, so that the next agent finds what this
    // one left.
    let dir = chaos::state::state_dir();
    let state = match fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| chaos::state::checked_state_dir().map_err(|e| e.to_string()))
    {
        Err(e) => {
            all(format!(
                "cannot use {} ({e}): mount the node's {} (a hostPath volume)",
                dir.display(),
                dir.display()
            ));
            None
        }
        Ok(dir) if in_container && same_device(&dir, Path::new("/")) => {
            all(format!(
                "{} is in the container's own filesystem, lost with it: mount the node's {} (a hostPath volume)",
                dir.display(),
                dir.display()
            ));
            None
        }
        Ok(dir) => Some(dir),
    };
    Checked { missing, guardians, home, state }
}

/// Remove the guardians' cgroup if no guardian is left in it.
pub fn remove_guardians(dir: &Path) {
    // EBUSY while a guardian runs: the next agent removes it.
    let _ = fs::remove_dir(dir);
}

/// The running kernel's (major, minor).
fn kernel_release() -> Option<(u32, u32)> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Set RLIMIT_MEMLOCK's soft limit to its hard one; the hard one.
fn raise_memlock_to_hard() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given (the soft limit up
        // to the hard one, which any process may do).
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) };
    }
    limit.rlim_max
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn peer_pid(s: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (r == 0).then_some(cred.pid)
}

/// A namespace's identity (`type:[inode]`), if it can be read.
fn ns(pid: i32, kind: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

fn ns_self(kind: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/self/ns/{kind}")).ok()
}

fn enter_cgroupns(pid: i32) -> std::io::Result<()> {
    let f = fs::File::open(format!("/proc/{pid}/ns/cgroup"))?;
    // SAFETY: setns with an open namespace file and its type.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This process's cgroup v2, relative to the hierarchy's root as our
/// cgroup namespace names it.
fn own_cgroup() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    // "/../x" means our namespace does not reach the node's root.
    (!path.split('/').any(|c| c == "..")).then(|| PathBuf::from(path.trim_start_matches('/')))
}

fn same_device(a: &Path, b: &Path) -> bool {
    matches!((fs::metadata(a), fs::metadata(b)), (Ok(a), Ok(b)) if a.dev() == b.dev())
}

fn read_only(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else { return true };
    // SAFETY: statvfs with a NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &raw mut st) }) == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// Make cgroup `dir`, or take the one an earlier agent made: a real
/// directory, owned by root, with cgroup.procs (a cgroup, not a planted
/// file tree).
fn make_cgroup(dir: &Path) -> std::io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir)?;
            if meta.is_dir() && meta.uid() == 0 && dir.join("cgroup.procs").exists() {
                Ok(())
            } else {
                Err(std::io::Error::other("it exists and is not a cgroup owned by root"))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_item_refuses_the_kinds_that_need_it() {
        let missing = vec![
            Missing { what: "it lacks CAP_KILL".into(), kinds: &["kill"] },
            Missing { what: "no CRI socket".into(), kinds: &[] },
        ];
        assert_eq!(
            refusal("kill", &missing).as_deref(),
            Some("the agent's pod cannot run kill: it lacks CAP_KILL; no CRI socket")
        );
        assert_eq!(
            refusal("pause", &missing).as_deref(),
            Some("the agent's pod cannot run pause: no CRI socket")
        );
        assert_eq!(refusal("pause", &missing[..1]), None);
    }

    #[test]
    fn memlock_matters_before_5_11_below_the_need_without_the_capability() {
        let default_5_10 = 64 << 10;
        let refused = memlock_shortfall((5, 10), default_5_10, false).unwrap();
        assert!(refused.contains("RLIMIT_MEMLOCK") && refused.contains("64 KiB"), "{refused}");
        assert!(refused.contains("SYS_RESOURCE") && refused.contains("LimitMEMLOCK=infinity"), "{refused}");
        assert_eq!(memlock_shortfall((5, 10), default_5_10, true), None);
        assert_eq!(memlock_shortfall((5, 10), libc::RLIM_INFINITY, false), None);
        assert_eq!(memlock_shortfall((5, 10), 64 << 20, false), None);
        assert_eq!(memlock_shortfall((5, 11), default_5_10, false), None);
        assert_eq!(memlock_shortfall((6, 1), 0, false), None);
        assert!(memlock_shortfall((4, 19), 8 << 20, false).is_some());
    }
}

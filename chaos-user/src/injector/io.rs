//! The I/O part of the injector: rules keyed by target cgroup, the level
//! mask, the field offsets of this kernel, the calibration of each path
//! prefix to the inode the kernel resolves it to, and the two links: BPF
//! LSM programs on `file_open` and `file_permission`, or fmod_ret programs
//! on `security_file_open` and `security_file_permission` (see
//! crate::plan::io). Either kind is global (it runs for every task; the
//! cgroup filter is in the program), so each is attached once,
//! reference-counted over the attacks that use it, and its link is an fd:
//! it vanishes with this process.
//!
//! Not implemented: the kprobe + `bpf_override_return` mechanism for
//! kernels without the `bpf` LSM. It would attach to error-injectable
//! functions (every syscall entry is: SYSCALL_DEFINE marks them
//! ALLOW_ERROR_INJECTION, include/linux/syscalls.h), find the file from the
//! fd argument (current->files, read with bpf_probe_read_kernel) for reads
//! and writes, and could only see the user's path *string* for opens, which
//! breaks the "paths as the kernel resolves them" promise unless a second
//! probe on a resolved-path function fed it. It needs a kernel with
//! CONFIG_BPF_KPROBE_OVERRIDE to be tested, and none is available here.

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{Lsm, links::Link as _, lsm::LsmLink},
};
use chaos_abi::io::{
    self, IoCalibration, IoConfig, IoCounters, IoOffsets, IoRule, MAX_INODES, MAX_LISTED_TARGETS,
    TARGETS_UNLISTED,
};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    links::LinkSet,
    maps::{btf_offsets, map, map_mut},
    rules::{CounterFields, RuleTable, named},
};
use crate::{
    attach::fmod_ret::{self, FmodRetLink},
    attack::Attack,
    btf::Btf,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::{IoError, PathsIn},
    plan::{IoMechanism, IoVia, IoWalk},
    targets::pids_in_subtree,
};

/// The two places a mechanism runs the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    /// Opens; also answers the calibration opens.
    Open,
    /// Reads, writes, directory reads.
    Rw,
}

/// The program of `m` at `hook`, and what it attaches to: an LSM hook,
/// or a kernel function.
fn program(m: &IoMechanism, hook: Hook) -> (&'static str, &'static str) {
    match (m.via, m.walk, hook) {
        (IoVia::BpfLsm, _, Hook::Open) => ("io_open", "file_open"),
        (IoVia::BpfLsm, _, Hook::Rw) => ("io_rw", "file_permission"),
        (IoVia::FmodRet, IoWalk::BpfLoop, Hook::Open) => ("io_fmod_open", "security_file_open"),
        (IoVia::FmodRet, IoWalk::BpfLoop, Hook::Rw) => ("io_fmod_rw", "security_file_permission"),
        (IoVia::FmodRet, IoWalk::Bounded, Hook::Open) => ("io_bounded_open", "security_file_open"),
        (IoVia::FmodRet, IoWalk::Bounded, Hook::Rw) => ("io_bounded_rw", "security_file_permission"),
    }
}

/// An attached program of either kind.
enum IoLink {
    Lsm(LsmLink),
    FmodRet(FmodRetLink),
}

impl IoLink {
    fn detach(self, name: &str) -> Result<()> {
        match self {
            Self::Lsm(link) => link
                .detach()
                .map_err(|e| Error::kernel(format!("detaching {name}"), anyhow::anyhow!(describe(&e)))),
            // Closing the link's fd detaches it.
            Self::FmodRet(link) => {
                drop(link);
                Ok(())
            }
        }
    }
}

/// What a running I/O attack holds.
#[derive(Debug, Default)]
pub struct Handle {
    /// The programs it attached (counted in the link set), by name.
    open: Option<&'static str>,
    rw: Option<&'static str>,
    /// The prefixes, open: an open file pins its dentry and inode, so the
    /// inode addresses in the rule stay valid and unique while it exists.
    _pins: Vec<OwnedFd>,
}

/// Rules, links and offsets shared by every I/O attack.
pub struct Io {
    /// The rules; IoConfig lists their targets.
    rules: RuleTable<IoRule, IoCounters>,
    /// The links, by program name.
    links: LinkSet<&'static str, IoLink>,
    offsets: Option<IoOffsets>,
}

impl Default for Io {
    fn default() -> Self {
        Self {
            rules: RuleTable::new(
                io::RULES,
                io::COUNTERS,
                "an I/O fault in this run; combine them into one attack",
            ),
            links: LinkSet::default(),
            offsets: None,
        }
    }
}

/// The names of [`IoCounters`]' fields (`matched` and `failed` by `IDX_*`)
/// in events and reports, in declaration order.
pub(super) const COUNTER_NAMES: &str = "open_matched read_matched write_matched readdir_matched open_failed read_failed \
                             write_failed readdir_failed - unresolved";

// SAFETY: #[repr(C)], u64 fields only (chaos-abi).
unsafe impl CounterFields for IoCounters {}

/// One prefix resolved to a kernel inode.
struct Resolved {
    inode: u64,
    pin: OwnedFd,
    shown: String,
}

/// Look the paths up, changing nothing: see [`super::preflight`].
pub(super) fn preflight(attack: &Attack, fault: &IoError) -> Result<()> {
    lookup_all(fault, &roots(attack, fault.paths_in)?).map(drop)
}

impl FamilyInjector for Io {
    type Fault = IoError;
    type Mechanism = IoMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, mechanism, slot, .. } = *start;
        // Look the paths up first: what can be wrong with the user's
        // input is found before anything is attached.
        let found = lookup_all(fault, &roots(attack, fault.paths_in)?)?;
        self.offsets()?;
        self.write_config(&mut shared.ebpf, 0)?;
        // The open program both injects and answers calibrations: it must
        // run before the paths can be resolved to inodes.
        handle.open = Some(self.acquire(&mut shared.ebpf, mechanism, Hook::Open)?);
        let resolved = self.calibrate(&mut shared.ebpf, found)?;
        for r in &resolved {
            tracing::debug!(attack = %attack.id, "{} is kernel inode {:#x}", r.shown, r.inode);
        }
        let inodes: Vec<u64> = resolved.iter().map(|r| r.inode).collect();
        handle._pins = resolved.into_iter().map(|r| r.pin).collect();
        // Before the rule: loading it may take seconds (the verifier, on
        // an emulated CPU), and it does nothing until the rule exists.
        if mechanism.file_permission {
            handle.rw = Some(self.acquire(&mut shared.ebpf, mechanism, Hook::Rw)?);
        }
        self.rules.reset_counters(&mut shared.ebpf, slot)?;
        reset_calls(&mut shared.ebpf, slot)?;
        self.insert_rule(&mut shared.ebpf, attack, fault.rule(start.deadline_from_now(), slot, &inodes))?;
        Ok(())
    }

    /// Delete the rule (the fault is inert from the returned instant on),
    /// then release the links.
    fn stop(&mut self, shared: &mut Shared, attack: &Attack, handle: Handle) -> Stopping {
        // Only the rule this attack wrote (see RuleTable::remove).
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        let mut released = Ok(());
        for name in [handle.rw, handle.open].into_iter().flatten() {
            released = released.and(self.release(name));
        }
        // The pins close with the handle, after the rule that names their
        // inodes is gone.
        drop(handle);
        (inert, released)
    }

    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let c = self.rules.counters(&shared.ebpf, slot)?;
        Ok(Counters {
            matched: c.matched.iter().sum(),
            injected: c.failed.iter().sum(),
            expired: c.expired,
            detail: named(&c, COUNTER_NAMES),
        })
    }
}

impl Io {
    /// This kernel's field offsets, from its BTF (once).
    fn offsets(&mut self) -> Result<IoOffsets> {
        btf_offsets(&mut self.offsets, ["io-error", "find struct offsets", "file structures"], offsets_from)
    }

    fn write_config(&mut self, ebpf: &mut Ebpf, calibrate_pid_tgid: u64) -> Result<()> {
        let targets = self.rules.targets();
        let mut value = IoConfig {
            levels: self.rules.levels(),
            calibrate_pid_tgid,
            offsets: self.offsets.unwrap_or_default(),
            ..Default::default()
        };
        if targets.len() > MAX_LISTED_TARGETS {
            value.n_targets = TARGETS_UNLISTED;
        } else {
            value.targets[..targets.len()].copy_from_slice(&targets);
            value.n_targets = targets.len() as u32;
        }
        let mut config: Array<&mut MapData, IoConfig> = map_mut(ebpf, io::CONFIG)?;
        config.set(0, &value, 0).map_err(|e| Error::kernel("writing the I/O fault configuration", e))
    }

    /// Re-open every looked-up path with the calibration on, and read back
    /// the inode the kernel resolved it to.
    fn calibrate(&mut self, ebpf: &mut Ebpf, found: Vec<(OwnedFd, String)>) -> Result<Vec<Resolved>> {
        // bpf_get_current_pid_tgid(): thread group id high, thread id low.
        // SAFETY: no preconditions.
        let pid_tgid = ((unsafe { libc::getpid() } as u64) << 32) | unsafe { libc::gettid() } as u64;
        let mut resolved: Vec<Resolved> = Vec::new();
        for (pin, shown) in found {
            let inode = self.calibrate_one(ebpf, &pin, pid_tgid, &shown)?;
            if !resolved.iter().any(|r| r.inode == inode) {
                resolved.push(Resolved { inode, pin, shown });
            }
        }
        if resolved.len() > MAX_INODES {
            return Err(Error::invalid(format!(
                "the paths resolve to {} different files across the target's root directories, at most \
                 {MAX_INODES}; give fewer paths, or --paths-in host",
                resolved.len()
            )));
        }
        Ok(resolved)
    }

    fn calibrate_one(&mut self, ebpf: &mut Ebpf, pin: &OwnedFd, pid_tgid: u64, shown: &str) -> Result<u64> {
        {
            let mut cal: Array<&mut MapData, IoCalibration> = map_mut(ebpf, io::CALIBRATION)?;
            cal.set(0, &IoCalibration::default(), 0)
                .map_err(|e| Error::kernel("resetting the calibration slot", e))?;
        }
        self.write_config(ebpf, pid_tgid)?;
        // Re-open the very object we looked up (not the path again: it may
        // have been renamed since). O_RDONLY works for directories and
        // regular files (the only kinds `lookup` lets through); O_NONBLOCK
        // and O_NOCTTY for safety; file_open runs for it, O_PATH would not.
        use std::os::unix::fs::OpenOptionsExt as _;
        let again = format!("/proc/self/fd/{}", pin.as_raw_fd());
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&again);
        let cleared = self.write_config(ebpf, 0);
        let file = opened.map_err(|e| Error::kernel(format!("opening {shown} to resolve it"), e))?;
        cleared?;
        drop(file);
        let cal: Array<&MapData, IoCalibration> = map(ebpf, io::CALIBRATION)?;
        let got = cal.get(&0, 0).map_err(|e| Error::kernel("reading the calibration slot", e))?;
        if got.pid_tgid != pid_tgid || got.inode == 0 {
            return Err(Error::kernel(
                format!("resolving {shown}"),
                anyhow::anyhow!(
                    "the file_open program did not report the open (another LSM may have refused it, or \
                     the program is not running)"
                ),
            ));
        }
        Ok(got.inode)
    }

    fn insert_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack, rule: IoRule) -> Result<()> {
        self.rules.insert(ebpf, attack, &rule)?;
        self.write_config(ebpf, 0)
    }

    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        if self.rules.remove(ebpf, attack)? {
            self.write_config(ebpf, 0)?;
        }
        Ok(())
    }

    /// Attach the program of `m` at `hook` (loading it first if
    /// needed), or count one more user; its name.
    fn acquire(&mut self, ebpf: &mut Ebpf, m: &IoMechanism, hook: Hook) -> Result<&'static str> {
        let (name, target) = program(m, hook);
        self.links.acquire(name, || match m.via {
            IoVia::BpfLsm => attach_lsm(ebpf, name, target).map(IoLink::Lsm),
            IoVia::FmodRet => fmod_ret::attach(ebpf, crate::ebpf::faults_object(), name, target)
                .map(IoLink::FmodRet)
                .map_err(|e| {
                    Error::kernel(format!("loading program {name} (fmod_ret/{target})"), anyhow::anyhow!(e))
                }),
        })?;
        Ok(name)
    }

    fn release(&mut self, name: &'static str) -> Result<()> {
        match self.links.release(&name) {
            Some(link) => link.detach(name),
            None => Ok(()),
        }
    }
}

/// Load (if needed) and attach the LSM program `name` to `hook`.
fn attach_lsm(ebpf: &mut Ebpf, name: &str, hook: &str) -> Result<LsmLink> {
    let btf = crate::btf::kernel_aya()
        .map_err(|e| Error::environment(format!("io-error needs the kernel's BTF: {e}")))?;
    let prog: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("program {name} missing")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::kernel(name.to_owned(), e))?;
    if prog.fd().is_err() {
        prog.load(hook, btf).map_err(|e| {
            Error::kernel(format!("loading program {name} (lsm/{hook})"), anyhow::anyhow!(describe(&e)))
        })?;
    }
    let id = prog.attach().map_err(|e| {
        Error::kernel(format!("attaching {name} to lsm/{hook}"), anyhow::anyhow!(describe(&e)))
    })?;
    prog.take_link(id).map_err(|e| Error::kernel(format!("taking the {name} link"), e))
}

/// Look every path up in every root; each must exist in at least one.
fn lookup_all(fault: &IoError, roots: &[Root]) -> Result<Vec<(OwnedFd, String)>> {
    let mut found = Vec::new();
    for path in &fault.paths {
        let mut missing = Vec::new();
        let before = found.len();
        for root in roots {
            match lookup(root, path)? {
                Some(fd) => found.push((fd, format!("{} ({})", path.display(), root.label))),
                None => missing.push(root.label.clone()),
            }
        }
        if found.len() == before {
            return Err(Error::invalid(format!(
                "--path {} does not exist (looked up {}); io-error matches files by the identity of the \
                 directory or file, so it must exist when the attack starts",
                path.display(),
                missing.join(", ")
            )));
        }
        if !missing.is_empty() {
            tracing::warn!("{} does not exist {}: not matched there", path.display(), missing.join(", "));
        }
    }
    if found.len() > 4 * MAX_INODES {
        return Err(Error::invalid(format!(
            "the paths exist in {} places across the target's root directories; give fewer paths, or \
             --paths-in host",
            found.len()
        )));
    }
    Ok(found)
}

/// The offsets the programs need, from this kernel's BTF.
pub fn offsets_from(btf: &Btf) -> Result<IoOffsets, crate::btf::BtfError> {
    Ok(IoOffsets {
        file_inode: btf.offset_of("file", "f_inode")?,
        file_mnt: btf.offset_of("file", "f_path.mnt")?,
        file_dentry: btf.offset_of("file", "f_path.dentry")?,
        dentry_parent: btf.offset_of("dentry", "d_parent")?,
        dentry_inode: btf.offset_of("dentry", "d_inode")?,
        inode_mode: btf.offset_of("inode", "i_mode")?,
        mount_mnt: btf.offset_of("mount", "mnt")?,
        mount_parent: btf.offset_of("mount", "mnt_parent")?,
        mount_mountpoint: btf.offset_of("mount", "mnt_mountpoint")?,
        _pad: 0,
    })
}

/// A new attack's call count starts at zero.
fn reset_calls(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let mut calls: Array<&mut MapData, u64> = map_mut(ebpf, io::CALLS)?;
    calls.set(slot, &0, 0).map_err(|e| Error::kernel("resetting the call count", e))
}

/// A root directory paths are looked up in.
struct Root {
    dir: OwnedFd,
    /// For messages: "in the root of pid 4242" or "in chaos's root".
    label: String,
}

/// The distinct root directories (and mount namespaces) of the target's
/// processes, or ours.
fn roots(attack: &Attack, paths_in: PathsIn) -> Result<Vec<Root>> {
    let ours = || -> Result<Vec<Root>> {
        let dir = open_path(Path::new("/")).map_err(|e| Error::kernel("opening / to look paths up", e))?;
        Ok(vec![Root { dir, label: "in chaos's root directory".into() }])
    };
    if paths_in == PathsIn::Host {
        return ours();
    }
    let mut seen: Vec<(u64, u64, u64)> = Vec::new();
    let mut out = Vec::new();
    for pid in pids_in_subtree(&attack.target.path) {
        // The same root directory in another mount namespace can show other
        // mounts: both identify a view.
        let Some(key) = view_of(&format!("/proc/{pid}")) else { continue };
        if seen.contains(&key) {
            continue;
        }
        let Ok(dir) = open_path(Path::new(&format!("/proc/{pid}/root"))) else { continue };
        seen.push(key);
        out.push(Root { dir, label: format!("in the root directory of target process {pid}") });
    }
    if out.is_empty() {
        return ours();
    }
    // The target sees what we see: say so in messages.
    if out.len() == 1 && view_of("/proc/self") == seen.first().copied() {
        return ours();
    }
    Ok(out)
}

/// (mount namespace, root device, root inode) of a process.
fn view_of(proc_dir: &str) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata(format!("{proc_dir}/ns/mnt")).ok()?.ino();
    let root = std::fs::metadata(format!("{proc_dir}/root")).ok()?;
    Some((ns, root.dev(), root.ino()))
}

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f: File = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// Look `path` up in `root` as a process whose root it is would: absolute
/// symlinks and `..` stay inside it (openat2 RESOLVE_IN_ROOT, Linux 5.6).
/// `None` when it does not exist; an error when it is not a directory or a
/// regular file.
fn lookup(root: &Root, path: &Path) -> Result<Option<OwnedFd>> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("--path {} contains a NUL byte", path.display())))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: valid C string and open_how of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
            _ => Err(Error::invalid(format!("--path {} ({}): {err}", path.display(), root.label))),
        };
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::kernel(format!("stat {}", path.display()), std::io::Error::last_os_error()));
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR | libc::S_IFREG => Ok(Some(fd)),
        _ => Err(Error::invalid(format!(
            "--path {} ({}) is neither a directory nor a regular file; give the directory the files are in",
            path.display(),
            root.label
        ))),
    }
}

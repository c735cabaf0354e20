//! Program-type probes: load a program of the `capabilities` object and
//! attach it somewhere harmless, then let everything drop.

use std::{fs, os::fd::AsFd, path::PathBuf};

use aya::{
    Btf, Ebpf,
    maps::SockHash,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, FEntry, KProbe, Lsm,
        RawTracePoint, SchedClassifier, SkLookup, SkMsg, SockOps, TcAttachType, TracePoint, UProbe,
        tc::{self, NlOptions, TcAttach},
        uprobe::UProbeScope,
    },
};

use super::environment;
use crate::{
    attach::netns::in_private_netns,
    ebpf::{self, describe},
    targets::CgroupFs,
};

type Outcome = Result<String, String>;

fn object() -> Result<Ebpf, String> {
    ebpf::load_capabilities().map_err(|e| e.to_string())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the capabilities object"))?
        .try_into()
        .map_err(|_| format!("program {name} has an unexpected type"))
}

fn kernel_btf() -> Result<&'static Btf, String> {
    crate::btf::kernel_aya().map_err(|e| format!("no usable kernel BTF: {e}"))
}

pub fn tcx() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut SchedClassifier = program(&mut ebpf, "probe_sched_cls")?;
    prog.load().map_err(|e| describe(&e))?;
    in_private_netns(|| {
        prog.attach(c"lo", TcAttach::Tcx { attach_type: TcAttachType::Egress, order: Default::default() })
            .map(|_| "TCX egress link attached to lo in a private netns".to_owned())
            .map_err(|e| describe(&e))
    })
    .map_err(|e| format!("cannot create a private network namespace: {e}"))?
}

pub fn tc_netlink() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut SchedClassifier = program(&mut ebpf, "probe_sched_cls")?;
    prog.load().map_err(|e| describe(&e))?;
    in_private_netns(|| {
        tc::qdisc_add_clsact(c"lo").map_err(|e| format!("adding clsact: {e}"))?;
        let link = prog
            .attach(
                c"lo",
                TcAttach::Netlink { parent: TcAttachType::Egress.into(), options: NlOptions::default() },
            )
            .map_err(|e| describe(&e))?;
        // Detach here, inside the namespace: left to the namespace's
        // teardown, the filter (and the program it holds) lives on until
        // the kernel's cleanup_net work runs, long after chaos exits on a
        // slow machine (net/core/net_namespace.c).
        prog.detach(link).map_err(|e| format!("detaching the probe's filter: {}", describe(&e)))?;
        Ok("clsact + cls_bpf filter attached to lo in a private netns".to_owned())
    })
    .map_err(|e| format!("cannot create a private network namespace: {e}"))?
}

/// Where scratch cgroups are made when not under the root ([`scratch_in`]).
static SCRATCH_HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Make this process's probes' scratch cgroups in cgroup `dir` rather than
/// under the root: a process without CAP_DAC_OVERRIDE (the node agent in
/// its container) cannot make a directory at a hierarchy's root, which
/// kernfs makes 0555 (fs/kernfs/dir.c, `kernfs_create_root`). Set once.
pub fn scratch_in(dir: PathBuf) {
    let _ = SCRATCH_HOME.set(dir);
}

/// Where this process makes its scratch cgroups, under hierarchy `mount`.
pub fn scratch_home(mount: &std::path::Path) -> PathBuf {
    SCRATCH_HOME.get().cloned().unwrap_or_else(|| mount.to_owned())
}

/// A cgroup made for the probe and removed after it:
/// `chaos-probe-<pid>-<random>` under the root (or [`scratch_in`]'s
/// cgroup), so that a leftover (of a probe that was killed, or planted by
/// someone) can never be the name a probe needs — `mkdir` then fails and
/// the capability would read as missing. Leftovers of dead chaos processes, in that exact form and
/// empty (rmdir refuses a cgroup with processes or children), are removed.
struct ScratchCgroup(PathBuf);

const SCRATCH_PREFIX: &str = "chaos-probe-";

impl ScratchCgroup {
    fn new() -> Result<Self, String> {
        let fs = CgroupFs::discover().map_err(|e| e.to_string())?;
        let home = scratch_home(&fs.mount);
        let _ = remove_dead_scratch(&home);
        let suffix = crate::safe_fs::random_suffix().map_err(|e| format!("getrandom: {e}"))?;
        let dir = home.join(format!("{SCRATCH_PREFIX}{}-{suffix}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
    fn open(&self) -> Result<fs::File, String> {
        fs::File::open(&self.0).map_err(|e| e.to_string())
    }
}

/// The pid in a scratch cgroup's name `chaos-probe-<pid>-<16 hex digits>`.
fn scratch_owner(name: &str) -> Option<i32> {
    let (pid, suffix) = name.strip_prefix(SCRATCH_PREFIX)?.split_once('-')?;
    (suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Remove the scratch cgroups of chaos processes that died while probing
/// (kill -9): those are in no state file, they live for milliseconds.
/// Returns each removed one with its owner's pid. `chaos recover` and every
/// probe that makes a scratch cgroup call this.
pub fn remove_dead_scratch(mount: &std::path::Path) -> Vec<(PathBuf, i32)> {
    let mut removed = Vec::new();
    for e in fs::read_dir(mount).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(scratch_owner) else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && fs::remove_dir(e.path()).is_ok() {
            tracing::info!("removed {}, left by chaos pid {pid} (killed while probing)", e.path().display());
            removed.push((e.path(), pid));
        }
    }
    removed
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

pub fn cgroup_skb() -> Outcome {
    let cg = ScratchCgroup::new()?;
    let mut ebpf = object()?;
    let prog: &mut CgroupSkb = program(&mut ebpf, "probe_cgroup_skb")?;
    prog.load().map_err(|e| describe(&e))?;
    let dir = cg.open()?;
    prog.attach(dir.as_fd(), CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|e| describe(&e))?;
    drop(ebpf);
    Ok("ingress link attached to a scratch cgroup".into())
}

pub fn cgroup_sock_addr() -> Outcome {
    let cg = ScratchCgroup::new()?;
    let mut ebpf = object()?;
    let prog: &mut CgroupSockAddr = program(&mut ebpf, "probe_sock_addr")?;
    prog.load().map_err(|e| describe(&e))?;
    let dir = cg.open()?;
    prog.attach(dir.as_fd(), CgroupAttachMode::Single).map_err(|e| describe(&e))?;
    drop(ebpf);
    Ok("connect4 link attached to a scratch cgroup".into())
}

/// dns-error's DNS over TCP: a sock_ops program attached to a scratch
/// cgroup, and an sk_msg program with `dns_msg`'s helpers attached to a
/// sockhash (nothing is ever put in it).
pub fn sk_msg() -> Outcome {
    let cg = ScratchCgroup::new()?;
    let mut ebpf = object()?;
    let socks: SockHash<_, u32> = ebpf
        .take_map("PROBE_SOCKS")
        .ok_or("map PROBE_SOCKS missing from the capabilities object")?
        .try_into()
        .map_err(|e: aya::maps::MapError| e.to_string())?;
    let ops: &mut SockOps = program(&mut ebpf, "probe_sock_ops")?;
    ops.load().map_err(|e| describe(&e))?;
    let dir = cg.open()?;
    ops.attach(dir.as_fd(), CgroupAttachMode::Single).map_err(|e| describe(&e))?;
    let msg: &mut SkMsg = program(&mut ebpf, "probe_sk_msg")?;
    msg.load().map_err(|e| describe(&e))?;
    msg.attach(socks.fd()).map_err(|e| describe(&e))?;
    drop(ebpf);
    Ok("sock_ops link attached to a scratch cgroup; sk_msg with an ingress redirect and the ancestor \
        cgroup helper attached to a sockhash"
        .into())
}

/// Loaded only: whether the verifier lets a sock_addr program call
/// `bpf_set_retval` (net-refuse's programs that give an errno).
pub fn sock_addr_retval() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut CgroupSockAddr = program(&mut ebpf, "probe_sock_addr_retval")?;
    prog.load().map_err(|e| describe(&e))?;
    Ok("a connect4 program calling bpf_set_retval loaded".into())
}

pub fn sk_lookup() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut SkLookup = program(&mut ebpf, "probe_sk_lookup")?;
    prog.load().map_err(|e| describe(&e))?;
    in_private_netns(|| {
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening the private namespace: {e}"))?;
        prog.attach(netns).map(|_| "attached to a private netns".to_owned()).map_err(|e| describe(&e))
    })
    .map_err(|e| format!("cannot create a private network namespace: {e}"))?
}

pub fn tracepoint() -> Outcome {
    environment::with_tracefs(|| {
        let mut ebpf = object()?;
        let prog: &mut TracePoint = program(&mut ebpf, "probe_tracepoint")?;
        prog.load().map_err(|e| describe(&e))?;
        prog.attach("syscalls", "sys_enter_getppid").map_err(|e| describe(&e))?;
        Ok("attached to syscalls/sys_enter_getppid".to_owned())
    })?
}

pub fn raw_tracepoint() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut RawTracePoint = program(&mut ebpf, "probe_raw_tracepoint")?;
    prog.load().map_err(|e| describe(&e))?;
    prog.attach("sys_enter").map_err(|e| describe(&e))?;
    Ok("attached to sys_enter".into())
}

pub fn tp_btf() -> Outcome {
    let btf = kernel_btf()?;
    let mut ebpf = object()?;
    let prog: &mut BtfTracePoint = program(&mut ebpf, "probe_tp_btf")?;
    prog.load("sys_enter", btf).map_err(|e| describe(&e))?;
    prog.attach().map_err(|e| describe(&e))?;
    Ok("attached to sys_enter".into())
}

/// The function the uprobe probe attaches to: ours, so the probe never
/// touches another binary.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chaos_uprobe_probe_target() -> u64 {
    std::hint::black_box(7)
}

/// Before Linux 4.17 aya makes uprobes and kprobes through tracefs
/// (`uprobe_events`), where they outlive the process that made them
/// (`attach_perf_event_probe()` in aya's programs/probe.rs): refused, so
/// that chaos never leaves one behind. 4.17 added the perf PMUs.
fn probes_are_fd_owned() -> Result<(), String> {
    use aya::util::KernelVersion;
    match KernelVersion::current() {
        Ok(v) if v >= KernelVersion::new(4, 17, 0) => Ok(()),
        Ok(v) => Err(format!(
            "kernel {v} is older than 4.17: probes would be tracefs events that outlive chaos; not used"
        )),
        Err(e) => Err(format!("cannot read the kernel version: {e}")),
    }
}

pub fn uprobe() -> Outcome {
    probes_are_fd_owned()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut ebpf = object()?;
    let prog: &mut UProbe = program(&mut ebpf, "probe_uprobe")?;
    prog.load().map_err(|e| describe(&e))?;
    prog.attach(["chaos_uprobe_probe_target"], &exe, UProbeScope::CallingProcess)
        .map_err(|e| describe(&e))?;
    // Calling it keeps the symbol in the binary (and fires the probe once).
    chaos_uprobe_probe_target();
    Ok(format!("attached to a function of {}", exe.display()))
}

pub fn kprobe() -> Outcome {
    probes_are_fd_owned()?;
    let mut ebpf = object()?;
    let prog: &mut KProbe = program(&mut ebpf, "probe_kprobe")?;
    prog.load().map_err(|e| describe(&e))?;
    prog.attach("do_sys_openat2", 0)
        .map_err(|e| format!("{} (needs CONFIG_KPROBES and CONFIG_KPROBE_EVENTS)", describe(&e)))?;
    Ok("attached to do_sys_openat2".into())
}

/// An error-injectable syscall entry (SYSCALL_DEFINE marks every syscall
/// ALLOW_ERROR_INJECTION; include/linux/syscalls.h).
const INJECTABLE: &str =
    if cfg!(target_arch = "aarch64") { "__arm64_sys_getppid" } else { "__x64_sys_getppid" };

pub fn kprobe_override() -> Outcome {
    probes_are_fd_owned()?;
    let mut ebpf = object()?;
    let prog: &mut KProbe = program(&mut ebpf, "probe_kprobe_override")?;
    prog.load()
        .map_err(|e| format!("{} (bpf_override_return needs CONFIG_BPF_KPROBE_OVERRIDE)", describe(&e)))?;
    prog.attach(INJECTABLE, 0)
        .map_err(|e| format!("{} (overriding needs CONFIG_FUNCTION_ERROR_INJECTION)", describe(&e)))?;
    Ok(format!("bpf_override_return accepted; attached to {INJECTABLE}"))
}

pub fn fentry() -> Outcome {
    let btf = kernel_btf()?;
    let mut ebpf = object()?;
    let prog: &mut FEntry = program(&mut ebpf, "probe_fentry")?;
    prog.load("do_sys_openat2", btf).map_err(|e| describe(&e))?;
    prog.attach().map_err(|e| describe(&e))?;
    Ok("attached to do_sys_openat2".into())
}

pub fn lsm() -> Outcome {
    let active = environment::active_lsms();
    if let Some(list) = &active
        && !list.split(',').any(|l| l == "bpf")
    {
        return Err(format!("`bpf` is not an active LSM ({list}); boot with lsm=...,bpf"));
    }
    let btf = kernel_btf()?;
    let mut ebpf = object()?;
    let prog: &mut Lsm = program(&mut ebpf, "probe_lsm")?;
    // The probe calls bpf_loop as io-error's programs do (see its source):
    // without it (before 5.17) they fail to load, whatever the LSM can do.
    // 5.13 to 5.16 say `unknown func bpf_loop`; older verifiers do not know
    // the callback's reference (BPF_PSEUDO_FUNC, 5.13) and count one
    // subprogram less than BTF describes (measured on Debian 11's 5.10
    // booted with lsm=...,bpf: "number of funcs in func_info doesn't match
    // number of subprogs"; kernel/bpf/verifier.c, check_btf_func).
    prog.load("file_open", btf).map_err(|e| match describe(&e) {
        d if d.contains("bpf_loop") || d.contains("func_info") => {
            format!("{d} (io-error's path walk needs bpf_loop and its callback, Linux 5.17)")
        }
        d => d,
    })?;
    prog.attach().map_err(|e| describe(&e))?;
    Ok(format!("attached to file_open (active LSMs: {})", active.unwrap_or_else(|| "unknown".into())))
}

/// Loaded only: whether the verifier lets tracing programs call
/// bpf_get_current_ancestor_cgroup_id (see the probe's source).
pub fn cgroup_ancestor() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut RawTracePoint = program(&mut ebpf, "probe_cgroup_ancestor")?;
    prog.load().map_err(|e| describe(&e))?;
    Ok("the verifier accepts bpf_get_current_ancestor_cgroup_id in tracing programs".into())
}

pub fn cgroup_read() -> Outcome {
    let btf = crate::btf::kernel().map_err(|e| format!("no usable kernel BTF: {e}"))?;
    let a = crate::ancestry::offsets(btf).map_err(|e| {
        // Linux 6.0 replaced the ids with pointers (`ancestors[]`); every
        // such kernel has the helper (5.14), so no reads are needed there.
        format!("{e} (Linux 6.0 replaced cgroup.ancestor_ids; from 5.14 on the ancestor helper serves)")
    })?;
    let mut ebpf = object()?;
    let prog: &mut RawTracePoint = program(&mut ebpf, "probe_cgroup_read")?;
    prog.load().map_err(|e| describe(&e))?;
    Ok(format!(
        "task_struct.cgroups +{}, css_set.dfl_cgrp +{}, cgroup.level +{}, cgroup.ancestor_ids +{} (BTF); \
         the verifier accepts bpf_probe_read_kernel",
        a.task_cgroups, a.css_set_dfl_cgrp, a.cgroup_level, a.cgroup_ancestor_ids
    ))
}

pub fn bpf_loop() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut RawTracePoint = program(&mut ebpf, "probe_bpf_loop")?;
    prog.load().map_err(|e| {
        let e = describe(&e);
        if e.contains("func_info") || e.contains("unknown func") {
            format!("{e} (bpf_loop: Linux 5.17)")
        } else {
            e
        }
    })?;
    Ok("the verifier accepts bpf_loop with a callback".into())
}

pub fn probe_write_user() -> Outcome {
    let mut ebpf = object()?;
    let prog: &mut RawTracePoint = program(&mut ebpf, "probe_write_user")?;
    match prog.load() {
        Ok(()) => Ok("the verifier accepts bpf_probe_write_user".into()),
        Err(e) => {
            let lockdown = environment::lockdown().unwrap_or_else(|| "unknown".into());
            // Said first and plainly: lockdown is the usual reason, and the
            // verifier's words do not name it (bpf_tracing_func_proto,
            // kernel/trace/bpf_trace.c: security_locked_down(LOCKDOWN_BPF_WRITE_USER)).
            if lockdown == "integrity" || lockdown == "confidentiality" {
                Err(format!("kernel lockdown={lockdown} forbids it ({})", describe(&e)))
            } else {
                Err(format!("{} (kernel lockdown: {lockdown})", describe(&e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_carry_their_owner() {
        assert_eq!(scratch_owner("chaos-probe-42-0123456789abcdef"), Some(42));
        // The old fixed form, others' names and near misses are never ours.
        for other in
            ["chaos-probe-42", "chaos-probe-42-xyz", "chaos-probe--1-0123456789abcdef", "chaos-test-1"]
        {
            assert_eq!(scratch_owner(other), None, "{other}");
        }
    }
}

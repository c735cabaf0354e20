//! Program-type probes: load a program of the `capabilities` object and
//! attach it somewhere harmless, then let everything drop.

use std::{fs, os::fd::AsFd, path::PathBuf};

use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, FEntry, KProbe, Lsm,
        RawTracePoint, SchedClassifier, TcAttachType, TracePoint, UProbe,
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

fn kernel_btf() -> Result<Btf, String> {
    Btf::from_sys_fs().map_err(|e| format!("no kernel BTF at /sys/kernel/btf/vmlinux: {e}"))
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
        prog.attach(
            c"lo",
            TcAttach::Netlink { parent: TcAttachType::Egress.into(), options: NlOptions::default() },
        )
        .map(|_| "clsact + cls_bpf filter attached to lo in a private netns".to_owned())
        .map_err(|e| describe(&e))
    })
    .map_err(|e| format!("cannot create a private network namespace: {e}"))?
}

/// A cgroup made for the probe and removed after it.
struct ScratchCgroup(PathBuf);

impl ScratchCgroup {
    fn new() -> Result<Self, String> {
        let fs = CgroupFs::discover().map_err(|e| e.to_string())?;
        let dir = fs.mount.join(format!("chaos-probe-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
    fn open(&self) -> Result<fs::File, String> {
        fs::File::open(&self.0).map_err(|e| e.to_string())
    }
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

pub fn tracepoint() -> Outcome {
    let mounted = environment::ensure_tracefs()?;
    let result = (|| {
        let mut ebpf = object()?;
        let prog: &mut TracePoint = program(&mut ebpf, "probe_tracepoint")?;
        prog.load().map_err(|e| describe(&e))?;
        prog.attach("syscalls", "sys_enter_getppid").map_err(|e| describe(&e))?;
        Ok("attached to syscalls/sys_enter_getppid".to_owned())
    })();
    if mounted {
        environment::unmount_tracefs();
    }
    result
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
    prog.load("sys_enter", &btf).map_err(|e| describe(&e))?;
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

pub fn uprobe() -> Outcome {
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
    prog.load("do_sys_openat2", &btf).map_err(|e| describe(&e))?;
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
    prog.load("file_open", &btf).map_err(|e| describe(&e))?;
    prog.attach().map_err(|e| describe(&e))?;
    Ok(format!("attached to file_open (active LSMs: {})", active.unwrap_or_else(|| "unknown".into())))
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

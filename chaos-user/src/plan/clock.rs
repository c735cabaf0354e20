//! Clock skew: where it is realized, and what it reaches.
//!
//! Every mechanism writes the shifted time into the target's memory with
//! `bpf_probe_write_user`, so that helper decides availability: kernel
//! lockdown (integrity, the Secure Boot default, or confidentiality) makes
//! the verifier refuse it, and clock-skew is then unavailable, said plainly.
//! With it, three hooks share one rule:
//! - the system calls `clock_gettime`, `gettimeofday` and `time`: fexit
//!   programs on their x86-64 entries where the kernel has BPF trampolines
//!   (only those calls pay), else syscall tracepoints (entry and exit;
//!   every system call on the machine then takes the kernel's slower
//!   tracing path while the attack runs): required;
//! - a raw tracepoint on `sched_process_exec` that detaches the vDSO of
//!   programs started in the target, so that all their clock reads become
//!   those system calls: required (without it the fault would miss nearly
//!   every read of a new process);
//! - uprobes on the C library's `clock_gettime` in the processes already
//!   running when the attack starts: used when uprobes work; without them
//!   those processes' vDSO reads are missed (and a warning says so).

use serde::Serialize;

use super::{Ancestry, FamilyMechanism, Held, Preferences, first_available, unavailable};
use crate::{
    capabilities::{Capability, Findings},
    error::{Error, Result},
};

/// How the clock system calls are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallHook {
    /// fexit on `__x64_sys_clock_gettime`, `__x64_sys_gettimeofday`,
    /// `__x64_sys_time` (BPF trampolines).
    Fexit,
    /// `syscalls/sys_enter_*` and `sys_exit_*` tracepoints.
    Tracepoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClockMechanism {
    /// clock_gettime, gettimeofday and time.
    pub syscalls: SyscallHook,
    /// Raw tracepoint on sched_process_exec: programs started in the
    /// target read clocks through system calls.
    pub exec_detach_vdso: bool,
    /// uprobe + uretprobe on the C library's clock_gettime, per process,
    /// for the target's processes already running at the start.
    pub libc_uprobes: bool,
    /// fmod_ret on `time(2)`, in place of its fexit program: the call is
    /// answered with the shifted time, return value included (with fexit
    /// only: the tracepoint path would shift what it stores twice).
    pub time_fmod_ret: bool,
    pub ancestry: Ancestry,
}

/// What clock-skew reaches and what it does not: `--help`, `chaos doctor`
/// and the README say this.
pub const COVERAGE: &str = "\
Shifted, in processes started in the target while the attack runs (any
program: glibc, musl, statically linked, Go): clock_gettime on the shifted
clocks, gettimeofday, and the value time() stores through its pointer.
chaos detaches their vDSO when they exec (the AT_SYSINFO_EHDR entry of their
auxiliary vector becomes AT_IGNORE), so their C library or runtime reads
clocks through system calls, whose results chaos shifts.

Shifted, in processes already running in the target when the attack starts:
clock_gettime through the C library (Python's time.time(), date, Java, Node
and most programs read the time this way), by a uprobe on that function in
each of those processes, and any clock system call they make.

time()'s return value (glibc's time(NULL) in a process started during the
attack; `openssl x509 -checkend` reads the time so) is shifted where the
kernel lets an fmod_ret program answer the system call (`fmod_ret on system
calls` in `chaos doctor`: Debian's 7.2; CONFIG_FUNCTION_ERROR_INJECTION and
Linux 6.1).

Not shifted:
  - time()'s return value where time() is a system call and the kernel does
    not let a program answer it (Debian's 5.10 to 6.12): fexit and
    tracepoint programs cannot change a system call's return value;
  - in processes already running at the start: glibc's time() and
    gettimeofday() (glibc resolves them straight to the vDSO), statically
    linked programs and Go programs (they call the vDSO themselves), and
    children they fork after the start without exec'ing;
  - processes moved into the target cgroup after the start without exec'ing,
    32-bit programs, programs that locate the vDSO themselves;
  - timers and sleeps on the wall clock (clock_nanosleep TIMER_ABSTIME,
    timerfd, alarm) fire at the true time; file timestamps are true;
  - CLOCK_MONOTONIC and CLOCK_BOOTTIME, ever.

Processes started during the attack keep reading clocks through system
calls (true time once it ends) until they exit; see bench/README.md for
what a read costs.";

pub fn plan(subject: &str, caps: &dyn Findings, prefs: &Preferences) -> Result<ClockMechanism> {
    if !cfg!(target_arch = "x86_64") {
        // The programs read x86-64's struct pt_regs and hook __x64_sys_*,
        // and the exec hook knows the x86-64 initial stack.
        return Err(Error::environment(format!("{subject}: clock-skew is implemented for x86-64 only")));
    }
    if caps.is_unknown(Capability::ProbeWriteUser) {
        return Err(unavailable(subject, "bpf_probe_write_user", &[Capability::ProbeWriteUser], caps));
    }
    if !caps.has(Capability::ProbeWriteUser) {
        return Err(no_write_user(subject, caps.detail(Capability::ProbeWriteUser)));
    }
    // Every clock program matches the target by its ancestor at the
    // target's level (chaos-ebpf/src/cgroup.rs): by the helper, or by
    // reading the task's cgroup. Never by the task's own cgroup alone: that
    // would shift the target's processes and not its descendants' (a
    // pod's containers).
    let ancestry = super::ancestry(subject, caps)?;
    let syscalls = syscall_hook(subject, caps, prefs)?;
    if !caps.has(Capability::RawTracepoint) {
        return Err(unavailable(
            subject,
            "the exec hook (raw tracepoint)",
            &[Capability::RawTracepoint],
            caps,
        ));
    }
    // Unknown uprobes plan as missing: the plan then promises less than
    // the machine may do, never more.
    let libc_uprobes = caps.has(Capability::Uprobe);
    let time_fmod_ret = syscalls == SyscallHook::Fexit && caps.has(Capability::SyscallFmodRet);
    Ok(ClockMechanism { syscalls, exec_detach_vdso: true, libc_uprobes, time_fmod_ret, ancestry })
}

/// fexit where BPF trampolines work (the fentry probe), tracepoints
/// otherwise, unless the preferences force one.
fn syscall_hook(subject: &str, caps: &dyn Findings, prefs: &Preferences) -> Result<SyscallHook> {
    let candidates =
        [(SyscallHook::Fexit, Capability::Fentry), (SyscallHook::Tracepoint, Capability::Tracepoint)];
    first_available(subject, "the clock system calls", &candidates, prefs.clock_syscalls, caps)
}

impl FamilyMechanism for ClockMechanism {
    fn describe(&self) -> String {
        let mut parts = vec![match (self.syscalls, self.time_fmod_ret) {
            (SyscallHook::Fexit, false) => "fexit on the clock system calls",
            (SyscallHook::Fexit, true) => "fexit on the clock system calls, fmod_ret on time(2)",
            (SyscallHook::Tracepoint, _) => "system call tracepoints",
        }];
        if self.exec_detach_vdso {
            parts.push("raw tracepoint on exec (vDSO detached)");
        }
        parts.push(if self.libc_uprobes {
            "uprobes on the C library's clock_gettime"
        } else {
            "no uprobes (running processes keep their vDSO)"
        });
        if self.ancestry == Ancestry::TaskRead {
            parts.push(self.ancestry.describe());
        }
        parts.join(", ")
    }

    fn held(&self) -> Held {
        let mut links = vec![match self.syscalls {
            SyscallHook::Fexit => "fexit links",
            SyscallHook::Tracepoint => "tracepoint perf links",
        }];
        if self.time_fmod_ret {
            links.push("the fmod_ret link");
        }
        if self.exec_detach_vdso {
            links.push("the raw tracepoint link");
        }
        if self.libc_uprobes {
            links.push("uprobe perf links");
        }
        Held { links, recorded: Vec::new() }
    }
}

/// The refusal when the verifier refuses `bpf_probe_write_user`, naming
/// lockdown when that is why.
fn no_write_user(subject: &str, detail: &str) -> Error {
    // The probe starts its detail with "kernel lockdown=MODE forbids it"
    // when lockdown is why (capabilities/programs.rs).
    let mode = detail.strip_prefix("kernel lockdown=").and_then(|r| r.split(' ').next());
    let cause = match mode {
        Some(mode) => {
            // "kernel lockdown=integrity forbids it (VERIFIER)": keep VERIFIER.
            let verifier = detail.split_once(" (").map_or(detail, |(_, v)| v.trim_end_matches(')'));
            let why = if mode == "integrity" { " (the Secure Boot default)" } else { "" };
            format!(
                "kernel lockdown={mode} forbids bpf_probe_write_user: clock-skew unavailable on this kernel. \
                 clock-skew writes the shifted time into the target's memory with that helper, and \
                 lockdown{why} makes the verifier refuse it ({verifier}). Boot with lockdown=none \
                 (Secure Boot off) to use it"
            )
        }
        None => format!(
            "bpf_probe_write_user is refused here: clock-skew unavailable on this kernel. clock-skew writes \
             the shifted time into the target's memory with that helper ({detail})"
        ),
    };
    Error::environment(format!("{subject}: {cause}; `chaos doctor` shows every mechanism"))
}

/// Lines for `chaos doctor`: whether clock-skew works here, by which hooks,
/// and what it reaches.
pub fn doctor_summary(caps: &dyn Findings) -> Vec<String> {
    let mut lines = Vec::new();
    let detail = caps.detail(Capability::ProbeWriteUser);
    if caps.is_unknown(Capability::ProbeWriteUser) {
        lines.push(format!("clock-skew: UNKNOWN: bpf_probe_write_user {detail}"));
    } else if !caps.has(Capability::ProbeWriteUser) {
        let lockdown = detail.starts_with("kernel lockdown=");
        lines.push(if lockdown {
            "clock-skew: UNAVAILABLE: kernel lockdown forbids bpf_probe_write_user, which clock-skew needs to \
             write the shifted time into the target's memory (boot with lockdown=none, Secure Boot off)"
                .to_owned()
        } else {
            format!("clock-skew: UNAVAILABLE: bpf_probe_write_user is refused ({detail})")
        });
    } else if !caps.has(Capability::CgroupAncestor) && !caps.has(Capability::CgroupAncestorRead) {
        lines.push(format!(
            "clock-skew: UNAVAILABLE: tracing programs cannot call bpf_get_current_ancestor_cgroup_id here \
             (Linux 5.14) ({}), nor read the task's ancestor cgroups ({}); clock-skew needs one to match the \
             target cgroup's descendants",
            caps.detail(Capability::CgroupAncestor),
            caps.detail(Capability::CgroupAncestorRead)
        ));
    } else {
        let syscalls = if caps.has(Capability::Fentry) {
            Some(if caps.has(Capability::SyscallFmodRet) {
                "fexit on the clock system calls, fmod_ret on time(2) (its return value shifted too)"
            } else {
                "fexit on the clock system calls"
            })
        } else if caps.has(Capability::Tracepoint) {
            Some(
                "system call tracepoints (no BPF trampolines: every system call pays a little while it runs)",
            )
        } else {
            None
        };
        let missing: Vec<&str> = [
            (syscalls.is_some(), "fentry or tracepoint"),
            (caps.has(Capability::RawTracepoint), "raw_tracepoint"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, n)| n)
        .collect();
        if let (true, Some(syscalls)) = (missing.is_empty(), syscalls) {
            let uprobes = if caps.has(Capability::Uprobe) {
                "and uprobes on the C library's clock_gettime of processes already running"
            } else {
                "WITHOUT uprobes: processes already running at the start read the true time through their vDSO"
            };
            lines.push(format!(
                "clock-skew: available: {syscalls}, vDSO detached at exec for new processes, {uprobes}"
            ));
        } else {
            lines.push(format!("clock-skew: UNAVAILABLE: needs {}", missing.join(" and ")));
        }
    }
    lines.extend(COVERAGE.lines().map(|l| if l.is_empty() { String::new() } else { format!("  {l}") }));
    lines
}

//! What this kernel can do, found by trying it.
//!
//! Every capability is *probed*: a tiny program from the `capabilities`
//! eBPF object is loaded and attached (in a throwaway network namespace or
//! cgroup, so that probing never touches anything real), a qdisc is
//! installed on a throwaway device, a filesystem is mounted in a private
//! mount namespace. Kernel configs and version numbers are never trusted: distro
//! kernels backport, and configs lie about lockdown, LSM order and runtime
//! sysctls. `chaos doctor` prints the same probes the attack planner uses.

pub(crate) mod environment;
mod programs;
mod qdisc;

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

/// One thing chaos may need from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Root,
    CgroupV2,
    Bpffs,
    Tcx,
    TcNetlink,
    CgroupSkb,
    CgroupSockAddr,
    Tracepoint,
    RawTracepoint,
    TpBtf,
    Uprobe,
    Kprobe,
    KprobeOverride,
    Fentry,
    FmodRet,
    BpfLsm,
    ProbeWriteUser,
    FqQdisc,
    NetemQdisc,
}

/// What a capability is and who needs it: the table `chaos doctor` prints
/// (after kunai's table of programs and the kernels they need).
pub struct Requirement {
    pub capability: Capability,
    /// Short name in `chaos doctor`.
    pub name: &'static str,
    /// Which faults or mechanisms use it.
    pub used_for: &'static str,
    /// Upstream kernel version and configuration that provide it.
    pub needs: &'static str,
}

pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        capability: Capability::Root,
        name: "privileges",
        used_for: "everything (loading eBPF, tc, cgroups)",
        needs: "root: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON",
    },
    Requirement {
        capability: Capability::CgroupV2,
        name: "cgroup v2",
        used_for: "targets (rules keyed by cgroup id)",
        needs: "a mounted cgroup2 hierarchy",
    },
    Requirement {
        capability: Capability::Bpffs,
        name: "bpffs",
        used_for: "not needed by chaos (no pins); for inspecting with bpftool",
        needs: "CONFIG_BPF_SYSCALL",
    },
    Requirement {
        capability: Capability::Tcx,
        name: "tc (TCX link)",
        used_for: "net-* egress, fd-owned: ends with the process",
        needs: "Linux 6.6, CONFIG_NET_XGRESS",
    },
    Requirement {
        capability: Capability::TcNetlink,
        name: "tc (netlink filter)",
        used_for: "net-* egress without TCX; outlives the process (state file + kernel deadline)",
        needs: "Linux 4.5, CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS",
    },
    Requirement {
        capability: Capability::CgroupSkb,
        name: "cgroup_skb",
        used_for: "net-* ingress",
        needs: "Linux 5.7 (cgroup links), CONFIG_CGROUP_BPF",
    },
    Requirement {
        capability: Capability::CgroupSockAddr,
        name: "cgroup_sock_addr",
        used_for: "planned: connect faults",
        needs: "Linux 5.7 (cgroup links), CONFIG_CGROUP_BPF",
    },
    Requirement {
        capability: Capability::Tracepoint,
        name: "tracepoint",
        used_for: "clock-skew: the clock system calls, where BPF trampolines (fentry) do not work",
        needs: "CONFIG_TRACEPOINTS, tracefs",
    },
    Requirement {
        capability: Capability::RawTracepoint,
        name: "raw_tracepoint",
        used_for: "clock-skew: detaching the vDSO of programs started in the target (sched_process_exec)",
        needs: "Linux 4.17",
    },
    Requirement {
        capability: Capability::TpBtf,
        name: "tp_btf",
        used_for: "planned: syscall faults",
        needs: "Linux 5.5, BTF",
    },
    Requirement {
        capability: Capability::Uprobe,
        name: "uprobe",
        used_for: "clock-skew: the C library's clock_gettime in the target's running processes (per-process uprobes)",
        needs: "CONFIG_UPROBE_EVENTS",
    },
    Requirement {
        capability: Capability::Kprobe,
        name: "kprobe",
        used_for: "planned: io-error",
        needs: "CONFIG_KPROBES, CONFIG_KPROBE_EVENTS",
    },
    Requirement {
        capability: Capability::KprobeOverride,
        name: "kprobe override",
        used_for: "io-error where BPF LSM is missing: not implemented (untested; no test kernel has it)",
        needs: "CONFIG_BPF_KPROBE_OVERRIDE, CONFIG_FUNCTION_ERROR_INJECTION",
    },
    Requirement {
        capability: Capability::Fentry,
        name: "fentry",
        used_for: "clock-skew: fexit on the clock system calls (else tracepoints)",
        needs: "Linux 5.5, BPF trampolines (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS), BTF",
    },
    Requirement {
        capability: Capability::FmodRet,
        name: "fmod_ret",
        used_for: "not used: aya cannot load fmod_ret programs",
        needs: "Linux 5.7, BPF trampolines",
    },
    Requirement {
        capability: Capability::BpfLsm,
        name: "BPF LSM",
        used_for: "io-error (lsm/file_open, lsm/file_permission)",
        needs: "Linux 5.7, CONFIG_BPF_LSM, `bpf` in the active LSM list, trampolines",
    },
    Requirement {
        capability: Capability::ProbeWriteUser,
        name: "bpf_probe_write_user",
        used_for: "clock-skew (every mechanism: it writes the shifted time into the target's memory)",
        needs: "no kernel lockdown (Secure Boot hosts run lockdown=integrity)",
    },
    Requirement {
        capability: Capability::FqQdisc,
        name: "fq qdisc",
        used_for: "net-delay, net-rate, net-reorder (departure times), on the target's devices",
        needs: "CONFIG_NET_SCH_FQ",
    },
    Requirement {
        capability: Capability::NetemQdisc,
        name: "netem qdisc",
        used_for: "baseline for net-delay measurements",
        needs: "CONFIG_NET_SCH_NETEM",
    },
];

impl Capability {
    pub fn requirement(self) -> &'static Requirement {
        REQUIREMENTS.iter().find(|r| r.capability == self).expect("every capability has a row")
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.requirement().name)
    }
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub capability: Capability,
    pub available: bool,
    /// What was tried and what happened: the reason when unavailable.
    pub detail: String,
}

/// Probe results, each probed at most once per process.
#[derive(Default)]
pub struct Capabilities {
    results: BTreeMap<Capability, Probe>,
}

impl Capabilities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Probe (once) and return the result.
    pub fn probe(&mut self, capability: Capability) -> &Probe {
        self.results.entry(capability).or_insert_with(|| {
            let (available, detail) = match run(capability) {
                Ok(detail) => (true, detail),
                Err(reason) => (false, reason),
            };
            Probe { capability, available, detail }
        })
    }

    pub fn has(&mut self, capability: Capability) -> bool {
        self.probe(capability).available
    }

    /// Probe everything, in table order.
    pub fn probe_all(&mut self) -> Vec<Probe> {
        REQUIREMENTS.iter().map(|r| self.probe(r.capability).clone()).collect()
    }
}

fn run(capability: Capability) -> Result<String, String> {
    use Capability::*;
    if capability != Root && capability != CgroupV2 {
        environment::root()?;
    }
    match capability {
        Root => environment::root(),
        CgroupV2 => environment::cgroup_v2(),
        Bpffs => environment::bpffs(),
        Tcx => programs::tcx(),
        TcNetlink => programs::tc_netlink(),
        CgroupSkb => programs::cgroup_skb(),
        CgroupSockAddr => programs::cgroup_sock_addr(),
        Tracepoint => programs::tracepoint(),
        RawTracepoint => programs::raw_tracepoint(),
        TpBtf => programs::tp_btf(),
        Uprobe => programs::uprobe(),
        Kprobe => programs::kprobe(),
        KprobeOverride => programs::kprobe_override(),
        Fentry => programs::fentry(),
        FmodRet => Err("not probed: aya cannot load fmod_ret programs, so chaos does not use them".into()),
        BpfLsm => programs::lsm(),
        ProbeWriteUser => programs::probe_write_user(),
        FqQdisc => qdisc::probe("fq"),
        NetemQdisc => qdisc::probe("netem"),
    }
}

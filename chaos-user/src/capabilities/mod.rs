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
mod fmod_ret;
pub(crate) mod programs;
mod qdisc;

pub use programs::scratch_in;

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One thing chaos may need from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Root,
    CgroupV2,
    CgroupCpu,
    CgroupMemory,
    CgroupIo,
    Bpffs,
    Tcx,
    TcNetlink,
    CgroupSkb,
    CgroupSockAddr,
    SockAddrRetval,
    SkLookup,
    SkMsg,
    SockDestroy,
    Tracepoint,
    RawTracepoint,
    TpBtf,
    Uprobe,
    Kprobe,
    KprobeOverride,
    Fentry,
    FmodRet,
    SyscallFmodRet,
    BpfLsm,
    BpfLoop,
    ProbeWriteUser,
    CgroupAncestor,
    CgroupAncestorRead,
    FqQdisc,
    NetemQdisc,
    IfbIngress,
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
        capability: Capability::CgroupCpu,
        name: "cgroup v2 cpu controller",
        used_for: "cpu-starve (cpu.max of the target)",
        needs: "Linux 4.15, CONFIG_CFS_BANDWIDTH; the cpu controller not bound to a cgroup v1 hierarchy",
    },
    Requirement {
        capability: Capability::CgroupMemory,
        name: "cgroup v2 memory controller",
        used_for: "memory-pressure (memory.high of the target)",
        needs: "Linux 4.5, CONFIG_MEMCG; the memory controller not bound to a cgroup v1 hierarchy",
    },
    Requirement {
        capability: Capability::CgroupIo,
        name: "cgroup v2 io controller",
        used_for: "io-throttle (io.max of the target)",
        needs: "Linux 4.5, CONFIG_BLK_CGROUP, CONFIG_BLK_DEV_THROTTLING; the io (blkio) controller not bound to a \
                cgroup v1 hierarchy",
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
        used_for: "net-* egress without TCX; outlives the process (state file; inert without the tag link)",
        needs: "Linux 4.5, CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS",
    },
    Requirement {
        capability: Capability::CgroupSkb,
        name: "cgroup_skb",
        used_for: "net-* ingress; egress: tagging the target's packets for the classifier",
        needs: "Linux 5.7 (cgroup links), CONFIG_CGROUP_BPF",
    },
    Requirement {
        capability: Capability::CgroupSockAddr,
        name: "cgroup_sock_addr",
        used_for: "net-refuse (connect4/6, sendmsg4/6 on the target cgroup), refusing with EPERM",
        needs: "Linux 5.7 (cgroup links, and bpf_get_current_ancestor_cgroup_id there), CONFIG_CGROUP_BPF",
    },
    Requirement {
        capability: Capability::SockAddrRetval,
        name: "bpf_set_retval (sock_addr)",
        used_for: "net-refuse with an errno other than EPERM (ECONNREFUSED, ENETUNREACH, ...)",
        needs: "Linux 6.1: bpf_set_retval in cgroup sock_addr programs",
    },
    Requirement {
        capability: Capability::SkLookup,
        name: "sk_lookup",
        used_for: "net-refuse --direction incoming (refusing connections to the target's listeners)",
        needs: "Linux 5.9",
    },
    Requirement {
        capability: Capability::SkMsg,
        name: "sk_msg and sock_ops",
        used_for: "dns-error over TCP (the target's connections to port 53 in a sockhash; queries answered \
                   into the sender's receive queue)",
        needs: "Linux 4.20 (sk_msg ingress redirect), and bpf_get_current_ancestor_cgroup_id in sk_msg programs",
    },
    Requirement {
        capability: Capability::SockDestroy,
        name: "sock_destroy (inet_diag)",
        used_for: "net-reset (SOCK_DESTROY of the target's TCP sockets, as `ss -K`)",
        needs: "Linux 4.5, CONFIG_INET_DIAG_DESTROY",
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
        used_for: "not used: the kprobe override needs it (see kprobe override)",
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
        used_for: "io-error where the BPF LSM is not active (security_file_open, security_file_permission)",
        needs: "Linux 5.7, BPF trampolines",
    },
    Requirement {
        capability: Capability::SyscallFmodRet,
        name: "fmod_ret on system calls",
        used_for: "clock-skew: time(2)'s return value (time(NULL)) in processes started during the attack",
        needs: "BPF trampolines, system calls on the error-injection list (CONFIG_FUNCTION_ERROR_INJECTION: Debian 7.2 yes, 5.10 to 6.12 no), bpf_ktime_get_tai_ns (Linux 6.1)",
    },
    Requirement {
        capability: Capability::BpfLsm,
        name: "BPF LSM",
        used_for: "io-error (lsm/file_open, lsm/file_permission)",
        needs: "Linux 5.7, CONFIG_BPF_LSM, `bpf` in the active LSM list, trampolines; bpf_loop (Linux 5.17) for io-error's path walk (without it: fmod_ret)",
    },
    Requirement {
        capability: Capability::BpfLoop,
        name: "bpf_loop",
        used_for: "io-error: the path walk, up to 48 levels (without it: a bounded loop of 16)",
        needs: "Linux 5.17",
    },
    Requirement {
        capability: Capability::ProbeWriteUser,
        name: "bpf_probe_write_user",
        used_for: "clock-skew (every mechanism: it writes the shifted time into the target's memory)",
        needs: "no kernel lockdown (Secure Boot hosts run lockdown=integrity)",
    },
    Requirement {
        capability: Capability::CgroupAncestor,
        name: "ancestor cgroup (tracing)",
        used_for: "clock-skew, io-error: matching the target cgroup and its descendants (else: task read)",
        needs: "Linux 5.14: bpf_get_current_ancestor_cgroup_id in tracing programs",
    },
    Requirement {
        capability: Capability::CgroupAncestorRead,
        name: "ancestor cgroup (task read)",
        used_for: "clock-skew, io-error where tracing programs lack the ancestor helper: the ids read from the task's cgroup",
        needs: "Linux 5.5 (bpf_probe_read_kernel), BTF with cgroup.ancestor_ids (before Linux 6.0, which has the helper)",
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
    Requirement {
        capability: Capability::IfbIngress,
        name: "ifb ingress queue",
        used_for: "net-delay, net-rate, net-duplicate, net-corrupt, net-reorder --direction ingress|both: a queue for what the target receives",
        needs: "Linux 6.4 (bpf_redirect marks the skb redirected, which ifb requires), CONFIG_IFB",
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

/// What is known of one capability: probed here, or read from a recorded
/// set (`chaos doctor --json` on the machine that will run the attack).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Finding {
    pub capability: Capability,
    /// Known to work (false when it does not, or is not known).
    pub available: bool,
    /// What was tried and what happened: the reason when unavailable or
    /// unknown.
    pub detail: String,
    /// False when it was not probed (probing it needs root): `available`
    /// then says nothing about the kernel. Files recorded before this
    /// field existed hold probed rows only.
    #[serde(default = "yes")]
    pub probed: bool,
}

fn yes() -> bool {
    true
}

/// A row of `chaos doctor --json`: the finding, and what the table says of
/// the capability (ignored when read back).
impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.capability.requirement();
        let mut row = s.serialize_struct("Finding", 7)?;
        row.serialize_field("capability", &self.capability)?;
        row.serialize_field("name", r.name)?;
        row.serialize_field("available", &self.available)?;
        row.serialize_field("probed", &self.probed)?;
        row.serialize_field("detail", &self.detail)?;
        row.serialize_field("used_for", r.used_for)?;
        row.serialize_field("needs", r.needs)?;
        row.end()
    }
}

/// What a kernel can do: the input of the planner, which reads nothing
/// else, so a plan made from a recorded set (`--capabilities FILE`) is the
/// plan chaos makes on that machine. Serialized, it is the `kernel` and
/// `capabilities` of `chaos doctor --json` (other fields of that report
/// are ignored when it is read back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySet {
    /// `uname -r` of the kernel probed.
    #[serde(default)]
    pub kernel: String,
    /// In table order; a capability missing here is unknown.
    pub capabilities: Vec<Finding>,
}

/// The detail of a capability that was not probed because chaos runs
/// without root.
const UNKNOWN_UNPRIVILEGED: &str = "unknown: probing it needs root; give the capabilities of the machine \
                                    that will run the attack with --capabilities FILE (from `chaos doctor \
                                    --json` there), or run as root";

impl CapabilitySet {
    /// Detect every capability of the table, in order (`chaos doctor`).
    /// Without root only the privileges and cgroup v2 are probed; the rest
    /// are unknown, said so.
    pub fn detect_all() -> Self {
        let root = environment::root().is_ok();
        let capabilities = REQUIREMENTS.iter().map(|r| detect_one(r.capability, root)).collect();
        Self { kernel: kernel_release(), capabilities }
    }

    /// Read a set recorded with `chaos doctor --json > FILE`.
    pub fn load(path: &Path) -> crate::error::Result<Self> {
        let fix = "record it with `chaos doctor --json > FILE` on the machine that will run the attack";
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!("--capabilities {}: cannot read it: {e}; {fix}", path.display()))
        })?;
        Self::from_json(&text)
            .map_err(|e| Error::invalid(format!("--capabilities {}: {e}; {fix}", path.display())))
    }

    /// Parse the JSON of `chaos doctor --json`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let set: Self =
            serde_json::from_str(text).map_err(|e| format!("not the JSON of `chaos doctor --json` ({e})"))?;
        let mut seen = std::collections::BTreeSet::new();
        for p in &set.capabilities {
            if !seen.insert(p.capability) {
                return Err(format!("capability {} is listed twice", p.capability.requirement().name));
            }
        }
        Ok(set)
    }

    /// The capabilities of the table that this set does not know.
    pub fn unknown(&self) -> Vec<Capability> {
        REQUIREMENTS.iter().map(|r| r.capability).filter(|c| self.is_unknown(*c)).collect()
    }
}

/// What the planner reads: findings of a recorded or fully probed set
/// ([`CapabilitySet`]), or probed as it asks ([`Capabilities`]).
pub trait Findings {
    /// The finding, if this source has one.
    fn get(&self, capability: Capability) -> Option<&Finding>;
    /// `uname -r` of the kernel the findings are of.
    fn kernel(&self) -> &str;

    /// Known to work.
    fn has(&self, capability: Capability) -> bool {
        self.get(capability).is_some_and(|p| p.available)
    }

    /// Neither probed nor recorded.
    fn is_unknown(&self, capability: Capability) -> bool {
        self.get(capability).is_none_or(|p| !p.probed)
    }

    /// Why it works or does not (or why that is not known).
    fn detail(&self, capability: Capability) -> &str {
        match self.get(capability) {
            Some(p) => &p.detail,
            None => "unknown: not in the capability set",
        }
    }
}

impl Findings for CapabilitySet {
    fn get(&self, capability: Capability) -> Option<&Finding> {
        self.capabilities.iter().find(|p| p.capability == capability)
    }

    fn kernel(&self) -> &str {
        &self.kernel
    }
}

/// Detect `c`; without `root` only what needs no privileges.
fn detect_one(c: Capability, root: bool) -> Finding {
    let outcome = match c {
        Capability::Root => environment::root(),
        Capability::CgroupV2 => environment::cgroup_v2(),
        Capability::CgroupCpu => environment::cgroup_controller("cpu", "cpu.max"),
        Capability::CgroupMemory => environment::cgroup_controller("memory", "memory.high"),
        Capability::CgroupIo => environment::cgroup_controller("io", "io.max"),
        _ if !root => {
            return Finding {
                capability: c,
                available: false,
                detail: UNKNOWN_UNPRIVILEGED.into(),
                probed: false,
            };
        }
        _ => run(c),
    };
    match outcome {
        Ok(detail) => Finding { capability: c, available: true, detail, probed: true },
        Err(detail) => Finding { capability: c, available: false, detail, probed: true },
    }
}

/// Findings probed when first asked for, each at most once: an attack
/// probes only what its planner reads (the first mechanism that works ends
/// the search, so e.g. io-error on a kernel with the BPF LSM never loads
/// the fmod_ret probe), and the integration tests' harness capability by
/// capability. Under emulation a probe costs 0.1 to 1 s (a verifier run).
pub struct Capabilities {
    kernel: String,
    root: bool,
    /// In table order (REQUIREMENTS).
    found: Vec<std::cell::OnceCell<Finding>>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

impl Capabilities {
    pub fn new() -> Self {
        Self {
            kernel: kernel_release(),
            root: environment::root().is_ok(),
            found: REQUIREMENTS.iter().map(|_| std::cell::OnceCell::new()).collect(),
        }
    }

    /// Detect (once) and return the finding.
    pub fn detect(&self, capability: Capability) -> &Finding {
        let at =
            REQUIREMENTS.iter().position(|r| r.capability == capability).expect("every capability has a row");
        self.found[at].get_or_init(|| detect_one(capability, self.root))
    }
}

impl Findings for Capabilities {
    fn get(&self, capability: Capability) -> Option<&Finding> {
        Some(self.detect(capability))
    }

    fn kernel(&self) -> &str {
        &self.kernel
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

/// Detect one capability (as root: callers check).
fn run(capability: Capability) -> Result<String, String> {
    use Capability::*;
    match capability {
        Root => environment::root(),
        CgroupV2 => environment::cgroup_v2(),
        CgroupCpu => environment::cgroup_controller("cpu", "cpu.max"),
        CgroupMemory => environment::cgroup_controller("memory", "memory.high"),
        CgroupIo => environment::cgroup_controller("io", "io.max"),
        Bpffs => environment::bpffs(),
        Tcx => programs::tcx(),
        TcNetlink => programs::tc_netlink(),
        CgroupSkb => programs::cgroup_skb(),
        CgroupSockAddr => programs::cgroup_sock_addr(),
        SockAddrRetval => programs::sock_addr_retval(),
        SkLookup => programs::sk_lookup(),
        SkMsg => programs::sk_msg(),
        SockDestroy => environment::sock_destroy(),
        Tracepoint => programs::tracepoint(),
        RawTracepoint => programs::raw_tracepoint(),
        TpBtf => programs::tp_btf(),
        Uprobe => programs::uprobe(),
        Kprobe => programs::kprobe(),
        KprobeOverride => programs::kprobe_override(),
        Fentry => programs::fentry(),
        FmodRet => fmod_ret::probe(),
        SyscallFmodRet => fmod_ret::probe_syscall(),
        BpfLsm => programs::lsm(),
        BpfLoop => programs::bpf_loop(),
        ProbeWriteUser => programs::probe_write_user(),
        CgroupAncestor => programs::cgroup_ancestor(),
        CgroupAncestorRead => programs::cgroup_read(),
        FqQdisc => qdisc::detect("fq"),
        NetemQdisc => qdisc::detect("netem"),
        IfbIngress => crate::attach::ifb::probe(&kernel_release()),
    }
}

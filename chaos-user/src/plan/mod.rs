//! Planning: which mechanism realizes each fault on a kernel, decided from
//! capability findings alone ([`Findings`]) — the probes `chaos doctor`
//! runs and prints, run here as the planner asks for them or recorded
//! elsewhere (`--capabilities FILE`) — never from version numbers or
//! configs. The planner itself changes nothing: the same findings give the
//! same plan, unprivileged, anywhere; it asks for the capabilities of its
//! first choice first, and for a fallback's only when that one is missing.

mod block;
pub mod clock;
mod conn;
mod cpu;
mod dns;
mod io;
mod kill;
mod memory;
mod net;
mod pause;
mod reset;

use std::fmt;

use serde::Serialize;

pub use self::{
    block::{BlockMechanism, BlockVia},
    clock::{ClockMechanism, SyscallHook},
    conn::{ConnDemand, ConnErrno, ConnMechanism},
    cpu::{CpuMechanism, CpuVia},
    dns::DnsMechanism,
    io::{IoMechanism, IoVia, IoWalk},
    kill::{KillMechanism, KillVia},
    memory::{MemoryMechanism, MemoryVia},
    net::NetMechanism,
    pause::{PauseMechanism, PauseVia},
    reset::{ResetMechanism, ResetVia},
};
use crate::{
    attach::tc::EgressMode,
    attack::Attack,
    capabilities::{Capability, Findings},
    error::{Error, Result},
    faults::{
        ClockSkew, CpuStarve, Direction, DnsError, FamilyFault, Fault, IoError, IoThrottle, Kill,
        MemoryPressure, NetAny, NetRefuse, NetReset, Pause,
    },
};

/// How an attack is realized here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Mechanism {
    Net(NetMechanism),
    Conn(ConnMechanism),
    Reset(ResetMechanism),
    Dns(DnsMechanism),
    Io(IoMechanism),
    Clock(ClockMechanism),
    Pause(PauseMechanism),
    Cpu(CpuMechanism),
    Kill(KillMechanism),
    Memory(MemoryMechanism),
    Block(BlockMechanism),
}

/// What of a fault the planner looks at: the planner decides on these
/// alone, so `chaos doctor` can plan each fault kind without parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    Net {
        direction: Direction,
        /// Packets get departure times (delay, rate, reorder): fq needed.
        schedules: bool,
        /// Effects beyond loss on what the target receives: the tc ingress
        /// classifier and chaos's ifb.
        receive: bool,
    },
    Conn(ConnDemand),
    Reset,
    Dns,
    Io {
        /// Reads, writes or directory reads, not only opens.
        read_write: bool,
        /// A call window (`--after`, `--first`): counted atomically.
        windowed: bool,
    },
    Clock,
    Pause,
    Cpu,
    Kill,
    Memory,
    Block,
}

impl Demand {
    pub fn of(fault: &Fault) -> Self {
        match fault.by_family() {
            FamilyFault::Net(f) => {
                Self::Net { direction: f.filter().direction, schedules: f.schedules(), receive: f.receives() }
            }
            FamilyFault::Conn(f) => Self::Conn(ConnDemand::of(&f)),
            FamilyFault::Reset(_) => Self::Reset,
            FamilyFault::Dns(_) => Self::Dns,
            FamilyFault::Io(f) => Self::Io { read_write: f.beyond_open(), windowed: f.windowed() },
            FamilyFault::Clock(_) => Self::Clock,
            FamilyFault::Pause(_) => Self::Pause,
            FamilyFault::Cpu(_) => Self::Cpu,
            FamilyFault::Kill(_) => Self::Kill,
            FamilyFault::Memory(_) => Self::Memory,
            FamilyFault::Block(_) => Self::Block,
        }
    }

    /// The capabilities the planner may read for this demand (it reads a
    /// fallback's only when the first choice is missing): what a dry run
    /// lists when they are unknown.
    pub fn consults(self) -> &'static [Capability] {
        use Capability::*;
        match self {
            Self::Net { .. } => &[Tcx, TcNetlink, CgroupSkb, FqQdisc, IfbIngress],
            Self::Conn(_) => &[CgroupSockAddr, SockAddrRetval, SkLookup],
            Self::Reset => &[SockDestroy],
            Self::Dns => &[Tcx, TcNetlink, SkMsg],
            Self::Io { .. } => {
                &[BpfLsm, FmodRet, BpfLoop, KprobeOverride, CgroupAncestor, CgroupAncestorRead]
            }
            Self::Clock => &[
                ProbeWriteUser,
                CgroupAncestor,
                CgroupAncestorRead,
                Fentry,
                Tracepoint,
                RawTracepoint,
                Uprobe,
                SyscallFmodRet,
            ],
            Self::Pause => &[CgroupV2],
            Self::Cpu => &[CgroupCpu],
            Self::Kill => &[CgroupV2],
            Self::Memory => &[CgroupMemory],
            Self::Block => &[CgroupIo],
        }
    }
}

/// Every fault kind, with the demand of its usual form (`chaos doctor`):
/// net-loss in both directions, the netem-like faults on egress and, as a
/// row of their own, on what the target receives; io-error on every
/// operation.
pub const KINDS: &[(&str, Demand)] = &[
    ("net-loss", Demand::Net { direction: Direction::Both, schedules: false, receive: false }),
    ("net-delay", Demand::Net { direction: Direction::Egress, schedules: true, receive: false }),
    ("net-rate", Demand::Net { direction: Direction::Egress, schedules: true, receive: false }),
    ("net-duplicate", Demand::Net { direction: Direction::Egress, schedules: false, receive: false }),
    ("net-corrupt", Demand::Net { direction: Direction::Egress, schedules: false, receive: false }),
    ("net-reorder", Demand::Net { direction: Direction::Egress, schedules: true, receive: false }),
    (INGRESS_KIND, Demand::Net { direction: Direction::Ingress, schedules: true, receive: true }),
    ("net-refuse", Demand::Conn(ConnDemand::ALL)),
    ("net-partition", Demand::Net { direction: Direction::Both, schedules: false, receive: false }),
    ("net-reset", Demand::Reset),
    ("dns-error", Demand::Dns),
    ("io-error", Demand::Io { read_write: true, windowed: false }),
    ("clock-skew", Demand::Clock),
    ("pause", Demand::Pause),
    ("cpu-starve", Demand::Cpu),
    ("kill", Demand::Kill),
    ("memory-pressure", Demand::Memory),
    ("io-throttle", Demand::Block),
];

/// The [`KINDS`] row of the netem-like faults on what the target receives.
pub const INGRESS_KIND: &str = "net-delay/rate/... --direction ingress";

/// Choices an operator (or a test) forces through the environment:
/// `CHAOS_EGRESS_MODE=tcx|netlink`, `CHAOS_CLOCK_SYSCALLS=fexit|tracepoint`,
/// `CHAOS_IO_VIA=bpf-lsm|fmod-ret` — still only where the capability set
/// allows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    pub egress: Option<EgressMode>,
    pub clock_syscalls: Option<SyscallHook>,
    pub io_via: Option<IoVia>,
}

impl Preferences {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            egress: forced(
                "CHAOS_EGRESS_MODE",
                &[("tcx", EgressMode::Tcx), ("netlink", EgressMode::Netlink)],
            )?,
            clock_syscalls: forced(
                "CHAOS_CLOCK_SYSCALLS",
                &[("fexit", SyscallHook::Fexit), ("tracepoint", SyscallHook::Tracepoint)],
            )?,
            io_via: forced("CHAOS_IO_VIA", &[("bpf-lsm", IoVia::BpfLsm), ("fmod-ret", IoVia::FmodRet)])?,
        })
    }
}

/// The choice named by the environment variable `var`, if it is set.
fn forced<T: Copy>(var: &str, choices: &[(&str, T)]) -> Result<Option<T>> {
    let value = std::env::var(var).unwrap_or_default();
    if value.is_empty() {
        return Ok(None);
    }
    match choices.iter().find(|(name, _)| *name == value) {
        Some((_, choice)) => Ok(Some(*choice)),
        None => {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Err(Error::invalid(format!("{var}={value}: expected {}", names.join(" or "))))
        }
    }
}

/// A fault paired with the mechanism planned for it, by family and by
/// type: the injector takes the family's own fault and mechanism from it,
/// with nothing left to check at run time.
#[derive(Clone, Debug)]
pub enum Planned {
    Net(NetMechanism, NetAny),
    Conn(ConnMechanism, NetRefuse),
    Reset(ResetMechanism, NetReset),
    Dns(DnsMechanism, DnsError),
    Io(IoMechanism, IoError),
    Clock(ClockMechanism, ClockSkew),
    Pause(PauseMechanism, Pause),
    Cpu(CpuMechanism, CpuStarve),
    Kill(KillMechanism, Kill),
    Memory(MemoryMechanism, MemoryPressure),
    Block(BlockMechanism, IoThrottle),
}

impl Planned {
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Self::Net(m, _) => Mechanism::Net(*m),
            Self::Conn(m, _) => Mechanism::Conn(*m),
            Self::Reset(m, _) => Mechanism::Reset(*m),
            Self::Dns(m, _) => Mechanism::Dns(*m),
            Self::Io(m, _) => Mechanism::Io(*m),
            Self::Clock(m, _) => Mechanism::Clock(*m),
            Self::Pause(m, _) => Mechanism::Pause(*m),
            Self::Cpu(m, _) => Mechanism::Cpu(*m),
            Self::Kill(m, _) => Mechanism::Kill(*m),
            Self::Memory(m, _) => Mechanism::Memory(*m),
            Self::Block(m, _) => Mechanism::Block(*m),
        }
    }
}

/// As its mechanism (the plan shown in events and reports).
impl Serialize for Planned {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.mechanism().serialize(s)
    }
}

/// Choose the mechanism for `attack` from `caps` (and the preferences of
/// the environment), and warn of what the plan leaves out. Errors say what
/// is missing and why.
pub fn plan(attack: &Attack, caps: &dyn Findings) -> Result<Planned> {
    let subject = format!("{} on {}", attack.fault.kind(), attack.target);
    let prefs = Preferences::from_env()?;
    let planned = match attack.fault.by_family() {
        FamilyFault::Net(f) => {
            let demand = net::NetDemand {
                direction: f.filter().direction,
                schedules: f.schedules(),
                receive: f.receives(),
            };
            Planned::Net(net::plan(&subject, demand, caps, &prefs)?, f)
        }
        FamilyFault::Conn(f) => Planned::Conn(conn::plan(&subject, ConnDemand::of(&f), caps)?, f),
        FamilyFault::Reset(f) => Planned::Reset(reset::plan(&subject, caps)?, f),
        FamilyFault::Dns(f) => Planned::Dns(dns::plan(&subject, caps, &prefs)?, f),
        FamilyFault::Io(f) => {
            Planned::Io(io::plan(&subject, f.beyond_open(), f.windowed(), caps, prefs.io_via)?, f)
        }
        FamilyFault::Clock(f) => Planned::Clock(clock::plan(&subject, caps, &prefs)?, f),
        FamilyFault::Pause(f) => Planned::Pause(pause::plan(&subject, caps)?, f),
        FamilyFault::Cpu(f) => Planned::Cpu(cpu::plan(&subject, caps)?, f),
        FamilyFault::Kill(f) => Planned::Kill(kill::plan(&subject, caps)?, f),
        FamilyFault::Memory(f) => Planned::Memory(memory::plan(&subject, caps)?, f),
        FamilyFault::Block(f) => Planned::Block(block::plan(&subject, caps)?, f),
    };
    if let Planned::Reset(_, f) = &planned
        && let Some(every) = f.every
        && every >= attack.duration
    {
        tracing::warn!(
            "net-reset on {}: --every {} is not shorter than the attack ({}): one sweep, at the start",
            attack.target,
            crate::units::format_duration(every),
            crate::units::format_duration(attack.duration)
        );
    }
    if let Planned::Clock(m, _) = &planned
        && !m.libc_uprobes
    {
        tracing::warn!(
            "uprobes: {}: processes already running in {} read the true time through their vDSO; programs \
             started during the attack are shifted",
            caps.detail(Capability::Uprobe),
            attack.target
        );
    }
    Ok(planned)
}

/// The planner itself: a pure function of its arguments. `subject` names
/// the attack in errors (`net-loss on cgroup /x (id 42)`).
pub fn plan_demand(
    subject: &str,
    demand: Demand,
    caps: &dyn Findings,
    prefs: &Preferences,
) -> Result<Mechanism> {
    match demand {
        Demand::Net { direction, schedules, receive } => {
            net::plan(subject, net::NetDemand { direction, schedules, receive }, caps, prefs)
                .map(Mechanism::Net)
        }
        Demand::Conn(demand) => conn::plan(subject, demand, caps).map(Mechanism::Conn),
        Demand::Reset => reset::plan(subject, caps).map(Mechanism::Reset),
        Demand::Dns => dns::plan(subject, caps, prefs).map(Mechanism::Dns),
        Demand::Io { read_write, windowed } => {
            io::plan(subject, read_write, windowed, caps, prefs.io_via).map(Mechanism::Io)
        }
        Demand::Clock => clock::plan(subject, caps, prefs).map(Mechanism::Clock),
        Demand::Pause => pause::plan(subject, caps).map(Mechanism::Pause),
        Demand::Cpu => cpu::plan(subject, caps).map(Mechanism::Cpu),
        Demand::Kill => kill::plan(subject, caps).map(Mechanism::Kill),
        Demand::Memory => memory::plan(subject, caps).map(Mechanism::Memory),
        Demand::Block => block::plan(subject, caps).map(Mechanism::Block),
    }
}

/// How the tracing and LSM programs (io-error, clock-skew) match a task
/// against the target cgroup and its descendants (crate::ancestry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ancestry {
    /// `bpf_get_current_ancestor_cgroup_id` (Linux 5.14).
    #[default]
    Helper,
    /// The ancestor ids read from the task's cgroup (5.10 to 5.13).
    TaskRead,
}

impl Ancestry {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Helper => "ancestor cgroup helper",
            Self::TaskRead => "ancestor cgroup read from the task",
        }
    }

    /// The ancestry the fault object is loaded with for `planned` (they
    /// agree: one kernel, one capability set); the helper when no attack
    /// needs one.
    pub fn of<'a>(planned: impl IntoIterator<Item = &'a Planned>) -> Self {
        planned
            .into_iter()
            .find_map(|p| match p {
                Planned::Io(m, _) => Some(m.ancestry),
                Planned::Clock(m, _) => Some(m.ancestry),
                Planned::Net(..)
                | Planned::Conn(..)
                | Planned::Reset(..)
                | Planned::Dns(..)
                | Planned::Pause(..)
                | Planned::Cpu(..)
                | Planned::Kill(..)
                | Planned::Memory(..)
                | Planned::Block(..) => None,
            })
            .unwrap_or_default()
    }
}

/// The helper where tracing programs may call it, else task reads.
fn ancestry(subject: &str, caps: &dyn Findings) -> Result<Ancestry> {
    first_available(
        subject,
        "matching the target cgroup's descendants",
        &[
            (Ancestry::Helper, Capability::CgroupAncestor),
            (Ancestry::TaskRead, Capability::CgroupAncestorRead),
        ],
        None,
        caps,
    )
}

/// The first of `candidates` (a mechanism and the capability it needs)
/// that `caps` has, the preference `forced` narrowing them to one. An
/// unknown capability stops the search: planning past it would promise a
/// fallback where the machine may well use the first choice.
fn first_available<T: Copy + PartialEq>(
    subject: &str,
    part: &str,
    candidates: &[(T, Capability)],
    forced: Option<T>,
    caps: &dyn Findings,
) -> Result<T> {
    let candidates: Vec<(T, Capability)> =
        candidates.iter().copied().filter(|(m, _)| forced.is_none_or(|f| f == *m)).collect();
    for (mechanism, cap) in &candidates {
        if caps.is_unknown(*cap) {
            break;
        }
        if caps.has(*cap) {
            return Ok(*mechanism);
        }
    }
    let tried: Vec<Capability> = candidates.iter().map(|(_, c)| *c).collect();
    Err(unavailable(subject, part, &tried, caps))
}

/// The error for a fault no mechanism can realize with `caps`. When a
/// capability tried is unknown (chaos probed without root), the error
/// says so and names `--capabilities`: an unknown capability is never
/// taken for a present one.
fn unavailable(subject: &str, part: &str, tried: &[Capability], caps: &dyn Findings) -> Error {
    let reasons: Vec<String> =
        tried
            .iter()
            .map(|c| {
                if caps.is_unknown(*c) {
                    format!("{c}: unknown")
                } else {
                    format!("{c}: {}", caps.detail(*c))
                }
            })
            .collect();
    if tried.iter().any(|c| caps.is_unknown(*c)) {
        return Error::environment(format!(
            "{subject} cannot be planned ({part}): {}. Run as root, or give the capabilities of the machine \
             that will run it with --capabilities FILE (from `chaos doctor --json` there)",
            reasons.join("; ")
        ));
    }
    Error::environment(format!(
        "{subject} is unavailable on this kernel ({part}): {}. `chaos doctor` shows every mechanism",
        reasons.join("; ")
    ))
}

/// The layers of DESIGN.md's safety model that a mechanism provides: how
/// its fault ends when the controller does not end it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SafetyLayer {
    /// 1. The controller stops the attack at its deadline, on abort and on
    ///    SIGINT/SIGTERM/SIGHUP.
    ControllerStop,
    /// 2. Every rule carries its deadline, checked by the eBPF program on
    ///    every event: a hung or killed controller cannot prolong it.
    KernelDeadline,
    /// 3. The attachments are fd-owned links: they vanish with the process.
    LinksDieWithProcess,
    /// 2, for a fault the kernel does not hold: chaos's own thread acts,
    ///    checking the deadline before each act, and stops with the
    ///    process.
    InProcess,
    /// 2 and 3, for a fault the kernel does not hold and that outlives
    ///    chaos (a frozen cgroup, a lowered limit): a guardian process
    ///    (crate::guardian) restores it at the deadline, and at once when
    ///    chaos dies; chaos restores it at once when the guardian dies.
    Guardian,
    /// 3, where something outlives the process: it is recorded in the
    ///    state file before it is created, and `chaos recover` (or the next
    ///    start) removes it.
    RecoverRecord,
}

impl SafetyLayer {
    pub fn name(self) -> &'static str {
        match self {
            Self::ControllerStop => "controller stop",
            Self::KernelDeadline => "kernel-side deadline",
            Self::InProcess => "acts from chaos's process",
            Self::Guardian => "guardian process",
            Self::LinksDieWithProcess => "links die with the process",
            Self::RecoverRecord => "recover record",
        }
    }
}

/// One safety layer and what it covers for this mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Safety {
    pub layer: SafetyLayer,
    pub covers: String,
}

impl fmt::Display for Safety {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.layer.name(), self.covers)
    }
}

/// What a family's mechanism states about itself: how it reads for people,
/// and which safety layers it provides beyond the controller's stop.
pub trait FamilyMechanism {
    /// One line for people: `tc egress (TCX link), cgroup_skb ingress`.
    fn describe(&self) -> String;
    /// What the mechanism attaches or installs, by how it goes away when
    /// the controller does not remove it.
    fn held(&self) -> Held;
    /// Whether every rule carries a deadline its eBPF program checks. A
    /// family whose fault the kernel cannot end by itself (a cgroup freeze)
    /// says no, and `chaos doctor` and `--dry-run` show it.
    fn kernel_deadline(&self) -> bool {
        true
    }
    /// For a family without a kernel-side rule whose fault is chaos's own
    /// acts: how those end (the [`SafetyLayer::InProcess`] layer).
    fn in_process(&self) -> Option<&'static str> {
        None
    }
    /// For a family whose fault outlives chaos unless undone: what its
    /// guardian does (the [`SafetyLayer::Guardian`] layer).
    fn guardian(&self) -> Option<&'static str> {
        None
    }
}

/// What a mechanism holds while an attack runs.
#[derive(Debug, Default)]
pub struct Held {
    /// fd-owned links: they vanish with the process.
    pub links: Vec<&'static str>,
    /// What outlives the process: recorded in the state file first, removed
    /// by `chaos recover` (or the next start).
    pub recorded: Vec<&'static str>,
}

impl Mechanism {
    /// The family's own mechanism.
    pub fn family(&self) -> &dyn FamilyMechanism {
        match self {
            Self::Net(m) => m,
            Self::Conn(m) => m,
            Self::Reset(m) => m,
            Self::Dns(m) => m,
            Self::Io(m) => m,
            Self::Clock(m) => m,
            Self::Pause(m) => m,
            Self::Cpu(m) => m,
            Self::Kill(m) => m,
            Self::Memory(m) => m,
            Self::Block(m) => m,
        }
    }

    /// The safety layers this mechanism provides, in the model's order.
    pub fn safety(&self) -> Vec<Safety> {
        let s = |layer, covers: &str| Safety { layer, covers: covers.to_owned() };
        let family = self.family();
        let mut out = vec![s(SafetyLayer::ControllerStop, "deadline, abort, SIGINT/SIGTERM/SIGHUP")];
        if family.kernel_deadline() {
            out.push(s(SafetyLayer::KernelDeadline, "every rule, checked on every event"));
        }
        if let Some(covers) = family.in_process() {
            out.push(s(SafetyLayer::InProcess, covers));
        }
        if let Some(covers) = family.guardian() {
            out.push(s(SafetyLayer::Guardian, covers));
        }
        let held = family.held();
        if !held.links.is_empty() {
            out.push(s(SafetyLayer::LinksDieWithProcess, &held.links.join(", ")));
        }
        if !held.recorded.is_empty() {
            out.push(s(SafetyLayer::RecoverRecord, &held.recorded.join(", ")));
        }
        out
    }

    /// One line for people: `TCX egress, cgroup_skb ingress`.
    pub fn describe(&self) -> String {
        self.family().describe()
    }
}

/// One line per safety layer, for people.
pub fn safety_text(m: &Mechanism) -> String {
    m.safety().iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests;

//! Faults: what to do to a target, with validated parameters.
//!
//! A fault knows how to become the rule its eBPF program reads; it does not
//! know how that program is attached (that is the planner's and the
//! injector's business).

pub mod block;
pub mod clock;
pub mod conn;
pub mod cpu;
pub mod dns;
pub mod io;
pub mod kill;
pub mod memory;
pub mod net;
pub mod pause;
pub mod reset;
pub mod size;

pub use block::IoThrottle;
pub use clock::{ClockSkew, Offset, SkewClock};
pub use conn::{ConnDirection, NetRefuse, Transport};
pub use cpu::CpuStarve;
pub use dns::{DnsAnswer, DnsError, NamePattern};
pub use io::{Errno, IoError, IoOp, PathsIn};
pub use kill::Kill;
pub use memory::MemoryPressure;
pub use net::{Direction, Distribution, NetAny, NetEffects, NetFault, NetFilter, NetKind, NetLoss, Protocol};
pub use pause::{Cycle, Pause};
pub use reset::NetReset;
use serde::Serialize;

/// A fault and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    NetLoss(NetLoss),
    NetDelay(NetFault),
    NetRate(NetFault),
    NetDuplicate(NetFault),
    NetCorrupt(NetFault),
    NetReorder(NetFault),
    NetRefuse(NetRefuse),
    /// net-loss at 100%, both ways, with its networks: see
    /// `chaos attack net-partition --help`.
    NetPartition(NetLoss),
    NetReset(NetReset),
    DnsError(DnsError),
    IoError(IoError),
    ClockSkew(ClockSkew),
    Pause(Pause),
    CpuStarve(CpuStarve),
    Kill(Kill),
    MemoryPressure(MemoryPressure),
    IoThrottle(IoThrottle),
}

/// Faults of one family share maps and hooks; a target may carry at most one
/// attack per family at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Net,
    Conn,
    Reset,
    Dns,
    Io,
    Clock,
    Pause,
    Cpu,
    Kill,
    Memory,
    Block,
}

/// A fault as its family takes it: the family's own type.
#[derive(Clone, Debug, PartialEq)]
pub enum FamilyFault {
    Net(NetAny),
    Conn(NetRefuse),
    Reset(NetReset),
    Dns(DnsError),
    Io(IoError),
    Clock(ClockSkew),
    Pause(Pause),
    Cpu(CpuStarve),
    Kill(Kill),
    Memory(MemoryPressure),
    Block(IoThrottle),
}

impl Fault {
    /// The fault as its family's own type (for the planner, which pairs it
    /// with the family's mechanism).
    pub fn by_family(&self) -> FamilyFault {
        match self {
            Self::NetLoss(f) | Self::NetPartition(f) => FamilyFault::Net(NetAny::Loss(f.clone())),
            Self::NetDelay(f)
            | Self::NetRate(f)
            | Self::NetDuplicate(f)
            | Self::NetCorrupt(f)
            | Self::NetReorder(f) => FamilyFault::Net(NetAny::Effects(f.clone())),
            Self::NetRefuse(f) => FamilyFault::Conn(f.clone()),
            Self::NetReset(f) => FamilyFault::Reset(f.clone()),
            Self::DnsError(f) => FamilyFault::Dns(f.clone()),
            Self::IoError(f) => FamilyFault::Io(f.clone()),
            Self::ClockSkew(f) => FamilyFault::Clock(f.clone()),
            Self::Pause(f) => FamilyFault::Pause(*f),
            Self::CpuStarve(f) => FamilyFault::Cpu(*f),
            Self::Kill(f) => FamilyFault::Kill(f.clone()),
            Self::MemoryPressure(f) => FamilyFault::Memory(*f),
            Self::IoThrottle(f) => FamilyFault::Block(f.clone()),
        }
    }

    /// The name users type (`chaos attack <kind>`, `fault:` in files).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NetLoss(_) => "net-loss",
            Self::NetDelay(_) => NetKind::Delay.name(),
            Self::NetRate(_) => NetKind::Rate.name(),
            Self::NetDuplicate(_) => NetKind::Duplicate.name(),
            Self::NetCorrupt(_) => NetKind::Corrupt.name(),
            Self::NetReorder(_) => NetKind::Reorder.name(),
            Self::NetRefuse(_) => "net-refuse",
            Self::NetPartition(_) => "net-partition",
            Self::NetReset(_) => "net-reset",
            Self::DnsError(_) => "dns-error",
            Self::IoError(_) => "io-error",
            Self::ClockSkew(_) => "clock-skew",
            Self::Pause(_) => "pause",
            Self::CpuStarve(_) => "cpu-starve",
            Self::Kill(_) => "kill",
            Self::MemoryPressure(_) => "memory-pressure",
            Self::IoThrottle(_) => "io-throttle",
        }
    }

    /// Whether an attack of this fault goes on when its target's cgroup is
    /// removed, or made again under the same path with a new id (see
    /// `controller::target_gone`): only `kill`'s. Its rounds end processes,
    /// and so often the cgroup itself (a container's, when its init dies),
    /// and what follows is what the user wants to see: its watch follows a
    /// cgroup made again at the same path (injector/kill.rs). Every other
    /// fault is a rule or a limit on the cgroup's id, which the new cgroup
    /// does not carry.
    pub fn survives_its_cgroup(&self) -> bool {
        matches!(self, Self::Kill(_))
    }

    pub fn family(&self) -> Family {
        match self.by_family() {
            FamilyFault::Net(_) => Family::Net,
            FamilyFault::Conn(_) => Family::Conn,
            FamilyFault::Reset(_) => Family::Reset,
            FamilyFault::Dns(_) => Family::Dns,
            FamilyFault::Io(_) => Family::Io,
            FamilyFault::Clock(_) => Family::Clock,
            FamilyFault::Pause(_) => Family::Pause,
            FamilyFault::Cpu(_) => Family::Cpu,
            FamilyFault::Kill(_) => Family::Kill,
            FamilyFault::Memory(_) => Family::Memory,
            FamilyFault::Block(_) => Family::Block,
        }
    }

    /// A validated network fault named after its primary effect.
    pub fn net(kind: NetKind, fault: NetFault) -> Self {
        match kind {
            NetKind::Delay => Self::NetDelay(fault),
            NetKind::Rate => Self::NetRate(fault),
            NetKind::Duplicate => Self::NetDuplicate(fault),
            NetKind::Corrupt => Self::NetCorrupt(fault),
            NetKind::Reorder => Self::NetReorder(fault),
        }
    }
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Net => "net",
            Self::Conn => "conn",
            Self::Reset => "reset",
            Self::Dns => "dns",
            Self::Io => "io",
            Self::Clock => "clock",
            Self::Pause => "pause",
            Self::Cpu => "cpu",
            Self::Kill => "kill",
            Self::Memory => "memory",
            Self::Block => "block",
        }
    }
}

/// The fault an experiment file's one-step method builds, for the unit
/// tests that check a step and its `chaos attack` flags agree.
#[cfg(test)]
pub(crate) fn fault_of_step(step: &str) -> Result<Fault, String> {
    crate::experiment::parse::fault_of(step).map_err(|d| d.to_string())
}

//! Faults: what to do to a target, with validated parameters.
//!
//! A fault knows how to become the rule its eBPF program reads; it does not
//! know how that program is attached (that is the planner's and the
//! injector's business).

pub mod net;

pub use net::{Direction, NetFilter, NetLoss, Protocol};
use serde::Serialize;

/// A fault and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    NetLoss(NetLoss),
}

/// Faults of one family share maps and hooks; a target may carry at most one
/// attack per family at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Net,
}

impl Fault {
    /// The name users type (`chaos attack <kind>`, `fault:` in files).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NetLoss(_) => "net-loss",
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Self::NetLoss(_) => Family::Net,
        }
    }
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Net => "net",
        }
    }
}

//! `memory-pressure`: cgroup v2's memory controller. No program: the
//! target's `memory.high` (mm/memcontrol.c, `memory_high_write`), which
//! needs the memory controller on the cgroup v2 hierarchy; where it is
//! bound to a v1 hierarchy (a hybrid layout), the attack is refused.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How a target is pushed into reclaim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryVia {
    /// `memory.high` of the target cgroup.
    MemoryHigh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryMechanism {
    pub via: MemoryVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<MemoryMechanism> {
    let via = first_available(
        subject,
        "limiting the target's memory",
        &[(MemoryVia::MemoryHigh, Capability::CgroupMemory)],
        None,
        caps,
    )?;
    Ok(MemoryMechanism { via })
}

impl FamilyMechanism for MemoryMechanism {
    fn describe(&self) -> String {
        "cgroup v2 memory.high, restored by chaos or by its guardian".into()
    }

    fn held(&self) -> Held {
        Held { links: Vec::new(), recorded: vec!["memory.high (its value before the attack)"] }
    }

    /// A lowered boundary stays: the kernel holds no deadline.
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn guardian(&self) -> Option<&'static str> {
        Some("restores the boundary at the deadline if chaos hangs, at once if chaos dies or on SIGTERM")
    }
}

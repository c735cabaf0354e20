//! `pause`: the cgroup v2 freezer. No program, and no capability beyond
//! cgroup v2 itself: `cgroup.freeze` exists in every non-root cgroup from
//! Linux 5.2 (kernel/cgroup/cgroup.c, `cgroup_freeze_write`), older than
//! any kernel chaos supports; a target without it (the root cgroup, a
//! cgroup v1 hierarchy) is refused at the start, naming the file.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How a target is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseVia {
    /// `cgroup.freeze` of the target cgroup.
    CgroupFreeze,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PauseMechanism {
    pub via: PauseVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<PauseMechanism> {
    let via =
        first_available(subject, "pause", &[(PauseVia::CgroupFreeze, Capability::CgroupV2)], None, caps)?;
    Ok(PauseMechanism { via })
}

impl FamilyMechanism for PauseMechanism {
    fn describe(&self) -> String {
        "cgroup v2 freezer (cgroup.freeze), thawed by chaos or by its guardian".into()
    }

    fn held(&self) -> Held {
        Held { links: Vec::new(), recorded: vec!["cgroup.freeze (its value before the attack)"] }
    }

    /// A frozen cgroup stays frozen: the kernel holds no deadline.
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn guardian(&self) -> Option<&'static str> {
        Some("thaws at the deadline if chaos hangs, at once if chaos dies or on SIGTERM")
    }
}

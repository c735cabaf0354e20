//! `cpu-starve`: cgroup v2's CPU bandwidth control. No program: the
//! target's `cpu.max` (kernel/sched/core.c, `cpu_max_write`), which needs
//! the cpu controller on the cgroup v2 hierarchy; where it is bound to a
//! v1 hierarchy (a hybrid layout), the attack is refused.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How a target's CPU is limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuVia {
    /// `cpu.max` of the target cgroup.
    CpuMax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuMechanism {
    pub via: CpuVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<CpuMechanism> {
    let via = first_available(
        subject,
        "limiting the target's CPU",
        &[(CpuVia::CpuMax, Capability::CgroupCpu)],
        None,
        caps,
    )?;
    Ok(CpuMechanism { via })
}

impl FamilyMechanism for CpuMechanism {
    fn describe(&self) -> String {
        "cgroup v2 CPU bandwidth (cpu.max), restored by chaos or by its guardian".into()
    }

    fn held(&self) -> Held {
        Held { links: Vec::new(), recorded: vec!["cpu.max (its value before the attack)"] }
    }

    /// A lowered limit stays: the kernel holds no deadline.
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn guardian(&self) -> Option<&'static str> {
        Some("restores the limit at the deadline if chaos hangs, at once if chaos dies or on SIGTERM")
    }
}

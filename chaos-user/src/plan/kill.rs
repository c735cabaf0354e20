//! `kill`: signals to the target's processes. No program and no
//! capability beyond cgroup v2: `cgroup.kill` (Linux 5.14) where the
//! kernel has it and the attack is SIGKILL to all, pidfds
//! (`pidfd_send_signal`, Linux 5.1) otherwise; the injector chooses at
//! each round, by whether the file is there.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How the target's processes are found and signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillVia {
    /// The target's `cgroup.procs` (and its descendants'), `cgroup.kill`.
    Cgroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KillMechanism {
    pub via: KillVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<KillMechanism> {
    let via = first_available(subject, "kill", &[(KillVia::Cgroup, Capability::CgroupV2)], None, caps)?;
    Ok(KillMechanism { via })
}

impl FamilyMechanism for KillMechanism {
    fn describe(&self) -> String {
        "signals through cgroup.kill or pidfds, from chaos's own thread".into()
    }

    fn held(&self) -> Held {
        Held::default()
    }

    /// No rule in the kernel: the kills are chaos's own acts.
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn in_process(&self) -> Option<&'static str> {
        Some("every round checks the deadline; none once chaos stops, hangs or dies; a kill needs no undoing")
    }
}

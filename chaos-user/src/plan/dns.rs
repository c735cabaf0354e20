//! DNS errors (`dns-error`): a tc egress classifier on the target's
//! devices (TCX where the kernel has it, a netlink filter otherwise), the
//! same attachment as the network faults' classifier, without their tag
//! program: it recognises a DNS query by its headers, which costs every
//! other packet about as much as the tag test (chaos-ebpf/src/dns/mod.rs).

use serde::Serialize;

use super::{FamilyMechanism, Held, Preferences, first_available};
use crate::{
    attach::tc::EgressMode,
    capabilities::{Capability, Findings},
    error::Result,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DnsMechanism {
    /// How the classifier is attached.
    pub egress: EgressMode,
}

pub fn plan(subject: &str, caps: &dyn Findings, prefs: &Preferences) -> Result<DnsMechanism> {
    let candidates = [(EgressMode::Tcx, Capability::Tcx), (EgressMode::Netlink, Capability::TcNetlink)];
    let egress = first_available(subject, "egress", &candidates, prefs.egress, caps)?;
    Ok(DnsMechanism { egress })
}

impl FamilyMechanism for DnsMechanism {
    fn describe(&self) -> String {
        match self.egress {
            EgressMode::Tcx => "tc egress (TCX link): queries answered or dropped in the kernel".into(),
            EgressMode::Netlink => {
                "tc egress (netlink filter): queries answered or dropped in the kernel".into()
            }
        }
    }

    fn held(&self) -> Held {
        let mut held = Held::default();
        match self.egress {
            EgressMode::Tcx => held.links.push("TCX egress link"),
            EgressMode::Netlink => {
                held.recorded.push("the netlink tc egress filter (inert after its deadline)")
            }
        }
        held
    }
}

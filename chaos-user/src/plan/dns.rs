//! DNS errors (`dns-error`): a tc egress classifier on the target's
//! devices (TCX where the kernel has it, a netlink filter otherwise), the
//! same attachment as the network faults' classifier, without their tag
//! program: it recognises a DNS query by its headers, which costs every
//! other packet about as much as the tag test (chaos-ebpf/src/dns/mod.rs).
//! Queries over TCP: a sock_ops program on the target's cgroups and an
//! sk_msg program on the sockhash it fills, where the kernel has both.

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
    /// Whether queries over TCP are acted on too: sk_msg and sock_ops
    /// (chaos-ebpf/src/dns/tcp.rs). Where the kernel lacks them, lookups
    /// over TCP pass untouched, and the plan says so.
    pub tcp: bool,
}

pub fn plan(subject: &str, caps: &dyn Findings, prefs: &Preferences) -> Result<DnsMechanism> {
    let candidates = [(EgressMode::Tcx, Capability::Tcx), (EgressMode::Netlink, Capability::TcNetlink)];
    let egress = first_available(subject, "egress", &candidates, prefs.egress, caps)?;
    Ok(DnsMechanism { egress, tcp: caps.has(Capability::SkMsg) })
}

impl FamilyMechanism for DnsMechanism {
    fn describe(&self) -> String {
        let udp = match self.egress {
            EgressMode::Tcx => "tc egress (TCX link)",
            EgressMode::Netlink => "tc egress (netlink filter)",
        };
        if self.tcp {
            format!(
                "{udp} for UDP, sk_msg on the target's connections to port 53 for TCP: queries answered or \
                 dropped in the kernel"
            )
        } else {
            format!(
                "{udp}: UDP queries answered or dropped in the kernel; queries over TCP pass untouched on \
                 this kernel (no sk_msg and sock_ops: see `chaos doctor`)"
            )
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
        if self.tcp {
            held.links.push("sock_ops cgroup link");
        }
        held
    }
}

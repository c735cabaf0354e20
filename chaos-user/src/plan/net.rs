//! Network faults: a tc egress classifier (TCX where the kernel has it, a
//! netlink filter otherwise) for what the target sends, with a cgroup_skb
//! egress program on the target that tags its packets, a cgroup_skb ingress
//! program for what it receives, and an fq qdisc on the egress devices when
//! packets get departure times (delay, jitter, rate, reorder).

use serde::Serialize;

use super::{FamilyMechanism, Held, Preferences, first_available, unavailable};
use crate::{
    attach::tc::EgressMode,
    capabilities::{Capability, Findings},
    error::Result,
    faults::Direction,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NetMechanism {
    /// tc egress classifier, and how it is attached; `None` when the fault
    /// does not act on egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressMode>,
    /// cgroup_skb ingress program on the target.
    pub ingress_cgroup_skb: bool,
    /// fq on each egress device, which holds packets until the departure
    /// time the classifier gave them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fq: bool,
}

/// `schedules`: the fault sets departure times, which only fq honours.
pub fn plan(
    subject: &str,
    direction: Direction,
    schedules: bool,
    caps: &dyn Findings,
    prefs: &Preferences,
) -> Result<NetMechanism> {
    let egress = if direction.egress() { Some(egress_mode(subject, caps, prefs)?) } else { None };
    let ingress = direction.ingress();
    if ingress && !caps.has(Capability::CgroupSkb) {
        return Err(unavailable(subject, "ingress", &[Capability::CgroupSkb], caps));
    }
    // Egress too: a cgroup_skb program on the target tags its packets for
    // the classifier (chaos-ebpf/src/net_egress.rs).
    if egress.is_some() && !caps.has(Capability::CgroupSkb) {
        return Err(unavailable(subject, "egress", &[Capability::CgroupSkb], caps));
    }
    if schedules && !caps.has(Capability::FqQdisc) {
        return Err(unavailable(subject, "departure times need the fq qdisc", &[Capability::FqQdisc], caps));
    }
    Ok(NetMechanism { egress, ingress_cgroup_skb: ingress, fq: schedules })
}

/// TCX when available (fd-owned: ends with the process), netlink
/// otherwise, unless the preferences force one.
fn egress_mode(subject: &str, caps: &dyn Findings, prefs: &Preferences) -> Result<EgressMode> {
    let candidates = [(EgressMode::Tcx, Capability::Tcx), (EgressMode::Netlink, Capability::TcNetlink)];
    first_available(subject, "egress", &candidates, prefs.egress, caps)
}

impl FamilyMechanism for NetMechanism {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.egress {
            Some(EgressMode::Tcx) => parts.push("tc egress (TCX link) + cgroup_skb egress tag"),
            Some(EgressMode::Netlink) => parts.push("tc egress (netlink filter) + cgroup_skb egress tag"),
            None => {}
        }
        if self.ingress_cgroup_skb {
            parts.push("cgroup_skb ingress");
        }
        if self.fq {
            parts.push("fq qdisc (departure times)");
        }
        parts.join(", ")
    }

    fn held(&self) -> Held {
        let mut held = Held::default();
        match self.egress {
            Some(EgressMode::Tcx) => held.links.extend(["TCX egress link", "cgroup_skb egress tag link"]),
            Some(EgressMode::Netlink) => {
                held.links.push("cgroup_skb egress tag link");
                held.recorded
                    .push("the netlink tc egress filter (inert without the tag link, and after its deadline)")
            }
            None => {}
        }
        if self.ingress_cgroup_skb {
            held.links.push("cgroup_skb ingress link");
        }
        if self.fq {
            held.recorded.push("the fq qdisc installed on each egress device");
        }
        held
    }
}

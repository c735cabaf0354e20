//! Network faults: a tc egress classifier (TCX where the kernel has it, a
//! netlink filter otherwise) for what the target sends, with a cgroup_skb
//! egress program on the target that tags its packets, a cgroup_skb ingress
//! program for what it receives (loss), a tc ingress classifier with an ifb
//! for the other effects on what it receives, and an fq qdisc on the egress
//! devices (and the ifb) when packets get departure times (delay, jitter,
//! rate, reorder).

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
    /// cgroup_skb ingress program on the target (loss alone on what it
    /// receives).
    pub ingress_cgroup_skb: bool,
    /// Effects on what the target receives: a tc ingress classifier (TCX)
    /// on its devices, which sends the target's packets through an ifb of
    /// chaos's with fq, and cgroup_skb programs that learn its flows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub receive: bool,
    /// fq on each egress device, which holds packets until the departure
    /// time the classifier gave them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fq: bool,
}

/// What the network planner decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDemand {
    pub direction: Direction,
    /// The fault sets departure times, which only fq honours.
    pub schedules: bool,
    /// Effects beyond loss on what the target receives: they need a queue
    /// on the receive path (chaos's ifb) and the tc ingress classifier.
    pub receive: bool,
}

pub fn plan(
    subject: &str,
    demand: NetDemand,
    caps: &dyn Findings,
    prefs: &Preferences,
) -> Result<NetMechanism> {
    let NetDemand { direction, schedules, receive } = demand;
    let egress = if direction.egress() { Some(egress_mode(subject, caps, prefs)?) } else { None };
    if !caps.has(Capability::CgroupSkb) {
        // Egress: a cgroup_skb program on the target tags its packets for
        // the classifier (chaos-ebpf/src/net_egress.rs); ingress: the loss
        // program, or the programs that learn the target's flows.
        let what = if egress.is_some() { "egress" } else { "ingress" };
        return Err(unavailable(subject, what, &[Capability::CgroupSkb], caps));
    }
    if receive {
        // The ingress classifier is attached through TCX only (fd-owned),
        // and the ifb redirect needs 6.4: every kernel with TCX has both.
        for needed in [Capability::Tcx, Capability::IfbIngress] {
            if !caps.has(needed) {
                return Err(unavailable(
                    subject,
                    "effects on what the target receives need the tc ingress classifier (TCX) and chaos's ifb queue",
                    &[Capability::Tcx, Capability::IfbIngress],
                    caps,
                ));
            }
        }
    }
    if schedules && !caps.has(Capability::FqQdisc) {
        return Err(unavailable(subject, "departure times need the fq qdisc", &[Capability::FqQdisc], caps));
    }
    Ok(NetMechanism {
        egress,
        ingress_cgroup_skb: direction.ingress() && !receive,
        receive: direction.ingress() && receive,
        fq: schedules,
    })
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
        if self.receive {
            parts.push("tc ingress (TCX link) + cgroup_skb flow learning + ifb with fq");
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
        if self.receive {
            held.links.extend(["TCX ingress link", "cgroup_skb flow-learning links"]);
            held.recorded.push("chaos's ifb device in each target namespace (inert without the TCX link)");
        }
        if self.fq {
            held.recorded.push("the fq qdisc installed on each egress device");
        }
        held
    }
}

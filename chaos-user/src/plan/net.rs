//! Network faults: a tc egress classifier (TCX where the kernel has it, a
//! netlink filter otherwise) for what the target sends, a cgroup_skb ingress
//! program for what it receives, and an fq qdisc on the egress devices when
//! packets get departure times (delay, jitter, rate, reorder).

use serde::Serialize;

use super::{Preferences, unavailable};
use crate::{
    attach::tc::EgressMode,
    capabilities::{Capability, CapabilitySet},
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
    caps: &CapabilitySet,
    prefs: &Preferences,
) -> Result<NetMechanism> {
    let egress = if direction.egress() { Some(egress_mode(subject, caps, prefs)?) } else { None };
    let ingress = direction.ingress();
    if ingress && !caps.has(Capability::CgroupSkb) {
        return Err(unavailable(subject, "ingress", &[Capability::CgroupSkb], caps));
    }
    if schedules && !caps.has(Capability::FqQdisc) {
        return Err(unavailable(subject, "departure times need the fq qdisc", &[Capability::FqQdisc], caps));
    }
    Ok(NetMechanism { egress, ingress_cgroup_skb: ingress, fq: schedules })
}

/// TCX when available (fd-owned: ends with the process), netlink
/// otherwise, unless the preferences force one.
fn egress_mode(subject: &str, caps: &CapabilitySet, prefs: &Preferences) -> Result<EgressMode> {
    let candidates: &[(EgressMode, Capability)] = match prefs.egress {
        None => &[(EgressMode::Tcx, Capability::Tcx), (EgressMode::Netlink, Capability::TcNetlink)],
        Some(EgressMode::Tcx) => &[(EgressMode::Tcx, Capability::Tcx)],
        Some(EgressMode::Netlink) => &[(EgressMode::Netlink, Capability::TcNetlink)],
    };
    // An unknown TCX is not skipped for netlink: the plan would then say
    // "netlink" where the machine may well use TCX.
    for (mode, cap) in candidates {
        if caps.is_unknown(*cap) {
            break;
        }
        if caps.has(*cap) {
            return Ok(*mode);
        }
    }
    let tried: Vec<Capability> = candidates.iter().map(|(_, c)| *c).collect();
    Err(unavailable(subject, "egress", &tried, caps))
}

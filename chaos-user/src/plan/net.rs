//! Network faults: a tc egress classifier (TCX where the kernel has it, a
//! netlink filter otherwise) for what the target sends, a cgroup_skb ingress
//! program for what it receives, and an fq qdisc on the egress devices when
//! packets get departure times (delay, jitter, rate, reorder).

use serde::Serialize;

use super::unavailable;
use crate::{
    attach::tc::EgressMode,
    attack::Attack,
    capabilities::{Capabilities, Capability},
    error::{Error, Result},
    faults::NetFilter,
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
    attack: &Attack,
    filter: &NetFilter,
    schedules: bool,
    caps: &mut Capabilities,
) -> Result<NetMechanism> {
    let egress = if filter.direction.egress() { Some(egress_mode(attack, caps)?) } else { None };
    let ingress = filter.direction.ingress();
    if ingress && !caps.has(Capability::CgroupSkb) {
        return Err(unavailable(attack, "ingress", &[Capability::CgroupSkb], caps));
    }
    if schedules && !caps.has(Capability::FqQdisc) {
        return Err(unavailable(attack, "departure times need the fq qdisc", &[Capability::FqQdisc], caps));
    }
    Ok(NetMechanism { egress, ingress_cgroup_skb: ingress, fq: schedules })
}

/// TCX when available (fd-owned: ends with the process), netlink
/// otherwise. `CHAOS_EGRESS_MODE=tcx|netlink` forces one, for tests and for
/// operators who need one — still only if the kernel can do it.
fn egress_mode(attack: &Attack, caps: &mut Capabilities) -> Result<EgressMode> {
    let candidates: &[(EgressMode, Capability)] = match std::env::var("CHAOS_EGRESS_MODE").ok().as_deref() {
        None | Some("") => {
            &[(EgressMode::Tcx, Capability::Tcx), (EgressMode::Netlink, Capability::TcNetlink)]
        }
        Some("tcx") => &[(EgressMode::Tcx, Capability::Tcx)],
        Some("netlink") => &[(EgressMode::Netlink, Capability::TcNetlink)],
        Some(other) => {
            return Err(Error::invalid(format!("CHAOS_EGRESS_MODE={other}: expected tcx or netlink")));
        }
    };
    for (mode, cap) in candidates {
        if caps.has(*cap) {
            return Ok(*mode);
        }
    }
    let tried: Vec<Capability> = candidates.iter().map(|(_, c)| *c).collect();
    Err(unavailable(attack, "egress", &tried, caps))
}

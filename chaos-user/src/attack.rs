//! Attacks and their plans: which mechanism realizes each part of a fault on
//! this kernel, decided from probed capabilities.

use std::time::Duration;

use serde::Serialize;

use crate::{
    attach::tc::EgressMode,
    capabilities::{Capabilities, Capability},
    error::{Error, Result},
    faults::Fault,
    targets::Target,
};

/// One fault on one target for a bounded duration.
#[derive(Clone, Debug, Serialize)]
pub struct Attack {
    /// Unique within a run, e.g. `net-loss-1`.
    pub id: String,
    #[serde(flatten)]
    pub fault: Fault,
    pub target: Target,
    #[serde(serialize_with = "serialize_duration")]
    pub duration: Duration,
    /// Devices to act on; all devices of the target's network namespaces
    /// when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::format_duration(*d))
}

/// How an attack is realized here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mechanism {
    /// tc egress classifier, and how it is attached; `None` when the fault
    /// does not act on egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressMode>,
    /// cgroup_skb ingress program on the target.
    pub ingress_cgroup_skb: bool,
}

/// Choose the mechanism for `attack` from what the kernel can do. Errors
/// say what is missing and why, from the probe.
pub fn plan(attack: &Attack, caps: &mut Capabilities) -> Result<Mechanism> {
    match &attack.fault {
        Fault::NetLoss(loss) => {
            let egress = if loss.filter.direction.egress() {
                let forced = std::env::var("CHAOS_EGRESS_MODE").ok();
                if let Some(mode) = forced.as_deref() {
                    // For tests and for operators who need one mode: still
                    // only if the kernel can do it.
                    let (mode, cap) = match mode {
                        "tcx" => (EgressMode::Tcx, Capability::Tcx),
                        "netlink" => (EgressMode::Netlink, Capability::TcNetlink),
                        other => {
                            return Err(Error::invalid(format!(
                                "CHAOS_EGRESS_MODE={other}: expected tcx or netlink"
                            )));
                        }
                    };
                    if !caps.has(cap) {
                        return Err(unavailable(attack, "egress", &[cap], caps));
                    }
                    Some(mode)
                } else if caps.has(Capability::Tcx) {
                    Some(EgressMode::Tcx)
                } else if caps.has(Capability::TcNetlink) {
                    Some(EgressMode::Netlink)
                } else {
                    return Err(unavailable(
                        attack,
                        "egress",
                        &[Capability::Tcx, Capability::TcNetlink],
                        caps,
                    ));
                }
            } else {
                None
            };
            let ingress = loss.filter.direction.ingress();
            if ingress && !caps.has(Capability::CgroupSkb) {
                return Err(unavailable(attack, "ingress", &[Capability::CgroupSkb], caps));
            }
            Ok(Mechanism { egress, ingress_cgroup_skb: ingress })
        }
    }
}

fn unavailable(attack: &Attack, part: &str, tried: &[Capability], caps: &mut Capabilities) -> Error {
    let reasons: Vec<String> = tried
        .iter()
        .map(|c| {
            let p = caps.probe(*c);
            format!("{c}: {}", p.detail)
        })
        .collect();
    Error::environment(format!(
        "{} on {} is unavailable on this kernel ({part}): {}. `chaos doctor` shows every mechanism",
        attack.fault.kind(),
        attack.target,
        reasons.join("; ")
    ))
}

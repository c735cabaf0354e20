//! The egress classifier on network devices.
//!
//! With TCX (Linux >= 6.6) the attachment is a BPF link owned by our file
//! descriptor: it disappears with the process, however the process ends.
//! Without TCX it is a cls_bpf filter under a clsact qdisc, created through
//! netlink, which survives the process: it is written to the state file
//! before it is created, carries the rule's kernel-side deadline, and is
//! removed by `chaos recover` (or the next chaos start) if we die.

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::Link as _,
    tc::{self, NlOptions, SchedClassifierLink, TcAttach, TcHandle},
};
use serde::Serialize;

use super::netns::Netns;
use crate::{
    clock::monotonic_ns,
    ebpf::describe,
    error::{Error, Result},
    state::{Leftover, Record, StateFile},
};

/// How egress programs are attached on this kernel (chosen by probing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    Tcx,
    Netlink,
}

/// `TC_H_CLSACT:TC_H_MIN_EGRESS`, the parent of egress filters.
fn egress_parent() -> TcHandle {
    TcAttachType::Egress.into()
}

/// Filters we create run before anyone else's (lowest preference number
/// wins), so that no other filter's verdict can skip the fault.
const FILTER_PRIORITY: u16 = 1;

/// One device's egress attachment.
#[derive(Debug)]
pub struct EgressLink {
    pub netns: Netns,
    pub ifindex: u32,
    pub ifname: String,
    link: Option<SchedClassifierLink>,
    /// Netlink mode: the filter, and the clsact qdisc if we added it.
    filter: Option<Leftover>,
    clsact: Option<Leftover>,
}

/// Attach `prog` (loaded) to the egress of `ifindex` in `netns`.
pub fn attach_egress(
    prog: &mut SchedClassifier,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    mode: EgressMode,
    state: &mut StateFile,
) -> Result<EgressLink> {
    let mut out = EgressLink {
        netns: netns.clone(),
        ifindex,
        ifname: ifname.to_owned(),
        link: None,
        filter: None,
        clsact: None,
    };
    let context = || format!("attaching the egress program to {ifname} (netns {})", netns.inode);
    match mode {
        EgressMode::Tcx => {
            let link = netns
                .run(|| {
                    let mut attach = |order| {
                        prog.attach(ifindex, TcAttach::Tcx { attach_type: TcAttachType::Egress, order })
                    };
                    // First in the chain, so no other program's verdict can
                    // skip the fault; after the others if someone insists on
                    // being first.
                    let id = attach(LinkOrder::first()).or_else(|_| attach(LinkOrder::default()))?;
                    prog.take_link(id)
                })
                .map_err(|e| Error::kernel(context(), e))?
                .map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))?;
            out.link = Some(link);
        }
        EgressMode::Netlink => {
            let clsact = Leftover::Clsact { netns: netns.inode, ifindex, ifname: ifname.to_owned() };
            state.append(&Record::Leftover(clsact.clone()))?;
            let added =
                netns.run(|| tc::qdisc_add_clsact(ifindex)).map_err(|e| Error::kernel(context(), e))?;
            match added {
                Ok(()) => out.clsact = Some(clsact),
                // It was there before us: not ours to remove.
                Err(_) => state.append(&Record::Removed(clsact))?,
            }
            let mut last_err = None;
            for attempt in 0..16u32 {
                let handle = 0xc4a0_0000 | ((std::process::id() + attempt) & 0xffff);
                let filter = Leftover::TcFilter {
                    netns: netns.inode,
                    ifindex,
                    ifname: ifname.to_owned(),
                    parent: egress_parent().into(),
                    priority: FILTER_PRIORITY,
                    handle,
                };
                state.append(&Record::Leftover(filter.clone()))?;
                let attached = netns
                    .run(|| {
                        let options = NlOptions {
                            priority: FILTER_PRIORITY,
                            handle: TcHandle::from(handle),
                            classid: None,
                        };
                        let id =
                            prog.attach(ifindex, TcAttach::Netlink { parent: egress_parent(), options })?;
                        prog.take_link(id)
                    })
                    .map_err(|e| Error::kernel(context(), e))?;
                match attached {
                    Ok(link) => {
                        out.link = Some(link);
                        out.filter = Some(filter);
                        break;
                    }
                    Err(e) => {
                        state.append(&Record::Removed(filter))?;
                        last_err = Some(describe(&e));
                    }
                }
            }
            if out.link.is_none() {
                let err = last_err.unwrap_or_default();
                detach_egress(out, state)?;
                return Err(Error::kernel(context(), anyhow::anyhow!(err)));
            }
        }
    }
    Ok(out)
}

/// The instant the kernel deactivated a device while chaos deleted the
/// clsact qdisc it had added (see [`super::rtnl`]): packets the device's
/// users sent then were dropped, whoever sent them. Reported in the stop
/// event so that nobody mistakes it for the fault.
#[derive(Clone, Debug, Serialize)]
pub struct Deactivation {
    pub ifname: String,
    /// CLOCK_MONOTONIC, around the RTM_DELQDISC request.
    pub from_monotonic_ns: u64,
    pub to_monotonic_ns: u64,
}

/// Detach, inside the device's namespace (a netlink detach names the device
/// by index, which only means something there). Returns the deactivation
/// that deleting our clsact qdisc caused, if we deleted one.
pub fn detach_egress(mut link: EgressLink, state: &mut StateFile) -> Result<Option<Deactivation>> {
    let context = format!("detaching the egress program from {} (netns {})", link.ifname, link.netns.inode);
    if let Some(l) = link.link.take() {
        link.netns
            .run(move || l.detach())
            .map_err(|e| Error::kernel(&context, e))?
            .map_err(|e| Error::kernel(&context, anyhow::anyhow!(describe(&e))))?;
    }
    if let Some(filter) = link.filter.take() {
        state.append(&Record::Removed(filter))?;
    }
    let mut deactivation = None;
    if let Some(clsact) = link.clsact.take() {
        let from_monotonic_ns = monotonic_ns();
        if remove_clsact_if_unused(&link.netns, &link.ifname)? {
            let to_monotonic_ns = monotonic_ns();
            deactivation =
                Some(Deactivation { ifname: link.ifname.clone(), from_monotonic_ns, to_monotonic_ns });
        }
        state.append(&Record::Removed(clsact))?;
    }
    Ok(deactivation)
}

/// Delete a clsact qdisc we added, unless someone attached filters to it
/// meanwhile (deleting it would take theirs too). Deleting it deactivates
/// the device for an instant (see [`super::rtnl`]), so it is done in
/// process, right after our filter went. Returns whether it was deleted.
pub fn remove_clsact_if_unused(netns: &Netns, ifname: &str) -> Result<bool> {
    netns
        .run(|| -> std::io::Result<bool> {
            let others = super::rtnl::clsact_filters(ifname)?;
            if others > 0 {
                tracing::warn!("leaving the clsact qdisc on {ifname}: {others} other filter(s) use it");
                return Ok(false);
            }
            // false: gone already (device removed, or deleted by someone else).
            super::rtnl::delete_clsact(ifname)
        })
        .and_then(|r| r)
        .map_err(|e| Error::kernel(format!("removing the clsact qdisc chaos added on {ifname}"), e))
}

/// Remove a filter recorded by a dead chaos process.
pub fn remove_filter(netns: &Netns, ifindex: u32, parent: u32, priority: u16, handle: u32) -> Result<()> {
    netns
        .run(move || {
            let link = SchedClassifierLink::attached(
                ifindex,
                TcHandle::from(parent),
                priority,
                TcHandle::from(handle),
                None,
            )?;
            link.detach().map_err(|e| std::io::Error::other(describe(&e)))
        })
        .and_then(|r| r)
        .map_err(|e| Error::kernel(format!("removing tc filter pref {priority} handle {handle:#x}"), e))
}

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
            // Intent is recorded only for a clsact chaos is about to create:
            // one that is there already is someone's (or one chaos kept, see
            // `detach_egress`) and never becomes a leftover. The record
            // exists only between the check and the add; if someone adds a
            // clsact in that instant and chaos is killed before marking it
            // "not ours", recover still leaves it (it never deletes one).
            let present = netns
                .run(|| super::rtnl::has_clsact(ifname))
                .and_then(|r| r)
                .map_err(|e| Error::kernel(context(), e))?;
            if !present {
                let clsact = Leftover::Clsact { netns: netns.inode, ifindex, ifname: ifname.to_owned() };
                state.append(&Record::Leftover(clsact.clone()))?;
                let added =
                    netns.run(|| tc::qdisc_add_clsact(ifindex)).map_err(|e| Error::kernel(context(), e))?;
                match added {
                    Ok(()) => out.clsact = Some(clsact),
                    // Added by someone else since the check: not ours.
                    Err(_) => state.append(&Record::Removed(clsact))?,
                }
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

/// Detach, inside the device's namespace (a netlink detach names the device
/// by index, which only means something there).
///
/// A clsact qdisc chaos added is kept, empty, and its record closed:
/// deleting a clsact (or ingress) qdisc makes the kernel deactivate the
/// whole device (`qdisc_graft()` -> `dev_deactivate()` -> `synchronize_net()`,
/// net/sched/sch_api.c), and every packet anyone sends through it meanwhile
/// meets `noop_qdisc` and is dropped (measured: 2 datagrams of a 1 kHz
/// stream on Debian 6.1 under TCG and on 6.18; windows of 5-80 ms were
/// reported on loaded machines), a loss the attack would inflict on the
/// whole host as it ends. The cost of keeping it: an empty classifier hook on the device (the egress
/// static key stays on; an empty chain per packet) and a `clsact` line in
/// `tc qdisc show`, until the device or its namespace goes (a container's
/// usually goes with the container) or the operator deletes it at a moment
/// of their choosing (`tc qdisc del dev DEV clsact`). Later attacks on the
/// device use it as it is, so they cause no deactivation when they start
/// either. `chaos recover` leaves it too (see [`recover_clsact`]).
pub fn detach_egress(mut link: EgressLink, state: &mut StateFile) -> Result<()> {
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
    if let Some(clsact) = link.clsact.take() {
        tracing::info!(
            dev = link.ifname,
            netns = link.netns.inode,
            "keeping the empty clsact qdisc chaos added: deleting it would deactivate the device and drop \
             everyone's packets for an instant (remove it with `tc qdisc del dev {} clsact` if you wish)",
            link.ifname
        );
        state.append(&Record::Removed(clsact))?;
    }
    Ok(())
}

/// What `chaos recover` does with a clsact qdisc a dead chaos process
/// added: it never deletes it (for the reason in [`detach_egress`]); it
/// says what it leaves, and the record is closed. Its filter, recorded
/// after it, was removed first.
pub fn recover_clsact(netns: &Netns, ifname: &str) -> Result<String> {
    let (present, filters) = netns
        .run(|| -> std::io::Result<(bool, usize)> {
            Ok((super::rtnl::has_clsact(ifname)?, super::rtnl::clsact_filters(ifname)?))
        })
        .and_then(|r| r)
        .map_err(|e| Error::kernel(format!("reading the clsact qdisc of {ifname}"), e))?;
    Ok(match (present, filters) {
        (false, _) => "gone".into(),
        (true, 0) => format!(
            "left: the empty clsact stays on {ifname} (deleting it would deactivate the device and drop \
             everyone's packets for an instant; `tc qdisc del dev {ifname} clsact` when you choose)"
        ),
        (true, n) => format!("left: the clsact on {ifname} holds {n} filter(s) of others"),
    })
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

/// Attach `prog` (loaded) to the ingress of `ifindex` in `netns` through
/// TCX (fd-owned: the link, and with it every redirect to chaos's ifb, ends
/// with the process), first in the chain, so that no other program's
/// verdict skips the fault. The only mode for ingress: the ifb redirect it
/// serves needs Linux 6.4, and every kernel with TCX (6.6) has it.
pub fn attach_ingress(
    prog: &mut SchedClassifier,
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
) -> Result<SchedClassifierLink> {
    let context = || format!("attaching the ingress program to {ifname} (netns {})", netns.inode);
    netns
        .run(|| {
            let mut attach =
                |order| prog.attach(ifindex, TcAttach::Tcx { attach_type: TcAttachType::Ingress, order });
            let id = attach(LinkOrder::first()).or_else(|_| attach(LinkOrder::default()))?;
            prog.take_link(id)
        })
        .map_err(|e| Error::kernel(context(), e))?
        .map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))
}

/// Detach an ingress link (inside its namespace, as every detach).
pub fn detach_ingress(link: SchedClassifierLink, netns: &Netns) -> Result<()> {
    netns
        .run(|| link.detach())
        .map_err(|e| Error::kernel("detaching the ingress program", e))?
        .map_err(|e| Error::kernel("detaching the ingress program", e))
}

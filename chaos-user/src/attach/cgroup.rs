//! Programs attached to a cgroup, through fd-owned BPF links
//! (`BPF_LINK_CREATE`, Linux >= 5.7): they run only for that subtree and
//! vanish with the process.

use std::{fs::File, os::fd::AsFd};

use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps, cgroup_skb::CgroupSkbLink,
    cgroup_sock_addr::CgroupSockAddrLink, sock_ops::SockOpsLink,
};

use crate::{
    ebpf::describe,
    error::{Error, Result},
    targets::Target,
};

/// Attach a cgroup_skb program to `target`.
///
/// Through `BPF_LINK_CREATE` a cgroup attachment always coexists with other
/// programs (links are multi-attach by nature) and the kernel rejects any
/// attach flag with EINVAL (kernel/bpf/cgroup.c, cgroup_bpf_link_attach), so
/// the mode must be `Single`, which aya turns into flags 0.
pub fn attach_skb(
    prog: &mut CgroupSkb,
    target: &Target,
    direction: CgroupSkbAttachType,
) -> Result<CgroupSkbLink> {
    let context = || format!("attaching the {direction:?} program to {target}");
    let dir = File::open(&target.path).map_err(|e| Error::kernel(context(), e))?;
    let id = prog
        .attach(dir.as_fd(), direction, CgroupAttachMode::Single)
        .map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))?;
    prog.take_link(id).map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))
}

/// Attach a cgroup sock_addr program (connect4, sendmsg6, ...: its attach
/// type is in the program's section) to `target`, in the same mode.
pub fn attach_sock_addr(prog: &mut CgroupSockAddr, target: &Target) -> Result<CgroupSockAddrLink> {
    let context = || format!("attaching a sock_addr program to {target}");
    let dir = File::open(&target.path).map_err(|e| Error::kernel(context(), e))?;
    let id = prog
        .attach(dir.as_fd(), CgroupAttachMode::Single)
        .map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))?;
    prog.take_link(id).map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))
}

/// Attach a sock_ops program to `target`, in the same mode.
pub fn attach_sock_ops(prog: &mut SockOps, target: &Target) -> Result<SockOpsLink> {
    let context = || format!("attaching a sock_ops program to {target}");
    let dir = File::open(&target.path).map_err(|e| Error::kernel(context(), e))?;
    let id = prog
        .attach(dir.as_fd(), CgroupAttachMode::Single)
        .map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))?;
    prog.take_link(id).map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))
}

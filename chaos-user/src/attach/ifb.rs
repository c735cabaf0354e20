//! chaos's ifb device: the queue for what a target receives.
//!
//! The ingress hook has no qdisc, so packets that must wait are redirected
//! to an ifb ("intermediate functional block", drivers/net/ifb.c) whose
//! root is fq; the ifb hands each one back to the device it arrived on when
//! fq releases it (see chaos-ebpf/src/net/receive.rs). One ifb per target
//! network namespace, named `chaosrx<pid in hex>` (unique per chaos
//! process; IFNAMSIZ allows 15 characters), created with iproute2 as the
//! qdiscs are, and recorded in the state file before it exists: a device
//! outlives the process, so `chaos recover` deletes what a killed chaos
//! left. Without the TCX ingress link, which dies with the process, nothing
//! is redirected to it: a leftover ifb is inert.
//!
//! Loading the ifb module the way rtnetlink would (`request_module`)
//! creates `ifb0` and `ifb1` in the host's namespace (its `numifbs`
//! parameter defaults to 2), devices chaos would leave behind. So when the
//! module is not loaded chaos loads it itself with `numifbs=0`.

use std::{path::Path, process::Command};

use super::netns::Netns;
use crate::{
    error::{Error, Result},
    state::{Leftover, Record, StateFile},
};

/// The ifb of a namespace, recorded.
#[derive(Debug)]
pub struct Ifb {
    pub netns: Netns,
    pub ifindex: u32,
    pub ifname: String,
    leftover: Leftover,
}

/// This process's ifb name.
pub fn name() -> String {
    format!("chaosrx{:x}", std::process::id())
}

/// Load the ifb module without its default devices, unless it is loaded.
/// A kernel with ifb built in has no module to load (and may show no
/// /sys/module/ifb): modprobe's failure is then no verdict; creating the
/// device is.
pub fn ensure_module() {
    if Path::new("/sys/module/ifb").exists() {
        return;
    }
    match Command::new("modprobe").args(["ifb", "numifbs=0"]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::debug!(
            "modprobe ifb numifbs=0: {} (built in, or missing: creating the device tells)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::debug!("cannot run modprobe: {e}"),
    }
}

/// `ip link add <name> type ifb` and up, in the calling thread's namespace;
/// its ifindex.
pub fn create_here(name: &str) -> std::result::Result<u32, String> {
    ip(&["link", "add", name, "type", "ifb"])?;
    ip(&["link", "set", "dev", name, "up"])?;
    super::netns::interfaces()
        .map_err(|e| format!("listing devices: {e}"))?
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(i, _)| i)
        .ok_or_else(|| format!("{name} vanished after it was created"))
}

/// `ip link del <name>` in the calling thread's namespace, if it is an
/// ifb: Ok(false) when there is no such device.
pub fn delete_here(name: &str) -> std::result::Result<bool, String> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", name])
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if !out.status.success() {
        return Ok(false);
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if links.pointer("/0/linkinfo/info_kind").and_then(|k| k.as_str()) != Some("ifb") {
        return Err(format!("{name} is not an ifb device; chaos leaves it alone"));
    }
    ip(&["link", "del", "dev", name]).map(|()| true)
}

fn ip(args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Create this process's ifb in `netns`, recorded first.
pub fn create(netns: &Netns, state: &mut StateFile) -> Result<Ifb> {
    ensure_module();
    let ifname = name();
    // The ifindex is not known before the device exists; the record names
    // the device by name, which recover checks is an ifb.
    let leftover = Leftover::Ifb { netns: netns.inode, ifindex: 0, ifname: ifname.clone() };
    state.append(&Record::Leftover(leftover.clone()))?;
    let name = ifname.clone();
    let created = netns.run(move || create_here(&name)).map_err(|e| e.to_string()).and_then(|r| r);
    match created {
        Ok(ifindex) => {
            tracing::info!(dev = ifname, netns = netns.inode, ifindex, "created the ifb queue");
            Ok(Ifb { netns: netns.clone(), ifindex, ifname, leftover })
        }
        Err(e) => {
            let name = ifname.clone();
            if netns.run(move || delete_here(&name)).is_ok_and(|r| r.is_ok()) {
                state.append(&Record::Removed(leftover))?;
            }
            Err(Error::kernel(format!("creating {ifname} (netns {})", netns.inode), anyhow::anyhow!(e)))
        }
    }
}

/// Delete the ifb (its fq with it) and close the record.
pub fn remove(ifb: Ifb, state: &mut StateFile) -> Result<()> {
    let name = ifb.ifname.clone();
    match ifb.netns.run(move || delete_here(&name)) {
        Ok(Ok(_)) => state.append(&Record::Removed(ifb.leftover)),
        Ok(Err(e)) => Err(Error::kernel(format!("deleting {}", ifb.ifname), anyhow::anyhow!(e))),
        Err(e) => Err(Error::kernel(format!("deleting {}", ifb.ifname), e)),
    }
}

/// The capability probe: the ifb module loads without default devices, an
/// ifb can be created in a private namespace, and the kernel is 6.4 or
/// later — before, `ifb_xmit` drops what `bpf_redirect` sends it (the skb
/// is not marked redirected: "bpf: Set skb redirect and from_ingress info
/// in __bpf_tx_skb", 6.4).
pub fn probe(release: &str) -> std::result::Result<String, String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 4) {
        return Err(format!(
            "Linux {major}.{minor}: before 6.4, bpf_redirect does not mark the skb redirected and the ifb drops it"
        ));
    }
    ensure_module();
    super::netns::in_private_netns(|| create_here("chaosprobe"))
        .map_err(|e| format!("cannot create a private network namespace: {e}"))?
        .map_err(|e| format!("{e} (kernel built without CONFIG_IFB, or its module not loadable)"))?;
    Ok("an ifb device can be created (Linux >= 6.4: bpf_redirect reaches it)".into())
}

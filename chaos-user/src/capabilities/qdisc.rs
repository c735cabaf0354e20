//! Qdisc probes: install the qdisc on the loopback device of a private
//! network namespace, with iproute2's `tc` (the namespace, and the qdisc
//! with it, vanish when the probe's thread ends).

use std::process::Command;

use crate::attach::netns::in_private_netns;

pub fn detect(kind: &str) -> Result<String, String> {
    in_private_netns(|| {
        // Children inherit the network namespace of the forking thread.
        let out = Command::new("tc")
            .args(["qdisc", "add", "dev", "lo", "root", kind])
            .output()
            .map_err(|e| format!("cannot run tc (install iproute2): {e}"))?;
        if out.status.success() {
            Ok(format!("`tc qdisc add dev lo root {kind}` works in a private netns"))
        } else {
            Err(format!(
                "`tc qdisc add ... {kind}` failed: {} (kernel built without sch_{kind}, or module not loadable)",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .map_err(|e| format!("cannot create a private network namespace: {e}"))?
}

//! `chaos attack net-partition`: its flags and help text.

use clap::{Arg, Args};

use super::{
    attack::PeerArgs,
    schema::{Built, FaultParams, Source},
};
use crate::{
    faults::{Direction, Fault, NetLoss},
    units::Percent,
};

/// `net-partition`'s help.
pub const HELP: &str = "\
Cut the target off from some networks, in both directions, as a pulled \
cable or a failed switch port would: every packet between the target and \
the --cidr networks is dropped silently, and nothing tells either side.

What the target sees: new connections to those networks time out \
(connect() retries its SYN, then fails with ETIMEDOUT after about two \
minutes by default); established connections stall and, if the partition \
lasts, time out; UDP sends succeed and nothing arrives. Peers in those \
networks see the same of the target. When the partition ends, stalled TCP \
connections resume by retransmission, as after a cable is plugged back. \
Other networks, and other cgroups, are untouched.

It is net-loss at 100% in both directions with several networks: packets \
the target sends are dropped by a tc egress program on the devices of its \
network namespace, packets it receives by a cgroup_skb ingress program \
before its sockets see them. What the kernel answers on the target's \
behalf, with no socket of the target involved, still goes out: ICMP echo \
replies, and the reset to a SYN for a port nobody listens on. A \
partitioned peer can therefore still ping the target's address, and \
learns that a closed port is closed.

Example: cut a service off from its database and cache for a minute:

  chaos attack net-partition --cgroup /system.slice/app.service \\
      --cidr 10.0.5.0/24 --cidr 10.0.7.12 --duration 1m";

fn networks_cut(cidr: Arg) -> Arg {
    cidr.required(true).help(
        "The networks cut off from the target, e.g. 10.0.0.0/8 or 2001:db8::/32; a bare address means that host. \
         Repeatable, at most 64",
    )
}

/// `net-partition`'s parameters: net-loss's filters, with at least one
/// network, both directions always.
#[derive(Debug, Args)]
#[command(mut_arg("cidr", networks_cut))]
pub struct NetPartitionParams {
    #[command(flatten)]
    pub peers: PeerArgs,
}

impl FaultParams for NetPartitionParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let all = Percent::new(100.0)?;
        let cut = NetLoss::new(all, None, self.peers.filter(Direction::Both), self.peers.interfaces.clone())?;
        Ok(Built { fault: Fault::NetPartition(cut) })
    }
}

//! `chaos attack net-reset`: its flags and help text.

use std::time::Duration;

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{Fault, NetReset},
    units::{Cidr, Percent, parse_duration},
};

/// `net-reset`'s help.
pub const HELP: &str = "\
Reset the target's TCP connections, as when the peer's host reboots or a \
stateful box on the way (a NAT, a load balancer, a firewall) forgets \
them. Both ends see it: the target's next call on the socket fails with \
ECONNABORTED (\"Software caused connection abort\"), and the peer gets a \
TCP reset (ECONNRESET on its next call). Clients with a connection pool \
must notice, drop the connection and open another.

When: once, at the start of the attack, every matching connection open \
then; with --every, again every interval until the attack ends, which \
also catches the connections opened meanwhile. Each sweep resets each \
matching connection with probability --percent: with --every 1s \
--percent 10, a connection lives 10 s on average. Connections still \
opening (SYN sent) fail their connect() with ECONNABORTED. Listening \
sockets are never touched.

Which: the target's own sockets (created by a process of the target \
cgroup or a descendant), in every network namespace its processes live \
in, to a peer in --cidr (repeatable) and with --port at either end: the \
peer's (a database the target uses) or the target's own (a service it \
offers).

Mechanism: inet_diag's SOCK_DESTROY, what `ss -K` uses (kernel \
CONFIG_INET_DIAG_DESTROY; every kernel chaos supports has it), asked by \
chaos's own thread: nothing is loaded or attached, and nothing outlives \
chaos. Not covered: UDP (no connection to reset); a reset the peer never \
receives because net-loss or net-partition drops it.

Example: break every connection an app holds to its Redis every 30 s for \
five minutes:

  chaos attack net-reset --cgroup /system.slice/app.service --port 6379 \\
      --every 30s --duration 5m";

/// `net-reset`'s parameters.
#[derive(Debug, Args)]
pub struct NetResetParams {
    /// Share of matching connections each sweep resets, 0 to 100
    /// (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    pub percent: Percent,

    /// Only connections to a peer in this network, e.g. 10.0.0.0/8 or
    /// 2001:db8::/32; a bare address means that host. Repeatable (at most
    /// 64): any of the networks.
    #[arg(id = "cidr", long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<Cidr>,

    /// Only connections with this port at either end (the peer's or the
    /// target's own).
    #[arg(long, value_name = "PORT", value_parser = super::attack::parse_port)]
    pub port: Option<u16>,

    /// Sweep again every interval (at least 10ms) until the attack ends;
    /// without it, one sweep at the start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
}

impl FaultParams for NetResetParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let fault = NetReset::new(self.percent, self.cidrs.clone(), self.port, self.every)?;
        Ok(Built { fault: Fault::NetReset(fault) })
    }
}

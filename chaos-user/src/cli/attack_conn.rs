//! `chaos attack net-refuse`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{ConnDirection, Errno, Fault, NetRefuse, Transport},
    units::{Cidr, Percent},
};

/// `net-refuse`'s help.
pub const HELP: &str = "\
Make the target's new outgoing connections fail at once with an errno, as \
when the peer's host refuses them (ECONNREFUSED) or a router on the way \
has no route (ENETUNREACH, EHOSTUNREACH); with --direction incoming, \
refuse new TCP connections to the target's listening sockets, as when the \
service is down: the client gets a reset (ECONNREFUSED).

What fails: connect() of TCP and UDP sockets, and sendto()/sendmsg() with \
a destination on unconnected UDP sockets (DNS lookups, statsd, syslog). \
The call returns -1 with the errno at once; nothing reaches the network. \
Connections established before the attack, and data on connected \
sockets, are untouched. A non-blocking connect() fails at once too, not \
later through poll(). Filters: --cidr, --port (the destination's), \
--protocol; an IPv4 --cidr also matches IPv4-mapped IPv6 destinations \
(::ffff:10.0.0.1), which dual-stack sockets connect to.

Mechanism: cgroup connect4/connect6/sendmsg4/sendmsg6 programs on the \
target cgroup (fd-owned links), run by the kernel for the target's \
sockets only. Any errno needs Linux 6.1 (bpf_set_retval in these \
programs); on older kernels the only errno is EPERM, and chaos refuses \
another. The cgroup is the calling thread's: a socket passed to a \
process of another cgroup is judged by that process's cgroup.

Incoming (--direction incoming or both): a new TCP connection to one of \
the target's listeners is answered with a reset, as the kernel answers a \
SYN for a port nobody listens on; established connections go on. The \
target's listeners are those it has when the attack starts (created in \
its cgroup, or open in one of its processes, so a socket-activated \
service's listener counts), in every network namespace its processes \
live in; --port narrows them to one port, --cidr to some clients. \
Another cgroup's listener on the same port stays reachable. Mechanism: \
an sk_lookup program on those namespaces (Linux 5.9; fd-owned links), \
which sees a SYN before the kernel picks its listener.

Not covered: connections that time out (a dropped SYN): use net-loss \
--direction egress --protocol tcp --port P at 100%, which also stalls \
established connections to that port; Unix sockets; incoming UDP (use \
net-loss --direction ingress); listeners opened after the start.

Example: refuse every connection nginx opens to the upstream network \
10.1.0.0/16 on port 8080 for two minutes:

  chaos attack net-refuse --cgroup /system.slice/nginx.service --cidr 10.1.0.0/16 \\
      --port 8080 --errno ECONNREFUSED --duration 2m

Refuse half of the new connections clients make to redis, for a minute:

  chaos attack net-refuse --cgroup /system.slice/redis.service --direction incoming \\
      --port 6379 --percent 50 --duration 1m";

/// `net-refuse`'s parameters.
#[derive(Debug, Args)]
pub struct NetRefuseParams {
    /// Which connections: those the target opens (outgoing), those made to
    /// its TCP listeners (incoming), or both.
    #[arg(long, value_enum, default_value_t = ConnDirection::Outgoing)]
    pub direction: ConnDirection,

    /// The error the target's calls fail with: ECONNREFUSED, ENETUNREACH,
    /// EHOSTUNREACH, ETIMEDOUT, EPERM, ... (a name or a number). Only EPERM
    /// before Linux 6.1. [default: ECONNREFUSED] An incoming connection's
    /// client always sees ECONNREFUSED (a reset).
    #[arg(long, value_name = "ERRNO")]
    pub errno: Option<Errno>,

    /// Share of matching calls to fail, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    pub percent: Percent,

    /// Only connections with a peer in this network (the destination of
    /// outgoing ones, the client of incoming ones), e.g. 10.0.0.0/8 or
    /// 2001:db8::/32; a bare address means that host.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<Cidr>,

    /// Only connections to this port (the destination of outgoing ones,
    /// the target's listening port for incoming ones).
    #[arg(long, value_name = "PORT", value_parser = super::attack::parse_port)]
    pub port: Option<u16>,

    /// Only TCP connects, or only UDP connects and sends.
    #[arg(long, value_enum, default_value_t = Transport::Any)]
    pub protocol: Transport,
}

impl FaultParams for NetRefuseParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let fault =
            NetRefuse::new(self.direction, self.errno, self.percent, self.cidr, self.port, self.protocol)?;
        Ok(Built { fault: Fault::NetRefuse(fault) })
    }
}

//! `chaos attack net-refuse`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{Errno, Fault, NetRefuse, Transport},
    units::{Cidr, Percent},
};

/// `net-refuse`'s help.
pub const HELP: &str = "\
Make the target's new outgoing connections fail at once with an errno, as \
when the peer's host refuses them (ECONNREFUSED) or a router on the way \
has no route (ENETUNREACH, EHOSTUNREACH).

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

Not covered: connections that time out (a dropped SYN): use net-loss \
--direction egress --protocol tcp --port P at 100%, which also stalls \
established connections to that port; Unix sockets; incoming \
connections.

Example: refuse every connection nginx opens to the upstream network \
10.1.0.0/16 on port 8080 for two minutes:

  chaos attack net-refuse --cgroup /system.slice/nginx.service --cidr 10.1.0.0/16 \\
      --port 8080 --errno ECONNREFUSED --duration 2m";

/// `net-refuse`'s parameters.
#[derive(Debug, Args)]
pub struct NetRefuseParams {
    /// The error the calls fail with: ECONNREFUSED, ENETUNREACH,
    /// EHOSTUNREACH, ETIMEDOUT, EPERM, ... (a name or a number). Only EPERM
    /// before Linux 6.1.
    #[arg(long, value_name = "ERRNO", default_value = "ECONNREFUSED")]
    pub errno: Errno,

    /// Share of matching calls to fail, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    pub percent: Percent,

    /// Only calls to this network, e.g. 10.0.0.0/8 or 2001:db8::/32; a
    /// bare address means that host.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<Cidr>,

    /// Only calls to this destination port.
    #[arg(long, value_name = "PORT", value_parser = super::attack::parse_port)]
    pub port: Option<u16>,

    /// Only TCP connects, or only UDP connects and sends.
    #[arg(long, value_enum, default_value_t = Transport::Any)]
    pub protocol: Transport,
}

impl FaultParams for NetRefuseParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let fault = NetRefuse::new(self.errno, self.percent, self.cidr, self.port, self.protocol)?;
        Ok(Built { fault: Fault::NetRefuse(fault) })
    }
}

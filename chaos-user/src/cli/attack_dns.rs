//! `chaos attack dns-error`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{DnsAnswer, DnsError, Fault, NamePattern},
    units::Percent,
};

/// `dns-error`'s help.
pub const HELP: &str = "\
Make the target's DNS lookups of chosen names fail, as when a zone is \
broken or the resolver is down, while every other name resolves as \
before. A matching query gets an error answer at once — NXDOMAIN (no such \
name), SERVFAIL or REFUSED — or no answer at all (--answer timeout).

What a client sees (glibc: getaddrinfo, getent, curl, Python; musl \
differs): NXDOMAIN fails the lookup at once (EAI_NONAME, \"Name or \
service not known\"); SERVFAIL and REFUSED make glibc try its next \
nameserver, then fail with EAI_AGAIN (\"Temporary failure in name \
resolution\"); musl retries SERVFAIL and ignores REFUSED; timeout makes \
the client wait and retry (glibc: 5 s per try, twice per nameserver). \
Search domains apply first: with `search corp.example` in resolv.conf, \
`db` is looked up as `db.corp.example` too, so name the full names.

Which queries: those the target sends to port 53, over UDP or TCP, to \
any server — a resolver on the network, or a node-local cache on loopback \
(systemd-resolved's 127.0.0.53, dnsmasq, a NodeLocal DNSCache). Names: \
--name example.com is that name; --name '*.example.com' the names below \
it (not example.com itself: give both for both); --name '*', or no \
--name, every name. Case does not matter. --percent picks a share of \
queries, each on its own: an A and an AAAA query of one lookup may fare \
differently.

Mechanism: a tc egress program on the Ethernet and loopback devices of \
the target's network namespaces (a TCX link, fd-owned, from Linux 6.6; a \
netlink filter before, recorded for `chaos recover`), which recognises \
the target's queries by cgroup. A matching query never leaves: it is \
turned into its own answer and handed back to the target, or dropped. \
Other packets pay a header check. Nothing changes in the resolver or in \
resolv.conf, and the kernel checks the deadline on every query.

Over TCP (after a truncated answer, or when told to: `options use-vc`, \
`dig +tcp`), where the kernel has sk_msg (`chaos doctor`): the target's \
connections to port 53 opened during the attack are watched by a \
sock_ops program on its cgroup; a matching query is answered into the \
connection's own receive queue, or swallowed (timeout), before TCP sends \
it, so the server sees a connection that asks nothing. One query per \
send, as stub resolvers write them; a length sent apart from its \
message, or a send carrying several queries, passes. Without sk_msg, lookups over TCP pass untouched, and the plan \
says so.

Not covered: connections to port 53 opened before the attack; DNS over \
TLS or HTTPS; queries rewritten away from port 53 before they leave \
(Docker's embedded resolver at 127.0.0.11 is reached through a NAT rule \
to another port); lookups that never reach the network (/etc/hosts, \
nscd, a cache inside the process).

Example: fail every lookup of the payments service's names for a minute, \
as if its zone were gone:

  chaos attack dns-error --cgroup /system.slice/shop.service \\
      --name '*.payments.internal' --name payments.internal --answer nxdomain --duration 1m";

/// `dns-error`'s parameters.
#[derive(Debug, Args)]
pub struct DnsErrorParams {
    /// A name to fail: example.com (that name), '*.example.com' (the names
    /// below it) or '*' (every name, the default). Repeatable (at most 64).
    #[arg(id = "names", long = "name", value_name = "NAME")]
    pub names: Vec<NamePattern>,

    /// What a matching query gets: an error answer, or none (timeout).
    #[arg(long, value_enum, default_value_t = DnsAnswer::Nxdomain)]
    pub answer: DnsAnswer,

    /// Share of matching queries to fail, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    pub percent: Percent,
}

impl FaultParams for DnsErrorParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let fault = DnsError::new(self.names.clone(), self.answer, self.percent)?;
        Ok(Built { fault: Fault::DnsError(fault) })
    }
}

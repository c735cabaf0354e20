//! The connection part of the injector (`net-refuse`): rules keyed by
//! target cgroup, the level mask, the cgroup sock_addr programs on each
//! target cgroup (outgoing calls), attached by its first attack and
//! detached by its last, and the target's listeners with the sk_lookup
//! program on its namespaces (incoming connections: `listeners`). The
//! links are fds: they also vanish with the process.

use std::time::Instant;

use aya::{
    Ebpf,
    programs::{CgroupSockAddr, cgroup_sock_addr::CgroupSockAddrLink, links::Link as _},
};
use chaos_abi::conn::{self, ConnCounters, ConnRule};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    links::LinkSet,
    listeners::{Claim, Listeners},
    maps::write_levels,
    net::loaded,
    rules::{CounterFields, RuleTable, named},
};
use crate::{
    attach::cgroup::attach_sock_addr,
    attack::Attack,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::NetRefuse,
    plan::{ConnErrno, ConnMechanism},
};

/// The programs of `m`, by name (chaos-ebpf/src/conn_*.rs).
fn programs(m: &ConnMechanism) -> Vec<&'static str> {
    let all: &[(&str, &str)] = &[
        ("conn_connect4", "conn_eperm_cn4"),
        ("conn_connect6", "conn_eperm_cn6"),
        ("conn_sendmsg4", "conn_eperm_sm4"),
        ("conn_sendmsg6", "conn_eperm_sm6"),
    ];
    let hooks = match (m.outgoing, m.sendmsg) {
        (false, _) => &all[..0],
        (true, false) => &all[..2],
        (true, true) => all,
    };
    hooks
        .iter()
        .map(|(retval, eperm)| match m.errno {
            ConnErrno::SetRetval => *retval,
            ConnErrno::Eperm => *eperm,
        })
        .collect()
}

/// What a running connection attack holds: the (program, cgroup) links it
/// counts in the link set, and its listeners.
#[derive(Debug, Default)]
pub struct Handle {
    links: Vec<(&'static str, u64)>,
    listeners: Claim,
}

/// Rules and links shared by every connection attack.
pub struct Conn {
    rules: RuleTable<ConnRule, ConnCounters>,
    links: LinkSet<(&'static str, u64), CgroupSockAddrLink>,
    listeners: Listeners,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            rules: RuleTable::new(
                conn::RULES,
                conn::COUNTERS,
                "a net-refuse fault in this run; combine them into one attack",
            ),
            links: LinkSet::default(),
            listeners: Listeners::default(),
        }
    }
}

/// The names of [`ConnCounters`]' fields in events and reports, in
/// declaration order (`-`: summed into `expired`).
pub(super) const COUNTER_NAMES: &str =
    "connect_matched connect_refused sendmsg_matched sendmsg_refused - incoming_matched incoming_refused";

// SAFETY: #[repr(C)], u64 fields only (chaos-abi).
unsafe impl CounterFields for ConnCounters {}

impl FamilyInjector for Conn {
    type Fault = NetRefuse;
    type Mechanism = ConnMechanism;
    type Handle = Handle;

    /// Attach first (loading takes seconds under emulation, and a program
    /// without a rule lets every call through), then write the rule. The
    /// listeners are listed before anything is attached: a target without
    /// one is refused as it was found.
    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, mechanism, slot, .. } = *start;
        if mechanism.incoming {
            self.listeners.claim(&mut shared.ebpf, &attack.target, fault.port, &mut handle.listeners)?;
            tracing::info!(
                "net-refuse on {}: refusing connections to {} listener address(es)",
                attack.target,
                handle.listeners.listeners()
            );
        }
        for name in programs(mechanism) {
            let key = (name, attack.target.id);
            self.links.acquire(key, || {
                let prog: &mut CgroupSockAddr = loaded(&mut shared.ebpf, name)?;
                attach_sock_addr(prog, &attack.target)
            })?;
            handle.links.push(key);
        }
        self.rules.reset_counters(&mut shared.ebpf, slot)?;
        self.rules.insert(&mut shared.ebpf, attack, &fault.rule(start.deadline_from_now(), slot))?;
        write_levels(&mut shared.ebpf, conn::LEVELS, self.rules.levels())
    }

    /// Delete the rule (inert from then on), then release the links.
    fn stop(&mut self, shared: &mut Shared, attack: &Attack, handle: Handle) -> Stopping {
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        let mut released = self.listeners.release(&mut shared.ebpf, handle.listeners);
        for key in handle.links {
            if let Some(link) = self.links.release(&key) {
                let detached = link.detach().map_err(|e| {
                    Error::kernel(
                        format!("detaching {} from {}", key.0, attack.target),
                        anyhow::anyhow!(describe(&e)),
                    )
                });
                released = released.and(detached);
            }
        }
        (inert, released)
    }

    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let c = self.rules.counters(&shared.ebpf, slot)?;
        Ok(Counters {
            matched: c.connect_matched + c.sendmsg_matched + c.incoming_matched,
            injected: c.connect_refused + c.sendmsg_refused + c.incoming_refused,
            expired: c.expired,
            detail: named(&c, COUNTER_NAMES),
        })
    }
}

impl Conn {
    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        if self.rules.remove(ebpf, attack)? {
            write_levels(ebpf, conn::LEVELS, self.rules.levels())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_follow_the_mechanism() {
        let m = |errno, sendmsg| ConnMechanism { outgoing: true, errno, sendmsg, incoming: false };
        assert_eq!(programs(&m(ConnErrno::SetRetval, false)), ["conn_connect4", "conn_connect6"]);
        assert_eq!(
            programs(&m(ConnErrno::Eperm, true)),
            ["conn_eperm_cn4", "conn_eperm_cn6", "conn_eperm_sm4", "conn_eperm_sm6"]
        );
        let incoming = ConnMechanism { outgoing: false, incoming: true, ..m(ConnErrno::Eperm, false) };
        assert!(programs(&incoming).is_empty());
    }
}

//! The DNS part of the injector (`dns-error`): rules keyed by target
//! cgroup, the level mask, each attack's names in the trie, and the
//! classifier on every Ethernet and loopback device of the target's
//! network namespaces (loopback: a node-local cache, systemd-resolved's
//! 127.0.0.53, a sidecar's resolver), shared by the attacks there and
//! released by the last. Where the kernel has sk_msg, queries over TCP
//! too: a sock_ops program on each target cgroup (its own link) puts the
//! target's connections to port 53 in a sockhash, on which one sk_msg
//! program, attached once, sees what they send.

use std::time::Instant;

use aya::{
    Ebpf,
    maps::{
        MapData, SockHash,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, SkMsg, SockOps, sock_ops::SockOpsLink},
};
use chaos_abi::dns::{self, DnsCounters, DnsRule, NameKey, SockKey};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    links::LinkSet,
    maps::{map_mut, write_levels},
    net::{loaded, target_netns},
    rules::{CounterFields, RuleTable, named},
};
use crate::{
    attach::{
        cgroup::attach_sock_ops,
        netns::{Netns, interface_type, interfaces},
        tc::{EgressLink, attach_egress, detach_egress},
    },
    attack::Attack,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::DnsError,
    plan::DnsMechanism,
};

const PROGRAM: &str = "dns_egress";
const SOCK_OPS: &str = "dns_sockops";
const SK_MSG: &str = "dns_msg";

/// `ARPHRD_ETHER` and `ARPHRD_LOOPBACK` (include/uapi/linux/if_arp.h): the
/// devices whose packets start with an Ethernet header at tc, which the
/// classifier turns round.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// What a running DNS attack holds.
#[derive(Debug, Default)]
pub struct Handle {
    /// The devices acted on, by name (the `start` event lists them).
    pub interfaces: Vec<String>,
    egress_keys: Vec<(u64, u32)>,
    /// This attack's entries in the name trie.
    names: Vec<(u32, NameKey)>,
    /// The sock_ops program on the target (DNS over TCP).
    sock_ops: Option<SockOpsLink>,
}

/// Rules and links shared by every DNS attack.
pub struct Dns {
    rules: RuleTable<DnsRule, DnsCounters>,
    egress: LinkSet<(u64, u32), EgressLink>,
    /// Whether the sk_msg program is on the sockhash: attached once, and
    /// detached with the object (the attachment lives as long as the map,
    /// which dies with the process).
    sk_msg: bool,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            rules: RuleTable::new(
                dns::RULES,
                dns::COUNTERS,
                "a dns-error fault in this run; combine them into one attack",
            ),
            egress: LinkSet::default(),
            sk_msg: false,
        }
    }
}

/// The names of [`DnsCounters`]' fields in events and reports, in
/// declaration order (`-`: reported as the common `matched` and `expired`).
pub(super) const COUNTER_NAMES: &str = "queries - answered dropped - unparsed";

// SAFETY: #[repr(C)], u64 fields only (chaos-abi).
unsafe impl CounterFields for DnsCounters {}

/// A device the classifier goes on.
struct Device {
    netns: Netns,
    ifindex: u32,
    ifname: String,
}

/// Resolve the devices, changing nothing: see [`super::preflight`].
pub(super) fn preflight(attack: &Attack) -> Result<()> {
    devices(attack).map(drop)
}

impl FamilyInjector for Dns {
    type Fault = DnsError;
    type Mechanism = DnsMechanism;
    type Handle = Handle;

    /// Attach first (loading takes seconds under emulation, and the
    /// classifier passes everything until the rule is there), then the
    /// names, then the rule that looks them up.
    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, mechanism, slot, .. } = *start;
        for device in devices(attack)? {
            let key = (device.netns.inode, device.ifindex);
            self.egress.acquire(key, || {
                let Shared { ebpf, state } = &mut *shared;
                state.note_netns(&device.netns)?;
                let prog: &mut SchedClassifier = loaded(ebpf, PROGRAM)?;
                attach_egress(prog, &device.netns, device.ifindex, &device.ifname, mechanism.egress, state)
            })?;
            handle.egress_keys.push(key);
            handle.interfaces.push(device.ifname);
        }
        {
            let mut names: LpmTrie<&mut MapData, NameKey, u8> = map_mut(&mut shared.ebpf, dns::NAMES)?;
            for (bits, key, value) in fault.name_entries(slot) {
                names
                    .insert(&Key::new(bits, key), &value, 0)
                    .map_err(|e| Error::kernel("adding a --name", e))?;
                handle.names.push((bits, key));
            }
        }
        if mechanism.tcp {
            self.attach_sk_msg(&mut shared.ebpf)?;
            let prog: &mut SockOps = loaded(&mut shared.ebpf, SOCK_OPS)?;
            handle.sock_ops = Some(attach_sock_ops(prog, &attack.target)?);
        }
        self.rules.reset_counters(&mut shared.ebpf, slot)?;
        self.rules.insert(&mut shared.ebpf, attack, &fault.rule(start.deadline_from_now(), slot))?;
        write_levels(&mut shared.ebpf, dns::LEVELS, self.rules.levels())
    }

    /// Delete the rule (inert from then on), then the names, then release
    /// the classifiers.
    fn stop(&mut self, shared: &mut Shared, attack: &Attack, handle: Handle) -> Stopping {
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        // No new connection of the target enters the sockhash; those in it
        // leave when they close (or with the map), and pass meanwhile:
        // their messages find no rule.
        drop(handle.sock_ops);
        let mut released = Ok(());
        if !handle.names.is_empty() {
            match map_mut::<LpmTrie<&mut MapData, NameKey, u8>>(&mut shared.ebpf, dns::NAMES) {
                Ok(mut names) => {
                    for (bits, key) in &handle.names {
                        if let Err(e) = names.remove(&Key::new(*bits, *key)) {
                            released = released.and(Err(Error::kernel("removing a --name", e)));
                        }
                    }
                }
                Err(e) => released = released.and(Err(e)),
            }
        }
        for key in &handle.egress_keys {
            if let Some(link) = self.egress.release(key)
                && let Err(e) = detach_egress(link, &mut shared.state)
            {
                released = released.and(Err(e));
            }
        }
        (inert, released)
    }

    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let c = self.rules.counters(&shared.ebpf, slot)?;
        Ok(Counters {
            matched: c.matched,
            injected: c.answered + c.dropped,
            expired: c.expired,
            detail: named(&c, COUNTER_NAMES),
        })
    }
}

impl Dns {
    /// Load the sk_msg program and attach it to the sockhash, once.
    fn attach_sk_msg(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        if self.sk_msg {
            return Ok(());
        }
        let socks = {
            let map: SockHash<&MapData, SockKey> = ebpf
                .map(dns::TCP_SOCKS)
                .ok_or_else(|| {
                    Error::kernel("fault object", anyhow::anyhow!("map {} missing", dns::TCP_SOCKS))
                })?
                .try_into()
                .map_err(|e| Error::kernel("fault object", e))?;
            map.fd().try_clone().map_err(|e| Error::kernel("duplicating the sockhash's descriptor", e))?
        };
        let prog: &mut SkMsg = loaded(ebpf, SK_MSG)?;
        prog.attach(&socks)
            .map_err(|e| Error::kernel("attaching the sk_msg program", anyhow::anyhow!(describe(&e))))?;
        self.sk_msg = true;
        Ok(())
    }

    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        if self.rules.remove(ebpf, attack)? {
            write_levels(ebpf, dns::LEVELS, self.rules.levels())?;
        }
        Ok(())
    }
}

/// Every Ethernet and loopback device of the namespaces of the target's
/// processes, up or not (a device brought up later needs no new
/// attachment). Others (tun, WireGuard, IP tunnels: no Ethernet header to
/// turn round) are left out, and said so.
fn devices(attack: &Attack) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for netns in target_netns(attack)? {
        let listed = netns
            .run(|| -> std::io::Result<Vec<(u32, String, u16)>> {
                let mut all = Vec::new();
                for (ifindex, name) in interfaces()? {
                    all.push((ifindex, name.clone(), interface_type(&name).unwrap_or(0)));
                }
                Ok(all)
            })
            .and_then(|r| r)
            .map_err(|e| Error::kernel(format!("listing devices of network namespace {}", netns.inode), e))?;
        for (ifindex, ifname, kind) in listed {
            if matches!(kind, ARPHRD_ETHER | ARPHRD_LOOPBACK) {
                out.push(Device { netns: netns.clone(), ifindex, ifname });
            } else {
                tracing::warn!(
                    "dns-error on {}: {ifname} (device type {kind}) has no Ethernet header: queries leaving by \
                     it are not touched",
                    attack.target
                );
            }
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "the network namespace of {} has no Ethernet or loopback device: dns-error has nothing to act on",
            attack.target
        )));
    }
    Ok(out)
}

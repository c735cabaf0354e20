//! The part of the network injector that acts on what a target receives
//! (chaos-ebpf/src/net_receive.rs): per target namespace, chaos's ifb with
//! fq at its root; per device, the tc ingress classifier (TCX link); per
//! target cgroup, the two programs that learn its flows; per attack, its
//! devices in `NET_RX_IFBS` and, when it ends, its flows out of
//! `NET_RX_FLOWS`. All shared between attacks and reference-counted.

use std::time::{Duration, Instant};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{CgroupSkbAttachType, SchedClassifier, tc::SchedClassifierLink},
};
use chaos_abi::net::{self, RxFlow, RxFlowKey};

use super::{
    Shared,
    links::LinkSet,
    maps::map_mut,
    net::{CgroupHook, Device, loaded},
};
use crate::{
    attach::{
        ifb::{self, Ifb},
        netns::Netns,
        qdisc::{self, Fq},
        tc::{attach_ingress, detach_ingress},
    },
    attack::Attack,
    error::{Error, Result},
    state::StateFile,
};

const PROGRAM: &str = "net_receive";

/// What one attack holds on the receiving side.
#[derive(Debug, Default)]
pub struct ReceiveHandle {
    /// Namespaces (by inode) whose ifb it uses.
    ifbs: Vec<u64>,
    /// Devices whose ingress link it uses.
    links: Vec<(u64, u32)>,
    /// Its keys in `NET_RX_IFBS`.
    keys: Vec<u64>,
    /// Whether the learning programs on the target (egress, ingress) are
    /// its to release.
    learning: (bool, bool),
}

/// An ifb, with its fq if the attack schedules (else the ifb's default
/// queue, which sends at once).
#[derive(Debug)]
struct IfbUse {
    ifb: Ifb,
    fq: Option<Fq>,
    drain_until: Instant,
}

/// Every attack's receiving side.
pub struct Receive {
    ifbs: LinkSet<u64, IfbUse>,
    links: LinkSet<(u64, u32), (SchedClassifierLink, Netns)>,
    learn_out: CgroupHook,
    learn_in: CgroupHook,
}

impl Default for Receive {
    fn default() -> Self {
        Self {
            ifbs: LinkSet::default(),
            links: LinkSet::default(),
            learn_out: CgroupHook::new(
                "net_rx_out",
                CgroupSkbAttachType::Egress,
                "the flow-learning program (egress)",
            ),
            learn_in: CgroupHook::new(
                "net_rx_in",
                CgroupSkbAttachType::Ingress,
                "the flow-learning program (ingress)",
            ),
        }
    }
}

impl Receive {
    /// After the rule is in place: the ifbs and links for `devices`, the
    /// devices into the attack's set, and last the learning programs (no
    /// flow is learned before the classifiers that act on it exist).
    pub fn begin(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        slot: u32,
        devices: &[Device],
        schedules: Option<Duration>,
        handle: &mut ReceiveHandle,
    ) -> Result<()> {
        for device in devices {
            let ns = device.netns.inode;
            if !handle.ifbs.contains(&ns) {
                self.ifbs.acquire(ns, || {
                    let Shared { state, .. } = shared;
                    state.note_netns(&device.netns)?;
                    new_ifb(&device.netns, schedules, state)
                })?;
                handle.ifbs.push(ns);
            }
            let Some(u) = self.ifbs.get_mut(&ns) else { unreachable!("acquired") };
            // Another target's attack in this namespace made the ifb
            // without fq (nothing of it waited): this one's packets do.
            if let (Some(ahead), None) = (schedules, &u.fq) {
                u.fq = Some(qdisc::install(
                    &u.ifb.netns,
                    u.ifb.ifindex,
                    &u.ifb.ifname,
                    ahead,
                    &mut shared.state,
                )?);
            }
            let ifb_index = u.ifb.ifindex;
            let key = device.key();
            self.links.acquire(key, || {
                let prog: &mut SchedClassifier = loaded(&mut shared.ebpf, PROGRAM)?;
                let link = attach_ingress(prog, &device.netns, device.ifindex, &device.ifname)?;
                Ok((link, device.netns.clone()))
            })?;
            handle.links.push(key);
            let map_key = net::tag_device_key(slot, device.ifindex);
            let mut map: HashMap<&mut MapData, u64, u32> = map_mut(&mut shared.ebpf, net::RX_IFBS)?;
            if let Ok(other) = map.get(&map_key, 0)
                && other != ifb_index
            {
                return Err(Error::invalid(format!(
                    "{}'s processes live in several network namespaces with a device of index {} each; \
                     chaos cannot tell their received packets apart: name the devices with --interface",
                    attack.target, device.ifindex
                )));
            }
            map.insert(&map_key, &ifb_index, 0)
                .map_err(|e| Error::kernel("adding a device to the ifb map", e))?;
            handle.keys.push(map_key);
        }
        self.learn_out.attach(&mut shared.ebpf, attack)?;
        handle.learning.0 = true;
        self.learn_in.attach(&mut shared.ebpf, attack)?;
        handle.learning.1 = true;
        Ok(())
    }

    /// Stop learning (the caller has made the rule inert, or does so
    /// next); then the devices leave the set, the links go, and the ifbs
    /// once the packets they hold have been delivered (`drain`: the
    /// attack's horizon).
    pub fn stop_learning(&mut self, attack: &Attack, handle: &mut ReceiveHandle) -> Result<()> {
        let (out, inn) = std::mem::take(&mut handle.learning);
        let out = if out { self.learn_out.release(attack.target.id) } else { Ok(()) };
        let inn = if inn { self.learn_in.release(attack.target.id) } else { Ok(()) };
        out.and(inn)
    }

    pub fn release(
        &mut self,
        shared: &mut Shared,
        slot: u32,
        handle: ReceiveHandle,
        drain: Duration,
    ) -> Result<()> {
        if handle.ifbs.is_empty() && handle.links.is_empty() {
            // Not an attack on what its target receives (or one that
            // failed before anything was made): nothing of the slot's to
            // forget either.
            return Ok(());
        }
        let mut released = Ok(());
        {
            match map_mut::<HashMap<&mut MapData, u64, u32>>(&mut shared.ebpf, net::RX_IFBS) {
                Ok(mut map) => {
                    for key in &handle.keys {
                        if let Err(e) = map.remove(key) {
                            released =
                                released.and(Err(Error::kernel("removing a device from the ifb map", e)));
                        }
                    }
                }
                Err(e) => released = released.and(Err(e)),
            }
        }
        for key in &handle.links {
            if let Some((link, ns)) = self.links.release(key)
                && let Err(e) = detach_ingress(link, &ns)
            {
                released = released.and(Err(e));
            }
        }
        let drain_until = Instant::now() + drain;
        for ns in &handle.ifbs {
            if let Some(u) = self.ifbs.get_mut(ns) {
                u.drain_until = u.drain_until.max(drain_until);
            }
            if let Some(u) = self.ifbs.release(ns)
                && let Err(e) = remove_ifb(u, &mut shared.state)
            {
                released = released.and(Err(e));
            }
        }
        released.and(forget_flows(&mut shared.ebpf, slot))
    }
}

fn new_ifb(netns: &Netns, schedules: Option<Duration>, state: &mut StateFile) -> Result<IfbUse> {
    let ifb = ifb::create(netns, state)?;
    let fq = match schedules {
        Some(ahead) => match qdisc::install(netns, ifb.ifindex, &ifb.ifname, ahead, state) {
            Ok(fq) => Some(fq),
            Err(e) => {
                let _ = ifb::remove(ifb, state);
                return Err(e);
            }
        },
        None => None,
    };
    Ok(IfbUse { ifb, fq, drain_until: Instant::now() })
}

/// Packets already scheduled are delivered on time (deleting the ifb
/// earlier would drop them); then the ifb goes, its fq with it.
fn remove_ifb(u: IfbUse, state: &mut StateFile) -> Result<()> {
    if let Some(fq) = u.fq {
        let held = qdisc::drain(&fq, u.drain_until);
        if held > 0 {
            tracing::warn!(
                dev = u.ifb.ifname,
                held,
                "the ifb still held packets past the attack's horizon; removing it drops them"
            );
        }
        qdisc::release(fq, state)?;
    }
    ifb::remove(u.ifb, state)
}

/// The attack's flows out of `NET_RX_FLOWS`, so that the slot's next
/// attack learns its own.
fn forget_flows(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let mut map: HashMap<&mut MapData, RxFlowKey, RxFlow> = map_mut(ebpf, net::RX_FLOWS)?;
    let ours: Vec<RxFlowKey> =
        map.iter().filter_map(|e| e.ok()).filter(|(_, v)| v.slot == slot).map(|(k, _)| k).collect();
    for key in ours {
        // Evicted meanwhile by the LRU: fine.
        let _ = map.remove(&key);
    }
    Ok(())
}

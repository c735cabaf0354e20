//! The network part of the injector: rules keyed by target cgroup, the
//! level mask, and the links that run the programs — one egress classifier
//! per device (shared by every target in that namespace), one cgroup_skb
//! ingress program per target cgroup. Both are reference-counted.

use std::{collections::BTreeMap, time::Instant};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{
        CgroupSkb, CgroupSkbAttachType, Program, ProgramError, SchedClassifier, cgroup_skb::CgroupSkbLink,
        links::Link as _,
    },
    util::nr_cpus,
};
use chaos_abi::{
    cgroup::{Levels, MAX_LEVEL},
    net::{self, NetCounters, NetRule},
};

use super::Shared;
use crate::{
    attach::{
        cgroup::attach_skb,
        netns::{Netns, interfaces},
        tc::{EgressLink, EgressMode, attach_egress, detach_egress},
    },
    attack::Attack,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::Fault,
    plan::NetMechanism,
    targets::pids_in_subtree,
};

const EGRESS_PROGRAM: &str = "net_egress";
const INGRESS_PROGRAM: &str = "net_ingress";

/// What a running network attack holds.
#[derive(Debug)]
pub struct Handle {
    egress_keys: Vec<(u64, u32)>,
    ingress: bool,
}

/// Attachments and the level mask, shared by every network attack.
#[derive(Default)]
pub struct Net {
    egress: BTreeMap<(u64, u32), (EgressLink, usize)>,
    ingress: BTreeMap<u64, (CgroupSkbLink, usize)>,
    level_users: [usize; MAX_LEVEL as usize + 1],
}

impl Net {
    /// Write the rule, then attach. Returns the devices acted on.
    pub fn start(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        mechanism: &NetMechanism,
        slot: u32,
        deadline_ns: u64,
    ) -> Result<(Handle, Vec<String>)> {
        let rule = match &attack.fault {
            Fault::NetLoss(loss) => loss.rule(deadline_ns, slot),
        };
        let mut handle = Handle { egress_keys: Vec::new(), ingress: false };
        let mut devices = Vec::new();
        let result = (|| {
            reset_counters(&mut shared.ebpf, slot)?;
            self.insert_rule(&mut shared.ebpf, attack, rule)?;
            if let Some(mode) = mechanism.egress {
                self.attach_egress(shared, attack, mode, &mut handle, &mut devices)?;
            }
            if mechanism.ingress_cgroup_skb {
                self.attach_ingress(&mut shared.ebpf, attack)?;
                handle.ingress = true;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((handle, devices)),
            Err(e) => {
                let (_, released) = self.stop(shared, attack, handle);
                if let Err(cleanup) = released {
                    tracing::error!("rolling back a failed start: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Delete the rule (returns when it was gone: the fault is inert from
    /// then on), then release the attachments.
    pub fn stop(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        handle: Handle,
    ) -> (Result<Instant>, Result<()>) {
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        let mut released = Ok(());
        for key in &handle.egress_keys {
            if let Err(e) = self.release_egress(shared, *key) {
                released = released.and(Err(e));
            }
        }
        if handle.ingress
            && let Err(e) = self.release_ingress(attack.target.id)
        {
            released = released.and(Err(e));
        }
        (inert, released)
    }

    pub fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let map: PerCpuArray<&MapData, NetCounters> = map(&shared.ebpf, net::COUNTERS)?;
        let values = map.get(&slot, 0).map_err(|e| Error::kernel("reading counters", e))?;
        let sum = values.iter().fold(NetCounters::default(), |mut sum, c| {
            sum.egress_matched += c.egress_matched;
            sum.egress_dropped += c.egress_dropped;
            sum.ingress_matched += c.ingress_matched;
            sum.ingress_dropped += c.ingress_dropped;
            sum.expired += c.expired;
            sum
        });
        Ok(sum.into())
    }

    fn insert_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack, rule: NetRule) -> Result<()> {
        let id = attack.target.id;
        let mut rules: HashMap<&mut MapData, u64, NetRule> = map_mut(ebpf, net::RULES)?;
        if rules.get(&id, 0).is_ok() {
            return Err(Error::invalid(format!(
                "{} already has a network fault in this run; combine them into one attack",
                attack.target
            )));
        }
        rules
            .insert(&id, &rule, 0)
            .map_err(|e| Error::kernel(format!("writing the rule for {}", attack.target), e))?;
        self.level_users[attack.target.level as usize] += 1;
        self.write_levels(ebpf)
    }

    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        let id = attack.target.id;
        let mut rules: HashMap<&mut MapData, u64, NetRule> = map_mut(ebpf, net::RULES)?;
        if rules.remove(&id).is_ok() {
            let users = &mut self.level_users[attack.target.level as usize];
            *users = users.saturating_sub(1);
            self.write_levels(ebpf)?;
        }
        Ok(())
    }

    fn write_levels(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let value = Levels::from_users(&self.level_users);
        let mut levels: Array<&mut MapData, Levels> = map_mut(ebpf, net::LEVELS)?;
        levels.set(0, &value, 0).map_err(|e| Error::kernel("writing the cgroup level mask", e))
    }

    fn attach_egress(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        mode: EgressMode,
        handle: &mut Handle,
        devices: &mut Vec<String>,
    ) -> Result<()> {
        let wanted = &attack.interfaces;
        for netns in target_netns(attack)? {
            let list = netns.run(interfaces).and_then(|r| r).map_err(|e| {
                Error::kernel(format!("listing devices of network namespace {}", netns.inode), e)
            })?;
            for (ifindex, ifname) in list {
                if !wanted.is_empty() && !wanted.contains(&ifname) {
                    continue;
                }
                let key = (netns.inode, ifindex);
                if let Some((_, users)) = self.egress.get_mut(&key) {
                    *users += 1;
                } else {
                    let Shared { ebpf, state } = shared;
                    let prog: &mut SchedClassifier = loaded(ebpf, EGRESS_PROGRAM)?;
                    let link = attach_egress(prog, &netns, ifindex, &ifname, mode, state)?;
                    self.egress.insert(key, (link, 1));
                }
                handle.egress_keys.push(key);
                devices.push(ifname);
            }
        }
        if let Some(missing) = wanted.iter().find(|w| !devices.contains(w)) {
            return Err(Error::invalid(format!(
                "interface {missing} does not exist in the target's network namespace (see `ip link`)"
            )));
        }
        Ok(())
    }

    fn release_egress(&mut self, shared: &mut Shared, key: (u64, u32)) -> Result<()> {
        let Some((_, users)) = self.egress.get_mut(&key) else { return Ok(()) };
        *users -= 1;
        if *users > 0 {
            return Ok(());
        }
        let (link, _) = self.egress.remove(&key).expect("present");
        detach_egress(link, &mut shared.state)
    }

    fn attach_ingress(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        let id = attack.target.id;
        if let Some((_, users)) = self.ingress.get_mut(&id) {
            *users += 1;
            return Ok(());
        }
        let prog: &mut CgroupSkb = loaded(ebpf, INGRESS_PROGRAM)?;
        let link = attach_skb(prog, &attack.target, CgroupSkbAttachType::Ingress)?;
        self.ingress.insert(id, (link, 1));
        Ok(())
    }

    fn release_ingress(&mut self, id: u64) -> Result<()> {
        let Some((_, users)) = self.ingress.get_mut(&id) else { return Ok(()) };
        *users -= 1;
        if *users > 0 {
            return Ok(());
        }
        let (link, _) = self.ingress.remove(&id).expect("present");
        link.detach()
            .map_err(|e| Error::kernel("detaching the ingress program", anyhow::anyhow!(describe(&e))))
    }
}

fn reset_counters(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let cpus = nr_cpus().map_err(|(_, e)| Error::kernel("counting CPUs", e))?;
    let mut map: PerCpuArray<&mut MapData, NetCounters> = map_mut(ebpf, net::COUNTERS)?;
    let zeros = PerCpuValues::try_from(vec![NetCounters::default(); cpus.get() as usize])
        .map_err(|e| Error::kernel("resetting counters", e))?;
    map.set(slot, zeros, 0).map_err(|e| Error::kernel("resetting counters", e))
}

pub(super) fn map<'a, T: TryFrom<&'a aya::maps::Map>>(ebpf: &'a Ebpf, name: &str) -> Result<T> {
    ebpf.map(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
        .try_into()
        .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
}

pub(super) fn map_mut<'a, T: TryFrom<&'a mut aya::maps::Map>>(ebpf: &'a mut Ebpf, name: &str) -> Result<T> {
    ebpf.map_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
        .try_into()
        .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
}

/// The program `name`, loaded into the kernel on first use (programs whose
/// `load()` takes no arguments).
pub(super) fn loaded<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("program {name} missing")))?;
    if prog.fd().is_err() {
        let load = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::CgroupSkb(p) => p.load(),
            other => unreachable!("program {name} of type {:?} is loaded by its family", other.prog_type()),
        };
        load.map_err(|e| Error::kernel(format!("loading program {name}"), anyhow::anyhow!(describe(&e))))?;
    }
    prog.try_into().map_err(|e: ProgramError| Error::kernel(name.to_owned(), e))
}

/// The network namespaces the target's processes live in; ours when it has
/// no process yet.
fn target_netns(attack: &Attack) -> Result<Vec<Netns>> {
    let mut found: Vec<Netns> = Vec::new();
    for pid in pids_in_subtree(&attack.target.path) {
        if let Ok(ns) = Netns::of_pid(pid)
            && !found.iter().any(|f| f.inode == ns.inode)
        {
            found.push(ns);
        }
    }
    if found.is_empty() {
        found.push(Netns::current().map_err(|e| Error::kernel("reading our network namespace", e))?);
    }
    Ok(found)
}

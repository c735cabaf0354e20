//! The injector: one loaded fault object, the rules in its maps, and the
//! links that make the kernel run it.
//!
//! Starting an attack writes its rule (with the kernel-side deadline) and
//! then attaches what is not attached yet; stopping deletes the rule first,
//! which makes the fault inert at once, then detaches what no other attack
//! uses. Attachments are shared and reference-counted: one egress program
//! per device serves every target in that namespace, one ingress program
//! per target cgroup.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{
        CgroupSkb, CgroupSkbAttachType, SchedClassifier, cgroup_skb::CgroupSkbLink, links::Link as _,
    },
    util::nr_cpus,
};
use chaos_abi::{
    cgroup::MAX_LEVEL,
    net::{self, MAX_SLOTS, NetCounters, NetRule},
};

use crate::{
    attach::{
        cgroup::attach_skb,
        netns::{Netns, interfaces},
        tc::{EgressLink, attach_egress, detach_egress},
    },
    attack::{Attack, Mechanism},
    clock::monotonic_ns,
    counters::Counters,
    ebpf::{self, describe},
    error::{Error, Result},
    faults::Fault,
    state::{Record, StateFile},
    targets::pids_in_subtree,
};

const EGRESS_PROGRAM: &str = "net_egress";
const INGRESS_PROGRAM: &str = "net_ingress";

/// An attack in progress.
#[derive(Debug)]
pub struct Running {
    pub attack: Attack,
    pub mechanism: Mechanism,
    /// CLOCK_MONOTONIC deadline written into the rule.
    pub deadline_ns: u64,
    pub started: Instant,
    /// Devices the egress program is attached to for this attack.
    pub interfaces: Vec<String>,
    slot: u32,
    egress_keys: Vec<(u64, u32)>,
}

/// How an attack ended, as measured by the injector.
#[derive(Debug)]
pub struct Stopped {
    pub attack: Attack,
    pub counters: Counters,
    /// From the stop call to the rule deleted (the fault inert).
    pub inert_after: Duration,
    /// From the stop call to every attachment released.
    pub detached_after: Duration,
}

pub struct Injector {
    ebpf: Ebpf,
    state: StateFile,
    egress: BTreeMap<(u64, u32), (EgressLink, usize)>,
    ingress: BTreeMap<u64, (CgroupSkbLink, usize)>,
    level_users: [usize; MAX_LEVEL as usize + 1],
    slots: [bool; MAX_SLOTS as usize],
}

impl Injector {
    /// Load the fault object (maps created, programs not yet loaded).
    pub fn new(state: StateFile) -> Result<Self> {
        let mut ebpf = ebpf::load_faults()?;
        ebpf::forward_logs(&mut ebpf);
        Ok(Self {
            ebpf,
            state,
            egress: BTreeMap::new(),
            ingress: BTreeMap::new(),
            level_users: [0; MAX_LEVEL as usize + 1],
            slots: [false; MAX_SLOTS as usize],
        })
    }

    pub fn state(&mut self) -> &mut StateFile {
        &mut self.state
    }

    /// Start `attack` with `mechanism`. On failure nothing of this attack
    /// remains injected or attached.
    pub fn start(&mut self, attack: Attack, mechanism: Mechanism) -> Result<Running> {
        let slot = self.take_slot()?;
        let deadline_ns = monotonic_ns() + attack.duration.as_nanos() as u64;
        let Fault::NetLoss(loss) = &attack.fault;
        let rule = loss.rule(deadline_ns, slot);
        let mut running = Running {
            attack,
            mechanism,
            deadline_ns,
            started: Instant::now(),
            interfaces: Vec::new(),
            slot,
            egress_keys: Vec::new(),
        };
        let result = (|| {
            self.reset_counters(slot)?;
            self.insert_rule(&running.attack, rule)?;
            if let Some(mode) = mechanism.egress {
                self.attach_egress_for(&mut running, mode)?;
            }
            if mechanism.ingress_cgroup_skb {
                self.attach_ingress_for(&running)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(running),
            Err(e) => {
                if let Err(cleanup) = self.stop(running) {
                    tracing::error!("rolling back a failed start: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Stop: rule out (inert at once), then release attachments.
    pub fn stop(&mut self, running: Running) -> Result<Stopped> {
        let t0 = Instant::now();
        let removed = self.remove_rule(&running.attack);
        let inert_after = t0.elapsed();
        let counters = self.counters(&running).unwrap_or_default();
        let mut first_err = removed.err();
        for key in &running.egress_keys {
            if let Err(e) = self.release_egress(*key) {
                first_err.get_or_insert(e);
            }
        }
        if running.mechanism.ingress_cgroup_skb
            && let Err(e) = self.release_ingress(running.attack.target.id)
        {
            first_err.get_or_insert(e);
        }
        self.slots[running.slot as usize] = false;
        let detached_after = t0.elapsed();
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(Stopped { attack: running.attack, counters, inert_after, detached_after })
    }

    /// Counters of a running attack, summed over CPUs.
    pub fn counters(&self, running: &Running) -> Result<Counters> {
        let map: PerCpuArray<&MapData, NetCounters> = self.map(net::COUNTERS)?;
        let values = map.get(&running.slot, 0).map_err(|e| Error::kernel("reading counters", e))?;
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

    fn map<'a, T: TryFrom<&'a aya::maps::Map>>(&'a self, name: &str) -> Result<T> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
            .try_into()
            .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
    }

    fn map_mut<'a, T: TryFrom<&'a mut aya::maps::Map>>(&'a mut self, name: &str) -> Result<T> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
            .try_into()
            .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
    }

    fn take_slot(&mut self) -> Result<u32> {
        let free = self.slots.iter().position(|used| !used).ok_or_else(|| {
            Error::invalid(format!("more than {MAX_SLOTS} attacks at once in one chaos process"))
        })?;
        self.slots[free] = true;
        Ok(free as u32)
    }

    fn reset_counters(&mut self, slot: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| Error::kernel("counting CPUs", e))?;
        let mut map: PerCpuArray<&mut MapData, NetCounters> = self.map_mut(net::COUNTERS)?;
        let zeros = PerCpuValues::try_from(vec![NetCounters::default(); cpus.get() as usize])
            .map_err(|e| Error::kernel("resetting counters", e))?;
        map.set(slot, zeros, 0).map_err(|e| Error::kernel("resetting counters", e))
    }

    fn insert_rule(&mut self, attack: &Attack, rule: NetRule) -> Result<()> {
        let id = attack.target.id;
        let mut rules: HashMap<&mut MapData, u64, NetRule> = self.map_mut(net::RULES)?;
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
        self.write_levels()
    }

    fn remove_rule(&mut self, attack: &Attack) -> Result<()> {
        let id = attack.target.id;
        let mut rules: HashMap<&mut MapData, u64, NetRule> = self.map_mut(net::RULES)?;
        if rules.remove(&id).is_ok() {
            let users = &mut self.level_users[attack.target.level as usize];
            *users = users.saturating_sub(1);
            self.write_levels()?;
        }
        Ok(())
    }

    fn write_levels(&mut self) -> Result<()> {
        let mask =
            self.level_users.iter().enumerate().filter(|(_, n)| **n > 0).fold(0u32, |m, (l, _)| m | 1 << l);
        let mut levels: Array<&mut MapData, u32> = self.map_mut(net::LEVELS)?;
        levels.set(0, &mask, 0).map_err(|e| Error::kernel("writing the cgroup level mask", e))
    }

    fn attach_egress_for(
        &mut self,
        running: &mut Running,
        mode: crate::attach::tc::EgressMode,
    ) -> Result<()> {
        let wanted = &running.attack.interfaces;
        let mut seen_wanted = Vec::new();
        for netns in target_netns(&running.attack)? {
            let devices = netns.run(interfaces).and_then(|r| r).map_err(|e| {
                Error::kernel(format!("listing devices of network namespace {}", netns.inode), e)
            })?;
            for (ifindex, ifname) in devices {
                if !wanted.is_empty() && !wanted.contains(&ifname) {
                    continue;
                }
                seen_wanted.push(ifname.clone());
                let key = (netns.inode, ifindex);
                if let Some((_, users)) = self.egress.get_mut(&key) {
                    *users += 1;
                } else {
                    let Self { ebpf, state, .. } = self;
                    let prog: &mut SchedClassifier = program(ebpf, EGRESS_PROGRAM)?;
                    let link = attach_egress(prog, &netns, ifindex, &ifname, mode, state)?;
                    self.egress.insert(key, (link, 1));
                }
                running.egress_keys.push(key);
                running.interfaces.push(ifname);
            }
        }
        if let Some(missing) = wanted.iter().find(|w| !seen_wanted.contains(w)) {
            return Err(Error::invalid(format!(
                "interface {missing} does not exist in the target's network namespace (see `ip link`)"
            )));
        }
        Ok(())
    }

    fn release_egress(&mut self, key: (u64, u32)) -> Result<()> {
        let Some((_, users)) = self.egress.get_mut(&key) else { return Ok(()) };
        *users -= 1;
        if *users > 0 {
            return Ok(());
        }
        let (link, _) = self.egress.remove(&key).expect("present");
        detach_egress(link, &mut self.state)
    }

    fn attach_ingress_for(&mut self, running: &Running) -> Result<()> {
        let id = running.attack.target.id;
        if let Some((_, users)) = self.ingress.get_mut(&id) {
            *users += 1;
            return Ok(());
        }
        let prog: &mut CgroupSkb = program(&mut self.ebpf, INGRESS_PROGRAM)?;
        let link = attach_skb(prog, &running.attack.target, CgroupSkbAttachType::Ingress)?;
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

    /// Record that an attack ended (state file).
    pub fn record_end(&mut self, attack: &Attack) -> Result<()> {
        self.state.append(&Record::AttackEnded { id: attack.id.clone() })
    }
}

/// The program `name`, loaded into the kernel on first use.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("program {name} missing")))?;
    if prog.fd().is_err() {
        let load = match prog {
            aya::programs::Program::SchedClassifier(p) => p.load(),
            aya::programs::Program::CgroupSkb(p) => p.load(),
            other => unreachable!("program {name} of type {:?} is not loaded here", other.prog_type()),
        };
        load.map_err(|e| Error::kernel(format!("loading program {name}"), anyhow::anyhow!(describe(&e))))?;
    }
    prog.try_into().map_err(|e: aya::programs::ProgramError| Error::kernel(name.to_owned(), e))
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

//! The network part of the injector: rules keyed by target cgroup, the
//! level mask, and what runs the programs — one egress classifier per
//! device (shared by every target in that namespace), one fq per device
//! for attacks that schedule departure times, one cgroup_skb ingress
//! program per target cgroup. All are reference-counted.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
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

use super::{
    Shared,
    maps::{insert_rule, map, map_mut, remove_rule},
};
use crate::{
    attach::{
        cgroup::attach_skb,
        netns::{Netns, interface_state, interfaces},
        qdisc::{self, Fq},
        tc::{EgressLink, EgressMode, attach_egress, detach_egress},
    },
    attack::Attack,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::{Fault, NetFault, net::normal_table},
    plan::NetMechanism,
    targets::pids_in_subtree,
};

const EGRESS_PROGRAM: &str = "net_egress";
const INGRESS_PROGRAM: &str = "net_ingress";

/// A device of a target's network namespace.
struct Device {
    netns: Netns,
    ifindex: u32,
    ifname: String,
}

impl Device {
    fn key(&self) -> (u64, u32) {
        (self.netns.inode, self.ifindex)
    }
}

/// What a running network attack holds.
#[derive(Debug)]
pub struct Handle {
    egress_keys: Vec<(u64, u32)>,
    fq_keys: Vec<(u64, u32)>,
    ingress: bool,
    /// How long after the rule goes its last scheduled packet may leave
    /// (the attack's own horizon, below `MAX_DEPARTURE_AHEAD`).
    drain: Duration,
}

/// An fq in use, by how many attacks, and until when it must stay.
struct FqUse {
    fq: Fq,
    users: usize,
    drain_until: Instant,
}

/// Attachments and the level mask, shared by every network attack.
#[derive(Default)]
pub struct Net {
    egress: BTreeMap<(u64, u32), (EgressLink, usize)>,
    fq: BTreeMap<(u64, u32), FqUse>,
    ingress: BTreeMap<u64, (CgroupSkbLink, usize)>,
    level_users: [usize; MAX_LEVEL as usize + 1],
    jitter_table_written: bool,
}

impl Net {
    /// Write the rule, then install fq and attach. Returns the devices
    /// acted on.
    pub fn start(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        mechanism: &NetMechanism,
        slot: u32,
        deadline_ns: u64,
    ) -> Result<(Handle, Vec<String>)> {
        let (rule, effects) = match &attack.fault {
            Fault::NetLoss(loss) => (loss.rule(deadline_ns, slot), None),
            other => match other.net_effects() {
                Some(f) => (f.rule(deadline_ns, slot), Some(f)),
                None => unreachable!("{} is not a network fault", other.kind()),
            },
        };
        let drain = effects.map_or(Duration::ZERO, NetFault::max_departure_ahead);
        let mut handle = Handle { egress_keys: Vec::new(), fq_keys: Vec::new(), ingress: false, drain };
        let mut names = Vec::new();
        let result = (|| {
            reset_counters(&mut shared.ebpf, slot)?;
            reset_rate_clock(&mut shared.ebpf, slot)?;
            if effects.is_some_and(NetFault::needs_jitter_table) {
                self.write_jitter_table(&mut shared.ebpf)?;
            }
            self.insert_rule(&mut shared.ebpf, attack, rule)?;
            if let Some(mode) = mechanism.egress {
                for device in devices(attack, effects)? {
                    // fq first: its snapshot is of the device as it was,
                    // before any clsact the egress attachment may add.
                    if mechanism.fq {
                        self.acquire_fq(shared, &device, &mut handle)?;
                    }
                    self.acquire_egress(shared, &device, mode, &mut handle)?;
                    names.push(device.ifname);
                }
            }
            if mechanism.ingress_cgroup_skb {
                self.attach_ingress(&mut shared.ebpf, attack)?;
                handle.ingress = true;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((handle, names)),
            Err(e) => Err(super::rolled_back(e, self.stop(shared, attack, handle))),
        }
    }

    /// Delete the rule (returns when it was gone: the fault is inert from
    /// then on), then release the attachments, and last the fq qdiscs once
    /// the packets already scheduled have left.
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
        // Until the last packet the attack may have scheduled has left: the
        // wait ends as soon as chaos's fqs are empty (see qdisc::drain).
        let drain_until = Instant::now() + handle.drain;
        for key in &handle.fq_keys {
            if let Err(e) = self.release_fq(shared, *key, drain_until) {
                released = released.and(Err(e));
            }
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
            sum.egress_injected += c.egress_injected;
            sum.egress_delayed += c.egress_delayed;
            sum.egress_duplicated += c.egress_duplicated;
            sum.egress_corrupted += c.egress_corrupted;
            sum.egress_reordered += c.egress_reordered;
            sum.egress_rate_dropped += c.egress_rate_dropped;
            sum.egress_queue_dropped += c.egress_queue_dropped;
            sum.egress_copy_failed += c.egress_copy_failed;
            sum
        });
        Ok(sum.into())
    }

    fn insert_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack, rule: NetRule) -> Result<()> {
        insert_rule(
            ebpf,
            net::RULES,
            attack,
            &rule,
            "a network fault in this run; combine them into one attack",
        )?;
        self.level_users[attack.target.level as usize] += 1;
        self.write_levels(ebpf)
    }

    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        let id = attack.target.id;
        if remove_rule::<NetRule>(ebpf, net::RULES, id)? {
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

    /// The normal quantiles the eBPF side draws jitter from; the same for
    /// every rule, written once.
    fn write_jitter_table(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        if self.jitter_table_written {
            return Ok(());
        }
        let mut table: Array<&mut MapData, i32> = map_mut(ebpf, net::JITTER_TABLE)?;
        for (i, q) in normal_table().into_iter().enumerate() {
            table.set(i as u32, &q, 0).map_err(|e| Error::kernel("writing the jitter table", e))?;
        }
        self.jitter_table_written = true;
        Ok(())
    }

    fn acquire_fq(&mut self, shared: &mut Shared, device: &Device, handle: &mut Handle) -> Result<()> {
        let key = device.key();
        if let Some(u) = self.fq.get_mut(&key) {
            u.users += 1;
        } else {
            shared.state.note_netns(&device.netns)?;
            let fq = qdisc::install(
                &device.netns,
                device.ifindex,
                &device.ifname,
                handle.drain,
                &mut shared.state,
            )?;
            self.fq.insert(key, FqUse { fq, users: 1, drain_until: Instant::now() });
        }
        handle.fq_keys.push(key);
        Ok(())
    }

    fn release_fq(&mut self, shared: &mut Shared, key: (u64, u32), drain_until: Instant) -> Result<()> {
        let Some(u) = self.fq.get_mut(&key) else { return Ok(()) };
        u.users -= 1;
        u.drain_until = u.drain_until.max(drain_until);
        if u.users > 0 {
            return Ok(());
        }
        let u = self.fq.remove(&key).expect("present");
        // Packets already scheduled leave on time; removing fq earlier would
        // drop them, a loss burst the fault never asked for. Past the
        // horizon nothing of the attack's can be left but what the device
        // could not send (a stalled link): deleting fq drops it, said here.
        let held = qdisc::drain(&u.fq, u.drain_until);
        if held > 0 {
            tracing::warn!(
                dev = u.fq.ifname,
                held,
                "fq still held packets past the attack's horizon; removing it drops them"
            );
        }
        qdisc::release(u.fq, &mut shared.state)
    }

    fn acquire_egress(
        &mut self,
        shared: &mut Shared,
        device: &Device,
        mode: EgressMode,
        handle: &mut Handle,
    ) -> Result<()> {
        let key = device.key();
        if let Some((_, users)) = self.egress.get_mut(&key) {
            *users += 1;
        } else {
            let Shared { ebpf, state } = shared;
            state.note_netns(&device.netns)?;
            let prog: &mut SchedClassifier = loaded(ebpf, EGRESS_PROGRAM)?;
            let link = attach_egress(prog, &device.netns, device.ifindex, &device.ifname, mode, state)?;
            self.egress.insert(key, (link, 1));
        }
        handle.egress_keys.push(key);
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

/// The devices an attack's egress side acts on, in the namespaces of the
/// target's processes.
///
/// - `--interface` names them: exactly those.
/// - `net-loss`: every device, loopback included (unchanged since it
///   shipped).
/// - The other network faults: the devices that are up, except loopback —
///   the target's own network, not the traffic between its processes. When
///   the fault needs fq (delay, rate, reorder) and the target shares the
///   host's network namespace, chaos would be replacing the root qdisc of
///   the host's NICs, which every other process uses: it asks for
///   `--interface` instead of guessing.
fn devices(attack: &Attack, effects: Option<&NetFault>) -> Result<Vec<Device>> {
    let wanted = &attack.interfaces;
    let host = Netns::of_pid(1).ok().map(|n| n.inode);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for netns in target_netns(attack)? {
        if wanted.is_empty() && effects.is_some_and(NetFault::schedules) && Some(netns.inode) == host {
            return Err(Error::invalid(format!(
                "{} runs in the host's network namespace: name the device(s) to act on with --interface \
                 (chaos replaces their root qdisc with fq for the attack, if it is the kernel's default, \
                 and restores it after); it does not pick host NICs by itself",
                attack.target
            )));
        }
        let list = netns
            .run(|| -> std::io::Result<Vec<(u32, String, bool, bool)>> {
                let mut all = Vec::new();
                for (ifindex, name) in interfaces()? {
                    let (up, lo) = interface_state(&name).unwrap_or((false, false));
                    all.push((ifindex, name, up, lo));
                }
                Ok(all)
            })
            .and_then(|r| r)
            .map_err(|e| Error::kernel(format!("listing devices of network namespace {}", netns.inode), e))?;
        for (ifindex, ifname, up, loopback) in list {
            seen.push(ifname.clone());
            let take = if !wanted.is_empty() {
                wanted.contains(&ifname)
            } else {
                effects.is_none() || (up && !loopback)
            };
            if take {
                out.push(Device { netns: netns.clone(), ifindex, ifname });
            }
        }
    }
    if let Some(missing) = wanted.iter().find(|w| !seen.contains(w)) {
        return Err(Error::invalid(format!(
            "interface {missing} does not exist in the target's network namespace (see `ip link`)"
        )));
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "no device is up in the network namespace of {} besides loopback; name one with --interface",
            attack.target
        )));
    }
    Ok(out)
}

fn reset_counters(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let cpus = nr_cpus().map_err(|(_, e)| Error::kernel("counting CPUs", e))?;
    let mut map: PerCpuArray<&mut MapData, NetCounters> = map_mut(ebpf, net::COUNTERS)?;
    let zeros = PerCpuValues::try_from(vec![NetCounters::default(); cpus.get() as usize])
        .map_err(|e| Error::kernel("resetting counters", e))?;
    map.set(slot, zeros, 0).map_err(|e| Error::kernel("resetting counters", e))
}

/// A new attack's rate limiter starts with the link free.
fn reset_rate_clock(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let mut map: Array<&mut MapData, u64> = map_mut(ebpf, net::RATE_CLOCKS)?;
    map.set(slot, &0, 0).map_err(|e| Error::kernel("resetting the rate limiter", e))
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
        // Told apart by inode (cheap, exact among live namespaces), then
        // identified once each, for the state file and for every later
        // operation to check (a process that exits, its PID reused, must
        // not lead chaos into another namespace). A process that exited
        // meanwhile is skipped: another of the same namespace may follow.
        if let Ok(ns) = Netns::of_pid(pid)
            && !found.iter().any(|f| f.inode == ns.inode)
            && let Ok(ns) = ns.identify()
        {
            found.push(ns);
        }
    }
    if found.is_empty() {
        found.push(Netns::current().map_err(|e| Error::kernel("reading our network namespace", e))?);
    }
    Ok(found)
}

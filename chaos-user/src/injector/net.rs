//! The network part of the injector: rules keyed by target cgroup, the
//! level mask, and what runs the programs — one egress classifier per
//! device (shared by every target in that namespace), one fq per device
//! for attacks that schedule departure times, one cgroup_skb ingress
//! program per target cgroup, and for egress one cgroup_skb tag program
//! per target cgroup (it marks the target's packets so that the classifier
//! passes everyone else's after one test: see chaos-ebpf/src/net_egress.rs)
//! with the attack's devices in the tag set. All are reference-counted.

use std::time::{Duration, Instant};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        CgroupSkb, CgroupSkbAttachType, Program, ProgramError, SchedClassifier, cgroup_skb::CgroupSkbLink,
        links::Link as _,
    },
};
use chaos_abi::net::{self, NetCounters, NetRule};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    links::LinkSet,
    maps::{map_mut, write_levels},
    receive::{Receive, ReceiveHandle},
    rules::{CounterFields, RuleTable, named},
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
    faults::{NetAny, NetFault, net::normal_table},
    plan::NetMechanism,
    targets::pids_in_subtree,
};

const EGRESS_PROGRAM: &str = "net_egress";

/// A device of a target's network namespace.
pub(super) struct Device {
    pub netns: Netns,
    pub ifindex: u32,
    pub ifname: String,
}

impl Device {
    pub fn key(&self) -> (u64, u32) {
        (self.netns.inode, self.ifindex)
    }
}

/// What a running network attack holds.
#[derive(Debug, Default)]
pub struct Handle {
    /// The devices acted on, by name (the `start` event lists them).
    pub interfaces: Vec<String>,
    egress_keys: Vec<(u64, u32)>,
    fq_keys: Vec<(u64, u32)>,
    ingress: bool,
    /// This attack's keys in `NET_TAG_DEVICES` (see `chaos_abi::net`).
    tag_keys: Vec<u64>,
    /// This attack's networks in `NET_PEERS` (several `--cidr`).
    peer_keys: Vec<(u32, net::PeerKey)>,
    /// Whether the target's tag program is ours to release.
    tag: bool,
    /// How long after the rule goes its last scheduled packet may leave
    /// (the attack's own horizon, below `MAX_DEPARTURE_AHEAD`).
    drain: Duration,
    /// The receiving side (effects on what the target receives).
    receive: ReceiveHandle,
    /// The attack's counter slot.
    slot: u32,
}

/// An fq in use, and until when it must stay.
struct FqUse {
    fq: Fq,
    drain_until: Instant,
}

/// The names of [`NetCounters`]' fields in events and reports, in
/// declaration order (`-`: summed into `expired`, `injected` only).
pub(super) const COUNTER_NAMES: &str = "egress_matched egress_dropped ingress_matched ingress_dropped - - egress_delayed \
                             egress_duplicated egress_corrupted egress_reordered egress_rate_dropped \
                             egress_queue_dropped egress_copy_failed - ingress_delayed ingress_duplicated \
                             ingress_corrupted ingress_reordered ingress_rate_dropped ingress_queue_dropped";

// SAFETY: #[repr(C)], u64 fields only (chaos-abi).
unsafe impl CounterFields for NetCounters {}

/// Rules, attachments and the level mask, shared by every network attack.
pub struct Net {
    rules: RuleTable<NetRule, NetCounters>,
    egress: LinkSet<(u64, u32), EgressLink>,
    fq: LinkSet<(u64, u32), FqUse>,
    ingress: CgroupHook,
    tag: CgroupHook,
    receive: Receive,
    jitter_table_written: bool,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            rules: RuleTable::new(
                net::RULES,
                net::COUNTERS,
                "a network fault in this run; combine them into one attack",
            ),
            egress: LinkSet::default(),
            fq: LinkSet::default(),
            ingress: CgroupHook::new("net_ingress", CgroupSkbAttachType::Ingress, "the ingress program"),
            tag: CgroupHook::new("net_tag", CgroupSkbAttachType::Egress, "the egress tag program"),
            receive: Receive::default(),
            jitter_table_written: false,
        }
    }
}

/// Resolve the devices an egress attack would act on, changing nothing:
/// see [`super::preflight`].
pub(super) fn preflight(attack: &Attack, mechanism: &NetMechanism, fault: &NetAny) -> Result<()> {
    if mechanism.egress.is_some() || mechanism.receive {
        devices(attack, fault.effects(), fault.interfaces())?;
    }
    Ok(())
}

impl FamilyInjector for Net {
    type Fault = NetAny;
    type Mechanism = NetMechanism;
    type Handle = Handle;

    /// Write the rule, then install fq and attach; `handle.interfaces`
    /// names the devices acted on.
    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, mechanism, slot, .. } = *start;
        handle.slot = slot;
        let effects = fault.effects();
        handle.drain = effects.map_or(Duration::ZERO, NetFault::max_departure_ahead);
        self.rules.reset_counters(&mut shared.ebpf, slot)?;
        reset_rate_clock(&mut shared.ebpf, slot)?;
        reset_burst_states(&mut shared.ebpf, slot)?;
        if effects.is_some_and(NetFault::needs_jitter_table) {
            self.write_jitter_table(&mut shared.ebpf)?;
        }
        // The networks before the rule that looks them up.
        let keys = fault.filter().peer_keys(slot);
        if !keys.is_empty() {
            let mut peers: LpmTrie<&mut MapData, net::PeerKey, u8> = map_mut(&mut shared.ebpf, net::PEERS)?;
            for (prefix, data) in keys {
                peers
                    .insert(&Key::new(prefix, data), &1, 0)
                    .map_err(|e| Error::kernel("adding a --cidr network", e))?;
                handle.peer_keys.push((prefix, data));
            }
        }
        let rule = fault.rule(start.deadline_from_now(), slot);
        self.rules.insert(&mut shared.ebpf, attack, &rule)?;
        write_levels(&mut shared.ebpf, net::LEVELS, self.rules.levels())?;
        let devices = if mechanism.egress.is_some() || mechanism.receive {
            devices(attack, effects, fault.interfaces())?
        } else {
            Vec::new()
        };
        if mechanism.receive {
            let schedules = mechanism.fq.then_some(handle.drain);
            self.receive.begin(shared, attack, slot, &devices, schedules, &mut handle.receive)?;
            if mechanism.egress.is_none() {
                handle.interfaces.extend(devices.iter().map(|d| d.ifname.clone()));
            }
        }
        if let Some(mode) = mechanism.egress {
            for device in devices {
                // fq first: its snapshot is of the device as it was,
                // before any clsact the egress attachment may add.
                if mechanism.fq {
                    self.acquire_fq(shared, &device, handle)?;
                }
                self.acquire_egress(shared, &device, mode, handle)?;
                // The device joins the attack's tag set once its
                // classifier is there.
                add_tag_device(&mut shared.ebpf, slot, device.ifindex, handle)?;
                handle.interfaces.push(device.ifname);
            }
            // Last: nothing is tagged before the classifiers that clear the
            // tag are in place.
            self.tag.attach(&mut shared.ebpf, attack)?;
            handle.tag = true;
        }
        if mechanism.ingress_cgroup_skb {
            self.ingress.attach(&mut shared.ebpf, attack)?;
            handle.ingress = true;
        }
        Ok(())
    }

    /// Detach the tag program and delete the rule (returns when it was
    /// gone: the fault is inert from then on), then release the
    /// attachments, and last the fq qdiscs once the packets already
    /// scheduled have left.
    fn stop(&mut self, shared: &mut Shared, attack: &Attack, mut handle: Handle) -> Stopping {
        let mut released = Ok(());
        // The tag program first: a packet tagged after the rule is gone
        // would find no rule, and the classifier leaves the tag of a packet
        // without a rule (it may be another chaos process's to clear).
        if handle.tag
            && let Err(e) = self.tag.release(attack.target.id)
        {
            released = released.and(Err(e));
        }
        // The learning programs too: a flow learned after the rule is gone
        // would outlive the attack in the map.
        let mut receive = std::mem::take(&mut handle.receive);
        if let Err(e) = self.receive.stop_learning(attack, &mut receive) {
            released = released.and(Err(e));
        }
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        if let Err(e) = self.receive.release(shared, handle.slot, receive, handle.drain) {
            released = released.and(Err(e));
        }
        // The networks after the rule: a slot's next attack starts clean.
        if !handle.peer_keys.is_empty() {
            match map_mut::<LpmTrie<&mut MapData, net::PeerKey, u8>>(&mut shared.ebpf, net::PEERS) {
                Ok(mut peers) => {
                    for &(prefix, data) in &handle.peer_keys {
                        if let Err(e) = peers.remove(&Key::new(prefix, data)) {
                            released = released.and(Err(Error::kernel("removing a --cidr network", e)));
                        }
                    }
                }
                Err(e) => released = released.and(Err(e)),
            }
        }
        // Devices leave the tag set before their classifiers go.
        for key in &handle.tag_keys {
            if let Err(e) = remove_tag_device(&mut shared.ebpf, *key) {
                released = released.and(Err(e));
            }
        }
        for key in &handle.egress_keys {
            if let Err(e) = self.release_egress(shared, *key) {
                released = released.and(Err(e));
            }
        }
        if handle.ingress
            && let Err(e) = self.ingress.release(attack.target.id)
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

    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let c = self.rules.counters(&shared.ebpf, slot)?;
        Ok(Counters {
            matched: c.egress_matched + c.ingress_matched,
            // A packet counts once however many effects hit it.
            injected: c.egress_injected + c.ingress_dropped + c.ingress_injected,
            expired: c.expired,
            detail: named(&c, COUNTER_NAMES),
        })
    }
}

impl Net {
    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        if self.rules.remove(ebpf, attack)? {
            write_levels(ebpf, net::LEVELS, self.rules.levels())?;
        }
        Ok(())
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
        self.fq.acquire(key, || {
            shared.state.note_netns(&device.netns)?;
            let fq = qdisc::install(
                &device.netns,
                device.ifindex,
                &device.ifname,
                handle.drain,
                &mut shared.state,
            )?;
            Ok(FqUse { fq, drain_until: Instant::now() })
        })?;
        handle.fq_keys.push(key);
        Ok(())
    }

    fn release_fq(&mut self, shared: &mut Shared, key: (u64, u32), drain_until: Instant) -> Result<()> {
        if let Some(u) = self.fq.get_mut(&key) {
            u.drain_until = u.drain_until.max(drain_until);
        }
        let Some(u) = self.fq.release(&key) else { return Ok(()) };
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
        self.egress.acquire(key, || {
            let Shared { ebpf, state } = shared;
            state.note_netns(&device.netns)?;
            let prog: &mut SchedClassifier = loaded(ebpf, EGRESS_PROGRAM)?;
            attach_egress(prog, &device.netns, device.ifindex, &device.ifname, mode, state)
        })?;
        handle.egress_keys.push(key);
        Ok(())
    }

    fn release_egress(&mut self, shared: &mut Shared, key: (u64, u32)) -> Result<()> {
        match self.egress.release(&key) {
            Some(link) => detach_egress(link, &mut shared.state),
            None => Ok(()),
        }
    }
}

/// One cgroup_skb program, attached to each target cgroup by its first
/// attack and detached by its last (fd-owned links: they also end with the
/// process).
pub(super) struct CgroupHook {
    program: &'static str,
    attach_type: CgroupSkbAttachType,
    /// What the program is, for errors.
    what: &'static str,
    links: LinkSet<u64, CgroupSkbLink>,
}

impl CgroupHook {
    pub fn new(program: &'static str, attach_type: CgroupSkbAttachType, what: &'static str) -> Self {
        Self { program, attach_type, what, links: LinkSet::default() }
    }

    pub fn attach(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        let Self { program, attach_type, .. } = *self;
        self.links.acquire(attack.target.id, || {
            let prog: &mut CgroupSkb = loaded(ebpf, program)?;
            attach_skb(prog, &attack.target, attach_type)
        })
    }

    pub fn release(&mut self, cgroup_id: u64) -> Result<()> {
        let Some(link) = self.links.release(&cgroup_id) else { return Ok(()) };
        link.detach()
            .map_err(|e| Error::kernel(format!("detaching {}", self.what), anyhow::anyhow!(describe(&e))))
    }
}

/// Let the tag program tag the attack's packets that leave by `ifindex`
/// (see `chaos_abi::net::TAG_DEVICES`). Two namespaces of the target may
/// each have a device of that ifindex: one key serves both.
fn add_tag_device(ebpf: &mut Ebpf, slot: u32, ifindex: u32, handle: &mut Handle) -> Result<()> {
    let key = net::tag_device_key(slot, ifindex);
    if handle.tag_keys.contains(&key) {
        return Ok(());
    }
    let mut map: HashMap<&mut MapData, u64, u8> = map_mut(ebpf, net::TAG_DEVICES)?;
    map.insert(&key, &1, 0).map_err(|e| Error::kernel("adding a device to the tag set", e))?;
    handle.tag_keys.push(key);
    Ok(())
}

fn remove_tag_device(ebpf: &mut Ebpf, key: u64) -> Result<()> {
    let mut map: HashMap<&mut MapData, u64, u8> = map_mut(ebpf, net::TAG_DEVICES)?;
    map.remove(&key).map_err(|e| Error::kernel("removing a device from the tag set", e))
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
fn devices(attack: &Attack, effects: Option<&NetFault>, wanted: &[String]) -> Result<Vec<Device>> {
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

/// A new attack's rate limiter starts with the link free.
fn reset_rate_clock(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let mut map: Array<&mut MapData, u64> = map_mut(ebpf, net::RATE_CLOCKS)?;
    map.set(slot, &0, 0).map_err(|e| Error::kernel("resetting the rate limiter", e))
}

/// A new attack's burst-loss chains start in the good state, in both
/// directions (a slot's last attack may have left one bad).
fn reset_burst_states(ebpf: &mut Ebpf, slot: u32) -> Result<()> {
    let mut map: Array<&mut MapData, net::BurstState> = map_mut(ebpf, net::BURST_STATES)?;
    for dir in [net::DIR_EGRESS, net::DIR_INGRESS] {
        map.set(net::direction_index(slot, dir), &net::BurstState::default(), 0)
            .map_err(|e| Error::kernel("resetting the burst-loss state", e))?;
    }
    Ok(())
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
            Program::CgroupSockAddr(p) => p.load(),
            Program::SkLookup(p) => p.load(),
            Program::SockOps(p) => p.load(),
            Program::SkMsg(p) => p.load(),
            other => unreachable!("program {name} of type {:?} is loaded by its family", other.prog_type()),
        };
        load.map_err(|e| Error::kernel(format!("loading program {name}"), anyhow::anyhow!(describe(&e))))?;
    }
    prog.try_into().map_err(|e: ProgramError| Error::kernel(name.to_owned(), e))
}

/// The network namespaces the target's processes live in; ours when it has
/// no process yet.
pub(super) fn target_netns(attack: &Attack) -> Result<Vec<Netns>> {
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

//! A family's rule table: one rule per target cgroup in the family's hash
//! map, the cgroup levels that have rules (the programs look up only those
//! ancestors), and the per-CPU counters of each counter slot.
//!
//! Every family keeps its rules this way; what differs is the rule type,
//! the counter type and where the family publishes its level mask (its own
//! configuration map), which the family writes after each change.

use std::marker::PhantomData;

use aya::{
    Ebpf, Pod,
    maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use chaos_abi::cgroup::{Levels, MAX_LEVEL};

use super::maps::{map, map_mut};
use crate::{
    attack::Attack,
    error::{Error, Result},
};

/// A family's counter struct: `#[repr(C)]`, every field a `u64` (arrays
/// of `u64` included), so that it is summed over CPUs field by field and
/// its fields are named by one list in declaration order.
///
/// # Safety
/// The implementor is `#[repr(C)]` and made of `u64`s only, without
/// padding: it is read as a `[u64]` of `size_of::<Self>() / 8` elements.
pub(super) unsafe trait CounterFields: Pod + Default {}

fn fields<C: CounterFields>(c: &C) -> &[u64] {
    // SAFETY: CounterFields promises a repr(C) struct of u64s only (size a
    // multiple of 8, alignment of u64).
    unsafe { std::slice::from_raw_parts((c as *const C).cast::<u64>(), size_of::<C>() / 8) }
}

fn fields_mut<C: CounterFields>(c: &mut C) -> &mut [u64] {
    // SAFETY: as in `fields`; every bit pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut((c as *mut C).cast::<u64>(), size_of::<C>() / 8) }
}

/// The fields of `c` under `names`, a whitespace-separated list of one
/// name per `u64` in declaration order; `-` leaves a field out.
pub(super) fn named<C: CounterFields>(
    c: &C,
    names: &'static str,
) -> std::collections::BTreeMap<&'static str, u64> {
    debug_assert_eq!(names.split_whitespace().count(), size_of::<C>() / 8, "one name per field");
    names.split_whitespace().zip(fields(c)).filter(|(name, _)| *name != "-").map(|(n, v)| (n, *v)).collect()
}

/// `bpf_map_update_elem`'s "create only" flag (include/uapi/linux/bpf.h):
/// the kernel refuses the insert with EEXIST when the key is present.
const BPF_NOEXIST: u64 = 1;

/// The rules of one family, keyed by target cgroup id.
pub(super) struct RuleTable<R, C> {
    rules: &'static str,
    counters: &'static str,
    /// What a second rule for the same target is refused with: the target
    /// "already has <taken>".
    taken: &'static str,
    level_users: [usize; MAX_LEVEL as usize + 1],
    /// The cgroup ids with a rule, oldest first, each with the attack that
    /// wrote it: only its owner removes a rule, so that rolling back a
    /// start that was refused never deletes the rule it collided with.
    written: Vec<(u64, String)>,
    _types: PhantomData<(R, C)>,
}

impl<R: Pod, C: CounterFields> RuleTable<R, C> {
    pub const fn new(rules: &'static str, counters: &'static str, taken: &'static str) -> Self {
        Self {
            rules,
            counters,
            taken,
            level_users: [0; MAX_LEVEL as usize + 1],
            written: Vec::new(),
            _types: PhantomData,
        }
    }

    /// The cgroup levels that have a rule, for the family's programs.
    pub fn levels(&self) -> Levels {
        Levels::from_users(&self.level_users)
    }

    /// The cgroup ids with a rule.
    pub fn targets(&self) -> Vec<u64> {
        self.written.iter().map(|(id, _)| *id).collect()
    }

    /// Write `rule` for the attack's target. One rule per target and
    /// family: the insert is `BPF_NOEXIST`, so a second one is refused by
    /// the kernel itself, and said so. The caller publishes [`Self::levels`].
    pub fn insert(&mut self, ebpf: &mut Ebpf, attack: &Attack, rule: &R) -> Result<()> {
        let id = attack.target.id;
        let mut map: HashMap<&mut MapData, u64, R> = map_mut(ebpf, self.rules)?;
        match map.insert(&id, rule, BPF_NOEXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Error::invalid(format!("{} already has {}", attack.target, self.taken)));
            }
            Err(e) => return Err(Error::kernel(format!("writing the rule for {}", attack.target), e)),
        }
        self.level_users[attack.target.level as usize] += 1;
        self.written.push((id, attack.id.clone()));
        Ok(())
    }

    /// Delete the rule this attack wrote for its target (the fault is
    /// inert from the moment it is gone); whether there was one. A rule of
    /// another attack on the same target stays. When there was one, the
    /// caller publishes [`Self::levels`].
    pub fn remove(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<bool> {
        let id = attack.target.id;
        let Some(at) = self.written.iter().position(|(t, owner)| *t == id && *owner == attack.id) else {
            return Ok(false);
        };
        let mut map: HashMap<&mut MapData, u64, R> = map_mut(ebpf, self.rules)?;
        if map.remove(&id).is_err() {
            return Ok(false);
        }
        let users = &mut self.level_users[attack.target.level as usize];
        *users = users.saturating_sub(1);
        self.written.remove(at);
        Ok(true)
    }

    /// Zero the counters of `slot` on every CPU, before a new attack uses it.
    pub fn reset_counters(&self, ebpf: &mut Ebpf, slot: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| Error::kernel("counting CPUs", e))?;
        let mut map: PerCpuArray<&mut MapData, C> = map_mut(ebpf, self.counters)?;
        let zeros = PerCpuValues::try_from(vec![C::default(); cpus.get() as usize])
            .map_err(|e| Error::kernel("resetting counters", e))?;
        map.set(slot, zeros, 0).map_err(|e| Error::kernel("resetting counters", e))
    }

    /// The counters of `slot`, summed over CPUs.
    pub fn counters(&self, ebpf: &Ebpf, slot: u32) -> Result<C> {
        let map: PerCpuArray<&MapData, C> = map(ebpf, self.counters)?;
        let values = map.get(&slot, 0).map_err(|e| Error::kernel("reading counters", e))?;
        let mut sum = C::default();
        for cpu in values.iter() {
            for (s, v) in fields_mut(&mut sum).iter_mut().zip(fields(cpu)) {
                *s += v;
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use chaos_abi::{clock::ClockCounters, dns::DnsCounters, io::IoCounters, net::NetCounters};

    use super::*;

    /// Every field of a counter struct has a name (or `-`), and each name
    /// reads its own field: a field added to the ABI without a name here,
    /// or names out of order, fail this.
    fn names_fit<C: CounterFields>(names: &'static str, set: impl Fn(&mut C, u64), field: &str) {
        assert_eq!(names.split_whitespace().count(), size_of::<C>() / 8, "{names}");
        let mut c = C::default();
        set(&mut c, 7);
        let named = named(&c, names);
        assert_eq!(named.get(field), Some(&7), "{field} in {names}");
        assert_eq!(named.values().sum::<u64>(), 7, "only {field} is set");
    }

    /// A start refused because its target already has a rule (another
    /// attack's) rolls back without deleting that rule; its owner's stop
    /// does delete it. Real maps: the fault object's, loaded into the
    /// kernel (no program is attached).
    #[test]
    #[ignore = "needs root (creates BPF maps); ./x test runs it"]
    fn only_the_owner_removes_a_rule() {
        use std::time::Duration;

        use chaos_abi::net::NetRule;

        use crate::{
            faults::{Fault, NetLoss},
            targets::Target,
        };
        let mut ebpf =
            crate::ebpf::load_faults(&Default::default()).expect("loading the fault object (as root)");
        let mut table: RuleTable<NetRule, NetCounters> =
            RuleTable::new(chaos_abi::net::RULES, chaos_abi::net::COUNTERS, "a network fault");
        let attack = |id: &str| Attack {
            id: id.into(),
            fault: Fault::NetLoss(NetLoss {
                percent: "5".parse().unwrap(),
                burst: None,
                filter: Default::default(),
                interfaces: Vec::new(),
            }),
            target: Target { path: "/sys/fs/cgroup/x".into(), id: u64::MAX - 7, level: 1, workload: None },
            duration: Duration::from_secs(1),
        };
        let (first, second) = (attack("net-loss-1"), attack("net-loss-2"));
        table.insert(&mut ebpf, &first, &NetRule::default()).unwrap();
        let refused = table.insert(&mut ebpf, &second, &NetRule::default()).unwrap_err();
        assert!(refused.to_string().contains("already has a network fault"), "{refused}");
        assert!(!table.remove(&mut ebpf, &second).unwrap(), "the refused start removed the rule");
        assert_eq!(table.targets(), [u64::MAX - 7]);
        assert!(table.remove(&mut ebpf, &first).unwrap(), "the owner could not remove its rule");
        assert!(table.targets().is_empty());
        assert_eq!(table.levels(), Levels::default());
    }

    #[test]
    fn counter_names_follow_the_abi() {
        use super::super::{clock, dns, io, net};
        names_fit::<NetCounters>(net::COUNTER_NAMES, |c, v| c.egress_copy_failed = v, "egress_copy_failed");
        names_fit::<NetCounters>(net::COUNTER_NAMES, |c, v| c.ingress_dropped = v, "ingress_dropped");
        names_fit::<IoCounters>(io::COUNTER_NAMES, |c, v| c.failed[3] = v, "readdir_failed");
        names_fit::<IoCounters>(io::COUNTER_NAMES, |c, v| c.unresolved = v, "unresolved");
        names_fit::<ClockCounters>(clock::COUNTER_NAMES, |c, v| c.write_failed = v, "write_failed");
        names_fit::<ClockCounters>(clock::COUNTER_NAMES, |c, v| c.libc_shifted = v, "libc_shifted");
        names_fit::<DnsCounters>(dns::COUNTER_NAMES, |c, v| c.answered = v, "answered");
        names_fit::<DnsCounters>(dns::COUNTER_NAMES, |c, v| c.unparsed = v, "unparsed");
    }
}

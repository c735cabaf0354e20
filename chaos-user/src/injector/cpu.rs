//! The cpu-starve part of the injector: no maps, no programs, no links.
//! An attack writes a quota to the target's `cpu.max`, in the target's own
//! period, and writes back the value it found when it ends; the record,
//! the guardian and the order of a start are `super::guarded`'s.
//!
//! Counters come from the target's `cpu.stat` (kernel/sched/core.c,
//! `cpu_extra_stat_show`): periods (`nr_periods`, matched), throttled
//! periods (`nr_throttled`, injected), time throttled and CPU time used,
//! each counted from the attack's start.

use std::{collections::HashMap, io, path::Path, sync::Arc};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    guarded::{self, Limit, Reading, Readings},
};
use crate::{
    attack::Attack,
    controls::Control,
    counters::Counters,
    error::{Error, Result},
    faults::{CpuStarve, cpu::format_cpus},
    plan::CpuMechanism,
};

const CPU_MAX: &str = "cpu.max";
/// The kernel's bounds on a period (kernel/sched/core.c:
/// `min_cfs_quota_period` 1 ms, `max_cfs_quota_period` 1 s) and the least
/// quota (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

/// `cpu.stat`'s bandwidth fields, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stat {
    usage_usec: u64,
    nr_periods: u64,
    nr_throttled: u64,
    throttled_usec: u64,
}

impl Reading for Stat {
    fn read(cgroup: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(cgroup.join("cpu.stat")).unwrap_or_default())
    }

    fn since(&self, start: &Self) -> Self {
        Self {
            usage_usec: self.usage_usec.saturating_sub(start.usage_usec),
            nr_periods: self.nr_periods.saturating_sub(start.nr_periods),
            nr_throttled: self.nr_throttled.saturating_sub(start.nr_throttled),
            throttled_usec: self.throttled_usec.saturating_sub(start.throttled_usec),
        }
    }
}

impl Stat {
    fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(key), Some(Ok(v))) = (f.next(), f.next().map(str::parse::<u64>)) else { continue };
            match key {
                "usage_usec" => s.usage_usec = v,
                "nr_periods" => s.nr_periods = v,
                "nr_throttled" => s.nr_throttled = v,
                "throttled_usec" => s.throttled_usec = v,
                _ => {}
            }
        }
        s
    }
}

/// An attack's controls and counters.
pub(super) type Handle = Limit<Stat>;

#[derive(Default)]
pub struct Cpu {
    tallies: HashMap<u32, Arc<Readings<Stat>>>,
}

impl FamilyInjector for Cpu {
    type Fault = CpuStarve;
    type Mechanism = CpuMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        let control = preflight(attack, fault)?;
        let begun = handle.begin(shared, start, vec![control]);
        self.tallies.insert(slot, Arc::clone(&handle.tally));
        begun
    }

    /// The limit before written back: inert from then; then the guardian
    /// is told it may go, and the record closed.
    fn stop(&mut self, shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        handle.stop(shared, "cpu-starve")
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some(t) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let s = t.now();
        let detail = [
            ("throttled_ms", s.throttled_usec / 1000),
            ("usage_ms", s.usage_usec / 1000),
            ("guardian_lost", t.guardian_lost()),
        ]
        .into_iter()
        .collect();
        Ok(Counters { matched: s.nr_periods, injected: s.nr_throttled, expired: 0, detail })
    }
}

/// The target's `cpu.max` as it is, to be set to the fault's quota in the
/// target's own period; refused (exit 3, with the fix) where it cannot or
/// must not be. Run before an experiment begins and again at the start.
pub(super) fn preflight(attack: &Attack, fault: &CpuStarve) -> Result<Control> {
    let target = &attack.target;
    guarded::refuse_own(&target.path, "cpu-starve", CPU_MAX)?;
    // Read first with the value unknown; the quota needs the period.
    let found = Control::read(&target.path, target.id, CPU_MAX, "").map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            guarded::not_enabled(&target.path, "cpu", CPU_MAX, "CPUQuota= or CPUWeight=", e)
        } else {
            Error::kernel(format!("reading {CPU_MAX} of {target}"), e)
        }
    })?;
    let (quota, period) = parse_max(&found.previous).ok_or_else(|| {
        Error::kernel(
            format!("reading {CPU_MAX} of {target}"),
            io::Error::other(format!("{:?} is not `QUOTA PERIOD`", found.previous)),
        )
    })?;
    let want = fault.quota_us(period);
    if want < MIN_QUOTA_US {
        return Err(Error::invalid(format!(
            "--cpus {} is {want} µs of {target}'s {period} µs period, below the kernel's least quota of \
             {MIN_QUOTA_US} µs: ask for more, or lengthen the target's period (the second number of its \
             {CPU_MAX})",
            format_cpus(fault.millicpus)
        )));
    }
    if let Some(quota) = quota
        && quota <= want
    {
        return Err(Error::invalid(format!(
            "{target} is limited to {} CPUs already ({CPU_MAX} is {:?}), no more than --cpus {}: the attack \
             would loosen its limit; ask for less",
            format_cpus(u32::try_from(quota * 1000 / period.max(1)).unwrap_or(u32::MAX)),
            found.previous,
            format_cpus(fault.millicpus)
        )));
    }
    Ok(Control { set: format!("{want} {period}"), ..found })
}

/// `cpu.max`'s value: the quota (`None` for `max`) and the period, in µs.
fn parse_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut f = text.split_whitespace();
    let quota = match f.next()? {
        "max" => None,
        q => Some(q.parse().ok()?),
    };
    let period = f.next()?.parse().ok().filter(|p| *p > 0)?;
    f.next().is_none().then_some((quota, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_and_cpu_stat_read_as_the_kernel_writes_them() {
        assert_eq!(parse_max("max 100000"), Some((None, 100_000)));
        assert_eq!(parse_max("20000 100000"), Some((Some(20_000), 100_000)));
        assert_eq!(parse_max("max"), None);
        assert_eq!(parse_max("max 0"), None);
        assert_eq!(parse_max("1 2 3"), None);
        let s = Stat::parse(
            "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 30\nnr_throttled 20\nthrottled_usec \
             1600000\nnr_bursts 0\n",
        );
        assert_eq!(s, Stat { usage_usec: 5000, nr_periods: 30, nr_throttled: 20, throttled_usec: 1_600_000 });
        let later = Stat { usage_usec: 9000, nr_periods: 40, nr_throttled: 29, throttled_usec: 2_000_000 };
        assert_eq!(
            later.since(&s),
            Stat { usage_usec: 4000, nr_periods: 10, nr_throttled: 9, throttled_usec: 400_000 }
        );
    }
}

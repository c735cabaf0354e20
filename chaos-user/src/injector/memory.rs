//! The memory-pressure part of the injector: no maps, no programs, no
//! links. An attack writes the boundary to the target's `memory.high` and
//! writes back the value it found when it ends; the record, the guardian
//! and the order of a start are `super::guarded`'s.
//!
//! Counters come from the target's own files, each counted from the
//! attack's start: `memory.events`' `high` (mm/memcontrol.c counts each
//! time a charge finds the cgroup over its boundary), `memory.pressure`
//! (PSI, kernel/sched/psi.c: the time some or all of the target's tasks
//! stalled on memory, in µs) and `memory.stat`'s `pgsteal` (pages
//! reclaimed from it).

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
    faults::{MemoryPressure, memory::format_bytes},
    plan::MemoryMechanism,
};

const HIGH: &str = "memory.high";

/// What the target's files say, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stat {
    high_events: u64,
    some_us: u64,
    full_us: u64,
    pgsteal: u64,
}

impl Reading for Stat {
    fn read(cgroup: &Path) -> Self {
        let file = |name: &str| std::fs::read_to_string(cgroup.join(name)).unwrap_or_default();
        let (some_us, full_us) = guarded::pressure(&file("memory.pressure"));
        Self {
            high_events: field(&file("memory.events"), "high"),
            some_us,
            full_us,
            pgsteal: field(&file("memory.stat"), "pgsteal"),
        }
    }

    fn since(&self, start: &Self) -> Self {
        Self {
            high_events: self.high_events.saturating_sub(start.high_events),
            some_us: self.some_us.saturating_sub(start.some_us),
            full_us: self.full_us.saturating_sub(start.full_us),
            pgsteal: self.pgsteal.saturating_sub(start.pgsteal),
        }
    }
}

/// The value of `key` in a flat keyed file (`key value` lines).
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(key)).then(|| f.next()?.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// An attack's controls and counters.
pub(super) type Handle = Limit<Stat>;

#[derive(Default)]
pub struct Memory {
    tallies: HashMap<u32, Arc<Readings<Stat>>>,
}

impl FamilyInjector for Memory {
    type Fault = MemoryPressure;
    type Mechanism = MemoryMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        let control = preflight(attack, fault)?;
        let begun = handle.begin(shared, start, vec![control]);
        self.tallies.insert(slot, Arc::clone(&handle.tally));
        begun
    }

    /// The boundary before written back: inert from then; then the guardian
    /// is told it may go, and the record closed.
    fn stop(&mut self, shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        handle.stop(shared, "memory-pressure")
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some(t) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let s = t.now();
        let page_kib = page_size() / 1024;
        let detail = [
            ("stall_ms", s.some_us / 1000),
            ("full_stall_ms", s.full_us / 1000),
            ("reclaimed_kib", s.pgsteal * page_kib),
            ("guardian_lost", t.guardian_lost()),
        ]
        .into_iter()
        .collect();
        Ok(Counters { matched: s.high_events, injected: s.high_events, expired: 0, detail })
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1024)
}

/// The target's `memory.high` as it is, to be set to the fault's boundary
/// (in whole pages, as the kernel keeps it, so that it reads back as
/// written); refused (exit 3, with the fix) where it cannot or must not
/// be. Run before an experiment begins and again at the start.
pub(super) fn preflight(attack: &Attack, fault: &MemoryPressure) -> Result<Control> {
    let target = &attack.target;
    guarded::refuse_own(&target.path, "memory-pressure", HIGH)?;
    let found = Control::read(&target.path, target.id, HIGH, "").map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            guarded::not_enabled(&target.path, "memory", HIGH, "MemoryAccounting=yes", e)
        } else {
            Error::kernel(format!("reading {HIGH} of {target}"), e)
        }
    })?;
    let read = |file: &str| -> Result<Option<u64>> {
        let text = std::fs::read_to_string(target.path.join(file))
            .map_err(|e| Error::kernel(format!("reading {file} of {target}"), e))?;
        let text = text.trim();
        if text == "max" {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            Error::kernel(
                format!("reading {file} of {target}"),
                io::Error::other(format!("{text:?} is no number")),
            )
        })
    };
    let current = read("memory.current")?.unwrap_or(0);
    let page = page_size();
    let want = fault.bytes(current) / page * page;
    if want < crate::faults::memory::MIN_BYTES {
        return Err(Error::invalid(format!(
            "--high of what {target} uses ({}) is {}, less than {}: give --high as a size, or wait until the \
             target runs",
            format_bytes(current),
            format_bytes(want),
            format_bytes(crate::faults::memory::MIN_BYTES)
        )));
    }
    if let Some(max) = read("memory.max")?
        && want >= max
    {
        return Err(Error::invalid(format!(
            "--high {} is not below {target}'s memory.max ({}): the OOM killer would act before any \
             pressure; ask for less",
            format_bytes(want),
            format_bytes(max)
        )));
    }
    if let Ok(high) = found.previous.parse::<u64>()
        && high <= want
    {
        return Err(Error::invalid(format!(
            "{target}'s {HIGH} is {} already, no more than --high {}: the attack would loosen it; ask for less",
            format_bytes(high),
            format_bytes(want)
        )));
    }
    Ok(Control { set: want.to_string(), ..found })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_read_as_the_kernel_writes_them() {
        let events = "low 0\nhigh 17\nmax 0\noom 0\noom_kill 0\n";
        assert_eq!(field(events, "high"), 17);
        assert_eq!(field(events, "nope"), 0);
        let psi = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 \
                   total=789\n";
        assert_eq!(guarded::pressure(psi), (123_456, 789));
        assert_eq!(guarded::pressure(""), (0, 0));
        let a = Stat { high_events: 3, some_us: 10, full_us: 5, pgsteal: 100 };
        let b = Stat { high_events: 7, some_us: 30, full_us: 5, pgsteal: 250 };
        assert_eq!(b.since(&a), Stat { high_events: 4, some_us: 20, full_us: 0, pgsteal: 150 });
    }
}

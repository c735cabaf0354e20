//! The pause part of the injector: no maps, no programs, no links. An
//! attack writes `1` to the target's `cgroup.freeze` (and, in cycles, `0`
//! and `1` again from a thread of its own), and writes back the value it
//! found when it ends.
//!
//! The kernel holds no deadline for a frozen cgroup: the record, the
//! guardian and the order of a start are `super::guarded`'s. Its thread
//! runs the cycles.

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    guarded::{self, Acts, Guarded},
};
use crate::{
    attack::Attack,
    controls::Control,
    counters::Counters,
    error::{Error, Result},
    faults::Pause as PauseFault,
    plan::PauseMechanism,
    timebase::monotonic_ns,
};

/// The control file, and the value that freezes.
const FREEZE: &str = "cgroup.freeze";
const FROZEN: &str = "1";
/// How long a start waits for `cgroup.events` to say `frozen 1` before it
/// reports the attack in force anyway (a task in an uninterruptible sleep,
/// e.g. on a slow disk, stops only when the sleep ends).
const FREEZE_WAIT: Duration = Duration::from_secs(2);

/// What an attack counted. Kept after it stops, for its last counters,
/// until its slot is reused.
#[derive(Debug, Default)]
struct Tally {
    freezes: AtomicU64,
    /// Frozen time of the freezes that ended (from chaos's writes).
    frozen_ns: AtomicU64,
    /// When the current freeze began (CLOCK_MONOTONIC), 0 when thawed.
    frozen_since: AtomicU64,
    /// 1 when the guardian died before the end (the target was thawed).
    guardian_lost: AtomicU64,
}

impl Tally {
    fn froze(&self) {
        self.freezes.fetch_add(1, Relaxed);
        self.frozen_since.store(monotonic_ns(), Relaxed);
    }

    fn thawed(&self) {
        let since = self.frozen_since.swap(0, Relaxed);
        if since != 0 {
            self.frozen_ns.fetch_add(monotonic_ns().saturating_sub(since), Relaxed);
        }
    }

    fn frozen_ms(&self) -> u64 {
        let since = self.frozen_since.load(Relaxed);
        let current = if since == 0 { 0 } else { monotonic_ns().saturating_sub(since) };
        (self.frozen_ns.load(Relaxed) + current) / 1_000_000
    }
}

/// A running pause: its control, guardian and thread, and its tally.
#[derive(Debug, Default)]
pub struct Handle {
    guarded: Guarded,
    tally: Arc<Tally>,
}

#[derive(Default)]
pub struct Pause {
    tallies: HashMap<u32, Arc<Tally>>,
}

impl FamilyInjector for Pause {
    type Fault = PauseFault;
    type Mechanism = PauseMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        let control = preflight(attack)?;
        handle.tally = Arc::new(Tally::default());
        self.tallies.insert(slot, Arc::clone(&handle.tally));
        let deadline_ns = handle.guarded.arm(shared, start, vec![control.clone()])?;
        handle.guarded.write(attack)?;
        let started = Instant::now();
        handle.tally.froze();
        wait_frozen(&attack.target.path, FREEZE_WAIT);
        let cycles = Cycles {
            fault: *fault,
            control,
            tally: Arc::clone(&handle.tally),
            started,
            frozen_since: Some(started),
            period: 0,
        };
        handle.guarded.watch(deadline_ns, cycles)
    }

    /// Thaw (the value before written back): inert from then; then the
    /// guardian is told it may go, and the record closed.
    fn stop(&mut self, shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        let Handle { guarded, tally } = handle;
        let stopping = guarded.release(shared, "pause");
        tally.thawed();
        stopping
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some(t) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let detail = [("frozen_ms", t.frozen_ms()), ("guardian_lost", t.guardian_lost.load(Relaxed))]
            .into_iter()
            .collect();
        let freezes = t.freezes.load(Relaxed);
        Ok(Counters { matched: freezes, injected: freezes, expired: 0, detail })
    }
}

/// The target's freezer, as it is before the attack; refused (exit 3, with
/// the fix) where it cannot or must not be frozen. Run before an
/// experiment begins (`injector::preflight`) and again at the start.
pub(super) fn preflight(attack: &Attack) -> Result<Control> {
    let target = &attack.target;
    guarded::refuse_own(&target.path, "pause", FREEZE)?;
    let control = Control::read(&target.path, target.id, FREEZE, FROZEN).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::invalid(format!(
                "{target} has no {FREEZE} (cgroup v1 has no such file): pause a cgroup of a cgroup v2 \
                 hierarchy ({e})"
            ))
        } else {
            Error::kernel(format!("reading {FREEZE} of {target}"), e)
        }
    })?;
    if control.previous == FROZEN {
        return Err(Error::invalid(format!(
            "{target} is frozen already ({FREEZE} is 1): not chaos's doing, so not chaos's to thaw; thaw it \
             (`echo 0 > {}`) or choose another target",
            target.path.join(FREEZE).display()
        )));
    }
    Ok(control)
}

/// Wait (at most `within`) until `cgroup.events` says the cgroup is frozen.
fn wait_frozen(cgroup: &Path, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l.trim() == "frozen 1") {
            return;
        }
        if Instant::now() >= until {
            tracing::warn!(
                "pause: {} is not frozen yet after {within:?} (a task in an uninterruptible sleep stops when \
                 the sleep ends)",
                cgroup.display()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A pause's cycles: each freeze lasts its whole `--for` from when it was
/// written, however late a loaded machine wakes the thread: frozen at the
/// start, then at the first wake-up in each later period.
struct Cycles {
    fault: PauseFault,
    control: Control,
    tally: Arc<Tally>,
    started: Instant,
    /// When the current freeze was written; `None` while thawed.
    frozen_since: Option<Instant>,
    /// The period of the latest freeze (0: the first).
    period: u128,
}

impl Acts for Cycles {
    fn due(&mut self) -> Option<Duration> {
        let c = self.fault.cycle?;
        let now = Instant::now();
        let p = now.duration_since(self.started).as_nanos() / c.every.as_nanos().max(1);
        let (value, what) = match self.frozen_since {
            Some(since) if now >= since + c.frozen => (self.control.previous.as_str(), "thawing"),
            None if p > self.period => (self.control.set.as_str(), "freezing"),
            _ => ("", ""),
        };
        if !value.is_empty() {
            match self.control.write(value) {
                Ok(()) if value == self.control.set => {
                    self.tally.froze();
                    (self.frozen_since, self.period) = (Some(Instant::now()), p);
                }
                Ok(()) => {
                    self.tally.thawed();
                    self.frozen_since = None;
                }
                Err(e) => tracing::warn!("pause: {what} {}: {e}", self.control.cgroup.display()),
            }
        }
        Some(match self.frozen_since {
            Some(since) => (since + c.frozen).saturating_duration_since(Instant::now()),
            None => {
                let start = c.every.as_nanos() * (self.period + 1);
                let at = self.started + Duration::from_nanos(u64::try_from(start).unwrap_or(u64::MAX));
                at.saturating_duration_since(Instant::now())
            }
        })
    }

    fn guardian_lost(&mut self) {
        self.tally.guardian_lost.store(1, Relaxed);
        self.tally.thawed();
    }
}

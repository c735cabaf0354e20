//! The pause part of the injector: no maps, no programs, no links. An
//! attack writes `1` to the target's `cgroup.freeze` (and, in cycles, `0`
//! and `1` again from a thread of its own), and writes back the value it
//! found when it ends.
//!
//! The kernel holds no deadline for a frozen cgroup, so the order of a
//! start is: the value before recorded in the state file (for `chaos
//! recover`), the deadline fixed, the guardian started and holding the
//! same record (crate::guardian), and only then the freeze. The thread
//! also watches the guardian: if it dies, the target is thawed at once.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
};
use crate::{
    attack::Attack,
    controls::{Control, Restored},
    counters::Counters,
    error::{Error, Result},
    faults::Pause as PauseFault,
    guardian::{Guardian, Instructions},
    plan::PauseMechanism,
    state::{Leftover, Record},
    targets::CgroupFs,
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

/// A running pause: its record, its guardian and its thread.
#[derive(Debug, Default)]
pub struct Handle {
    control: Option<Control>,
    recorded: bool,
    guardian: Option<Guardian>,
    thread: Option<(OwnedFd, JoinHandle<()>)>,
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
        let target = &attack.target;
        let control = preflight(attack)?;
        shared.state.append(&Record::Leftover(Leftover::CgroupControl(control.clone())))?;
        handle.recorded = true;
        handle.control = Some(control.clone());
        handle.tally = Arc::new(Tally::default());
        self.tallies.insert(slot, Arc::clone(&handle.tally));
        let instructions = Instructions { attack: attack.id.clone(), controls: vec![control.clone()] };
        let guardian = handle.guardian.insert(
            Guardian::spawn(&instructions).map_err(|e| Error::kernel("starting the pause's guardian", e))?,
        );
        let guardian_fd = guardian.pidfd();
        // The guardian is ready (starting it takes a second on an emulated
        // CPU): the attack's time runs from here, as a rule's from its
        // write.
        let deadline_ns = start.deadline_from_now();
        guardian.deadline(deadline_ns).map_err(|e| Error::kernel("telling the guardian the deadline", e))?;
        control.apply().map_err(|e| Error::kernel(format!("freezing {target}"), e))?;
        let started = Instant::now();
        handle.tally.froze();
        wait_frozen(&target.path, FREEZE_WAIT);
        let (stop_rd, stop_wr) = pipe().map_err(|e| Error::kernel("a pipe for the pause's thread", e))?;
        let (fault, tally) = (*fault, Arc::clone(&handle.tally));
        let thread = std::thread::Builder::new()
            .name("chaos-pause".into())
            .spawn(move || {
                cycle(&fault, &control, &tally, Times { started, deadline_ns }, stop_rd, guardian_fd);
            })
            .map_err(|e| Error::kernel("starting the pause's thread", e))?;
        handle.thread = Some((stop_wr, thread));
        Ok(())
    }

    /// Thaw (the value before written back): inert from then; then the
    /// guardian is told it may go, and the record closed.
    fn stop(&mut self, shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        let Handle { control, recorded, guardian, thread, tally } = handle;
        if let Some((stop, thread)) = thread {
            drop(stop); // the thread's poll sees the pipe's end
            let _ = thread.join();
        }
        let Some(control) = control else { return (Ok(Instant::now()), Ok(())) };
        let restored = control.restore();
        let inert = Instant::now();
        tally.thawed();
        let restored = match restored {
            Ok(Restored::Restored | Restored::AlreadyBack | Restored::Gone(_)) => Ok(()),
            Ok(Restored::Changed(why)) => {
                tracing::warn!("pause: {why}");
                Ok(())
            }
            Err(e) => Err(Error::kernel(format!("thawing {}", control.cgroup.display()), e)),
        };
        let released = match restored {
            // Not `done`: the guardian, dropped here, reads its pipe's end
            // and tries the restore itself; the record stays for `chaos
            // recover`.
            Err(e) => Err(e),
            Ok(()) => {
                if let Some(g) = guardian
                    && let Err(e) = g.done()
                {
                    tracing::warn!("pause: the guardian: {e}");
                }
                if recorded {
                    shared.state.append(&Record::Removed(Leftover::CgroupControl(control)))
                } else {
                    Ok(())
                }
            }
        };
        match released {
            Ok(()) => (Ok(inert), Ok(())),
            Err(e) => (Err(e), Ok(())),
        }
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
    refuse_own(&target.path)?;
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

/// Refuse what cannot or must not be frozen, whatever `--allow-host` says:
/// the root (the kernel has no `cgroup.freeze` there), and chaos's own
/// cgroup or one above it (chaos and its guardian would freeze, nobody left
/// to thaw).
fn refuse_own(target: &Path) -> Result<()> {
    let fs = CgroupFs::discover()?;
    if target == fs.mount {
        return Err(Error::invalid(format!(
            "{} is the root cgroup, which has no {FREEZE}: the kernel freezes only cgroups below the root; \
             pause a cgroup below it",
            target.display()
        )));
    }
    let own = fs.cgroup_of(Path::new("/proc"), std::process::id() as i32)?;
    if own.starts_with(target) {
        return Err(Error::invalid(format!(
            "cgroup {} holds chaos itself ({}): freezing it would freeze chaos and its guardian, and nothing \
             would thaw it; run chaos outside the target (e.g. `systemd-run --scope chaos ...`)",
            target.display(),
            own.display()
        )));
    }
    Ok(())
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

#[derive(Clone, Copy)]
struct Times {
    started: Instant,
    deadline_ns: u64,
}

/// The attack's thread: the cycles' freezes and thaws, until the stop (the
/// pipe's end), the deadline, or the guardian's death (then thaw at once).
fn cycle(fault: &PauseFault, control: &Control, tally: &Tally, t: Times, stop: OwnedFd, guardian: RawFd) {
    // Each freeze lasts its whole `--for` from when it was written, however
    // late a loaded machine wakes this thread: frozen at the start, then at
    // the first wake-up in each later period.
    let mut frozen_since = Some(t.started);
    let mut period = 0u128;
    loop {
        let every = fault.cycle.map(|c| (c.every, c.frozen));
        if let Some((every, frozen)) = every {
            let now = Instant::now();
            let p = now.duration_since(t.started).as_nanos() / every.as_nanos().max(1);
            let (value, what) = match frozen_since {
                Some(since) if now >= since + frozen => (control.previous.as_str(), "thawing"),
                None if p > period => (control.set.as_str(), "freezing"),
                _ => ("", ""),
            };
            if !value.is_empty() {
                match control.write(value) {
                    Ok(()) if value == control.set => {
                        tally.froze();
                        (frozen_since, period) = (Some(Instant::now()), p);
                    }
                    Ok(()) => {
                        tally.thawed();
                        frozen_since = None;
                    }
                    Err(e) => tracing::warn!("pause: {what} {}: {e}", control.cgroup.display()),
                }
            }
        }
        let left = Duration::from_nanos(t.deadline_ns.saturating_sub(monotonic_ns()));
        let next = fault.cycle.map(|c| match frozen_since {
            Some(since) => (since + c.frozen).saturating_duration_since(Instant::now()),
            None => {
                let start = c.every.as_nanos() * (period + 1);
                let at = t.started + Duration::from_nanos(u64::try_from(start).unwrap_or(u64::MAX));
                at.saturating_duration_since(Instant::now())
            }
        });
        let wait = next.map_or(left, |n| n.min(left));
        let mut fds = [
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: guardian, events: libc::POLLIN, revents: 0 },
        ];
        let ms = i32::try_from(wait.as_millis() + 1).unwrap_or(i32::MAX);
        // SAFETY: poll on two pollfds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("pause: the thread's poll failed: {}", io::Error::last_os_error());
            return;
        }
        if fds[0].revents != 0 {
            return; // stopping: `stop` thaws
        }
        if fds[1].revents != 0 {
            if monotonic_ns() < t.deadline_ns {
                tally.guardian_lost.store(1, Relaxed);
                tracing::error!(
                    "pause: the guardian exited before the end; thawing {} now (nothing else would if chaos died)",
                    control.cgroup.display()
                );
                let _ = control.restore();
                tally.thawed();
            }
            return;
        }
        if monotonic_ns() >= t.deadline_ns {
            return; // the controller's stop thaws
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new fds, ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

//! What every fault on cgroup control files (`pause`, `cpu-starve`) holds
//! while it runs, and the order it is taken and given back in.
//!
//! The kernel holds no deadline for a frozen cgroup or a lowered limit, so
//! a start is, in this order: each control's value before recorded in the
//! state file (for `chaos recover`); the guardian started and holding the
//! same records (crate::guardian); the deadline fixed and told to it; and
//! only then the writes. A thread of the attack's own then watches the
//! guardian (restoring everything at once if it dies) and runs the
//! family's timed acts (pause's cycles). The stop restores every control,
//! newest first, tells the guardian it may go, and closes the records.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
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
    error::{Error, Result},
    guardian::{Guardian, Instructions},
    state::{Leftover, Record},
    targets::CgroupFs,
    timebase::monotonic_ns,
};

/// A family's timed acts, run on the attack's thread.
pub(super) trait Acts: Send + 'static {
    /// Called when the thread starts and each time it wakes up: do what is
    /// due, and say how long until it is due again (`None`: nothing more
    /// before the deadline).
    fn due(&mut self) -> Option<Duration> {
        None
    }

    /// The guardian died before the deadline; every control was just
    /// restored, and nothing more will be done.
    fn guardian_lost(&mut self);
}

/// A family's counters as the target's own files give them (`cpu.stat`,
/// `memory.events`, ...), counted from the attack's start.
pub(super) trait Reading: Clone + Default + Send + Sync + std::fmt::Debug + 'static {
    /// The files as they are now (what cannot be read counts 0).
    fn read(cgroup: &Path) -> Self;
    /// What changed since `start`.
    fn since(&self, start: &Self) -> Self;
}

/// What an attack counted: the reading at its start and, once it stopped,
/// at its stop (the counters stay the attack's, not the cgroup's later
/// life); and whether its guardian was lost.
#[derive(Debug, Default)]
pub(super) struct Readings<R> {
    cgroup: PathBuf,
    start: R,
    end: Mutex<Option<R>>,
    guardian_lost: AtomicU64,
}

impl<R: Reading> Readings<R> {
    pub fn new(cgroup: &Path) -> Self {
        Self { cgroup: cgroup.to_owned(), start: R::read(cgroup), ..Self::default() }
    }

    /// Since the start: until now, or until the stop.
    pub fn now(&self) -> R {
        let end = self.end.lock().unwrap_or_else(|e| e.into_inner()).clone();
        end.unwrap_or_else(|| R::read(&self.cgroup)).since(&self.start)
    }

    /// The attack stopped: the counters end here.
    pub fn close(&self) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if end.is_none() {
            *end = Some(R::read(&self.cgroup));
        }
    }

    /// 1 when the guardian died before the end, else 0.
    pub fn guardian_lost(&self) -> u64 {
        self.guardian_lost.load(Relaxed)
    }
}

/// The thread of a family with nothing timed to do: it watches the
/// guardian, and counts its loss.
pub(super) struct Watch<R>(pub Arc<Readings<R>>);

impl<R: Reading> Acts for Watch<R> {
    fn guardian_lost(&mut self) {
        self.0.guardian_lost.store(1, Relaxed);
        self.0.close();
    }
}

/// The handle of an attack that sets limits and counts from the target's
/// files, with nothing timed to do (cpu-starve, memory-pressure,
/// io-throttle): a family gives it its controls, and reads its counters
/// from `tally`.
#[derive(Debug, Default)]
pub(super) struct Limit<R> {
    guarded: Guarded,
    pub tally: Arc<Readings<R>>,
}

impl<R: Reading> Limit<R> {
    /// The counters' start, then the record, the guardian and the
    /// deadline, the writes, and the thread that watches the guardian.
    pub fn begin<F: FamilyInjector>(
        &mut self,
        shared: &mut Shared,
        start: &Start<'_, F>,
        controls: Vec<Control>,
    ) -> Result<()> {
        self.tally = Arc::new(Readings::new(&start.attack.target.path));
        let deadline_ns = self.guarded.arm(shared, start, controls)?;
        self.guarded.write(start.attack)?;
        self.guarded.watch(deadline_ns, Watch(Arc::clone(&self.tally)))
    }

    /// The values before written back (inert from then), the guardian told
    /// it may go, the records and the counters closed.
    pub fn stop(self, shared: &mut Shared, kind: &str) -> Stopping {
        let stopping = self.guarded.release(shared, kind);
        self.tally.close();
        stopping
    }
}

/// The controls of a running attack, their records and their guardian.
/// Filled as the start goes: on an error, [`Guarded::release`] gives back
/// exactly what was taken.
#[derive(Debug, Default)]
pub(super) struct Guarded {
    /// Recorded in the state file, in the order they are written.
    controls: Vec<Control>,
    /// How many of them were written (so far).
    written: usize,
    guardian: Option<Guardian>,
    thread: Option<(OwnedFd, JoinHandle<()>)>,
}

impl Guarded {
    /// Record `controls`, start their guardian and tell it the deadline,
    /// fixed now (the guardian takes about a second to start on an emulated
    /// CPU: the attack's time runs from here, as a rule's from its write).
    /// Nothing is written yet. Returns the deadline.
    pub fn arm<F: FamilyInjector>(
        &mut self,
        shared: &mut Shared,
        start: &Start<'_, F>,
        controls: Vec<Control>,
    ) -> Result<u64> {
        let kind = start.attack.fault.kind();
        for control in &controls {
            shared.state.append(&Record::Leftover(Leftover::CgroupControl(control.clone())))?;
            self.controls.push(control.clone());
        }
        let instructions = Instructions { attack: start.attack.id.clone(), controls };
        let guardian = self.guardian.insert(
            Guardian::spawn(&instructions)
                .map_err(|e| Error::kernel(format!("starting {kind}'s guardian"), e))?,
        );
        let deadline_ns = start.deadline_from_now();
        guardian.deadline(deadline_ns).map_err(|e| Error::kernel("telling the guardian the deadline", e))?;
        Ok(deadline_ns)
    }

    /// Write every control's value, in order.
    pub fn write(&mut self, attack: &Attack) -> Result<()> {
        for control in &self.controls {
            control.apply().map_err(|e| {
                Error::kernel(
                    format!("{} on {}: setting {}", attack.fault.kind(), attack.target, control.file),
                    e,
                )
            })?;
            self.written += 1;
        }
        Ok(())
    }

    /// Start the attack's thread: `acts` until the stop, the deadline, or
    /// the guardian's death (then every control restored at once).
    pub fn watch(&mut self, deadline_ns: u64, acts: impl Acts) -> Result<()> {
        let guardian = self
            .guardian
            .as_ref()
            .map(Guardian::pidfd)
            .ok_or_else(|| Error::invalid("no guardian to watch"))?;
        let (stop_rd, stop_wr) = pipe().map_err(|e| Error::kernel("a pipe for the attack's thread", e))?;
        let controls = self.controls.clone();
        let thread = std::thread::Builder::new()
            .name("chaos-guarded".into())
            .spawn(move || run(acts, &controls, deadline_ns, &stop_rd, guardian))
            .map_err(|e| Error::kernel("starting the attack's thread", e))?;
        self.thread = Some((stop_wr, thread));
        Ok(())
    }

    /// Stop the thread, restore every control written (newest first): the
    /// fault is inert from the returned instant. Then the guardian is told
    /// it may go and the records are closed — unless a restore failed: the
    /// guardian, dropped without `done`, then tries itself, and the record
    /// stays for `chaos recover`.
    pub fn release(self, shared: &mut Shared, kind: &str) -> Stopping {
        let Self { controls, written, guardian, thread } = self;
        if let Some((stop, thread)) = thread {
            drop(stop); // the thread's poll sees the pipe's end
            let _ = thread.join();
        }
        let mut failed = None;
        for control in controls[..written].iter().rev() {
            match control.restore() {
                Ok(Restored::Restored | Restored::AlreadyBack | Restored::Gone(_)) => {}
                Ok(Restored::Changed(why)) => tracing::warn!("{kind}: {why}"),
                Err(e) => {
                    failed.get_or_insert(Error::kernel(format!("{kind}: restoring {control}"), e));
                }
            }
        }
        let inert = Instant::now();
        if let Some(e) = failed {
            return (Err(e), Ok(()));
        }
        if let Some(g) = guardian
            && let Err(e) = g.done()
        {
            tracing::warn!("{kind}: the guardian: {e}");
        }
        for control in controls {
            if let Err(e) = shared.state.append(&Record::Removed(Leftover::CgroupControl(control))) {
                return (Err(e), Ok(()));
            }
        }
        (Ok(inert), Ok(()))
    }
}

/// Refuse, whatever `--allow-host` says, the targets whose controls chaos
/// must not change: the root (the kernel has no such files there), and
/// chaos's own cgroup or one above it (chaos and its guardian would be
/// frozen or starved with the target, and nothing might be left to
/// restore it).
pub(super) fn refuse_own(target: &Path, kind: &str, file: &str) -> Result<()> {
    let fs = CgroupFs::discover()?;
    if target == fs.mount {
        return Err(Error::invalid(format!(
            "{} is the root cgroup, which has no {file}: {kind} acts only on cgroups below the root; choose \
             one below it",
            target.display()
        )));
    }
    let own = fs.cgroup_of(Path::new("/proc"), std::process::id() as i32)?;
    if own.starts_with(target) {
        return Err(Error::invalid(format!(
            "cgroup {} holds chaos itself ({}): {kind} would act on chaos and its guardian too, and nothing \
             might be left to restore it; run chaos outside the target (e.g. `systemd-run --scope chaos ...`)",
            target.display(),
            own.display()
        )));
    }
    Ok(())
}

/// The attack's thread.
fn run(mut acts: impl Acts, controls: &[Control], deadline_ns: u64, stop: &OwnedFd, guardian: RawFd) {
    loop {
        let next = acts.due();
        let left = Duration::from_nanos(deadline_ns.saturating_sub(monotonic_ns()));
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
            tracing::error!("the attack's thread: poll failed: {}", io::Error::last_os_error());
            return;
        }
        if fds[0].revents != 0 {
            return; // stopping: `release` restores
        }
        if fds[1].revents != 0 {
            if monotonic_ns() < deadline_ns {
                tracing::error!(
                    "the guardian exited before the end; restoring {} now (nothing else would if chaos died)",
                    controls.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                );
                for control in controls.iter().rev() {
                    let _ = control.restore();
                }
                acts.guardian_lost();
            }
            return;
        }
        if monotonic_ns() >= deadline_ns {
            return; // the controller's stop restores
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

/// The refusal for a target without the control `file`: its parent does
/// not enable `controller` for its children, or has not got it itself;
/// with the fix (and `systemd`'s way where the parent is a unit).
pub(super) fn not_enabled(target: &Path, controller: &str, file: &str, systemd: &str, e: io::Error) -> Error {
    let parent = target.parent().unwrap_or(target);
    let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    if available.split_whitespace().any(|c| c == controller) {
        Error::invalid(format!(
            "{} has no {file}: the {controller} controller is not enabled for its parent's children; enable it \
             with `echo +{controller} > {}` (systemd: {systemd} on the parent unit) ({e})",
            target.display(),
            parent.join("cgroup.subtree_control").display()
        ))
    } else {
        Error::invalid(format!(
            "{} has no {file}: its parent {} does not have the {controller} controller either; enable it in \
             every cgroup above, from the root down (`echo +{controller} > .../cgroup.subtree_control`) ({e})",
            target.display(),
            parent.display()
        ))
    }
}

/// The `total=` of the `some` and `full` lines of a PSI file
/// (`memory.pressure`, `io.pressure`; kernel/sched/psi.c), in µs.
pub(super) fn pressure(text: &str) -> (u64, u64) {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total="))?.parse().ok())
            .unwrap_or(0)
    };
    (total("some "), total("full "))
}

//! The kill part of the injector: no maps, no programs, no links. An
//! attack is rounds: one when it starts, in the start itself (so that its
//! errors fail the start, and its signals are sent when the start event
//! says the fault is in force), then, with `--every`, one per interval
//! from a thread of its own until the deadline or the stop. The same
//! thread watches what follows each round, every 10 ms: when the killed
//! processes are gone from the target, and when a new process that the
//! round would have killed appears (a restart), or the cgroup goes away.
//!
//! Killing every process of a container often removes its cgroup: the
//! runtime deletes it when the container's init exits, and makes it again,
//! under the same path (the container's id) with a new cgroup id, when its
//! restart policy starts the container again; systemd does the same for a
//! unit it restarts. So a kill attack, unlike the others (see
//! `Fault::survives_its_cgroup`), goes on when its cgroup goes away: the
//! thread follows a cgroup made again at the same path (the name the user
//! gave), counts its first picked process as the restart, and the next
//! round kills there.
//!
//! A round signals the target without ever reaching outside it:
//! `cgroup.kill` acts on the target's own subtree (opened by path and
//! checked by id, crate::controls); a signal to one process goes through
//! a pidfd opened *before* the process's cgroup is checked, so that a pid
//! the kernel gave to another process meanwhile is either seen outside the
//! target (and left alone) or, if it was the victim, already dead (the
//! pidfd then answers ESRCH). Nothing of it outlives chaos: a kill needs
//! no undoing, and no round starts after the deadline.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    guarded,
};
use crate::{
    attack::Attack,
    controls,
    counters::Counters,
    error::{Error, Result},
    faults::{Kill as KillFault, kill::Victims},
    plan::KillMechanism,
    targets::{Target, pids_in_subtree},
    timebase::monotonic_ns,
};

/// How often the thread looks at the target after a round.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// What the rounds of one attack counted. Kept after the attack stops,
/// for its last counters, until its slot is reused.
#[derive(Debug, Default)]
struct Tally {
    rounds: AtomicU64,
    /// Processes a round picked, summed over rounds.
    matched: AtomicU64,
    signalled: AtomicU64,
    failed: AtomicU64,
    /// Rounds after which a process the round would have picked appeared.
    restarts: AtomicU64,
    /// From the latest restarted round to its new process.
    restart_ms: AtomicU64,
    /// From the latest round to the last of its processes gone.
    exited_ms: AtomicU64,
    /// Times the target cgroup went away: removed, or removed and made
    /// again under the same path.
    removed: AtomicU64,
}

/// The thread of an attack, and how to stop it at once.
struct Watcher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

#[derive(Debug, Default)]
pub struct Handle {
    watcher: Option<Watcher>,
}

#[derive(Default)]
pub struct Kill {
    tallies: HashMap<u32, Arc<Tally>>,
}

impl FamilyInjector for Kill {
    type Fault = KillFault;
    type Mechanism = KillMechanism;
    type Handle = Handle;

    fn begin(&mut self, _shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        preflight(attack)?;
        let tally = Arc::new(Tally::default());
        self.tallies.insert(slot, Arc::clone(&tally));
        let deadline_ns = start.deadline_from_now();
        let first = round(&attack.target, fault, deadline_ns, &tally)
            .map_err(|e| Error::kernel(format!("killing the processes of {}", attack.target), e))?;
        if first.killed.is_empty() {
            tracing::warn!("kill on {}: no process of the target matches (yet)", attack.target);
        }
        let (stop, stopped) = mpsc::channel();
        let (target, fault) = (attack.target.clone(), fault.clone());
        let thread = std::thread::Builder::new()
            .name("chaos-kill".into())
            .spawn(move || rounds(target, &fault, first, deadline_ns, &tally, &stopped))
            .map_err(|e| Error::kernel("starting the kill thread", e))?;
        handle.watcher = Some(Watcher { stop, thread });
        Ok(())
    }

    /// Stop the rounds: inert once the thread has returned (a round in
    /// progress finishes first).
    fn stop(&mut self, _shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        let Some(Watcher { stop, thread }) = handle.watcher else {
            return (Ok(Instant::now()), Ok(()));
        };
        let _ = stop.send(());
        let joined = thread
            .join()
            .map(|()| Instant::now())
            .map_err(|_| Error::kernel("stopping kill", anyhow::anyhow!("its thread panicked")));
        (joined, Ok(()))
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some(t) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let detail = [
            ("rounds", &t.rounds),
            ("restarts", &t.restarts),
            ("restart_ms", &t.restart_ms),
            ("exited_ms", &t.exited_ms),
            ("removed", &t.removed),
            ("failed_rounds", &t.failed),
        ]
        .into_iter()
        .map(|(name, n)| (name, n.load(Relaxed)))
        .collect();
        Ok(Counters {
            matched: t.matched.load(Relaxed),
            injected: t.signalled.load(Relaxed),
            expired: 0,
            detail,
        })
    }
}

/// Refuse what must not be killed, whatever `--allow-host` says: the root
/// cgroup, and chaos's own cgroup or one above it. Run before an
/// experiment begins and again at the start.
pub(super) fn preflight(attack: &Attack) -> Result<()> {
    guarded::refuse_own(&attack.target.path, "kill", "cgroup.kill")
}

/// One round, as it went: when, what it saw and signalled.
struct Round {
    at: Instant,
    /// Every process of the target when the round began.
    before: HashSet<i32>,
    /// The processes it signalled.
    killed: HashSet<i32>,
    /// Still watched: neither a restart nor the cgroup's end seen yet.
    watching: bool,
    /// Still some of `killed` in the target.
    exiting: bool,
    /// The target's cgroup is gone, not (yet) made again.
    gone: bool,
}

/// The rounds after the first, every `every` until the deadline or a
/// message on `stop`, and the watch after each.
fn rounds(
    mut target: Target,
    fault: &KillFault,
    first: Round,
    deadline_ns: u64,
    tally: &Tally,
    stop: &mpsc::Receiver<()>,
) {
    let mut last = first;
    let mut next = fault.every.map(|every| last.at + every);
    loop {
        let left = Duration::from_nanos(deadline_ns.saturating_sub(monotonic_ns()));
        let until_round = next.map(|n| n.saturating_duration_since(Instant::now()));
        let watch = (last.watching || last.exiting || last.gone).then_some(WATCH_EVERY);
        let wait = [Some(left), until_round, watch].into_iter().flatten().min().unwrap_or(left);
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Woken late (the process was stopped): past the deadline, done.
        if monotonic_ns() >= deadline_ns {
            return;
        }
        follow(&mut target, &mut last, tally);
        look(&target, fault, &mut last, tally);
        if let (Some(at), Some(every)) = (next, fault.every)
            && Instant::now() >= at
        {
            match round(&target, fault, deadline_ns, tally) {
                // A round while the cgroup is gone finds nothing, and the
                // removal is already counted.
                Ok(r) => last = Round { gone: last.gone, ..r },
                Err(e) => {
                    tally.failed.fetch_add(1, Relaxed);
                    tracing::warn!("kill on {target}: a round failed: {e}");
                }
            }
            // Fixed rate; a late round is followed by the next on time.
            next = Some((at + every).max(Instant::now()));
        }
    }
}

/// Whether the target's cgroup is still the one attacked: gone, or made
/// again under the same path with a new id, which `target` then takes (a
/// runtime's or systemd's restart: see the module's comment). Everything
/// in a cgroup made again is new, so the round's watch compares with
/// nothing.
fn follow(target: &mut Target, round: &mut Round, tally: &Tally) {
    use std::os::unix::fs::MetadataExt as _;
    let now =
        std::fs::metadata(target.path.join("cgroup.procs")).and_then(|_| std::fs::metadata(&target.path));
    let again = match now {
        Ok(m) if m.ino() == target.id => return,
        Ok(m) => Some(m.ino()),
        Err(_) if round.gone => return,
        Err(_) => None,
    };
    let ms = u64::try_from(round.at.elapsed().as_millis()).unwrap_or(u64::MAX);
    if !round.gone {
        tally.removed.fetch_add(1, Relaxed);
    }
    // A cgroup is removed only once it holds no process.
    if round.exiting {
        round.exiting = false;
        tally.exited_ms.store(ms, Relaxed);
    }
    match again {
        Some(id) => {
            tracing::info!(
                "kill on {target}: made again under the same path ({ms} ms after the round), new id {id}"
            );
            target.id = id;
            round.gone = false;
            round.before.clear();
        }
        None => {
            tracing::info!("kill on {target}: the cgroup is gone ({ms} ms after the round)");
            round.gone = true;
        }
    }
}

/// What followed `round` so far: its processes gone, a new one (a
/// restart).
fn look(target: &Target, fault: &KillFault, round: &mut Round, tally: &Tally) {
    if round.gone || (!round.watching && !round.exiting) {
        return;
    }
    let now: HashSet<i32> = pids_in_subtree(&target.path).into_iter().collect();
    let ms = u64::try_from(round.at.elapsed().as_millis()).unwrap_or(u64::MAX);
    if round.exiting && round.killed.iter().all(|p| !now.contains(p)) {
        round.exiting = false;
        tally.exited_ms.store(ms, Relaxed);
    }
    if round.watching {
        let new: Vec<i32> = now.difference(&round.before).copied().collect();
        if let Some(pid) = picked(fault, &new).first() {
            round.watching = false;
            tally.restarts.fetch_add(1, Relaxed);
            tally.restart_ms.store(ms, Relaxed);
            tracing::info!("kill on {target}: restarted {ms} ms after the round (a new process {pid})");
        }
    }
}

/// Signal the processes `fault` picks in the target, once. The deadline
/// is checked again right before each signal: a chaos stopped (SIGSTOP)
/// after the thread's own check and resumed past the deadline must not
/// kill (a 6.1 VM showed it, with the check in the thread alone).
fn round(target: &Target, fault: &KillFault, deadline_ns: u64, tally: &Tally) -> io::Result<Round> {
    let at = Instant::now();
    let live = || monotonic_ns() < deadline_ns;
    if !live() {
        return Ok(Round {
            at,
            before: HashSet::new(),
            killed: HashSet::new(),
            watching: false,
            exiting: false,
            gone: false,
        });
    }
    tally.rounds.fetch_add(1, Relaxed);
    let before: HashSet<i32> = pids_in_subtree(&target.path).into_iter().collect();
    let all: Vec<i32> = before.iter().copied().collect();
    let chosen = picked(fault, &all);
    tally.matched.fetch_add(chosen.len() as u64, Relaxed);
    let signal = fault.signal.number();
    let mut killed = HashSet::new();
    let whole = fault.victims == Victims::All && signal == libc::SIGKILL;
    // cgroup.kill: the whole subtree at once, forks racing with it included
    // (kernel/cgroup/cgroup.c, `cgroup_kill`). Absent before 5.14.
    if whole && target.path.join("cgroup.kill").exists() && live() {
        controls::write_once(&target.path, target.id, "cgroup.kill", "1")?;
        killed.extend(&chosen);
    } else {
        let mount = crate::targets::CgroupFs::discover().map_err(io::Error::other)?.mount;
        for pid in chosen.iter().take_while(|_| live()) {
            match signal_in(&mount, &target.path, *pid, signal) {
                Ok(true) => {
                    killed.insert(*pid);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("kill on {target}: process {pid}: {e}"),
            }
        }
    }
    tally.signalled.fetch_add(killed.len() as u64, Relaxed);
    // Nothing to watch after a round that signalled nothing.
    let some = !killed.is_empty();
    Ok(Round { at, before, killed, watching: some, exiting: some, gone: false })
}

/// Of `pids` (the target's), those `fault` picks.
fn picked(fault: &KillFault, pids: &[i32]) -> Vec<i32> {
    match &fault.victims {
        Victims::All => pids.to_vec(),
        Victims::Named(name) => {
            pids.iter().copied().filter(|p| comm(*p).as_deref() == Some(name.as_str())).collect()
        }
        Victims::Main => {
            let inside: HashSet<i32> = pids.iter().copied().collect();
            pids.iter()
                .filter_map(|p| stat(*p).map(|(ppid, start)| (*p, ppid, start)))
                .filter(|(_, ppid, _)| !inside.contains(ppid))
                .min_by_key(|(p, _, start)| (*start, *p))
                .map(|(p, _, _)| vec![p])
                .unwrap_or_default()
        }
    }
}

/// A process's name (`/proc/PID/comm`).
fn comm(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

/// A process's parent and start time (`/proc/PID/stat` fields 4 and 22,
/// proc(5); read after the name, which may hold spaces and parentheses).
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` begins at field 3 (the state).
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Send `signal` to `pid` if it is in the target's subtree: through a
/// pidfd opened first, so that the process checked is the one signalled.
/// `Ok(false)`: gone, or not the target's.
fn signal_in(mount: &Path, target: &Path, pid: i32, signal: i32) -> io::Result<bool> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(false) } else { Err(e) };
    }
    // SAFETY: a new fd, ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let Ok(text) = std::fs::read(format!("/proc/{pid}/cgroup")) else { return Ok(false) };
    let Some(rel) = text.split(|b| *b == b'\n').find_map(|l| l.strip_prefix(b"0::")) else {
        return Ok(false);
    };
    let rel = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel));
    let path = mount.join(rel.strip_prefix("/").unwrap_or(rel));
    if !path.starts_with(target) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal(2) with our pidfd, no siginfo, no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(false) } else { Err(e) };
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::kill::Signal;

    #[test]
    fn the_main_process_is_the_oldest_with_a_parent_outside() {
        // This test process: its parent (cargo's test runner or a shell)
        // is not in the list, so it is its own list's main process.
        let me = std::process::id() as i32;
        let main = KillFault { victims: Victims::Main, signal: Signal::KILL, every: None };
        assert_eq!(picked(&main, &[me]), vec![me]);
        let (ppid, _) = stat(me).unwrap();
        // With its parent in the list, the parent is (older, and its own
        // parent is outside).
        assert_eq!(picked(&main, &[me, ppid]), vec![ppid]);
        let named = KillFault { victims: Victims::Named(comm(me).unwrap()), ..main.clone() };
        assert_eq!(picked(&named, &[me, ppid]).first(), Some(&me));
    }

    /// A directory standing for the cgroup (a `cgroup.procs` in it): its
    /// removal counts once however often it is looked at, and a directory
    /// made again at the same path is taken, with its new inode as the id,
    /// and compared with nothing (everything in it is new).
    #[test]
    fn a_cgroup_made_again_is_followed() {
        use std::os::unix::fs::MetadataExt as _;
        let base = crate::safe_fs::private_dir(&std::env::temp_dir(), "chaos-kill-follow-test").unwrap();
        let dir = base.join("app");
        let make = || {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
            std::fs::metadata(&dir).unwrap().ino()
        };
        let first = make();
        let mut target = Target { path: dir.clone(), id: first, level: 1, workload: None };
        let mut round = Round {
            at: Instant::now(),
            before: HashSet::from([1, 2]),
            killed: HashSet::from([2]),
            watching: true,
            exiting: true,
            gone: false,
        };
        let tally = Tally::default();
        follow(&mut target, &mut round, &tally);
        assert!(!round.gone && target.id == first && tally.removed.load(Relaxed) == 0);
        std::fs::remove_dir_all(&dir).unwrap();
        for _ in 0..3 {
            follow(&mut target, &mut round, &tally);
        }
        assert!(round.gone && !round.exiting, "the removal ends the killed processes' exit");
        assert_eq!(tally.removed.load(Relaxed), 1);
        // A placeholder takes the freed inode number, which a filesystem
        // may give to the next directory (cgroupfs never reuses an id).
        std::fs::create_dir_all(base.join("keep1")).unwrap();
        let again = make();
        follow(&mut target, &mut round, &tally);
        assert!(!round.gone && round.watching && round.before.is_empty());
        assert_eq!((target.id, tally.removed.load(Relaxed)), (again, 1));
        assert_ne!(again, first);
        // Removed and made again between two looks: one removal more.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(base.join("keep2")).unwrap();
        let third = make();
        follow(&mut target, &mut round, &tally);
        assert_eq!((target.id, tally.removed.load(Relaxed)), (third, 2));
        std::fs::remove_dir_all(&base).unwrap();
    }
}

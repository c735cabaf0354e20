//! The reset part of the injector (`net-reset`): no maps, no programs, no
//! links. An attack is sweeps: one when it starts, in the start itself (so
//! that its errors fail the start, and its resets are done when the start
//! event says the fault is in force), then, with `--every`, one per
//! interval from a thread of its own until the deadline or the stop.
//!
//! A sweep enters each network namespace the target's processes live in,
//! dumps the TCP connections there (inet_diag: `attach::sock_diag`), keeps
//! those whose socket belongs to the target cgroup or a descendant (the
//! socket's cgroup is fixed when it is created: `sk_cgrp_data`, reported as
//! `INET_DIAG_CGROUP_ID`) and match the filters, and destroys each with the
//! attack's probability. Nothing of it outlives chaos: the fault is the
//! sweeps, and they stop with the process — killed, or stopped, whose
//! thread then checks the deadline before it acts again.

use std::{
    collections::{HashMap, HashSet},
    io,
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
};
use crate::{
    attach::{netns::Netns, sock_diag},
    attack::Attack,
    counters::Counters,
    error::{Error, Result},
    faults::NetReset,
    plan::ResetMechanism,
    targets::{Target, ids_in_subtree},
    timebase::monotonic_ns,
};

/// What the sweeps of one attack counted. Kept after the attack stops,
/// for its last counters, until its slot is reused.
#[derive(Debug, Default)]
struct Tally {
    sweeps: AtomicU64,
    /// Matching connections, summed over sweeps (a connection that
    /// survives a draw is counted again by the next sweep).
    seen: AtomicU64,
    reset: AtomicU64,
    /// Drawn, but closed before its reset (ENOENT).
    gone: AtomicU64,
    /// Sweeps that failed (logged); the attack goes on.
    failed: AtomicU64,
    /// Drawn after the deadline (a late sweep): left alone.
    expired: AtomicU64,
}

/// The thread of an attack with `--every`, and how to stop it at once.
struct Sweeper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sweeper")
    }
}

/// What a running reset attack holds: its sweeping thread, if any.
#[derive(Debug, Default)]
pub struct Handle {
    sweeper: Option<Sweeper>,
}

/// Every reset attack's tallies, by counter slot.
#[derive(Default)]
pub struct Reset {
    tallies: HashMap<u32, Arc<Tally>>,
}

impl FamilyInjector for Reset {
    type Fault = NetReset;
    type Mechanism = ResetMechanism;
    type Handle = Handle;

    fn begin(&mut self, _shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        let tally = Arc::new(Tally::default());
        self.tallies.insert(slot, Arc::clone(&tally));
        let deadline_ns = start.deadline_from_now();
        sweep(&attack.target, fault, deadline_ns, &tally)
            .map_err(|e| Error::kernel(format!("resetting the connections of {}", attack.target), e))?;
        if let Some(every) = fault.every {
            let (stop, stopped) = mpsc::channel();
            let (target, fault) = (attack.target.clone(), fault.clone());
            let thread = std::thread::Builder::new()
                .name("chaos-net-reset".into())
                .spawn(move || sweep_every(&target, &fault, every, deadline_ns, &tally, &stopped))
                .map_err(|e| Error::kernel("starting the net-reset thread", e))?;
            handle.sweeper = Some(Sweeper { stop, thread });
        }
        Ok(())
    }

    /// Stop the sweeps: inert once the thread has returned (a sweep in
    /// progress finishes its namespace first).
    fn stop(&mut self, _shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        let Some(Sweeper { stop, thread }) = handle.sweeper else {
            return (Ok(Instant::now()), Ok(()));
        };
        // A send fails only when the thread is gone already (its deadline).
        let _ = stop.send(());
        let joined = thread
            .join()
            .map(|()| Instant::now())
            .map_err(|_| Error::kernel("stopping net-reset", anyhow::anyhow!("its thread panicked")));
        (joined, Ok(()))
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some(t) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let detail = [("sweeps", &t.sweeps), ("gone", &t.gone), ("failed_sweeps", &t.failed)]
            .into_iter()
            .map(|(name, n)| (name, n.load(Relaxed)))
            .collect();
        Ok(Counters {
            matched: t.seen.load(Relaxed),
            injected: t.reset.load(Relaxed),
            expired: t.expired.load(Relaxed),
            detail,
        })
    }
}

/// Sweep every `every` from the start until the deadline or a message on
/// `stop`. A failed sweep is logged and counted; the next one runs.
fn sweep_every(
    target: &Target,
    fault: &NetReset,
    every: Duration,
    deadline_ns: u64,
    tally: &Tally,
    stop: &mpsc::Receiver<()>,
) {
    let mut next = Instant::now() + every;
    loop {
        let left = deadline_ns.saturating_sub(monotonic_ns());
        let wait = next.saturating_duration_since(Instant::now());
        if wait >= Duration::from_nanos(left) {
            return;
        }
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Woken late (the process was stopped): past the deadline, done.
        if monotonic_ns() >= deadline_ns {
            return;
        }
        if let Err(e) = sweep(target, fault, deadline_ns, tally) {
            tally.failed.fetch_add(1, Relaxed);
            tracing::warn!("net-reset on {target}: a sweep failed: {e}");
        }
        // Fixed rate, not fixed delay; a sweep longer than the interval
        // (a loaded machine) is followed at once by the next.
        next = (next + every).max(Instant::now());
    }
}

/// One sweep over the namespaces of the target's processes.
fn sweep(target: &Target, fault: &NetReset, deadline_ns: u64, tally: &Tally) -> io::Result<()> {
    tally.sweeps.fetch_add(1, Relaxed);
    let cgroups = ids_in_subtree(&target.path);
    for ns in Netns::of_subtree(&target.path) {
        match ns.run(|| reset_in_namespace(&cgroups, fault, deadline_ns, tally)) {
            Ok(swept) => swept?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// In the calling thread's namespace: reset the target's matching
/// connections, each with the attack's probability.
fn reset_in_namespace(
    cgroups: &HashSet<u64>,
    fault: &NetReset,
    deadline_ns: u64,
    tally: &Tally,
) -> io::Result<()> {
    for socket in sock_diag::tcp_sockets(sock_diag::CONNECTION_STATES)? {
        let Some(cgroup) = socket.cgroup_id else {
            return Err(io::Error::other(
                "the kernel does not report the cgroup of sockets (INET_DIAG_CGROUP_ID, Linux 5.8)",
            ));
        };
        if !cgroups.contains(&cgroup) || !fault.matches(socket.local, socket.remote) {
            continue;
        }
        tally.seen.fetch_add(1, Relaxed);
        if !draw(fault.percent.threshold())? {
            continue;
        }
        if monotonic_ns() >= deadline_ns {
            tally.expired.fetch_add(1, Relaxed);
            continue;
        }
        match sock_diag::destroy(&socket)? {
            true => tally.reset.fetch_add(1, Relaxed),
            false => tally.gone.fetch_add(1, Relaxed),
        };
    }
    Ok(())
}

/// True with probability `threshold` / 2^32 (`Percent::threshold`).
fn draw(threshold: u64) -> io::Result<bool> {
    if threshold > u64::from(u32::MAX) {
        return Ok(true);
    }
    let mut r = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into the buffer.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if n != 4 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(u32::from_ne_bytes(r)) < threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_threshold() {
        assert!(draw(1 << 32).unwrap());
        assert!(!draw(0).unwrap());
        let hits = (0..4000).filter(|_| draw(1 << 31).unwrap()).count();
        // Binomial(4000, 0.5): sd 31.6; 6 sd.
        assert!((1810..=2190).contains(&hits), "{hits} of 4000 at 50%");
    }
}

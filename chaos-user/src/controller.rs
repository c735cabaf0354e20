//! The controller: runs attacks until their deadlines, and stops every one
//! of them at its deadline, on SIGINT/SIGTERM/SIGHUP, or when the caller
//! aborts (a failed health probe) — the first of the three safety layers.

use std::time::{Duration, Instant};

use crate::{
    attack::{Attack, Planned},
    error::Result,
    events::{Events, RunEvent},
    injector::{Injector, Running, Stopped},
    signals::{self, SignalWatch, Wake},
    timebase::monotonic_ns,
};

/// Why attacks ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    Deadline,
    Signal(i32),
    Abort(String),
    /// A target's cgroup went away (see `target_gone`), noticed at `at_ns`
    /// (CLOCK_MONOTONIC).
    TargetGone {
        why: String,
        at_ns: u64,
    },
}

impl EndReason {
    pub fn label(&self) -> String {
        match self {
            Self::Deadline => "deadline".into(),
            Self::Signal(sig) => signals::name(*sig).to_owned(),
            Self::Abort(why) => format!("abort: {why}"),
            Self::TargetGone { why, .. } => why.clone(),
        }
    }
}

/// How often the live view refreshes and the abort check runs.
const TICK: Duration = Duration::from_millis(100);

/// How [`run_group`] runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupOptions {
    /// Log starts and stops at debug level rather than info: for callers
    /// that show them in a live view, which log lines would garble.
    pub quiet: bool,
}

/// An attack that ended, and when its stop began.
#[derive(Debug)]
pub struct Ended {
    pub stopped: Stopped,
    /// CLOCK_MONOTONIC when the controller asked the injector to stop it;
    /// plus `stopped.inert_after`, when the fault became inert. Lets a
    /// caller measure from its own abort decision to the fault gone.
    pub stop_called_ns: u64,
}

/// Start `attacks` together and run them to their ends. `check` runs every
/// tick and returns `Some(reason)` to abort everything. Each attack stops at
/// its own deadline; a signal or an abort stops all that still run. Returns
/// how they ended, and when each stop began.
pub fn run_group(
    injector: &mut Injector,
    attacks: Vec<(Attack, Planned)>,
    events: &Events,
    signals: &SignalWatch,
    options: GroupOptions,
    mut check: impl FnMut(&Injector, &[Running]) -> Option<String>,
) -> Result<(EndReason, Vec<Ended>)> {
    let mut running = Vec::new();
    let mut stopped = Vec::new();
    for (attack, mechanism) in attacks {
        match injector.start(attack, mechanism) {
            Ok(r) => {
                events.emit(RunEvent::start(&r));
                if options.quiet {
                    tracing::debug!(attack = %r.attack.id, target = %r.attack.target, "started {}", r.attack.fault.kind());
                } else {
                    tracing::info!(attack = %r.attack.id, target = %r.attack.target, "started {}", r.attack.fault.kind());
                }
                running.push(r);
            }
            Err(e) => {
                // Roll back the ones already started, then report.
                let why = EndReason::Abort(e.to_string());
                stop_all(injector, &mut running, &mut stopped, &why, events, options.quiet);
                return Err(e);
            }
        }
    }
    let mut reason = EndReason::Deadline;
    while !running.is_empty() {
        let next = running.iter().map(|r| r.started + r.attack.duration).min().expect("non-empty");
        match signals.wait(next, TICK) {
            Wake::Signal(sig) => {
                reason = EndReason::Signal(sig);
                break;
            }
            Wake::Deadline => {
                let now = Instant::now();
                let (due, rest): (Vec<_>, Vec<_>) =
                    running.into_iter().partition(|r| r.started + r.attack.duration <= now);
                running = rest;
                for r in due {
                    stop_one(injector, r, &mut stopped, &EndReason::Deadline, events, options.quiet);
                }
            }
            Wake::Tick => {}
        }
        if let Some(why) = check(injector, &running) {
            reason = EndReason::Abort(why);
            break;
        }
        if let Some(why) = running
            .iter()
            .filter(|r| !r.attack.fault.survives_its_cgroup())
            .find_map(|r| target_gone(&r.attack.target))
        {
            reason = EndReason::TargetGone { why, at_ns: monotonic_ns() };
            break;
        }
    }
    stop_all(injector, &mut running, &mut stopped, &reason, events, options.quiet);
    Ok((reason, stopped))
}

/// Why an attack's target no longer stands for what was attacked, if it
/// does not: its cgroup was removed (the container or unit stopped), or
/// removed and made again under the same path with a new id (a systemd
/// unit's restart; a container's restart makes a new directory). A rule
/// keyed by the old id matches nothing any more; rather than run on
/// silently, the run ends, and says why. A pod's cgroup outlives its
/// containers' restarts, so an attack on a pod goes on; so does a kill
/// (`Fault::survives_its_cgroup`).
fn target_gone(target: &crate::targets::Target) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(&target.path) {
        Ok(m) if m.ino() == target.id => None,
        Ok(_) => Some(format!(
            "target gone: {} was made again with a new id (its unit or container restarted)",
            target
        )),
        Err(_) => {
            Some(format!("target gone: {target} was removed (its container or unit stopped or restarted)"))
        }
    }
}

fn stop_all(
    injector: &mut Injector,
    running: &mut Vec<Running>,
    stopped: &mut Vec<Ended>,
    reason: &EndReason,
    events: &Events,
    quiet: bool,
) {
    for r in running.drain(..) {
        stop_one(injector, r, stopped, reason, events, quiet);
    }
}

fn stop_one(
    injector: &mut Injector,
    r: Running,
    stopped: &mut Vec<Ended>,
    reason: &EndReason,
    events: &Events,
    quiet: bool,
) {
    let attack = r.attack.clone();
    let stop_called_ns = monotonic_ns();
    match injector.stop(r) {
        Ok(s) => {
            events.emit(RunEvent::end(&s, reason.label()));
            let msg = format!(
                "stopped ({}): injected into {} of {} matching events; {} after the kernel deadline",
                reason.label(),
                s.counters.injected,
                s.counters.matched,
                s.counters.expired,
            );
            let inert_us = s.inert_after.as_micros() as u64;
            if quiet {
                tracing::debug!(attack = %s.attack.id, inert_us, "{msg}");
            } else {
                tracing::info!(attack = %s.attack.id, inert_us, "{msg}");
            }
            stopped.push(Ended { stopped: s, stop_called_ns });
        }
        Err(e) => tracing::error!(attack = %attack.id, "stopping failed: {e}; run `chaos recover`"),
    }
    if let Err(e) = injector.record_end(&attack) {
        tracing::warn!("recording the end of {}: {e}", attack.id);
    }
}

//! Opening a run: claim the targets, recover what dead runs left, and load
//! the injector.

use std::path::Path;

use crate::{
    attack::Attack,
    error::{Error, Result},
    injector::Injector,
    plan::Ancestry,
    recover,
    state::{self, DirLock, Record, StateFile},
};

/// Check that we are root, before touching anything.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::environment(format!(
            "{what} needs root: it loads eBPF programs and attaches them to devices and cgroups; run it with sudo"
        )));
    }
    Ok(())
}

/// Claim `attacks` (refusing a target already under attack of the same
/// family by a live chaos process), then load the injector, its programs
/// matching cgroups by `ancestry` (the plans').
pub fn open(attacks: &[Attack], ancestry: Ancestry) -> Result<Injector> {
    let dir = state::checked_state_dir()?;
    let state = claim(&dir, attacks)?;
    Injector::new(state, ancestry)
}

fn claim(dir: &Path, attacks: &[Attack]) -> Result<StateFile> {
    let _lock = DirLock::take(dir)?;
    for action in recover::recover_locked(dir) {
        tracing::warn!(object = %action.object, outcome = %action.outcome, "settled what a dead chaos process left behind");
    }
    for found in state::scan(dir).into_iter().filter(|f| f.live) {
        for claim in &found.replay.attacks {
            if let Some(a) = attacks
                .iter()
                .find(|a| a.target.id == claim.target_id && a.fault.family().name() == claim.family)
            {
                return Err(Error::Busy {
                    target: a.target.to_string(),
                    fault: claim.fault.clone(),
                    pid: found.replay.pid.unwrap_or(0),
                })
                .inspect_err(|_| tracing::debug!(path = %claim.target_path.display(), "conflicting claim"));
            }
        }
    }
    // Still under the lock: our file and its attacks are written before
    // the next start can look (DirLock::take created the directory).
    let mut state = StateFile::create(dir)?;
    for a in attacks {
        state.append(&Record::Attack {
            id: a.id.clone(),
            fault: a.fault.kind().into(),
            family: a.fault.family().name().into(),
            target_id: a.target.id,
            target_path: a.target.path.clone(),
        })?;
    }
    Ok(state)
}

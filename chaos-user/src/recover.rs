//! Removing what dead chaos processes left behind.
//!
//! Only objects recorded in a state file are touched, and only when the
//! file's owner is gone (its lock is free) — never anything chaos did not
//! create, never what a live chaos process still uses.

use std::{fs, path::Path};

use serde::Serialize;

use crate::{
    attach::{netns::Netns, qdisc, tc},
    error::Result,
    state::{self, DirLock, Leftover},
};

/// What recovery did with one leftover.
#[derive(Debug, Serialize)]
pub struct Action {
    pub owner_pid: Option<i32>,
    pub object: String,
    /// `removed`, `gone` (its namespace or device no longer exists),
    /// `left: <why>` (not chaos's as it created it, or kept on purpose: the
    /// record is closed all the same), or `failed: <why>`.
    pub outcome: String,
}

/// Recover every state file of a dead process under `dir`. Takes the
/// directory lock.
pub fn recover(dir: &Path) -> Result<Vec<Action>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let lock = DirLock::take(dir)?;
    let actions = recover_locked(dir);
    drop(lock);
    let _ = fs::remove_dir(dir); // only if empty
    Ok(actions)
}

/// Same, for callers that already hold the directory lock.
pub fn recover_locked(dir: &Path) -> Vec<Action> {
    let mut actions = Vec::new();
    for found in state::scan(dir).into_iter().filter(|f| !f.live) {
        let mut all_ok = true;
        for leftover in &found.replay.leftovers {
            let outcome = remove(leftover);
            all_ok &= !outcome.starts_with("failed");
            tracing::info!(object = %leftover, %outcome, "recover");
            actions.push(Action { owner_pid: found.replay.pid, object: leftover.to_string(), outcome });
        }
        if all_ok {
            let _ = fs::remove_file(&found.path);
        }
    }
    actions
}

fn remove(leftover: &Leftover) -> String {
    let outcome = match leftover {
        Leftover::TcFilter { netns, ifindex, parent, priority, handle, .. } => match Netns::find(*netns) {
            None => return "gone".into(),
            Some(ns) => tc::remove_filter(&ns, *ifindex, *parent, *priority, *handle),
        },
        // Both decide from what is on the device and always close the
        // record ("removed", "gone" or "left: <why>"); an error is one a
        // retry may get past.
        Leftover::Clsact { netns, ifname, .. } => match Netns::find(*netns) {
            None => return "gone".into(),
            Some(ns) => match tc::recover_clsact(&ns, ifname) {
                Ok(outcome) => return outcome,
                Err(e) => Err(e),
            },
        },
        Leftover::Qdisc { netns, ifname, before, .. } => match Netns::find(*netns) {
            None => return "gone".into(),
            Some(ns) => match qdisc::restore(&ns, ifname, before) {
                Ok(restored) => return restored.to_string(),
                Err(e) => Err(e),
            },
        },
    };
    match outcome {
        Ok(()) => "removed".into(),
        // The device (or the filter) disappeared on its own.
        Err(e) if e.to_string().contains("No such") || e.to_string().contains("not found") => "gone".into(),
        Err(e) => format!("failed: {e}"),
    }
}

//! Removing what dead chaos processes left behind.
//!
//! Only objects recorded in a state file are touched, and only when the
//! file's owner is gone (its lock is free) — never anything chaos did not
//! create, never what a live chaos process still uses.
//!
//! Every recorded object is settled one way or the other, so that a record
//! does not make every later `chaos recover` fail:
//!
//! - `removed`: it was still chaos's, and chaos removed it;
//! - `gone`: its namespace or device no longer exists (and the object went
//!   with it), or the object itself is not there any more;
//! - `left: <why>`: something is there that is not (or no longer provably)
//!   chaos's — another qdisc at the root, a renamed or replaced device, an
//!   object a live chaos run records — and chaos leaves it alone, saying so;
//! - `failed: <why>`: a failure that may pass (a netlink or `tc` error while
//!   chaos's object is still there). Only these keep their record, for the
//!   next recovery to retry, and make `chaos recover` exit 5.
//!
//! The first three close the record: a dead run's file whose records are all
//! closed is removed; otherwise the closed ones are marked in it
//! ([`state::Found::close`]).

use std::path::Path;

use serde::Serialize;

use crate::{
    attach::{
        ifb,
        netns::{Located, Netns, NetnsId, interfaces},
        qdisc, tc,
    },
    controls::Restored,
    error::{Error, Result},
    state::{self, DirLock, Entry, Found, Leftover},
};

/// What recovery did with one leftover.
#[derive(Debug, Serialize)]
pub struct Action {
    pub owner_pid: Option<i32>,
    pub object: String,
    /// `removed`, `gone`, `left: <why>` or `failed: <why>` (see the
    /// module's doc).
    pub outcome: String,
}

/// How one leftover was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    /// Why we know it is gone (logged, not reported).
    Gone(String),
    Left(String),
    Failed(String),
}

impl Outcome {
    /// Whether the record needs nothing more.
    pub fn closes(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }

    pub fn text(&self) -> String {
        match self {
            Self::Removed => "removed".into(),
            Self::Gone(_) => "gone".into(),
            Self::Left(why) => format!("left: {why}"),
            Self::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// Recover every state file of a dead process under `dir`. Takes the
/// directory lock.
pub fn recover(dir: &Path) -> Result<Vec<Action>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let _lock = DirLock::take(dir)?;
    Ok(recover_locked(dir))
}

/// Same, for callers that already hold the directory lock.
pub fn recover_locked(dir: &Path) -> Vec<Action> {
    let mut actions = settle_all(&state::scan(dir), settle);
    actions.extend(dead_scratch_cgroups());
    actions
}

/// The capability probes' scratch cgroups whose chaos process was killed
/// mid-probe: named for their owner, in no state file (see
/// `capabilities::programs::remove_dead_scratch`).
fn dead_scratch_cgroups() -> Vec<Action> {
    let Ok(fs) = crate::targets::CgroupFs::discover() else { return Vec::new() };
    crate::capabilities::programs::remove_dead_scratch(&crate::capabilities::programs::scratch_home(
        &fs.mount,
    ))
    .into_iter()
    .map(|(path, pid)| Action {
        owner_pid: Some(pid),
        object: format!("cgroup {}", path.display()),
        outcome: Outcome::Removed.text(),
    })
    .collect()
}

/// Settle the leftovers of the dead files among `found` with `settle_one`,
/// then close their records.
fn settle_all(found: &[Found], settle_one: impl Fn(&Entry) -> Outcome) -> Vec<Action> {
    let live: Vec<(Option<i32>, &Entry)> = found
        .iter()
        .filter(|f| f.live)
        .flat_map(|f| f.replay.leftovers.iter().map(move |e| (f.replay.pid, e)))
        .collect();
    let mut actions = Vec::new();
    for file in found.iter().filter(|f| !f.live) {
        let mut closed = Vec::new();
        let mut kept = 0;
        for entry in &file.replay.leftovers {
            let outcome = match live.iter().find(|(_, l)| same_object(l, entry)) {
                // Only with a weak identity can a live run's object look like
                // a dead one's (with cookies, two namespaces never match).
                Some((pid, _)) => Outcome::Left(format!(
                    "a running chaos process (pid {}) records the same object",
                    pid.map_or("?".into(), |p| p.to_string())
                )),
                None => settle_one(entry),
            };
            match &outcome {
                Outcome::Gone(why) => tracing::info!(object = %entry.leftover, %why, "recover: gone"),
                Outcome::Failed(_) => {
                    tracing::warn!(object = %entry.leftover, outcome = %outcome.text(), "recover")
                }
                _ => tracing::info!(object = %entry.leftover, outcome = %outcome.text(), "recover"),
            }
            if outcome.closes() {
                closed.push((entry.leftover.clone(), outcome.text()));
            } else {
                kept += 1;
            }
            actions.push(Action {
                owner_pid: file.replay.pid,
                object: entry.leftover.to_string(),
                outcome: outcome.text(),
            });
        }
        let done = if kept == 0 { file.remove() } else { file.close(&closed) };
        if let Err(e) = done {
            tracing::warn!(state = %file.path.display(), "cannot update a dead run's state file: {e}");
        }
    }
    actions
}

/// The same object in the same namespace, as far as the identities say
/// (unknown on either side counts as the same: the cautious answer).
fn same_object(a: &Entry, b: &Entry) -> bool {
    let same_ns = match (a.netns.and_then(|n| n.cookie), b.netns.and_then(|n| n.cookie)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    same_ns && a.leftover == b.leftover
}

/// An error saying the object (or its device) does not exist.
fn not_found(e: &Error) -> bool {
    let m = e.to_string();
    m.contains("No such") || m.contains("not found") || qdisc::is_gone(&m)
}

/// Settle one leftover of a dead run.
fn settle(entry: &Entry) -> Outcome {
    let l = &entry.leftover;
    // A cgroup control: the value before, written back if the file still
    // holds chaos's (crate::controls). `removed` is the value restored.
    if let Leftover::CgroupControl(control) = l {
        return match control.restore() {
            Ok(Restored::Restored) => Outcome::Removed,
            Ok(Restored::AlreadyBack) => Outcome::Gone(format!("{} holds its value before", control.file)),
            Ok(Restored::Gone(why)) => Outcome::Gone(why),
            Ok(Restored::Changed(why)) => Outcome::Left(why),
            Err(e) => Outcome::Failed(format!("restoring {control}: {e}")),
        };
    }
    let Some(inode) = l.netns() else { unreachable!("only a cgroup control has no namespace") };
    let id = entry.netns.unwrap_or(NetnsId { inode, dev: None, cookie: None });
    let ns = match Netns::locate(&id) {
        Located::Here(ns) => ns,
        Located::Gone(why) => return Outcome::Gone(format!("its network namespace is gone: {why}")),
    };
    // chaos's ifb is recorded by name before it exists (no index yet);
    // deleted if it is still an ifb of that name.
    if let Leftover::Ifb { ifname, .. } = l {
        let name = ifname.clone();
        return match ns.run(move || ifb::delete_here(&name)) {
            Ok(Ok(true)) => Outcome::Removed,
            Ok(Ok(false)) => Outcome::Gone(format!("no device {ifname} in its namespace")),
            Ok(Err(why)) => Outcome::Left(why),
            Err(e) => Outcome::Failed(format!("entering netns {}: {e}", ns.inode)),
        };
    }
    let Some((ifindex, ifname)) = l.device() else { unreachable!("settled above") };
    let devices = match ns.run(interfaces) {
        Ok(Ok(d)) => d,
        Ok(Err(e)) | Err(e) => {
            return Outcome::Failed(format!("listing the devices of netns {}: {e}", ns.inode));
        }
    };
    if let Some(outcome) = check_device(&devices, ifindex, ifname) {
        return outcome;
    }
    match l {
        Leftover::TcFilter { ifindex, parent, priority, handle, .. } => {
            match tc::remove_filter(&ns, *ifindex, *parent, *priority, *handle) {
                Ok(()) => Outcome::Removed,
                Err(e) if not_found(&e) => Outcome::Gone(format!("no such filter: {e}")),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        // Both decide from what is on the device (chaos::attach::tc and
        // ::qdisc) and close the record unless a retry may get past an
        // error: an empty clsact chaos added stays (deleting it would
        // deactivate the device); chaos's qdisc tree, if still there, goes.
        Leftover::Clsact { ifname, .. } => match tc::recover_clsact(&ns, ifname) {
            Ok(text) if text == "gone" => Outcome::Gone(format!("no clsact qdisc on {ifname}")),
            Ok(text) => match text.strip_prefix("left: ") {
                Some(why) => Outcome::Left(why.to_owned()),
                None => Outcome::Removed,
            },
            Err(e) if not_found(&e) => Outcome::Gone(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Leftover::Qdisc { ifname, before, .. } => match qdisc::restore(&ns, ifname, before) {
            Ok(qdisc::Restored::Removed { differs: None }) => Outcome::Removed,
            Ok(qdisc::Restored::Removed { differs: Some(d) }) => {
                // chaos's tree went; what differs from the snapshot is
                // someone else's doing, not chaos's to undo.
                tracing::warn!(dev = %ifname, "removed chaos's qdisc; the device differs from before the attack: {d}");
                Outcome::Removed
            }
            Ok(qdisc::Restored::Left(why)) => Outcome::Left(why),
            Ok(qdisc::Restored::Gone) => {
                Outcome::Gone(format!("chaos's qdisc is not on {ifname}; the device is as before"))
            }
            Err(e) if not_found(&e) => Outcome::Gone(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Leftover::Ifb { .. } | Leftover::CgroupControl(_) => unreachable!("settled above"),
    }
}

/// The device of a record, in its (located) namespace: the same index with
/// the same name, or the record is settled here.
fn check_device(devices: &[(u32, String)], ifindex: u32, ifname: &str) -> Option<Outcome> {
    match devices.iter().find(|(i, _)| *i == ifindex) {
        Some((_, name)) if name == ifname => None,
        // A device moved in from another namespace can keep its index, and
        // a renamed one keeps it too: either way not provably the device
        // chaos changed.
        Some((_, name)) => Some(Outcome::Left(format!(
            "device {ifindex} is named {name} now, not {ifname} (renamed, or another device took its index); \
             chaos leaves it: see `tc qdisc show dev {name}` in that namespace"
        ))),
        None => Some(Outcome::Gone(format!("no device with index {ifindex} ({ifname}) in its namespace"))),
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, fs, path::PathBuf};

    use super::*;
    use crate::state::{Record, tests::filter};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("chaos-recover-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, name: &str, records: &[Record]) -> PathBuf {
        let path = dir.join(name);
        let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        fs::write(&path, text).unwrap();
        path
    }

    /// Issue 11, item 4: a record whose object is not chaos's any more, or
    /// gone, is closed; only a failure keeps its record, and the next
    /// recovery retries that one alone. Before, any failure kept the whole
    /// file, and every `chaos recover` after it exited 5.
    #[test]
    fn settled_records_are_closed_and_only_failures_are_retried() {
        let dir = TempDir::new("close");
        let _lock = DirLock::take(&dir.0).unwrap();
        let all_settled = write(
            &dir.0,
            "7-1.jsonl",
            &[Record::Leftover(filter(1)), Record::Leftover(filter(2)), Record::Leftover(filter(3))],
        );
        let one_fails =
            write(&dir.0, "8-1.jsonl", &[Record::Leftover(filter(4)), Record::Leftover(filter(5))]);
        let calls = RefCell::new(Vec::new());
        let fake = |e: &Entry| {
            let Leftover::TcFilter { handle, .. } = e.leftover else { unreachable!() };
            calls.borrow_mut().push(handle);
            match handle {
                1 => Outcome::Removed,
                2 | 5 => Outcome::Gone("device gone".into()),
                3 => Outcome::Left("not chaos's".into()),
                _ => Outcome::Failed("netlink: EBUSY".into()),
            }
        };
        let actions = settle_all(&state::scan(&dir.0), fake);
        let outcomes: Vec<_> = actions.iter().map(|a| a.outcome.as_str()).collect();
        // Newest first (filters before the qdisc that holds them).
        assert_eq!(outcomes, ["left: not chaos's", "gone", "removed", "gone", "failed: netlink: EBUSY"]);
        assert!(!all_settled.exists(), "a file whose records are all settled goes");
        assert!(one_fails.exists(), "a file with a failure stays");
        // The next recovery: the failure alone is retried, and succeeds.
        calls.borrow_mut().clear();
        let retry = |e: &Entry| {
            calls.borrow_mut().push(match e.leftover {
                Leftover::TcFilter { handle, .. } => handle,
                _ => unreachable!(),
            });
            Outcome::Removed
        };
        let actions = settle_all(&state::scan(&dir.0), retry);
        assert_eq!(*calls.borrow(), [4]);
        assert_eq!(actions.len(), 1);
        assert!(!one_fails.exists());
        assert!(settle_all(&state::scan(&dir.0), |_| unreachable!()).is_empty(), "nothing is left to do");
    }

    /// With an identity too weak to tell namespaces apart (no cookie), a
    /// dead run's record equal to a live run's object is left alone.
    #[test]
    fn what_a_live_run_records_is_never_touched() {
        let dir = TempDir::new("live");
        let _lock = DirLock::take(&dir.0).unwrap();
        write(
            &dir.0,
            "9-1.jsonl",
            &[Record::Owner { pid: 9, command: "x".into() }, Record::Leftover(filter(1))],
        );
        let mut live = crate::state::StateFile::create(&dir.0).unwrap();
        live.append(&Record::Leftover(filter(1))).unwrap();
        let actions = settle_all(&state::scan(&dir.0), |_| panic!("must not be settled"));
        assert_eq!(actions.len(), 1);
        assert!(actions[0].outcome.starts_with("left: a running chaos process"), "{}", actions[0].outcome);
        live.append(&Record::Removed(filter(1))).unwrap();
    }

    #[test]
    fn a_device_is_its_index_and_its_name() {
        let devs = vec![(1, "lo".to_owned()), (5, "eth0".to_owned())];
        assert_eq!(check_device(&devs, 5, "eth0"), None);
        assert!(
            matches!(check_device(&devs, 5, "veth1"), Some(Outcome::Left(m)) if m.contains("named eth0 now"))
        );
        assert!(matches!(check_device(&devs, 6, "eth0"), Some(Outcome::Gone(_))));
    }
}

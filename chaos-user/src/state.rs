//! The record of what can outlive a chaos process, and `chaos recover`.
//!
//! Each running chaos process owns `/run/chaos/<pid>.jsonl` and holds an
//! exclusive `flock(2)` on it for its whole life: the kernel drops the lock
//! when the process dies, however it dies, so a file whose lock can be taken
//! belongs to a dead process. The file is append-only JSON lines: every
//! object that could survive the process (a netlink tc filter, a qdisc we
//! installed) is recorded *before* it is created and marked removed after it
//! is gone; a crash mid-append loses at most a partial last line, which
//! replay ignores.
//!
//! Starting an attack first takes the directory lock, recovers the files of
//! dead processes, and checks the live ones for an attack of the same fault
//! family on the same target.

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where state files live; `CHAOS_STATE_DIR` overrides it (tests).
pub fn state_dir() -> PathBuf {
    std::env::var_os("CHAOS_STATE_DIR").map_or_else(|| PathBuf::from("/run/chaos"), PathBuf::from)
}

/// [`state_dir`], created if missing (mode 0700) and checked with
/// [`validate_state_dir`]: what chaos and `chaos recover` use.
pub fn checked_state_dir() -> Result<PathBuf> {
    let dir = state_dir();
    validate_state_dir(&dir)?;
    Ok(dir)
}

/// The state directory must be ours alone: whoever can write to it (or
/// replace it, through a writable parent) could plant a state file that
/// `recover` acts on as root, or a symlink that root writes through. So it
/// must be a real directory (not a symlink) owned by us (root), writable by
/// no group and no other user, and so must each directory above it (unless
/// sticky, like /tmp: then others cannot rename what is ours).
pub fn validate_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let refuse = |what: String| {
        Error::environment(format!(
            "state directory {} (CHAOS_STATE_DIR, default /run/chaos) {what}; use a directory only root \
             can write to, e.g. unset CHAOS_STATE_DIR",
            dir.display()
        ))
    };
    if !dir.is_absolute() {
        return Err(refuse("is not an absolute path".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // The directories above it first, before anything is created in them
    // (missing ones are created below, ours).
    for parent in dir.ancestors().skip(1) {
        let Ok(m) = fs::metadata(parent) else { continue };
        if m.uid() != 0 && m.uid() != me {
            return Err(refuse(format!("lies in {}, owned by uid {}", parent.display(), m.uid())));
        }
        if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
            return Err(refuse(format!(
                "lies in {}, which others can write to (mode {:o})",
                parent.display(),
                m.mode() & 0o7777
            )));
        }
    }
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| refuse(format!("cannot be created: {e}")))?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| refuse(format!("cannot be read: {e}")))?;
    if !meta.file_type().is_dir() {
        return Err(refuse("is not a directory (a symlink?)".into()));
    }
    if meta.uid() != me {
        return Err(refuse(format!("is owned by uid {}, not by uid {me}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!("is writable by others (mode {:o})", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// One line of a state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Owner { pid: i32, command: String },
    Attack { id: String, fault: String, family: String, target_id: u64, target_path: PathBuf },
    AttackEnded { id: String },
    Leftover(Leftover),
    Removed(Leftover),
}

/// An object that survives its creator unless removed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Leftover {
    /// A cls_bpf filter attached through netlink (kernels without TCX).
    TcFilter { netns: u64, ifindex: u32, ifname: String, parent: u32, priority: u16, handle: u32 },
    /// A clsact qdisc chaos added because the device had none.
    Clsact { netns: u64, ifindex: u32, ifname: String },
    /// A root qdisc chaos installed (fq, for departure times) in place of
    /// the kernel's default; `before` is `tc -j qdisc show dev <ifname>`
    /// from just before, which deleting chaos's qdisc must bring back.
    Qdisc { netns: u64, ifindex: u32, ifname: String, handle: String, before: String },
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TcFilter { netns, ifname, priority, handle, .. } => {
                write!(f, "tc filter on {ifname} (netns {netns}) egress pref {priority} handle {handle:#x}")
            }
            Self::Clsact { netns, ifname, .. } => write!(f, "clsact qdisc on {ifname} (netns {netns})"),
            Self::Qdisc { netns, ifname, handle, .. } => {
                write!(f, "root qdisc {handle} on {ifname} (netns {netns})")
            }
        }
    }
}

/// What a state file says, replayed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub pid: Option<i32>,
    /// (id, fault, family, target id, target path) of attacks not ended.
    pub attacks: Vec<(String, String, String, u64, PathBuf)>,
    /// Objects created and not removed, in creation order reversed (remove
    /// filters before the qdisc that holds them).
    pub leftovers: Vec<Leftover>,
}

impl Replay {
    pub fn parse(text: &str) -> Self {
        let mut replay = Self::default();
        let mut ended = BTreeSet::new();
        let mut removed = Vec::new();
        let mut created = Vec::new();
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<Record>(line) else {
                continue; // a torn last line
            };
            match record {
                Record::Owner { pid, .. } => replay.pid = Some(pid),
                Record::Attack { id, fault, family, target_id, target_path } => {
                    replay.attacks.push((id, fault, family, target_id, target_path));
                }
                Record::AttackEnded { id } => {
                    ended.insert(id);
                }
                Record::Leftover(l) => created.push(l),
                Record::Removed(l) => removed.push(l),
            }
        }
        replay.attacks.retain(|a| !ended.contains(&a.0));
        for r in removed {
            if let Some(i) = created.iter().position(|c| *c == r) {
                created.remove(i);
            }
        }
        created.reverse();
        replay.leftovers = created;
        replay
    }
}

/// This process's state file, locked for its lifetime.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
    /// Recorded and not yet removed; the file outlives us unless empty.
    outstanding: Vec<Leftover>,
}

/// The directory lock, held while checking for conflicts and registering.
pub struct DirLock {
    _dir: File,
}

fn flock(file: &File, op: i32) -> io::Result<()> {
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl DirLock {
    pub fn take(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| state_error(dir, e))?;
        let d = File::open(dir).map_err(|e| state_error(dir, e))?;
        flock(&d, libc::LOCK_EX).map_err(|e| state_error(dir, e))?;
        Ok(Self { _dir: d })
    }
}

fn state_error(path: &Path, e: io::Error) -> Error {
    Error::environment(format!("cannot use state directory {}: {e} (chaos must run as root)", path.display()))
}

impl StateFile {
    /// Create and lock this process's state file. Call with the directory
    /// lock held.
    pub fn create(dir: &Path) -> Result<Self> {
        let pid = std::process::id() as i32;
        let path = dir.join(format!("{pid}.jsonl"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(|e| state_error(&path, e))?;
        flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| state_error(&path, e))?;
        let mut state = Self { path, file, outstanding: Vec::new() };
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        state.append(&Record::Owner { pid, command })?;
        Ok(state)
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        // One write(2) per record on an O_APPEND-free file we alone write:
        // a crash leaves whole lines plus at most one torn one.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| state_error(&self.path, e))?;
        match record {
            Record::Leftover(l) => self.outstanding.push(l.clone()),
            Record::Removed(l) => self.outstanding.retain(|o| o != l),
            _ => {}
        }
        Ok(())
    }

    /// Objects recorded and not yet removed.
    pub fn outstanding(&self) -> &[Leftover] {
        &self.outstanding
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateFile {
    /// A clean end (everything recorded was removed): the file goes, and the
    /// directory too when it is empty. Otherwise the file stays for
    /// `chaos recover`.
    fn drop(&mut self) {
        if !self.outstanding.is_empty() {
            tracing::error!(
                state = %self.path.display(),
                "{} object(s) could not be removed; run `chaos recover`",
                self.outstanding.len()
            );
            return;
        }
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A state file found in the directory.
pub struct Found {
    pub path: PathBuf,
    pub replay: Replay,
    /// True when its owner still runs (its lock is held).
    pub live: bool,
}

/// All state files, with whether their owner lives. Does not modify them.
pub fn scan(dir: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter(|p| {
            p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<i32>().ok())
                != Some(std::process::id() as i32)
        })
        .filter_map(|path| {
            let file = File::open(&path).ok()?;
            let live = flock(&file, libc::LOCK_SH | libc::LOCK_NB).is_err();
            let replay = Replay::parse(&fs::read_to_string(&path).ok()?);
            Some(Found { path, replay, live })
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(handle: u32) -> Leftover {
        Leftover::TcFilter {
            netns: 1,
            ifindex: 2,
            ifname: "eth0".into(),
            parent: 0xffff_fff3,
            priority: 7,
            handle,
        }
    }

    #[test]
    fn replay_subtracts_removed_and_ended() {
        let clsact = Leftover::Clsact { netns: 1, ifindex: 2, ifname: "eth0".into() };
        let lines = [
            Record::Owner { pid: 42, command: "chaos".into() },
            Record::Attack {
                id: "a1".into(),
                fault: "net-loss".into(),
                family: "net".into(),
                target_id: 9,
                target_path: "/x".into(),
            },
            Record::Attack {
                id: "a2".into(),
                fault: "net-loss".into(),
                family: "net".into(),
                target_id: 10,
                target_path: "/y".into(),
            },
            Record::Leftover(clsact.clone()),
            Record::Leftover(filter(1)),
            Record::Leftover(filter(2)),
            Record::Removed(filter(1)),
            Record::AttackEnded { id: "a1".into() },
        ];
        let mut text: String = lines.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        text.push_str("{\"record\":\"leftover\",\"kind\":\"tc-fil"); // torn line
        let replay = Replay::parse(&text);
        assert_eq!(replay.pid, Some(42));
        assert_eq!(replay.attacks.len(), 1);
        assert_eq!(replay.attacks[0].0, "a2");
        // filters before the qdisc that holds them
        assert_eq!(replay.leftovers, vec![filter(2), clsact]);
    }

    #[test]
    fn live_and_dead_files_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("chaos-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // A dead owner's file: nobody holds its lock.
        fs::write(
            dir.join("999999.jsonl"),
            serde_json::to_string(&Record::Leftover(filter(3))).unwrap() + "\n",
        )
        .unwrap();
        // A live one: we hold its lock from another open file description.
        let live_path = dir.join("999998.jsonl");
        fs::write(&live_path, "").unwrap();
        let held = File::open(&live_path).unwrap();
        flock(&held, libc::LOCK_EX).unwrap();
        let found = scan(&dir);
        assert_eq!(found.len(), 2);
        assert!(found.iter().any(|f| f.path == live_path && f.live));
        assert!(found.iter().any(|f| f.replay.leftovers == vec![filter(3)] && !f.live));
        drop(held);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod state_dir_tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // chown below needs root; `./x test` runs as root.
        }
        let base = crate::safe_fs::private_dir(&std::env::temp_dir(), "chaos-state-dir-test").unwrap();
        let ok = base.join("state");
        validate_state_dir(&ok).unwrap();
        assert_eq!(fs::metadata(&ok).unwrap().permissions().mode() & 0o777, 0o700, "created 0700");
        let check = |dir: &Path, needle: &str| {
            let err = validate_state_dir(dir).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::ExitCode::Invalid);
            assert!(err.to_string().contains(needle) && err.to_string().contains("CHAOS_STATE_DIR"), "{err}");
        };
        let world = base.join("world");
        fs::create_dir(&world).unwrap();
        fs::set_permissions(&world, fs::Permissions::from_mode(0o777)).unwrap();
        check(&world, "writable by others");
        let theirs = base.join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        check(&theirs, "owned by uid 65534");
        let link = base.join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        check(&link, "not a directory");
        // Below a directory another user owns (it could swap ours away):
        // refused before anything is made in it.
        check(&theirs.join("state"), "owned by uid 65534");
        assert!(!theirs.join("state").exists());
        check(Path::new("relative/state"), "not an absolute path");
        let _ = fs::remove_dir_all(&base);
    }
}

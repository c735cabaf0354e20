//! The record of what can outlive a chaos process, and `chaos recover`.
//!
//! Each chaos run owns one state file, `/run/chaos/<pid>-<random>.jsonl`.
//! The name is unique per *run*, not per PID: a new process whose PID is a
//! dead run's (routine for chaos as PID 1 of containers sharing the host's
//! `/run/chaos`) gets a file of its own and recovers the dead run's file
//! instead of overwriting it. The file is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` (never someone else's file, never truncated),
//! locked with an exclusive `flock(2)` before anything is written, and kept
//! locked for the run's whole life: the kernel drops the lock when the
//! process dies, however it dies, so a file whose lock can be taken belongs
//! to a dead run. The file is append-only JSON lines: every object that
//! could survive the process (a netlink tc filter, a qdisc we installed) is
//! recorded *before* it is created and marked removed after it is gone,
//! after a line naming its network namespace robustly ([`NetnsId`]); a
//! crash mid-append loses at most a partial last line, which replay
//! ignores.
//!
//! Starting an attack takes the directory lock, recovers the files of dead
//! runs, checks the live ones for an attack of the same fault family on the
//! same target, and creates its own file and records its attacks in it —
//! all under the lock, so that of two starts on one target exactly one sees
//! no conflict. The lock is a file, `/run/chaos/lock`, that chaos never
//! removes, and chaos never removes the directory either: a lock on an inode
//! that can be unlinked and re-created excludes nobody (a process locking
//! the new inode does not wait for one holding the old). `/run` is a tmpfs:
//! an empty directory and an empty file cost nothing, and go at reboot.

use std::{
    collections::BTreeMap,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use crate::attach::netns::NetnsId;
use crate::{
    attach::netns::Netns,
    error::{Error, Result},
};

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

/// The directory lock's file name (never removed; see the module's doc).
pub const LOCK_FILE: &str = "lock";

/// One line of a state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Owner {
        pid: i32,
        command: String,
    },
    Attack {
        id: String,
        fault: String,
        family: String,
        target_id: u64,
        target_path: PathBuf,
    },
    AttackEnded {
        id: String,
    },
    /// The identity of a network namespace; the leftovers after it that
    /// name its inode (`netns`) live in it. Written before the first of
    /// them.
    Netns(NetnsId),
    Leftover(Leftover),
    Removed(Leftover),
    /// Appended by recovery to a dead run's file: nothing more is to be
    /// done about this leftover (it is `gone`, or `left: <why>` — not
    /// chaos's any more), though other leftovers of the file failed and
    /// keep it.
    Closed {
        leftover: Leftover,
        outcome: String,
    },
}

/// An object that survives its creator unless removed.
///
/// `netns` is the namespace's inode number, which a [`Record::Netns`] line
/// before it identifies fully; the device is `ifindex` *and* `ifname` in
/// that namespace (recovery touches it only when both still match).
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
    /// chaos's ifb device (the queue for what a target receives), named
    /// after the chaos process (`ifindex` 0: recorded before it existed).
    Ifb { netns: u64, ifindex: u32, ifname: String },
    /// A cgroup control file chaos changed (`cgroup.freeze` for `pause`,
    /// `cpu.max` for `cpu-starve`), with the value to restore
    /// (crate::controls).
    CgroupControl(crate::controls::Control),
}

impl Leftover {
    /// The inode number of its network namespace (none for a cgroup's).
    pub fn netns(&self) -> Option<u64> {
        match self {
            Self::TcFilter { netns, .. }
            | Self::Clsact { netns, .. }
            | Self::Qdisc { netns, .. }
            | Self::Ifb { netns, .. } => Some(*netns),
            Self::CgroupControl(_) => None,
        }
    }

    /// Its device: (ifindex, ifname) in that namespace.
    pub fn device(&self) -> Option<(u32, &str)> {
        match self {
            Self::TcFilter { ifindex, ifname, .. }
            | Self::Clsact { ifindex, ifname, .. }
            | Self::Qdisc { ifindex, ifname, .. }
            | Self::Ifb { ifindex, ifname, .. } => Some((*ifindex, ifname)),
            Self::CgroupControl(_) => None,
        }
    }
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
            Self::Ifb { netns, ifname, .. } => write!(f, "ifb device {ifname} (netns {netns})"),
            Self::CgroupControl(c) => write!(f, "{c}"),
        }
    }
}

/// A leftover as recorded, with the identity of its namespace when the
/// file has one (files of older chaos versions, and records written
/// without one, name the namespace by inode only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub leftover: Leftover,
    pub netns: Option<NetnsId>,
}

/// An attack recorded and not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub fault: String,
    pub family: String,
    pub target_id: u64,
    pub target_path: PathBuf,
}

/// What a state file says, replayed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub pid: Option<i32>,
    /// Attacks not ended.
    pub attacks: Vec<Claim>,
    /// Objects created and neither removed nor closed, in creation order
    /// reversed (remove filters before the qdisc that holds them).
    pub leftovers: Vec<Entry>,
}

impl Replay {
    pub fn parse(text: &str) -> Self {
        let mut replay = Self::default();
        let mut ended = Vec::new();
        let mut done = Vec::new();
        let mut created: Vec<Entry> = Vec::new();
        // The identity in force for each inode: the latest line before a
        // leftover (one run may meet two namespaces with one inode number,
        // one after the other).
        let mut identities: BTreeMap<u64, NetnsId> = BTreeMap::new();
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<Record>(line) else {
                continue; // a torn last line
            };
            match record {
                Record::Owner { pid, .. } => replay.pid = Some(pid),
                Record::Attack { id, fault, family, target_id, target_path } => {
                    replay.attacks.push(Claim { id, fault, family, target_id, target_path });
                }
                Record::AttackEnded { id } => ended.push(id),
                Record::Netns(id) => {
                    identities.insert(id.inode, id);
                }
                Record::Leftover(l) => {
                    let netns = l.netns().and_then(|n| identities.get(&n).copied());
                    created.push(Entry { leftover: l, netns });
                }
                Record::Removed(l) | Record::Closed { leftover: l, .. } => done.push(l),
            }
        }
        replay.attacks.retain(|a| !ended.contains(&a.id));
        for r in done {
            if let Some(i) = created.iter().position(|c| c.leftover == r) {
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
    /// The namespace identities written so far (the latest per inode).
    noted: BTreeMap<u64, NetnsId>,
}

/// The directory lock, held while recovering, checking for conflicts and
/// registering.
pub struct DirLock {
    _file: File,
    _dir: File,
}

fn flock(file: &File, op: i32) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A blocking flock returns EINTR when a signal arrives.
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn state_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::environment(format!("cannot use state directory {}: {e} (chaos must run as root)", path.display()))
}

/// Create the state directory (0700) if needed, and check it is one only
/// we can write: chaos, as root, creates and removes files there, and a
/// directory others can write (or a symlink to one) would let them choose
/// what.
fn ensure_dir(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| state_error(dir, e))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| state_error(dir, e))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(Error::environment(format!(
            "state directory {} is not a directory owned by uid {euid} that only it can write (it is {}, \
             owner {}, mode {:o}): chaos keeps its records of what to undo there; remove it, or make it a \
             directory owned by uid {euid} with mode 0700",
            dir.display(),
            if meta.file_type().is_symlink() {
                "a symlink"
            } else if meta.file_type().is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

impl DirLock {
    /// Take the directory lock, waiting for whoever holds it.
    pub fn take(dir: &Path) -> Result<Self> {
        ensure_dir(dir)?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| state_error(&path, e))?;
        flock(&file, libc::LOCK_EX).map_err(|e| state_error(&path, e))?;
        // Chaos versions before the lock file locked the directory itself;
        // holding that lock too excludes them while both may run (an
        // upgrade). They never wait for the lock file, so no deadlock; and
        // they cannot remove the directory while the lock file is in it.
        let d = File::open(dir).map_err(|e| state_error(dir, e))?;
        flock(&d, libc::LOCK_EX).map_err(|e| state_error(dir, e))?;
        Ok(Self { _file: file, _dir: d })
    }
}

/// 64 random bits for a file name (uniqueness is O_EXCL's job; this only
/// makes a collision, and the retry, unlikely).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        u64::from_ne_bytes(buf)
    } else {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
    }
}

impl StateFile {
    /// Create and lock this run's state file. Call with the directory lock
    /// held.
    pub fn create(dir: &Path) -> Result<Self> {
        let pid = std::process::id() as i32;
        let mut attempt = 0;
        let (path, file) = loop {
            let path = dir.join(format!("{pid}-{:016x}.jsonl", random_u64()));
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match opened {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(state_error(&path, e)),
            }
        };
        // Ours alone (O_EXCL), so the lock is free: nothing is written
        // before it is held, and no scan sees the file unlocked (scans run
        // under the directory lock, which our caller holds).
        if let Err(e) = flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            let _ = fs::remove_file(&path);
            return Err(state_error(&path, e));
        }
        let mut state = Self { path, file, outstanding: Vec::new(), noted: BTreeMap::new() };
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        state.append(&Record::Owner { pid, command })?;
        Ok(state)
    }

    /// Record the identity of `netns` (once), before leftovers in it are.
    pub fn note_netns(&mut self, netns: &Netns) -> Result<()> {
        let id = netns.id();
        if self.noted.get(&id.inode) == Some(&id) {
            return Ok(());
        }
        self.append(&Record::Netns(id))
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        // One write(2) per record on a file we alone write: a crash leaves
        // whole lines plus at most one torn one.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| state_error(&self.path, e))?;
        match record {
            Record::Leftover(l) => {
                if l.netns().is_some_and(|n| !self.noted.contains_key(&n)) {
                    tracing::debug!(object = %l, "recorded without its namespace's identity");
                }
                self.outstanding.push(l.clone());
            }
            Record::Removed(l) | Record::Closed { leftover: l, .. } => self.outstanding.retain(|o| o != l),
            Record::Netns(id) => {
                self.noted.insert(id.inode, *id);
            }
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
    /// A clean end (everything recorded was removed): the file goes —
    /// unlinked while we still hold its lock, so no scan sees it unlocked.
    /// Otherwise it stays for `chaos recover`. The directory always stays
    /// (see the module's doc).
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
    }
}

/// A state file found in the directory.
pub struct Found {
    pub path: PathBuf,
    pub replay: Replay,
    /// True when its owner still runs (its lock is held).
    pub live: bool,
    /// The open file; for a dead run's, with a shared lock held, so that
    /// nobody takes it over while we recover it.
    file: File,
}

impl Found {
    /// Remove a dead run's file once everything in it is settled.
    pub fn remove(&self) -> io::Result<()> {
        debug_assert!(!self.live);
        fs::remove_file(&self.path)
    }

    /// Append `Closed` records to a dead run's file (which is kept for the
    /// leftovers that failed), so that later recoveries do not retry, or
    /// report, what needs nothing more. Appending, never rewriting: a crash
    /// midway leaves a torn last line, which replay ignores.
    pub fn close(&self, closed: &[(Leftover, String)]) -> io::Result<()> {
        if self.live {
            return Err(io::Error::other("the file's owner is alive"));
        }
        // Exclusive from here: a concurrent `close` (there is none while we
        // hold the directory lock) would interleave lines.
        flock(&self.file, libc::LOCK_EX | libc::LOCK_NB)?;
        let mut out = OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(&self.path)?;
        let mut lines = Vec::new();
        for (leftover, outcome) in closed {
            let record = Record::Closed { leftover: leftover.clone(), outcome: outcome.clone() };
            lines.extend(serde_json::to_vec(&record).expect("records serialize"));
            lines.push(b'\n');
        }
        // A torn last line of the dead run would swallow our first one.
        lines.insert(0, b'\n');
        out.write_all(&lines)?;
        out.sync_data()
    }
}

/// All state files, with whether their owner lives (our own file, if we
/// have one, is live: we hold its lock). Modifies nothing. Call with the
/// directory lock held, so that no file is seen between its creation and
/// its owner's lock.
pub fn scan(dir: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter_map(|path| {
            let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok()?;
            if !file.metadata().ok()?.file_type().is_file() {
                return None;
            }
            // Taken: the owner is dead (the kernel dropped its lock), and
            // we keep it. Refused (EWOULDBLOCK): live. Anything else: not
            // known to be dead, so treated as live — never touched.
            let live = flock(&file, libc::LOCK_SH | libc::LOCK_NB).is_err();
            let mut text = String::new();
            file.read_to_string(&mut text).ok()?;
            Some(Found { path, replay: Replay::parse(&text), live, file })
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    /// A tc filter record, for the tests here and in recover.rs.
    pub(crate) fn filter(handle: u32) -> Leftover {
        Leftover::TcFilter {
            netns: 1,
            ifindex: 2,
            ifname: "eth0".into(),
            parent: 0xffff_fff3,
            priority: 7,
            handle,
        }
    }

    fn id(inode: u64, cookie: u64) -> NetnsId {
        NetnsId { inode, dev: Some(4), cookie: Some(cookie) }
    }

    fn lines(records: &[Record]) -> String {
        records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
    }

    /// A fresh directory for one test, removed by the guard.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("chaos-state-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn replay_subtracts_removed_closed_and_ended() {
        let clsact = Leftover::Clsact { netns: 1, ifindex: 2, ifname: "eth0".into() };
        let attack = |id: &str, target_id| Record::Attack {
            id: id.into(),
            fault: "net-loss".into(),
            family: "net".into(),
            target_id,
            target_path: "/x".into(),
        };
        let mut text = lines(&[
            Record::Owner { pid: 42, command: "chaos".into() },
            attack("a1", 9),
            attack("a2", 10),
            Record::Leftover(clsact.clone()),
            Record::Leftover(filter(1)),
            Record::Leftover(filter(2)),
            Record::Leftover(filter(4)),
            Record::Removed(filter(1)),
            Record::Closed { leftover: filter(4), outcome: "gone".into() },
            Record::AttackEnded { id: "a1".into() },
        ]);
        text.push_str("{\"record\":\"leftover\",\"kind\":\"tc-fil"); // torn line
        let replay = Replay::parse(&text);
        assert_eq!(replay.pid, Some(42));
        assert_eq!(replay.attacks.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a2"]);
        // filters before the qdisc that holds them
        let leftovers: Vec<_> = replay.leftovers.iter().map(|e| e.leftover.clone()).collect();
        assert_eq!(leftovers, vec![filter(2), clsact]);
        assert!(replay.leftovers.iter().all(|e| e.netns.is_none()), "no identity was recorded");
    }

    #[test]
    fn each_leftover_gets_the_namespace_identity_in_force_when_recorded() {
        // Inode 1 names one namespace, then (it died, the number was
        // reused) another: each filter belongs to the one before it.
        let text = lines(&[
            Record::Netns(id(1, 100)),
            Record::Leftover(filter(1)),
            Record::Netns(id(1, 200)),
            Record::Leftover(filter(2)),
        ]);
        let replay = Replay::parse(&text);
        let got: Vec<_> = replay.leftovers.iter().map(|e| (e.leftover.clone(), e.netns)).collect();
        assert_eq!(got, vec![(filter(2), Some(id(1, 200))), (filter(1), Some(id(1, 100)))]);
        // The record format: a namespace line is flat JSON.
        let line = serde_json::to_string(&Record::Netns(id(1, 100))).unwrap();
        assert_eq!(line, r#"{"record":"netns","inode":1,"dev":4,"cookie":100}"#);
    }

    #[test]
    fn live_and_dead_files_are_told_apart() {
        let dir = TempDir::new("live");
        let _lock = DirLock::take(&dir.0).unwrap();
        // A dead owner's file: nobody holds its lock.
        fs::write(dir.0.join("999999-1.jsonl"), lines(&[Record::Leftover(filter(3))])).unwrap();
        // A live one: we hold its lock from another open file description.
        let live_path = dir.0.join("999998-2.jsonl");
        fs::write(&live_path, "").unwrap();
        let held = File::open(&live_path).unwrap();
        flock(&held, libc::LOCK_EX).unwrap();
        let found = scan(&dir.0);
        assert_eq!(found.len(), 2, "the lock file is not a state file");
        assert!(found.iter().any(|f| f.path == live_path && f.live));
        assert!(found.iter().any(|f| f.replay.leftovers.len() == 1 && !f.live));
    }

    /// Issue 11, item 2: a dead run whose PID is ours (chaos as PID 1 of a
    /// container) had its file truncated by our `create` and skipped by
    /// `scan`. Now our file is another one, and the dead run's is found,
    /// dead, with its leftovers.
    #[test]
    fn a_dead_run_with_our_pid_is_neither_truncated_nor_skipped() {
        let dir = TempDir::new("samepid");
        let lock = DirLock::take(&dir.0).unwrap();
        let pid = std::process::id();
        let dead_text = lines(&[
            Record::Owner { pid: pid as i32, command: "chaos (dead)".into() },
            Record::Netns(id(1, 100)),
            Record::Leftover(filter(3)),
        ]);
        // Both the old naming (<pid>.jsonl) and the new one.
        let old_name = dir.0.join(format!("{pid}.jsonl"));
        let new_name = dir.0.join(format!("{pid}-{:016x}.jsonl", 7));
        fs::write(&old_name, &dead_text).unwrap();
        fs::write(&new_name, &dead_text).unwrap();
        let ours = StateFile::create(&dir.0).unwrap();
        assert!(ours.path() != old_name && ours.path() != new_name);
        assert!(ours.path().file_name().unwrap().to_str().unwrap().starts_with(&format!("{pid}-")));
        assert_eq!(fs::read_to_string(&old_name).unwrap(), dead_text);
        assert_eq!(fs::read_to_string(&new_name).unwrap(), dead_text);
        let found = scan(&dir.0);
        let dead: Vec<_> = found.iter().filter(|f| !f.live).collect();
        assert_eq!(dead.len(), 2, "both dead files are found");
        for f in dead {
            assert_eq!(f.replay.pid, Some(pid as i32));
            assert_eq!(f.replay.leftovers, vec![Entry { leftover: filter(3), netns: Some(id(1, 100)) }]);
        }
        let own: Vec<_> = found.iter().filter(|f| f.live).collect();
        assert_eq!(own.len(), 1, "our own file is live");
        assert_eq!(own[0].path, ours.path());
        drop(lock);
        let path = ours.path().to_owned();
        drop(ours);
        assert!(!path.exists(), "a clean end removes our file");
        assert!(old_name.exists() && new_name.exists(), "and only ours");
    }

    /// Issue 11, item 3, deterministically: a run ending cleanly while
    /// another holds the directory lock used to remove the directory (the
    /// lock's inode) — after which a third process created a new one and
    /// locked it at once, alongside the holder. The lock must keep
    /// excluding.
    #[test]
    fn a_clean_end_does_not_break_the_directory_lock() {
        let dir = TempDir::new("lock");
        let run = {
            let _l = DirLock::take(&dir.0).unwrap();
            StateFile::create(&dir.0).unwrap()
        };
        let held = DirLock::take(&dir.0).unwrap();
        drop(run); // clean: nothing outstanding
        let (tx, rx) = mpsc::channel();
        let d = dir.0.clone();
        let waiter = std::thread::spawn(move || {
            let l = DirLock::take(&d).unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a second process took the directory lock while another held it"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).expect("the lock is taken once released");
        waiter.join().unwrap();
        assert!(dir.0.join(LOCK_FILE).exists(), "the lock file stays");
    }

    #[test]
    fn an_unsafe_state_directory_is_refused() {
        let dir = TempDir::new("perm");
        fs::create_dir_all(&dir.0).unwrap();
        let open = dir.0.join("open");
        DirBuilder::new().mode(0o777).create(&open).unwrap();
        fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let err = DirLock::take(&open).err().expect("a world-writable directory is refused").to_string();
        assert!(err.contains("mode 777") && err.contains("0700"), "{err}");
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(&dir.0, &link).unwrap();
        let err = DirLock::take(&link).err().expect("a symlink is refused").to_string();
        assert!(err.contains("a symlink"), "{err}");
    }

    #[test]
    fn closing_a_dead_file_appends_and_replay_honours_it() {
        let dir = TempDir::new("close");
        let _lock = DirLock::take(&dir.0).unwrap();
        let path = dir.0.join("5-1.jsonl");
        // A dead run that was killed mid-line.
        let mut text = lines(&[Record::Leftover(filter(1)), Record::Leftover(filter(2))]);
        text.push_str("{\"record\":\"removed\",\"ki");
        fs::write(&path, &text).unwrap();
        let found = scan(&dir.0);
        assert_eq!(found[0].replay.leftovers.len(), 2);
        found[0].close(&[(filter(1), "gone".into())]).unwrap();
        drop(found);
        let after = fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(&text), "appended, not rewritten");
        let replay = Replay::parse(&after);
        assert_eq!(replay.leftovers.iter().map(|e| e.leftover.clone()).collect::<Vec<_>>(), vec![filter(2)]);
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

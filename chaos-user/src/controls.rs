//! cgroup v2 control files that chaos changes for a fault (`cgroup.freeze`
//! for `pause`, `cpu.max` for `cpu-starve`, `memory.high`, one device's
//! line of `io.max`), and how each change is undone.
//!
//! Such a fault is no rule in a map: the kernel holds no deadline for it,
//! and it does not end when chaos dies. So every change is a [`Control`]:
//! the cgroup (by path *and* id), the file, the value found before and the
//! value set. It is recorded in the state file before the write (for
//! `chaos recover`), handed to the guardian (`crate::guardian`, which
//! restores it at the deadline or as soon as chaos dies), and restored by
//! chaos itself at the end. All three restore the same way,
//! [`Control::restore`]: only in the same cgroup (its id is the inode of
//! its directory, which a cgroup of the same path made later does not
//! share), and only while the file still holds what chaos set — a value
//! someone else wrote since is theirs, and stays.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// One control file of one cgroup, as chaos changed it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Control {
    /// The cgroup's directory.
    pub cgroup: PathBuf,
    /// The cgroup's id: the inode number of its directory.
    pub id: u64,
    /// The control file, e.g. `cgroup.freeze`.
    pub file: String,
    /// In a nested keyed file (`io.max`: one line per device, `MAJ:MIN
    /// rbps=.. wbps=..`), the key of the line this control is; `None`:
    /// the whole file. A key without a line reads as `""` (the kernel
    /// prints no line for a device without limits) and is written back as
    /// its line with every field `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its value before chaos changed it (trimmed).
    pub previous: String,
    /// The value chaos writes.
    pub set: String,
}

/// What [`Control::restore`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// The previous value was written back.
    Restored,
    /// The file already held the previous value.
    AlreadyBack,
    /// The cgroup is gone, or another cgroup has its path.
    Gone(String),
    /// The file holds neither value: someone else changed it; left alone.
    Changed(String),
}

impl Control {
    /// The control `file` of `cgroup` (id `id`) as it is now, to be set to
    /// `set`.
    pub fn read(cgroup: &Path, id: u64, file: &str, set: &str) -> io::Result<Self> {
        let dir = open_cgroup(cgroup, id)?;
        let previous = read_at(&dir, cgroup, file)?;
        Ok(Self {
            cgroup: cgroup.to_owned(),
            id,
            file: file.to_owned(),
            key: None,
            previous,
            set: set.to_owned(),
        })
    }

    /// The line `key` of the nested keyed `file` of `cgroup` (id `id`) as
    /// it is now (`""` if the file has none), to be set to `set`, the
    /// whole line as the kernel prints it back.
    pub fn read_line(cgroup: &Path, id: u64, file: &str, key: &str, set: &str) -> io::Result<Self> {
        let c = Self { key: Some(key.to_owned()), ..Self::read(cgroup, id, file, set)? };
        Ok(Self { previous: c.value_in(&c.previous), ..c })
    }

    /// Write the value chaos sets.
    pub fn apply(&self) -> io::Result<()> {
        self.write(&self.set)
    }

    /// Write `value` to the file, in the recorded cgroup only.
    pub fn write(&self, value: &str) -> io::Result<()> {
        let dir = open_cgroup(&self.cgroup, self.id)?;
        write_at(&dir, &self.cgroup, &self.file, &self.written(value))
    }

    /// The file's value now (trimmed; a keyed control's line).
    pub fn current(&self) -> io::Result<String> {
        let dir = open_cgroup(&self.cgroup, self.id)?;
        read_at(&dir, &self.cgroup, &self.file).map(|text| self.value_in(&text))
    }

    /// This control's value in the file's text: all of it, or its line.
    fn value_in(&self, text: &str) -> String {
        let Some(key) = &self.key else { return text.to_owned() };
        text.lines()
            .map(str::trim)
            .find(|l| l.split_whitespace().next() == Some(key.as_str()))
            .unwrap_or_default()
            .to_owned()
    }

    /// What is written for `value`: itself, or for a keyed control's
    /// missing line, the key with every field of the line chaos sets at
    /// `max`, which removes the line (`io.max`: block/blk-throttle.c,
    /// `tg_set_limit()` takes `max` as no limit, and a device without
    /// limits is not printed).
    fn written(&self, value: &str) -> String {
        match &self.key {
            Some(key) if value.is_empty() => {
                let fields = self.set.split_whitespace().skip(1).filter_map(|f| f.split_once('='));
                fields.fold(key.clone(), |line, (name, _)| format!("{line} {name}=max"))
            }
            _ => value.to_owned(),
        }
    }

    /// Write the previous value back if the file still holds the value
    /// chaos set (see the module's doc).
    pub fn restore(&self) -> io::Result<Restored> {
        let dir = match open_cgroup(&self.cgroup, self.id) {
            Ok(dir) => dir,
            Err(e) if gone(&e) => return Ok(Restored::Gone(format!("{}: {e}", self.cgroup.display()))),
            Err(e) => return Err(e),
        };
        let now = match read_at(&dir, &self.cgroup, &self.file) {
            Ok(now) => self.value_in(&now),
            // Removed between the open and the read: the files of a
            // removed cgroup answer ENODEV.
            Err(e) if gone(&e) => return Ok(Restored::Gone(format!("{}: {e}", self.cgroup.display()))),
            Err(e) => return Err(e),
        };
        if now == self.previous {
            return Ok(Restored::AlreadyBack);
        }
        if now != self.set {
            return Ok(Restored::Changed(format!(
                "{} of {} is {now:?}, neither chaos's {:?} nor the {:?} before: someone else changed it",
                self.file,
                self.cgroup.display(),
                self.set,
                self.previous
            )));
        }
        write_at(&dir, &self.cgroup, &self.file, &self.written(&self.previous)).map(|()| Restored::Restored)
    }
}

/// Write `value` once to the control `file` of `cgroup` (id `id`), a file
/// with nothing to restore (`cgroup.kill`): only in that cgroup, as
/// [`Control::write`].
pub fn write_once(cgroup: &Path, id: u64, file: &str, value: &str) -> io::Result<()> {
    let dir = open_cgroup(cgroup, id)?;
    write_at(&dir, cgroup, file, value)
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(key) = &self.key {
            write!(f, " ({key})")?;
        }
        write!(f, " of cgroup {} (id {}), {:?} before", self.cgroup.display(), self.id, self.previous)
    }
}

/// The cgroup's directory, if it is still the cgroup with id `id`. The
/// control files are then opened through `/proc/self/fd/N` of this handle,
/// so that a cgroup removed and made again at the same path between the
/// check and the write is never written.
fn open_cgroup(cgroup: &Path, id: u64) -> io::Result<File> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(cgroup)?;
    let ino = dir.metadata()?.ino();
    if ino != id {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is another cgroup now (id {ino}, not {id})", cgroup.display()),
        ));
    }
    Ok(dir)
}

/// The cgroup is not there: removed, or another one at its path.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ESTALE))
}

/// `e` with what was being done; a removed cgroup's files answer ENODEV
/// (kernfs), which stays recognizable as not found.
fn context(e: io::Error, what: String) -> io::Error {
    let kind = if gone(&e) { io::ErrorKind::NotFound } else { e.kind() };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// `file` in the directory `dir` (opened by [`open_cgroup`]): a name in
/// it, never a path elsewhere (the names come from the state file and the
/// guardian's pipe, both root's alone; this is the second line).
fn at(dir: &File, file: &str) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd as _;
    if file.is_empty() || file.contains('/') || file == "." || file == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{file:?} is not a control file's name"),
        ));
    }
    Ok(PathBuf::from(format!("/proc/self/fd/{}/{file}", dir.as_raw_fd())))
}

fn read_at(dir: &File, cgroup: &Path, file: &str) -> io::Result<String> {
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(at(dir, file)?)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| context(e, format!("reading {}", cgroup.join(file).display())))?;
    Ok(text.trim().to_owned())
}

fn write_at(dir: &File, cgroup: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(at(dir, file)?)
        // One write(2): a control file takes its value in one write.
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| context(e, format!("writing {value:?} to {}", cgroup.join(file).display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for a cgroup (the logic, not the kernel's
    /// files: the integration tests use real cgroups).
    struct Fake(PathBuf);
    impl Fake {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn fake(test: &str, value: &str) -> (Fake, Control) {
        let dir = Fake(std::env::temp_dir().join(format!("chaos-controls-{}-{test}", std::process::id())));
        let _ = std::fs::remove_dir_all(dir.path());
        std::fs::create_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), value).unwrap();
        let id = std::fs::metadata(dir.path()).unwrap().ino();
        let c = Control::read(dir.path(), id, "cgroup.freeze", "1").unwrap();
        (dir, c)
    }

    #[test]
    fn restores_only_what_chaos_set_in_the_same_cgroup() {
        let (dir, c) = fake("restore", "0\n");
        assert_eq!(c.previous, "0");
        assert_eq!(c.restore().unwrap(), Restored::AlreadyBack);
        c.apply().unwrap();
        assert_eq!(c.current().unwrap(), "1");
        assert_eq!(c.restore().unwrap(), Restored::Restored);
        assert_eq!(c.current().unwrap(), "0");
        // Someone else's value stays.
        std::fs::write(dir.path().join("cgroup.freeze"), "7").unwrap();
        assert!(matches!(c.restore().unwrap(), Restored::Changed(_)));
        assert_eq!(c.current().unwrap(), "7");
        // A record naming a path, not a file of the cgroup, is refused.
        let escape = Control { file: "../cgroup.freeze".into(), ..c.clone() };
        assert_eq!(escape.restore().unwrap_err().kind(), io::ErrorKind::InvalidInput);
        // Another directory at the same path is not the cgroup.
        // (made while the first exists, so its inode differs)
        let path = dir.path().to_owned();
        let other = path.with_extension("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("cgroup.freeze"), "1").unwrap();
        std::fs::remove_dir_all(&path).unwrap();
        assert!(matches!(c.restore().unwrap(), Restored::Gone(_)));
        std::fs::rename(&other, &path).unwrap();
        assert!(matches!(c.restore().unwrap(), Restored::Gone(_)), "{:?}", c.restore());
        assert_eq!(std::fs::read_to_string(path.join("cgroup.freeze")).unwrap(), "1");
    }

    #[test]
    fn a_keyed_control_is_its_line_and_a_missing_line_is_written_as_no_limit() {
        let (dir, c) = fake("keyed", "0");
        let io = "8:0 rbps=max wbps=max riops=100 wiops=max\n";
        std::fs::write(dir.path().join("io.max"), io).unwrap();
        let set = "7:0 rbps=max wbps=2097152 riops=max wiops=max";
        let line = Control::read_line(dir.path(), c.id, "io.max", "7:0", set).unwrap();
        assert_eq!(line.previous, "");
        let other =
            Control::read_line(dir.path(), c.id, "io.max", "8:0", "8:0 rbps=1 wbps=max riops=100 wiops=max");
        assert_eq!(other.unwrap().previous, "8:0 rbps=max wbps=max riops=100 wiops=max");
        assert_eq!(line.current().unwrap(), "");
        assert_eq!(line.restore().unwrap(), Restored::AlreadyBack);
        // (a plain file holds what is written; the kernel's merges lines)
        std::fs::write(dir.path().join("io.max"), format!("{io}{set}\n")).unwrap();
        assert_eq!(line.current().unwrap(), set);
        assert_eq!(line.restore().unwrap(), Restored::Restored);
        // (written at the start of the plain file, without truncating it)
        let written = std::fs::read_to_string(dir.path().join("io.max")).unwrap();
        assert_eq!(written.lines().next(), Some("7:0 rbps=max wbps=max riops=max wiops=max"));
        // Records from before keys existed read as whole-file controls.
        let old: Control = serde_json::from_str(
            r#"{"cgroup":"/x","id":1,"file":"cpu.max","previous":"max 100000","set":"20000 100000"}"#,
        )
        .unwrap();
        assert_eq!(old.key, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("key"));
    }
}

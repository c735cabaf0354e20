//! cgroup v2 control files that chaos changes for a fault (`cgroup.freeze`
//! for `pause`, `cpu.max` for `cpu-starve`), and how each change is undone.
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
        Ok(Self { cgroup: cgroup.to_owned(), id, file: file.to_owned(), previous, set: set.to_owned() })
    }

    /// Write the value chaos sets.
    pub fn apply(&self) -> io::Result<()> {
        self.write(&self.set)
    }

    /// Write `value` to the file, in the recorded cgroup only.
    pub fn write(&self, value: &str) -> io::Result<()> {
        let dir = open_cgroup(&self.cgroup, self.id)?;
        write_at(&dir, &self.cgroup, &self.file, value)
    }

    /// The file's value now (trimmed).
    pub fn current(&self) -> io::Result<String> {
        let dir = open_cgroup(&self.cgroup, self.id)?;
        read_at(&dir, &self.cgroup, &self.file)
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
            Ok(now) => now,
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
        write_at(&dir, &self.cgroup, &self.file, &self.previous).map(|()| Restored::Restored)
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
        write!(
            f,
            "{} of cgroup {} (id {}), {:?} before",
            self.file,
            self.cgroup.display(),
            self.id,
            self.previous
        )
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
    fn fake(value: &str) -> (Fake, Control) {
        let dir = Fake(std::env::temp_dir().join(format!("chaos-controls-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(dir.path());
        std::fs::create_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), value).unwrap();
        let id = std::fs::metadata(dir.path()).unwrap().ino();
        let c = Control::read(dir.path(), id, "cgroup.freeze", "1").unwrap();
        (dir, c)
    }

    #[test]
    fn restores_only_what_chaos_set_in_the_same_cgroup() {
        let (dir, c) = fake("0\n");
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
}

//! Files and directories that root creates where other users can write.
//!
//! chaos runs as root, and its output paths (`--report`, `--junit`,
//! `--events`, the demo's directory) may lie in a directory another user
//! can write to (`/tmp`). Opening such a path with `File::create` follows a
//! symlink planted there and truncates whatever it points to; a fixed
//! `/tmp/chaos-…` path can be created by that user first. So:
//!
//! - a file is never opened by its final name: a new file with a random
//!   name is created next to it with `O_CREAT | O_EXCL | O_NOFOLLOW` (which
//!   refuses to open anything that already exists, a symlink included),
//!   written, and renamed over the final name. `rename(2)` replaces the
//!   directory entry itself, never what a symlink there points to;
//! - except that an existing FIFO or character device (`/dev/stdout`) in a
//!   directory only root can write to is written in place;
//! - a directory of our own is made by `mkdtemp(3)` (mode 0700, a random
//!   name, created exclusively), never at a predictable path.

use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::{OsStrExt as _, OsStringExt as _},
    },
    path::{Path, PathBuf},
};

/// 16 hex digits from the kernel's random pool (getrandom(2)).
pub fn random_suffix() -> io::Result<String> {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The directory a file named `path` goes into, opened (the path the
/// user gave is resolved as they wrote it: only the final name is ours to
/// protect), and that final name.
fn split(path: &Path) -> io::Result<(OwnedFd, CString)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "not a file name (ends in `..` or `/`)")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c = c_path(dir)?;
    // SAFETY: a valid C string; the fd is checked and then owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    Ok((dir, name))
}

/// Create a new file `name` in `dir`: never an existing one, never through
/// a symlink. Mode 0644 (reports are for people and CI to read).
fn create_new_at(dir: &OwnedFd, name: &CString) -> io::Result<File> {
    // SAFETY: valid fd and C string; the fd is checked and then owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn rename_at(dir: &OwnedFd, from: &CString, to: &CString) -> io::Result<()> {
    // SAFETY: valid fd and C strings.
    if unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlink_at(dir: &OwnedFd, name: &CString) {
    // SAFETY: valid fd and C string.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
}

/// A hidden temporary name next to `name`: `.NAME.RANDOM.tmp`.
fn temp_name(name: &CString) -> io::Result<CString> {
    let mut t = b".".to_vec();
    t.extend_from_slice(name.as_bytes());
    t.extend_from_slice(format!(".{}.tmp", random_suffix()?).as_bytes());
    CString::new(t).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Create a fresh file with `init` written to it and put it at `path`,
/// replacing whatever directory entry was there (a symlink is replaced, not
/// followed). A reader of `path` sees the old entry or the whole new file.
fn replace_with(path: &Path, init: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<File> {
    let (dir, name) = split(path)?;
    if let Some(mut file) = open_stream(&dir, &name)? {
        init(&mut file)?;
        return Ok(file);
    }
    let tmp = temp_name(&name)?;
    let mut file = create_new_at(&dir, &tmp)?;
    let done = init(&mut file).and_then(|()| rename_at(&dir, &tmp, &name));
    if let Err(e) = done {
        unlink_at(&dir, &tmp);
        return Err(e);
    }
    Ok(file)
}

/// An existing FIFO, character device or socket at `name` (`--events
/// /dev/stdout`), opened to write to in place, but only in a directory no
/// one but root (or us) can write to, where whatever is at `name` was put
/// there by root. Elsewhere, and for regular files, `None`: the entry is
/// replaced (a planted symlink to a disk or a terminal is not followed).
fn open_stream(dir: &OwnedFd, name: &CString) -> io::Result<Option<File>> {
    // SAFETY: fstat and fstatat write into zeroed structs we own; valid fd
    // and C string.
    let (dir_st, st) = unsafe {
        let mut dir_st: libc::stat = std::mem::zeroed();
        if libc::fstat(dir.as_raw_fd(), &mut dir_st) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, 0) != 0 {
            return Ok(None);
        }
        (dir_st, st)
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let trusted = (dir_st.st_uid == 0 || dir_st.st_uid == me) && dir_st.st_mode & 0o022 == 0;
    let stream = matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFCHR | libc::S_IFSOCK);
    if !trusted || !stream {
        return Ok(None);
    }
    // SAFETY: valid fd and C string; the fd is checked and then owned.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

/// Write `bytes` to `path` atomically, without following a symlink at
/// `path` and without ever opening an existing file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |f| f.write_all(bytes)).map(drop)
}

/// A new, empty file at `path` to write to (event lines): as
/// [`write_atomic`], the directory entry is replaced, nothing is followed.
pub fn create_replacing(path: &Path) -> io::Result<File> {
    replace_with(path, |_| Ok(()))
}

/// `mkdtemp(3)` in `parent`: a new directory `PREFIX-XXXXXX`, mode 0700,
/// created exclusively (it cannot be one another user made first).
pub fn private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let mut template: OsString = parent.join(prefix).into_os_string();
    template.push("-XXXXXX");
    let mut bytes = template.into_vec();
    bytes.push(0);
    // SAFETY: a NUL-terminated, writable template that mkdtemp fills in.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn scratch() -> Scratch {
        Scratch(private_dir(&std::env::temp_dir(), "chaos-safe-fs-test").unwrap())
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let s = scratch();
        let victim = s.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        let report = s.0.join("report.json");
        std::os::unix::fs::symlink(&victim, &report).unwrap();
        write_atomic(&report, b"{}\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&report).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&report).unwrap(), "{}\n");
        // The old `PATH.tmp` name is not used either.
        std::os::unix::fs::symlink(&victim, s.0.join("events.jsonl.tmp")).unwrap();
        let mut f = create_replacing(&s.0.join("events.jsonl")).unwrap();
        f.write_all(b"x\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(s.0.join("events.jsonl")).unwrap(), "x\n");
        // Nothing but what we asked for is left in the directory.
        let mut names: Vec<String> = fs::read_dir(&s.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["events.jsonl", "events.jsonl.tmp", "report.json", "victim"]);
    }

    #[test]
    fn a_hard_link_at_the_path_is_replaced_not_truncated() {
        let s = scratch();
        let victim = s.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::hard_link(&victim, s.0.join("out.xml")).unwrap();
        write_atomic(&s.0.join("out.xml"), b"<x/>").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn streams_are_written_in_place_only_where_root_put_them() {
        let s = scratch();
        // Ours (0700): a symlink to /dev/null is what the user asked for.
        let null = s.0.join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        create_replacing(&null).unwrap().write_all(b"x").unwrap();
        assert!(fs::symlink_metadata(&null).unwrap().file_type().is_symlink());
        // Anyone's: the same symlink, planted, is replaced.
        let open = s.0.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("/dev/null", open.join("null")).unwrap();
        write_atomic(&open.join("null"), b"x").unwrap();
        assert!(fs::symlink_metadata(open.join("null")).unwrap().file_type().is_file());
    }

    #[test]
    fn errors_leave_no_temporary_file() {
        let s = scratch();
        fs::create_dir(s.0.join("dir")).unwrap();
        fs::write(s.0.join("dir/x"), "").unwrap();
        // Renaming a file over a non-empty directory fails.
        assert!(write_atomic(&s.0.join("dir"), b"x").is_err());
        assert_eq!(fs::read_dir(&s.0).unwrap().count(), 1);
        assert!(write_atomic(&s.0.join("missing/x"), b"x").is_err());
    }

    #[test]
    fn private_dirs_are_new_and_0700() {
        let s = scratch();
        assert_eq!(fs::metadata(&s.0).unwrap().permissions().mode() & 0o777, 0o700);
        let other = private_dir(&std::env::temp_dir(), "chaos-safe-fs-test").unwrap();
        let _o = Scratch(other.clone());
        assert_ne!(other, s.0);
    }
}

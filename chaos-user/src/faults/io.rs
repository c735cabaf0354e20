//! I/O faults: fail file operations of the target with a chosen errno.

use std::{fmt, path::PathBuf, str::FromStr};

use chaos_abi::io::{
    IDX_OPEN, IDX_READ, IDX_READDIR, IDX_WRITE, IoRule, MAX_INODES, N_OPS, OP_OPEN, OP_READ, OP_READDIR,
    OP_WRITE,
};
use serde::Serialize;

use crate::units::Percent;

/// A file operation an I/O fault can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IoOp {
    /// Every open of a file (open, openat, openat2, creat; the opens of
    /// execve), except O_PATH.
    Open,
    /// read, readv, pread, preadv, the reading side of sendfile, splice and
    /// copy_file_range, io_uring and AIO reads.
    Read,
    /// write, writev, pwrite, pwritev, the writing side of sendfile, splice
    /// and copy_file_range, io_uring and AIO writes, fallocate.
    Write,
    /// Listing a directory (getdents, getdents64).
    Readdir,
}

impl IoOp {
    pub const ALL: [IoOp; 4] = [IoOp::Open, IoOp::Read, IoOp::Write, IoOp::Readdir];

    pub fn bit(self) -> u32 {
        match self {
            Self::Open => OP_OPEN,
            Self::Read => OP_READ,
            Self::Write => OP_WRITE,
            Self::Readdir => OP_READDIR,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Self::Open => IDX_OPEN,
            Self::Read => IDX_READ,
            Self::Write => IDX_WRITE,
            Self::Readdir => IDX_READDIR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::Readdir => "readdir",
        }
    }
}

impl FromStr for IoOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|op| op.name() == s.trim()).ok_or_else(|| {
            format!("unknown operation {s:?}; the operations are open, read, write and readdir")
        })
    }
}

/// Linux errno names and numbers (include/uapi/asm-generic/errno-base.h,
/// errno.h), from the libc crate so that they are this architecture's.
/// Aliases (EWOULDBLOCK, EDEADLOCK, ENOTSUP) come after the name the kernel
/// headers define first, which is the one printed.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("ENXIO", libc::ENXIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EBADF", libc::EBADF),
    ("ECHILD", libc::ECHILD),
    ("EAGAIN", libc::EAGAIN),
    ("EWOULDBLOCK", libc::EWOULDBLOCK),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("ENOTBLK", libc::ENOTBLK),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENODEV", libc::ENODEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ENFILE", libc::ENFILE),
    ("EMFILE", libc::EMFILE),
    ("ENOTTY", libc::ENOTTY),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("ESPIPE", libc::ESPIPE),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("EPIPE", libc::EPIPE),
    ("EDOM", libc::EDOM),
    ("ERANGE", libc::ERANGE),
    ("EDEADLK", libc::EDEADLK),
    ("EDEADLOCK", libc::EDEADLOCK),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("ENOLCK", libc::ENOLCK),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ELOOP", libc::ELOOP),
    ("ENOMSG", libc::ENOMSG),
    ("EIDRM", libc::EIDRM),
    ("ECHRNG", libc::ECHRNG),
    ("EL2NSYNC", libc::EL2NSYNC),
    ("EL3HLT", libc::EL3HLT),
    ("EL3RST", libc::EL3RST),
    ("ELNRNG", libc::ELNRNG),
    ("EUNATCH", libc::EUNATCH),
    ("ENOCSI", libc::ENOCSI),
    ("EL2HLT", libc::EL2HLT),
    ("EBADE", libc::EBADE),
    ("EBADR", libc::EBADR),
    ("EXFULL", libc::EXFULL),
    ("ENOANO", libc::ENOANO),
    ("EBADRQC", libc::EBADRQC),
    ("EBADSLT", libc::EBADSLT),
    ("EBFONT", libc::EBFONT),
    ("ENOSTR", libc::ENOSTR),
    ("ENODATA", libc::ENODATA),
    ("ETIME", libc::ETIME),
    ("ENOSR", libc::ENOSR),
    ("ENONET", libc::ENONET),
    ("ENOPKG", libc::ENOPKG),
    ("EREMOTE", libc::EREMOTE),
    ("ENOLINK", libc::ENOLINK),
    ("EADV", libc::EADV),
    ("ESRMNT", libc::ESRMNT),
    ("ECOMM", libc::ECOMM),
    ("EPROTO", libc::EPROTO),
    ("EMULTIHOP", libc::EMULTIHOP),
    ("EDOTDOT", libc::EDOTDOT),
    ("EBADMSG", libc::EBADMSG),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ENOTUNIQ", libc::ENOTUNIQ),
    ("EBADFD", libc::EBADFD),
    ("EREMCHG", libc::EREMCHG),
    ("ELIBACC", libc::ELIBACC),
    ("ELIBBAD", libc::ELIBBAD),
    ("ELIBSCN", libc::ELIBSCN),
    ("ELIBMAX", libc::ELIBMAX),
    ("ELIBEXEC", libc::ELIBEXEC),
    ("EILSEQ", libc::EILSEQ),
    ("ERESTART", libc::ERESTART),
    ("ESTRPIPE", libc::ESTRPIPE),
    ("EUSERS", libc::EUSERS),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EDESTADDRREQ", libc::EDESTADDRREQ),
    ("EMSGSIZE", libc::EMSGSIZE),
    ("EPROTOTYPE", libc::EPROTOTYPE),
    ("ENOPROTOOPT", libc::ENOPROTOOPT),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("ESOCKTNOSUPPORT", libc::ESOCKTNOSUPPORT),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ENOTSUP", libc::ENOTSUP),
    ("EPFNOSUPPORT", libc::EPFNOSUPPORT),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETDOWN", libc::ENETDOWN),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ENETRESET", libc::ENETRESET),
    ("ECONNABORTED", libc::ECONNABORTED),
    ("ECONNRESET", libc::ECONNRESET),
    ("ENOBUFS", libc::ENOBUFS),
    ("EISCONN", libc::EISCONN),
    ("ENOTCONN", libc::ENOTCONN),
    ("ESHUTDOWN", libc::ESHUTDOWN),
    ("ETOOMANYREFS", libc::ETOOMANYREFS),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EHOSTDOWN", libc::EHOSTDOWN),
    ("EHOSTUNREACH", libc::EHOSTUNREACH),
    ("EALREADY", libc::EALREADY),
    ("EINPROGRESS", libc::EINPROGRESS),
    ("ESTALE", libc::ESTALE),
    ("EUCLEAN", libc::EUCLEAN),
    ("ENOTNAM", libc::ENOTNAM),
    ("ENAVAIL", libc::ENAVAIL),
    ("EISNAM", libc::EISNAM),
    ("EREMOTEIO", libc::EREMOTEIO),
    ("EDQUOT", libc::EDQUOT),
    ("ENOMEDIUM", libc::ENOMEDIUM),
    ("EMEDIUMTYPE", libc::EMEDIUMTYPE),
    ("ECANCELED", libc::ECANCELED),
    ("ENOKEY", libc::ENOKEY),
    ("EKEYEXPIRED", libc::EKEYEXPIRED),
    ("EKEYREVOKED", libc::EKEYREVOKED),
    ("EKEYREJECTED", libc::EKEYREJECTED),
    ("EOWNERDEAD", libc::EOWNERDEAD),
    ("ENOTRECOVERABLE", libc::ENOTRECOVERABLE),
    ("ERFKILL", libc::ERFKILL),
    ("EHWPOISON", libc::EHWPOISON),
];

/// An errno a program can receive: a name from the kernel's headers or its
/// number. Kernel-internal codes (ERESTARTSYS and the like, 512 and up)
/// never reach a program and are refused, as are 0 and unknown numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno {
    pub number: i32,
    pub name: &'static str,
}

impl Errno {
    pub fn from_number(number: i32) -> Option<Self> {
        ERRNOS.iter().find(|(_, n)| *n == number).map(|(name, number)| Self { number: *number, name })
    }
}

impl FromStr for Errno {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let hint = "e.g. EIO, ENOSPC, EACCES, EROFS, EDQUOT, EMFILE, or a number from 1 to 133";
        if let Ok(n) = t.parse::<i64>() {
            return i32::try_from(n)
                .ok()
                .and_then(Self::from_number)
                .ok_or_else(|| format!("{t} is not an errno a program can receive ({hint})"));
        }
        let upper = t.to_ascii_uppercase();
        ERRNOS
            .iter()
            .find(|(name, _)| *name == upper)
            .map(|(name, number)| Self { number: *number, name })
            .ok_or_else(|| format!("unknown errno {t:?} ({hint})"))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.number)
    }
}

impl Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

/// Where the `--path`s are looked up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PathsIn {
    /// In the root directory (and mount namespace) of the target's
    /// processes, as they see the filesystem: `/var/lib/mysql` names a
    /// container's own directory. chaos's own view when the target has no
    /// process.
    #[default]
    Target,
    /// In chaos's own view of the filesystem.
    Host,
}

/// `io-error`: fail some file operations of the target with `errno`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IoError {
    pub errno: Errno,
    /// Share of the matching calls to fail.
    pub percent: Percent,
    /// Files and directories whose subtrees are affected, absolute (relative
    /// ones were made absolute against chaos's working directory).
    pub paths: Vec<PathBuf>,
    pub paths_in: PathsIn,
    /// Sorted, without duplicates, never empty.
    pub operations: Vec<IoOp>,
    /// The first `after` matching calls are never failed.
    pub after: u64,
    /// Only the `first` matching calls after those may fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
}

impl IoError {
    /// It fails reads, writes or directory reads, not only opens.
    pub fn beyond_open(&self) -> bool {
        self.operations.iter().any(|op| *op != IoOp::Open)
    }

    /// It counts calls (`--after`, `--first`).
    pub fn windowed(&self) -> bool {
        self.after != 0 || self.first.is_some()
    }

    /// Check and normalize what the user gave. Errors name the flag and
    /// the fix.
    pub fn new(
        errno: Errno,
        percent: Percent,
        paths: Vec<PathBuf>,
        paths_in: PathsIn,
        operations: Vec<IoOp>,
        after: u64,
        first: Option<u64>,
    ) -> Result<Self, String> {
        if paths.is_empty() {
            return Err("io-error needs at least one path (--path DIR): the files it fails are those under \
                        it; give --path / for every file"
                .into());
        }
        if paths.len() > MAX_INODES {
            return Err(format!(
                "{} paths given, at most {MAX_INODES} per attack; use a common parent directory",
                paths.len()
            ));
        }
        let mut abs = Vec::new();
        for p in paths {
            if p.as_os_str().is_empty() {
                return Err("an empty path; give a file or directory, e.g. --path /var/lib/data".into());
            }
            // A relative path has no meaning in the target's root
            // directory (its processes each have their own working
            // directory); in chaos's view it is chaos's working directory,
            // as for any command.
            if p.is_relative() && paths_in == PathsIn::Target {
                return Err(format!(
                    "--path {} is relative: give it absolute, as the target's processes see it (e.g. \
                     /var/lib/data), or add --paths-in host to resolve it against chaos's working directory",
                    p.display()
                ));
            }
            let a = std::path::absolute(&p).map_err(|e| format!("path {}: {e}", p.display()))?;
            if !abs.contains(&a) {
                abs.push(a);
            }
        }
        let mut operations = if operations.is_empty() { IoOp::ALL.to_vec() } else { operations };
        operations.sort();
        operations.dedup();
        if first == Some(0) {
            return Err("--first 0 would fail nothing; give a positive count, or drop --first".into());
        }
        if let Some(f) = first
            && after.checked_add(f).is_none()
        {
            return Err(format!("--after {after} --first {f} overflows; give smaller counts"));
        }
        Ok(Self { errno, percent, paths: abs, paths_in, operations, after, first })
    }

    /// The rule for the eBPF side, given the kernel inode addresses the
    /// paths resolved to.
    pub fn rule(&self, deadline_ns: u64, slot: u32, inodes: &[u64]) -> IoRule {
        let mut rule = IoRule {
            deadline_ns,
            threshold: self.percent.threshold(),
            window_start: self.after,
            window_end: self.first.map_or(u64::MAX, |f| self.after.saturating_add(f)),
            slot,
            ..Default::default()
        };
        for (i, inode) in inodes.iter().take(MAX_INODES).enumerate() {
            rule.inodes[i] = *inode;
        }
        rule.n_inodes = inodes.len().min(MAX_INODES) as u32;
        let errno = u16::try_from(self.errno.number).expect("errnos are below 4096");
        for op in &self.operations {
            rule.ops |= op.bit();
            rule.errno[op.index()] = errno;
        }
        debug_assert!(rule.errno.len() == N_OPS);
        rule
    }

    pub fn ops_label(&self) -> String {
        self.operations.iter().map(|o| o.name()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_by_name_and_number() {
        for (text, want) in [
            ("EIO", libc::EIO),
            ("eio", libc::EIO),
            ("ENOSPC", libc::ENOSPC),
            ("EACCES", libc::EACCES),
            ("EROFS", libc::EROFS),
            ("EDQUOT", libc::EDQUOT),
            ("EMFILE", libc::EMFILE),
            ("5", 5),
            ("28", 28),
            ("133", 133),
            ("EWOULDBLOCK", libc::EAGAIN),
        ] {
            assert_eq!(text.parse::<Errno>().map(|e| e.number), Ok(want), "{text}");
        }
        assert_eq!("5".parse::<Errno>().unwrap().name, "EIO");
        assert_eq!("11".parse::<Errno>().unwrap().name, "EAGAIN");
        for bad in ["", "0", "-5", "134", "512", "4095", "99999999999", "EFOO", "IO", "ERESTARTSYS", "E IO"] {
            let e = bad.parse::<Errno>().unwrap_err();
            assert!(e.contains("EIO, ENOSPC"), "{bad}: {e}");
        }
    }

    #[test]
    fn errno_table_has_no_duplicate_names_and_covers_1_to_133() {
        let mut names: Vec<&str> = ERRNOS.iter().map(|(n, _)| *n).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
        for n in (1..=133).filter(|n| ![41, 58].contains(n)) {
            assert!(Errno::from_number(n).is_some(), "errno {n} missing");
        }
    }

    fn fault(ops: Vec<IoOp>, after: u64, first: Option<u64>) -> Result<IoError, String> {
        IoError::new(
            "ENOSPC".parse().unwrap(),
            Percent::new(100.0).unwrap(),
            vec!["/data".into()],
            PathsIn::Target,
            ops,
            after,
            first,
        )
    }

    #[test]
    fn rule_carries_everything() {
        let f = fault(vec![IoOp::Write, IoOp::Open, IoOp::Write], 5, Some(10)).unwrap();
        assert_eq!(f.operations, vec![IoOp::Open, IoOp::Write]);
        let r = f.rule(99, 7, &[0xffff_8880_0000_1000, 0xffff_8880_0000_2000]);
        assert_eq!((r.deadline_ns, r.slot, r.n_inodes), (99, 7, 2));
        assert_eq!(r.inodes[1], 0xffff_8880_0000_2000);
        assert_eq!(r.ops, OP_OPEN | OP_WRITE);
        assert_eq!(r.errno[IDX_OPEN], libc::ENOSPC as u16);
        assert_eq!(r.errno[IDX_WRITE], libc::ENOSPC as u16);
        assert_eq!(r.errno[IDX_READ], 0);
        assert_eq!((r.window_start, r.window_end), (5, 15));
        assert_eq!(r.threshold, chaos_abi::io::ALWAYS);
        let all = fault(vec![], 0, None).unwrap();
        assert_eq!(all.operations, IoOp::ALL.to_vec());
        let r = all.rule(1, 0, &[1]);
        assert_eq!((r.window_start, r.window_end), (0, u64::MAX));
    }

    #[test]
    fn refuses_nonsense() {
        assert!(fault(vec![], 0, Some(0)).unwrap_err().contains("--first 0"));
        assert!(fault(vec![], u64::MAX, Some(2)).unwrap_err().contains("overflows"));
        let none = IoError::new(
            "EIO".parse().unwrap(),
            Percent::new(1.0).unwrap(),
            vec![],
            PathsIn::Host,
            vec![],
            0,
            None,
        );
        assert!(none.unwrap_err().contains("--path"));
        let many: Vec<PathBuf> = (0..9).map(|i| format!("/d{i}").into()).collect();
        let e = IoError::new(
            "EIO".parse().unwrap(),
            Percent::new(1.0).unwrap(),
            many,
            PathsIn::Host,
            vec![],
            0,
            None,
        );
        assert!(e.unwrap_err().contains("at most 8"));
    }

    #[test]
    fn relative_paths_become_absolute() {
        let f = IoError::new(
            "EIO".parse().unwrap(),
            Percent::new(1.0).unwrap(),
            vec!["data".into(), "data".into()],
            PathsIn::Host,
            vec![IoOp::Read],
            0,
            None,
        )
        .unwrap();
        assert_eq!(f.paths, vec![std::env::current_dir().unwrap().join("data")]);
    }

    #[test]
    fn relative_paths_in_the_target_are_refused() {
        let e = IoError::new(
            "EIO".parse().unwrap(),
            Percent::new(1.0).unwrap(),
            vec!["data".into()],
            PathsIn::Target,
            vec![IoOp::Read],
            0,
            None,
        )
        .unwrap_err();
        assert!(e.contains("--path data is relative") && e.contains("--paths-in host"), "{e}");
    }
}

/// `fault: io-error` in experiment files (experiment/parse/fault_kinds.rs).
#[cfg(test)]
mod experiment_files {
    use super::*;
    use crate::faults::{Fault, fault_of_step as parse};

    #[test]
    fn io_error_steps_build_the_same_fault_as_the_flags() {
        let fault = parse(
            "{fault: io-error, errno: ENOSPC, percent: 5, paths: [/var/lib/db, /srv], operations: [write, open], \
             after: 3, first: 7, duration: 30s}",
        )
        .unwrap();
        let want = IoError::new(
            "ENOSPC".parse().unwrap(),
            Percent::new(5.0).unwrap(),
            vec!["/var/lib/db".into(), "/srv".into()],
            PathsIn::Target,
            vec![IoOp::Write, IoOp::Open],
            3,
            Some(7),
        )
        .unwrap();
        assert_eq!(fault, Fault::IoError(want));
        let one = parse(
            "{fault: io-error, errno: 5, percent: 100, paths: /data, paths-in: host, operations: 'read,write', \
             duration: 1m}",
        );
        let Ok(Fault::IoError(one)) = one else { panic!("{one:?}") };
        assert_eq!((one.errno.name, one.paths_in), ("EIO", PathsIn::Host));
        assert_eq!(one.operations, vec![IoOp::Read, IoOp::Write]);
    }

    #[test]
    fn io_error_steps_refuse_nonsense_with_a_location() {
        for (step, says) in [
            ("{fault: io-error, errno: EFOO, percent: 5, paths: /d, duration: 1m}", "unknown errno"),
            ("{fault: io-error, percent: 5, paths: /d, duration: 1m}", "errno"),
            ("{fault: io-error, errno: EIO, percent: 5, paths: data, duration: 1m}", "relative"),
            (
                "{fault: io-error, errno: EIO, percent: 5, paths: /d, operations: [fsync], duration: 1m}",
                "fsync",
            ),
            (
                "{fault: io-error, errno: EIO, percent: 5, paths: /d, first: 0, duration: 1m}",
                "`first` 0 would fail nothing",
            ),
        ] {
            let err = parse(step).unwrap_err();
            assert!(err.contains(says) && err.contains("step.yaml:"), "{step}: {err}");
        }
    }
}

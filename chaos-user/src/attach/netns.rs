//! Network namespaces: run code inside one without moving the process.
//!
//! `setns(2)` on `CLONE_NEWNET` changes the namespace of the calling thread
//! only, so each operation gets a short-lived thread. Netlink sockets and
//! interface lookups made there belong to that namespace; the BPF links and
//! filters created there stay where they were made after the thread exits.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// A network namespace, named by its inode (stable while it exists) and a
/// path through which it can be opened (`/proc/PID/ns/net`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Netns {
    pub inode: u64,
    pub path: PathBuf,
}

impl Netns {
    /// The namespace this process runs in.
    pub fn current() -> io::Result<Self> {
        Self::open_path(Path::new("/proc/self/ns/net"))
            .map(|inode| Self { inode, path: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())) })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(pid: i32) -> io::Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        Self::open_path(&path).map(|inode| Self { inode, path })
    }

    /// Find a path to the namespace with this inode: a process inside it, or
    /// a name under /run/netns. `None` when no such namespace exists any
    /// more (and with it, whatever was attached inside).
    pub fn find(inode: u64) -> Option<Self> {
        let named = std::fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| e.path());
        let procs = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
            .map(|e| e.path().join("ns/net"));
        named
            .chain(procs)
            .find_map(|path| (Self::open_path(&path).ok()? == inode).then_some(Self { inode, path }))
    }

    fn open_path(path: &Path) -> io::Result<u64> {
        std::fs::metadata(path).map(|m| m.ino())
    }

    /// Run `f` in this namespace, on a thread of its own.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = File::open(&self.path)?;
        if std::fs::metadata(&self.path)?.ino() != self.inode {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} no longer refers to network namespace {}", self.path.display(), self.inode),
            ));
        }
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on an fd we own; affects only this thread,
                // which ends when the scope does.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread panicked inside network namespace"))?
        })
    }
}

/// Run `f` in a new, empty network namespace that disappears when `f`
/// returns (nothing else holds it). Used by capability probes, so that
/// probing never touches the host's interfaces.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare affects only this thread's namespaces; a
            // thread may unshare CLONE_NEWNET on its own.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked inside private network namespace"))?
    })
}

/// The network interfaces of the calling thread's namespace.
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex allocates an array terminated by a zero entry,
    // which we read and free with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        out.sort();
        Ok(out)
    }
}

/// `(up, loopback)` of a network interface of the calling thread's
/// namespace (`IFF_UP`, `IFF_LOOPBACK` from SIOCGIFFLAGS).
pub fn interface_state(name: &str) -> io::Result<(bool, bool)> {
    // SAFETY: a socket we own and close; ifreq is plain data, zeroed, with
    // a NUL-terminated name shorter than IFNAMSIZ.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
            *dst = src as libc::c_char;
        }
        let ret = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if ret < 0 {
            return Err(err);
        }
        let flags = i32::from(req.ifr_ifru.ifru_flags);
        Ok((flags & libc::IFF_UP != 0, flags & libc::IFF_LOOPBACK != 0))
    }
}

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

/// How chaos names a network namespace in its state files, so that
/// recovery finds *that* namespace, or knows it is gone.
///
/// - `inode`: the nsfs inode number (`ns.inum`). Unique among live
///   namespaces, but not over time: it comes from an IDA that hands out the
///   lowest free number (`ns_alloc_inum()` -> `proc_alloc_inum()` ->
///   `ida_alloc_max()`, fs/proc/generic.c), so a namespace created after
///   another died usually gets its number. Alone it would let recovery act
///   in a stranger's namespace.
/// - `dev`: the device of the nsfs inode. Every namespace lives on the one
///   nsfs superblock (fs/nsfs.c), so it does not tell namespaces apart; it
///   tells an nsfs inode from a same-numbered inode elsewhere — e.g.
///   `/run/netns/NAME` left as a plain tmpfs file once its bind mount went.
/// - `cookie`: the netns cookie, `SO_NETNS_COOKIE` (Linux 5.14,
///   `sk_getsockopt()` in net/core/sock.c): a 64-bit value the kernel
///   assigns from a global counter when the namespace is set up
///   (`setup_net()`/`preinit_net()`, net/core/net_namespace.c) and never
///   reuses. With it the identity is exact: the inode finds candidates, the
///   cookie decides. Kernels before 5.14 have no way to read it (no other
///   creation-time attribute of a namespace is visible to user space); there
///   `cookie` is `None`, the identity is (inode, dev), and recovery makes up
///   for it: it acts only on a device whose index *and* name match, only on
///   objects that carry chaos's marks (filter handle, qdisc handle), and
///   never on one a live chaos run records.
///
/// (Keeping a reference instead — a bind mount of the namespace under
/// /run/chaos — would keep a dead container's namespace, and its veth
/// peer on the host, alive until recovery: a change chaos must not make.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    pub inode: u64,
    #[serde(default)]
    pub dev: Option<u64>,
    #[serde(default)]
    pub cookie: Option<u64>,
}

/// A network namespace and a path through which it can be opened
/// (`/proc/PID/ns/net`, or a name under /run/netns). Operations check that
/// the path still leads to it: by inode and device when they open it, and
/// by cookie (when known) once inside.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Netns {
    pub inode: u64,
    pub dev: u64,
    /// The netns cookie, once [`Netns::identify`]d (None: not yet, or the
    /// kernel has no `SO_NETNS_COOKIE`).
    pub cookie: Option<u64>,
    pub path: PathBuf,
}

/// Where [`Netns::locate`] found a recorded namespace.
#[derive(Debug)]
pub enum Located {
    Here(Netns),
    /// It no longer exists (and with it whatever was attached inside); `why`
    /// says how we know.
    Gone(String),
}

/// The cookie of the calling thread's network namespace (None: the kernel
/// has no `SO_NETNS_COOKIE`).
fn own_cookie() -> io::Result<Option<u64>> {
    // SAFETY: a socket we own and close; getsockopt writes at most `len`
    // bytes into `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let ret = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        match ret {
            0 => Ok(Some(cookie)),
            _ if err.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
            _ => Err(err),
        }
    }
}

/// (inode, device) of an nsfs path.
fn stat_ns(path: &Path) -> io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|m| (m.ino(), m.dev()))
}

impl Netns {
    /// The namespace this process runs in, identified.
    pub fn current() -> io::Result<Self> {
        let (inode, dev) = stat_ns(Path::new("/proc/self/ns/net"))?;
        // Our PID as the mounted /proc numbers it, which is not getpid()'s
        // when we run in a PID namespace of our own under the host's /proc
        // (chaos as PID 1 of a container): /proc/<getpid()> would be
        // someone else.
        let pid = std::fs::read_link("/proc/self")?;
        let path = Path::new("/proc").join(pid).join("ns/net");
        Ok(Self { inode, dev, cookie: own_cookie()?, path })
    }

    /// The namespace of process `pid` (not yet identified: cheap, for
    /// telling namespaces apart among many processes).
    pub fn of_pid(pid: i32) -> io::Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let (inode, dev) = stat_ns(&path)?;
        Ok(Self { inode, dev, cookie: None, path })
    }

    /// The namespace at `path` (a name under /run/netns, or
    /// /proc/PID/ns/net), identified.
    pub fn at(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let (inode, dev) = stat_ns(&path)?;
        Self { inode, dev, cookie: None, path }.identify()
    }

    /// Read the namespace's cookie (from inside it), so that it can be
    /// recorded and every later operation checks it.
    pub fn identify(mut self) -> io::Result<Self> {
        if self.cookie.is_none() {
            self.cookie = self.run(own_cookie)??;
        }
        Ok(self)
    }

    /// Its identity, as state files record it.
    pub fn id(&self) -> NetnsId {
        NetnsId { inode: self.inode, dev: Some(self.dev), cookie: self.cookie }
    }

    /// A path to a live namespace with this inode number (any such one:
    /// the number alone does not say it is the one meant; see [`NetnsId`]).
    /// `None` when none exists.
    pub fn find(inode: u64) -> Option<Self> {
        candidates().find_map(|path| {
            let (ino, dev) = stat_ns(&path).ok()?;
            (ino == inode).then_some(Self { inode, dev, cookie: None, path })
        })
    }

    /// Find the namespace `id` names: a process inside it, or a name under
    /// /run/netns. Gone when no namespace has its inode (and device), or
    /// when the one that has it has another cookie — inode numbers are
    /// unique among live namespaces, so the one recorded no longer exists.
    pub fn locate(id: &NetnsId) -> Located {
        for path in candidates() {
            let Ok((inode, dev)) = stat_ns(&path) else { continue };
            if inode != id.inode || id.dev.is_some_and(|d| d != dev) {
                continue;
            }
            let ns = Self { inode, dev, cookie: None, path };
            let Some(recorded) = id.cookie else { return Located::Here(ns) };
            // The process may exit meanwhile: try the next path.
            let Ok(ns) = ns.identify() else { continue };
            return match ns.cookie {
                Some(c) if c == recorded => Located::Here(ns),
                Some(c) => Located::Gone(format!(
                    "its inode number {inode} now belongs to another namespace (cookie {c}, not {recorded})"
                )),
                // A cookie was read when recording, so the kernel has
                // SO_NETNS_COOKIE: unreachable short of a kernel change.
                None => continue,
            };
        }
        Located::Gone(format!("no namespace has inode number {}", id.inode))
    }

    /// The namespaces the processes of a cgroup and its descendants live
    /// in, each once (not yet identified). A process that exits meanwhile
    /// is skipped.
    pub fn of_subtree(cgroup: &Path) -> Vec<Self> {
        let mut seen = std::collections::HashSet::new();
        crate::targets::pids_in_subtree(cgroup)
            .into_iter()
            .filter_map(|pid| Self::of_pid(pid).ok())
            .filter(|ns| seen.insert(ns.inode))
            .collect()
    }

    /// Open the namespace through `path`, checking that the file opened
    /// (not the path, which may have changed since) is the namespace.
    pub fn open(&self) -> io::Result<File> {
        let ns = File::open(&self.path)?;
        let meta = ns.metadata()?;
        if (meta.ino(), meta.dev()) != (self.inode, self.dev) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} no longer refers to network namespace {}", self.path.display(), self.inode),
            ));
        }
        Ok(ns)
    }

    /// Run `f` in this namespace, on a thread of its own.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let changed = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} no longer refers to network namespace {}", self.path.display(), self.inode),
            )
        };
        // The path may have gone with its process — a container's process
        // that exits while its pod's sandbox keeps the namespace alive —
        // or lead elsewhere now: then find the namespace again by its
        // identity, through any process still in it.
        let ns = match self.open() {
            Ok(ns) => ns,
            Err(_) => match Self::locate(&self.id()) {
                Located::Here(other) => other.open()?,
                Located::Gone(why) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("network namespace {} is gone: {why}", self.inode),
                    ));
                }
            },
        };
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on an fd we own; affects only this thread,
                // which ends when the scope does.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The inode of a live namespace is its own, but the cookie
                // is the proof (see NetnsId).
                if let Some(cookie) = self.cookie
                    && own_cookie()? != Some(cookie)
                {
                    return Err(changed());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread panicked inside network namespace"))?
        })
    }
}

/// Paths through which network namespaces can be opened: the names under
/// /run/netns, then every process's.
fn candidates() -> impl Iterator<Item = PathBuf> {
    let named = std::fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| e.path());
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .map(|e| e.path().join("ns/net"));
    named.chain(procs)
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
    let req = ifreq_get(name, libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok((flags & libc::IFF_UP != 0, flags & libc::IFF_LOOPBACK != 0))
}

/// The hardware type of a network interface of the calling thread's
/// namespace (`ARPHRD_*`, include/uapi/linux/if_arp.h, from
/// SIOCGIFHWADDR): 1 for Ethernet (veth, bridges, most NICs), 772 for
/// loopback.
pub fn interface_type(name: &str) -> io::Result<u16> {
    let req = ifreq_get(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hardware address member.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// One `SIOCGIF*` request about interface `name` of the calling thread's
/// namespace, on a throwaway socket: the kernel's answer.
fn ifreq_get(name: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
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
        let ret = libc::ioctl(fd, request, &mut req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if ret < 0 { Err(err) } else { Ok(req) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own namespace is found by its identity; a record of the same
    /// inode with another cookie (a namespace that died and whose number
    /// was reused) is gone, not ours; an unknown inode is gone.
    #[test]
    fn a_namespace_is_told_by_its_cookie_not_its_inode() {
        let me = Netns::current().unwrap();
        let Some(cookie) = me.cookie else {
            eprintln!("kernel without SO_NETNS_COOKIE: identity is (inode, dev) only");
            return;
        };
        match Netns::locate(&me.id()) {
            Located::Here(ns) => assert_eq!((ns.inode, ns.cookie), (me.inode, Some(cookie))),
            Located::Gone(why) => panic!("our own namespace not found: {why}"),
        }
        let reused = NetnsId { cookie: Some(cookie.wrapping_add(1)), ..me.id() };
        assert!(matches!(Netns::locate(&reused), Located::Gone(why) if why.contains("another namespace")));
        let other_dev = NetnsId { dev: Some(me.dev.wrapping_add(1)), ..me.id() };
        assert!(matches!(Netns::locate(&other_dev), Located::Gone(_)));
        // And an operation through a path whose namespace is not the one
        // meant refuses to run there.
        let wrong = Netns { cookie: Some(cookie.wrapping_add(1)), ..me.clone() };
        let err = wrong.run(|| ()).unwrap_err();
        assert!(err.to_string().contains("no longer refers"), "{err}");
        assert!(me.run(|| ()).is_ok());
    }
}

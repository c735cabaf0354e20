//! The two rtnetlink requests chaos makes itself: "does this device have a
//! clsact qdisc?" and "does it hold any filter?" (chaos never deletes a
//! clsact: see `tc::detach_egress`). In process rather than through
//! `tc(8)`, whose spawns take a second under TCG. Requests are built by
//! hand: two message types do not justify a netlink crate.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `TCA_KIND`, include/uapi/linux/rtnetlink.h.
const TCA_KIND: u16 = 1;
/// `TC_H_CLSACT` (== `TC_H_INGRESS`), include/uapi/linux/pkt_sched.h.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS)`.
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// `struct tcmsg`, include/uapi/linux/rtnetlink.h.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TcMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

/// A request: `nlmsghdr`, `tcmsg`, then attributes, 4-byte aligned.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16, tcm: TcMsg) -> Self {
        let header =
            libc::nlmsghdr { nlmsg_len: 0, nlmsg_type: kind, nlmsg_flags: flags, nlmsg_seq: 1, nlmsg_pid: 0 };
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(as_bytes(&header));
        buf.extend_from_slice(as_bytes(&tcm));
        Self(buf)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: plain-old-data kernel structs without padding holes we read.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send `request`, then read replies until the ack or the end of the dump,
/// counting the messages of type `counted`. A netlink error is returned as
/// the errno it carries.
fn transact(request: &[u8], counted: u16) -> io::Result<usize> {
    let sock = socket()?;
    // SAFETY: sending a buffer we own to the kernel (nl_pid 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut count = 0;
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= size_of::<libc::nlmsghdr>() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
            if len < size_of::<libc::nlmsghdr>() || len > rest.len() {
                return Err(io::Error::other("malformed rtnetlink reply"));
            }
            match kind as i32 {
                libc::NLMSG_DONE => return Ok(count),
                libc::NLMSG_ERROR => {
                    let at = size_of::<libc::nlmsghdr>();
                    let errno = i32::from_ne_bytes(rest[at..at + 4].try_into().unwrap());
                    // errno 0 is the ack of a request without a dump.
                    return if errno == 0 { Ok(count) } else { Err(io::Error::from_raw_os_error(-errno)) };
                }
                _ if kind == counted => count += 1,
                _ => {}
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

/// The index of `ifname` in the calling thread's namespace, if it exists.
fn ifindex(ifname: &str) -> io::Result<Option<u32>> {
    let name = CString::new(ifname).map_err(|_| io::Error::other("device name contains NUL"))?;
    // SAFETY: a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    Ok((index != 0).then_some(index))
}

/// How many tc filters hang off the clsact qdisc of `ifname` (both
/// directions), in the calling thread's network namespace.
pub fn clsact_filters(ifname: &str) -> io::Result<usize> {
    let Some(index) = ifindex(ifname)? else { return Ok(0) };
    let mut total = 0;
    for parent in [CLSACT_INGRESS, CLSACT_EGRESS] {
        let tcm = TcMsg { ifindex: index as i32, parent, ..Default::default() };
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let request = Request::new(libc::RTM_GETTFILTER, flags, tcm).finish();
        total += match transact(&request, libc::RTM_NEWTFILTER) {
            Ok(n) => n,
            // No clsact (or no device) any more: nothing hangs off it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)) => 0,
            Err(e) => return Err(e),
        };
    }
    Ok(total)
}

/// Whether `ifname` has a clsact qdisc: `RTM_GETQDISC` for handle `ffff:`
/// under `TC_H_CLSACT`, kind `clsact`, answered by the ack alone.
/// `tc_get_qdisc()` (net/sched/sch_api.c) fails with ENOENT when the device
/// never had one (no ingress queue), and EINVAL when the slot holds
/// another kind (`noop_qdisc` once one was deleted, or an `ingress` qdisc,
/// to which chaos's add then fails with EEXIST). (Its reply message cannot
/// be relied on: measured on 6.18, a clsact is acked without one.)
pub fn has_clsact(ifname: &str) -> io::Result<bool> {
    let Some(index) = ifindex(ifname)? else { return Ok(false) };
    let tcm = TcMsg {
        ifindex: index as i32,
        handle: TC_H_CLSACT & 0xffff_0000,
        parent: TC_H_CLSACT,
        ..Default::default()
    };
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let request = Request::new(libc::RTM_GETQDISC, flags, tcm).attr(TCA_KIND, b"clsact\0").finish();
    match transact(&request, libc::RTM_NEWQDISC) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sized_and_aligned() {
        let tcm = TcMsg { ifindex: 3, parent: TC_H_CLSACT, ..Default::default() };
        let r = Request::new(libc::RTM_GETTFILTER, 5, tcm).attr(TCA_KIND, b"clsact\0").finish();
        // 16 (nlmsghdr) + 20 (tcmsg) + 4 + 7 -> 11 padded to 12.
        assert_eq!(r.len(), 48);
        assert_eq!(u32::from_ne_bytes(r[..4].try_into().unwrap()), 48);
        assert_eq!(&r[36..38], &11u16.to_ne_bytes());
        assert_eq!(&r[40..47], b"clsact\0");
    }
}

#[cfg(test)]
mod live {
    /// Needs root (a private network namespace): ignored by a plain `cargo
    /// test`, run by `./x test` as root.
    #[test]
    #[ignore = "needs root (a private network namespace); ./x test runs it"]
    fn has_clsact_sees_one_tc_added() {
        let run = crate::attach::netns::in_private_netns(|| {
            let tc =
                |args: &[&str]| std::process::Command::new("tc").args(args).status().map(|s| s.success());
            let before = super::has_clsact("lo");
            let added = tc(&["qdisc", "add", "dev", "lo", "clsact"]);
            let after = super::has_clsact("lo");
            let deleted = tc(&["qdisc", "del", "dev", "lo", "clsact"]);
            let ingress = tc(&["qdisc", "add", "dev", "lo", "ingress"]);
            (before, added, after, deleted, super::has_clsact("lo"), ingress)
        });
        let (before, added, after, deleted, gone, ingress) = run.expect("a private network namespace (root)");
        assert!(added.unwrap() && deleted.unwrap() && ingress.unwrap());
        assert!(!before.unwrap(), "never had one");
        assert!(after.unwrap(), "added");
        assert!(!gone.unwrap(), "deleted (noop in its slot), then an ingress qdisc there");
    }
}

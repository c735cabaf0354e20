//! Connection tools for the net-refuse tests: raw `connect()` and
//! `sendto()` calls (libc, non-blocking so that nothing waits on a peer),
//! reporting exactly the errno each call returned, in the format of
//! `io-calls` (see [`super::io::Calls`]).

use std::net::SocketAddr;

use super::arg;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn opt(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// `addr` as a C socket address, for a socket of `family` (an IPv4
/// address to an AF_INET6 socket becomes `::ffff:a.b.c.d`).
pub(super) fn sockaddr(addr: SocketAddr, family: i32) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let ip6 = match addr {
        SocketAddr::V4(a) if family == libc::AF_INET => {
            // SAFETY: sockaddr_storage is large and aligned enough.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            return (ss, size_of::<libc::sockaddr_in>() as u32);
        }
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    };
    // SAFETY: as above.
    let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
    sin6.sin6_family = libc::AF_INET6 as u16;
    sin6.sin6_port = addr.port().to_be();
    sin6.sin6_addr.s6_addr = ip6.octets();
    (ss, size_of::<libc::sockaddr_in6>() as u32)
}

/// One call on a fresh socket: 0, or the errno it failed with. A
/// non-blocking TCP connect in progress counts as success (EINPROGRESS):
/// the refusal under test comes before it. `tcp-handshake` is a blocking
/// connect, which returns once the peer answered the SYN: 0 for a SYN-ACK,
/// ECONNREFUSED for a reset (the refusal of an incoming connection),
/// ETIMEDOUT/EAGAIN after 5 s without an answer.
fn call(op: &str, to: SocketAddr, family: i32) -> i32 {
    let (kind, connect) = match op {
        "connect" => (libc::SOCK_STREAM | libc::SOCK_NONBLOCK, true),
        "tcp-handshake" => (libc::SOCK_STREAM, true),
        "udp-connect" => (libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, true),
        _ => (libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, false),
    };
    let (sa, len) = sockaddr(to, family);
    // SAFETY: plain syscalls on values we own; the fd is closed below.
    unsafe {
        let fd = libc::socket(family, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return -errno();
        }
        if kind & libc::SOCK_NONBLOCK == 0 {
            // A connect's timeout is SO_SNDTIMEO (`inet_stream_connect`
            // waits `sock_sndtimeo()`), EINPROGRESS when it runs out.
            let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
            let len = size_of::<libc::timeval>() as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&raw const tv).cast(), len);
        }
        let sa = (&raw const sa).cast::<libc::sockaddr>();
        let r = if connect {
            libc::connect(fd, sa, len)
        } else {
            libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, sa, len) as i32
        };
        let e = if r < 0 { errno() } else { 0 };
        libc::close(fd);
        match (e, kind & libc::SOCK_NONBLOCK) {
            (libc::EINPROGRESS, 0) => libc::ETIMEDOUT,
            (libc::EINPROGRESS, _) => 0,
            (e, _) => e,
        }
    }
}

/// `conn-calls --op connect|tcp-handshake|udp-connect|sendto --to ADDR [--family 4|6]
/// [--count N] [--seconds S] [--interval-us I] [--timeline] [--wait]`:
/// repeat one call, each on a new socket, and print what `io-calls` prints
/// (the loop is [`super::io::repeat`]).
/// `--family 6` with an IPv4 `--to` uses a dual-stack socket (the
/// IPv4-mapped address).
pub fn calls(args: &[String]) -> anyhow::Result<()> {
    let op: String = arg(args, "--op")?;
    anyhow::ensure!(
        ["connect", "tcp-handshake", "udp-connect", "sendto"].contains(&op.as_str()),
        "--op {op}?"
    );
    let to: SocketAddr = arg(args, "--to")?;
    let family = match opt(args, "--family").as_deref() {
        Some("6") => libc::AF_INET6,
        Some("4") => libc::AF_INET,
        None if to.is_ipv6() => libc::AF_INET6,
        None => libc::AF_INET,
        Some(other) => anyhow::bail!("--family {other}?"),
    };
    super::io::repeat(args, || call(&op, to, family))
}

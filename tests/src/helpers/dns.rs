//! `dns-calls`: DNS queries over UDP, or over TCP with `--tcp` (RFC 1035
//! 4.2.2: a two-byte length, then the message), one per call on a fresh
//! socket (a new source port, as stub resolvers use), reporting each
//! call's outcome in
//! the format of `io-calls` (see [`super::io::Calls`]): 0 for an answer
//! with RCODE NOERROR, the RCODE for any other answer (2 SERVFAIL,
//! 3 NXDOMAIN, 5 REFUSED), ETIMEDOUT when none came in time, EPROTO for a
//! reply that is not an answer to the question asked.
//!
//! Queries are built by hand: one question, no EDNS — a few bytes, where
//! a DNS library would bring a resolver the tests do not want between
//! them and the wire.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use super::arg;

/// The wire form of a query for `name`'s A record with `id` (RFC 1035
/// 4.1): header with RD set and one question, the name as labels.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The outcome of one reply to `query` (see the module's comment).
fn outcome(query: &[u8], reply: &[u8]) -> i32 {
    let question = &query[12..];
    let answers_it = reply.len() >= query.len()
        && reply[..2] == query[..2]
        && reply[2] & 0x80 != 0
        && reply[4..6] == [0, 1]
        && reply[12..12 + question.len()].eq_ignore_ascii_case(question);
    if !answers_it {
        return libc::EPROTO;
    }
    i32::from(reply[3] & 0x0f)
}

fn call(server: SocketAddr, name: &str, timeout: Duration, id: u16) -> i32 {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = match UdpSocket::bind(bind).and_then(|s| s.connect(server).map(|()| s)) {
        Ok(s) => s,
        Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
    };
    let q = query(id, name);
    if let Err(e) = sock.send(&q).and_then(|_| sock.set_read_timeout(Some(timeout))) {
        return e.raw_os_error().unwrap_or(libc::EIO);
    }
    let mut buf = [0u8; 1500];
    match sock.recv(&mut buf) {
        Ok(n) => outcome(&q, &buf[..n]),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            libc::ETIMEDOUT
        }
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// How a TCP query is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TcpWrites {
    /// Length and message in one write, as glibc (`writev`), dig and most
    /// stub resolvers send them.
    Whole,
    /// The length, then the message, in two writes.
    Split,
}

/// One query over a new TCP connection; the timeout covers the whole call.
fn call_tcp(server: SocketAddr, name: &str, timeout: Duration, id: u16, how: TcpWrites) -> i32 {
    let start = Instant::now();
    let q = query(id, name);
    let len = (q.len() as u16).to_be_bytes();
    let result = (|| -> std::io::Result<Vec<u8>> {
        let mut sock = TcpStream::connect_timeout(&server, timeout)?;
        sock.set_nodelay(true)?;
        if how == TcpWrites::Whole {
            sock.write_all(&[&len[..], &q].concat())?;
        } else {
            sock.write_all(&len)?;
            sock.write_all(&q)?;
        }
        let left = |start: Instant| timeout.checked_sub(start.elapsed()).filter(|d| !d.is_zero());
        sock.set_read_timeout(Some(left(start).ok_or(std::io::ErrorKind::TimedOut)?))?;
        let mut n = [0u8; 2];
        sock.read_exact(&mut n)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(n))];
        sock.set_read_timeout(Some(left(start).ok_or(std::io::ErrorKind::TimedOut)?))?;
        sock.read_exact(&mut reply)?;
        Ok(reply)
    })();
    match result {
        Ok(reply) => outcome(&q, &reply),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            libc::ETIMEDOUT
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => libc::ECONNRESET,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// `dns-calls --server ADDR --name NAME [--udp|--tcp|--tcp-split|--udp-and-tcp] [--timeout-ms T] [--count N]
/// [--seconds S] [--interval-us I] [--timeline] [--wait]`: repeat one
/// query and print what `io-calls` prints (the loop is
/// [`super::io::repeat`]). T defaults to 1000.
pub fn calls(args: &[String]) -> anyhow::Result<()> {
    let server: SocketAddr = arg(args, "--server")?;
    let name: String = arg(args, "--name")?;
    anyhow::ensure!(name.split('.').all(|l| (1..=63).contains(&l.len())), "--name {name:?}?");
    let timeout_ms = if args.iter().any(|a| a == "--timeout-ms") { arg(args, "--timeout-ms")? } else { 1000 };
    let timeout = Duration::from_millis(timeout_ms);
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let tcp = if has("--tcp") {
        Some(TcpWrites::Whole)
    } else if has("--tcp-split") {
        Some(TcpWrites::Split)
    } else {
        None
    };
    let alternate = has("--udp-and-tcp");
    let mut id: u16 = std::process::id() as u16;
    super::io::repeat(args, || {
        id = id.wrapping_add(1);
        match tcp {
            Some(how) => call_tcp(server, &name, timeout, id, how),
            // One query in eight over TCP: each is a new connection, and a
            // resolver that forks per connection (dnsmasq) falls behind a
            // thousand a second under emulation, its accept queue fills
            // and SYNs are dropped (a second's retransmission). A
            // connection's setup gets the longer timeout for the same
            // reason; an answer lost would still show as ETIMEDOUT.
            None if alternate && id.is_multiple_of(8) => {
                call_tcp(server, &name, timeout * 4, id, TcpWrites::Whole)
            }
            None => call(server, &name, timeout, id),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_its_outcomes() {
        let q = query(0x1234, "www.example.test");
        assert_eq!(&q[..6], &[0x12, 0x34, 0x01, 0x00, 0, 1]);
        assert_eq!(&q[12..17], b"\x03www\x07");
        assert_eq!(q.len(), 12 + 18 + 4);
        let mut r = q.clone();
        r[2] |= 0x80;
        r[3] = 0x83;
        assert_eq!(outcome(&q, &r), 3);
        r[3] = 0x80;
        assert_eq!(outcome(&q, &r), 0);
        r[13] = b'W';
        assert_eq!(outcome(&q, &r), 0, "names compare without case");
        r[1] ^= 1;
        assert_eq!(outcome(&q, &r), libc::EPROTO, "another id");
        assert_eq!(outcome(&q, &q), libc::EPROTO, "the query itself");
    }
}

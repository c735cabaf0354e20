//! TCP tools for the net-partition tests: an echo server, a timed connect,
//! and a conversation that records when each round trip completed — what
//! both ends of a pulled cable see, measured by the sockets themselves.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Background, arg, command, monotonic_ns, ready, stdin_closed};
use crate::fixtures::process::Place;

/// `tcp-echo --bind ADDR:PORT [--reuseport]`: echo every connection's
/// bytes back until stdin closes; prints `{"connections": N, "resets": R}`,
/// R the connections that ended with a reset from the peer (ECONNRESET).
/// `--reuseport` binds with SO_REUSEPORT, so that another such server may
/// bind the same port on an exact address beside a wildcard one. It
/// accepts as soon as a connection is queued (and its queue holds 4096, the
/// default `somaxconn`): a full queue drops SYNs, which clients then send
/// again — a second lookup the incoming-refusal tests would count. When
/// stdin closes, what is queued is accepted and counted before it stops.
pub fn server(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let listener = listen(bind, args.iter().any(|a| a == "--reuseport"))?;
    listener.set_nonblocking(true)?;
    let closed = stdin_closed();
    ready()?;
    let mut connections = 0u64;
    let resets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let stopping = closed.load(std::sync::atomic::Ordering::SeqCst);
        match listener.accept() {
            Ok((mut conn, _)) => {
                connections += 1;
                conn.set_nonblocking(false)?;
                let resets = resets.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let ended = loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                if let Err(e) = conn.write_all(&buf[..n]) {
                                    break Err(e);
                                }
                            }
                            Err(e) => break Err(e),
                        }
                    };
                    if ended.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset) {
                        resets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && stopping => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => readable(&listener, 10),
            Err(e) => return Err(e.into()),
        }
    }
    // Readers still blocked have seen no reset.
    let resets = resets.load(std::sync::atomic::Ordering::SeqCst);
    println!("{}", json!({ "connections": connections, "resets": resets }));
    Ok(())
}

/// Wait until `listener` has a connection queued, or `ms` passed.
fn readable(listener: &TcpListener, ms: i32) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&raw mut fd, 1, ms) };
}

/// A listener with SO_REUSEADDR (as std's), SO_REUSEPORT if asked, and a
/// queue of 4096 (std sets no option before bind, and listens with 128).
fn listen(bind: SocketAddr, reuseport: bool) -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    let family = if bind.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscalls on an fd we own, handed to TcpListener (which
    // closes it) once listening, or closed on error.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = size_of::<libc::c_int>() as libc::socklen_t;
        let opts: &[i32] =
            if reuseport { &[libc::SO_REUSEADDR, libc::SO_REUSEPORT] } else { &[libc::SO_REUSEADDR] };
        for &opt in opts {
            if libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const one).cast(), len) != 0 {
                anyhow::bail!("setsockopt: {}", std::io::Error::last_os_error());
            }
        }
        let (ss, len) = super::conn::sockaddr(bind, family);
        if libc::bind(fd, (&raw const ss).cast(), len) != 0 {
            anyhow::bail!("bind {bind}: {}", std::io::Error::last_os_error());
        }
        if libc::listen(fd, 4096) != 0 {
            anyhow::bail!("listen: {}", std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

/// `tcp-connect --to ADDR:PORT --timeout-ms N`: one connect; prints
/// `{"ok", "error" (the io::ErrorKind, as "TimedOut"), "ms"}`.
pub fn connect(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let timeout: u64 = arg(args, "--timeout-ms")?;
    let start = Instant::now();
    let result = TcpStream::connect_timeout(&to, Duration::from_millis(timeout));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let error = result.as_ref().err().map(|e| format!("{:?}", e.kind()));
    println!("{}", json!({ "ok": result.is_ok(), "error": error, "ms": ms }));
    Ok(())
}

/// `tcp-chat --to ADDR:PORT`: connect, then send one byte and wait for its
/// echo, over and over, until stdin closes; prints `{"done": [ns...]}`,
/// when each round trip completed (CLOCK_MONOTONIC). A byte whose echo is
/// late is not sent again: TCP retransmits it.
pub fn chat(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_millis(50)))?;
    let closed = stdin_closed();
    ready()?;
    let mut done = Vec::new();
    let mut byte = [0u8; 1];
    'chat: while !closed.load(std::sync::atomic::Ordering::SeqCst) {
        conn.write_all(b"x")?;
        loop {
            match conn.read(&mut byte) {
                Ok(1) => break,
                Ok(_) => anyhow::bail!("the echo server closed the connection"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if closed.load(std::sync::atomic::Ordering::SeqCst) {
                        break 'chat;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        done.push(monotonic_ns());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{}", json!({ "done": done }));
    Ok(())
}

/// A running `tcp-echo`.
pub struct Echo(Background);

impl Echo {
    pub fn start(place: Place<'_>, bind: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("tcp-echo", &["--bind".into(), bind.to_string()]))?))
    }

    /// The same, bound with SO_REUSEPORT.
    pub fn start_reuseport(place: Place<'_>, bind: SocketAddr) -> anyhow::Result<Self> {
        let args = ["--bind".into(), bind.to_string(), "--reuseport".into()];
        Ok(Self(Background::start(place, command("tcp-echo", &args))?))
    }

    /// How many connections it accepted, and how many of them the peer
    /// reset.
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        let v = self.0.finish()?;
        match (v["connections"].as_u64(), v["resets"].as_u64()) {
            (Some(c), Some(r)) => Ok((c, r)),
            _ => anyhow::bail!("bad tcp-echo output {v}"),
        }
    }
}

/// What one `tcp-connect` saw.
#[derive(Debug)]
pub struct Connect {
    pub ok: bool,
    /// The error's kind (`TimedOut`, `ConnectionRefused`...).
    pub error: Option<String>,
    pub ms: f64,
}

pub fn try_connect(place: Place<'_>, to: SocketAddr, timeout_ms: u64) -> anyhow::Result<Connect> {
    let args = ["--to".into(), to.to_string(), "--timeout-ms".into(), timeout_ms.to_string()];
    let out = place.output(&mut command("tcp-connect", &args))?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(Connect {
        ok: v["ok"].as_bool().unwrap_or(false),
        error: v["error"].as_str().map(str::to_owned),
        ms: v["ms"].as_f64().unwrap_or(f64::NAN),
    })
}

/// A running `tcp-chat`.
pub struct Chat(Background);

impl Chat {
    pub fn start(place: Place<'_>, to: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("tcp-chat", &["--to".into(), to.to_string()]))?))
    }

    /// When each round trip completed (CLOCK_MONOTONIC ns).
    pub fn finish(self) -> anyhow::Result<Vec<u64>> {
        let v = self.0.finish()?;
        let done = v["done"].as_array().ok_or_else(|| anyhow::anyhow!("bad tcp-chat output {v}"))?;
        Ok(done.iter().filter_map(serde_json::Value::as_u64).collect())
    }
}

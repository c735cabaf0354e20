//! TCP bulk transfer with the sender's retransmission count
//! (`tcpi_total_retrans` from TCP_INFO, include/uapi/linux/tcp.h).

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Background, arg, command, ready};
use crate::fixtures::process::Place;

/// `tcp-sink --bind ADDR:PORT`: accept one connection, read to EOF, print
/// `{"bytes": N}`.
pub fn sink(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let listener = TcpListener::bind(bind)?;
    ready()?;
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    conn.shutdown(Shutdown::Both).ok();
    println!("{}", json!({ "bytes": bytes }));
    Ok(())
}

/// `tcp-source --to ADDR:PORT --bytes N`: send N bytes, wait for the peer
/// to close, print `{"bytes", "retrans", "seconds"}`.
pub fn source(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let total: u64 = arg(args, "--bytes")?;
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(20))?;
    conn.set_write_timeout(Some(Duration::from_secs(60)))?;
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    let info = tcp_info(&conn)?;
    println!(
        "{}",
        json!({ "bytes": total, "retrans": info.tcpi_total_retrans, "seconds": start.elapsed().as_secs_f64() })
    );
    Ok(())
}

fn tcp_info(conn: &TcpStream) -> std::io::Result<libc::tcp_info> {
    // SAFETY: getsockopt fills at most `len` bytes of the zeroed struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(info)
    }
}

/// A running `tcp-sink`.
pub struct Sink(Background);

impl Sink {
    pub fn start(place: Place<'_>, bind: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("tcp-sink", &["--bind".into(), bind.to_string()]))?))
    }

    pub fn bytes(self) -> anyhow::Result<u64> {
        let v = self.0.finish()?;
        v["bytes"].as_u64().ok_or_else(|| anyhow::anyhow!("bad tcp-sink output {v}"))
    }
}

/// What a `tcp-source` reported.
pub struct Transfer {
    pub retrans: u64,
    pub seconds: f64,
}

pub fn send(place: Place<'_>, to: SocketAddr, bytes: u64) -> anyhow::Result<Transfer> {
    let mut cmd =
        command("tcp-source", &["--to".into(), to.to_string(), "--bytes".into(), bytes.to_string()]);
    let out = place.output(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(Transfer {
        retrans: v["retrans"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
    })
}

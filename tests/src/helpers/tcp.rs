//! TCP helpers: a bulk transfer with the sender's retransmission count
//! (`tcpi_total_retrans` from TCP_INFO, include/uapi/linux/tcp.h); and
//! throughput over time: a sender that sends as fast as the connection
//! allows for a while, and a receiver that samples how many bytes it has
//! read every 50 ms, so that a test can measure the steady rate away from
//! slow start and the end.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Background, arg, command, monotonic_ns, ready};
use crate::fixtures::process::Place;

/// `tcp-sink --bind ADDR:PORT`: accept one connection, read to EOF, print
/// `{"bytes": N}`.
pub fn sink(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let listener = TcpListener::bind(bind)?;
    ready()?;
    let (mut conn, _) = listener.accept()?;
    let bytes = read_to_eof(&mut conn, |_| {})?;
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

/// Read `conn` to its end, calling `each` with the bytes read so far after
/// every read; the total.
fn read_to_eof(conn: &mut TcpStream, mut each: impl FnMut(u64)) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes += n as u64;
        each(bytes);
    }
}

fn tcp_info(conn: &TcpStream) -> std::io::Result<libc::tcp_info> {
    tcp_info_of(conn.as_raw_fd())
}

fn tcp_info_of(fd: std::os::fd::RawFd) -> std::io::Result<libc::tcp_info> {
    // SAFETY: getsockopt fills at most `len` bytes of the zeroed struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
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

/// `tcp-stream --to ADDR:PORT --seconds S`: send for S seconds, then close;
/// print `{"bytes": N, "mss": M}` (M: the payload bytes per segment,
/// `tcpi_snd_mss`).
pub fn stream_source(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let seconds: f64 = arg(args, "--seconds")?;
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(20))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let chunk = vec![0x5au8; 1 << 16];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        conn.write_all(&chunk)?;
        bytes += chunk.len() as u64;
    }
    let mss = tcp_info(&conn).map_or(0, |i| i.tcpi_snd_mss);
    conn.shutdown(Shutdown::Write)?;
    println!("{}", json!({ "bytes": bytes, "mss": mss }));
    Ok(())
}

/// The least-squares slope of `(x, y)` points (at least two distinct x).
fn slope(points: &[&(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points
        .iter()
        .fold((0.0, 0.0), |(sxy, sxx), p| (sxy + (p.0 - mx) * (p.1 - my), sxx + (p.0 - mx).powi(2)));
    sxy / sxx
}

/// `tcp-rate-sink --bind ADDR:PORT`: accept one connection, read to EOF,
/// print `{"samples": [[monotonic_ns, bytes received], ...]}` every 50 ms.
/// The count is the kernel's (`tcpi_bytes_received`: in-order payload as it
/// arrives, tcp_rcv_nxt_update in net/ipv4/tcp_input.c), not what this
/// process has read so far, which lags by whatever the socket holds when
/// the machine is slow to run the reader.
pub fn rate_sink(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let listener = TcpListener::bind(bind)?;
    ready()?;
    let (mut conn, _) = listener.accept()?;
    let fd = conn.as_raw_fd();
    let received = || tcp_info_of(fd).map_or(0, |i| i.tcpi_bytes_received);
    let mut samples = vec![[monotonic_ns(), received()]];
    read_to_eof(&mut conn, |_| {
        let now = monotonic_ns();
        if now - samples.last().expect("non-empty")[0] >= 50_000_000 {
            samples.push([now, received()]);
        }
    })?;
    samples.push([monotonic_ns(), received()]);
    println!("{}", json!({ "samples": samples }));
    Ok(())
}

/// A running `tcp-rate-sink`.
pub struct RateSink(Background);

impl RateSink {
    pub fn start(place: Place<'_>, bind: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("tcp-rate-sink", &["--bind".into(), bind.to_string()]))?))
    }

    /// Goodput in bit/s over the samples between `skip` seconds after the
    /// first byte and `tail` seconds before the last: the least-squares
    /// slope of the bytes received against time, so that a sample the
    /// busy machine took late weighs little (two end points alone moved
    /// the figure by 1% under emulation: 65 ms of a 6.5 s window).
    pub fn finish(self, skip: f64, tail: f64) -> anyhow::Result<f64> {
        let v = self.0.finish()?;
        let samples: Vec<(f64, f64)> = v["samples"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("bad tcp-rate-sink output"))?
            .iter()
            .filter_map(|s| Some((s[0].as_f64()? / 1e9, s[1].as_f64()?)))
            .collect();
        let first = samples.iter().find(|s| s.1 > 0.0).ok_or_else(|| anyhow::anyhow!("nothing received"))?.0;
        let last = samples.last().expect("non-empty").0;
        let window: Vec<&(f64, f64)> =
            samples.iter().filter(|s| s.0 >= first + skip && s.0 <= last - tail).collect();
        anyhow::ensure!(window.len() >= 2, "too few samples in the steady window: {samples:?}");
        Ok(8.0 * slope(&window))
    }
}

/// Run a `tcp-stream` to completion; returns the segment payload size.
pub fn stream(place: Place<'_>, to: SocketAddr, seconds: f64) -> anyhow::Result<u32> {
    let mut cmd =
        command("tcp-stream", &["--to".into(), to.to_string(), "--seconds".into(), seconds.to_string()]);
    let v: serde_json::Value = serde_json::from_str(place.output(&mut cmd)?.trim())?;
    Ok(v["mss"].as_u64().unwrap_or(0) as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line_with_a_late_sample() {
        let line: Vec<(f64, f64)> =
            (0..100).map(|i| (f64::from(i) * 0.05, 1e6 * f64::from(i) * 0.05)).collect();
        assert!((super::slope(&line.iter().collect::<Vec<_>>()) - 1e6).abs() < 1e-6);
        // A last sample read 65 ms late (its bytes those of its due time):
        // the end points alone would be 1.3% low; the fit is within 0.1%.
        let mut late = line.clone();
        late.last_mut().expect("points").0 += 0.065;
        let fit = super::slope(&late.iter().collect::<Vec<_>>());
        assert!((fit / 1e6 - 1.0).abs() < 0.001, "{fit}");
    }
}

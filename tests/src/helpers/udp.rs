//! UDP sender and receiver. Each datagram carries a tag (which sender), a
//! sequence number and the sender's CLOCK_MONOTONIC send time, so the
//! receiver can tell exactly which packets were lost and when they were
//! sent.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Background, arg, command, monotonic_ns, ready, stdin_closed};
use crate::fixtures::process::Place;

const LEN: usize = 64;

/// `udp-sink --bind ADDR:PORT`: receive until stdin closes, then print
/// `{"packets": [[tag, seq, send_ns, recv_ns], ...]}`. `recv_ns` is when
/// the packet reached the receiving stack (the kernel's receive timestamp,
/// SO_TIMESTAMPNS), not when the sink got to read it, on CLOCK_MONOTONIC.
pub fn sink(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    // A receive buffer far beyond the default (~200 KiB, a few hundred
    // small datagrams): a sink that a busy machine (a TCG VM) does not
    // schedule for a while must not lose what the tests count.
    // SO_RCVBUFFORCE ignores net.core.rmem_max (we are root).
    let setopt = |name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt reads an int from a pointer that outlives the call.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    setopt(libc::SO_RCVBUFFORCE, 32 << 20);
    setopt(libc::SO_TIMESTAMPNS, 1);

    let closed = stdin_closed();
    ready()?;
    let mut packets = Vec::new();
    let mut buf = [0u8; 2048];
    // Drain what is queued after stdin closes, then stop.
    let mut drain_until: Option<Instant> = None;
    loop {
        if closed.load(Ordering::SeqCst) && drain_until.is_none() {
            drain_until = Some(Instant::now() + Duration::from_millis(100));
        }
        if drain_until.is_some_and(|t| Instant::now() > t) {
            break;
        }
        if let Ok((n, stamp)) = recv_stamped(&sock, &mut buf)
            && n >= 20
        {
            let tag = u32::from_le_bytes(buf[0..4].try_into()?);
            let seq = u64::from_le_bytes(buf[4..12].try_into()?);
            let sent = u64::from_le_bytes(buf[12..20].try_into()?);
            // Kernel receive timestamps are CLOCK_REALTIME: shift them onto
            // CLOCK_MONOTONIC, the clock senders stamp with, by the offset
            // between the two clocks now (it changes only when the
            // realtime clock is set).
            let recv = stamp.map_or_else(monotonic_ns, |real| {
                let real_to_mono = monotonic_ns() as i128 - realtime_ns() as i128;
                (real as i128 + real_to_mono) as u64
            });
            packets.push([u64::from(tag), seq, sent, recv]);
        }
    }
    println!("{}", json!({ "packets": packets }));
    Ok(())
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// recvmsg with the SCM_TIMESTAMPNS control message: (length, kernel
/// receive time in CLOCK_REALTIME ns).
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr points at `iov` and `control`, which outlive the
    // call; CMSG_* walk the control buffer the kernel filled.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, stamp))
    }
}

/// `udp-source --to ADDR:PORT --tag T --count N --interval-us I`: send and
/// print `{"sent": N, "errors": E, "errnos": {errno: count}}`.
pub fn source(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let tag: u32 = arg(args, "--tag")?;
    let count: u64 = arg(args, "--count")?;
    let interval = Duration::from_micros(arg(args, "--interval-us")?);
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    let mut errnos: BTreeMap<i32, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut buf = [0u8; LEN];
    for seq in 0..count {
        let due = start + interval * seq as u32;
        while Instant::now() < due {
            let left = due - Instant::now();
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        buf[0..4].copy_from_slice(&tag.to_le_bytes());
        buf[4..12].copy_from_slice(&seq.to_le_bytes());
        buf[12..20].copy_from_slice(&monotonic_ns().to_le_bytes());
        if let Err(e) = sock.send_to(&buf, to) {
            *errnos.entry(e.raw_os_error().unwrap_or(-1)).or_default() += 1;
        }
    }
    let errors: u64 = errnos.values().sum();
    println!("{}", json!({ "sent": count, "errors": errors, "errnos": errnos }));
    Ok(())
}

/// `udp-flood --to ADDR:PORT --seconds S`: send small datagrams as fast as
/// one core can for S seconds; print `{"sent": N, "seconds": S}`. The
/// sender's rate is bounded by the per-packet cost of the whole transmit
/// path, tc hooks included, so it measures what a hook adds per packet.
pub fn flood(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let seconds: f64 = arg(args, "--seconds")?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(to)?;
    let buf = [0u8; 18]; // 64-byte frames: 14 + 20 + 8 + 18 + 4 (FCS)
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while start.elapsed() < limit {
        for _ in 0..256 {
            if sock.send(&buf).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{}", json!({ "sent": sent, "seconds": start.elapsed().as_secs_f64() }));
    Ok(())
}

/// Run a `udp-flood` and return packets per second.
pub fn flood_rate(place: Place<'_>, to: SocketAddr, seconds: f64) -> anyhow::Result<f64> {
    let mut cmd =
        command("udp-flood", &["--to".into(), to.to_string(), "--seconds".into(), seconds.to_string()]);
    let v: serde_json::Value = serde_json::from_str(place.output(&mut cmd)?.trim())?;
    Ok(v["sent"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0))
}

/// One received datagram.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub tag: u32,
    pub seq: u64,
    pub sent_ns: u64,
    /// When the sink read it (CLOCK_MONOTONIC, the same clock as `sent_ns`
    /// in every namespace).
    pub recv_ns: u64,
}

/// A running `udp-sink`.
pub struct Sink(Background);

impl Sink {
    pub fn start(place: Place<'_>, bind: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("udp-sink", &["--bind".into(), bind.to_string()]))?))
    }

    pub fn finish(self) -> anyhow::Result<Vec<Packet>> {
        let v = self.0.finish()?;
        let packets = v["packets"].as_array().ok_or_else(|| anyhow::anyhow!("bad sink output"))?;
        Ok(packets
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some(Packet {
                    tag: p[0].as_u64()? as u32,
                    seq: p[1].as_u64()?,
                    sent_ns: p[2].as_u64()?,
                    recv_ns: p[3].as_u64()?,
                })
            })
            .collect())
    }
}

/// What a `udp-source` reported.
#[derive(Debug)]
pub struct Sent {
    pub sent: u64,
    pub errors: u64,
    pub errnos: serde_json::Value,
}

/// The `udp-source` command for these parameters.
fn source_command(to: SocketAddr, tag: u32, count: u64, interval_us: u64) -> Command {
    let args = [("--to", to.to_string()), ("--tag", tag.to_string())]
        .into_iter()
        .chain([("--count", count.to_string()), ("--interval-us", interval_us.to_string())])
        .flat_map(|(flag, value)| [flag.to_owned(), value]);
    command("udp-source", &args.collect::<Vec<_>>())
}

/// Run a `udp-source` to completion.
pub fn send(
    place: Place<'_>,
    to: SocketAddr,
    tag: u32,
    count: u64,
    interval_us: u64,
) -> anyhow::Result<Sent> {
    let out = place.output(&mut source_command(to, tag, count, interval_us))?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(Sent {
        sent: v["sent"].as_u64().unwrap_or(0),
        errors: v["errors"].as_u64().unwrap_or(0),
        errnos: v["errnos"].clone(),
    })
}

/// Start sending in the background (the sender runs to completion).
pub fn send_background(
    place: Place<'_>,
    to: SocketAddr,
    tag: u32,
    count: u64,
    interval_us: u64,
) -> anyhow::Result<std::process::Child> {
    let mut cmd = source_command(to, tag, count, interval_us);
    cmd.stdout(std::process::Stdio::piped());
    place.spawn(&mut cmd)
}

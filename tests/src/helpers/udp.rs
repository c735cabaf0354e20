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

use anyhow::Context as _;
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

/// `udp-source --to ADDR:PORT --tag T --count N --interval-us I [--times]
/// [--until-stdin-closes] [--mark M]`: send (with `--mark`, from a socket
/// whose SO_MARK is M) and print `{"sent": N, "errors": E,
/// "errnos": {errno: count}}` (with `--until-stdin-closes`, N is at most
/// the count: sending stops when stdin closes);
/// with `--times`, also `"times": [[before, after], ...]`, per sequence
/// number the CLOCK_MONOTONIC time just before and just after its
/// `sendto`. An egress program runs inside that call, so a datagram lost
/// at egress was dropped within its window — exactly, even when a loaded
/// machine held the sender up, where a time interpolated from the
/// datagrams that arrived is not.
pub fn source(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let tag: u32 = arg(args, "--tag")?;
    let count: u64 = arg(args, "--count")?;
    let interval = Duration::from_micros(arg(args, "--interval-us")?);
    let want_times = args.iter().any(|a| a == "--times");
    let closed = args.iter().any(|a| a == "--until-stdin-closes").then(stdin_closed);
    let mut times: Vec<[u64; 2]> = Vec::with_capacity(if want_times { count as usize } else { 0 });
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    if let Some(i) = args.iter().position(|a| a == "--mark") {
        let mark: u32 = args.get(i + 1).and_then(|m| m.parse().ok()).context("--mark needs a number")?;
        // SAFETY: setsockopt reads a u32 from a pointer that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&mark as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(rc == 0, "SO_MARK {mark:#x}: {}", std::io::Error::last_os_error());
    }
    let mut errnos: BTreeMap<i32, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut buf = [0u8; LEN];
    let mut sent = 0;
    for seq in 0..count {
        if closed.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
            break;
        }
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
        let before = monotonic_ns();
        buf[12..20].copy_from_slice(&before.to_le_bytes());
        if let Err(e) = sock.send_to(&buf, to) {
            *errnos.entry(e.raw_os_error().unwrap_or(-1)).or_default() += 1;
        }
        if want_times {
            times.push([before, monotonic_ns()]);
        }
        sent += 1;
    }
    let errors: u64 = errnos.values().sum();
    let mut out = json!({ "sent": sent, "errors": errors, "errnos": errnos });
    if want_times {
        out["times"] = json!(times);
    }
    println!("{out}");
    Ok(())
}

/// `udp-flood --to ADDR:PORT --seconds S`: send small datagrams as fast as
/// one core can for S seconds; print `{"sent": N, "seconds": S,
/// "cpu_seconds": C}`. The sender's rate is bounded by the per-packet cost
/// of the whole transmit path, tc hooks included, so it measures what a
/// hook adds per packet; `cpu_seconds` is the sending thread's own CPU time
/// (the transmit path runs in it), which time spent descheduled on a busy
/// machine does not inflate as it does the wall-clock rate.
pub fn flood(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let seconds: f64 = arg(args, "--seconds")?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(to)?;
    let buf = [0u8; 18]; // 64-byte frames: 14 + 20 + 8 + 18 + 4 (FCS)
    let cpu_start = thread_cpu_seconds()?;
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
    let cpu_seconds = thread_cpu_seconds()? - cpu_start;
    println!(
        "{}",
        json!({ "sent": sent, "seconds": start.elapsed().as_secs_f64(), "cpu_seconds": cpu_seconds })
    );
    Ok(())
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID), in seconds.
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    anyhow::ensure!(rc == 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}", std::io::Error::last_os_error());
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// Run a `udp-flood` and return packets per second.
pub fn flood_rate(place: Place<'_>, to: SocketAddr, seconds: f64) -> anyhow::Result<f64> {
    flood_rates(place, to, seconds).map(|r| r.per_second)
}

/// What a `udp-flood` sent, per second of wall-clock time and per second of
/// its own CPU time.
pub struct FloodRates {
    pub per_second: f64,
    pub per_cpu_second: f64,
}

/// Run a `udp-flood` and return both of its rates.
pub fn flood_rates(place: Place<'_>, to: SocketAddr, seconds: f64) -> anyhow::Result<FloodRates> {
    let mut cmd =
        command("udp-flood", &["--to".into(), to.to_string(), "--seconds".into(), seconds.to_string()]);
    let v: serde_json::Value = serde_json::from_str(place.output(&mut cmd)?.trim())?;
    let field = |name: &str| {
        v[name]
            .as_f64()
            .filter(|x| *x > 0.0)
            .ok_or_else(|| anyhow::anyhow!("udp-flood printed no {name}: {v}"))
    };
    let sent = v["sent"].as_f64().unwrap_or(0.0);
    Ok(FloodRates { per_second: sent / field("seconds")?, per_cpu_second: sent / field("cpu_seconds")? })
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
    source_command_with(to, tag, count, interval_us, &[])
}

fn source_command_with(to: SocketAddr, tag: u32, count: u64, interval_us: u64, extra: &[&str]) -> Command {
    let args = [("--to", to.to_string()), ("--tag", tag.to_string())]
        .into_iter()
        .chain([("--count", count.to_string()), ("--interval-us", interval_us.to_string())])
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .chain(extra.iter().map(|s| (*s).to_owned()));
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
    send_with(place, to, tag, count, interval_us, &[])
}

/// [`send`] with more `udp-source` flags (e.g. `--mark`).
pub fn send_with(
    place: Place<'_>,
    to: SocketAddr,
    tag: u32,
    count: u64,
    interval_us: u64,
    extra: &[&str],
) -> anyhow::Result<Sent> {
    let out = place.output(&mut source_command_with(to, tag, count, interval_us, extra))?;
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

/// The most an open-ended stream sends: ten minutes at one per millisecond.
const OPEN_MAX: u64 = 600_000;

/// A timed stream: datagrams on a fixed schedule from one place to a sink
/// in another, with the sender's own record of when each was sent (see
/// [`source`]'s `--times`), so that the send time of a *lost* datagram is
/// measured, not estimated.
pub struct TimedStream {
    /// Both taken by `finish`; killed on drop (a failed test) otherwise.
    sink: Option<Sink>,
    sender: Option<std::process::Child>,
    tag: u32,
}

impl Drop for TimedStream {
    fn drop(&mut self) {
        if let Some(mut sender) = self.sender.take() {
            let _ = sender.kill();
            let _ = sender.wait();
        }
    }
}

/// What a [`TimedStream`] saw.
#[derive(Debug)]
pub struct StreamResult {
    /// `[before, after]` its `sendto`, for every datagram that did not
    /// arrive.
    pub lost: Vec<[u64; 2]>,
    /// The same, for every datagram that arrived.
    pub arrived: Vec<[u64; 2]>,
}

impl TimedStream {
    /// `count` datagrams, `interval_us` apart; with `None`, a stream that
    /// runs until [`TimedStream::stop`]: started before what it measures,
    /// it spans it however slowly a loaded machine gets there.
    pub fn start(
        from: Place<'_>,
        to_place: Place<'_>,
        to: SocketAddr,
        tag: u32,
        count: Option<u64>,
        interval_us: u64,
    ) -> anyhow::Result<Self> {
        let (count, extra): (u64, &[&str]) = match count {
            Some(n) => (n, &["--times"]),
            None => (OPEN_MAX, &["--times", "--until-stdin-closes"]),
        };
        let sink = Sink::start(to_place, to)?;
        let mut cmd = source_command_with(to, tag, count, interval_us, extra);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        let sender = from.spawn(&mut cmd)?;
        Ok(Self { sink: Some(sink), sender: Some(sender), tag })
    }

    /// Stop an open stream (a fixed one runs to its count), then
    /// [`TimedStream::finish`].
    pub fn stop(mut self) -> anyhow::Result<StreamResult> {
        if let Some(sender) = &mut self.sender {
            drop(sender.stdin.take());
        }
        self.finish()
    }

    /// Wait for the sender to finish, then for the sink.
    pub fn finish(mut self) -> anyhow::Result<StreamResult> {
        let (Some(sender), Some(sink)) = (self.sender.take(), self.sink.take()) else {
            anyhow::bail!("the stream was already finished");
        };
        let out = sender.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "udp-source failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let times: Vec<[u64; 2]> = serde_json::from_value(v["times"].clone())?;
        let count = v["sent"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            times.len() as u64 == count,
            "udp-source reported {} send times for {count}",
            times.len()
        );
        let mut arrived = vec![false; count as usize];
        for p in sink.finish()?.iter().filter(|p| p.tag == self.tag && p.seq < count) {
            arrived[p.seq as usize] = true;
        }
        let (got, lost): (Vec<_>, Vec<_>) = times.iter().zip(&arrived).partition(|(_, a)| **a);
        Ok(StreamResult {
            lost: lost.into_iter().map(|(t, _)| *t).collect(),
            arrived: got.into_iter().map(|(t, _)| *t).collect(),
        })
    }
}

impl StreamResult {
    pub fn received(&self) -> usize {
        self.arrived.len()
    }

    /// Datagrams that arrived although their `sendto` *ended* before `t`:
    /// certainly passed before `t` (a fault in force until `t` at 100%
    /// lets none through).
    pub fn arrived_before(&self, t: u64) -> Vec<[u64; 2]> {
        self.arrived.iter().copied().filter(|[_, after]| *after < t).collect()
    }

    /// Lost datagrams whose `sendto` *began* more than `grace_ns` after
    /// `end_ns`: certainly dropped after the fault should have ended
    /// (one that began earlier may have been dropped before the end).
    pub fn lost_after(&self, end_ns: u64, grace_ns: u64) -> Vec<[u64; 2]> {
        self.lost.iter().copied().filter(|[before, _]| *before > end_ns + grace_ns).collect()
    }

    /// The latest time (ms from `end_ns`, signed) at which a lost datagram's
    /// `sendto` began, among those within `grace_ns` of the end.
    pub fn last_loss_ms(&self, end_ns: u64, grace_ns: u64) -> f64 {
        let last = self.lost.iter().map(|t| t[0]).filter(|t| *t <= end_ns + grace_ns).max().unwrap_or(0);
        (last as i64 - end_ns as i64) as f64 / 1e6
    }
}

/// Send windows after `from`, as `+a..+b ms` ranges (by the start of each
/// `sendto`), for messages.
pub fn ranges_ms(lost: &[[u64; 2]], from: u64) -> String {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut sorted: Vec<i64> = lost.iter().map(|t| (t[0] as i64 - from as i64) / 1_000_000).collect();
    sorted.sort();
    for ms in sorted {
        match out.last_mut() {
            Some((_, hi)) if ms <= *hi + 2 => *hi = ms,
            _ => out.push((ms, ms)),
        }
    }
    out.iter().map(|(a, b)| format!("{a:+}..{b:+}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::StreamResult;

    #[test]
    fn losses_are_judged_by_when_their_sendto_began() {
        let ms = |a: u64, b: u64| [a * 1_000_000, b * 1_000_000];
        let r = StreamResult {
            lost: vec![ms(1, 2), ms(99, 160), ms(150, 151)],
            arrived: vec![ms(0, 1), ms(200, 201)],
        };
        // Ended at 0 with 100 ms of grace: only the datagram whose sendto
        // began at 150 ms is certainly late; the one held up from 99 ms
        // to 160 ms may have been dropped in time.
        assert_eq!(r.lost_after(0, 100_000_000), vec![ms(150, 151)]);
        assert_eq!(r.last_loss_ms(0, 100_000_000), 99.0);
        // Something got through before 2 ms: the fault was not in force.
        assert_eq!(r.arrived_before(2_000_000), vec![ms(0, 1)]);
        assert!(r.arrived_before(1_000_000).is_empty());
    }
}

//! UDP sender and receiver. Each datagram carries a tag (which sender), a
//! sequence number and the sender's CLOCK_MONOTONIC send time, so the
//! receiver can tell exactly which packets were lost and when they were
//! sent.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Background, arg, command, monotonic_ns, ready, stdin_closed};
use crate::fixtures::process::Place;

const LEN: usize = 64;

/// `udp-sink --bind ADDR:PORT`: receive until stdin closes, then print
/// `{"packets": [[tag, seq, send_ns, recv_ns], ...]}`.
pub fn sink(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
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
        if let Ok(n) = sock.recv(&mut buf)
            && n >= 20
        {
            let tag = u32::from_le_bytes(buf[0..4].try_into()?);
            let seq = u64::from_le_bytes(buf[4..12].try_into()?);
            let sent = u64::from_le_bytes(buf[12..20].try_into()?);
            packets.push([u64::from(tag), seq, sent, monotonic_ns()]);
        }
    }
    println!("{}", json!({ "packets": packets }));
    Ok(())
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
                Some(Packet { tag: p[0].as_u64()? as u32, seq: p[1].as_u64()?, sent_ns: p[2].as_u64()? })
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

/// Run a `udp-source` to completion.
pub fn send(
    place: Place<'_>,
    to: SocketAddr,
    tag: u32,
    count: u64,
    interval_us: u64,
) -> anyhow::Result<Sent> {
    let mut cmd = command(
        "udp-source",
        &[
            "--to".into(),
            to.to_string(),
            "--tag".into(),
            tag.to_string(),
            "--count".into(),
            count.to_string(),
            "--interval-us".into(),
            interval_us.to_string(),
        ],
    );
    let out = place.output(&mut cmd)?;
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
    let mut cmd = command(
        "udp-source",
        &[
            "--to".into(),
            to.to_string(),
            "--tag".into(),
            tag.to_string(),
            "--count".into(),
            count.to_string(),
            "--interval-us".into(),
            interval_us.to_string(),
        ],
    );
    cmd.stdout(std::process::Stdio::piped());
    place.spawn(&mut cmd)
}

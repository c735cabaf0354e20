//! `chaos attack net-corrupt`: corrupted packets never reach the receiving
//! socket — the receiver's IP layer drops them, counting each in
//! /proc/net/snmp (Ip InHdrErrors; Ip6InHdrErrors in /proc/net/snmp6), as
//! a checksum-caught bit error — at the configured rate, for IPv4 and IPv6.

use std::{net::SocketAddr, time::Duration};

use super::{net_delay::attack, net_loss::EGRESS};
use crate::{
    fixtures::{lab::Lab, netns::Netns},
    harness::Ctx,
    helpers::udp,
    stats::check_rate_measured,
};

/// A namespace's count of packets its IP layer dropped for a bad header
/// (Ip InHdrErrors in /proc/net/snmp; Ip6InHdrErrors in /proc/net/snmp6).
pub fn hdr_errors(ns: &Netns, v6: bool) -> anyhow::Result<u64> {
    if v6 {
        let text = ns.exec(&["cat", "/proc/net/snmp6"])?;
        text.lines()
            .find_map(|l| l.strip_prefix("Ip6InHdrErrors"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no Ip6InHdrErrors in /proc/net/snmp6"))
    } else {
        let text = ns.exec(&["cat", "/proc/net/snmp"])?;
        let mut ip = text.lines().filter(|l| l.starts_with("Ip: "));
        let (names, values) = (ip.next().unwrap_or(""), ip.next().unwrap_or(""));
        let at = names.split_whitespace().position(|n| n == "InHdrErrors");
        at.and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no Ip InHdrErrors in /proc/net/snmp"))
    }
}

pub fn corrupt_rate_is_exact_and_receivers_drop_them(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    lab.ctr.ip(&["addr", "add", "fd77::1/64", "dev", &lab.ctr_dev, "nodad"])?;
    // The lab names the pair cv<tag>c (ctr) and cv<tag>p (peer).
    let peer_dev = format!("{}p", &lab.ctr_dev[..lab.ctr_dev.len() - 1]);
    lab.peer.ip(&["addr", "add", "fd77::2/64", "dev", &peer_dev, "nodad"])?;
    let v6_peer: std::net::Ipv6Addr = "fd77::2".parse()?;
    for (v6, to) in
        [(false, SocketAddr::from((lab.peer_ip, 9500))), (true, SocketAddr::from((v6_peer, 9501)))]
    {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let n = 2500;
        let lost = check_rate_measured(&format!("{family} packets corrupted"), 0.10, || {
            let run = attack(&lab, "net-corrupt", &["--corrupt", "10", "--duration", "60s"])?;
            let sink = udp::Sink::start(lab.peer(), to)?;
            let before = hdr_errors(&lab.peer, v6)?;
            let sent = udp::send(lab.target(), to, 50, n, 1000)?;
            std::thread::sleep(Duration::from_millis(100));
            let packets = sink.finish()?;
            let end = super::net_loss::end(run)?;
            let dropped_by_receiver = hdr_errors(&lab.peer, v6)? - before;
            anyhow::ensure!(
                sent.errors == 0,
                "{family}: sendto failed {} times ({})",
                sent.errors,
                sent.errnos
            );
            let lost = n - packets.iter().filter(|p| p.tag == 50).count() as u64;
            anyhow::ensure!(
                dropped_by_receiver == lost,
                "{family}: the receiver's IP layer dropped {dropped_by_receiver} packets as bad headers, {lost} went missing"
            );
            let counted = end["counters"]["egress_corrupted"].as_u64().unwrap_or(u64::MAX);
            anyhow::ensure!(
                counted == lost,
                "{family}: chaos counted {counted} corrupted, {lost} went missing"
            );
            Ok((lost, n))
        })?;
        eprint!("[{family}: {lost} of {n} corrupted, all dropped by the receiver] ");
    }
    Ok(())
}

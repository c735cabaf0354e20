//! net-delay, net-rate, net-duplicate, net-corrupt against netem configured
//! identically, on the same kernel, in the same run, rounds alternating.
//! Needs fq and netem: `sudo ./x bench net-delay` runs it in a Debian VM.
//!
//! 1. Delay 50 ms ± 10 ms (uniform, normal): the RTT the target's pings see
//!    (ICMP echo answered by the peer's kernel, kernel receive timestamps),
//!    minus the baseline median; the sibling cgroup's RTT at the same time
//!    (netem on the device delays it too: that is its blast radius); CPU
//!    time of the pinging process per probe.
//! 2. TCP goodput of the target under a fixed 50 ms delay: whether the
//!    delay line holds the sender back (see chaos-ebpf/src/net/effects.rs
//!    on TCP Small Queues and orphaned copies).
//! 3. Rate: wire rate of a TCP bulk transfer at 10, 100 and 1000 Mbit/s.
//! 4. fq's packet limits: a UDP flood from one socket under delays long
//!    enough that rate × delay exceeds them, at the rates a VM reaches.
//! 5. Duplication and corruption rates at 10%, as receivers count them.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::median;
use crate::{
    fixtures::{lab::Lab, runner::ChaosRun},
    helpers::{
        ping::{self, Pings},
        tcp::{RateSink, stream},
        udp,
    },
    stats::quantile,
};

const ROUNDS: usize = 3;
const PROBES: usize = 1500;
const PROBE_INTERVAL_US: u64 = 4000;

/// `sections`: any of delay, tcp, rate, flood, dup (default: all).
pub fn run(sections: &[String]) -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("chaos vs netem on {}, {ROUNDS} alternating rounds, medians of rounds\n", kernel.trim());
    let want = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    if want("delay") {
        delay(&lab)?;
    }
    if want("tcp") {
        tcp_under_delay(&lab)?;
    }
    if want("rate") {
        rate(&lab)?;
    }
    if want("flood") {
        flood(&lab)?;
    }
    if want("dup") {
        dup_corrupt(&lab)?;
    }
    Ok(())
}

fn chaos(lab: &Lab, kind: &str, args: &[&str]) -> anyhow::Result<ChaosRun> {
    crate::tests::net_delay::attack(lab, kind, args)
}

fn stop(run: ChaosRun) -> anyhow::Result<serde_json::Value> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(60))?;
    ended.event("abort").cloned().ok_or_else(|| anyhow::anyhow!("no abort event: {}", ended.stderr))
}

/// netem at the root of the ctr device, with `args` (`delay 50ms 10ms ...`).
struct Netem<'a>(&'a Lab);

impl<'a> Netem<'a> {
    fn add(lab: &'a Lab, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = vec!["tc", "qdisc", "add", "dev", &lab.ctr_dev, "root", "netem"];
        cmd.extend_from_slice(args);
        lab.ctr.exec(&cmd)?;
        Ok(Self(lab))
    }
}

impl Drop for Netem<'_> {
    fn drop(&mut self) {
        let _ = self.0.ctr.exec(&["tc", "qdisc", "del", "dev", &self.0.ctr_dev, "root"]);
    }
}

fn pings(lab: &Lab) -> anyhow::Result<(Pings, Pings)> {
    let to = IpAddr::V4(lab.peer_ip);
    let sibling = ping::Running::start(lab.sibling(), to, PROBES, PROBE_INTERVAL_US)?;
    let target = ping::ping(lab.target(), to, PROBES, PROBE_INTERVAL_US)?;
    Ok((target, sibling.finish()?))
}

#[derive(Default)]
struct DelayRow {
    median_added: Vec<f64>,
    p1: Vec<f64>,
    p99: Vec<f64>,
    iqr: Vec<f64>,
    lost: Vec<f64>,
    cpu_us: Vec<f64>,
    sibling_added: Vec<f64>,
    sibling_p99: Vec<f64>,
}

impl DelayRow {
    fn add(&mut self, t: &Pings, s: &Pings, base_t: f64, base_s: f64) {
        let r = &t.rtts_ms;
        self.median_added.push(quantile(r, 0.5) - base_t);
        self.p1.push(quantile(r, 0.01) - base_t);
        self.p99.push(quantile(r, 0.99) - base_t);
        self.iqr.push(quantile(r, 0.75) - quantile(r, 0.25));
        self.lost.push((t.sent - r.len()) as f64);
        self.cpu_us.push(t.cpu_ms * 1e3 / t.sent as f64);
        self.sibling_added.push(quantile(&s.rtts_ms, 0.5) - base_s);
        self.sibling_p99.push(quantile(&s.rtts_ms, 0.99) - base_s);
    }

    fn print(self, name: &str) {
        let m = |v: Vec<f64>| median(v);
        let added = m(self.median_added);
        println!(
            "{name:<22} {added:>8.2} {:>+8.2} {:>7.2} {:>8.2} {:>6.2} {:>5.0} {:>8.1} {:>9.2} {:>9.2}",
            added - 50.0,
            m(self.p1),
            m(self.p99),
            m(self.iqr),
            m(self.lost),
            m(self.cpu_us),
            m(self.sibling_added),
            m(self.sibling_p99),
        );
    }
}

fn delay(lab: &Lab) -> anyhow::Result<()> {
    println!("1. delay 50 ms ± 10 ms on the target's egress; RTT added over the baseline median (ms)");
    println!(
        "{:<22} {:>8} {:>8} {:>7} {:>8} {:>6} {:>5} {:>8} {:>9} {:>9}",
        "setup", "median", "error", "p1", "p99", "IQR", "lost", "cpu us", "sib med", "sib p99"
    );
    let mut base_cpu = Vec::new();
    for (dist, iqr) in [("uniform", 10.0), ("normal", 13.49)] {
        let (mut c, mut n) = (DelayRow::default(), DelayRow::default());
        for _ in 0..ROUNDS {
            let (bt, bs) = pings(lab)?;
            base_cpu.push(bt.cpu_ms * 1e3 / bt.sent as f64);
            let (bt, bs) = (quantile(&bt.rtts_ms, 0.5), quantile(&bs.rtts_ms, 0.5));
            // netem's jitter is uniform unless given a distribution table
            // (there is no uniform.dist).
            let mut args = vec!["delay", "50ms", "10ms", "limit", "100000"];
            if dist != "uniform" {
                args.extend_from_slice(&["distribution", dist]);
            }
            let netem = Netem::add(lab, &args)?;
            let (t, s) = pings(lab)?;
            drop(netem);
            n.add(&t, &s, bt, bs);
            let run = chaos(
                lab,
                "net-delay",
                &["--delay", "50ms", "--jitter", "10ms", "--distribution", dist, "--duration", "10m"],
            )?;
            let (t, s) = pings(lab)?;
            stop(run)?;
            c.add(&t, &s, bt, bs);
        }
        n.print(&format!("netem {dist}"));
        c.print(&format!("chaos {dist}"));
        println!("{:<22} IQR expected {iqr:.2}", "");
    }
    println!(
        "baseline ping CPU {:.1} us per probe; {PROBES} probes every {} ms per round; sib = the sibling cgroup, same device, same time\n",
        median(base_cpu),
        PROBE_INTERVAL_US / 1000
    );
    Ok(())
}

fn goodput(lab: &Lab, port: u16, seconds: f64) -> anyhow::Result<f64> {
    let to = SocketAddr::from((lab.peer_ip, port));
    let sink = RateSink::start(lab.peer(), to)?;
    stream(lab.target(), to, seconds)?;
    sink.finish(2.0, 0.5)
}

fn tcp_under_delay(lab: &Lab) -> anyhow::Result<()> {
    println!("2. TCP goodput of the target under a fixed 50 ms egress delay (Mbit/s, 8 s transfers)");
    let (mut none, mut c, mut n) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        none.push(goodput(lab, 9700, 8.0)? / 1e6);
        let netem = Netem::add(lab, &["delay", "50ms"])?;
        n.push(goodput(lab, 9701, 8.0)? / 1e6);
        drop(netem);
        let run = chaos(lab, "net-delay", &["--delay", "50ms", "--duration", "10m"])?;
        c.push(goodput(lab, 9702, 8.0)? / 1e6);
        stop(run)?;
    }
    println!("{:<22} {:>10.1}", "no delay", median(none));
    println!("{:<22} {:>10.1}", "netem delay 50ms", median(n));
    println!("{:<22} {:>10.1}\n", "chaos --delay 50ms", median(c));
    Ok(())
}

fn rate(lab: &Lab) -> anyhow::Result<()> {
    println!("3. rate: wire Mbit/s of a TCP bulk transfer (goodput x (mss + 66) / mss), error vs configured");
    println!("{:<10} {:>12} {:>9} {:>12} {:>9}", "rate", "netem", "error", "chaos", "error");
    for mbit in [10u32, 100, 1000] {
        let rate = format!("{mbit}mbit");
        let (mut c, mut n) = (vec![], vec![]);
        for round in 0..ROUNDS {
            let port = 9710 + round as u16 * 2;
            let netem = Netem::add(lab, &["rate", &rate])?;
            n.push(wire(lab, port)?);
            drop(netem);
            let run = chaos(lab, "net-rate", &["--rate", &rate, "--duration", "10m"])?;
            c.push(wire(lab, port + 1)?);
            stop(run)?;
        }
        let (n, c) = (median(n), median(c));
        let err = |x: f64| (x / f64::from(mbit) - 1.0) * 100.0;
        println!("{rate:<10} {n:>12.2} {:>+8.2}% {c:>12.2} {:>+8.2}%", err(n), err(c));
    }
    println!();
    Ok(())
}

fn wire(lab: &Lab, port: u16) -> anyhow::Result<f64> {
    let to = SocketAddr::from((lab.peer_ip, port));
    let sink = RateSink::start(lab.peer(), to)?;
    let mss = f64::from(stream(lab.target(), to, 8.0)?.max(1));
    Ok(sink.finish(3.0, 0.5)? * (mss + 66.0) / mss / 1e6)
}

fn rx_packets(lab: &Lab) -> anyhow::Result<u64> {
    let dev = format!("{}p", &lab.ctr_dev[..lab.ctr_dev.len() - 1]);
    let out = lab.peer.exec(&["ip", "-s", "-j", "link", "show", "dev", &dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["rx"]["packets"].as_u64().ok_or_else(|| anyhow::anyhow!("no rx packets in {out}"))
}

fn flood(lab: &Lab) -> anyhow::Result<()> {
    println!("4. fq's packet limits: 100000 datagrams (84 bytes, one socket) as fast as the sender goes");
    println!(
        "   chaos's fq: flow_limit 10000 per flow, limit 100000 in all; netem: its limit (default 1000)"
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>11} {:>11}",
        "setup", "sent/s", "arrived", "chaos drop", "send errors", "cpu ns/pkt"
    );
    let to = SocketAddr::from((lab.peer_ip, 9750));
    let n = 100_000u64;
    let setups: [(&str, &[&str]); 7] = [
        ("no fault", &[]),
        ("netem delay 50ms limit 100000", &["delay", "50ms", "limit", "100000"]),
        ("chaos --delay 50ms", &["--delay", "50ms"]),
        ("netem delay 1s (limit 1000)", &["delay", "1s"]),
        ("netem delay 1s limit 100000", &["delay", "1s", "limit", "100000"]),
        ("chaos --delay 1s", &["--delay", "1s"]),
        ("chaos --delay 1s --jitter 1ms", &["--delay", "1s", "--jitter", "1ms"]),
    ];
    for (name, args) in setups {
        let mut netem = None;
        let mut run = None;
        if name.starts_with("netem") {
            netem = Some(Netem::add(lab, args)?);
        } else if !args.is_empty() {
            let mut a = args.to_vec();
            a.extend_from_slice(&["--duration", "10m"]);
            run = Some(chaos(lab, "net-delay", &a)?);
        }
        let rx0 = rx_packets(lab)?;
        let t0 = std::time::Instant::now();
        let mut cmd = crate::helpers::command(
            "udp-source",
            &[
                "--to".into(),
                to.to_string(),
                "--tag".into(),
                "9".into(),
                "--count".into(),
                n.to_string(),
                "--interval-us".into(),
                "0".into(),
            ],
        );
        let (out, cpu_ms) = ping::output_with_cpu(lab.target(), &mut cmd)?;
        let secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1500)); // the delay line drains
        let arrived = rx_packets(lab)? - rx0;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let errors = v["errors"].as_u64().unwrap_or(0);
        let drops = match run {
            Some(r) => stop(r)?["counters"]["egress_queue_dropped"].as_u64().unwrap_or(0).to_string(),
            None => "-".into(),
        };
        drop(netem);
        println!(
            "{name:<30} {:>10.0} {arrived:>10} {drops:>10} {errors:>11} {:>11.0}",
            n as f64 / secs,
            cpu_ms * 1e6 / n as f64
        );
    }
    println!("arrived counts the peer device's received packets (a few are not the flood's)\n");
    Ok(())
}

fn dup_corrupt(lab: &Lab) -> anyhow::Result<()> {
    println!("5. duplicate 10% and corrupt 10%, 2500 datagrams: share the receiver got twice / never got");
    println!("{:<26} {:>10} {:>10}", "setup", "duplicated", "corrupted");
    let to = SocketAddr::from((lab.peer_ip, 9760));
    let measure = |tag: u32| -> anyhow::Result<(f64, f64)> {
        let sink = udp::Sink::start(lab.peer(), to)?;
        udp::send(lab.target(), to, tag, 2500, 1000)?;
        std::thread::sleep(Duration::from_millis(200));
        let got: Vec<u64> = sink.finish()?.iter().filter(|p| p.tag == tag).map(|p| p.seq).collect();
        let mut distinct = got.clone();
        distinct.sort();
        distinct.dedup();
        Ok(((got.len() - distinct.len()) as f64 / 25.0, (2500 - distinct.len()) as f64 / 25.0))
    };
    for (i, (name, netem_args, chaos_args)) in [
        ("duplicate", ["duplicate", "10%"], ["net-duplicate", "--duplicate"]),
        ("corrupt", ["corrupt", "10%"], ["net-corrupt", "--corrupt"]),
    ]
    .into_iter()
    .enumerate()
    {
        let netem = Netem::add(lab, &netem_args)?;
        let (nd, nc) = measure(60 + i as u32 * 2)?;
        drop(netem);
        let run = chaos(lab, chaos_args[0], &[chaos_args[1], "10", "--duration", "10m"])?;
        let (cd, cc) = measure(61 + i as u32 * 2)?;
        stop(run)?;
        println!("{:<26} {nd:>9.2}% {nc:>9.2}%", format!("netem {name} 10%"));
        println!("{:<26} {cd:>9.2}% {cc:>9.2}%", format!("chaos {name} 10%"));
    }
    println!("99.9% binomial interval of 10% at n = 2500: [8.08%, 12.04%]");
    Ok(())
}

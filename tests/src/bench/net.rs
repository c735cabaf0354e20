//! net-loss: what the programs cost traffic they do not target, and how
//! fast a fault starts and ends.
//!
//! 1. Untargeted throughput: a process in the *sibling* cgroup sends over
//!    the veth while the target cgroup (same namespace, same device) is
//!    under 50% egress + ingress loss, so every sibling packet runs the
//!    egress classifier and finds no rule. Small UDP datagrams as fast as
//!    one core can send (per-packet cost dominates: ns/packet added), and a
//!    TCP bulk transfer with iperf3 (throughput).
//!    The programs' own run time per packet (bpf_stats) next to an empty
//!    classifier's, which the throughput noise does not blur.
//! 2. Start latency: from spawning `chaos attack` to the first datagram
//!    lost, for a target streaming one datagram per 100 µs.
//! 3. Stop latency: from SIGTERM to the last datagram lost, and the
//!    injector's own measure (rule deleted, `inert_after_us`).

use std::{net::SocketAddr, process::Command, time::Duration};

use chaos::timebase::monotonic_ns;

use super::{median, program_ns};
use crate::{
    fixtures::{lab::Lab, runner::ChaosRun},
    helpers::udp,
};

const ROUNDS: usize = 5;
/// Rounds of the untargeted-throughput comparison (each 3 setups).
const UNTARGETED_ROUNDS: usize = 7;

pub fn run() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    println!("net-loss benchmarks, alternating rounds, medians\n");
    untargeted(&lab)?;
    latency(&lab)?;
    Ok(())
}

fn attack(lab: &Lab) -> anyhow::Result<ChaosRun> {
    let mut run = ChaosRun::start(&[
        "attack",
        "net-loss",
        "--cgroup",
        &lab.target.rel,
        "--percent",
        "50",
        "--duration",
        "10m",
    ])?;
    run.wait_event("start", Duration::from_secs(20))?;
    Ok(run)
}

fn stop(run: ChaosRun) -> anyhow::Result<serde_json::Value> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(20))?;
    ended.event("abort").cloned().ok_or_else(|| anyhow::anyhow!("no abort event: {}", ended.stderr))
}

fn iperf_gbps(lab: &Lab, seconds: u32) -> anyhow::Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", &lab.peer_ip.to_string(), "-t", &seconds.to_string(), "-J"]);
    let out = lab.sibling().output(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("iperf3 said {out}"))?;
    Ok(bps / 1e9)
}

/// An empty TCX egress program on the ctr device: the cost of having any
/// tc egress hook at all, to tell it apart from what chaos's program adds.
fn noop_hook(lab: &Lab) -> anyhow::Result<aya::Ebpf> {
    use aya::programs::{SchedClassifier, TcAttachType, tc::TcAttach};
    let mut ebpf = chaos::ebpf::load_capabilities()?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("probe_sched_cls")
        .ok_or_else(|| anyhow::anyhow!("no probe_sched_cls"))?
        .try_into()?;
    prog.load()?;
    let netns = chaos::attach::netns::Netns::at(lab.ctr.path())?;
    let dev = std::ffi::CString::new(lab.ctr_dev.clone())?;
    netns.run(|| {
        prog.attach(
            dev.as_c_str(),
            TcAttach::Tcx { attach_type: TcAttachType::Egress, order: Default::default() },
        )
    })??;
    Ok(ebpf)
}

/// What is on the device during one measurement.
#[derive(Clone, Copy)]
enum Setup {
    NoHook,
    EmptyTcx,
    Chaos,
}

fn untargeted(lab: &Lab) -> anyhow::Result<()> {
    let flood_to = SocketAddr::from((lab.peer_ip, 9200));
    let have_iperf = Command::new("iperf3").arg("--version").output().is_ok();
    let mut server = if have_iperf {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-B", &lab.peer_ip.to_string()]).stdout(std::process::Stdio::null());
        Some(lab.peer().spawn(&mut cmd)?)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(300));
    // [setup][round]
    let mut pps = [vec![], vec![], vec![]];
    let mut per_cpu = [vec![], vec![], vec![]];
    let mut gbps = [vec![], vec![], vec![]];
    for round in 0..UNTARGETED_ROUNDS {
        // The order flips every round (A B C, C B A, ...), so that a drift
        // of the machine's speed during a round favours no column.
        let mut order = [Setup::NoHook, Setup::EmptyTcx, Setup::Chaos];
        if round % 2 == 1 {
            order.reverse();
        }
        for setup in order {
            let (hook, run) = match setup {
                Setup::NoHook => (None, None),
                Setup::EmptyTcx => (Some(noop_hook(lab)?), None),
                Setup::Chaos => (None, Some(attack(lab)?)),
            };
            let rates = udp::flood_rates(lab.sibling(), flood_to, 2.0)?;
            pps[setup as usize].push(rates.per_second);
            per_cpu[setup as usize].push(rates.per_cpu_second);
            if have_iperf {
                gbps[setup as usize].push(iperf_gbps(lab, 3)?);
            }
            drop(hook);
            if let Some(run) = run {
                stop(run)?;
            }
        }
    }
    if let Some(s) = server.as_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    // Ratios are taken within each round, then the median of the rounds:
    // the rounds' absolute speeds differ by more than the effect.
    let ratio = |xs: &[Vec<f64>; 3], a: Setup, b: Setup| {
        median(xs[a as usize].iter().zip(&xs[b as usize]).map(|(x, y)| x / y).collect())
    };
    let med = |xs: &[Vec<f64>; 3], s: Setup| median(xs[s as usize].clone());
    println!("untargeted traffic (sibling cgroup, same device) with the target under attack");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11}",
        "metric (medians)", "no hook", "empty TCX", "chaos", "empty/none", "chaos/none", "chaos/empty"
    );
    let row = |name: &str, xs: &[Vec<f64>; 3], precision: usize| {
        println!(
            "{:<34} {:>10.p$} {:>10.p$} {:>10.p$} {:>11.3} {:>11.3} {:>11.3}",
            name,
            med(xs, Setup::NoHook),
            med(xs, Setup::EmptyTcx),
            med(xs, Setup::Chaos),
            ratio(xs, Setup::EmptyTcx, Setup::NoHook),
            ratio(xs, Setup::Chaos, Setup::NoHook),
            ratio(xs, Setup::Chaos, Setup::EmptyTcx),
            p = precision
        )
    };
    row("UDP 64-byte frames/s (one sender)", &pps, 0);
    let (b, n, w) = (med(&pps, Setup::NoHook), med(&pps, Setup::EmptyTcx), med(&pps, Setup::Chaos));
    println!(
        "{:<34} {:>10} {:>10.1} {:>10.1}",
        "ns added per packet vs no hook",
        "",
        (1.0 / n - 1.0 / b) * 1e9,
        (1.0 / w - 1.0 / b) * 1e9,
    );
    // The sender's own CPU time: descheduling (another tenant, another
    // vCPU's work) does not count, so the rounds disagree less.
    row("UDP frames per sender CPU-second", &per_cpu, 0);
    if have_iperf {
        row("TCP Gbit/s (iperf3, 3 s)", &gbps, 2);
    } else {
        println!("(iperf3 not installed: TCP throughput skipped)");
    }
    println!("ratios: per round, median of {UNTARGETED_ROUNDS}; goal chaos/empty >= 0.99\n");

    // The programs' own time per packet (kernel.bpf_stats_enabled), free
    // of the throughput noise, which on this shared machine is as large as
    // the effect: chaos's lookup for a packet of another cgroup next to an
    // empty classifier. Both include the statistics' own two clock reads.
    let flood = || udp::flood_rate(lab.sibling(), flood_to, 1.0).map(drop);
    let hook = noop_hook(lab)?;
    let empty_ns = program_ns("probe_sched_cls", flood)?;
    drop(hook);
    let run = attack(lab)?;
    let chaos_ns = program_ns("net_egress", flood)?;
    stop(run)?;
    println!("program time per packet (bpf_stats run_time / run_cnt)");
    println!("{:<50} {:>10.1}", "ns: empty classifier (probe_sched_cls)", empty_ns);
    println!("{:<50} {:>10.1}", "ns: net_egress, packet of another cgroup", chaos_ns);
    println!("{:<50} {:>10.1}\n", "ns: chaos's lookup (difference)", chaos_ns - empty_ns);
    Ok(())
}

fn latency(lab: &Lab) -> anyhow::Result<()> {
    let addr = SocketAddr::from((lab.peer_ip, 9201));
    let (mut start_ms, mut stop_ms, mut inert_us) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let sink = udp::Sink::start(lab.peer(), addr)?;
        let count = 20_000u64; // 2 s at 100 µs
        let sender = udp::send_background(lab.target(), addr, 3, count, 100)?;
        std::thread::sleep(Duration::from_millis(300));
        let spawned = monotonic_ns();
        let run = attack(lab)?;
        std::thread::sleep(Duration::from_millis(700));
        let signalled = monotonic_ns();
        let end = stop(run)?;
        sender.wait_with_output()?;
        let packets = sink.finish()?;
        let mut got: Vec<(u64, u64)> =
            packets.iter().filter(|p| p.tag == 3).map(|p| (p.seq, p.sent_ns)).collect();
        got.sort();
        // Lost datagrams, with send times interpolated from their neighbours
        // (the sender keeps a 100 µs schedule).
        let mut lost_times = Vec::new();
        for w in got.windows(2) {
            for missing in w[0].0 + 1..w[1].0 {
                let frac = (missing - w[0].0) as f64 / (w[1].0 - w[0].0) as f64;
                lost_times.push(w[0].1 as f64 + frac * (w[1].1 - w[0].1) as f64);
            }
        }
        let first = lost_times.first().copied().unwrap_or(f64::NAN);
        let last = lost_times.last().copied().unwrap_or(f64::NAN);
        start_ms.push((first - spawned as f64) / 1e6);
        stop_ms.push((last - signalled as f64) / 1e6);
        inert_us.push(end["inert_after_us"].as_f64().unwrap_or(f64::NAN));
    }
    println!("fault start and end (target streams a datagram every 100 µs)");
    println!("{:<52} {:>10} {:>8}", "metric", "median", "goal");
    println!(
        "{:<52} {:>8.1}ms {:>8}",
        "spawn `chaos attack` -> first datagram lost",
        median(start_ms),
        "< 100ms"
    );
    println!(
        "{:<52} {:>8.2}ms {:>8}",
        "SIGTERM -> last datagram lost (<= 0: none after)",
        median(stop_ms),
        "< 5ms"
    );
    println!(
        "{:<52} {:>8.0}us {:>8}",
        "stop -> rule deleted (injector, inert_after_us)",
        median(inert_us),
        "< 5ms"
    );
    Ok(())
}

//! net-refuse: what its programs cost the calls they do not refuse, next to
//! the peers' way of refusing connections (an iptables REJECT rule).
//!
//! Everything runs in a network namespace of the benchmark's own (so that
//! the iptables rule touches nothing of the host's), against an HTTP
//! server there. Per round, alternating, each measurement against the mean
//! of the baselines measured around it:
//!
//! 1. a *sibling* cgroup's TCP connects (non-blocking connect, close) with
//!    nothing attached; with the target under net-refuse (the sibling's
//!    sockets are outside the programs' subtree: the kernel runs no
//!    program for them, only its cgroup hook's check); and with an
//!    iptables `REJECT` rule for another port in OUTPUT (every packet of
//!    every process walks it);
//! 2. the *target's* own calls that the rule does not match (another
//!    port): TCP connects, and UDP connects, which send nothing, so their
//!    cost is the system call and the hook alone.

use std::{net::SocketAddr, process::Command, time::Duration};

use super::{median, program_ns};
use crate::{
    fixtures::{netns::Netns, runner::ChaosRun},
    helpers::echo::Echo,
    tests::net_refuse::World,
};

const ROUNDS: usize = 5;
const SECONDS: &str = "2";

pub fn run() -> anyhow::Result<()> {
    let caps = chaos::capabilities::Capabilities::new();
    let sock_addr = caps.detect(chaos::capabilities::Capability::CgroupSockAddr);
    anyhow::ensure!(sock_addr.available, "net-refuse needs cgroup sock_addr programs: {}", sock_addr.detail);
    let w = World::new_in(Some(Netns::new("bench-conn")?))?;
    let rate = |place, op: &str| -> anyhow::Result<f64> {
        let to = w.v4();
        let args = ["--op", op, "--to", &to, "--seconds", SECONDS];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let c = crate::helpers::io::run_command(place, &mut crate::helpers::command("conn-calls", &args))?;
        anyhow::ensure!(c.failed() == 0, "{op}: {} of {} calls failed: {:?}", c.failed(), c.calls, c.errnos);
        Ok(c.per_second())
    };
    let other_port = (w.port + 1).to_string();
    println!("net-refuse benchmarks, {ROUNDS} alternating rounds of {SECONDS} s each, medians");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}\n", kernel.trim());

    let mut sibling = Compared::default();
    let (mut t_base, mut t_tcp, mut r_tcp) = (vec![], vec![], vec![]);
    let (mut u_base, mut u_udp, mut r_udp) = (vec![], vec![], vec![]);
    let have_iptables = Command::new("iptables").arg("-V").output().is_ok_and(|o| o.status.success());
    for _ in 0..ROUNDS {
        let b = rate(w.sibling(), "connect")?;
        let run = start(&w, &other_port)?;
        let r = rate(w.sibling(), "connect")?;
        let t = rate(w.target(), "connect")?;
        let u = rate(w.target(), "udp-connect")?;
        stop(run)?;
        let i = if have_iptables {
            let rule = Reject::add(&w, "OUTPUT", &other_port)?;
            let i = rate(w.sibling(), "connect")?;
            drop(rule);
            Some(i)
        } else {
            None
        };
        let b2 = rate(w.sibling(), "connect")?;
        let tb = rate(w.target(), "connect")?;
        let ub = rate(w.target(), "udp-connect")?;
        sibling.record([b, b2], r, i);
        t_base.push(tb);
        t_tcp.push(t);
        r_tcp.push(t / tb);
        u_base.push(ub);
        u_udp.push(u);
        r_udp.push(u / ub);
    }

    sibling.print(
        "1. a sibling cgroup's TCP connects (connect + close, non-blocking, on loopback)",
        "target under net-refuse",
        "iptables -A OUTPUT -p tcp --dport P2 -j REJECT",
    );
    println!("2. the target's own calls the rule does not match (--port of another service)");
    println!("{:<58} {:>12} {:>8}", "", "calls/s", "ratio");
    println!("{:<58} {:>12.0} {:>8}", "TCP connect, no attack", median(t_base), "");
    println!(
        "{:<58} {:>12.0} {:>8.3}",
        "TCP connect, net-refuse on another port",
        median(t_tcp),
        median(r_tcp)
    );
    println!("{:<58} {:>12.0} {:>8}", "UDP connect (no packet), no attack", median(u_base), "");
    println!(
        "{:<58} {:>12.0} {:>8.3}",
        "UDP connect, net-refuse on another port",
        median(u_udp),
        median(r_udp)
    );
    println!("ratio = median over rounds of (calls/s) / (baseline calls/s measured around it)\n");

    // The target's listener, refused; and a server of another cgroup that
    // accepts as fast as connections come (an HTTP server's queue would
    // fill, and its dropped SYNs cost a second each).
    let listener = Echo::start(w.target(), SocketAddr::from(([127, 0, 0, 1], w.port + 1)))?;
    let server = SocketAddr::from(([127, 0, 0, 1], w.port + 2));
    let echo = Echo::start(w.outside(), server)?;
    let handshakes = |place| -> anyhow::Result<f64> {
        let to = server.to_string();
        let args = ["--op", "tcp-handshake", "--to", &to, "--seconds", SECONDS];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let c = crate::helpers::io::run_command(place, &mut crate::helpers::command("conn-calls", &args))?;
        anyhow::ensure!(c.failed() == 0, "{} of {} handshakes failed: {:?}", c.failed(), c.calls, c.errnos);
        Ok(c.per_second())
    };
    let mut incoming = Compared::default();
    for _ in 0..ROUNDS {
        let b = handshakes(w.sibling())?;
        let run = start_incoming(&w, &other_port)?;
        let r = handshakes(w.sibling())?;
        stop(run)?;
        let i = if have_iptables {
            let rule = Reject::add(&w, "INPUT", &other_port)?;
            let i = handshakes(w.sibling())?;
            drop(rule);
            Some(i)
        } else {
            None
        };
        let b2 = handshakes(w.sibling())?;
        incoming.record([b, b2], r, i);
    }
    incoming.print(
        "3. a sibling's TCP handshakes with another cgroup's listener (blocking connect + close)",
        "target's listener on P2 under --direction incoming",
        "iptables -A INPUT -p tcp --dport P2 -j REJECT",
    );

    let run = start(&w, &other_port)?;
    let ns = program_ns("conn_eperm_cn4", || rate(w.target(), "udp-connect").map(drop));
    stop(run)?;
    let run = start_incoming(&w, &other_port)?;
    let incoming_ns = program_ns("conn_incoming", || handshakes(w.sibling()).map(drop));
    stop(run)?;
    listener.finish()?;
    echo.finish()?;
    println!("program time per call (bpf_stats run_time / run_cnt)");
    println!("{:<58} {:>12.0}", "ns: conn_eperm_cn4, a target's call the rule passes", ns?);
    println!("{:<58} {:>12.0}", "ns: conn_incoming, a SYN to another cgroup's listener", incoming_ns?);
    Ok(())
}

/// Connections per second of a baseline (measured before and after each
/// round), under chaos and under an iptables rule, each with its ratio to
/// the mean of the baselines around it.
#[derive(Default)]
struct Compared {
    base: Vec<f64>,
    attacked: Vec<f64>,
    iptables: Vec<f64>,
    r_attacked: Vec<f64>,
    r_iptables: Vec<f64>,
}

impl Compared {
    fn record(&mut self, around: [f64; 2], attacked: f64, iptables: Option<f64>) {
        let mean = (around[0] + around[1]) / 2.0;
        self.base.extend(around);
        self.attacked.push(attacked);
        self.r_attacked.push(attacked / mean);
        if let Some(i) = iptables {
            self.iptables.push(i);
            self.r_iptables.push(i / mean);
        }
    }

    fn print(self, title: &str, attacked: &str, iptables: &str) {
        println!("{title}");
        println!("{:<58} {:>12} {:>8}", "", "connects/s", "ratio");
        println!("{:<58} {:>12.0} {:>8}", "nothing attached", median(self.base), "");
        println!("{:<58} {:>12.0} {:>8.3}", attacked, median(self.attacked), median(self.r_attacked));
        if self.iptables.is_empty() {
            println!("(iptables not installed: its row is left out)");
        } else {
            println!("{:<58} {:>12.0} {:>8.3}", iptables, median(self.iptables), median(self.r_iptables));
        }
        println!();
    }
}

fn start_incoming(w: &World, port: &str) -> anyhow::Result<ChaosRun> {
    w.attack(&["--direction", "incoming", "--port", port, "--duration", "10m"])
}

fn start(w: &World, port: &str) -> anyhow::Result<ChaosRun> {
    w.attack(&["--port", port, "--errno", "EPERM", "--duration", "10m"])
}

fn stop(run: ChaosRun) -> anyhow::Result<()> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(30))?;
    anyhow::ensure!(ended.event("abort").is_some(), "no abort event: {}", ended.stderr);
    Ok(())
}

/// An iptables REJECT rule in the benchmark's namespace, deleted on drop.
struct Reject<'a> {
    w: &'a World,
    chain: &'static str,
    port: String,
}

impl<'a> Reject<'a> {
    fn rule(chain: &str, port: &str, op: &'a str) -> Vec<String> {
        ["iptables", op, chain, "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn add(w: &'a World, chain: &'static str, port: &str) -> anyhow::Result<Self> {
        let args = Self::rule(chain, port, "-A");
        w.exec(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(Self { w, chain, port: port.to_owned() })
    }
}

impl Drop for Reject<'_> {
    fn drop(&mut self) {
        let args = Self::rule(self.chain, &self.port, "-D");
        let _ = self.w.exec(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

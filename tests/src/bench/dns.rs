//! dns-error: what it costs the lookups it leaves alone, next to the
//! peers' way (a filtering DNS proxy the target is pointed at, as a
//! rewritten resolv.conf or a CoreDNS plugin does).
//!
//! In the dns tests' world (a dnsmasq resolver beyond a veth), each round
//! measures, alternating, sequential queries per second (one query on a
//! fresh socket, then its answer) of a name the attack does not match:
//!
//! 1. the *target's* queries with nothing attached, and under dns-error
//!    for another zone (each query has its name read and looked up);
//! 2. a *sibling's* queries under the same attack (the classifier's rule
//!    lookup misses);
//! 3. the target's queries through a dnsmasq proxy in its namespace that
//!    answers NXDOMAIN for the zone and forwards the rest, uncached (the
//!    proxy's way: every lookup takes a second hop);
//! 4. the target's queries over TCP (a connection per query, as glibc's
//!    `use-vc` and dig's `+tcp` make), with nothing attached and under the
//!    same attack: each connection enters the sockhash (sock_ops) and its
//!    query is read by the sk_msg program, which passes it.
//!
//! Each ratio is against the mean of the baselines measured around it.

use std::{process::Command, time::Duration};

use super::{median, program_ns};
use crate::{
    fixtures::{process::Place, runner::ChaosRun, scratch::Killed},
    tests::dns_error::{UPSTREAM, World},
};

const ROUNDS: usize = 5;
const SECONDS: &str = "2";
/// The name every query asks for: outside the attacked zone.
const NAME: &str = "other.test";
/// The filtering proxy's address in the target's namespace.
const PROXY: &str = "127.0.0.54";

pub fn run() -> anyhow::Result<()> {
    let w = World::new()?;
    let proxy = proxy(&w)?;
    let rate_over = |place: Place<'_>, server: &str, transport: &str| -> anyhow::Result<f64> {
        let to = format!("{server}:53");
        let args = ["--server", &to, "--name", NAME, "--seconds", SECONDS, transport];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let c = crate::helpers::io::run_command(place, &mut crate::helpers::command("dns-calls", &args))?;
        anyhow::ensure!(c.failed() == 0, "{} of {} queries failed: {:?}", c.failed(), c.calls, c.errnos);
        Ok(c.per_second())
    };
    let rate = |place: Place<'_>, server: &str| rate_over(place, server, "--udp");
    let tcp = |place: Place<'_>| rate_over(place, UPSTREAM, "--tcp");
    let upstream = UPSTREAM;
    println!("dns-error benchmarks, {ROUNDS} alternating rounds of {SECONDS} s each, medians");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}\n", kernel.trim());
    let (mut base, mut s_base, mut target, mut sibling, mut proxied) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut r_target, mut r_sibling, mut r_proxied) = (vec![], vec![], vec![]);
    let (mut tcp_base, mut tcp_target, mut r_tcp) = (vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // The order within a round flips every round, as the net
        // benchmark's does: neither cgroup is always measured first.
        let pair = |first_target: bool| -> anyhow::Result<(f64, f64)> {
            if first_target {
                Ok((rate(w.target(), upstream)?, rate(w.sibling(), upstream)?))
            } else {
                let s = rate(w.sibling(), upstream)?;
                Ok((rate(w.target(), upstream)?, s))
            }
        };
        let flip = round % 2 == 0;
        let (b1, sb1) = pair(flip)?;
        let tb1 = tcp(w.target())?;
        let run = start(&w)?;
        let (t, s) = pair(!flip)?;
        let tt = tcp(w.target())?;
        stop(run)?;
        let p = rate(w.target(), PROXY)?;
        let tb2 = tcp(w.target())?;
        let (b2, sb2) = pair(flip)?;
        tcp_base.extend([tb1, tb2]);
        tcp_target.push(tt);
        r_tcp.push(tt / ((tb1 + tb2) / 2.0));
        let (mean, s_mean) = ((b1 + b2) / 2.0, (sb1 + sb2) / 2.0);
        base.extend([b1, b2]);
        s_base.extend([sb1, sb2]);
        target.push(t);
        sibling.push(s);
        proxied.push(p);
        r_target.push(t / mean);
        r_sibling.push(s / s_mean);
        r_proxied.push(p / mean);
    }
    println!("queries for a name the attack does not match ({NAME}), one at a time");
    println!("{:<62} {:>10} {:>8}", "", "queries/s", "ratio");
    println!("{:<62} {:>10.0} {:>8}", "target, nothing attached", median(base), "");
    let row = |what: &str, v: Vec<f64>, r: Vec<f64>| {
        println!("{:<62} {:>10.0} {:>8.3}", what, median(v), median(r));
    };
    row("target under dns-error --name '*.example.test'", target, r_target);
    row("target via a filtering proxy (dnsmasq, no cache)", proxied, r_proxied);
    println!("{:<62} {:>10.0} {:>8}", "sibling cgroup, nothing attached", median(s_base), "");
    row("sibling cgroup, the same attack on the target", sibling, r_sibling);
    println!("{:<62} {:>10.0} {:>8}", "target over TCP, nothing attached", median(tcp_base), "");
    row("target over TCP under dns-error --name '*.example.test'", tcp_target, r_tcp);
    println!("ratio = median over rounds of (queries/s) / (baseline measured around it)\n");
    let run = start(&w)?;
    let ns = program_ns("dns_egress", || rate(w.target(), upstream).map(drop));
    let sibling_ns = program_ns("dns_egress", || rate(w.sibling(), upstream).map(drop));
    let msg_ns = program_ns("dns_msg", || tcp(w.target()).map(drop));
    let ops_ns = program_ns("dns_sockops", || tcp(w.target()).map(drop));
    stop(run)?;
    drop(proxy);
    println!("program time per packet (bpf_stats run_time / run_cnt)");
    println!("{:<62} {:>10.0}", "ns: dns_egress, the target's packets (queries read and passed)", ns?);
    println!("{:<62} {:>10.0}", "ns: dns_egress, the sibling's packets (no rule for them)", sibling_ns?);
    println!("{:<62} {:>10.0}", "ns: dns_msg, a TCP query read and passed", msg_ns?);
    println!("{:<62} {:>10.0}", "ns: dns_sockops, per call (each TCP connection's events)", ops_ns?);
    Ok(())
}

/// dnsmasq on [`PROXY`] in the target's namespace (outside its cgroup):
/// NXDOMAIN for example.test (`--address=/zone/` with no address), every
/// other name forwarded to the resolver, nothing cached.
fn proxy(w: &World) -> anyhow::Result<Killed> {
    let upstream = UPSTREAM;
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file="])
        .args(["--bind-interfaces", &format!("--listen-address={PROXY}"), "--cache-size=0"])
        .args([format!("--server={upstream}"), "--address=/example.test/".to_owned()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let p = Killed(w.outside().spawn(&mut cmd)?);
    std::thread::sleep(Duration::from_millis(300));
    Ok(p)
}

fn start(w: &World) -> anyhow::Result<ChaosRun> {
    w.attack(&["--name", "*.example.test", "--duration", "10m"])
}

fn stop(run: ChaosRun) -> anyhow::Result<()> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(30))?;
    anyhow::ensure!(ended.event("abort").is_some(), "no abort event: {}", ended.stderr);
    Ok(())
}

//! `chaos attack net-delay` and `net-reorder`: the delay distribution the
//! target's packets see, measured by round trips to an echo server in the
//! peer namespace (and by one-way times, on the shared CLOCK_MONOTONIC);
//! the sibling cgroup on the same device unaffected; loss combined in the
//! same attack; bad input refused. Departure times need fq: these tests
//! skip where the kernel has none (the host) and run in the VMs.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use chaos::capabilities::Capability;

use super::net_loss::EGRESS;
use crate::{
    fixtures::{
        cgroup::Cgroup,
        lab::Lab,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
    helpers::{
        ping::{self, Pings},
        udp,
    },
    stats::{check_rate_measured, quantile, sd},
};

/// Start `chaos attack <kind>` on the lab's target and wait until it is in
/// force (a TCG VM takes seconds to load and verify the programs).
pub fn attack(lab: &Lab, kind: &str, extra: &[&str]) -> anyhow::Result<ChaosRun> {
    attack_env(lab, kind, extra, &[])
}

pub fn attack_env(lab: &Lab, kind: &str, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<ChaosRun> {
    let mut args = vec!["attack", kind, "--cgroup", &lab.target.rel];
    args.extend_from_slice(extra);
    let mut run = ChaosRun::start_with_env(&args, env)?;
    run.wait_event("start", Duration::from_secs(90))?;
    Ok(run)
}

/// `tc -j qdisc show dev <ctr device>`, in the container namespace.
pub fn qdiscs(lab: &Lab) -> anyhow::Result<String> {
    Ok(lab.ctr.exec(&["tc", "-j", "qdisc", "show", "dev", &lab.ctr_dev])?.trim().to_owned())
}

/// A second veth pair between the lab's container and peer namespaces
/// (10.78.0.0/24), for netem as the reference measured at the same moments
/// as chaos: returns the container-side device (put netem on its root) and
/// the peer's address. Removed with the namespaces.
pub fn netem_path(lab: &Lab) -> anyhow::Result<(String, IpAddr)> {
    netem_path_in(lab, 78)
}

/// [`netem_path`] on the subnet 10.`net`.0.0/24.
fn netem_path_in(lab: &Lab, net: u8) -> anyhow::Result<(String, IpAddr)> {
    let tag = std::process::id() % 100_000;
    let (nc, np) = (format!("nv{tag}c{net}"), format!("nv{tag}p{net}"));
    crate::fixtures::netns::ip(&[
        "link",
        "add",
        &nc,
        "netns",
        &lab.ctr.name,
        "type",
        "veth",
        "peer",
        "name",
        &np,
        "netns",
        &lab.peer.name,
    ])?;
    lab.ctr.ip(&["addr", "add", &format!("10.{net}.0.1/24"), "dev", &nc])?;
    lab.peer.ip(&["addr", "add", &format!("10.{net}.0.2/24"), "dev", &np])?;
    lab.ctr.ip(&["link", "set", &nc, "up"])?;
    lab.peer.ip(&["link", "set", &np, "up"])?;
    Ok((nc, IpAddr::V4([10, net, 0, 2].into())))
}

/// netem with a fixed delay on a path of its own, pinged from the sibling
/// cgroup at the same moments as what it is the reference for. A VM's
/// qdisc timers fire late when the host is busy, netem's as much as fq's,
/// so a median delay is judged against netem's measured alongside, not
/// against the configured value alone.
pub struct NetemReference {
    peer: IpAddr,
    /// The path's median RTT before netem, in ms.
    base_ms: f64,
}

impl NetemReference {
    pub fn new(lab: &Lab, net: u8, delay: &str) -> anyhow::Result<Self> {
        let (dev, peer) = netem_path_in(lab, net)?;
        let base_ms = median(&ping::ping(lab.sibling(), peer, 50, 5000)?.rtts_ms);
        // Deleted with the lab's namespaces, like the path.
        lab.ctr.exec(&["tc", "qdisc", "add", "dev", &dev, "root", "netem", "delay", delay])?;
        Ok(Self { peer, base_ms })
    }

    /// Run `during` while pinging through netem (`count` probes
    /// `interval_us` apart, as long as `during` or longer); the delay netem
    /// added to each probe, in ms, and what `during` returned.
    pub fn alongside<T>(
        &self,
        lab: &Lab,
        count: usize,
        interval_us: u64,
        during: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(Vec<f64>, T)> {
        let pings = ping::Running::start(lab.sibling(), self.peer, count, interval_us)?;
        let out = during();
        let pings = pings.finish()?;
        let out = out?;
        anyhow::ensure!(
            pings.rtts_ms.len() as f64 >= 0.9 * pings.sent as f64,
            "the netem reference lost {} of {} probes",
            pings.sent - pings.rtts_ms.len(),
            pings.sent
        );
        Ok((pings.rtts_ms.iter().map(|r| r - self.base_ms).collect(), out))
    }
}

/// How far apart the medians of two delay samples may be when both
/// mechanisms add the same delay at the same moments: four standard errors
/// of their difference (each by batch means: what the VM's noise did to
/// that sample), plus 0.5 ms for two timers that fire at different moments
/// — the margin of `delay_and_jitter_hold_their_distribution`, for a fixed
/// delay. About 0.6 ms on a quiet machine, where callers keep their fixed
/// floor; wider only by what the samples themselves show when a busy host
/// holds the VM's timers up.
pub fn same_median_margin(a: &[f64], b: &[f64]) -> f64 {
    0.5 + 4.0 * (batch_se(a, 0.5).powi(2) + batch_se(b, 0.5).powi(2)).sqrt()
}

/// [`qdiscs`] without the clsact/ingress qdisc: the egress tree. Through
/// netlink (kernels without TCX) chaos keeps the clsact it added, empty,
/// rather than deactivate the device to delete it (chaos::attach::tc).
pub fn egress_qdiscs(lab: &Lab) -> anyhow::Result<String> {
    without_clsact(&qdiscs(lab)?)
}

/// A `tc -j qdisc show` without the clsact/ingress qdisc.
pub fn without_clsact(json: &str) -> anyhow::Result<String> {
    let all: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let tree: Vec<_> = all.into_iter().filter(|q| q["parent"] != "ffff:fff1").collect();
    Ok(serde_json::to_string(&tree)?)
}

/// Skip unless departure times can be honoured here.
pub fn require_fq(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::FqQdisc)
}

fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

/// Sent to received, in ms (signed: the two clocks are read in different
/// processes, a few µs apart).
pub fn one_way_ms(p: &udp::Packet) -> f64 {
    (p.recv_ns as i64 - p.sent_ns as i64) as f64 / 1e6
}

pub fn summary(p: &Pings) -> String {
    format!(
        "median {:.2} p5 {:.2} p95 {:.2} p99 {:.2} sd {:.2} ms",
        median(&p.rtts_ms),
        quantile(&p.rtts_ms, 0.05),
        quantile(&p.rtts_ms, 0.95),
        quantile(&p.rtts_ms, 0.99),
        sd(&p.rtts_ms)
    )
}

const PROBES: usize = 1500;
/// Faster than the jitter window (20 ms), so that probes overlap in the
/// delay line: the distribution must hold for each packet, not only for
/// one packet at a time.
const PROBE_INTERVAL_US: u64 = 4000;

/// Delay 50 ms ± 10 ms, uniform then normal: the added delay (ICMP echo
/// to the peer, against a baseline) follows the configured distribution,
/// and the sibling cgroup, pinging the same peer over the same device at
/// the same time, sees no change.
///
/// The reference is netem configured identically, measured at the same
/// moments on a second veth pair between the same namespaces by a second
/// pinger. A VM's qdisc timers fire late (TCG on a busy host: about 1 ms,
/// more in bursts), netem's as much as fq's, so the configured values alone
/// cannot be the reference: each quantile of chaos's added delay must be
/// within a margin of netem's, *signed* (chaos late where netem is punctual
/// fails, and so does chaos early). The margin is what two independent
/// samples of `PROBES` jittered delays allow — four standard errors of the
/// difference of two sample quantiles (each the larger of the configured
/// distribution's and the sample's own, by batch means) — plus 0.5 ms for
/// two timers that fire at different moments.
/// Both figures are printed; nothing is skipped.
pub fn delay_and_jitter_hold_their_distribution(ctx: &mut Ctx) -> anyhow::Result<()> {
    delay_distribution(ctx, "egress")
}

/// [`delay_and_jitter_hold_their_distribution`] on what the target sends
/// (`egress`) or receives (`ingress`: the echo replies wait in chaos's
/// ifb); the reference is the same netem on the second path either way, as
/// a round trip adds the delay once in both cases.
pub fn delay_distribution(ctx: &mut Ctx, direction: &str) -> anyhow::Result<()> {
    require_fq(ctx)?;
    if direction == "ingress" {
        ctx.require(Capability::Tcx)?;
        ctx.require(Capability::IfbIngress)?;
    }
    ctx.require(Capability::NetemQdisc)?;
    let lab = Lab::new()?;
    let (nc, netem_peer) = netem_path(&lab)?;
    let chaos_peer = IpAddr::V4(lab.peer_ip);
    // target -> chaos's device; sibling -> the same device (must see no
    // delay); sibling -> netem's device.
    let measure = || -> anyhow::Result<(Pings, Pings, Pings)> {
        let sib = ping::Running::start(lab.sibling(), chaos_peer, PROBES, PROBE_INTERVAL_US)?;
        let net = ping::Running::start(lab.sibling(), netem_peer, PROBES, PROBE_INTERVAL_US)?;
        let t = ping::ping(lab.target(), chaos_peer, PROBES, PROBE_INTERVAL_US)?;
        Ok((t, sib.finish()?, net.finish()?))
    };
    let before = egress_qdiscs(&lab)?;
    let (base_t, base_s, base_n) = measure()?;
    let (bt, bs, bn) = (median(&base_t.rtts_ms), median(&base_s.rtts_ms), median(&base_n.rtts_ms));
    eprint!("\n    baseline: target {}; sibling {}", summary(&base_t), summary(&base_s));
    for dist in ["uniform", "normal"] {
        // netem's jitter is uniform unless given a table (no uniform.dist).
        let mut netem = vec!["tc", "qdisc", "add", "dev", &nc, "root", "netem", "delay", "50ms", "10ms"];
        if dist != "uniform" {
            netem.extend_from_slice(&["distribution", dist]);
        }
        lab.ctr.exec(&netem)?;
        let run = attack(
            &lab,
            "net-delay",
            &[
                "--delay",
                "50ms",
                "--jitter",
                "10ms",
                "--distribution",
                dist,
                "--direction",
                direction,
                "--interface",
                &lab.ctr_dev,
                "--duration",
                "120s",
            ],
        );
        let measured = run.and_then(|run| Ok((measure()?, run)));
        lab.ctr.exec(&["tc", "qdisc", "del", "dev", &nc, "root"])?;
        let ((t, s, n), run) = measured?;
        let end = super::net_loss::end(run)?;
        let row = |who: &str, p: &Pings, base: f64| {
            format!(
                "\n    {who:<6} {dist:<8} median error {:+.2} ms, p5 {:.2} p95 {:.2} p99 {:.2} ms, sender CPU {:.0} us/probe",
                median(&p.rtts_ms) - base - 50.0,
                quantile(&p.rtts_ms, 0.05) - base,
                quantile(&p.rtts_ms, 0.95) - base,
                quantile(&p.rtts_ms, 0.99) - base,
                p.cpu_ms * 1e3 / p.sent as f64,
            )
        };
        eprint!("{}{}", row("chaos", &t, bt), row("netem", &n, bn));
        eprint!("\n    sibling on chaos's device: median {:+.2} ms", median(&s.rtts_ms) - bs);
        anyhow::ensure!(
            t.rtts_ms.len() as f64 >= 0.99 * t.sent as f64,
            "{dist}: only {} of {} probes came back under a pure delay",
            t.rtts_ms.len(),
            t.sent
        );
        for q in [0.05, 0.25, 0.5, 0.75, 0.95] {
            let want = 50.0 + jitter_quantile(dist, q);
            let got = quantile(&t.rtts_ms, q) - bt;
            let netem_got = quantile(&n.rtts_ms, q) - bn;
            // Each sample's standard error: the configured distribution's
            // (theory), or, where the VM's own noise widens it, what ten
            // consecutive batches of the sample say.
            let se = |xs: &[f64]| quantile_se(dist, q, xs.len()).max(batch_se(xs, q));
            let margin = 4.0 * se(&t.rtts_ms).hypot(se(&n.rtts_ms)) + 0.5;
            let p = (q * 100.0) as u32;
            eprint!(
                "\n    {dist:<8} p{p:<2} want {want:6.2}  chaos {got:6.2} ({:+.2})  netem {netem_got:6.2} ({:+.2})  \
                 margin {margin:.2} ms",
                got - want,
                netem_got - want
            );
            anyhow::ensure!(
                ((got - want) - (netem_got - want)).abs() <= margin,
                "{dist}: p{p} of the added delay is {got:.2} ms ({:+.2} from the configured {want:.2}), netem's at \
                 the same moments {netem_got:.2} ({:+.2}): more than {margin:.2} ms apart",
                got - want,
                netem_got - want
            );
        }
        // The sibling shares the device and fq, and sees no delay.
        let sib_added = median(&s.rtts_ms) - bs;
        anyhow::ensure!(
            sib_added.abs() <= 1.0,
            "{dist}: the sibling's median RTT moved by {sib_added:.2} ms"
        );
        anyhow::ensure!(
            s.rtts_ms.len() as f64 >= 0.99 * s.sent as f64,
            "{dist}: the sibling lost {} of {} probes",
            s.sent - s.rtts_ms.len(),
            s.sent
        );
        let delayed = end["counters"][format!("{direction}_delayed")].as_u64().unwrap_or(0);
        anyhow::ensure!(delayed >= t.rtts_ms.len() as u64, "{dist}: chaos counted {delayed} delayed packets");
    }
    eprint!("\n    ");
    let after = egress_qdiscs(&lab)?;
    anyhow::ensure!(after == before, "qdiscs differ after the attacks:\nbefore {before}\nafter  {after}");
    super::net_receive::ensure_no_ifb(&lab)
}

/// The jitter's `q` quantile, in ms: uniform on ±10 ms, or normal with a
/// standard deviation of 10 ms.
fn jitter_quantile(dist: &str, q: f64) -> f64 {
    match dist {
        "uniform" => 20.0 * q - 10.0,
        _ => 10.0 * normal_quantile(q),
    }
}

/// The jitter's density at its `q` quantile, per ms.
fn jitter_density(dist: &str, q: f64) -> f64 {
    match dist {
        "uniform" => 1.0 / 20.0,
        _ => {
            let z = normal_quantile(q);
            (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() / 10.0
        }
    }
}

/// The standard error of the sample `q` quantile of `n` jittered delays:
/// sqrt(q (1 - q) / n) / f(x_q) (the asymptotic variance of a sample
/// quantile).
fn quantile_se(dist: &str, q: f64, n: usize) -> f64 {
    (q * (1.0 - q) / n as f64).sqrt() / jitter_density(dist, q)
}

/// The standard error of the `q` quantile of `xs`, by batch means: the
/// spread of the quantile over ten consecutive batches, over sqrt(10). It
/// sees what the theory cannot: a VM that holds packets up now and then.
fn batch_se(xs: &[f64], q: f64) -> f64 {
    const BATCHES: usize = 10;
    let size = xs.len() / BATCHES;
    if size < 10 {
        return 0.0;
    }
    let qs: Vec<f64> = xs.chunks(size).take(BATCHES).map(|b| quantile(b, q)).collect();
    sd(&qs) / (BATCHES as f64).sqrt()
}

/// The standard normal quantile, by bisection on erf's complement (the
/// few quantiles the test needs; exact to 1e-9).
fn normal_quantile(q: f64) -> f64 {
    let cdf = |z: f64| 0.5 * erfc(-z / std::f64::consts::SQRT_2);
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) < q { lo = mid } else { hi = mid }
    }
    (lo + hi) / 2.0
}

/// The complementary error function (Numerical Recipes' erfcc, relative
/// error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Delay and loss in one attack, as one netem instance: the loss rate is
/// exact, and what arrives arrives late.
pub fn delay_combines_with_loss(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_fq(ctx)?;
    ctx.require(Capability::NetemQdisc)?;
    let lab = Lab::new()?;
    let netem = NetemReference::new(&lab, 79, "20ms")?;
    let to = SocketAddr::from((lab.peer_ip, 9210));
    let n = 2000;
    let one_way = |tag: u32| -> anyhow::Result<(u64, Vec<f64>)> {
        let sink = udp::Sink::start(lab.peer(), to)?;
        let sent = udp::send(lab.target(), to, tag, n, 1000)?;
        anyhow::ensure!(sent.errors == 0, "sendto failed {} times ({})", sent.errors, sent.errnos);
        std::thread::sleep(Duration::from_millis(200));
        let got: Vec<f64> = sink.finish()?.iter().filter(|p| p.tag == tag).map(one_way_ms).collect();
        Ok((got.len() as u64, got))
    };
    let (_, base) = one_way(29)?;
    check_rate_measured("loss combined with delay", 0.3, || {
        let args = ["--delay", "20ms", "--loss", "30", "--interface", &lab.ctr_dev, "--duration", "60s"];
        let run = attack(&lab, "net-delay", &args)?;
        // 2000 datagrams 1 ms apart, 500 pings 4 ms apart: the same 2 s.
        let (netem_samples, (arrived, delayed)) = netem.alongside(&lab, 500, 4000, || one_way(30))?;
        let netem_added = median(&netem_samples);
        let end = super::net_loss::end(run)?;
        let dropped = end["counters"]["egress_dropped"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            dropped == n - arrived,
            "chaos counted {dropped} drops, the receiver missed {}",
            n - arrived
        );
        let added = median(&delayed) - median(&base);
        let early = quantile(&delayed, 0.01);
        eprint!(
            "[{arrived} of {n} arrived; one-way baseline median {:.3} ms, delayed median {:.3} p1 {early:.3} p99 {:.3} ms; \
             added {added:.2} ms, netem at the same moments {netem_added:.2}] ",
            median(&base),
            median(&delayed),
            quantile(&delayed, 0.99)
        );
        anyhow::ensure!(
            early >= 20.0,
            "a packet arrived {early:.2} ms after it was sent, before the 20 ms delay"
        );
        // Signed: chaos late where netem is punctual fails, and so does
        // chaos early.
        let margin = same_median_margin(&delayed, &netem_samples).max(1.0);
        anyhow::ensure!(
            (added - netem_added).abs() < margin,
            "the median one-way time rose by {added:.2} ms; netem's 20 ms, at the same moments, added \
             {netem_added:.2} (margin {margin:.2} ms)"
        );
        Ok((n - arrived, n))
    })?;
    Ok(())
}

/// Reorder 25% with a 20 ms delay: a quarter of the packets arrive at once
/// (one-way time far below the delay), overtaking the ones sent before
/// them, the rest 20 ms late.
pub fn reorder_rate_is_exact(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_fq(ctx)?;
    let lab = Lab::new()?;
    let to = SocketAddr::from((lab.peer_ip, 9220));
    let n = 2000;
    let mut shown = (0, 0);
    check_rate_measured("packets sent at once (reordered)", 0.25, || {
        let run = attack(&lab, "net-reorder", &["--reorder", "25", "--delay", "20ms", "--duration", "60s"])?;
        let sink = udp::Sink::start(lab.peer(), to)?;
        udp::send(lab.target(), to, 31, n, 1000)?;
        std::thread::sleep(Duration::from_millis(200));
        let packets = sink.finish()?;
        let end = super::net_loss::end(run)?;
        let got: Vec<&udp::Packet> = packets.iter().filter(|p| p.tag == 31).collect();
        anyhow::ensure!(got.len() as u64 == n, "{} of {n} arrived", got.len());
        // A delayed packet reaches the receiving stack 20 ms or more after it
        // was sent; one sent at once, within microseconds (the kernel's receive
        // timestamp is taken in the sender's own transmit call on a veth).
        let early = got.iter().filter(|p| one_way_ms(p) < 10.0).count() as u64;
        // Overtaking, in the receiver's order: packets that arrived after one
        // with a higher sequence number.
        let mut by_arrival = got.clone();
        by_arrival.sort_by_key(|p| p.recv_ns);
        let mut highest = 0;
        let mut overtaken = 0u64;
        for p in &by_arrival {
            if p.seq < highest {
                overtaken += 1;
            }
            highest = highest.max(p.seq);
        }
        anyhow::ensure!(
            overtaken >= early / 2,
            "only {overtaken} packets were overtaken by {early} early ones"
        );
        // The counter and the receiver agree, but for a sent-at-once packet
        // that a busy VM held up for 10 ms (allow 0.5%).
        let counted = end["counters"]["egress_reordered"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            counted.abs_diff(early) <= n / 200,
            "chaos counted {counted} reordered, the receiver saw {early} early"
        );
        shown = (early, overtaken);
        Ok((early, n))
    })?;
    let (early, overtaken) = shown;
    eprint!("[{early} of {n} early, {overtaken} overtaken] ");
    Ok(())
}

/// Bad input: exit code 3, a message naming the flag, nothing attached or
/// left behind. Runs everywhere (validation needs no fq).
pub fn bad_input_is_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let cg = Cgroup::new("netbad")?;
    let cases: &[(&[&str], &str)] = &[
        (&["net-delay", "--duration", "5s"], "--delay"),
        (&["net-delay", "--delay", "50ms", "--direction", "inward", "--duration", "5s"], "--direction"),
        (&["net-rate", "--rate", "10mbit", "--jitter", "5ms", "--duration", "5s"], "--jitter needs --delay"),
        (
            &["net-delay", "--delay", "50ms", "--distribution", "normal", "--duration", "5s"],
            "--distribution needs --jitter",
        ),
        (&["net-reorder", "--reorder", "5", "--delay", "0s", "--duration", "5s"], "--reorder needs --delay"),
        (&["net-reorder", "--reorder", "5", "--duration", "5s"], "--delay"),
        (&["net-delay", "--delay", "11s", "--duration", "5s"], "at most 10s"),
        (&["net-delay", "--delay", "5", "--duration", "5s"], "no unit"),
        (&["net-delay", "--delay", "5ms", "--jitter", "20s", "--duration", "5s"], "at most 10s"),
        (&["net-rate", "--rate", "10", "--duration", "5s"], "no unit"),
        (&["net-rate", "--rate", "10mbps", "--duration", "5s"], "ambiguous"),
        (&["net-rate", "--rate", "50kbit", "--duration", "5s"], "at least 100kbit"),
        (&["net-corrupt", "--corrupt", "101", "--duration", "5s"], "outside 0..100"),
        (&["net-duplicate", "--duplicate", "x", "--duration", "5s"], "not a percentage"),
        (&["net-duplicate", "--duplicate", "5", "--duration", "0s"], "zero duration"),
        (
            &["net-corrupt", "--corrupt", "5", "--duration", "5s", "--interface", "nosuchdev0"],
            "nosuchdev0 does not exist",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["attack", extra[0], "--cgroup", cg.rel.as_str()];
        args.extend_from_slice(&extra[1..]);
        let line = args.join(" ");
        runner::run(&args)?.refused(&format!("chaos {line}"), needle)?;
        crate::fixtures::leaks::check_chaos().map_err(|l| anyhow::anyhow!("chaos {line}: left {l}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_quantiles() {
        assert!((normal_quantile(0.95) - 1.644_853_6).abs() < 1e-5);
        assert!((normal_quantile(0.25) + 0.674_489_8).abs() < 1e-5);
        assert!(normal_quantile(0.5).abs() < 1e-6);
        assert!((jitter_quantile("uniform", 0.05) + 9.0).abs() < 1e-9);
        // Median of 1500 normal samples with sd 10: 1.2533 * 10 / sqrt(1500).
        assert!((quantile_se("normal", 0.5, 1500) - 0.3236).abs() < 1e-3);
    }
}

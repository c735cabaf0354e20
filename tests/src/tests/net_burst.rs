//! `chaos attack net-loss --burst`: loss in bursts (a Gilbert model),
//! measured by a receiver outside the mechanism as the sequence of packets
//! that did not arrive — its burst and gap lengths against the model's
//! expectation, and against netem's `loss gemodel` measured side by side in
//! the same run.
//!
//! The bounds are the model's own sampling error: a burst of the chain is
//! geometric (mean 1/r, standard deviation √(1-r)/r), and the loss share of
//! a two-state chain varies more than a binomial one, by the factor
//! (1+λ)/(1-λ) with λ = 1-p-r (the chain's autocorrelation at lag 1). Every
//! check is at [`Z`] standard errors, where an exact mechanism misses about
//! once in 150 000 checks.

use std::net::SocketAddr;

use chaos::capabilities::Capability;

use super::{
    net_delay::netem_path,
    net_loss::{EGRESS, attack, end},
};
use crate::{
    fixtures::{lab::Lab, process::Place},
    harness::Ctx,
    helpers::udp,
};

/// Standard errors allowed between a measured statistic and its
/// expectation (two-sided normal tail 6.8e-6).
const Z: f64 = 4.5;
/// Packets per measurement: about 2000 losses in 500 bursts at 10% in
/// bursts of 4.
const PACKETS: u64 = 20_000;
const INTERVAL_US: u64 = 100;
/// The model: 10% loss in bursts of 4 packets on average.
const LOSS: f64 = 0.10;
const BURST: f64 = 4.0;

/// The Gilbert model's transition probabilities for [`LOSS`] and [`BURST`],
/// as chaos derives them: r = 1/B, p = r·L/(1-L).
fn model() -> (f64, f64) {
    let r = 1.0 / BURST;
    (r * LOSS / (1.0 - LOSS), r)
}

/// What a receiver saw of one numbered stream: the runs of missing
/// sequence numbers (bursts) and of received ones between them (gaps).
#[derive(Debug)]
struct Runs {
    sent: u64,
    lost: u64,
    bursts: Vec<u64>,
    gaps: Vec<u64>,
}

impl Runs {
    /// From the received packets of `tag`, sequence numbers `0..sent`.
    /// The first and last gap are cut by the ends of the stream, not by
    /// the chain, and are left out.
    fn of(packets: &[udp::Packet], tag: u32, sent: u64) -> Self {
        let mut arrived = vec![false; sent as usize];
        for p in packets.iter().filter(|p| p.tag == tag && p.seq < sent) {
            arrived[p.seq as usize] = true;
        }
        let (mut bursts, mut gaps) = (Vec::new(), Vec::new());
        let mut run = 0u64;
        for (i, &ok) in arrived.iter().enumerate() {
            run += 1;
            let last = i + 1 == arrived.len();
            if last || arrived[i + 1] != ok {
                if !ok {
                    bursts.push(run);
                } else if i + 1 != run as usize && !last {
                    gaps.push(run);
                }
                run = 0;
            }
        }
        let lost = arrived.iter().filter(|&&ok| !ok).count() as u64;
        Self { sent, lost, bursts, gaps }
    }

    fn share(&self) -> f64 {
        self.lost as f64 / self.sent as f64
    }

    fn mean_burst(&self) -> f64 {
        mean(&self.bursts)
    }

    fn summary(&self) -> String {
        format!(
            "lost {:.2}% in {} bursts of mean {:.2} (gaps {:.1})",
            100.0 * self.share(),
            self.bursts.len(),
            self.mean_burst(),
            mean(&self.gaps)
        )
    }

    /// The measured stream against the model (p, r): loss share, mean
    /// burst, mean gap, and the share of one-packet bursts (r, for a
    /// geometric length: what tells bursts of the model from bursts of
    /// a fixed or a heavier-tailed length with the same mean).
    fn check_model(&self, what: &str, p: f64, r: f64) -> anyhow::Result<()> {
        let nb = self.bursts.len() as f64;
        anyhow::ensure!(
            nb >= 100.0,
            "{what}: only {nb} bursts in {} packets ({})",
            self.sent,
            self.summary()
        );
        let loss = p / (p + r);
        let lambda = 1.0 - p - r;
        let share_se = (loss * (1.0 - loss) / self.sent as f64 * (1.0 + lambda) / (1.0 - lambda)).sqrt();
        within(what, "loss share", self.share(), loss, share_se)?;
        let burst_se = (1.0 - r).sqrt() / r / nb.sqrt();
        within(what, "mean burst", self.mean_burst(), 1.0 / r, burst_se)?;
        let ng = self.gaps.len() as f64;
        within(what, "mean gap", mean(&self.gaps), 1.0 / p, (1.0 - p).sqrt() / p / ng.sqrt())?;
        let ones = self.bursts.iter().filter(|&&b| b == 1).count() as f64 / nb;
        within(what, "share of 1-packet bursts", ones, r, (r * (1.0 - r) / nb).sqrt())
    }
}

fn mean(xs: &[u64]) -> f64 {
    xs.iter().sum::<u64>() as f64 / xs.len().max(1) as f64
}

fn within(what: &str, stat: &str, measured: f64, expected: f64, se: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (measured - expected).abs() <= Z * se,
        "{what}: {stat} {measured:.4}, expected {expected:.4} ± {:.4} ({Z} standard errors of {se:.4})",
        Z * se
    );
    Ok(())
}

/// Send a numbered stream from `from` to a sink at `to` in `receiver`;
/// the runs the receiver saw.
fn stream(from: Place<'_>, receiver: Place<'_>, to: SocketAddr, tag: u32) -> anyhow::Result<Runs> {
    let sink = udp::Sink::start(receiver, to)?;
    let sent = udp::send(from, to, tag, PACKETS, INTERVAL_US)?;
    let packets = sink.finish()?;
    anyhow::ensure!(sent.errors == 0, "sendto failed {} times ({})", sent.errors, sent.errnos);
    Ok(Runs::of(&packets, tag, sent.sent))
}

/// One burst-loss attack in `direction`: the receiver's runs against the
/// model, and chaos's drop counter equal to what the receiver missed.
fn bursts_in(lab: &Lab, direction: &str) -> anyhow::Result<Runs> {
    let (p, r) = model();
    let what = format!("{direction} loss of {}% in bursts of {BURST}", 100.0 * LOSS);
    let flags = ["--direction", direction, "--percent", "10", "--burst", "4", "--duration", "60s"];
    let run = attack(lab, &flags)?;
    let runs = if direction == "egress" {
        stream(lab.target(), lab.peer(), SocketAddr::from((lab.peer_ip, 9010)), 20)
    } else {
        stream(lab.peer(), lab.target(), SocketAddr::from((lab.ctr_ip, 9011)), 21)
    };
    let ended = end(run)?;
    let runs = runs?;
    let dropped = ended["counters"][format!("{direction}_dropped")].as_u64().unwrap_or(u64::MAX);
    anyhow::ensure!(
        dropped == runs.lost,
        "{what}: chaos counted {dropped} drops, the receiver missed {} ({} dropped by the receiver itself)",
        runs.lost,
        lab.receiver_drops()?
    );
    runs.check_model(&what, p, r)?;
    Ok(runs)
}

/// Both directions, each its own chain: bursts, gaps and loss share as the
/// model says — and not as independent loss at the same rate would give
/// (mean burst 1/(1-L) ≈ 1.11 packets, 90% of them single packets).
pub fn bursts_follow_the_gilbert_model(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let lab = Lab::new()?;
    let egress = bursts_in(&lab, "egress")?;
    let ingress = bursts_in(&lab, "ingress")?;
    eprint!("[egress {}; ingress {}] ", egress.summary(), ingress.summary());
    Ok(())
}

/// netem's `loss gemodel p r` on a path of its own, from the sibling, at
/// the same moments as chaos's attack on the target's path: both streams
/// within the model, and their mean bursts within the sampling error of
/// their difference.
pub fn bursts_match_netem_gemodel(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::NetemQdisc)?;
    let lab = Lab::new()?;
    let (p, r) = model();
    let (dev, netem_peer) = netem_path(&lab)?;
    let (p_pct, r_pct) = (format!("{}%", 100.0 * p), format!("{}%", 100.0 * r));
    // Deleted with the lab's namespaces, like the path. A limit above the
    // stream's length: netem's own queue never drops what its model
    // passed.
    let limit = (2 * PACKETS).to_string();
    // The peer's address resolved before netem: otherwise the ARP requests
    // are the only packets that step netem's chain while data waits, and a
    // chain in its bad state loses them (and the waiting data) in a row.
    lab.ctr.exec(&["ping", "-n", "-c", "1", "-W", "2", &netem_peer.to_string()])?;
    lab.ctr.exec(&[
        "tc", "qdisc", "add", "dev", &dev, "root", "netem", "limit", &limit, "loss", "gemodel", &p_pct,
        &r_pct,
    ])?;
    let peer_dev = dev.replacen('c', "p", 1);
    // A sample is only evidence when the machine itself dropped nothing on
    // the way (a receiver or a backlog starved of CPU under emulation:
    // once, in CI, the netem stream lost 54% instead of 10%): such a
    // sample is measured again, and said so.
    for attempt in 1..=ATTEMPTS {
        let before = machine_drops(&lab, &peer_dev)?;
        let (chaos, netem) = side_by_side(&lab, netem_peer)?;
        let disturbed = machine_drops(&lab, &peer_dev)?.saturating_sub(before);
        if disturbed > 0 {
            anyhow::ensure!(
                attempt < ATTEMPTS,
                "the machine dropped packets itself in each of {ATTEMPTS} samples ({disturbed} in the last): no \
                 undisturbed sample to judge"
            );
            eprint!(
                "[sample {attempt}: {disturbed} packets dropped by the machine itself; measuring again] "
            );
            continue;
        }
        let model = format!("p {p_pct} r {r_pct}");
        // netem is the reference, not what is tested: a sample of its that
        // is off its own model is no yardstick (CI, 6.12, 2026-12-04: netem
        // lost 99.0% in 9 bursts of mean 2200, no drop counted by the
        // machine, while chaos's stream at the same moments followed the
        // model). Measured again, and said so; chaos's sample is judged in
        // every attempt that is judged at all.
        if let Err(e) = netem.check_model(&format!("netem gemodel {model}"), p, r) {
            anyhow::ensure!(
                attempt < ATTEMPTS,
                "{e} (netem's reference off its model in each of {ATTEMPTS} samples)"
            );
            eprint!("[sample {attempt}: netem's own sample is off its model ({e}); measuring again] ");
            continue;
        }
        chaos.check_model(&format!("chaos --percent 10 --burst 4 ({model})"), p, r)?;
        let se = |runs: &Runs| (1.0 - r).sqrt() / r / (runs.bursts.len() as f64).sqrt();
        let diff_se = (se(&chaos).powi(2) + se(&netem).powi(2)).sqrt();
        within(
            "chaos against netem",
            "difference of mean bursts",
            chaos.mean_burst() - netem.mean_burst(),
            0.0,
            diff_se,
        )?;
        eprint!("[chaos {}; netem {}] ", chaos.summary(), netem.summary());
        break;
    }
    Ok(())
}

/// Samples [`bursts_match_netem_gemodel`] may take.
const ATTEMPTS: u32 = 3;

/// chaos's attack on the target's path and netem's on its own, streams at
/// the same moments: the runs each receiver saw.
fn side_by_side(lab: &Lab, netem_peer: std::net::IpAddr) -> anyhow::Result<(Runs, Runs)> {
    let flags = [
        "--direction",
        "egress",
        "--interface",
        &lab.ctr_dev,
        "--percent",
        "10",
        "--burst",
        "4",
        "--duration",
        "60s",
    ];
    let run = attack(lab, &flags)?;
    let chaos_to = SocketAddr::from((lab.peer_ip, 9012));
    let netem_to = SocketAddr::new(netem_peer, 9013);
    let sinks = (udp::Sink::start(lab.peer(), chaos_to)?, udp::Sink::start(lab.peer(), netem_to)?);
    let chaos_sender = udp::send_background(lab.target(), chaos_to, 22, PACKETS, INTERVAL_US)?;
    let netem_sent = udp::send(lab.sibling(), netem_to, 23, PACKETS, INTERVAL_US)?;
    chaos_sender.wait_with_output()?;
    let (chaos_packets, netem_packets) = (sinks.0.finish()?, sinks.1.finish()?);
    end(run)?;
    anyhow::ensure!(netem_sent.errors == 0, "the netem stream's sendto failed {} times", netem_sent.errors);
    Ok((Runs::of(&chaos_packets, 22, PACKETS), Runs::of(&netem_packets, 23, netem_sent.sent)))
}

/// Packets the machine dropped itself so far: the lab's receiver drops,
/// the netem path's receiving device's, and every CPU's backlog overflows
/// (`/proc/net/softnet_stat`'s second column, net/core/net-procfs.c).
fn machine_drops(lab: &Lab, netem_peer_dev: &str) -> anyhow::Result<u64> {
    let path = format!("/sys/class/net/{netem_peer_dev}/statistics/rx_dropped");
    let rx: u64 = lab.peer.exec(&["cat", &path])?.trim().parse()?;
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let backlog: u64 = softnet
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|v| u64::from_str_radix(v, 16))
        .sum::<Result<u64, _>>()?;
    Ok(lab.receiver_drops()? + rx + backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(arrived: &[bool]) -> Vec<udp::Packet> {
        let seqs = arrived.iter().enumerate().filter(|(_, ok)| **ok);
        seqs.map(|(i, _)| udp::Packet { tag: 1, seq: i as u64, sent_ns: 0, recv_ns: 0 }).collect()
    }

    #[test]
    fn runs_are_bursts_and_inner_gaps() {
        let (t, f) = (true, false);
        let runs = Runs::of(&packets(&[t, t, f, f, t, f, t, t, t, f, f, f, t]), 1, 13);
        assert_eq!((runs.lost, runs.bursts.clone(), runs.gaps.clone()), (6, vec![2, 1, 3], vec![1, 3]));
        let edge = Runs::of(&packets(&[f, t, t, f]), 1, 4);
        assert_eq!((edge.bursts, edge.gaps), (vec![1, 1], vec![2]));
    }
}

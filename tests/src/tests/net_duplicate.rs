//! `chaos attack net-duplicate`: the receiver gets extra copies at the
//! configured rate, and nothing is lost.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use super::{net_delay::attack, net_loss::EGRESS};
use crate::{fixtures::lab::Lab, harness::Ctx, helpers::udp, stats::check_rate_measured};

pub fn duplicate_rate_is_exact(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let to = SocketAddr::from((lab.peer_ip, 9400));
    let n = 2500;
    for percent in [10u32, 50] {
        let dups = check_rate_measured(
            &format!("duplicates at {percent}%"),
            f64::from(percent) / 100.0,
            || {
                let run = attack(
                    &lab,
                    "net-duplicate",
                    &["--duplicate", &percent.to_string(), "--duration", "60s"],
                )?;
                let sink = udp::Sink::start(lab.peer(), to)?;
                let sent = udp::send(lab.target(), to, 40, n, 1000)?;
                std::thread::sleep(Duration::from_millis(100));
                let packets = sink.finish()?;
                let end = super::net_loss::end(run)?;
                anyhow::ensure!(sent.errors == 0, "sendto failed {} times ({})", sent.errors, sent.errnos);
                let mut copies: BTreeMap<u64, u64> = BTreeMap::new();
                for p in packets.iter().filter(|p| p.tag == 40) {
                    *copies.entry(p.seq).or_default() += 1;
                }
                let queue_dropped = end["counters"]["egress_queue_dropped"].as_u64().unwrap_or(0);
                anyhow::ensure!(
                    copies.len() as u64 == n,
                    "{percent}%: {} of {n} distinct packets arrived ({queue_dropped} copies refused by the qdisc)",
                    copies.len()
                );
                anyhow::ensure!(
                    copies.values().all(|&c| c <= 2),
                    "{percent}%: a packet arrived more than twice"
                );
                let dups: u64 = copies.values().map(|c| c - 1).sum();
                let counted = end["counters"]["egress_duplicated"].as_u64().unwrap_or(u64::MAX);
                anyhow::ensure!(
                    counted == dups,
                    "{percent}%: chaos counted {counted} duplicates, the receiver got {dups}"
                );
                Ok((dups, n))
            },
        )?;
        eprint!("[{percent}%: {dups} of {n}] ");
    }
    Ok(())
}

//! `chaos attack net-rate`: a TCP bulk transfer from the target runs at the
//! configured rate, measured by the receiver.
//!
//! The rate counts bytes on the wire, link-layer header included (as netem
//! and tbf count them); the receiver measures TCP payload. Every segment of
//! `mss` payload bytes costs `mss + 66` on the wire here: Ethernet 14, IPv4
//! 20, TCP 20 and the timestamp option 12 (on by default). The veth's own
//! byte counters cannot be used: they count a GSO packet's headers once.

use std::net::SocketAddr;

use super::net_delay::{attack, require_fq};
use crate::{
    fixtures::lab::Lab,
    harness::Ctx,
    helpers::tcp::{RateSink, stream},
};

const WIRE_OVERHEAD: f64 = 14.0 + 20.0 + 20.0 + 12.0;

/// The bound the README states. The limiter itself is exact (its departure
/// times follow from byte counts; bench/README.md §3 measured ±0.01%); the
/// receiver samples its byte count from user space every 50 ms, so a
/// receiver a busy VM holds up for a few tens of ms at either end of the
/// ~6.5 s window shifts the figure by up to a few tenths of a percent.
const MAX_ERROR: f64 = 0.01;

pub fn throughput_matches_at_10_and_100_mbit(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_fq(ctx)?;
    let lab = Lab::new()?;
    for (i, mbit) in [10u32, 100].into_iter().enumerate() {
        let to = SocketAddr::from((lab.peer_ip, 9300 + i as u16));
        let run = attack(&lab, "net-rate", &["--rate", &format!("{mbit}mbit"), "--duration", "120s"])?;
        let sink = RateSink::start(lab.peer(), to)?;
        let mss = stream(lab.target(), to, 10.0)?;
        // Skip slow start and the first fill of the link's buffer.
        let goodput = sink.finish(3.0, 0.5)?;
        let end = super::net_loss::end(run)?;
        anyhow::ensure!(mss > 0, "no MSS from the sender");
        let wire = goodput * (f64::from(mss) + WIRE_OVERHEAD) / f64::from(mss);
        let want = f64::from(mbit) * 1e6;
        let error = wire / want - 1.0;
        eprint!(
            "[{mbit} Mbit/s: {:.2} Mbit/s on the wire ({:+.2}%), goodput {:.2}, rate drops {}] ",
            wire / 1e6,
            error * 100.0,
            goodput / 1e6,
            end["counters"]["egress_rate_dropped"]
        );
        anyhow::ensure!(
            error.abs() <= MAX_ERROR,
            "{mbit} Mbit/s: measured {:.3} Mbit/s on the wire ({:+.2}%, more than {}%)",
            wire / 1e6,
            error * 100.0,
            MAX_ERROR * 100.0
        );
    }
    Ok(())
}

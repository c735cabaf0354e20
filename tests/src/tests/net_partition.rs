//! `chaos attack net-partition`: two containers on one bridge cut apart,
//! as by a pulled cable — measured by the sockets at both ends (connects
//! that time out, a conversation that stalls and resumes), with a third
//! container on the same bridge and a sibling cgroup in the target's
//! namespace untouched.
//!
//! ```text
//!                 netns sw: bridge br0
//!        /                 |                  \
//!   netns a 10.81.0.1   netns b 10.81.0.2   netns c 10.81.0.3
//!   (target, sibling)   (cut off)           (untouched)
//! ```

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use chaos::capabilities::Capability;

use super::net_loss::EGRESS;
use crate::{
    fixtures::{
        cgroup::Cgroup,
        netns::{Netns, ip},
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
    helpers::{
        echo::{Chat, Echo, try_connect},
        monotonic_ns,
    },
};

const MS: u64 = 1_000_000;

/// Three namespaces on one bridge, and the target and sibling cgroups
/// whose processes live in the first. Removed with the namespaces and
/// cgroups.
struct Bridged {
    // Field order is drop order: the cgroups' processes are gone (each
    // test's helpers are) before the namespaces go.
    target: Cgroup,
    sibling: Cgroup,
    a: Netns,
    b: Netns,
    c: Netns,
    _switch: Netns,
}

impl Bridged {
    fn new() -> anyhow::Result<Self> {
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "name", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let tag = std::process::id() % 100_000;
        let mut hosts = Vec::new();
        for (name, addr) in [("a", "10.81.0.1/24"), ("b", "10.81.0.2/24"), ("c", "10.81.0.3/24")] {
            let ns = Netns::new(name)?;
            let (inside, port) = (format!("pt{tag}{name}"), format!("ps{tag}{name}"));
            ip(&[
                "link",
                "add",
                &inside,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ])?;
            switch.ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", addr, "dev", &inside])?;
            ns.ip(&["link", "set", &inside, "up"])?;
            hosts.push(ns);
        }
        let c = hosts.pop().expect("three hosts");
        let b = hosts.pop().expect("three hosts");
        let a = hosts.pop().expect("three hosts");
        let (target, sibling) = (Cgroup::new("part-target")?, Cgroup::new("part-sibling")?);
        Ok(Self { target, sibling, a, b, c, _switch: switch })
    }

    fn target(&self) -> Place<'_> {
        Place { netns: Some(&self.a), cgroup: Some(&self.target) }
    }

    fn sibling(&self) -> Place<'_> {
        Place { netns: Some(&self.a), cgroup: Some(&self.sibling) }
    }

    fn b(&self) -> Place<'_> {
        Place { netns: Some(&self.b), cgroup: None }
    }

    fn c(&self) -> Place<'_> {
        Place { netns: Some(&self.c), cgroup: None }
    }
}

fn at(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 81, 0, host], port))
}

/// The target (in a) is cut off from b — given with an unrelated second
/// network, so that the rule takes the set of networks path — for 5 s:
/// - a conversation from the target to b, running before, stalls for the
///   whole partition (no round trip completes in it) and resumes after it
///   by TCP's retransmission, on the same connection;
/// - new connections time out both ways (the target to b, b to the
///   target), not refused: nothing answers, as with a pulled cable;
/// - the target still reaches c, and the sibling cgroup, in the target's
///   own namespace, still reaches b;
/// - chaos counted drops in both directions.
pub fn cuts_both_ways_and_heals(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let net = Bridged::new()?;
    let echoes = [
        Echo::start(net.b(), at(2, 7001))?,
        Echo::start(net.c(), at(3, 7001))?,
        Echo::start(net.target(), at(1, 7002))?,
    ];
    let chat = Chat::start(net.target(), at(2, 7001))?;
    std::thread::sleep(Duration::from_secs(1));
    let args = [
        "attack",
        "net-partition",
        "--cgroup",
        &net.target.rel,
        "--cidr",
        "10.81.0.2",
        "--cidr",
        "192.0.2.0/24",
    ];
    let mut run = ChaosRun::start(&[&args[..], &["--duration", "5s"]].concat())?;
    run.wait_event("start", Duration::from_secs(60))?;
    let start_ns = monotonic_ns();
    let to_b = try_connect(net.target(), at(2, 7001), 1000)?;
    let from_b = try_connect(net.b(), at(1, 7002), 1000)?;
    let to_c = try_connect(net.target(), at(3, 7001), 3000)?;
    let sibling_to_b = try_connect(net.sibling(), at(2, 7001), 3000)?;
    let probes_ns = monotonic_ns() - start_ns;
    let ended = run.wait(Duration::from_secs(30))?;
    let stop = ended.event("stop").cloned().ok_or_else(|| {
        anyhow::anyhow!("no stop event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })?;
    // TCP retransmits with exponential backoff (RTO from 200 ms, doubling:
    // tcp_retransmit_timer, net/ipv4/tcp_timer.c): the first retransmit
    // after a 5 s partition comes a few seconds after its end.
    let healed_by = Instant::now() + Duration::from_secs(12);
    std::thread::sleep(healed_by.saturating_duration_since(Instant::now()));
    let done = chat.finish()?;
    for echo in echoes {
        echo.finish()?;
    }
    anyhow::ensure!(
        probes_ns < 4500 * MS,
        "the connect probes took {} ms, past the partition",
        probes_ns / MS
    );
    for (what, c) in [("the target's connect to b", &to_b), ("b's connect to the target", &from_b)] {
        anyhow::ensure!(
            !c.ok && c.error.as_deref() == Some("TimedOut") && c.ms >= 900.0,
            "{what} during the partition should time out after 1 s, as with a pulled cable: {c:?}"
        );
    }
    anyhow::ensure!(to_c.ok, "the target could not reach c, which is not cut off: {to_c:?}");
    anyhow::ensure!(sibling_to_b.ok, "the sibling cgroup could not reach b: {sibling_to_b:?}");
    let (egress, ingress) =
        (stop["counters"]["egress_dropped"].as_u64(), stop["counters"]["ingress_dropped"].as_u64());
    anyhow::ensure!(
        egress.is_some_and(|n| n > 0) && ingress.is_some_and(|n| n > 0),
        "chaos counted egress {egress:?}, ingress {ingress:?} drops; both directions carried traffic"
    );
    // The partition holds from the start event to the kernel deadline, set
    // before it (5 s after the rule went in); 0.5 s at the start for a
    // round trip already in flight.
    let before = done.iter().filter(|&&t| t < start_ns).count();
    let during: Vec<u64> = done
        .iter()
        .filter(|&&t| t > start_ns + 500 * MS && t < start_ns + 4500 * MS)
        .map(|t| (t - start_ns) / MS)
        .collect();
    let after = done.iter().filter(|&&t| t > start_ns + 5000 * MS).count();
    anyhow::ensure!(before >= 5, "only {before} round trips before the partition");
    anyhow::ensure!(during.is_empty(), "round trips completed during the partition, at {during:?} ms");
    anyhow::ensure!(after > 0, "the conversation did not resume within 12 s of the partition's end");
    eprint!(
        "[{before} round trips before, none in the partition, {after} after; connects to b timed out after {:.0} ms] ",
        to_b.ms
    );
    Ok(())
}

/// Refusals: no network, too many, one network twice (however written) — exit 3, with the
/// flag named, and nothing loaded.
pub fn bad_flags_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("part-flags")?;
    let many: Vec<String> = (0..65).map(|i| format!("10.9.{i}.0/24")).collect();
    let many: Vec<&str> = many.iter().flat_map(|c| ["--cidr", c.as_str()]).collect();
    let cases: &[(&[&str], &str)] = &[
        (&[], "--cidr"),
        (&many, "at most 64"),
        (&["--cidr", "10.1.2.3/24", "--cidr", "10.1.2.0/24"], "same network"),
        (&["--cidr", "10.0.0.0/33"], "prefix length"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "net-partition", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{:?}", flags.first()), says)?;
    }
    let loaded: Vec<String> = aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("net_"))
        .collect();
    anyhow::ensure!(loaded.is_empty(), "loaded after the refusals: {loaded:?}");
    Ok(())
}

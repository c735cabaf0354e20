//! The fq chaos installs for departure times: present during the attack,
//! and the device's qdiscs byte for byte as before (`tc -j qdisc show`)
//! after every way an attack ends — its deadline, SIGINT, SIGTERM, and
//! kill -9 followed by `chaos recover` (with the TCX link, and with the
//! netlink filter that outlives the loader). A qdisc setup chaos did not
//! make is refused or, if it is an fq, used as it is and left alone.

use std::{net::IpAddr, time::Duration};

use chaos::capabilities::Capability;

use super::net_delay::{attack_env, qdiscs, require_fq};
use crate::{
    fixtures::{cgroup::Cgroup, lab::Lab, runner},
    harness::Ctx,
    helpers::ping::{self, ping},
    stats::quantile,
};

/// A `tc -j qdisc show` without the clsact/ingress qdisc.
fn without_clsact(json: &str) -> anyhow::Result<String> {
    let all: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let tree: Vec<_> = all.into_iter().filter(|q| q["parent"] != "ffff:fff1").collect();
    Ok(serde_json::to_string(&tree)?)
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Deadline,
    Signal(i32),
    Kill9ThenRecover,
}

pub fn restored_on_every_ending(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_fq(ctx)?;
    let tcx = ctx.require(Capability::Tcx).is_ok();
    let lab = Lab::new()?;
    let mut endings = vec![
        (Ending::Deadline, ""),
        (Ending::Signal(libc::SIGINT), ""),
        (Ending::Signal(libc::SIGTERM), ""),
        (Ending::Kill9ThenRecover, ""),
    ];
    // Where the kernel has TCX, also the netlink filter (kernels < 6.6),
    // which survives kill -9 along with the fq.
    if tcx && ctx.require(Capability::TcNetlink).is_ok() {
        endings.push((Ending::Kill9ThenRecover, "netlink"));
    }
    for (ending, mode) in endings {
        let env: Vec<(&str, &str)> = if mode.is_empty() { vec![] } else { vec![("CHAOS_EGRESS_MODE", mode)] };
        let before = qdiscs(&lab)?;
        let duration = match ending {
            Ending::Deadline => "3s",
            Ending::Signal(_) => "120s",
            Ending::Kill9ThenRecover => "4s",
        };
        let mut run = attack_env(
            &lab,
            "net-delay",
            &["--delay", "20ms", "--jitter", "5ms", "--duration", duration],
            &env,
        )?;
        run.wait_event("start", Duration::from_secs(1))?;
        // The latest the deadline can be, measured here: chaos computes it
        // before it announces the start.
        let deadline_ns = chaos::clock::monotonic_ns()
            + chaos::units::parse_duration(duration).map_err(anyhow::Error::msg)?.as_nanos() as u64;
        let during = qdiscs(&lab)?;
        anyhow::ensure!(
            during.contains(r#""kind":"fq","handle":"c4a0:""#),
            "{ending:?}: no chaos fq on the device during the attack: {during}"
        );
        let what =
            format!("{ending:?}{}", if mode.is_empty() { String::new() } else { format!(" ({mode})") });
        match ending {
            Ending::Deadline => {
                let ended = run.wait(Duration::from_secs(60))?;
                anyhow::ensure!(ended.code() == Some(0), "{what}: exit {:?}: {}", ended.code(), ended.stderr);
            }
            Ending::Signal(sig) => {
                std::thread::sleep(Duration::from_millis(300));
                run.signal(sig);
                let ended = run.wait(Duration::from_secs(60))?;
                anyhow::ensure!(ended.code() == Some(2), "{what}: exit {:?}: {}", ended.code(), ended.stderr);
            }
            Ending::Kill9ThenRecover => {
                run.signal(libc::SIGKILL);
                run.wait(Duration::from_secs(20))?;
                let left = qdiscs(&lab)?;
                anyhow::ensure!(left.contains("c4a0:"), "{what}: the fq vanished with the process: {left}");
                // Past the rule's deadline the fault is over even with the
                // fq (and, without TCX, the filter) left behind: the kernel
                // side passes packets without a departure time.
                let wait = deadline_ns.saturating_sub(chaos::clock::monotonic_ns()) + 300_000_000;
                std::thread::sleep(Duration::from_nanos(wait));
                let rtt = quantile(&ping(lab.target(), IpAddr::V4(lab.peer_ip), 50, 10_000)?.rtts_ms, 0.5);
                anyhow::ensure!(
                    rtt < 5.0,
                    "{what}: median RTT {rtt:.2} ms past the deadline with chaos dead"
                );
                let out = runner::recover()?;
                anyhow::ensure!(out.code() == Some(0), "{what}: chaos recover failed: {}", out.stderr);
            }
        }
        let after = qdiscs(&lab)?;
        anyhow::ensure!(after == before, "{what}: qdiscs differ:\nbefore {before}\nafter  {after}");
        eprint!("[{what}: restored] ");
    }
    Ok(())
}

/// A root qdisc chaos did not install: refused (exit 3, nothing changed);
/// an fq: used, and left exactly as it was. A target in the host's network
/// namespace: refused without --interface.
pub fn foreign_qdiscs_are_refused_or_reused(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_fq(ctx)?;
    let lab = Lab::new()?;
    let dev = lab.ctr_dev.clone();
    // prio: options without counters (htb's show direct_packets_stat, which
    // any stray packet changes).
    lab.ctr.exec(&["tc", "qdisc", "add", "dev", &dev, "root", "handle", "1:", "prio"])?;
    let before = qdiscs(&lab)?;
    let args = ["attack", "net-delay", "--cgroup", &lab.target.rel, "--delay", "20ms", "--duration", "10s"];
    let out = runner::run(&args)?;
    anyhow::ensure!(out.code() == Some(3), "prio root: exit {:?}, expected 3: {}", out.code(), out.stderr);
    anyhow::ensure!(
        out.stderr.contains("prio 1:") && out.stderr.contains("never replaces"),
        "prio root: {}",
        out.stderr
    );
    let after = qdiscs(&lab)?;
    anyhow::ensure!(after == before, "prio root: qdiscs changed:\nbefore {before}\nafter  {after}");
    crate::fixtures::leaks::check_chaos().map_err(|l| anyhow::anyhow!("prio root: left {l}"))?;

    // Someone's own fq: chaos delays through it and changes nothing. The
    // delay is judged against netem's 20 ms on a second path, measured at
    // the same moments (a VM's qdisc timers fire late, netem's as much as
    // fq's).
    lab.ctr.exec(&["tc", "qdisc", "replace", "dev", &dev, "root", "handle", "8001:", "fq"])?;
    let (netem_dev, netem_peer) = super::net_delay::netem_path(&lab)?;
    let before = qdiscs(&lab)?;
    let to = IpAddr::V4(lab.peer_ip);
    let both = || -> anyhow::Result<(f64, f64)> {
        let reference = ping::Running::start(lab.sibling(), netem_peer, 200, 5000)?;
        let t = quantile(&ping(lab.target(), to, 200, 5000)?.rtts_ms, 0.5);
        Ok((t, quantile(&reference.finish()?.rtts_ms, 0.5)))
    };
    let (base, base_netem) = both()?;
    lab.ctr.exec(&["tc", "qdisc", "add", "dev", &netem_dev, "root", "netem", "delay", "20ms"])?;
    let run =
        attack_env(&lab, "net-delay", &["--delay", "20ms", "--interface", &dev, "--duration", "60s"], &[])?;
    // Without TCX (6.1) the egress filter hangs off a clsact qdisc chaos
    // adds beside the root: compare the egress tree only.
    let during = without_clsact(&qdiscs(&lab)?)?;
    let measured = both();
    super::net_loss::end(run)?;
    let (delayed, netem) = measured?;
    anyhow::ensure!(
        during == without_clsact(&before)?,
        "the user's fq was changed during the attack: {during}"
    );
    let (added, netem_added) = (delayed - base, netem - base_netem);
    eprint!("[through the user's fq: +{added:.2} ms; netem at the same moments +{netem_added:.2} ms] ");
    anyhow::ensure!(
        (added - netem_added).abs() <= 1.0,
        "through the user's fq: +{added:.2} ms, netem's 20 ms at the same moments +{netem_added:.2}: more than \
         1 ms apart"
    );
    anyhow::ensure!(qdiscs(&lab)? == before, "the user's fq was changed");
    lab.ctr.exec(&["tc", "qdisc", "del", "dev", &dev, "root"])?;

    // The host's namespace: no NIC is picked by default.
    let empty = Cgroup::new("hostns")?;
    let out =
        runner::run(&["attack", "net-delay", "--cgroup", &empty.rel, "--delay", "20ms", "--duration", "5s"])?;
    anyhow::ensure!(out.code() == Some(3), "host namespace: exit {:?}: {}", out.code(), out.stderr);
    anyhow::ensure!(out.stderr.contains("host's network namespace"), "host namespace: {}", out.stderr);
    crate::fixtures::leaks::check_chaos().map_err(|l| anyhow::anyhow!("host namespace: left {l}"))?;
    Ok(())
}

//! Every fault ends on time, by each of the three safety layers on its own:
//! the controller (deadline, SIGINT, SIGTERM), the kernel-side deadline
//! (a hung loader), and fd-owned links (a killed loader) — and what can
//! outlive the loader (netlink filters) is removed by `chaos recover`.
//!
//! Method: the target streams one datagram per millisecond to a receiver
//! in the peer namespace under 100% egress loss. Each datagram carries its
//! send time (CLOCK_MONOTONIC, the clock of the kernel-side deadline), so
//! the receiver's record shows to the millisecond when the fault stopped.

use std::{net::SocketAddr, time::Duration};

use chaos::{capabilities::Capability, clock::monotonic_ns};

use super::net_loss::EGRESS;
use crate::{
    fixtures::{lab::Lab, runner::ChaosRun},
    harness::Ctx,
    helpers::udp,
};

/// How late the fault may end after its deadline or stop request.
const GRACE_NS: u64 = 100_000_000;
const STREAM_INTERVAL_US: u64 = 1000;

struct Stream {
    /// (seq, send time) of every datagram, measured or interpolated.
    lost: Vec<u64>,
    received: usize,
}

/// Run a stream of `count` datagrams while `during` acts on the chaos
/// process, then analyze which were lost and when they were sent.
fn stream(lab: &Lab, count: u64, during: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Stream> {
    let addr = SocketAddr::from((lab.peer_ip, 9100));
    let sink = udp::Sink::start(lab.peer(), addr)?;
    let sender = udp::send_background(lab.target(), addr, 7, count, STREAM_INTERVAL_US)?;
    let t0 = monotonic_ns();
    during()?;
    sender.wait_with_output()?;
    let packets = sink.finish()?;
    // Send times of lost datagrams: interpolate from the received ones
    // (they were sent on a fixed schedule).
    let mut sent = vec![None; count as usize];
    for p in packets.iter().filter(|p| p.tag == 7) {
        sent[p.seq as usize] = Some(p.sent_ns);
    }
    let interval = STREAM_INTERVAL_US * 1000;
    let anchor = packets.iter().find(|p| p.tag == 7).map_or((0, t0), |p| (p.seq, p.sent_ns));
    let lost: Vec<u64> = (0..count)
        .filter(|s| sent[*s as usize].is_none())
        .map(|s| (anchor.1 as i128 + (s as i128 - anchor.0 as i128) * interval as i128) as u64)
        .collect();
    Ok(Stream { received: count as usize - lost.len(), lost })
}

fn start(lab: &Lab, duration: &str, env: &[(&str, &str)]) -> anyhow::Result<(ChaosRun, u64)> {
    let args = [
        "attack",
        "net-loss",
        "--cgroup",
        &lab.target.rel,
        "--direction",
        "egress",
        "--percent",
        "100",
        "--duration",
        duration,
    ];
    let mut run = ChaosRun::start_with_env(&args, env)?;
    let ev = run.wait_event("start", Duration::from_secs(20))?;
    let deadline =
        ev["deadline_monotonic_ns"].as_u64().ok_or_else(|| anyhow::anyhow!("no deadline in {ev}"))?;
    Ok((run, deadline))
}

fn ensure_ended_by(s: &Stream, end_ns: u64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.lost.len() > 200,
        "{what}: only {} datagrams lost: the fault was not in force",
        s.lost.len()
    );
    anyhow::ensure!(s.received > 200, "{what}: only {} datagrams arrived: the fault never ended", s.received);
    let last = s.lost.iter().copied().max().unwrap_or(0);
    let late_ms = (last as i64 - end_ns as i64) as f64 / 1e6;
    anyhow::ensure!(
        last <= end_ns + GRACE_NS,
        "{what}: datagrams still lost {late_ms:.1} ms after the fault should have ended"
    );
    eprint!("[last loss {late_ms:+.1} ms from {what}] ");
    Ok(())
}

fn program_loaded(name: &str) -> bool {
    aya::programs::loaded_programs().flatten().any(|p| p.name_as_str() == Some(name))
}

pub fn ends_at_deadline(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let (run, deadline) = start(&lab, "2s", &[])?;
    let s = stream(&lab, 3500, || Ok(()))?;
    let ended = run.wait(Duration::from_secs(20))?;
    ensure_ended_by(&s, deadline, "the deadline")?;
    anyhow::ensure!(ended.code() == Some(0), "exit code {:?} at the deadline, expected 0", ended.code());
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event: {:?}", ended.events))?;
    anyhow::ensure!(stop["reason"] == "deadline", "stop reason {}", stop["reason"]);
    Ok(())
}

fn ends_on_signal(ctx: &mut Ctx, sig: i32, name: &str) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let (run, _) = start(&lab, "60s", &[])?;
    let mut signalled = 0;
    let s = stream(&lab, 3000, || {
        std::thread::sleep(Duration::from_millis(1200));
        signalled = monotonic_ns();
        run.signal(sig);
        Ok(())
    })?;
    let ended = run.wait(Duration::from_secs(20))?;
    ensure_ended_by(&s, signalled, name)?;
    ended.aborted_by(name).map(drop)
}

pub fn ends_on_sigint(ctx: &mut Ctx) -> anyhow::Result<()> {
    ends_on_signal(ctx, libc::SIGINT, "SIGINT")
}

pub fn ends_on_sigterm(ctx: &mut Ctx) -> anyhow::Result<()> {
    ends_on_signal(ctx, libc::SIGTERM, "SIGTERM")
}

/// Layer 3: with TCX, `kill -9` of the loader closes its link fds and the
/// kernel detaches the programs at once, long before the deadline.
pub fn kill9_links_vanish_with_the_loader(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::Tcx)?;
    let lab = Lab::new()?;
    let (run, _) = start(&lab, "30s", &[])?;
    let mut killed = 0;
    let s = stream(&lab, 3000, || {
        std::thread::sleep(Duration::from_millis(1200));
        killed = monotonic_ns();
        run.signal(libc::SIGKILL);
        Ok(())
    })?;
    let ended = run.wait(Duration::from_secs(10))?;
    anyhow::ensure!(ended.status.code().is_none(), "chaos was not killed");
    ensure_ended_by(&s, killed, "kill -9 (fd-owned links)")?;
    anyhow::ensure!(!program_loaded("net_egress"), "net_egress is still loaded after its loader died");
    // Nothing survives but the dead process's state file, which recover
    // removes.
    let out = crate::fixtures::runner::recover()?;
    anyhow::ensure!(out.code() == Some(0), "chaos recover failed: {}", out.stderr);
    Ok(())
}

fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

/// Layer 2 alone: a loader that hangs (SIGSTOP) keeps its links attached,
/// yet the fault ends at the deadline because every rule carries it.
pub fn hung_loader_kernel_deadline_ends_fault(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let (run, deadline) = start(&lab, "2s", &[])?;
    let s = stream(&lab, 3500, || {
        std::thread::sleep(Duration::from_millis(500));
        run.signal(libc::SIGSTOP);
        Ok(())
    })?;
    // Still stopped, still attached: only the kernel can have ended it.
    let state = process_state(run.pid);
    let attached = program_loaded("net_egress");
    run.signal(libc::SIGCONT);
    let ended = run.wait(Duration::from_secs(20))?;
    anyhow::ensure!(state == Some('T'), "the loader was not stopped during the stream (state {state:?})");
    anyhow::ensure!(attached, "the egress program was gone while the loader was stopped");
    ensure_ended_by(&s, deadline, "the kernel-side deadline (loader stopped)")?;
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event: {:?}", ended.events))?;
    let expired = stop["counters"]["expired"].as_u64().unwrap_or(0);
    anyhow::ensure!(expired > 0, "no packet saw the expired rule: {stop}");
    Ok(())
}

fn tc_show(lab: &Lab, what: &[&str]) -> anyhow::Result<String> {
    let mut cmd = vec!["tc"];
    cmd.extend_from_slice(what);
    lab.ctr.exec(&cmd)
}

/// Kernels without TCX (Debian 6.1): the netlink filter outlives a killed
/// loader; the kernel-side deadline makes it inert, and `chaos recover`
/// removes the filter and leaves the empty clsact qdisc chaos added.
pub fn netlink_kill9_deadline_then_recover(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::TcNetlink)?;
    let lab = Lab::new()?;
    let (run, deadline) = start(&lab, "2s", &[("CHAOS_EGRESS_MODE", "netlink")])?;
    let s = stream(&lab, 3500, || {
        std::thread::sleep(Duration::from_millis(500));
        run.signal(libc::SIGKILL);
        Ok(())
    })?;
    run.wait(Duration::from_secs(10))?;
    ensure_ended_by(&s, deadline, "the kernel-side deadline (loader killed, filter left)")?;
    let filters = tc_show(&lab, &["filter", "show", "dev", &lab.ctr_dev, "egress"])?;
    anyhow::ensure!(
        filters.contains("net_egress"),
        "expected the leftover filter after kill -9, found: {filters}"
    );
    let out = crate::fixtures::runner::recover()?;
    anyhow::ensure!(out.code() == Some(0), "chaos recover failed: {}", out.stderr);
    let filters = tc_show(&lab, &["filter", "show", "dev", &lab.ctr_dev, "egress"])?;
    anyhow::ensure!(filters.trim().is_empty(), "filters left after recover: {filters}");
    // The clsact chaos added stays, empty: deleting it would deactivate the
    // device (see chaos::attach::tc::detach_egress). recover says so, and
    // closes the record: a second run has nothing left to do.
    let qdiscs = tc_show(&lab, &["qdisc", "show", "dev", &lab.ctr_dev])?;
    anyhow::ensure!(qdiscs.contains("clsact"), "the clsact chaos added was deleted: {qdiscs}");
    let said = |e: &serde_json::Value| {
        e["outcome"].as_str().is_some_and(|o| o.starts_with("left: the empty clsact"))
    };
    anyhow::ensure!(out.events.iter().any(said), "recover said: {:?}", out.events);
    let again = crate::fixtures::runner::recover()?;
    anyhow::ensure!(
        again.code() == Some(0) && again.events.is_empty(),
        "second recover: exit {:?}: {:?}",
        again.code(),
        again.events
    );
    Ok(())
}

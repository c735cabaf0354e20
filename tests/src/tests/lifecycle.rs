//! Every fault ends on time, by each of the three safety layers on its own:
//! the controller (deadline, SIGINT, SIGTERM), the kernel-side deadline
//! (a hung loader), and fd-owned links (a killed loader) — and what can
//! outlive the loader (netlink filters) is removed by `chaos recover`.
//!
//! Method: the target streams one datagram per millisecond to a receiver
//! in the peer namespace under 100% egress loss. The sender records, for
//! every datagram, the CLOCK_MONOTONIC time (the clock of the kernel-side
//! deadline) just before and just after its `sendto` — the egress program
//! runs inside that call — so the test knows to the microsecond when each
//! lost datagram was dropped, even when a busy machine held the sender up.
//! Every bound is against times the test measured itself (when it started
//! chaos, when it saw the start event, when it sent the signal), never
//! against chaos's own account of its deadline.

use std::{net::SocketAddr, time::Duration};

use chaos::{capabilities::Capability, timebase::monotonic_ns};

use super::net_loss::EGRESS;
use crate::{
    fixtures::{lab::Lab, runner::ChaosRun},
    harness::Ctx,
    helpers::udp::{self, StreamResult},
};

/// How late the fault may end after its deadline or stop request: the
/// controller's reaction (a signal thread, a channel, one map delete) on a
/// guest whose CPUs are emulated and shared with the stream's sender and
/// receiver. The kernel-side deadline needs no reaction at all.
const GRACE_NS: u64 = 100_000_000;
const STREAM_INTERVAL_US: u64 = 1000;

/// Stream `count` datagrams while `during` acts on the chaos process.
fn stream(
    lab: &Lab,
    count: u64,
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<StreamResult> {
    let addr = SocketAddr::from((lab.peer_ip, 9100));
    let s = udp::TimedStream::start(lab.target(), lab.peer(), addr, 7, count, STREAM_INTERVAL_US)?;
    during()?;
    s.finish()
}

/// A started attack, with the times the test measured around its start:
/// chaos computes its deadline after `launched_ns` and before `seen_ns`,
/// so the deadline lies within `[launched_ns, seen_ns] + duration`.
struct Started {
    run: ChaosRun,
    launched_ns: u64,
    seen_ns: u64,
}

fn start(lab: &Lab, duration: &str, env: &[(&str, &str)]) -> anyhow::Result<Started> {
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
    let launched_ns = monotonic_ns();
    let mut run = ChaosRun::start_with_env(&args, env)?;
    run.wait_event("start", Duration::from_secs(20))?;
    Ok(Started { run, launched_ns, seen_ns: monotonic_ns() })
}

/// The fault was in force until `from_ns` (nothing sent before it got
/// through) and over by `to_ns` + [`GRACE_NS`] (nothing whose `sendto`
/// began later was lost).
fn ensure_ended_between(s: &StreamResult, from_ns: u64, to_ns: u64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.lost.len() > 200,
        "{what}: only {} datagrams lost: the fault was not in force",
        s.lost.len()
    );
    anyhow::ensure!(
        s.received() > 200,
        "{what}: only {} datagrams arrived: the fault never ended",
        s.received()
    );
    let early = s.arrived_before(from_ns);
    anyhow::ensure!(
        early.is_empty(),
        "{what}: {} datagrams got through before the fault could have ended ({} ms before it)",
        early.len(),
        udp::ranges_ms(&early, from_ns)
    );
    let late = s.lost_after(to_ns, GRACE_NS);
    anyhow::ensure!(
        late.is_empty(),
        "{what}: {} datagrams lost after the fault should have ended (sent {} ms from the end)",
        late.len(),
        udp::ranges_ms(&late, to_ns)
    );
    eprint!("[last loss {:+.1} ms from {what}] ", s.last_loss_ms(to_ns, GRACE_NS));
    Ok(())
}

/// The lateness of the controller by its own clock, for messages.
fn inert_us(event: Option<&serde_json::Value>) -> String {
    event.and_then(|e| e["inert_after_us"].as_u64()).map_or_else(|| "?".into(), |us| us.to_string())
}

fn program_loaded(name: &str) -> bool {
    aya::programs::loaded_programs().flatten().any(|p| p.name_as_str() == Some(name))
}

pub fn ends_at_deadline(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    // 3 s: the deadline counts from chaos's start, and loading the
    // programs under emulation (on a busy machine) can take more than one.
    let st = start(&lab, "3s", &[])?;
    let s = stream(&lab, 4500, || Ok(()))?;
    let ended = st.run.wait(Duration::from_secs(20))?;
    let three_s = 3_000_000_000;
    ensure_ended_between(&s, st.launched_ns + three_s, st.seen_ns + three_s, "the deadline")?;
    anyhow::ensure!(ended.code() == Some(0), "exit code {:?} at the deadline, expected 0", ended.code());
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event: {:?}", ended.events))?;
    anyhow::ensure!(stop["reason"] == "deadline", "stop reason {}", stop["reason"]);
    Ok(())
}

fn ends_on_signal(ctx: &mut Ctx, sig: i32, name: &str) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let st = start(&lab, "60s", &[])?;
    let mut signalled = 0;
    let s = stream(&lab, 3000, || {
        std::thread::sleep(Duration::from_millis(1200));
        signalled = monotonic_ns();
        st.run.signal(sig);
        Ok(())
    })?;
    let ended = st.run.wait(Duration::from_secs(20))?;
    let abort = ended.event("abort");
    ensure_ended_between(&s, signalled, signalled, name)
        .map_err(|e| anyhow::anyhow!("{e} (chaos: inert {} us after its stop began)", inert_us(abort)))?;
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
    let st = start(&lab, "30s", &[])?;
    let mut killed = 0;
    let s = stream(&lab, 3000, || {
        std::thread::sleep(Duration::from_millis(1200));
        killed = monotonic_ns();
        st.run.signal(libc::SIGKILL);
        Ok(())
    })?;
    let ended = st.run.wait(Duration::from_secs(10))?;
    anyhow::ensure!(ended.status.code().is_none(), "chaos was not killed");
    ensure_ended_between(&s, killed, killed, "kill -9 (fd-owned links)")?;
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
    // Stopped as soon as the stream runs, well before the deadline (which
    // counts from chaos's start, seconds earlier under emulation).
    let st = start(&lab, "3s", &[])?;
    let s = stream(&lab, 4500, || {
        std::thread::sleep(Duration::from_millis(100));
        st.run.signal(libc::SIGSTOP);
        Ok(())
    })?;
    // Still stopped, still attached: only the kernel can have ended it.
    let state = process_state(st.run.pid);
    let attached = program_loaded("net_egress");
    st.run.signal(libc::SIGCONT);
    let ended = st.run.wait(Duration::from_secs(20))?;
    anyhow::ensure!(state == Some('T'), "the loader was not stopped during the stream (state {state:?})");
    anyhow::ensure!(attached, "the egress program was gone while the loader was stopped");
    let three_s = 3_000_000_000;
    ensure_ended_between(
        &s,
        st.launched_ns + three_s,
        st.seen_ns + three_s,
        "the kernel-side deadline (loader stopped)",
    )?;
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
    let st = start(&lab, "2s", &[("CHAOS_EGRESS_MODE", "netlink")])?;
    let s = stream(&lab, 3500, || {
        std::thread::sleep(Duration::from_millis(500));
        st.run.signal(libc::SIGKILL);
        Ok(())
    })?;
    st.run.wait(Duration::from_secs(10))?;
    let two_s = 2_000_000_000;
    ensure_ended_between(
        &s,
        st.launched_ns + two_s,
        st.seen_ns + two_s,
        "the kernel-side deadline (loader killed, filter left)",
    )?;
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
    crate::fixtures::runner::recover_finds_nothing()
}

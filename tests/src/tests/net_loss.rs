//! `chaos attack net-loss`: rates, scope, filters and fidelity, measured by
//! receivers and senders outside the mechanism; what the safety suite
//! (`safety.rs`) needs to drive and measure the family; and what outlives a
//! killed loader on kernels without TCX (netlink filters), which `chaos
//! recover` removes.

use std::{net::SocketAddr, process::Command, time::Duration};

use chaos::{capabilities::Capability, timebase::monotonic_ns};

use super::safety::{Ending, Family, GRACE_NS, Window};
use crate::{
    fixtures::{lab::Lab, runner::ChaosRun},
    harness::Ctx,
    helpers::{
        tcp,
        udp::{self, StreamResult},
    },
    stats::check_rate_measured,
};

const PACKETS: u64 = 2500;
const INTERVAL_US: u64 = 100;
pub const EGRESS: &[Capability] = &[Capability::Tcx, Capability::TcNetlink];

/// Start an attack on the lab's target and wait until it is in force.
pub fn attack(lab: &Lab, extra: &[&str]) -> anyhow::Result<ChaosRun> {
    let mut args = vec!["attack", "net-loss", "--cgroup", &lab.target.rel];
    args.extend_from_slice(extra);
    let mut run = ChaosRun::start(&args)?;
    run.wait_event("start", Duration::from_secs(20))?;
    Ok(run)
}

/// Stop an attack early (SIGTERM) and return its end event.
pub fn end(run: ChaosRun) -> anyhow::Result<serde_json::Value> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(20))?;
    ended.event("abort").or(ended.event("stop")).cloned().ok_or_else(|| {
        anyhow::anyhow!("no end event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })
}

fn lost(packets: &[udp::Packet], tag: u32, sent: u64) -> u64 {
    sent - packets.iter().filter(|p| p.tag == tag).count() as u64
}

/// Loss at 0, 1, 10, 50 and 100% in one direction, over 2500 packets from
/// a sender outside the mechanism: the rate within its binomial interval,
/// chaos's drop counter equal to what the receiver missed, and the sender
/// never told (a lossy link does not fail `sendto`).
fn rates(lab: &Lab, direction: &str) -> anyhow::Result<()> {
    let egress = direction == "egress";
    let (from, to, tag) = if egress {
        (lab.target(), SocketAddr::from((lab.peer_ip, 9000)), 1)
    } else {
        (lab.peer(), SocketAddr::from((lab.ctr_ip, 9001)), 2)
    };
    let receiver = if egress { lab.peer() } else { lab.target() };
    let mut shown = Vec::new();
    for percent in [0u32, 1, 10, 50, 100] {
        let what = format!("{direction} loss at {percent}%");
        let lost = check_rate_measured(&what, f64::from(percent) / 100.0, || {
            let flags = ["--direction", direction, "--percent", &percent.to_string(), "--duration", "60s"];
            let run = attack(lab, &flags)?;
            let sink = udp::Sink::start(receiver, to)?;
            let sent = udp::send(from, to, tag, PACKETS, INTERVAL_US)?;
            let packets = sink.finish()?;
            let end = end(run)?;
            anyhow::ensure!(
                sent.errors == 0,
                "{what}: sendto failed {} times ({})",
                sent.errors,
                sent.errnos
            );
            let lost = lost(&packets, tag, sent.sent);
            let dropped = end["counters"][format!("{direction}_dropped")].as_u64().unwrap_or(u64::MAX);
            anyhow::ensure!(
                dropped == lost,
                "{what}: chaos counted {dropped} drops, the receiver missed {lost}"
            );
            Ok((lost, sent.sent))
        })?;
        shown.push(format!("{percent}%: {lost}/{PACKETS}"));
    }
    eprint!("[lost {}] ", shown.join(", "));
    Ok(())
}

pub fn egress_rates_are_exact_and_silent(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    rates(&Lab::new()?, "egress")
}

pub fn ingress_rates_are_exact(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::CgroupSkb)?;
    rates(&Lab::new()?, "ingress")
}

pub fn sibling_cgroup_loses_nothing(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let lab = Lab::new()?;
    // Egress: both cgroups send to the same sink, over the same device, at
    // the same time.
    check_rate_measured("target egress loss beside the sibling", 0.5, || {
        let run = attack(&lab, &["--percent", "50", "--duration", "60s"])?;
        let sink_addr = SocketAddr::from((lab.peer_ip, 9002));
        let sink = udp::Sink::start(lab.peer(), sink_addr)?;
        let target = udp::send_background(lab.target(), sink_addr, 10, PACKETS, INTERVAL_US)?;
        let sibling = udp::send(lab.sibling(), sink_addr, 11, PACKETS, INTERVAL_US)?;
        target.wait_with_output()?;
        let packets = sink.finish()?;
        end(run)?;
        let sibling_lost = lost(&packets, 11, sibling.sent);
        anyhow::ensure!(sibling_lost == 0, "the sibling lost {sibling_lost} packets");
        Ok((lost(&packets, 10, PACKETS), PACKETS))
    })?;
    // Ingress: a sink in each cgroup.
    check_rate_measured("target ingress loss beside the sibling", 0.5, || {
        let run = attack(&lab, &["--percent", "50", "--duration", "60s"])?;
        let t_addr = SocketAddr::from((lab.ctr_ip, 9003));
        let s_addr = SocketAddr::from((lab.ctr_ip, 9004));
        let t_sink = udp::Sink::start(lab.target(), t_addr)?;
        let s_sink = udp::Sink::start(lab.sibling(), s_addr)?;
        let to_target = udp::send_background(lab.peer(), t_addr, 12, PACKETS, INTERVAL_US)?;
        udp::send(lab.peer(), s_addr, 13, PACKETS, INTERVAL_US)?;
        to_target.wait_with_output()?;
        let (t, s) = (t_sink.finish()?, s_sink.finish()?);
        end(run)?;
        let sibling_lost = lost(&s, 13, PACKETS);
        anyhow::ensure!(sibling_lost == 0, "the sibling lost {sibling_lost} received packets");
        Ok((lost(&t, 12, PACKETS), PACKETS))
    })?;
    Ok(())
}

pub fn cidr_and_port_filters(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let a = SocketAddr::from((lab.peer_ip, 9010));
    let b = SocketAddr::from((lab.peer_ip, 9011));
    let cases: &[(&[&str], u64, u64)] = &[
        // (filter flags, expected loss to port 9010, to port 9011)
        (&["--port", "9010"], PACKETS, 0),
        (&["--cidr", "10.77.0.2/32", "--protocol", "udp"], PACKETS, PACKETS),
        (&["--cidr", "10.78.0.0/16"], 0, 0),
        (&["--cidr", "10.77.0.0/24", "--port", "9011", "--protocol", "udp"], 0, PACKETS),
        (&["--protocol", "tcp"], 0, 0),
    ];
    for (filters, want_a, want_b) in cases {
        let mut args = vec!["--direction", "egress", "--percent", "100", "--duration", "60s"];
        args.extend_from_slice(filters);
        let run = attack(&lab, &args)?;
        let sink_a = udp::Sink::start(lab.peer(), a)?;
        let sink_b = udp::Sink::start(lab.peer(), b)?;
        let n = 500;
        udp::send(lab.target(), a, 20, n, INTERVAL_US)?;
        udp::send(lab.target(), b, 21, n, INTERVAL_US)?;
        let (pa, pb) = (sink_a.finish()?, sink_b.finish()?);
        end(run)?;
        let (la, lb) = (lost(&pa, 20, n), lost(&pb, 21, n));
        let scale = |w: u64| w * n / PACKETS;
        anyhow::ensure!(
            la == scale(*want_a) && lb == scale(*want_b),
            "filters {filters:?}: lost {la} to :9010 and {lb} to :9011, expected {} and {}",
            scale(*want_a),
            scale(*want_b)
        );
    }
    Ok(())
}

pub fn ping_reports_the_loss(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let count = 1000u64;
    check_rate_measured("loss reported by ping", 0.5, || {
        let run = attack(&lab, &["--direction", "egress", "--percent", "50", "--duration", "60s"])?;
        let mut ping = Command::new("ping");
        ping.args(["-n", "-q", "-c", &count.to_string(), "-i", "0.002", "-W", "1"])
            .arg(lab.peer_ip.to_string());
        ping.stdout(std::process::Stdio::piped());
        let out = lab.target().spawn(&mut ping)?.wait_with_output()?;
        end(run)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "2000 packets transmitted, 1012 received, 49.4% packet loss, time ..."
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| anyhow::anyhow!("ping said: {text}"))?;
        let num = |word: &str| -> Option<u64> {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            words.iter().position(|w| *w == word).and_then(|i| words.get(i - 1)?.parse().ok())
        };
        let (tx, rx) = (num("packets").unwrap_or(0), num("received").unwrap_or(0));
        // Re-sending (as on ENOBUFS) would show as more transmitted or no loss.
        anyhow::ensure!(tx == count, "ping transmitted {tx}, not {count}: {line}");
        Ok((tx - rx, tx))
    })?;
    Ok(())
}

pub fn tcp_recovers_by_retransmission(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let addr = SocketAddr::from((lab.peer_ip, 9020));
    let bytes = 4 << 20;
    let run = attack(&lab, &["--direction", "egress", "--percent", "10", "--duration", "120s"])?;
    let sink = tcp::Sink::start(lab.peer(), addr)?;
    let transfer = tcp::send(lab.target(), addr, bytes)?;
    let received = sink.bytes()?;
    let end = end(run)?;
    anyhow::ensure!(received == bytes, "the receiver got {received} of {bytes} bytes");
    anyhow::ensure!(transfer.retrans > 0, "no retransmissions at 10% loss: the loss was not network-like");
    let dropped = end["counters"]["egress_dropped"].as_u64().unwrap_or(0);
    anyhow::ensure!(dropped > 0, "chaos dropped nothing");
    eprint!(
        "[{} MB in {:.1}s, {} retransmissions, {dropped} drops] ",
        bytes >> 20,
        transfer.seconds,
        transfer.retrans
    );
    Ok(())
}

/// The safety suite's net-loss: 100% egress loss on a stream of one
/// datagram per millisecond from the target to a receiver in the peer
/// namespace. The sender records, for every datagram, the CLOCK_MONOTONIC
/// time just before and just after its `sendto` — the egress program runs
/// inside that call — so the test knows to the microsecond when each lost
/// datagram was dropped, even when a busy machine held the sender up.
pub struct NetLoss {
    lab: Lab,
}

const STREAM_INTERVAL_US: u64 = 1000;

/// Start a 100% egress loss on the lab's target and wait until it is in
/// force.
fn start_egress_loss(lab: &Lab, duration: &str, env: &[(&str, &str)]) -> anyhow::Result<ChaosRun> {
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
    run.wait_event("start", Duration::from_secs(20))?;
    Ok(run)
}

fn timed_stream(lab: &Lab, seconds: f64) -> anyhow::Result<udp::TimedStream> {
    let addr = SocketAddr::from((lab.peer_ip, 9100));
    let count = (seconds * 1e6) as u64 / STREAM_INTERVAL_US;
    udp::TimedStream::start(lab.target(), lab.peer(), addr, 7, Some(count), STREAM_INTERVAL_US)
}

/// The fault was in force until `from_ns` (nothing sent before it got
/// through) and over by `to_ns` + `grace_ns` (nothing whose `sendto` began
/// later was lost).
fn ensure_ended_between(s: &StreamResult, w: Window, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.lost.len() > 200,
        "{what}: only {} datagrams lost: the fault was not in force ({} arrived, the first sent {:+.1} ms from \
         the end)",
        s.lost.len(),
        s.received(),
        s.arrived.first().map_or(f64::NAN, |t| (t[0] as i64 - w.to_ns as i64) as f64 / 1e6)
    );
    anyhow::ensure!(
        s.received() > 200,
        "{what}: only {} datagrams arrived: the fault never ended",
        s.received()
    );
    let early = s.arrived_before(w.from_ns);
    anyhow::ensure!(
        early.is_empty(),
        "{what}: {} datagrams got through before the fault could have ended ({} ms before it)",
        early.len(),
        udp::ranges_ms(&early, w.from_ns)
    );
    let late = s.lost_after(w.to_ns, w.grace_ns);
    anyhow::ensure!(
        late.is_empty(),
        "{what}: {} datagrams lost after the fault should have ended (sent {} ms from the end)",
        late.len(),
        udp::ranges_ms(&late, w.to_ns)
    );
    eprint!("[last loss {:+.1} ms from {what}] ", s.last_loss_ms(w.to_ns, w.grace_ns));
    Ok(())
}

impl Family for NetLoss {
    const DEADLINE: &'static str = "6s";
    const DEADLINE_MEASURE_S: f64 = 7.5;
    const EXIT_WITHIN: Duration = Duration::from_secs(20);
    type Prepared = ();
    type Measuring = udp::TimedStream;
    type Measured = StreamResult;

    fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
        ctx.require_any(EGRESS)
    }

    /// Netlink filters are not fds: they outlive the loader, and this test
    /// also checks that nothing of chaos's stays loaded (the fault itself
    /// ends with the loader there too: see
    /// [`netlink_kill9_fault_ends_then_recover`]).
    fn require_fd_links(ctx: &mut Ctx) -> anyhow::Result<()> {
        ctx.require(Capability::Tcx)
    }

    fn new() -> anyhow::Result<Self> {
        Ok(Self { lab: Lab::new()? })
    }

    fn prepare(&self, _seconds: f64) -> anyhow::Result<()> {
        Ok(())
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        start_egress_loss(&self.lab, duration, &[])
    }

    fn measure(&self, _: (), seconds: f64) -> anyhow::Result<udp::TimedStream> {
        timed_stream(&self.lab, seconds)
    }

    fn finish(&self, measuring: udp::TimedStream) -> anyhow::Result<StreamResult> {
        measuring.finish()
    }

    fn ensure_ended(&self, m: &StreamResult, window: Window, what: &str) -> anyhow::Result<()> {
        ensure_ended_between(m, window, what)
    }

    fn loaded() -> Vec<String> {
        programs_named("net_egress")
    }

    /// After `kill -9`, with TCX (the only case that test runs): at once.
    fn unloaded_within(ending: Ending) -> Option<Duration> {
        (ending == Ending::Kill9).then_some(Duration::ZERO)
    }
}

fn programs_named(name: &str) -> Vec<String> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n == name)
        .collect()
}

fn tc_show(lab: &Lab, what: &[&str]) -> anyhow::Result<String> {
    let mut cmd = vec!["tc"];
    cmd.extend_from_slice(what);
    lab.ctr.exec(&cmd)
}

/// Kernels without TCX (Debian 5.10, 6.1): the netlink filter outlives a
/// killed loader, but the fault does not: the tag program that marks the
/// target's packets for the classifier is an fd-owned cgroup link, so the
/// fault ends as the loader exits, as with TCX. `chaos recover` removes the
/// filter and leaves the empty clsact qdisc chaos added.
pub fn netlink_kill9_fault_ends_then_recover(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::TcNetlink)?;
    let lab = Lab::new()?;
    // 60 s: far past the measurement, so that only the kill can end it.
    // Measured and killed as in safety::kill9_links_vanish_with_the_loader
    // (seen in force for 1.2 s, over for 1.8 s).
    let run = start_egress_loss(&lab, "60s", &[("CHAOS_EGRESS_MODE", "netlink")])?;
    let stream = timed_stream(&lab, 3.0)?;
    std::thread::sleep(Duration::from_millis(1200));
    let exit = run.watch_exit(Duration::from_secs(10))?;
    let killed = monotonic_ns();
    run.signal(libc::SIGKILL);
    let s = stream.finish()?;
    let exited = exit.join().ok().flatten();
    run.wait(Duration::from_secs(10))?;
    let filters = tc_show(&lab, &["filter", "show", "dev", &lab.ctr_dev, "egress"])?;
    // What the process left goes, whatever the assertions say.
    let out = crate::fixtures::runner::recover()?;
    let exited = exited.ok_or_else(|| anyhow::anyhow!("chaos had not exited 10 s after kill -9"))?;
    // The tag link goes when the exiting process closes its fds.
    ensure_ended_between(
        &s,
        Window { from_ns: killed, to_ns: exited, grace_ns: GRACE_NS },
        "the killed loader's exit (its tag link; the filter is left)",
    )?;
    anyhow::ensure!(
        filters.contains("net_egress"),
        "expected the leftover filter after kill -9, found: {filters}"
    );
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

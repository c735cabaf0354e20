//! `chaos attack net-delay|net-rate|net-duplicate|net-corrupt|net-reorder`:
//! their shared flags and help text (the subcommands are variants in
//! attack.rs). Each requires its own primary flag; any other effect's flag
//! combines with it in one attack, as netem's options do.

use std::time::Duration;

use clap::{Arg, Args};

use super::{
    attack::NetFilterArgs,
    schema::{Built, FaultParams, Source},
};
use crate::{
    faults::{Distribution, Fault, NetEffects, NetFault, NetKind},
    units::{Percent, Rate, parse_duration},
};

/// Shared by every `--help` of these subcommands, after the fault's own
/// paragraph.
pub const COMMON_HELP: &str = "\
Scope: what the target's processes send (--direction egress, the default), \
receive (ingress), or both. Sent packets: a tc egress program on the \
devices of the target's network namespace (entered through \
/proc/PID/ns/net, so a container needs no sidecar) matches packets by \
their socket's cgroup. By default it acts on the devices that are up \
except loopback; --interface picks devices. Other cgroups' packets on the \
same devices pass untouched.

Received packets (Linux 6.6 or later: TCX and an ifb that BPF can \
redirect to): a tc ingress program on the same devices sends the target's \
packets through an ifb device of chaos's (chaosrx<pid>) in that \
namespace, whose fq holds each one until its time; the ifb hands it back \
to the device it arrived on. No socket is known at that hook, so the \
target's flows are learned from its own packets (cgroup programs on the \
target): every packet of a connection or exchange the target starts is \
affected, and of one it accepts, every packet after the first (a SYN, a \
first datagram from a new peer arrive before chaos knows the flow). A \
sibling cgroup in the same namespace receiving from the same peer is \
untouched. The ifb is deleted after the attack (by `chaos recover` after \
kill -9; without chaos's ingress link, which ends with the process, \
nothing reaches it).

Combining: every effect flag may be given to every one of these \
subcommands; the subcommand names the primary one, which is required. \
Loss acts first; a duplicate is an independent copy (its own delay, \
corruption, reordering); a reordered packet skips delay and rate. With \
--direction both each direction is a link of its own (its own rate \
limiter): a round trip sees the delay twice.

Delay, jitter, rate and reorder give packets a departure time, which an \
fq qdisc on the device honours: chaos snapshots the device's qdiscs \
(`tc -j qdisc show`), puts fq in place of the kernel's default qdisc, \
and deletes it after, leaving the device exactly as it was (also after \
kill -9, through `chaos recover`). It refuses a device with a qdisc setup \
of someone else's (other than an fq, which it uses as it is), and a target \
in the host's network namespace unless --interface names the devices.";

/// `net-delay`'s help.
pub const DELAY_HELP: &str = "\
Delay what the target sends (or receives: --direction) by a fixed time \
plus jitter, as netem's delay does.

Each packet's departure time is now + --delay + a jitter sample (uniform \
in [-jitter, +jitter], or normal with standard deviation --jitter; a \
sample that would make the delay negative sends at once). With jitter, \
packets of one flow are delayed independently and may overtake each \
other, as with netem.

Example: 50 ms ± 10 ms (normal) on what a pod sends, with 1% loss, for 2 minutes:

  chaos attack net-delay --cgroup /kubepods.slice/kubepods-pod42.slice --delay 50ms \\
      --jitter 10ms --distribution normal --loss 1 --duration 2m";

/// `net-rate`'s help.
pub const RATE_HELP: &str = "\
Limit the bandwidth of what the target sends (or receives: --direction), \
as a slower link would.

Every matching packet of the target shares one link of --rate bits per \
second on the wire (link-layer header included, as netem and tbf count). \
The link buffers up to 1 s of traffic (more at rates below 1 Mbit/s: two \
64 KiB packets); beyond, packets are dropped silently, as by a full \
router queue, and TCP backs off.

Example: a 10 Mbit/s link with 40 ms of latency for what nginx sends:

  chaos attack net-rate --cgroup /system.slice/nginx.service --rate 10mbit --delay 40ms --duration 5m";

/// `net-duplicate`'s help.
pub const DUPLICATE_HELP: &str = "\
Send an extra copy of a share of what the target sends (or receives: \
--direction), as netem's duplicate does.

The copy is sent just before the original (or with its own departure \
time when combined with --delay).

Example: duplicate 1% of what process 4242's cgroup sends to port 53:

  chaos attack net-duplicate --pid 4242 --duplicate 1 --port 53 --duration 30s";

/// `net-corrupt`'s help.
pub const CORRUPT_HELP: &str = "\
Flip a bit in a share of what the target sends (or receives: \
--direction), so that the receiver's checks drop it, as netem's corrupt \
does.

IPv4: a random bit of the IP header outside its checksum field, which the \
receiver's header checksum catches (its /proc/net/snmp Ip InHdrErrors \
counts the drop). IPv6 has no header checksum: a bit of the version \
field, which every receiver rejects (Ip6InHdrErrors). GSO packets (TCP \
bulk sends) also get a version bit, and count as one packet. The L4 \
payload is never touched: with checksum offload its checksum is computed \
after the hook, over the corrupted bytes, and the receiver would accept \
them.

Example: corrupt 0.5% of what nginx sends:

  chaos attack net-corrupt --cgroup /system.slice/nginx.service --corrupt 0.5 --duration 1m";

/// `net-reorder`'s help.
pub const REORDER_HELP: &str = "\
Reorder what the target sends (or receives: --direction): a share of \
packets leaves at once, past the ones being delayed, as netem's reorder \
does. Needs --delay.

Example: send 25% of packets at once, the rest 10 ms late:

  chaos attack net-reorder --cgroup /system.slice/app.service --reorder 25 --delay 10ms --duration 1m";

fn egress_first(direction: Arg) -> Arg {
    direction
        .default_value("egress")
        .help("What the target sends (egress), receives (ingress: Linux 6.6 or later), or both")
}

fn devices_up(interfaces: Arg) -> Arg {
    interfaces.help(
        "Only on this device of the target's network namespace (repeatable). Default: every device that is up, \
         except loopback",
    )
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s)
}

/// The effect flags (all optional here; each subcommand makes its own
/// primary flag required) and the filters. The filters
/// are net-loss's, egress by default, on the devices that are up (see
/// [`COMMON_HELP`]): only their defaults and help differ.
#[derive(Debug, Args)]
#[command(mut_arg("direction", egress_first), mut_arg("interfaces", devices_up))]
pub struct NetEffectParams {
    /// Delay every matching packet by this long: 50ms, 1.5s (at most 10s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub delay: Option<Duration>,

    /// Spread the delay: the uniform half-width or the normal standard
    /// deviation (at most 10s). Needs --delay.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub jitter: Option<Duration>,

    /// The jitter's distribution. Needs --jitter. [default: uniform]
    #[arg(long, value_enum, value_name = "DIST")]
    pub distribution: Option<Distribution>,

    /// Bandwidth on the wire: 10mbit, 1.5gbit, 500kbit (at least 100kbit).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<Rate>,

    /// Share of matching packets to drop, 0 to 100.
    #[arg(long, value_name = "PERCENT")]
    pub loss: Option<Percent>,

    /// Share of matching packets to send twice, 0 to 100.
    #[arg(long, value_name = "PERCENT")]
    pub duplicate: Option<Percent>,

    /// Share of matching packets to corrupt (one flipped header bit), 0 to
    /// 100.
    #[arg(long, value_name = "PERCENT")]
    pub corrupt: Option<Percent>,

    /// Share of matching packets to send at once, ahead of the delayed
    /// ones, 0 to 100. Needs --delay.
    #[arg(long, value_name = "PERCENT")]
    pub reorder: Option<Percent>,

    #[command(flatten)]
    pub filter: NetFilterArgs,
}

impl FaultParams for NetEffectParams {
    /// The validated fault; every problem in one message.
    fn build(&self, kind: &str, _source: Source) -> Result<Built, String> {
        let Some(kind) = NetKind::from_name(kind) else {
            unreachable!("the schema pairs these parameters with the net-<effect> subcommands only")
        };
        let effects = NetEffects {
            loss: self.loss,
            delay: self.delay,
            jitter: self.jitter,
            distribution: self.distribution,
            rate: self.rate,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            reorder: self.reorder,
        };
        let mut fault =
            NetFault::new(kind, effects, self.filter.filter()).map_err(|problems| problems.join("; "))?;
        fault.interfaces = self.filter.interfaces().to_vec();
        Ok(Built { fault: Fault::net(kind, fault) })
    }
}

//! `chaos attack <fault>`: one fault, one target, one duration.

use clap::{Args, Subcommand};

use crate::{
    attack::{Attack, plan},
    capabilities::Capabilities,
    cli::TargetArgs,
    controller::{self, EndReason},
    error::{Error, ExitCode, Result},
    events::Events,
    faults::{Direction, Fault, NetFilter, NetLoss, Protocol},
    session,
    signals::SignalWatch,
    units::{AttackDuration, Cidr, Percent},
};

#[derive(Debug, Subcommand)]
pub enum AttackCommand {
    /// Drop a share of the target's packets, silently, as a lossy link does.
    ///
    /// Loss is invisible to the sender, as on a real network: UDP `sendto`
    /// succeeds, `ping` reports the loss, TCP recovers by retransmission.
    /// Packets the target sends are dropped by a tc egress program on the
    /// devices of its network namespace (all of them, or --interface);
    /// packets it receives are dropped by a cgroup_skb ingress program on
    /// the target cgroup, before its sockets see them. Other cgroups' packets
    /// pass untouched.
    ///
    /// Filters apply to IPv4 and IPv6. Ports are read from TCP, UDP and SCTP
    /// headers right after the IP header (IPv6 extension headers are not
    /// walked: such packets match on addresses only). Packets with neither
    /// are matched by a rule with no filters only.
    ///
    /// Example: drop 5% of what nginx sends and receives for two minutes:
    ///
    ///   chaos attack net-loss --cgroup /system.slice/nginx.service --percent 5 --duration 2m
    #[command(verbatim_doc_comment)]
    NetLoss(NetLossArgs),
}

#[derive(Debug, Args)]
pub struct NetLossArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Share of matching packets to drop, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT")]
    pub percent: Percent,

    #[command(flatten)]
    pub filter: NetFilterArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Which packets a network fault applies to.
#[derive(Debug, Args)]
pub struct NetFilterArgs {
    /// Packets the target sends (egress), receives (ingress), or both.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,

    /// Only packets to (egress) or from (ingress) this network, e.g.
    /// 10.0.0.0/8 or 2001:db8::/32; a bare address means that host.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<Cidr>,

    /// Only packets with this source or destination port.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Only packets of this protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Any)]
    pub protocol: Protocol,

    /// Only on this device of the target's network namespace (repeatable);
    /// egress only. Default: every device, loopback included.
    #[arg(long = "interface", value_name = "DEV")]
    pub interfaces: Vec<String>,
}

impl NetFilterArgs {
    fn filter(&self) -> NetFilter {
        NetFilter { direction: self.direction, cidr: self.cidr, port: self.port, protocol: self.protocol }
    }
}

/// How long, and where events go.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long the fault lasts: 500ms, 30s, 2m, 1h30m (at most 24h). The
    /// kernel ends it at this deadline even if chaos is killed.
    #[arg(long, value_name = "DURATION")]
    pub duration: AttackDuration,
}

impl AttackCommand {
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Self::NetLoss(args) => {
                let fault = Fault::NetLoss(NetLoss { percent: args.percent, filter: args.filter.filter() });
                run_one(fault, &args.target, args.filter.interfaces, args.run)
            }
        }
    }
}

fn run_one(fault: Fault, target: &TargetArgs, interfaces: Vec<String>, run: RunArgs) -> Result<ExitCode> {
    if !interfaces.is_empty() && matches!(&fault, Fault::NetLoss(l) if !l.filter.direction.egress()) {
        return Err(Error::invalid("--interface applies to egress; drop it or use --direction egress|both"));
    }
    session::require_root("chaos attack")?;
    let target = target.resolve()?;
    let attack =
        Attack { id: format!("{}-1", fault.kind()), fault, target, duration: run.duration.0, interfaces };
    let mut caps = Capabilities::new();
    let mechanism = plan(&attack, &mut caps)?;
    let signals = SignalWatch::install().map_err(|e| Error::kernel("installing signal handlers", e))?;
    let mut injector = session::open(std::slice::from_ref(&attack))?;
    let events = Events::stdout();
    let (reason, _) =
        controller::run_parallel(&mut injector, vec![(attack, mechanism)], &events, &signals, |_, _| None)?;
    Ok(match reason {
        EndReason::Deadline => ExitCode::Ok,
        EndReason::Signal(_) | EndReason::Abort(_) => ExitCode::Aborted,
    })
}

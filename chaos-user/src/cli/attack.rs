//! `chaos attack <fault>`: one fault, one target, one duration.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

pub use super::attack_clock::ClockSkewParams;
pub use super::attack_conn::NetRefuseParams;
pub use super::attack_dns::DnsErrorParams;
pub use super::attack_io::IoErrorParams;
use super::attack_net as net;
pub use super::attack_net::NetEffectParams;
pub use super::attack_partition::NetPartitionParams;
pub use super::{
    attack_block::IoThrottleParams, attack_cpu::CpuStarveParams, attack_kill::KillParams,
    attack_memory::MemoryPressureParams, attack_pause::PauseParams, attack_reset::NetResetParams,
};
use super::{
    output::OutputArgs,
    schema::{Built, FaultParams, Source},
};

use crate::{
    attack::{Attack, plan},
    capabilities::{Capabilities, Capability, CapabilitySet, Findings},
    cli::TargetArgs,
    error::{Error, ExitCode, Result},
    experiment::Experiment,
    faults::{Direction, Fault, NetFilter, NetKind, NetLoss, Protocol},
    plan::{Demand, safety_text},
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
    NetLoss(AttackArgs<NetLossParams>),

    /// Fail file operations of the target with an errno: opens, reads,
    /// writes, directory reads, under chosen paths, with a probability.
    ///
    /// Paths are matched on what the kernel resolved, not on the string a
    /// program passed: each --path is looked up once, when the attack
    /// starts, and names that directory or file *itself* (its inode). A call
    /// matches when the file it acts on is that file or lies below that
    /// directory, however the program reached it: relative paths, `..`,
    /// symlinks (the file they point to counts), bind mounts of the
    /// directory or of anything below it, and filesystems mounted below it.
    /// A file --path matches through all of its hard links; a hard link
    /// outside a directory --path, to a file inside it, does not (the kernel
    /// sees the file at the link's place). A directory that merely has the
    /// same name elsewhere does not match, nor does /data2 for --path /data.
    /// Pipes, sockets and other files outside the directory tree never
    /// match. The directory itself matches (opening it, listing it). Files
    /// created later under the directory match.
    ///
    /// Operations (--operations, default all):
    ///   open     open, openat, openat2, creat, and the opens of execve, except
    ///            O_PATH. With O_CREAT, a file that did not exist is created
    ///            before the open fails (the kernel checks opens after
    ///            creating), as an empty file.
    ///   read     read, readv, pread64, preadv(2), the reading side of sendfile,
    ///            splice and copy_file_range, io_uring and AIO reads.
    ///   write    write, writev, pwrite64, pwritev(2), the writing side of
    ///            sendfile, splice and copy_file_range, io_uring and AIO
    ///            writes, fallocate.
    ///   readdir  getdents, getdents64 (ls, readdir(3)).
    /// A failed call moves no byte. Not covered (no hook sees them): fsync
    /// and fdatasync, I/O through mmap'ed memory (page faults, writeback),
    /// stat, unlink, rename, mkdir, truncate.
    ///
    /// Mechanism: BPF LSM programs on the file_open and file_permission
    /// hooks, where the kernel runs the `bpf` LSM (`chaos doctor` shows it);
    /// elsewhere io-error is unavailable and says why. Processes outside the
    /// target cgroup pay one map lookup per call.
    ///
    /// Example: fail 1% of the writes postgres makes under its data
    /// directory with ENOSPC, for ten minutes:
    ///
    ///   chaos attack io-error --cgroup /system.slice/postgresql.service \
    ///       --path /var/lib/postgresql --operations write --errno ENOSPC \
    ///       --percent 1 --duration 10m
    #[command(verbatim_doc_comment)]
    IoError(AttackArgs<IoErrorParams>),

    /// Shift the time of day the target's processes read (--offset +90s).
    #[command(
        long_about = super::attack_clock::HELP,
        after_long_help = crate::plan::clock::COVERAGE,
    )]
    ClockSkew(AttackArgs<ClockSkewParams>),

    /// Delay what the target sends or receives (fixed + jitter), as netem does.
    #[command(
        long_about = net::DELAY_HELP, after_long_help = net::COMMON_HELP,
        mut_arg("delay", |a| a.required(true)),
    )]
    NetDelay(AttackArgs<NetEffectParams>),

    /// Limit the bandwidth of what the target sends or receives, as a slower link.
    #[command(long_about = net::RATE_HELP, after_long_help = net::COMMON_HELP, mut_arg("rate", |a| a.required(true)))]
    NetRate(AttackArgs<NetEffectParams>),

    /// Duplicate a share of what the target sends or receives, as netem does.
    #[command(
        long_about = net::DUPLICATE_HELP, after_long_help = net::COMMON_HELP,
        mut_arg("duplicate", |a| a.required(true)),
    )]
    NetDuplicate(AttackArgs<NetEffectParams>),

    /// Corrupt a share of what the target sends or receives (receivers drop it).
    #[command(
        long_about = net::CORRUPT_HELP, after_long_help = net::COMMON_HELP,
        mut_arg("corrupt", |a| a.required(true)),
    )]
    NetCorrupt(AttackArgs<NetEffectParams>),

    /// Let a share of what the target sends or receives overtake the delayed rest.
    #[command(
        long_about = net::REORDER_HELP, after_long_help = net::COMMON_HELP,
        mut_arg("reorder", |a| a.required(true)), mut_arg("delay", |a| a.required(true)),
    )]
    NetReorder(AttackArgs<NetEffectParams>),

    /// Fail the target's new outgoing connections at once (ECONNREFUSED).
    #[command(long_about = super::attack_conn::HELP)]
    NetRefuse(AttackArgs<NetRefuseParams>),

    /// Cut the target off from some networks, both ways, as a pulled cable.
    #[command(long_about = super::attack_partition::HELP)]
    NetPartition(AttackArgs<NetPartitionParams>),

    /// Reset the target's TCP connections: once, or every interval.
    #[command(long_about = super::attack_reset::HELP)]
    NetReset(AttackArgs<NetResetParams>),

    /// Fail the target's DNS lookups of chosen names (NXDOMAIN, SERVFAIL,
    /// REFUSED or no answer).
    #[command(long_about = super::attack_dns::HELP)]
    DnsError(AttackArgs<DnsErrorParams>),

    /// Freeze the target's processes: for the whole attack, or in cycles.
    #[command(long_about = super::attack_pause::HELP)]
    Pause(AttackArgs<PauseParams>),

    /// Give the target at most a share of CPU time (cpu.max).
    #[command(long_about = super::attack_cpu::HELP)]
    CpuStarve(AttackArgs<CpuStarveParams>),

    /// Kill the target's processes (all, the main one, or by name), once
    /// or every interval, and report what restarted them.
    #[command(long_about = super::attack_kill::HELP)]
    Kill(AttackArgs<KillParams>),

    /// Push the target into memory reclaim (memory.high).
    #[command(long_about = super::attack_memory::HELP)]
    MemoryPressure(AttackArgs<MemoryPressureParams>),

    /// Hold the target's disk I/O to a rate (io.max).
    #[command(long_about = super::attack_block::HELP)]
    IoThrottle(AttackArgs<IoThrottleParams>),
}

/// Every attack's flags: the target, the fault's own parameters (its
/// schema, shared with experiment files: see [`super::schema`]), and how
/// long.
#[derive(Debug, Args)]
pub struct AttackArgs<P: Args> {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub params: P,

    #[command(flatten)]
    pub options: AttackOptions,
}

/// `net-loss`'s parameters.
#[derive(Debug, Args)]
pub struct NetLossParams {
    /// Share of matching packets to drop, 0 to 100 (fractions allowed: 0.5).
    #[arg(long, value_name = "PERCENT")]
    pub percent: Percent,

    /// Lose packets in bursts of this many on average, as real links do,
    /// rather than independently: 10% loss in bursts of 4 (`--percent 10
    /// --burst 4`). The long-run share stays --percent. A Gilbert model
    /// (netem's `loss gemodel p r` with r = 1/BURST, p = r·L/(1-L)): burst
    /// and gap lengths are geometric. One chain per direction, shared by
    /// all the target's packets on every CPU. At least 1/(1-L): independent
    /// loss at rate L already has bursts that long.
    #[arg(long, value_name = "PACKETS")]
    pub burst: Option<f64>,

    #[command(flatten)]
    pub filter: NetFilterArgs,
}

impl FaultParams for NetLossParams {
    fn build(&self, _kind: &str, _source: Source) -> std::result::Result<Built, String> {
        if !self.filter.interfaces().is_empty() && !self.filter.direction.egress() {
            return Err("--interface applies to egress, and this attack is ingress only; drop --interface, \
                        or use --direction egress or both"
                .into());
        }
        let loss =
            NetLoss::new(self.percent, self.burst, self.filter.filter(), self.filter.interfaces().to_vec())?;
        Ok(Built { fault: Fault::NetLoss(loss) })
    }
}

/// Which packets a network fault applies to.
#[derive(Debug, Args)]
pub struct NetFilterArgs {
    /// Packets the target sends (egress), receives (ingress), or both.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,

    #[command(flatten)]
    pub peers: PeerArgs,
}

/// Which peers and devices: every network fault's filters but the
/// direction (net-partition has both, always).
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Only packets to (egress) or from (ingress) this network, e.g.
    /// 10.0.0.0/8 or 2001:db8::/32; a bare address means that host.
    /// Repeatable (at most 64): packets of any of the networks.
    #[arg(id = "cidr", long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<Cidr>,

    /// Only packets with this source or destination port.
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub port: Option<u16>,

    /// Only packets of this protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Any)]
    pub protocol: Protocol,

    /// Only on this device of the target's network namespace (repeatable);
    /// egress only. Default: every device, loopback included.
    #[arg(long = "interface", value_name = "DEV")]
    pub interfaces: Vec<String>,
}

impl PeerArgs {
    pub fn filter(&self, direction: Direction) -> NetFilter {
        NetFilter { direction, cidrs: self.cidrs.clone(), port: self.port, protocol: self.protocol }
    }
}

impl NetFilterArgs {
    pub fn filter(&self) -> NetFilter {
        self.peers.filter(self.direction)
    }

    pub fn interfaces(&self) -> &[String] {
        &self.peers.interfaces
    }
}

/// How long, and whether to only plan.
#[derive(Debug, Args)]
pub struct AttackOptions {
    /// How long the fault lasts: 500ms, 30s, 2m, 1h30m (at most 24h). The
    /// kernel ends it at this deadline even if chaos is killed.
    #[arg(long, value_name = "DURATION")]
    pub duration: AttackDuration,

    /// Resolve the target and plan the mechanism, print the plan and the
    /// safety layers it provides, and inject nothing. Works without root:
    /// what cannot be probed unprivileged is reported unknown (give
    /// --capabilities).
    #[arg(long)]
    pub dry_run: bool,

    /// Plan from this capability set (`chaos doctor --json` of the machine
    /// that will run the attack) instead of probing this kernel. Only with
    /// --dry-run: a real attack always probes the kernel it runs on.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub capabilities: Option<PathBuf>,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// A port from 1 to 65535.
pub(super) fn parse_port(text: &str) -> std::result::Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("`{text}` is not a port from 1 to 65535")),
    }
}

impl AttackCommand {
    /// The fault the flags describe, checked; messages name flags.
    pub fn build(&self) -> std::result::Result<Built, String> {
        let cli = Source::CommandLine;
        match self {
            Self::NetLoss(a) => a.params.build("net-loss", cli),
            Self::IoError(a) => a.params.build("io-error", cli),
            Self::ClockSkew(a) => a.params.build("clock-skew", cli),
            Self::NetDelay(a) => a.params.build(NetKind::Delay.name(), cli),
            Self::NetRate(a) => a.params.build(NetKind::Rate.name(), cli),
            Self::NetDuplicate(a) => a.params.build(NetKind::Duplicate.name(), cli),
            Self::NetCorrupt(a) => a.params.build(NetKind::Corrupt.name(), cli),
            Self::NetReorder(a) => a.params.build(NetKind::Reorder.name(), cli),
            Self::NetRefuse(a) => a.params.build("net-refuse", cli),
            Self::NetPartition(a) => a.params.build("net-partition", cli),
            Self::NetReset(a) => a.params.build("net-reset", cli),
            Self::DnsError(a) => a.params.build("dns-error", cli),
            Self::Pause(a) => a.params.build("pause", cli),
            Self::CpuStarve(a) => a.params.build("cpu-starve", cli),
            Self::Kill(a) => a.params.build("kill", cli),
            Self::MemoryPressure(a) => a.params.build("memory-pressure", cli),
            Self::IoThrottle(a) => a.params.build("io-throttle", cli),
        }
    }

    /// What every attack has: its target and its duration.
    fn common(&self) -> (&TargetArgs, &AttackOptions) {
        match self {
            Self::NetLoss(a) => (&a.target, &a.options),
            Self::IoError(a) => (&a.target, &a.options),
            Self::ClockSkew(a) => (&a.target, &a.options),
            Self::NetRefuse(a) => (&a.target, &a.options),
            Self::NetPartition(a) => (&a.target, &a.options),
            Self::NetReset(a) => (&a.target, &a.options),
            Self::DnsError(a) => (&a.target, &a.options),
            Self::Pause(a) => (&a.target, &a.options),
            Self::CpuStarve(a) => (&a.target, &a.options),
            Self::Kill(a) => (&a.target, &a.options),
            Self::MemoryPressure(a) => (&a.target, &a.options),
            Self::IoThrottle(a) => (&a.target, &a.options),
            Self::NetDelay(a)
            | Self::NetRate(a)
            | Self::NetDuplicate(a)
            | Self::NetCorrupt(a)
            | Self::NetReorder(a) => (&a.target, &a.options),
        }
    }

    pub fn run(self) -> Result<ExitCode> {
        let Built { fault } = self.build().map_err(Error::invalid)?;
        let (target, run) = self.common();
        target.check()?;
        if !run.dry_run {
            session::require_root("chaos attack")?;
            return run_one(&self, fault, run);
        }
        let targets = target.resolve()?;
        let consults = Demand::of(&fault).consults();
        let recorded = run.capabilities.as_deref().map(CapabilitySet::load).transpose()?;
        // Probed as the planner asks (nothing until then).
        let probing = Capabilities::new();
        let caps: &dyn Findings = match &recorded {
            Some(set) => set,
            None => &probing,
        };
        // Named as the runner names them: one attack per target.
        let id = format!("{}-1", fault.kind());
        for (i, target) in targets.iter().enumerate() {
            let id = if targets.len() == 1 { id.clone() } else { format!("{id}.{}", i + 1) };
            let attack =
                Attack { id, fault: fault.clone(), target: target.clone(), duration: run.duration.0 };
            dry_run(&attack, caps, run.capabilities.as_deref(), consults)?;
        }
        println!("dry run: nothing was injected");
        Ok(ExitCode::Ok)
    }
}

/// The attack as a one-step experiment on the experiment runner: the same
/// events, reports, metrics and live view as `chaos run`.
fn run_one(attack: &AttackCommand, fault: Fault, run: &AttackOptions) -> Result<ExitCode> {
    let (target, _) = attack.common();
    let exp = Experiment::one_attack(fault, target.selector(), target.allow_host, run.duration.0);
    let output = run.output.open()?;
    let signals = SignalWatch::install().map_err(|e| Error::kernel("installing signal handlers", e))?;
    let options = run.output.run_options(&output, false, None);
    super::run::execute(&exp, &options, &output.events, &signals).map(|(code, _)| code)
}

/// `--dry-run`: the plan, and what it rests on, on stdout; exit 0 when it
/// could be planned (3, with the reason, when not).
fn dry_run(attack: &Attack, caps: &dyn Findings, file: Option<&Path>, consults: &[Capability]) -> Result<()> {
    let source = match file {
        Some(f) => format!("recorded in {} (kernel {})", f.display(), caps.kernel()),
        None => format!("probed here (kernel {})", caps.kernel()),
    };
    let unknown: Vec<String> =
        consults.iter().filter(|c| caps.is_unknown(**c)).map(ToString::to_string).collect();
    println!(
        "{}: {} on {} for {}",
        attack.id,
        attack.fault.kind(),
        attack.target,
        crate::units::format_duration(attack.duration)
    );
    println!("  capabilities: {source}");
    if !unknown.is_empty() {
        println!(
            "  unknown (not probed without root): {}; planned as missing; give --capabilities FILE \
             (from `chaos doctor --json`) to plan with them",
            unknown.join(", ")
        );
    }
    let mechanism = plan(attack, caps)?.mechanism();
    println!("  mechanism: {}", mechanism.describe());
    println!("  safety: {}", safety_text(&mechanism));
    Ok(())
}

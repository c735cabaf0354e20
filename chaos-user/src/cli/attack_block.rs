//! `chaos attack io-throttle`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::faults::{
    Fault, IoThrottle,
    block::{DeviceArg, Limits, parse_bps, parse_iops},
};

/// `io-throttle`'s help.
pub const HELP: &str = "\
Hold the target's reads and writes of a disk to a rate, as on a \
saturated or degraded disk, a cloud volume out of burst credits or a \
busy SAN: every I/O the target sends to the disk waits its turn, so \
queries, fsyncs, log writes and start-ups take longer. Other cgroups' \
I/O to the same disk is not held back.

Block I/O only. What the page cache answers (a file read again, \
written and not yet flushed) never reaches the disk and is not slowed; \
buffered writes are held when they are written back, so a program \
that writes without fsync sees the limit only as its dirty pages fill \
up. Files on tmpfs or a network filesystem are on no disk, and \
chaos refuses them; for a file on overlay (a container's root), it \
names the filesystem of its upper layer, whose disk is the one to \
give. For errors rather than slowness, see io-error.

Mechanism: cgroup v2's io.max of the target cgroup (Linux 4.5, \
block/blk-throttle.c), one line per disk: --read-bps, --write-bps \
(bytes a second: 1M, 512K) and --read-iops, --write-iops (I/Os a \
second); a limit not given stays as the target has it. io.max takes \
whole disks: a partition is refused with its disk's name, and a file \
or directory stands for the whole disk under it. No eBPF and no \
process in the target. The kernel holds no deadline for a limit, so \
chaos records each disk's line before (for `chaos recover`) and starts \
a guardian process, in a session of its own, that restores them at the \
deadline if chaos hangs, at once if chaos dies, and on SIGTERM; chaos \
restores them at once if the guardian dies.

Needs the io controller in the target's parent: `io` listed in the \
parent's cgroup.subtree_control (`echo +io > \
PARENT/cgroup.subtree_control`; systemd does so for units with IO*= \
settings, container runtimes for every container). Refused: a machine \
whose io controller is on a cgroup v1 hierarchy (blkio); the root \
cgroup; chaos's own cgroup or one above it; a limit the target has \
already, or a tighter one (the attack would loosen it).

Counters: the target's I/Os to the disks (matched and injected: every \
one is subject to the limit), the KiB read and written, and the time \
its tasks stalled on I/O (its io.pressure, PSI: stall_ms for some, \
full_stall_ms for all), from the attack's start.

Example: a database's writes to its disk at 1 MiB/s for two minutes:

  chaos attack io-throttle --cgroup /system.slice/postgresql.service \\
      --device /var/lib/postgresql --write-bps 1M --duration 2m";

/// `io-throttle`'s parameters.
#[derive(Debug, Args)]
pub struct IoThrottleParams {
    /// The disk: a device node (/dev/sda, /dev/nvme0n1), its MAJ:MIN
    /// (8:0), or a file or directory on it (the whole disk under it).
    /// Repeat for several disks; each gets the same limits.
    #[arg(long = "device", value_name = "DISK", required = true, value_parser = DeviceArg::parse)]
    pub devices: Vec<DeviceArg>,
    /// Bytes the target may read from the disk a second (1M, 512K).
    #[arg(long, value_name = "BYTES", value_parser = parse_bps)]
    pub read_bps: Option<u64>,
    /// Bytes the target may write to the disk a second (1M, 512K).
    #[arg(long, value_name = "BYTES", value_parser = parse_bps)]
    pub write_bps: Option<u64>,
    /// Reads the target may issue to the disk a second.
    #[arg(long, value_name = "N", value_parser = parse_iops)]
    pub read_iops: Option<u64>,
    /// Writes the target may issue to the disk a second.
    #[arg(long, value_name = "N", value_parser = parse_iops)]
    pub write_iops: Option<u64>,
}

impl FaultParams for IoThrottleParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let limits = Limits {
            read_bps: self.read_bps,
            write_bps: self.write_bps,
            read_iops: self.read_iops,
            write_iops: self.write_iops,
        };
        Ok(Built { fault: Fault::IoThrottle(IoThrottle::new(self.devices.clone(), limits)?) })
    }
}

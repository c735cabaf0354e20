//! `chaos attack cpu-starve`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::faults::{CpuStarve, Fault};

/// `cpu-starve`'s help.
pub const HELP: &str = "\
Give the target's processes at most a share of CPU time, as on an \
overcommitted node or beside a noisy neighbour: they run, but in short \
bursts, so that requests take longer, timeouts fire and work queues up. \
The share is the target's as a whole (all its processes and descendant \
cgroups together), so a target with many threads is starved as much as \
one with a single busy thread; other cgroups are not touched.

Mechanism: cgroup v2's CPU bandwidth control (`cpu.max` of the target \
cgroup, Linux 4.15): in every period of the target's (100 ms unless set) \
its processes run for at most the quota, then wait for the next period. \
--cpus 0.2 is 20 ms of every 100 ms. No eBPF and no stress process: \
nothing runs in the target that the target did not start. The kernel \
holds no deadline for a limit, so chaos records the value before (for \
`chaos recover`) and starts a guardian process, in a session of its own, \
that restores it at the deadline if chaos hangs, at once if chaos dies, \
and on SIGTERM; chaos restores it at once if the guardian dies. Only \
both killed with SIGKILL together leave the limit in place, until `chaos \
recover` or the next chaos start.

Needs the cpu controller in the target's parent: `cpu` listed in the \
parent's cgroup.subtree_control (`echo +cpu > PARENT/cgroup.subtree_control`; \
systemd does so for units with CPUQuota= or CPUWeight=; container runtimes \
do for every container). Refused: a machine whose cpu controller is on \
a cgroup v1 hierarchy; the root cgroup; chaos's own cgroup or one above \
it; a target limited to the share asked or less already (the attack \
would loosen its limit).

Counters: the periods the target ran in (matched), the periods it was \
throttled in (injected), and the time throttled and used, from its \
cpu.stat.

Example: a service gets a fifth of a CPU for two minutes:

  chaos attack cpu-starve --cgroup /system.slice/app.service --cpus 20% \\
      --duration 2m";

/// `cpu-starve`'s parameters.
#[derive(Debug, Args)]
pub struct CpuStarveParams {
    /// At most this much CPU for the whole target: a number of CPUs
    /// (0.25, 1.5) or a percentage of one CPU (25%), at least 1%.
    #[arg(long, value_name = "CPUS")]
    pub cpus: String,
}

impl FaultParams for CpuStarveParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        Ok(Built { fault: Fault::CpuStarve(CpuStarve::parse(&self.cpus)?) })
    }
}

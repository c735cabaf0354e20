//! `chaos attack memory-pressure`: its flags and help text.

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::faults::{Fault, MemoryPressure};

/// `memory-pressure`'s help.
pub const HELP: &str = "\
Push the target into memory reclaim, as when its node runs short of \
memory or a neighbour's cache grows: above the boundary the kernel \
reclaims the target's page cache (its files are read from disk again), \
swaps its anonymous memory where there is swap, and slows each of its \
allocations (up to 2 s each) for as long as it stays above. Nothing is \
killed: memory.high never invokes the OOM killer. How a program copes — \
latency, cache hit rates, its own memory limits — is what the test \
shows.

Mechanism: cgroup v2's memory.high of the target cgroup (Linux 4.5), set \
to --high for the attack: a size, or a share of what the target uses \
when the attack starts (its memory.current). No eBPF and no allocating \
process in the target. The kernel holds no deadline for a limit, so \
chaos records the value before (for `chaos recover`) and starts a \
guardian process, in a session of its own, that restores it at the \
deadline if chaos hangs, at once if chaos dies, and on SIGTERM; chaos \
restores it at once if the guardian dies.

Needs the memory controller in the target's parent: `memory` listed in \
the parent's cgroup.subtree_control (`echo +memory > \
PARENT/cgroup.subtree_control`; systemd and container runtimes enable it \
for their units and containers). Refused: a machine whose memory \
controller is on a cgroup v1 hierarchy; the root cgroup; chaos's own \
cgroup or one above it; a boundary at or above the target's memory.max \
(the OOM killer would act first), or not below its memory.high already \
(the attack would loosen it).

Counters: the times the target went over the boundary (its \
memory.events `high`), the time its tasks stalled on memory (its \
memory.pressure, PSI: stall_ms for some, full_stall_ms for all), and the \
memory reclaimed from it (reclaimed_kib, from memory.stat's pgsteal).

Example: half the memory a service uses, for five minutes:

  chaos attack memory-pressure --cgroup /system.slice/app.service --high 50% \\
      --duration 5m";

/// `memory-pressure`'s parameters.
#[derive(Debug, Args)]
pub struct MemoryPressureParams {
    /// The boundary: a size (256M, 1.5G; K, M, G, T are powers of 1024)
    /// or a share of what the target uses at the start (50%).
    #[arg(long, value_name = "SIZE|PERCENT")]
    pub high: String,
}

impl FaultParams for MemoryPressureParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        Ok(Built { fault: Fault::MemoryPressure(MemoryPressure::parse(&self.high)?) })
    }
}

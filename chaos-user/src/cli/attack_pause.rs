//! `chaos attack pause`: its flags and help text.

use std::time::Duration;

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{Fault, Pause},
    units::parse_duration,
};

/// `pause`'s help.
pub const HELP: &str = "\
Freeze every process of the target, as when its VM is paused, a process \
is stopped in a debugger, or a node stalls in a long garbage collection: \
the processes stay alive and keep their sockets, connections and locks, \
but run no instruction. The kernel still completes TCP handshakes on \
their listening sockets and queues what arrives; nothing is answered \
until they thaw, and then everything queued is handled at once. Timers \
that expired meanwhile fire on thawing.

When: for the whole attack; or in cycles, frozen for --for at the start \
of every --every (`--every 10s --for 2s`: 2 s frozen, 8 s running).

Mechanism: cgroup v2's freezer (`cgroup.freeze` of the target cgroup, \
Linux 5.2), which covers every descendant cgroup. No eBPF: the kernel \
holds no deadline for a frozen cgroup, so chaos records the value before \
(for `chaos recover`) and starts a guardian process, in a session of its \
own, that thaws the target at the deadline if chaos hangs, at once if \
chaos dies, and on SIGTERM; chaos thaws it at once if the guardian dies. \
Only both killed with SIGKILL together leave the target frozen, until \
`chaos recover` or the next chaos start. Refused: the root cgroup, and \
chaos's own cgroup or one above it (chaos and its guardian would freeze \
too); a target someone else froze (its cgroup.freeze is 1 already).

Example: freeze a service for 2 s every 10 s, for five minutes:

  chaos attack pause --cgroup /system.slice/app.service --every 10s --for 2s \\
      --duration 5m";

/// `pause`'s parameters.
#[derive(Debug, Args)]
pub struct PauseParams {
    /// Freeze again at the start of every interval (with --for); without
    /// it, frozen for the whole attack.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,

    /// How long each freeze of --every lasts (at least 10ms, shorter than
    /// --every).
    #[arg(id = "for", long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub frozen: Option<Duration>,
}

impl FaultParams for PauseParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        Ok(Built { fault: Fault::Pause(Pause::new(self.every, self.frozen)?) })
    }
}

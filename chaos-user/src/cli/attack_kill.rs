//! `chaos attack kill`: its flags and help text.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::schema::{Built, FaultParams, Source};
use crate::{
    faults::{Fault, Kill, kill::Signal},
    units::parse_duration,
};

/// `kill`'s help.
pub const HELP: &str = "\
Kill the target's processes, as the OOM killer, an eviction or a crash \
would: all of them, the main one, or those of one name; once at the \
start, or again every --every. What the test is about is usually what \
happens next, so chaos watches the target after each round and reports \
it: when the target had none of the killed processes left, and when a \
new one appeared (systemd's Restart=, a container runtime's restart \
policy, a supervisor), or that the cgroup itself went away (the unit \
stopped, the container removed). A container's runtime removes its \
cgroup when its init dies and makes it again, under the same path with a \
new id, when its restart policy (docker run --restart, podman's) starts \
it again; systemd does the same for a unit: chaos follows the cgroup \
made again at the same path, counts the restart when its first process \
appears, and the next round kills there. So, unlike other faults, a kill \
goes on to its deadline when its cgroup goes away. Keep --every above \
the time the runtime takes to start the container: docker gave up \
restarting one that a round killed while it was being started.

Which: every process of the target and of its descendant cgroups \
(--process all, the default); the main process (--process main: of the \
processes whose parent is outside the target, the oldest: a container's \
init, a service's main process); or those named --name (the process \
name `ps -o comm` shows, at most 15 bytes).

Mechanism: cgroup v2. SIGKILL to every process is one write to the \
target's cgroup.kill (Linux 5.14), which the kernel applies to the whole \
subtree at once, forks racing with it included; otherwise each process \
is signalled through a pidfd opened before its cgroup is checked, so \
that a pid reused meanwhile by a process outside the target is never \
signalled. No eBPF. A kill cannot be undone and needs no undoing: \
nothing is left to restore when chaos stops or dies, and no round \
starts after the deadline. Refused: the root cgroup, and chaos's own \
cgroup or one above it (chaos would kill itself).

Counters: processes signalled (injected) of those found (matched); \
rounds; restarts (rounds after which a killed process was replaced) and \
the time the last one took (restart_ms); removed (times the cgroup went \
away, made again or not).

Example: kill an app's main process every minute for ten minutes, and \
see how soon systemd brings it back:

  chaos attack kill --cgroup /system.slice/app.service --process main \\
      --every 1m --duration 10m";

/// Which processes `--process` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Process {
    /// Every process of the target and its descendants.
    All,
    /// The oldest process whose parent is outside the target.
    Main,
}

/// `kill`'s parameters.
#[derive(Debug, Args)]
pub struct KillParams {
    /// Which processes: all of them, or the main one.
    #[arg(long, value_name = "WHICH", value_enum, default_value = "all")]
    pub process: Process,

    /// Only the processes with this name (as `ps -o comm` shows it). In
    /// experiment files: `process-name` (a step's `name` is its id).
    #[arg(id = "process_name", long = "name", value_name = "NAME")]
    pub process_name: Option<String>,

    /// The signal: KILL, TERM, INT, HUP, QUIT, ABRT, SEGV, USR1 or USR2.
    #[arg(long, value_name = "SIGNAL", default_value = "KILL")]
    pub signal: String,

    /// Kill again every interval (at least 100ms) until the attack ends;
    /// without it, once at the start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
}

impl FaultParams for KillParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let signal = Signal::parse(&self.signal)?;
        let fault =
            Kill::new(self.process == Process::Main, self.process_name.as_deref(), signal, self.every)?;
        Ok(Built { fault: Fault::Kill(fault) })
    }
}

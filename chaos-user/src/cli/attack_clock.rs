//! `chaos attack clock-skew`: its flags and help text (the subcommand is a
//! variant in attack.rs).

use clap::Args;

use super::schema::{Built, FaultParams, Source};
use crate::faults::{ClockSkew, Fault, Offset, SkewClock};

/// `clock-skew`'s help, before the coverage (plan::clock::COVERAGE).
pub const HELP: &str = "\
Shift what the target's processes read as the time of day by a fixed \
offset, without ptrace and without touching the host's clock: other \
processes, the kernel's timers and the host's clock keep the true time.

How: eBPF programs write the shifted time into the memory of the calling \
process after the kernel (or its vDSO) wrote the true one, with \
bpf_probe_write_user. Kernel lockdown (integrity, the default under Secure \
Boot; see /sys/kernel/security/lockdown) forbids that helper: there \
clock-skew is refused, and `chaos doctor` says so. Processes outside the \
target are never written to; their clock reads through the vDSO are \
untouched, and their clock system calls (rare where the clocksource serves \
the vDSO) pay a rule lookup. The system calls are hooked by fexit programs \
where the kernel has BPF trampolines; elsewhere by tracepoints, which make \
every system call on the machine take the kernel's slower tracing path \
while the attack runs.

Ending: when the attack ends, however it ends (its duration, SIGINT or \
SIGTERM, the kernel-side deadline in the rule if chaos hangs, kill -9 of \
chaos, which closes the fd-owned links), the next read in the target is the \
true time.

Example: the containers of a pod live 400 days in the future (certificates \
expire), for five minutes:

  chaos attack clock-skew --cgroup /kubepods.slice/kubepods-pod42.slice \\
      --offset +400d --duration 5m

What is shifted and what is not:";

/// `clock-skew`'s parameters.
#[derive(Debug, Args)]
pub struct ClockSkewParams {
    /// How far the target's clocks move: a sign and a duration, e.g. +90s,
    /// -2h, +400d, -1h30m (units ms, s, m, h, d; at most 100 years either
    /// way, never before 1970).
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub offset: Offset,

    /// Which clocks, comma-separated: realtime (CLOCK_REALTIME and its
    /// _COARSE and _ALARM variants, gettimeofday, time), tai (CLOCK_TAI)
    /// [default: realtime]. monotonic and boottime are refused (see above).
    #[arg(long, value_name = "CLOCKS", value_delimiter = ',', value_parser = parse_clock)]
    pub clocks: Vec<SkewClock>,
}

fn parse_clock(s: &str) -> std::result::Result<SkewClock, String> {
    s.parse()
}

impl FaultParams for ClockSkewParams {
    fn build(&self, _kind: &str, _source: Source) -> Result<Built, String> {
        let fault = ClockSkew::new(self.offset, self.clocks.clone())?;
        Ok(Built { fault: Fault::ClockSkew(fault) })
    }
}

//! `./x bench [WHICH] [--kernel K]`: build, then run a benchmark (see
//! bench/README.md) on this kernel or inside a VM on one of Debian's.

use std::process::Command;

use crate::{build, kernels::Kernel, vm};

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark: `net` (untargeted cost, start/stop latency),
    /// `net-delay` (delay, rate, duplication, corruption against netem),
    /// `io` (io-error against strace --inject), `clock` (clock-skew against
    /// libfaketime), `conn` (net-refuse's cost for calls it does not refuse,
    /// against an iptables REJECT rule), `dns` (dns-error's cost for the
    /// lookups it leaves alone, against a filtering DNS proxy).
    #[arg(default_value = "net", value_parser = ["net", "net-delay", "io", "clock", "conn", "dns"])]
    which: String,
    /// Where to run it. Default: the host for `net`, `conn` and `dns`, Debian 6.12
    /// in a VM for the others (they need fq, netem, the `bpf` LSM or
    /// bpf_probe_write_user, which this host's kernel lacks).
    #[arg(long)]
    kernel: Option<Kernel>,
    /// Kill the VM after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let default =
        if ["net", "conn", "dns"].contains(&args.which.as_str()) { Kernel::Host } else { Kernel::Debian6_12 };
    let kernel = args.kernel.unwrap_or(default);
    if kernel != Kernel::Host {
        let command = ["chaos-integration", "bench", &args.which].map(String::from).to_vec();
        return vm::run_task(vm::Args::new(kernel, args.timeout, command));
    }
    let bins = build::release()?;
    Ok(Command::new(&bins.integration)
        .args(["bench", &args.which])
        .env("CHAOS_BIN", &bins.chaos)
        .status()?
        .success())
}

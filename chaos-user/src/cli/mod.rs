//! The `chaos` command line: one file per subcommand. Doc comments here are
//! the `--help` text.

pub mod attack;
mod attack_block;
mod attack_clock;
mod attack_conn;
mod attack_cpu;
mod attack_dns;
mod attack_io;
mod attack_kill;
mod attack_memory;
mod attack_net;
mod attack_partition;
mod attack_pause;
mod attack_reset;
pub mod demo;
pub mod doctor;
#[cfg(test)]
pub(crate) mod fuzz;
mod output;
pub mod recover;
pub mod run;
pub mod schema;
mod target;
pub mod targets;
pub mod validate;

use clap::{Parser, Subcommand};
pub use target::TargetArgs;

use crate::error::{ExitCode, Result};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (an attack ran to its end; `run`: the hypothesis held)
  1  `run`: the hypothesis was violated
  2  aborted by a signal or a safety condition; every fault was rolled back
     (`run`: also when the steady state did not hold before injecting:
     nothing was injected)
  3  invalid input or environment (bad flag or file, missing target, not root,
     kernel lacks a mechanism); nothing was injected
  4  the target is already under attack by another chaos process
  5  internal or kernel error while injecting; what was injected was rolled back";

/// Kernel-level fault injection for exactly one cgroup: a container, a pod,
/// a systemd unit or a process tree.
///
/// eBPF programs drop packets (and, as they land: delay them, fail I/O,
/// skew clocks) for the processes of one cgroup subtree only. Every fault
/// carries its own deadline in the kernel, so it ends on time even if chaos
/// itself is killed.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Log level for messages on stderr (error, warn, info, debug, trace),
    /// or a tracing filter such as `chaos=debug`.
    #[arg(long, global = true, default_value = "info", env = "CHAOS_LOG")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one attack from the command line.
    #[command(subcommand)]
    Attack(Box<attack::AttackCommand>),
    // Doctor, Targets, Recover, Run, Validate and Demo take their help from
    // their argument structs' doc comments (a doc comment here would
    // replace it).
    Doctor(doctor::DoctorArgs),
    Targets(targets::TargetsArgs),
    Recover(recover::RecoverArgs),
    Run(run::RunArgs),
    Validate(validate::ValidateArgs),
    Demo(demo::DemoArgs),
    /// The demo's HTTP service (started by `chaos demo` in its sandbox).
    #[command(hide = true)]
    DemoService(demo::DemoServiceArgs),
    /// An attack's guardian (started by chaos itself: see
    /// chaos-user/src/guardian.rs).
    #[command(hide = true)]
    Guardian,
}

impl Command {
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Self::Attack(a) => a.run(),
            Self::Doctor(d) => d.run(),
            Self::Targets(t) => t.run(),
            Self::Recover(r) => r.run(),
            Self::Run(r) => r.run(),
            Self::Validate(v) => v.run(),
            Self::Demo(d) => d.run(),
            Self::DemoService(s) => s.run(),
            Self::Guardian => crate::guardian::run()
                .map(|()| ExitCode::Ok)
                .map_err(|e| crate::error::Error::kernel("the guardian", e)),
        }
    }
}

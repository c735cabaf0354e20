//! `./x bench [net]`: build, then run the benchmarks (see bench/README.md).

use std::process::Command;

use crate::build;

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark (net).
    #[arg(default_value = "net")]
    which: String,
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let bins = build::release()?;
    Ok(Command::new(&bins.integration)
        .args(["bench", &args.which])
        .env("CHAOS_BIN", &bins.chaos)
        .status()?
        .success())
}

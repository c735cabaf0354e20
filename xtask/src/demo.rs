//! `./x demo`: build, then `chaos demo`.

use std::process::Command;

use crate::build;

#[derive(clap::Args)]
pub struct Args {
    /// Passed to `chaos demo`.
    rest: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let bins = build::release()?;
    Ok(Command::new(&bins.chaos).arg("demo").args(&args.rest).status()?.success())
}

//! `./x bench`: see bench/README.md.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<bool> {
    anyhow::bail!("not yet")
}

//! Building the workspace.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, ensure};

/// The repository root (xtask's parent).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

/// `cargo <args>` at the root; fail on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("cargo").args(args).current_dir(root()).status().context("running cargo")?;
    ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// The built binaries.
pub struct Binaries {
    pub chaos: PathBuf,
    pub integration: PathBuf,
}

/// Build the release binaries.
pub fn release() -> anyhow::Result<Binaries> {
    // chaos-kube: the agent, which the kube:: tests run next to the test
    // binary, as they run chaos.
    cargo(&[
        "build",
        "--release",
        "--package",
        "chaos-user",
        "--package",
        "chaos-kube",
        "--package",
        "chaos-integration",
    ])?;
    let dir = root().join("target/release");
    Ok(Binaries { chaos: dir.join("chaos"), integration: dir.join("chaos-integration") })
}

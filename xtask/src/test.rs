//! `./x test`: lints, unit tests, and the privileged integration tests on
//! this kernel; one summary at the end.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context;

use crate::{
    build::{self, root},
    summary::{Counts, Summary, parse_libtest},
};

#[derive(clap::Args)]
pub struct Args {
    /// Only integration tests whose name contains one of these.
    filters: Vec<String>,
    /// Skip lints and unit tests.
    #[arg(long)]
    integration_only: bool,
}

/// The eBPF toolchain (see scripts/setup.sh).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-08-01";

pub fn run(args: Args) -> anyhow::Result<bool> {
    let mut summary = Summary::default();
    if !args.integration_only {
        lints(&mut summary)?;
        unit(&mut summary)?;
    }
    let bins = build::release()?;
    host(&mut summary, &bins, &args.filters)?;
    summary.print();
    Ok(summary.total().failed == 0)
}

/// Run a command; count it as one passed or failed check.
fn check(summary: &mut Summary, section: &str, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("== {name}");
    let t = Instant::now();
    let ok = cmd.current_dir(root()).status().with_context(|| format!("running {name}"))?.success();
    if !ok {
        eprintln!("!! {name} FAILED");
    }
    summary.record(section, Counts::one(if ok { "passed" } else { "failed" }), t.elapsed().as_secs_f64());
    Ok(())
}

fn lints(summary: &mut Summary) -> anyhow::Result<()> {
    check(summary, "lint", "cargo fmt --check", Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    check(
        summary,
        "lint",
        "cargo clippy (host)",
        Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    check(
        summary,
        "lint",
        "cargo clippy (eBPF)",
        Command::new("rustup").args([
            "run",
            EBPF_TOOLCHAIN,
            "cargo",
            "clippy",
            "--package",
            "chaos-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

fn unit(summary: &mut Summary) -> anyhow::Result<()> {
    eprintln!("== unit tests");
    let t = Instant::now();
    let out = Command::new("cargo")
        .args(["test"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let mut counts = parse_libtest(&text);
    if !out.status.success() && counts.failed == 0 {
        counts.failed = 1; // a build failure: count it
    }
    summary.record("unit", counts, t.elapsed().as_secs_f64());
    Ok(())
}

/// The kernel label the doctor expectations are keyed by.
fn host_kernel_label() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mm: Vec<&str> = release.trim().split('.').take(2).collect();
    format!("host-{}", mm.join("."))
}

fn host(summary: &mut Summary, bins: &build::Binaries, filters: &[String]) -> anyhow::Result<()> {
    let label = host_kernel_label();
    eprintln!("== integration tests on {label}");
    let t = Instant::now();
    let mut child = Command::new(&bins.integration)
        .arg("--json")
        .args(filters)
        .env("CHAOS_BIN", &bins.chaos)
        .env("CHAOS_KERNEL", &label)
        .stdout(Stdio::piped())
        .spawn()
        .context("running the integration tests")?;
    let mut counts = Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            counts.add(Counts::one(v["outcome"].as_str().unwrap_or("failed")));
        }
    }
    let ok = child.wait()?.success();
    if !ok && counts.failed == 0 {
        counts.failed = 1;
    }
    summary.record(&label, counts, t.elapsed().as_secs_f64());
    Ok(())
}

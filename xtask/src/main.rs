//! Developer tasks, run through `./x` (which installs toolchains first).
//!
//! One file per task. Everything here shells out to cargo and to the built
//! binaries; the product's logic lives in chaos-user.

mod bench;
mod build;
mod demo;
mod kernels;
mod matrix;
mod summary;
mod test;
mod vm;

use clap::{Parser, Subcommand};

/// chaos developer tasks.
#[derive(Parser)]
#[command(name = "./x")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the demo: a sandboxed service, an experiment against it, a
    /// verdict; the sandbox is removed afterwards.
    Demo(demo::Args),
    /// The whole test suite: lints, unit tests, and the integration tests
    /// on this kernel and in VMs on Debian's 5.10, 6.1, 6.12 and 7.2 kernels
    /// (a reduced tier on 5.10 and 7.2: see matrix::REDUCED); ends with
    /// a table (a row per kernel) and `N passed, N failed, N skipped`.
    Test(test::Args),
    /// Boot a VM on one of Debian's kernels and run a command in it (by
    /// default `chaos doctor`), e.g. `./x vm --kernel debian-6.1 -- chaos
    /// doctor`.
    Vm(vm::Args),
    /// Build the release binaries (target/release/chaos and the test runner).
    Build,
    /// Benchmarks: tables of ratios against a baseline measured in the same
    /// run (see bench/README.md).
    Bench(bench::Args),
    /// Install toolchains and packages (./x does this before every task).
    Setup,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo(a) => demo::run(a),
        Task::Test(a) => test::run(a),
        Task::Vm(a) => vm::run_task(a),
        Task::Build => build::release().map(|_| true),
        Task::Bench(a) => bench::run(a),
        Task::Setup => Ok(true),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("x: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

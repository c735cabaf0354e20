//! `./x test`: lints, unit tests, and the privileged integration tests on
//! this kernel and in VMs on Debian's kernels; one summary at the end.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    build::{self, root},
    kernels::Kernel,
    matrix,
    summary::{Counts, Summary, parse_libtest},
    vm,
};

#[derive(clap::Args)]
pub struct Args {
    /// Only integration tests whose name contains one of these (e.g.
    /// `net_loss` or `safety::ends_on_sigint`); on every kernel asked for,
    /// in place of the reduced tier 5.10 and 7.2 run by default (see
    /// matrix::REDUCED). Implies --integration-only.
    filters: Vec<String>,
    /// Only these kernels (repeatable); default: all of them. Implies
    /// --integration-only.
    #[arg(long = "kernel", value_name = "KERNEL")]
    kernels: Vec<Kernel>,
    /// Skip lints and unit tests.
    #[arg(long)]
    integration_only: bool,
    /// Kill a VM that has not finished after this many seconds (its kernel
    /// then counts one failure, with the console's last lines printed). The
    /// whole suite takes 13 to 40 minutes per VM under TCG on 2 cores (the
    /// kill-point torture alone 7 to 11), depending on the machine.
    #[arg(long, value_name = "SECONDS", env = "CHAOS_VM_TIMEOUT", default_value_t = 3600)]
    vm_timeout: u64,
    /// How many VMs run at once. Each VM's emulated CPUs share one host
    /// thread, so the default, one per host CPU, keeps every core busy
    /// without two VMs sharing one.
    #[arg(long, value_name = "N", env = "CHAOS_VM_JOBS")]
    vm_jobs: Option<usize>,
    /// Kill a VM whose tests printed nothing for this many seconds: a hung
    /// test or kernel, found long before --vm-timeout.
    #[arg(long, value_name = "SECONDS", env = "CHAOS_VM_IDLE_TIMEOUT", default_value_t = 300)]
    vm_idle_timeout: u64,
    /// The long kill-point torture: 1000 kill points per fault family and
    /// kernel instead of the default 30 (sets CHAOS_TORTURE_POINTS; hours
    /// under TCG — combine with a kernel and a `torture` filter).
    #[arg(long)]
    soak: bool,
}

/// The eBPF toolchain (see scripts/setup.sh).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-08-01";

pub fn run(args: Args) -> anyhow::Result<bool> {
    if args.soak {
        // SAFETY: no other thread runs yet; the variable reaches the host
        // test runner and, through vm::guest_env, every VM.
        unsafe { std::env::set_var("CHAOS_TORTURE_POINTS", "1000") };
    }
    let mut summary = Summary::default();
    // Selecting a kernel or a test is for iterating on the integration
    // tests: lints and unit tests do not depend on the kernel.
    let selective = !args.filters.is_empty() || !args.kernels.is_empty();
    if !args.integration_only && !selective {
        lints(&mut summary)?;
        unit(&mut summary)?;
    }
    let t = Instant::now();
    let bins = build::release()?;
    summary.record("build", Counts::default(), t.elapsed().as_secs_f64());
    let kernels: Vec<Kernel> = if args.kernels.is_empty() {
        Kernel::ALL.to_vec()
    } else {
        Kernel::ALL.into_iter().filter(|k| args.kernels.contains(k)).collect()
    };
    let vm = vm::Options {
        timeout: Duration::from_secs(args.vm_timeout),
        idle_timeout: Some(Duration::from_secs(args.vm_idle_timeout)),
        echo_console: false,
        append: Vec::new(),
    };
    let jobs = args.vm_jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    matrix::run(&mut summary, &kernels, &bins, &args.filters, &vm, jobs)?;
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
        // Without the eBPF objects (empty ones, see chaos-user/build.rs):
        // lints do not need them, and building them for this profile took
        // a minute; the eBPF crate gets its own lint below.
        Command::new("cargo")
            .args(["clippy", "--all-targets", "--", "-D", "warnings"])
            .env("AYA_BUILD_SKIP", "1"),
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
    )?;
    // deploy/'s manifests against the Kubernetes API's own schemas, offline
    // (setup.sh installs the tools): the oldest release chaos-kube is built
    // for (k8s-openapi's `earliest`) and the newest the validator knows.
    // The custom resources' own objects are checked by chaos-kube's unit
    // tests, against the CRDs generated there.
    let tools = crate::kernels::cache_dir().join("kube-tools/bin");
    if !tools.join("kubernetes-validate").is_file() {
        eprintln!("!! {} is missing: `sudo ./x setup` installs it", tools.display());
        summary.record("lint", Counts { failed: 1 + KUBERNETES_VERSIONS.len(), ..Counts::default() }, 0.0);
    } else {
        for version in KUBERNETES_VERSIONS {
            check(
                summary,
                "lint",
                &format!("kubernetes-validate {version} (deploy/)"),
                Command::new(tools.join("kubernetes-validate"))
                    .args(["--strict", "--quiet", "-k", version])
                    .args(MANIFESTS),
            )?;
        }
        // The Helm chart: `helm lint --strict`, rendered with its defaults
        // into deploy/'s objects, every object valid, every setting in
        // effect (the script says how without the helm binary).
        let mut chart = Command::new(tools.join("python3"));
        chart.arg("scripts/check-chart.py");
        for version in KUBERNETES_VERSIONS {
            chart.args(["--kubernetes", version]);
        }
        check(summary, "lint", "helm chart (deploy/chart)", &mut chart)?;
    }
    // The scripts users run as they are, though not run here (deploy/e2e.sh
    // needs a cluster): shellcheck, which setup.sh installs.
    check(summary, "lint", "shellcheck (deploy/)", Command::new("shellcheck").args(SCRIPTS))?;
    Ok(())
}

/// deploy/'s scripts.
const SCRIPTS: &[&str] = &["deploy/e2e.sh"];

/// deploy/'s manifests of built-in kinds.
const MANIFESTS: &[&str] = &["deploy/crds.yaml", "deploy/agent.yaml", "deploy/controller.yaml"];

/// The Kubernetes releases deploy/ is validated against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

fn unit(summary: &mut Summary) -> anyhow::Result<()> {
    eprintln!("== unit tests");
    let t = Instant::now();
    // Unit tests that need root are `#[ignore]`d with the reason, so that a
    // plain `cargo test` shows them as ignored rather than passed; as root
    // (CI is), they run here.
    // SAFETY: geteuid has no preconditions.
    let root_args: &[&str] = if unsafe { libc::geteuid() } == 0 { &["--", "--include-ignored"] } else { &[] };
    // In the release profile, like the binaries built next: they then share
    // every dependency and the eBPF objects (built once per profile by
    // chaos-user/build.rs), which saved about three minutes of the suite
    // (2026-12-02, fresh clone: 5m56 s + 1m18 s against 3m26 s + 6m28 s).
    let out = Command::new("cargo")
        .args(["test", "--release"])
        .args(root_args)
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

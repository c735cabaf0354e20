//! io-error: what the LSM programs cost calls they do not target, and how
//! injecting compares with ptrace-based injection (`strace --inject`).
//!
//! 1. Untargeted: a process in the *sibling* cgroup reads one byte with
//!    pread(2) from a file under the attacked prefix, as fast as it can,
//!    with no hook attached vs. while the target cgroup is under a 50% EIO
//!    attack on every operation (both programs attached: every sibling read
//!    runs `file_permission`, looks its cgroup up, finds no rule).
//! 2. Targeted: a process in the target reads the same way while every read
//!    fails with EIO — injected by chaos, or by `strace --inject` (ptrace,
//!    seccomp-filtered to pread64, `-P` for the same path filter) — next to
//!    the same loop with no fault.
//!
//! Rounds alternate (baseline, treatment, ...) and the table shows medians.

use std::{process::Command, time::Duration};

use super::{median, program_ns};
use crate::{
    fixtures::runner::ChaosRun,
    helpers::io::{self, Calls},
    tests::io_error::World,
};

const ROUNDS: usize = 7;
const SECONDS: &str = "2";

pub fn run() -> anyhow::Result<()> {
    let caps = chaos::capabilities::Capabilities::new();
    let lsm = caps.detect(chaos::capabilities::Capability::BpfLsm);
    anyhow::ensure!(
        lsm.available,
        "io-error needs BPF LSM, unavailable here ({}); run the benchmark in a VM: \
         sudo ./x bench io (it boots Debian 6.12)",
        lsm.detail
    );
    let w = World::new()?;
    let f = w.path("data/f");
    println!("io-error benchmarks, {ROUNDS} alternating rounds of {SECONDS} s each, medians");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}\n", kernel.trim());
    let reads = |place| -> anyhow::Result<f64> {
        Ok(io::run(place, &["--op", "read", "--path", &f, "--seconds", SECONDS])?.per_second())
    };

    // Per round: the sibling with no hook, with an empty hook (chaos's
    // file_permission program attached, no rule anywhere: what the LSM
    // trampoline alone costs), and beside an attack on the target.
    let (mut base, mut empty, mut hooked) = (vec![], vec![], vec![]);
    let (mut empty_ratio, mut hooked_ratio) = (vec![], vec![]);
    let (mut empty_ns, mut hooked_ns) = (vec![], vec![]);
    let (mut clean, mut chaos, mut strace, mut speedup) = (vec![], vec![], vec![], vec![]);
    let have_strace = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    for _ in 0..ROUNDS {
        let b = reads(w.sibling())?;
        let hook = empty_hook()?;
        let e = reads(w.sibling())?;
        drop(hook);
        let run = start(&w, "50", None)?;
        let h = reads(w.sibling())?;
        stop(run)?;
        let b2 = reads(w.sibling())?;
        // Against the mean of the baselines around them: slow drifts of a
        // shared machine cancel out.
        let b_mean = (b + b2) / 2.0;
        base.extend([b, b2]);
        empty.push(e);
        hooked.push(h);
        empty_ratio.push(e / b_mean);
        hooked_ratio.push(h / b_mean);
        empty_ns.push((1.0 / e - 1.0 / b_mean) * 1e9);
        hooked_ns.push((1.0 / h - 1.0 / b_mean) * 1e9);

        clean.push(reads(w.target())?);
        let run = start(&w, "100", Some("read"))?;
        let c = io::run(w.target(), &["--op", "read", "--path", &f, "--seconds", SECONDS])?;
        stop(run)?;
        anyhow::ensure!(c.failed() == c.calls, "chaos: {} of {} reads failed", c.failed(), c.calls);
        chaos.push(c.per_second());
        if have_strace {
            let s = strace_reads(&w, &f)?.per_second();
            strace.push(s);
            speedup.push(c.per_second() / s);
        }
    }

    let (b, e, h) = (median(base), median(empty), median(hooked));
    println!("untargeted: sibling cgroup, pread(1 byte) on a file under the attacked path");
    println!("{:<50} {:>12} {:>8}", "", "calls/s", "ratio");
    println!("{:<50} {:>12.0} {:>8}", "no hook", b, "");
    println!(
        "{:<50} {:>12.0} {:>8.3}",
        "empty hook (file_permission program, no rule)",
        e,
        median(empty_ratio)
    );
    println!(
        "{:<50} {:>12.0} {:>8.3}",
        "target under io-error (both hooks attached)",
        h,
        median(hooked_ratio)
    );
    println!("{:<50} {:>12.0}", "ns added per call: empty hook", median(empty_ns));
    println!("{:<50} {:>12.0}", "ns added per call: chaos (rule on another cgroup)", median(hooked_ns));
    println!("ratio = median over rounds of (calls/s) / (no-hook calls/s around it); goal >= 0.97\n");

    // The programs' own time per call (kernel.bpf_stats_enabled: run time
    // and count per program), free of the throughput noise: what chaos's
    // checks cost next to an empty program, with the trampoline left out.
    let hook = empty_hook()?;
    let empty_prog = program_ns("io_rw", || reads(w.sibling()).map(drop))?;
    drop(hook);
    let run = start(&w, "50", None)?;
    let untargeted_prog = program_ns("io_rw", || reads(w.sibling()).map(drop))?;
    stop(run)?;
    let run = start(&w, "100", Some("read"))?;
    let targeted_prog = program_ns("io_rw", || reads(w.target()).map(drop))?;
    stop(run)?;
    println!("program time per call (bpf_stats run_time / run_cnt; trampoline not included)");
    println!("{:<50} {:>12.0}", "ns: empty io_rw (no rule)", empty_prog);
    println!("{:<50} {:>12.0}", "ns: io_rw, call of another cgroup", untargeted_prog);
    println!("{:<50} {:>12.0}", "ns: io_rw, target's call (path walk, inject)", targeted_prog);
    println!();

    let (c0, c1) = (median(clean), median(chaos));
    println!("targeted: the target's pread(1 byte) failing with EIO, every call");
    println!("{:<50} {:>12} {:>8}", "", "calls/s", "chaos/x");
    println!("{:<50} {:>12.0} {:>8}", "no fault (baseline)", c0, "");
    println!("{:<50} {:>12.0} {:>8}", "chaos io-error (BPF LSM)", c1, "");
    if have_strace {
        println!(
            "{:<50} {:>12.0} {:>7.0}x",
            "strace --inject (ptrace, seccomp-bpf, -P)",
            median(strace),
            median(speedup)
        );
        println!("chaos/x = median over rounds of chaos calls/s / strace calls/s; goal >= 50x");
    } else {
        println!("(strace not installed: apt-get install strace)");
    }
    println!("(FUSE: not measured; no FUSE fault layer is installed here)");
    Ok(())
}

/// chaos's `io_rw` program attached to `lsm/file_permission` with no rule
/// in its maps (it returns after one array lookup): the cost of having the
/// hook at all. Detached when dropped.
fn empty_hook() -> anyhow::Result<aya::Ebpf> {
    use aya::programs::Lsm;
    let mut ebpf = chaos::ebpf::load_faults(&Default::default())?;
    let btf = aya::Btf::from_sys_fs()?;
    let prog: &mut Lsm =
        ebpf.program_mut("io_rw").ok_or_else(|| anyhow::anyhow!("no io_rw program"))?.try_into()?;
    prog.load("file_permission", &btf)?;
    prog.attach()?;
    Ok(ebpf)
}

fn start(w: &World, percent: &str, ops: Option<&str>) -> anyhow::Result<ChaosRun> {
    let data = w.data.display().to_string();
    let mut args = vec![
        "attack",
        "io-error",
        "--cgroup",
        &w.target.rel,
        "--path",
        &data,
        "--errno",
        "EIO",
        "--percent",
        percent,
        "--duration",
        "10m",
    ];
    if let Some(o) = ops {
        args.extend(["--operations", o]);
    }
    let mut run = ChaosRun::start(&args)?;
    run.wait_event("start", Duration::from_secs(60))?;
    Ok(run)
}

fn stop(run: ChaosRun) -> anyhow::Result<()> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(30))?;
    anyhow::ensure!(ended.event("abort").is_some(), "no abort event: {}", ended.stderr);
    Ok(())
}

/// The same read loop under `strace --inject`, in the target cgroup.
fn strace_reads(w: &World, f: &str) -> anyhow::Result<Calls> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "--seccomp-bpf",
        "-e",
        "trace=pread64",
        "-e",
        "inject=pread64:error=EIO",
        "-P",
        f,
        "--",
    ])
    .arg(exe)
    .args(["helper", "io-calls", "--op", "read", "--path", f, "--seconds", SECONDS]);
    let c = io::run_command(w.target(), &mut cmd)?;
    anyhow::ensure!(c.failed() == c.calls, "strace: {} of {} reads failed", c.failed(), c.calls);
    Ok(c)
}

//! clock-skew: what a clock read costs, in ns per call, measured by the C
//! program the tests compile (tests::clock_skew::CLOCKPROBE_C, `bench MS`):
//! calls in a loop for MS milliseconds, timed with CLOCK_MONOTONIC, for glibc's
//! clock_gettime(CLOCK_REALTIME), gettimeofday() and time(), the raw
//! clock_gettime system call, and getppid() (any other system call).
//!
//! 1. Untargeted: the program in the *sibling* cgroup, with no attack vs.
//!    while the target is under clock-skew (every hook attached), with the
//!    system calls hooked by fexit (the default where BPF trampolines work)
//!    and by tracepoints (the fallback); and, as a control, while chaos runs
//!    an attack that hooks no clock (net-loss at 0%), which separates what
//!    the hooks cost from what a running loader costs a small VM.
//! 2. Targeted, next to libfaketime (LD_PRELOAD) on the same program in the
//!    same run: no fault; libfaketime; chaos on a process started during
//!    the attack (vDSO detached: system calls, shifted when they return),
//!    with fexit and with tracepoints; chaos on a process that was running
//!    before it (its vDSO, and the uprobe on glibc's clock_gettime).
//!
//! Rounds alternate and the tables show medians.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::median;
use crate::{
    fixtures::{process::Place, runner::ChaosRun},
    tests::clock_skew::{Served, World, true_ns},
};

const ROUNDS: usize = 5;
/// Milliseconds each kind of call is timed over, per run.
const MS: &str = "400";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const COLUMNS: [(&str, &str); 5] = [
    ("libc_realtime", "clock_gettime"),
    ("gettimeofday", "gettimeofday"),
    ("time", "time"),
    ("syscall_realtime", "syscall"),
    ("getppid", "getppid"),
];

pub fn run() -> anyhow::Result<()> {
    let caps = chaos::capabilities::Capabilities::new();
    for needed in
        [chaos::capabilities::Capability::ProbeWriteUser, chaos::capabilities::Capability::CgroupAncestor]
    {
        let found = caps.detect(needed).clone();
        anyhow::ensure!(
            found.available,
            "clock-skew cannot run on this kernel ({needed}: {}); run the benchmark in a VM: \
             sudo ./x bench clock (it boots Debian 6.12)",
            found.detail
        );
    }
    let fexit = caps.detect(chaos::capabilities::Capability::Fentry).available;
    let w = World::new()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    println!("clock-skew benchmarks, {ROUNDS} alternating rounds, each call timed over {MS} ms per run");
    println!("kernel {}, clocksource {}, medians in ns per call\n", kernel.trim(), clocksource.trim());
    let faketime = Path::new(LIBFAKETIME).exists();
    if faketime {
        let shift = faketime_shift(&w)?;
        println!("libfaketime ({LIBFAKETIME}, FAKETIME=+90): the program reads {shift:+.3} s\n");
    }

    let names = [
        "untargeted",
        "untargeted, attack (fexit)",
        "untargeted, attack (tracepoint)",
        "untargeted, control (net-loss 0%)",
        "no fault",
        "libfaketime",
        "chaos new (fexit)",
        "chaos new (tracepoint)",
        "chaos running (uprobe)",
    ];
    // (hook, row untargeted, row new); the control has no row "new".
    let hooks: &[(&str, usize, Option<usize>)] = if fexit {
        &[("fexit", 1, Some(6)), ("tracepoint", 2, Some(7)), ("control", 3, None)]
    } else {
        &[("tracepoint", 2, Some(7)), ("control", 3, None)]
    };
    let mut rows: Vec<Vec<Value>> = vec![Vec::new(); names.len()];
    for round in 0..ROUNDS {
        rows[0].push(bench(w.sibling(), &w, false)?);
        rows[4].push(bench(w.target(), &w, false)?);
        if faketime {
            rows[5].push(bench(w.target(), &w, true)?);
        }
        for (i, &(hook, untargeted, new)) in hooks.iter().enumerate() {
            let mut running = Served::start(w.target(), w.probe(&["benchserve", MS]))?;
            let control =
                ["attack", "net-loss", "--cgroup", &w.target.rel, "--percent", "0", "--duration", "10m"];
            let skew =
                ["attack", "clock-skew", "--cgroup", &w.target.rel, "--offset", "+90s", "--duration", "10m"];
            let mut attack = match new {
                None => ChaosRun::start(&control)?,
                Some(_) => ChaosRun::start_with_env(&skew, &[("CHAOS_CLOCK_SYSCALLS", hook)])?,
            };
            attack.wait_event("start", Duration::from_secs(90))?;
            let result = (|| -> anyhow::Result<()> {
                rows[untargeted].push(bench(w.sibling(), &w, false)?);
                if let Some(new) = new {
                    rows[new].push(bench(w.target(), &w, false)?);
                }
                if i == 0 {
                    rows[8].push(serde_json::from_str(&running.ask()?)?);
                }
                Ok(())
            })();
            attack.signal(libc::SIGTERM);
            let ended = attack.wait(Duration::from_secs(60))?;
            result?;
            anyhow::ensure!(ended.event("abort").is_some(), "no abort event: {}", ended.stderr);
        }
        eprintln!("round {} done", round + 1);
    }

    let med = |row: &[Value], k: &str| median(row.iter().filter_map(|v| v[k].as_f64()).collect());
    let line = |label: &str, value: &dyn Fn(&str) -> f64, precision: usize| {
        print!("{label:<32}");
        for (k, _) in COLUMNS {
            print!(" {:>14.precision$}", value(k));
        }
        println!();
    };
    let header = |title: &str| {
        print!("{title:<32}");
        for (_, c) in COLUMNS {
            print!(" {c:>14}");
        }
        println!();
    };
    header("1. untargeted (sibling)");
    for i in [0, 1, 2, 3] {
        if !rows[i].is_empty() {
            line(names[i], &|k| med(&rows[i], k), 1);
        }
    }
    for (i, label) in [
        (1, "ratio (fexit / no attack)"),
        (2, "ratio (tracepoint / no attack)"),
        (3, "ratio (control / no attack)"),
    ] {
        if !rows[i].is_empty() {
            line(label, &|k| med(&rows[i], k) / med(&rows[0], k), 3);
        }
    }
    println!("goal: vDSO reads (clock_gettime, gettimeofday, time) unchanged within noise\n");

    header("2. targeted (the target cgroup)");
    for i in [4, 5, 6, 7, 8] {
        if !rows[i].is_empty() {
            line(names[i], &|k| med(&rows[i], k), 1);
        }
    }
    for (i, label) in [
        (5, "libfaketime - no fault"),
        (6, "chaos new (fexit) - no fault"),
        (7, "chaos new (tp) - no fault"),
        (8, "chaos running - no fault"),
    ] {
        if !rows[i].is_empty() {
            line(label, &|k| med(&rows[i], k) - med(&rows[4], k), 1);
        }
    }
    if !faketime {
        println!("(libfaketime not installed: apt-get install libfaketime)");
    }
    println!(
        "\nnew: started during the attack (no vDSO: every read is a system call, shifted when it returns);\n\
         running: started before (vDSO; glibc's clock_gettime takes the uprobe, gettimeofday and time are\n\
         the vDSO's, unshifted). getppid: any other system call (tracepoints slow every system call down)."
    );
    Ok(())
}

/// One `bench` run of the C program in `place`, optionally under
/// libfaketime.
fn bench(place: Place<'_>, w: &World, faketime: bool) -> anyhow::Result<Value> {
    let mut cmd = w.probe(&["bench", MS]);
    if faketime {
        faked(&mut cmd);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = place.spawn(&mut cmd)?.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn faked(cmd: &mut Command) {
    cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", "+90").env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// What the program reads under libfaketime, in seconds from the truth.
fn faketime_shift(w: &World) -> anyhow::Result<f64> {
    let mut cmd = w.probe(&["now"]);
    faked(&mut cmd);
    let before = true_ns();
    let out = cmd.output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["realtime_ns"].as_i64().unwrap_or(0) - before) as f64 / 1e9)
}

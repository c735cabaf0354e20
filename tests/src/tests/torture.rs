//! Kill-point torture: `kill -9` of `chaos attack` at random moments of its
//! life — while it loads and verifies its programs, while it attaches,
//! mid-attack, while it stops — for every fault family this kernel can
//! inject. After each kill, measured from outside chaos:
//! - the fault is gone by its deadline (no later than the kill plus the
//!   attack's duration: a rule written before the kill carries a deadline
//!   computed before it);
//! - `chaos recover` exits 0, and then nothing of chaos is left: no
//!   program, no state file, no tc filter or qdisc on the device, no mount,
//!   no cgroup, no bpffs pin.
//!
//! `CHAOS_TORTURE_POINTS` sets the number of kill points per family
//! (default [`DEFAULT_POINTS`], [`VM_POINTS`] in a VM; `./x test --soak`
//! runs 1000). The points are drawn from three windows of the process's
//! measured life in turn (see [`window`]); the seed is printed, and
//! `CHAOS_TORTURE_SEED` replays it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use chaos::{capabilities::Capability, timebase::monotonic_ns};

use super::net_loss::EGRESS;
use crate::{
    fixtures::{cgroup::Cgroup, lab::Lab, leaks, runner, runner::ChaosRun},
    harness::Ctx,
    helpers::{io as io_helper, udp},
};

/// 30 per family, drawn from windows (see [`window`]): in a TCG VM a point
/// costs a whole start (seconds), so 50 uniform points took 4–6 minutes per
/// family and landed mostly on the program loads. Measured (2026-12-01,
/// fresh clone): 1–5 of 30 points still find the attack running in a VM,
/// where 50 uniform ones found 5–23: each run's start varies more than the
/// window around the calibrated one. `./x test --soak` covers the rest.
pub const DEFAULT_POINTS: usize = 30;
/// In a VM: each point costs a start under emulation (3 s here, 5 on CI),
/// and io-error and clock-skew are tortured on 6.1 and 6.12 alike, so the
/// matrix still kills each family at 40 points or more per run.
pub const VM_POINTS: usize = 20;
/// Each attack's duration: short, so that a point costs little more than
/// the process's start.
const DURATION: Duration = Duration::from_millis(400);
/// How long past the deadline the fault may still act: the kernel-side
/// deadline needs no process, so this only covers the check's own timing.
const GRACE: Duration = Duration::from_millis(50);

fn points() -> usize {
    let default = if crate::harness::on_host() { DEFAULT_POINTS } else { VM_POINTS };
    std::env::var("CHAOS_TORTURE_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CHAOS_TORTURE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| monotonic_ns() | 1);
        eprint!("[seed {seed}] ");
        Self(seed)
    }

    fn uniform(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        max.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Where in its life a point found chaos.
#[derive(Default, Debug)]
struct Phases {
    starting: usize,
    running: usize,
    stopping: usize,
    exited: usize,
}

/// One family's torture: its attack, the check that its fault is inert,
/// and a snapshot of what it may change on the machine.
struct Family<'a> {
    name: &'a str,
    args: Vec<String>,
    env: Vec<(&'a str, &'a str)>,
    inert: &'a dyn Fn() -> anyhow::Result<()>,
    snapshot: &'a dyn Fn() -> anyhow::Result<String>,
}

/// Mounts, bpffs entries and chaos's cgroups: what any family could leave.
fn host_snapshot() -> anyhow::Result<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    let pins: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    Ok(format!("mounts {mounts}; bpffs {pins:?}"))
}

/// Where kill point `i` may fall, given the calibrated time to the start
/// event and the whole life: half of the points while chaos starts (it
/// loads, verifies and attaches: most of its code, and under TCG most of
/// its life), a quarter around the attack itself (the rule's insertion,
/// mid-attack, the stop and the exit), a quarter anywhere.
fn window(i: usize, startup: Duration, life: Duration) -> (Duration, Duration) {
    match i % 4 {
        0 | 2 => (Duration::ZERO, startup),
        1 => (
            startup.saturating_sub(Duration::from_millis(100)),
            startup + DURATION + Duration::from_millis(200),
        ),
        _ => (Duration::ZERO, life),
    }
}

fn torture(f: &Family) -> anyhow::Result<()> {
    let n = points();
    let mut rng = Rng::new();
    let args: Vec<&str> = f.args.iter().map(String::as_str).collect();
    let before = format!("{}; {}", (f.snapshot)()?, host_snapshot()?);
    // Calibrate: the life of one attack that runs to its end.
    let t = Instant::now();
    let mut run = ChaosRun::start_with_env(&args, &f.env)?;
    run.wait_event("start", Duration::from_secs(90))?;
    let startup = t.elapsed();
    let ended = run.wait(Duration::from_secs(60))?;
    anyhow::ensure!(
        ended.code() == Some(0),
        "{}: an attack left alone exited {:?}: {}",
        f.name,
        ended.code(),
        ended.stderr
    );
    let life = t.elapsed() + Duration::from_millis(100);
    let (mut phases, mut late, mut left) = (Phases::default(), Vec::new(), Vec::new());
    let began = Instant::now();
    for point in 0..n {
        // A sign of life for the VM runner's no-output timeout.
        if point % 10 == 0 {
            eprint!("{point}.. ");
        }
        let (from, to) = window(point, startup, life);
        let at = from + rng.uniform(to - from);
        let run = ChaosRun::start_with_env(&args, &f.env)?;
        std::thread::sleep(at);
        run.signal(libc::SIGKILL);
        let killed = Instant::now();
        let ended = run.wait(Duration::from_secs(30))?;
        // Where the kill found it, by what it had printed (the reader
        // drains the pipe to its end): a start event follows the rule's
        // insertion, a stop event the rule's removal.
        match (ended.status.code(), ended.event("start").is_some(), ended.event("stop").is_some()) {
            (Some(_), ..) => phases.exited += 1,
            (None, false, _) => phases.starting += 1,
            (None, true, false) => phases.running += 1,
            (None, true, true) => phases.stopping += 1,
        }
        std::thread::sleep((killed + DURATION + GRACE).saturating_duration_since(Instant::now()));
        if let Err(e) = (f.inert)() {
            late.push(format!(
                "point {point} (killed {:.0} ms after the launch): {e:#}",
                at.as_secs_f64() * 1e3
            ));
        }
        let out = runner::recover()?;
        if out.code() != Some(0) {
            left.push(format!("point {point}: chaos recover exited {:?}: {}", out.code(), out.stderr));
        }
        let after = format!("{}; {}", (f.snapshot)()?, host_snapshot()?);
        let mut found = leaks::check_chaos().err().into_iter().collect::<Vec<_>>();
        if after != before {
            found.push(format!("before: {before}\n      after:  {after}"));
        }
        if !found.is_empty() {
            left.push(format!(
                "point {point} (killed {:.0} ms after the launch): {}",
                at.as_secs_f64() * 1e3,
                found.join("; ")
            ));
            // Every later point would find the same: stop here (the
            // harness cleans up after the test).
            break;
        }
    }
    eprint!(
        "[{}: {n} kill points over {:.0} ms (start after {:.0} ms) in {:.0} s: {} starting, {} running, {} \
         stopping, {} after exit; {} leftovers, {} faults past their deadline] ",
        f.name,
        life.as_secs_f64() * 1e3,
        startup.as_secs_f64() * 1e3,
        began.elapsed().as_secs_f64(),
        phases.starting,
        phases.running,
        phases.stopping,
        phases.exited,
        left.len(),
        late.len()
    );
    anyhow::ensure!(late.is_empty(), "{}: faults past their deadline:\n    {}", f.name, late.join("\n    "));
    anyhow::ensure!(
        left.is_empty(),
        "{}: leftovers after chaos recover:\n    {}",
        f.name,
        left.join("\n    ")
    );
    Ok(())
}

fn duration_arg() -> String {
    format!("{}ms", DURATION.as_millis())
}

/// net-loss at 100% on what the target sends, through TCX links and
/// (where the kernel has it) netlink filters, which outlive the process.
fn net(ctx: &mut Ctx, mode: &str) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    if mode == "netlink" {
        ctx.require(Capability::TcNetlink)?;
    }
    let lab = Lab::new()?;
    let to = SocketAddr::from((lab.peer_ip, 9400));
    let inert = || -> anyhow::Result<()> {
        let sink = udp::Sink::start(lab.peer(), to)?;
        udp::send(lab.target(), to, 40, 10, 1000)?;
        std::thread::sleep(Duration::from_millis(20));
        let got = sink.finish()?.iter().filter(|p| p.tag == 40).count();
        anyhow::ensure!(got == 10, "{} of 10 datagrams arrived past the deadline", got);
        Ok(())
    };
    // The egress tree and its filters. Without TCX, chaos keeps the clsact
    // it added (deleting one deactivates the device: chaos::attach::tc), so
    // from the first point on an *empty* clsact may be there; a filter of
    // chaos's in it would show.
    let snapshot = || -> anyhow::Result<String> {
        let q = super::net_delay::egress_qdiscs(&lab)?;
        let f = lab.ctr.exec(&["tc", "filter", "show", "dev", &lab.ctr_dev, "egress"]).unwrap_or_default();
        Ok(format!("qdiscs {q}; filters {}", f.trim()))
    };
    let duration = duration_arg();
    let args =
        ["attack", "net-loss", "--cgroup", &lab.target.rel, "--direction", "egress", "--percent", "100"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(["--duration".into(), duration]);
    let env = if mode == "netlink" { vec![("CHAOS_EGRESS_MODE", "netlink")] } else { vec![] };
    torture(&Family { name: &format!("net-loss ({mode})"), args, env, inert: &inert, snapshot: &snapshot })
}

pub fn kill_points_net_loss(ctx: &mut Ctx) -> anyhow::Result<()> {
    net(ctx, "default")
}

pub fn kill_points_net_loss_netlink(ctx: &mut Ctx) -> anyhow::Result<()> {
    // Where netlink is the default (no TCX), the test above covers it.
    if ctx.require(Capability::Tcx).is_err() {
        return Err(crate::harness::Skip(
            "without TCX, netlink filters are the default: kill_points_net_loss covers them".into(),
        )
        .into());
    }
    net(ctx, "netlink")
}

/// io-error: every read under a directory fails, in the target only.
pub fn kill_points_io_error(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::BpfLsm)?;
    let w = super::io_error::World::new()?;
    let f = w.path("data/f");
    let inert = || -> anyhow::Result<()> {
        let c = io_helper::run(w.target(), &["--op", "read", "--path", &f, "--count", "20"])?;
        anyhow::ensure!(c.failed() == 0, "{} of 20 reads failed past the deadline", c.failed());
        Ok(())
    };
    let data = w.data.display().to_string();
    let args = ["attack", "io-error", "--cgroup", &w.target.rel, "--path", &data, "--errno", "EIO"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(["--percent".into(), "100".into(), "--duration".into(), duration_arg()]);
    torture(&Family { name: "io-error", args, env: vec![], inert: &inert, snapshot: &|| Ok(String::new()) })
}

/// clock-skew: the target's processes read the time an hour ahead.
pub fn kill_points_clock_skew(ctx: &mut Ctx) -> anyhow::Result<()> {
    super::clock_skew::require(ctx)?;
    let target = Cgroup::new("torture-clock")?;
    let place = crate::fixtures::process::Place { netns: None, cgroup: Some(&target) };
    let inert = || -> anyhow::Result<()> {
        let before = super::clock_skew::true_ns();
        let out = place.output(std::process::Command::new("date").arg("+%s"))?;
        let secs: i64 = out.trim().parse().map_err(|_| anyhow::anyhow!("date printed {out:?}"))?;
        let off = secs * 1_000_000_000 - before;
        anyhow::ensure!(
            off.abs() < 5_000_000_000,
            "date in the target is {:+.0} s off past the deadline",
            off as f64 / 1e9
        );
        Ok(())
    };
    let args = ["attack", "clock-skew", "--cgroup", &target.rel, "--offset", "+1h", "--duration"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(duration_arg());
    torture(&Family { name: "clock-skew", args, env: vec![], inert: &inert, snapshot: &|| Ok(String::new()) })
}

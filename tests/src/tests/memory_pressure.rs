//! `memory-pressure`: the target pushed into reclaim through cgroup v2's
//! `memory.high`; every ending restores the boundary found before.
//!
//! Measured from outside the mechanism: a program in the target and one
//! in a sibling each hold 48 MiB and map, write and unmap 4 MiB at a time
//! in a loop, printing a line per allocation. Over its boundary a
//! cgroup is reclaimed from and its allocations are slowed
//! (mm/memcontrol.c, `mem_cgroup_handle_over_high`: a sleep of up to 2 s
//! after a charge, growing with the excess); the test reads what the
//! kernel accounted in each cgroup's own files (not chaos's): the time its
//! tasks stalled on memory (PSI, memory.pressure), the pages scanned for
//! reclaim (memory.stat) and the times it went over its boundary
//! (memory.events). Without swap (the VMs have none) the 48 MiB cannot be
//! reclaimed, so a boundary below them keeps the target over it for the
//! whole attack. (Allocations per second proved no measure: the two
//! programs share two emulated CPUs unevenly, 10 and 37 per second before
//! one run's attack.)

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chaos::capabilities::Capability;

use crate::{
    fixtures::{
        cgroup::{Cgroup, ControllerForChildren},
        limits,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
};

/// The program: 48 MiB held (touched), then 4 MiB of fresh memory mapped,
/// written and unmapped in a loop, a line printed for each. Fresh each
/// time: memory.high acts on new charges, and glibc's malloc would soon
/// serve a freed 4 MiB again from its heap (its mmap threshold rises to
/// the size of a freed mapping), charging nothing more — a first version
/// ran at full speed over its boundary after two seconds.
const ALLOCATOR: &str = "
import mmap, sys
held = b'\\x01' * (48 << 20)
chunk = b'\\x01' * (4 << 20)
while True:
    m = mmap.mmap(-1, len(chunk))
    m.write(chunk)
    m.close()
    sys.stdout.write('.\\n')
    sys.stdout.flush()
";

/// The allocator running in a cgroup, and when each of its lines came.
struct Allocator {
    child: Child,
    lines: Arc<Mutex<Vec<Instant>>>,
}

impl Allocator {
    fn start(cgroup: &Cgroup) -> anyhow::Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", ALLOCATOR]).stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = Place { netns: None, cgroup: Some(cgroup) }.spawn(&mut cmd)?;
        let out = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                if line.is_err() {
                    return;
                }
                seen.lock().expect("no panics while held").push(Instant::now());
            }
        });
        Ok(Self { child, lines })
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target and a sibling, each with the memory controller.
struct World {
    target: Cgroup,
    sibling: Cgroup,
    // Dropped last: the cgroups go first.
    _memory: ControllerForChildren,
}

impl World {
    fn new(ctx: &mut Ctx) -> anyhow::Result<Self> {
        ctx.require(Capability::CgroupMemory)?;
        let memory = ControllerForChildren::enable("memory")?;
        let (target, sibling) = (Cgroup::new("memory-target")?, Cgroup::new("memory-sibling")?);
        Ok(Self { target, sibling, _memory: memory })
    }

    fn high(&self) -> String {
        std::fs::read_to_string(self.target.path.join("memory.high")).unwrap_or_default().trim().to_owned()
    }

    fn attack(&self, flags: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "memory-pressure", "--cgroup", &self.target.rel];
        args.extend_from_slice(flags);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(30))?;
        Ok(run)
    }
}

/// PSI's `some` total of a cgroup's memory (µs): the time some of its
/// tasks stalled on memory.
fn stall_us(cgroup: &Cgroup) -> u64 {
    std::fs::read_to_string(cgroup.path.join("memory.pressure"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total="))?.parse().ok())
        .unwrap_or(0)
}

/// A field of a cgroup's flat keyed file (`memory.stat`, `memory.events`).
fn field(cgroup: &Cgroup, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(cgroup.path.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// What a cgroup's files say over a window: the share of it its tasks
/// stalled on memory, the pages the kernel scanned to reclaim from it, and
/// the times it went over its boundary.
#[derive(Debug)]
struct Window {
    stalled: f64,
    scanned: u64,
    over_high: u64,
}

fn window(cgroups: &[&Cgroup], length: Duration) -> Vec<Window> {
    let read =
        |c: &Cgroup| (stall_us(c), field(c, "memory.stat", "pgscan"), field(c, "memory.events", "high"));
    let before: Vec<_> = cgroups.iter().map(|c| read(c)).collect();
    let t0 = Instant::now();
    std::thread::sleep(length);
    let us = t0.elapsed().as_micros() as f64;
    cgroups
        .iter()
        .zip(before)
        .map(|(c, (s, p, h))| {
            let (s2, p2, h2) = read(c);
            Window { stalled: s2.saturating_sub(s) as f64 / us, scanned: p2 - p, over_high: h2 - h }
        })
        .collect()
}

/// `--high 50%` of a target that holds 48 MiB: over 3.5 s inside the attack
/// the kernel finds the target over its boundary again and again, and its
/// tasks stall on memory at least a fifth of the time (PSI); the sibling
/// is not scanned for reclaim and stalls under 5% of the time. Nothing is
/// killed, the boundary found before is back after, and once the last
/// sleep the kernel imposed is over (at most 2 s:
/// `MEMCG_MAX_HIGH_DELAY_JIFFIES`) the target allocates again without
/// stalling.
pub fn slows_the_target_and_spares_the_sibling(ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new(ctx)?;
    let before_high = w.high();
    let (mut target, mut sibling) = (Allocator::start(&w.target)?, Allocator::start(&w.sibling)?);
    // Both hold their 48 MiB and allocate at their pace.
    std::thread::sleep(Duration::from_secs(2));
    let free = window(&[&w.target, &w.sibling], Duration::from_secs(1));
    let run = w.attack(&["--high", "50%", "--duration", "6s"])?;
    let during_high = w.high();
    std::thread::sleep(Duration::from_millis(300));
    // Longer than the longest sleep the kernel imposes (2 s), so that the
    // window sees a charge, and with it reclaim.
    let pressed = window(&[&w.target, &w.sibling], Duration::from_millis(3500));
    let ended = run.wait(Duration::from_secs(30))?;
    let after_high = w.high();
    std::thread::sleep(Duration::from_millis(2500));
    let allocated = target.lines.lock().expect("no panics while held").len();
    let after = window(&[&w.target], Duration::from_secs(1));
    let allocated = target.lines.lock().expect("no panics while held").len() - allocated;
    eprint!(
        "[stalled on memory: target {:.0}% before, {:.0}% during, {:.0}% after; sibling {:.1}% during; pages \
         scanned in the target {}, in the sibling {}; over memory.high {} times] ",
        free[0].stalled * 100.0,
        pressed[0].stalled * 100.0,
        after[0].stalled * 100.0,
        pressed[1].stalled * 100.0,
        pressed[0].scanned,
        pressed[1].scanned,
        pressed[0].over_high
    );
    anyhow::ensure!(ended.code() == Some(0), "exit {:?}: {}", ended.code(), ended.stderr);
    anyhow::ensure!(during_high != before_high, "memory.high was {during_high} during the attack");
    anyhow::ensure!(after_high == before_high, "memory.high is {after_high} after, {before_high} before");
    anyhow::ensure!(free[0].stalled < 0.05, "the target stalled before the attack: {free:?}");
    anyhow::ensure!(
        pressed[0].stalled >= 0.2,
        "the target stalled too little during the attack: {pressed:?}"
    );
    // Reclaim found the target over its boundary; what it could scan went
    // in the first moments (the program's file pages: without swap its
    // anonymous memory cannot be reclaimed), so pages scanned are shown,
    // not required.
    anyhow::ensure!(pressed[0].over_high > 0, "the target never went over its boundary: {pressed:?}");
    anyhow::ensure!(
        pressed[1].stalled < 0.05 && pressed[1].scanned == 0,
        "the sibling was pressed: {pressed:?}"
    );
    anyhow::ensure!(
        after[0].stalled < 0.05 && allocated > 0,
        "the target after the attack: {after:?}, {allocated} allocations"
    );
    anyhow::ensure!(target.alive() && sibling.alive(), "memory.high killed an allocator");
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event"))?;
    let c = &stop["counters"];
    anyhow::ensure!(c["injected"].as_u64().unwrap_or(0) > 0, "no `high` event counted: {c}");
    anyhow::ensure!(c["stall_ms"].as_u64().unwrap_or(0) >= 500, "counters: {c}");
    Ok(())
}

/// kill -9 of chaos: its guardian restores the boundary at once; a chaos
/// that hangs (SIGSTOP) keeps it only until the deadline.
pub fn every_ending_restores_the_boundary(ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new(ctx)?;
    limits::endings_restore("memory.high", &|| w.high(), &|d| w.attack(&["--high", "64M", "--duration", d]))
}

/// What must not be limited is refused with exit 3 and left as it was:
/// where the memory controller is on cgroup v1 (this project's host),
/// every memory-pressure; elsewhere a parent that does not enable the
/// controller, a boundary at or above memory.max or not below memory.high,
/// a share of a target that uses almost nothing, chaos's own cgroup, and
/// bad --high.
pub fn refusals_leave_everything_as_it_was(ctx: &mut Ctx) -> anyhow::Result<()> {
    if !ctx.has(Capability::CgroupMemory) {
        let t = Cgroup::new("memory-v1")?;
        let ended = runner::run(&[
            "attack",
            "memory-pressure",
            "--cgroup",
            &t.rel,
            "--high",
            "64M",
            "--duration",
            "5s",
        ])?;
        return ended
            .refused("memory-pressure where memory is on cgroup v1", "bound to a cgroup v1 hierarchy");
    }
    let w = World::new(ctx)?;
    let target = w.target.rel.clone();
    let before = w.high();
    let parent = Cgroup::new("memory-parent")?;
    std::fs::create_dir(parent.path.join("child"))?;
    let child = format!("{}/child", parent.rel);
    runner::run(&["attack", "memory-pressure", "--cgroup", &child, "--high", "64M", "--duration", "5s"])?
        .refused("a parent without +memory", "echo +memory >")?;
    limits::refuses_its_own_cgroup(&w.target, &["memory-pressure", "--high", "64M"])?;
    std::fs::write(w.target.path.join("memory.max"), (256u64 << 20).to_string())?;
    let cases: &[(&[&str], &str)] = &[
        (&["--cgroup", "/", "--allow-host", "--high", "64M"], "is the root cgroup"),
        (&["--cgroup", &target, "--high", "50%"], "give --high as a size"),
        (&["--cgroup", &target, "--high", "256M"], "not below"),
        (&["--cgroup", &target, "--high", "100%"], "whole percentage"),
        (&["--cgroup", &target, "--high", "lots"], "expected a size"),
        (&["--cgroup", &target, "--high", "512K"], "hardly run"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "memory-pressure", "--duration", "5s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        anyhow::ensure!(w.high() == before, "{flags:?}: memory.high is {}", w.high());
    }
    // Bounded tighter by someone else: the attack would loosen it.
    std::fs::write(w.target.path.join("memory.high"), (32u64 << 20).to_string())?;
    let tighter = runner::run(&[
        "attack",
        "memory-pressure",
        "--cgroup",
        &target,
        "--high",
        "64M",
        "--duration",
        "5s",
    ])?;
    let still = w.high();
    std::fs::write(w.target.path.join("memory.high"), &before)?;
    tighter.refused("a tighter boundary", "would loosen it")?;
    anyhow::ensure!(still == (32u64 << 20).to_string(), "someone else's boundary was changed to {still}");
    runner::recover_finds_nothing()
}

//! `kill`: the target's processes signalled — all of them (cgroup.kill,
//! or a pidfd per process before 5.14), the main one, or those of a name —
//! once or every interval; and what restarted them, reported.
//!
//! The target is a supervised service: a supervisor outside the target
//! (as systemd or a container runtime is) starts a service into it and,
//! each time the service's main process ends, starts it again 200 ms later.
//! The service is a main process (`tail`) with two children (`sleep`).
//! What the test checks, it reads from /proc and cgroup.procs itself: which
//! processes died, which survived, and when new ones appeared.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    fixtures::{
        cgroup::Cgroup,
        limits,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
};

/// The supervisor's script: `$1` is the target's cgroup.procs, `$2` the
/// restart delay. The service's shell moves itself into the target before
/// it starts anything, then becomes `tail`.
const SUPERVISOR: &str = r#"
while :; do
  sh -c 'echo $$ > "$0" && { sleep 1000 & sleep 1000 & exec tail -f /dev/null; }' "$1"
  sleep "$2"
done
"#;

/// A supervisor that, as a container runtime or systemd does, removes the
/// service's cgroup when the service has ended and makes it again (same
/// path, new id) to restart it.
const REMAKING_SUPERVISOR: &str = r#"
d=${1%/cgroup.procs}
while :; do
  sh -c 'echo $$ > "$0" && { sleep 1000 & sleep 1000 & exec tail -f /dev/null; }' "$1"
  until rmdir "$d" 2>/dev/null; do sleep 0.01; done
  sleep "$2"
  mkdir "$d"
done
"#;

/// The supervisor's restart delay.
const RESTART: Duration = Duration::from_millis(200);

/// A supervised service in a target, and a sibling cgroup with a process
/// of its own.
struct World {
    target: Cgroup,
    sibling: Cgroup,
    supervisor: Child,
    bystander: Child,
}

impl World {
    fn new(name: &str) -> anyhow::Result<Self> {
        Self::supervised_by(name, SUPERVISOR)
    }

    fn supervised_by(name: &str, script: &str) -> anyhow::Result<Self> {
        let target = Cgroup::new(&format!("kill-{name}"))?;
        let sibling = Cgroup::new(&format!("kill-{name}-sibling"))?;
        let supervisor = Command::new("sh")
            .args(["-c", script, "supervisor"])
            .arg(target.procs_file())
            .arg(format!("{:.1}", RESTART.as_secs_f64()))
            .stdin(Stdio::null())
            // sh reports each killed child ("Killed") on stderr.
            .stderr(Stdio::null())
            .spawn()?;
        let bystander = Place { netns: None, cgroup: Some(&sibling) }
            .spawn(Command::new("sleep").arg("1000").stdin(Stdio::null()))?;
        let w = Self { target, sibling, supervisor, bystander };
        w.service(Duration::from_secs(10))?;
        Ok(w)
    }

    /// The service as it runs: its `tail` and its two `sleep`s, waiting
    /// at most `within` for them.
    fn service(&self, within: Duration) -> anyhow::Result<Service> {
        self.wait_for(within, |s| s.tail.is_some() && s.sleeps.len() >= 2)
    }

    /// The target's processes once `ok` holds of them, waiting at most
    /// `within`.
    fn wait_for(&self, within: Duration, ok: impl Fn(&Service) -> bool) -> anyhow::Result<Service> {
        let t0 = Instant::now();
        loop {
            let s = Service::of(&self.target);
            if ok(&s) {
                return Ok(s);
            }
            anyhow::ensure!(t0.elapsed() < within, "the service is not as expected after {within:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn attack(&self, flags: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "kill", "--cgroup", &self.target.rel];
        args.extend_from_slice(flags);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(30))?;
        Ok(run)
    }

    /// The supervisor and the sibling's process still run.
    fn bystanders_alive(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.supervisor.try_wait()?.is_none(), "the supervisor, outside the target, died");
        anyhow::ensure!(self.bystander.try_wait()?.is_none(), "the sibling's process died");
        anyhow::ensure!(procs(&self.sibling).len() == 1, "the sibling has {:?}", procs(&self.sibling));
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The supervisor first, so that nothing restarts the service.
        for c in [&mut self.supervisor, &mut self.bystander] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The processes of a cgroup.
fn procs(cgroup: &Cgroup) -> Vec<i32> {
    std::fs::read_to_string(cgroup.procs_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// Whether `pid` runs (a zombie has ended: it waits only to be reaped).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|s| s.trim().chars().next());
    state.is_some_and(|s| s != 'Z')
}

/// The service's processes in the target, by name.
#[derive(Debug)]
struct Service {
    all: Vec<i32>,
    tail: Option<i32>,
    sleeps: Vec<i32>,
}

impl Service {
    fn of(target: &Cgroup) -> Self {
        let all = procs(target);
        let tail = all.iter().copied().find(|p| comm(*p) == "tail");
        let sleeps = all.iter().copied().filter(|p| comm(*p) == "sleep").collect();
        Self { all, tail, sleeps }
    }
}

fn counter(stop: &serde_json::Value, name: &str) -> u64 {
    let c = &stop["counters"];
    c[name].as_u64().or_else(|| c["detail"][name].as_u64()).unwrap_or(u64::MAX)
}

fn stop_event(ended: &runner::Ended) -> anyhow::Result<&serde_json::Value> {
    anyhow::ensure!(ended.code() == Some(0), "exit {:?}: {}", ended.code(), ended.stderr);
    ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event: {:?}", ended.events))
}

/// One round of SIGKILL to everything: the service's three processes die,
/// the supervisor restarts it, and chaos reports the restart no sooner
/// than the supervisor's delay and no later than the test saw the new
/// service; the supervisor and the sibling are untouched.
pub fn kills_everything_and_reports_the_restart(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut w = World::new("all")?;
    let before = w.service(Duration::from_secs(10))?;
    // From before the launch: chaos's round, which its restart_ms counts
    // from, comes after it.
    let launched = Instant::now();
    let run = w.attack(&["--duration", "3s"])?;
    // The test's own view: when a new service ran.
    let again = w.wait_for(Duration::from_secs(3), |s| {
        s.tail.is_some_and(|t| !before.all.contains(&t)) && s.all.iter().all(|p| !before.all.contains(p))
    })?;
    let seen = launched.elapsed();
    let ended = run.wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?;
    let (restart_ms, exited_ms) = (counter(stop, "restart_ms"), counter(stop, "exited_ms"));
    eprint!(
        "[killed {:?}; restarted after {restart_ms} ms, the old ones gone after {exited_ms} ms] ",
        before.all
    );
    for pid in &before.all {
        anyhow::ensure!(!alive(*pid), "process {pid} ({}) of the target survived", comm(*pid));
    }
    let new: HashSet<i32> = again.all.iter().copied().collect();
    anyhow::ensure!(
        before.all.iter().all(|p| !new.contains(p)),
        "the service did not restart: {:?}",
        again.all
    );
    w.bystanders_alive()?;
    anyhow::ensure!(counter(stop, "matched") == 3 && counter(stop, "injected") == 3, "counters: {stop}");
    anyhow::ensure!(counter(stop, "rounds") == 1 && counter(stop, "restarts") == 1, "counters: {stop}");
    // Chaos looks every 10 ms; its thread may wake late on a loaded,
    // emulated CPU: 500 ms of slack over what the test saw.
    anyhow::ensure!(
        restart_ms >= RESTART.as_millis() as u64 && restart_ms <= seen.as_millis() as u64 + 500,
        "restart_ms {restart_ms}: the supervisor waits {RESTART:?}, the test saw the new service {seen:?} after \
         launching chaos"
    );
    anyhow::ensure!(exited_ms <= restart_ms, "counters: {stop}");
    Ok(())
}

/// `--process main --signal TERM` ends only the main process (its
/// children live on, orphaned); `--name sleep` only the `sleep`s.
pub fn picks_the_main_process_or_a_name(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut w = World::new("pick")?;
    let before = w.service(Duration::from_secs(10))?;
    let ended = w
        .attack(&["--process", "main", "--signal", "TERM", "--duration", "1s"])?
        .wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?.clone();
    let tail = before.tail.unwrap_or_default();
    anyhow::ensure!(!alive(tail), "the main process {tail} survived --process main");
    for pid in &before.sleeps {
        anyhow::ensure!(alive(*pid), "{pid}, a child of the main process, was killed too");
    }
    anyhow::ensure!(counter(&stop, "matched") == 1 && counter(&stop, "injected") == 1, "counters: {stop}");
    anyhow::ensure!(counter(&stop, "restarts") == 1, "the supervisor's restart was not reported: {stop}");
    w.bystanders_alive()?;

    // By name: every `sleep` (the two orphans and the restarted service's
    // two), not the new `tail`.
    let now = w.wait_for(Duration::from_secs(5), |s| s.tail.is_some() && s.sleeps.len() == 4)?;
    let ended = w.attack(&["--name", "sleep", "--duration", "1s"])?.wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?;
    for pid in &now.sleeps {
        anyhow::ensure!(!alive(*pid), "sleep {pid} survived --name sleep");
    }
    let tail = now.tail.unwrap_or_default();
    anyhow::ensure!(alive(tail), "tail {tail} was killed by --name sleep");
    let n = now.sleeps.len() as u64;
    anyhow::ensure!(n == 4 && counter(stop, "injected") == n, "{n} sleeps; counters: {stop}");
    // Nothing restarts a `sleep` (its parent, `tail`, lives on).
    anyhow::ensure!(counter(stop, "restarts") == 0, "counters: {stop}");
    w.bystanders_alive()
}

/// `--every 1s` for 3.3 s: four rounds (0, 1, 2, 3 s), each killing the
/// service the supervisor restarted 200 ms after the one before (seen
/// within 830 ms on 5.10: under the interval, with room).
pub fn kills_again_every_interval(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut w = World::new("every")?;
    let ended = w.attack(&["--every", "1s", "--duration", "3300ms"])?.wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?;
    eprint!(
        "[{} rounds, {} restarts, {} processes killed] ",
        counter(stop, "rounds"),
        counter(stop, "restarts"),
        counter(stop, "injected")
    );
    anyhow::ensure!(counter(stop, "rounds") == 4, "counters: {stop}");
    // Each round's restart comes 200 ms later, before the next round; the
    // last one's at the deadline at the earliest.
    anyhow::ensure!((3..=4).contains(&counter(stop, "restarts")), "counters: {stop}");
    anyhow::ensure!(counter(stop, "injected") >= 3 * 3, "counters: {stop}");
    w.bystanders_alive()
}

/// The same rounds on a service whose supervisor removes its cgroup when
/// it ends and makes it again to restart it (a container runtime's restart
/// policy, systemd): the run does not end as `target gone`, and every
/// round kills the service in the cgroup of the moment (three processes a
/// round), which only a chaos that followed the new cgroup id can do.
pub fn follows_its_cgroup_made_again(_ctx: &mut Ctx) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mut w = World::supervised_by("remade", REMAKING_SUPERVISOR)?;
    let first_id = std::fs::metadata(&w.target.path)?.ino();
    let ended = w.attack(&["--every", "1s", "--duration", "3300ms"])?.wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?;
    eprint!(
        "[{} rounds, {} restarts, cgroup removed {} times, {} processes killed] ",
        counter(stop, "rounds"),
        counter(stop, "restarts"),
        counter(stop, "removed"),
        counter(stop, "injected")
    );
    anyhow::ensure!(counter(stop, "rounds") == 4 && counter(stop, "failed_rounds") == 0, "counters: {stop}");
    anyhow::ensure!((3..=4).contains(&counter(stop, "restarts")), "counters: {stop}");
    anyhow::ensure!((3..=4).contains(&counter(stop, "removed")), "counters: {stop}");
    // Rounds 2 and 3 (and 4, unless it came while the service was being
    // restarted) killed it in a cgroup made again: a round on the old id
    // would fail (cgroup.kill is written after the id is checked).
    anyhow::ensure!(counter(stop, "injected") >= 3 * 3, "counters: {stop}");
    w.service(Duration::from_secs(10))?;
    let id = std::fs::metadata(&w.target.path)?.ino();
    anyhow::ensure!(id != first_id, "the cgroup was not made again (id {id})");
    w.bystanders_alive()
}

/// A chaos stopped (SIGSTOP) across its deadline kills nothing after it:
/// when it runs again, it ends without another round.
pub fn a_hung_chaos_kills_nothing_after_the_deadline(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut w = World::new("hung")?;
    let run = w.attack(&["--every", "2s", "--duration", "3s"])?;
    run.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(3500));
    let service = w.service(Duration::from_secs(5))?;
    run.signal(libc::SIGCONT);
    let ended = run.wait(Duration::from_secs(30))?;
    let stop = stop_event(&ended)?;
    std::thread::sleep(Duration::from_millis(100));
    anyhow::ensure!(service.all.iter().all(|p| alive(*p)), "killed after the deadline: {:?}", service.all);
    // The first round only (the SIGSTOP lands well before the second, and
    // the one due at 2 s is not done when chaos runs again past the
    // deadline).
    anyhow::ensure!(counter(stop, "rounds") == 1, "counters: {stop}");
    w.bystanders_alive()
}

/// What must not be killed is refused with exit 3, and nothing dies: the
/// root cgroup, chaos's own cgroup (even with --allow-host); and bad flags.
pub fn refusals_leave_everything_as_it_was(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut w = World::new("refused")?;
    let before = w.service(Duration::from_secs(10))?;
    let target = w.target.rel.clone();
    limits::refuses_its_own_cgroup(&w.sibling, &["kill"])?;
    let cases: &[(&[&str], &str)] = &[
        (&["--cgroup", "/", "--allow-host"], "is the root cgroup"),
        (&["--cgroup", &target, "--signal", "STOP"], "chaos attack pause"),
        (&["--cgroup", &target, "--signal", "9"], "expected one of KILL"),
        (&["--cgroup", &target, "--process", "main", "--name", "tail"], "exclude each other"),
        (&["--cgroup", &target, "--name", "a-name-longer-than-15"], "longer than a process name"),
        (&["--cgroup", &target, "--every", "10ms"], "too often"),
        (&["--cgroup", &target, "--process", "some"], "--process"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "kill", "--duration", "1s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
    }
    anyhow::ensure!(before.all.iter().all(|p| alive(*p)), "a refused attack killed some of {:?}", before.all);
    w.bystanders_alive()?;
    runner::recover_finds_nothing()
}

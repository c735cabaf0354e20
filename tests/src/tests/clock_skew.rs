//! `chaos attack clock-skew`: what real programs in the target read as the
//! time (`date`, Python, a C program compiled here, `openssl verify` on a
//! certificate made here), compared with the true time read by this
//! process, which is outside the target; the same programs in a sibling
//! cgroup; and the programs that keep reading the clock by which the
//! safety suite (`safety.rs`) measures the end of the skew.
//!
//! Every program is started by the test, into its cgroup before its first
//! instruction (`Place`); "already running" programs are started before the
//! attack and asked to read the clock (a line on their stdin) after it
//! began.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chaos::{capabilities::Capability, timebase::monotonic_ns};
use serde_json::Value;

use super::safety::{Ending, Family, Window};
use crate::{
    fixtures::{
        cgroup::{Cgroup, PREFIX},
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::{Ctx, Skip},
};

/// The test's own clock reader: compiled by the test with gcc, so that what
/// it calls is exactly what a C program calls (glibc's `clock_gettime`,
/// `gettimeofday`, `time`, through the vDSO when the process has one).
///
/// - `now`: one JSON line with every reading;
/// - `serve`: prints `ready`, then a `now` line per line read on stdin;
/// - `stream SECONDS INTERVAL_US`: waits for a line on stdin, then reads
///   CLOCK_MONOTONIC and CLOCK_REALTIME every INTERVAL_US for SECONDS and
///   prints the pairs (`mono real`, ns) at the end;
/// - `bench MS`: ns per call of each way to read the clock (and of
///   getppid), each timed over MS milliseconds, as JSON;
/// - `benchserve MS`: prints `ready`, then a `bench` line per stdin line.
pub const CLOCKPROBE_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

static long long ns(clockid_t c) {
    struct timespec t;
    if (clock_gettime(c, &t)) return -1;
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long sys_ns(clockid_t c) {
    struct timespec t;
    if (syscall(SYS_clock_gettime, c, &t)) return -1;
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void now(void) {
    long long before = ns(CLOCK_MONOTONIC);
    long long real = ns(CLOCK_REALTIME);
    long long coarse = ns(CLOCK_REALTIME_COARSE);
    long long tai = ns(CLOCK_TAI);
    long long sys = sys_ns(CLOCK_REALTIME);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t tp = 0;
    time_t tr = time(&tp);
    time_t tn = time(NULL);
    long long after = ns(CLOCK_MONOTONIC);
    printf("{\"realtime_ns\":%lld,\"coarse_ns\":%lld,\"tai_ns\":%lld,\"sys_realtime_ns\":%lld,"
           "\"gettimeofday_us\":%lld,\"time_ptr\":%lld,\"time_ret\":%lld,\"time_null\":%lld,"
           "\"took_ns\":%lld,\"vdso\":%s}\n",
           real, coarse, tai, sys, tv.tv_sec * 1000000LL + tv.tv_usec, (long long)tp, (long long)tr,
           (long long)tn, after - before, getauxval(AT_SYSINFO_EHDR) ? "true" : "false");
    fflush(stdout);
}

static void calls(int which, long n) {
    struct timespec t;
    struct timeval tv;
    volatile long long sink = 0;
    for (long i = 0; i < n; i++) {
        switch (which) {
        case 0: clock_gettime(CLOCK_REALTIME, &t); sink += t.tv_nsec; break;
        case 1: syscall(SYS_clock_gettime, CLOCK_REALTIME, &t); sink += t.tv_nsec; break;
        case 2: gettimeofday(&tv, NULL); sink += tv.tv_usec; break;
        case 3: sink += time(NULL); break;
        case 4: sink += syscall(SYS_getppid); break;
        }
    }
    (void)sink;
}

/* ns per call, over at least `ms` milliseconds (after a warm-up): a time
   box rather than a count, so that fast and slow paths are measured over
   the same span. */
static double per_call(int which, long ms) {
    calls(which, 256);
    long long start = ns(CLOCK_MONOTONIC), now, n = 0;
    do {
        calls(which, 256);
        n += 256;
        now = ns(CLOCK_MONOTONIC);
    } while (now - start < ms * 1000000LL);
    return (double)(now - start) / n;
}

static void bench(long ms) {
    printf("{\"libc_realtime\":%.1f,\"syscall_realtime\":%.1f,\"gettimeofday\":%.1f,\"time\":%.1f,"
           "\"getppid\":%.1f,\"vdso\":%s}\n",
           per_call(0, ms), per_call(1, ms), per_call(2, ms), per_call(3, ms), per_call(4, ms),
           getauxval(AT_SYSINFO_EHDR) ? "true" : "false");
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "now";
    char line[64];
    if (!strcmp(mode, "now")) { now(); return 0; }
    if (!strcmp(mode, "serve") || !strcmp(mode, "benchserve")) {
        long n = argc > 2 ? atol(argv[2]) : 300;
        printf("ready\n");
        fflush(stdout);
        while (fgets(line, sizeof line, stdin)) {
            if (mode[0] == 's') now(); else bench(n);
        }
        return 0;
    }
    if (!strcmp(mode, "bench")) { bench(argc > 2 ? atol(argv[2]) : 300); return 0; }
    if (!strcmp(mode, "stream") && argc > 3) {
        double seconds = atof(argv[2]);
        long interval = atol(argv[3]);
        long max = (long)(seconds * 1e6 / interval) + 16;
        long long *s = malloc(sizeof(long long) * 2 * max);
        long n = 0;
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 1;
        long long start = ns(CLOCK_MONOTONIC), end = start + (long long)(seconds * 1e9);
        struct timespec pause = { 0, interval * 1000 };
        while (n < max) {
            long long m = ns(CLOCK_MONOTONIC);
            if (m > end) break;
            s[2 * n] = m;
            s[2 * n + 1] = ns(CLOCK_REALTIME);
            n++;
            nanosleep(&pause, NULL);
        }
        for (long i = 0; i < n; i++) printf("%lld %lld\n", s[2 * i], s[2 * i + 1]);
        return 0;
    }
    fprintf(stderr, "usage: clockprobe now|serve|stream S US|bench MS|benchserve MS\n");
    return 2;
}
"#;

/// A directory with the compiled probe, a target cgroup and its sibling.
pub struct World {
    pub dir: PathBuf,
    pub probe: PathBuf,
    pub target: Cgroup,
    pub sibling: Cgroup,
}

impl World {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-clock", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let world = Self {
            probe: dir.join("clockprobe"),
            dir,
            target: Cgroup::new("clock-target")?,
            sibling: Cgroup::new("clock-sibling")?,
        };
        let source = world.dir.join("clockprobe.c");
        fs::write(&source, CLOCKPROBE_C)?;
        let gcc = Command::new("gcc").arg("-O2").arg("-o").arg(&world.probe).arg(&source).output();
        match gcc {
            Err(e) => return Err(Skip(format!("gcc is not available ({e}): apt-get install gcc")).into()),
            Ok(o) if !o.status.success() => {
                anyhow::bail!("compiling the clock probe failed: {}", String::from_utf8_lossy(&o.stderr))
            }
            Ok(_) => {}
        }
        Ok(world)
    }

    pub fn target(&self) -> Place<'_> {
        Place { netns: None, cgroup: Some(&self.target) }
    }

    pub fn sibling(&self) -> Place<'_> {
        Place { netns: None, cgroup: Some(&self.sibling) }
    }

    pub fn probe(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.probe);
        c.args(args);
        c
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The true time, read outside the target (this process is not in it).
pub fn true_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

const NS: i64 = 1_000_000_000;

/// An offset in ns, from the flag's spelling (`+90s`, `-2h`, `+2d`).
fn offset_ns(offset: &str) -> i64 {
    offset.parse::<chaos::faults::Offset>().expect("valid offset").ns
}

/// Start a clock-skew attack on the world's target and wait until it is in
/// force.
pub fn attack(w: &World, offset: &str, extra: &[&str]) -> anyhow::Result<(ChaosRun, Value)> {
    attack_with_env(w, offset, extra, &[])
}

/// `attack`, with environment variables for chaos (CHAOS_CLOCK_SYSCALLS).
pub fn attack_with_env(
    w: &World,
    offset: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(ChaosRun, Value)> {
    let mut args = vec!["attack", "clock-skew", "--cgroup", &w.target.rel, "--offset", offset];
    if !extra.contains(&"--duration") {
        args.extend(["--duration", "300s"]);
    }
    args.extend_from_slice(extra);
    let mut run = ChaosRun::start_with_env(&args, env)?;
    let start = run.wait_event("start", Duration::from_secs(90))?;
    Ok((run, start))
}

/// Stop an attack (SIGTERM) and return its end event.
pub fn end(run: ChaosRun) -> anyhow::Result<Value> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(60))?;
    let event = ended.event("abort").or(ended.event("stop")).cloned().ok_or_else(|| {
        anyhow::anyhow!("no end event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })?;
    ensure_unloaded("after chaos exited")?;
    Ok(event)
}

fn counter(ev: &Value, name: &str) -> u64 {
    ev["counters"][name].as_u64().unwrap_or(0)
}

/// Run a program in `place` to completion: (success, stdout + stderr).
fn run_in(place: Place<'_>, cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = place.spawn(cmd)?.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text.trim().to_owned()))
}

/// A reading made between `before` and `after` (true time, ns) is the true
/// time shifted by `offset`, within `tolerance`.
fn within(what: &str, got: i64, before: i64, after: i64, offset: i64, tolerance: i64) -> Option<String> {
    let (lo, hi) = (before + offset - tolerance, after + offset + tolerance);
    if got >= lo && got <= hi {
        None
    } else {
        let seen = (got - before) as f64 / 1e9;
        Some(format!(
            "{what}: read {:+.3} s from the true time, expected {:+.3} s",
            seen,
            offset as f64 / 1e9
        ))
    }
}

/// `date +%s`, Python's `time.time()` and the C probe, in `place`, each
/// bracketed by the true time: the problems found.
fn check_tools(w: &World, place: Place<'_>, offset: i64, new: Process) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let before = true_ns();
    let (ok, out) = run_in(place, Command::new("date").arg("+%s"))?;
    let after = true_ns();
    anyhow::ensure!(ok, "date failed: {out}");
    let secs: i64 = out.parse().map_err(|_| anyhow::anyhow!("date printed {out:?}"))?;
    problems.extend(within("date +%s", secs * NS, before, after, offset, NS));
    // date's second, from the true time (which it was read between).
    let date_seen = (secs * NS - before) as f64 / 1e9;

    let python =
        if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let before = true_ns();
    let (ok, out) =
        run_in(place, Command::new(python).args(["-c", "import time; print(repr(time.time()))"]))?;
    let after = true_ns();
    anyhow::ensure!(ok, "python3 failed: {out}");
    let t: f64 = out.parse().map_err(|_| anyhow::anyhow!("python3 printed {out:?}"))?;
    problems.extend(within("python3 time.time()", (t * 1e9) as i64, before, after, offset, NS));
    let python_seen = ((t * 1e9) as i64 - before) as f64 / 1e9;

    let before = true_ns();
    let (ok, out) = run_in(place, &mut w.probe(&["now"]))?;
    let after = true_ns();
    anyhow::ensure!(ok, "the C probe failed: {out}");
    let v: Value = serde_json::from_str(&out)?;
    problems.extend(c_readings(&v, before, after, offset, new));
    eprint!(
        "[{}: date {date_seen:+.1}s, python {:+.3}s, C {:+.3}s] ",
        if offset == 0 { "untouched" } else { "target" },
        python_seen,
        (v["realtime_ns"].as_i64().unwrap_or(0) - before) as f64 / 1e9
    );
    Ok(problems)
}

/// Which process read the clocks: one started during the attack (its
/// clock reads are system calls), with time(2) answered by fmod_ret or not,
/// or one already running (its vDSO serves time() and gettimeofday()).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Process {
    New { time_answered: bool },
    Running,
}

/// Whether clock-skew answers time(2) here (fmod_ret on the system call,
/// with the fexit path it is planned with).
fn time_answered(ctx: &mut Ctx) -> bool {
    ctx.require(Capability::Fentry).is_ok() && ctx.require(Capability::SyscallFmodRet).is_ok()
}

/// What the C probe read. `offset` applies to clock_gettime (libc, 10 ms),
/// the raw system call, REALTIME_COARSE (a tick coarser), and, in a new
/// process, gettimeofday and the value time() stores through its pointer.
/// time()'s return value is the true time (documented: a register that no
/// fexit or tracepoint program can change, or the vDSO), except in a new
/// process where an fmod_ret program answers time(2). In a process already
/// running, glibc's gettimeofday() is the vDSO's: true time, unless the
/// clocksource cannot serve the vDSO (hpet, acpi_pm: the vDSO then makes
/// the system call, which is shifted) — either is accepted there, nothing
/// else.
/// The tolerance of time(2)'s whole seconds: the second itself, and the
/// lag of the coarse clock it reads (the vDSO's `time()` returns the
/// seconds of the last tick's timekeeping update, lib/vdso/gettimeofday.c,
/// `__cvdso_time_data`), as for CLOCK_REALTIME_COARSE below: a 6.12 VM
/// read the previous second 1 ms after the true time had passed it.
const TIME_SECONDS: i64 = NS + 20 * NS / 1000;

fn c_readings(v: &Value, before: i64, after: i64, offset: i64, process: Process) -> Vec<String> {
    let get = |k: &str| v[k].as_i64().unwrap_or(i64::MIN);
    let mut p = Vec::new();
    let ms = NS / 1000;
    p.extend(within("C clock_gettime(CLOCK_REALTIME)", get("realtime_ns"), before, after, offset, 10 * ms));
    p.extend(within("C syscall(SYS_clock_gettime)", get("sys_realtime_ns"), before, after, offset, 10 * ms));
    p.extend(within("C CLOCK_REALTIME_COARSE", get("coarse_ns"), before, after, offset, 20 * ms));
    let tv = get("gettimeofday_us") * 1000;
    if let Process::New { .. } = process {
        p.extend(within("C gettimeofday", tv, before, after, offset, 10 * ms));
        p.extend(within("C time(&t): t", get("time_ptr") * NS, before, after, offset, TIME_SECONDS));
    } else {
        let shifted = within("C gettimeofday", tv, before, after, offset, 10 * ms);
        let untouched = within("C gettimeofday", tv, before, after, 0, 10 * ms);
        if let (Some(a), Some(_)) = (shifted, untouched) {
            p.push(format!("{a} (or the true time)"));
        }
        p.extend(within("C time(&t): t", get("time_ptr") * NS, before, after, 0, TIME_SECONDS));
    }
    let returned = if process == (Process::New { time_answered: true }) { offset } else { 0 };
    p.extend(within("C time(&t): return value", get("time_ret") * NS, before, after, returned, TIME_SECONDS));
    p.extend(within("C time(NULL)", get("time_null") * NS, before, after, returned, TIME_SECONDS));
    p
}

/// Like `c_readings` for a process outside the target: everything true.
fn c_untouched(v: &Value, before: i64, after: i64) -> Vec<String> {
    let get = |k: &str| v[k].as_i64().unwrap_or(i64::MIN);
    let mut p = Vec::new();
    for (k, scale) in
        [("realtime_ns", 1), ("sys_realtime_ns", 1), ("coarse_ns", 1), ("gettimeofday_us", 1000)]
    {
        p.extend(within(k, get(k) * scale, before, after, 0, 20 * NS / 1000));
    }
    for k in ["time_ptr", "time_ret", "time_null"] {
        p.extend(within(k, get(k) * NS, before, after, 0, TIME_SECONDS));
    }
    p
}

fn clocksource() -> String {
    fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Skip unless clock-skew can run here: both capabilities its plan needs
/// (chaos-user/src/plan/clock.rs), with the probes' reasons.
pub fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::ProbeWriteUser)?;
    ctx.require_any(&[Capability::CgroupAncestor, Capability::CgroupAncestorRead])
}

/// `date +%s`, Python's `time.time()` and a C program calling
/// `clock_gettime(CLOCK_REALTIME)` through glibc, each started in the
/// target after the attack began, report the configured offset (within 1 s
/// for the whole-second tools, 10 ms for the C program); in the sibling
/// cgroup, the true time. For +90s and -2h; CLOCK_TAI only with `--clocks
/// realtime,tai`.
pub fn tools_in_the_target_read_the_offset(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    eprint!("[clocksource {}] ", clocksource());
    let mut problems = Vec::new();
    let hook = if ctx.require(Capability::Fentry).is_ok() { "fexit" } else { "tracepoint" };
    let answered = time_answered(ctx);
    eprint!("[time(2) {}] ", if answered { "answered by fmod_ret" } else { "return value unshifted" });
    for (offset, extra) in [("+90s", &[][..]), ("-2h", &["--clocks", "realtime,tai"][..])] {
        let off = offset_ns(offset);
        let (run, start) = attack(&w, offset, extra)?;
        anyhow::ensure!(
            start["mechanism"]["syscalls"] == hook && start["mechanism"]["time_fmod_ret"] == answered,
            "mechanism {}, expected system calls hooked by {hook} (BPF trampolines decide) and time_fmod_ret \
             {answered} (the `fmod_ret on system calls` probe decides)",
            start["mechanism"]
        );
        let new = Process::New { time_answered: answered };
        let target = check_tools(&w, w.target(), off, new);
        let sibling = check_tools(&w, w.sibling(), 0, new);
        // CLOCK_TAI: shifted only when asked.
        let before = true_ns();
        let tai = run_in(w.target(), &mut w.probe(&["now"]));
        let after = true_ns();
        let ended = end(run)?;
        for p in target? {
            problems.push(format!("{offset}, in the target: {p}"));
        }
        for p in sibling? {
            problems.push(format!("{offset}, in the sibling: {p}"));
        }
        let (ok, out) = tai?;
        anyhow::ensure!(ok, "the C probe failed: {out}");
        let v: Value = serde_json::from_str(&out)?;
        let tai_offset = if extra.is_empty() { 0 } else { off };
        // TAI is the wall clock plus leap seconds (37 s if set, often 0).
        problems.extend(within(
            "C CLOCK_TAI",
            v["tai_ns"].as_i64().unwrap_or(0),
            before,
            after + 38 * NS,
            tai_offset,
            0,
        ));
        if v["vdso"] != Value::Bool(false) {
            problems.push(format!("{offset}: a process started in the target still uses its vDSO"));
        }
        anyhow::ensure!(
            counter(&ended, "vdso_detached") >= 4 && counter(&ended, "syscall_shifted") >= 4,
            "{offset}: counters {}",
            ended["counters"]
        );
        anyhow::ensure!(counter(&ended, "write_failed") == 0, "{offset}: counters {}", ended["counters"]);
        // The C probe calls time(2) twice in the target: its return value
        // unshifted exactly when nothing answers it.
        let unshifted = counter(&ended, "time_return_unshifted");
        anyhow::ensure!(
            if answered { unshifted == 0 } else { unshifted >= 2 },
            "{offset}: time_return_unshifted {unshifted} with time(2) {}answered; counters {}",
            if answered { "" } else { "not " },
            ended["counters"]
        );
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The tracepoint fallback (kernels without BPF trampolines), forced with
/// CHAOS_CLOCK_SYSCALLS=tracepoint: the same readings in the target and the
/// sibling as with fexit.
pub fn tracepoint_fallback_reads_the_offset(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    ctx.require(Capability::Tracepoint)?;
    let w = World::new()?;
    let off = offset_ns("+90s");
    let (run, start) = attack_with_env(&w, "+90s", &[], &[("CHAOS_CLOCK_SYSCALLS", "tracepoint")])?;
    let new = Process::New { time_answered: false };
    let target = check_tools(&w, w.target(), off, new);
    let sibling = check_tools(&w, w.sibling(), 0, new);
    let ended = end(run)?;
    anyhow::ensure!(
        start["mechanism"]["syscalls"] == "tracepoint" && start["mechanism"]["time_fmod_ret"] == false,
        "mechanism {}",
        start["mechanism"]
    );
    let mut problems: Vec<String> = target?.into_iter().map(|p| format!("in the target: {p}")).collect();
    problems.extend(sibling?.into_iter().map(|p| format!("in the sibling: {p}")));
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    anyhow::ensure!(counter(&ended, "syscall_shifted") >= 3, "counters {}", ended["counters"]);
    Ok(())
}

/// A process started before the attack, reading through the clock.
pub struct Served {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Served {
    pub fn start(place: Place<'_>, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = place.spawn(&mut cmd)?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "the probe said {line:?}");
        Ok(Self { child, stdin, stdout })
    }

    /// Send a line: the probe's cue.
    fn cue(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"go\n")?;
        Ok(self.stdin.flush()?)
    }

    /// Send a line, read one line back.
    pub fn ask(&mut self) -> anyhow::Result<String> {
        self.cue()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }

    fn now(&mut self) -> anyhow::Result<(Value, i64, i64)> {
        let before = true_ns();
        let line = self.ask()?;
        let after = true_ns();
        Ok((serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{e}: {line:?}"))?, before, after))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that was already running when the attack started (it uses its
/// vDSO) reads the offset through glibc's clock_gettime (the per-process
/// uprobe) and the raw system call; its gettimeofday() and time() are the
/// true time, as documented (glibc sends them straight to the vDSO). A
/// shell started before the attack runs `date` after it began: the new
/// program reads the offset. After the attack, everything is true again.
pub fn running_processes_read_the_offset_through_libc(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    ctx.require(Capability::Uprobe)?;
    let w = World::new()?;
    let mut running = Served::start(w.target(), w.probe(&["serve"]))?;
    let mut sibling = Served::start(w.sibling(), w.probe(&["serve"]))?;
    let mut shell = Served::start(w.target(), {
        let mut c = Command::new("sh");
        // A shell that runs `date +%s` for each line it reads.
        c.args(["-c", "echo ready; while read l; do date +%s; done"]);
        c
    })?;
    let offset = offset_ns("+90s");
    let (run, _) = attack(&w, "+90s", &[])?;
    let target = running.now();
    let outside = sibling.now();
    let before = true_ns();
    let date = shell.ask();
    let after = true_ns();
    let ended = end(run)?;
    let mut problems = Vec::new();
    let (v, b, a) = target?;
    if v["vdso"] != Value::Bool(true) {
        problems.push("the running process lost its vDSO".into());
    }
    problems.extend(c_readings(&v, b, a, offset, Process::Running));
    let (v, b, a) = outside?;
    problems.extend(c_untouched(&v, b, a).into_iter().map(|p| format!("sibling: {p}")));
    let date: i64 = date?.parse()?;
    problems.extend(within(
        "date run by a shell started before the attack",
        date * NS,
        before,
        after,
        offset,
        NS,
    ));
    anyhow::ensure!(
        counter(&ended, "processes_probed") >= 2 && counter(&ended, "libc_shifted") >= 1,
        "counters {}",
        ended["counters"]
    );
    // After the end: the true time, through the same paths.
    let (v, b, a) = running.now()?;
    problems.extend(c_untouched(&v, b, a).into_iter().map(|p| format!("after the attack: {p}")));
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    eprint!("[running process: {} libc reads shifted] ", counter(&ended, "libc_shifted"));
    Ok(())
}

/// A certificate valid for one day, made by openssl outside the target.
fn certificate(w: &World) -> anyhow::Result<String> {
    let (key, cert) = (w.dir.join("key.pem"), w.dir.join("cert.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=chaos-test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match out {
        Err(e) => Err(Skip(format!("openssl is not available ({e}): apt-get install openssl")).into()),
        Ok(o) if !o.status.success() => {
            anyhow::bail!("openssl req failed: {}", String::from_utf8_lossy(&o.stderr))
        }
        Ok(_) => Ok(cert.display().to_string()),
    }
}

fn verify(place: Place<'_>, cert: &str) -> anyhow::Result<(bool, String)> {
    run_in(place, Command::new("openssl").args(["verify", "-CAfile", cert, cert]))
}

/// A real TLS check: `openssl verify` of a certificate valid for one day
/// passes, fails with "certificate has expired" in the target under a +2d
/// skew while it still passes in the sibling, and passes again after.
/// `openssl x509 -checkend` reads time(NULL)'s return value: it sees the
/// skew where clock-skew answers time(2) (fmod_ret on the system call), and
/// the true time elsewhere (documented, and checked here so that the
/// documentation stays true).
pub fn openssl_verify_expires_only_in_the_target(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let answered = time_answered(ctx);
    let w = World::new()?;
    let cert = certificate(&w)?;
    let (ok, out) = verify(w.target(), &cert)?;
    anyhow::ensure!(ok, "before the attack, openssl verify failed in the target: {out}");
    let (run, _) = attack(&w, "+2d", &[])?;
    let target = verify(w.target(), &cert);
    let sibling = verify(w.sibling(), &cert);
    let checkend =
        run_in(w.target(), Command::new("openssl").args(["x509", "-checkend", "0", "-noout", "-in", &cert]));
    let ended = end(run)?;
    let (ok, out) = target?;
    anyhow::ensure!(!ok && out.contains("certificate has expired"), "in the target under +2d: {out:?}");
    let (ok, out) = sibling?;
    anyhow::ensure!(ok, "in the sibling, openssl verify failed: {out}");
    let (_, out) = checkend?;
    if answered {
        anyhow::ensure!(
            out.contains("will expire") && !out.contains("will not"),
            "openssl x509 -checkend in the target: {out:?}, expected the certificate to have expired (time(2) \
             is answered by fmod_ret here)"
        );
    } else {
        anyhow::ensure!(
            out.contains("will not expire"),
            "openssl x509 -checkend in the target: {out:?} (time(NULL)'s return value is documented as not \
             shifted where nothing answers time(2))"
        );
    }
    let (ok, out) = verify(w.target(), &cert)?;
    anyhow::ensure!(ok, "after the attack, openssl verify failed in the target: {out}");
    anyhow::ensure!(counter(&ended, "syscall_shifted") > 0, "counters {}", ended["counters"]);
    eprint!(
        "[target: certificate has expired; sibling: OK; checkend in the target: {}] ",
        if answered { "expired" } else { "not expired (true time)" }
    );
    Ok(())
}

/// A stream of clock reads in the target: (CLOCK_MONOTONIC,
/// CLOCK_REALTIME) pairs, once per millisecond from its cue on.
pub struct Stream {
    served: Served,
    label: &'static str,
}

impl Stream {
    fn start(w: &World, place: Place<'_>, seconds: f64, label: &'static str) -> anyhow::Result<Self> {
        Ok(Self { served: Served::start(place, w.probe(&["stream", &seconds.to_string(), "1000"]))?, label })
    }

    fn go(&mut self) -> anyhow::Result<()> {
        self.served.cue()
    }

    fn samples(mut self) -> anyhow::Result<Samples> {
        let mut out = String::new();
        self.served.stdout.read_to_string(&mut out)?;
        let samples = out
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace().map(|x| x.parse::<i64>().ok());
                Some((it.next()??, it.next()??))
            })
            .collect();
        Ok((self.label, samples))
    }
}

/// realtime - monotonic outside the target (constant: nothing steps the
/// clock here).
fn true_delta() -> i64 {
    true_ns() - monotonic_ns() as i64
}

/// The skew a stream saw ends by `end_ns` (CLOCK_MONOTONIC) + `grace_ns`:
/// shifted samples before, true samples after, none shifted after a true
/// one.
fn ensure_skew_ended(
    label: &str,
    samples: &[(i64, i64)],
    offset: i64,
    end_ns: u64,
    grace_ns: u64,
    what: &str,
) -> anyhow::Result<()> {
    let delta = true_delta();
    let shifted = |(m, r): &(i64, i64)| ((r - m - delta) - offset).abs() < offset.abs() / 2;
    let untouched = |(m, r): &(i64, i64)| (r - m - delta).abs() < offset.abs() / 2;
    let n_shifted = samples.iter().filter(|s| shifted(s)).count();
    let n_true = samples.iter().filter(|s| untouched(s)).count();
    anyhow::ensure!(
        n_shifted > 20,
        "{what}, {label}: only {n_shifted} shifted reads: the skew was not in force"
    );
    anyhow::ensure!(n_true > 20, "{what}, {label}: only {n_true} true reads after it: the skew never ended");
    anyhow::ensure!(n_shifted + n_true == samples.len(), "{what}, {label}: reads neither true nor shifted");
    let last = samples.iter().filter(|s| shifted(s)).map(|s| s.0).max().unwrap_or(0);
    let first_true = samples.iter().filter(|s| untouched(s)).map(|s| s.0).min().unwrap_or(0);
    anyhow::ensure!(last < first_true, "{what}, {label}: a shifted read after a true one");
    let late_ms = (last - end_ns as i64) as f64 / 1e6;
    anyhow::ensure!(
        last <= (end_ns + grace_ns) as i64,
        "{what}, {label}: reads were still shifted {late_ms:.1} ms after the skew should have ended"
    );
    eprint!("[{label}: last shifted read {late_ms:+.1} ms from {what}] ");
    Ok(())
}

/// The safety suite's clock-skew (+90s): two programs in the target read
/// CLOCK_MONOTONIC and CLOCK_REALTIME once per millisecond, through both
/// paths: one started before the attack (its vDSO clock_gettime, shifted
/// by the uprobe) and one started after it began (no vDSO: shifted at the
/// system call).
pub struct ClockSkew {
    w: World,
}

fn require_streams(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    ctx.require(Capability::Uprobe)
}

impl Family for ClockSkew {
    /// The deadline counts from the beginning of the start (the injector's
    /// rule: a fault never outlives its duration), and attaching takes a
    /// second or two under QEMU's emulation, so the skew is in force for
    /// less.
    const DEADLINE: &'static str = "12s";
    const DEADLINE_MEASURE_S: f64 = 14.0;
    const EXIT_WITHIN: Duration = Duration::from_secs(60);
    type Prepared = Stream;
    type Measuring = Vec<Stream>;
    type Measured = Vec<Samples>;

    fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
        require_streams(ctx)
    }

    fn new() -> anyhow::Result<Self> {
        Ok(Self { w: World::new()? })
    }

    fn prepare(&self, seconds: f64) -> anyhow::Result<Stream> {
        Stream::start(&self.w, self.w.target(), seconds, "running process (uprobe)")
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        Ok(attack(&self.w, "+90s", &["--duration", duration])?.0)
    }

    fn measure(&self, mut running: Stream, seconds: f64) -> anyhow::Result<Vec<Stream>> {
        let label = "process started during the attack (syscall)";
        let mut started = Stream::start(&self.w, self.w.target(), seconds, label)?;
        running.go()?;
        started.go()?;
        Ok(vec![running, started])
    }

    fn finish(&self, streams: Vec<Stream>) -> anyhow::Result<Vec<Samples>> {
        streams.into_iter().map(Stream::samples).collect()
    }

    fn ensure_ended(&self, samples: &Vec<Samples>, window: Window, what: &str) -> anyhow::Result<()> {
        for (label, s) in samples {
            ensure_skew_ended(label, s, offset_ns("+90s"), window.to_ns, window.grace_ns, what)?;
        }
        Ok(())
    }

    fn loaded() -> Vec<String> {
        clock_programs_loaded()
    }

    /// The kernel frees a program once the last fd on it (the loader's, its
    /// links') is closed, asynchronously (after an RCU grace period, which
    /// takes a while under QEMU's emulation): up to 5 s, after every ending.
    fn unloaded_within(_: Ending) -> Option<Duration> {
        Some(UNLOADED_WITHIN)
    }

    fn check_counters(_: &Vec<Samples>, abort: &Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            counter(abort, "libc_shifted") > 20 && counter(abort, "syscall_shifted") > 20,
            "counters {}",
            abort["counters"]
        );
        Ok(())
    }
}

/// A stream's label and its (CLOCK_MONOTONIC, CLOCK_REALTIME) samples.
pub type Samples = (&'static str, Vec<(i64, i64)>);

fn clock_programs_loaded() -> Vec<String> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("clock_"))
        .collect()
}

/// See [`ClockSkew::unloaded_within`].
const UNLOADED_WITHIN: Duration = Duration::from_secs(5);

/// The clock programs are gone, within [`UNLOADED_WITHIN`].
fn ensure_unloaded(when: &str) -> anyhow::Result<()> {
    let polls = UNLOADED_WITHIN.as_millis() / 20;
    for _ in 0..polls {
        if clock_programs_loaded().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("clock programs still loaded {when}: {:?}", clock_programs_loaded())
}

/// Bad input: exit code 3, a message naming the fix, nothing loaded.
/// Runs everywhere (parsing comes before any kernel work).
pub fn bad_input_is_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("clock-flags")?;
    let cases: &[(&[&str], &str)] = &[
        (&["--offset", "90s"], "no sign: write +90s"),
        (&["--offset", "+90"], "no unit"),
        (&["--offset", "+1.5s"], "fractions"),
        (&["--offset", "+5y"], "unknown unit"),
        (&["--offset", "+0s"], "zero"),
        (&["--offset", "+40000d"], "absurd"),
        (&["--offset", "-36500d"], "before 1970"),
        (&["--offset", "+90s", "--clocks", "monotonic"], "time namespace"),
        (&["--offset", "+90s", "--clocks", "uptime"], "the clocks are realtime and tai"),
        (&[], "--offset"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "clock-skew", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        anyhow::ensure!(clock_programs_loaded().is_empty(), "{flags:?}: a program was loaded");
    }
    Ok(())
}

/// Where the verifier refuses bpf_probe_write_user (kernel lockdown, as on
/// this project's hosts), or tracing programs can neither call
/// bpf_get_current_ancestor_cgroup_id (5.14) nor read the task's ancestor
/// cgroups (no kernel of the matrix), the attack is refused, saying so
/// plainly, and `chaos doctor` says the same.
pub fn unavailable_says_why(ctx: &mut Ctx) -> anyhow::Result<()> {
    // The probe's own words: "kernel lockdown=integrity forbids it (...)".
    let detail = match ctx.require(Capability::ProbeWriteUser) {
        Ok(()) => match ctx.require_any(&[Capability::CgroupAncestor, Capability::CgroupAncestorRead]) {
            Ok(()) => {
                return Err(Skip(
                    "bpf_probe_write_user and the ancestor cgroups (helper or task read) work here: clock-skew \
                     is available, nothing to refuse"
                        .into(),
                )
                .into());
            }
            Err(_) => return no_ancestor_says_why(),
        },
        Err(e) => e.to_string(),
    };
    let target = Cgroup::new("clock-unavailable")?;
    let out = runner::run(&[
        "attack",
        "clock-skew",
        "--cgroup",
        &target.rel,
        "--offset",
        "+90s",
        "--duration",
        "10s",
    ])?;
    anyhow::ensure!(out.code() == Some(3), "exit code {:?}, expected 3: {}", out.code(), out.stderr);
    let lockdown =
        ["integrity", "confidentiality"].into_iter().find(|m| detail.contains(&format!("lockdown={m}")));
    let says = match lockdown {
        Some(mode) => format!("kernel lockdown={mode} forbids bpf_probe_write_user: clock-skew unavailable"),
        None => "bpf_probe_write_user is refused here".to_owned(),
    };
    anyhow::ensure!(out.stderr.contains(&says), "the message does not say {says:?}: {}", out.stderr);
    anyhow::ensure!(out.event("start").is_none(), "a start event");
    anyhow::ensure!(clock_programs_loaded().is_empty(), "a program was loaded");
    let doctor = runner::run(&["doctor", "--json"])?;
    let summary = doctor.events.first().map(|r| r["clock_skew"][0].to_string()).unwrap_or_default();
    let doctor_says =
        if lockdown.is_some() { "kernel lockdown forbids bpf_probe_write_user" } else { "UNAVAILABLE" };
    anyhow::ensure!(summary.contains(doctor_says), "chaos doctor says {summary}, not {doctor_says:?}");
    let said = out.stderr.find(&says).map(|i| &out.stderr[i..]).unwrap_or_default();
    eprint!("[{}] ", said.chars().take(80).collect::<String>());
    Ok(())
}

/// The refusal where tracing programs can find no ancestor cgroup.
fn no_ancestor_says_why() -> anyhow::Result<()> {
    let target = Cgroup::new("clock-unavailable")?;
    let args = ["attack", "clock-skew", "--cgroup", &target.rel, "--offset", "+90s", "--duration", "10s"];
    let out = runner::run(&args)?;
    anyhow::ensure!(out.code() == Some(3), "exit code {:?}, expected 3: {}", out.code(), out.stderr);
    let says =
        "unavailable on this kernel (matching the target cgroup's descendants): ancestor cgroup (tracing)";
    anyhow::ensure!(out.stderr.contains(says), "the message does not say {says:?}: {}", out.stderr);
    anyhow::ensure!(out.event("start").is_none(), "a start event");
    anyhow::ensure!(clock_programs_loaded().is_empty(), "a program was loaded");
    let doctor = runner::run(&["doctor", "--json"])?;
    let summary = doctor.events.first().map(|r| r["clock_skew"][0].to_string()).unwrap_or_default();
    let doctor_says = "UNAVAILABLE: tracing programs cannot call bpf_get_current_ancestor_cgroup_id";
    anyhow::ensure!(summary.contains(doctor_says), "chaos doctor says {summary}, not {doctor_says:?}");
    eprint!("[{}] ", out.stderr.trim().chars().take(160).collect::<String>());
    Ok(())
}

/// Usable from experiment files: a `clock-skew` step, and a hypothesis
/// checked inside the target (a command probe whose shell moves itself into
/// the target cgroup — writing 0 to cgroup.procs — and execs `openssl
/// verify`): it holds before the attack, is violated
/// under +2d (chaos aborts and rolls back: exit 1), and the certificate
/// verifies in the target again afterwards.
pub fn experiment_step_skews_the_target(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    let cert = certificate(&w)?;
    let procs = w.target.procs_file().display().to_string();
    let file = w.dir.join("cert-expiry.yaml");
    fs::write(
        &file,
        format!(
            "name: cert-expiry\n\
             targets:\n  app:\n    cgroup: {rel}\n\
             hypothesis:\n  probes:\n    - name: tls\n      command:\n        run: [sh, -c, 'echo 0 > {procs} && exec openssl verify -CAfile {cert} {cert}']\n      interval: 500ms\n      timeout: 10s\n\
             method:\n  - fault: clock-skew\n    offset: +2d\n    duration: 60s\n\
             max-duration: 5m\n",
            rel = w.target.rel,
        ),
    )?;
    let file = file.display().to_string();
    let checked = runner::run(&["validate", &file])?;
    anyhow::ensure!(checked.code() == Some(0), "chaos validate: {}", checked.stderr);
    let ended = runner::run(&["run", &file, "--no-live"])?;
    let abort = ended.events.iter().find(|e| e["event"] == "abort" && e["fault"] == "clock-skew");
    anyhow::ensure!(
        ended.code() == Some(1) && abort.is_some(),
        "chaos run: exit {:?} (expected 1: hypothesis violated), events {:?}\n{}",
        ended.code(),
        ended.events,
        ended.stderr
    );
    let (ok, out) = verify(w.target(), &cert)?;
    anyhow::ensure!(ok, "after the experiment, openssl verify failed in the target: {out}");
    ensure_unloaded("after chaos run exited")?;
    eprint!("[abort: {}] ", abort.map(|a| a["reason"].to_string()).unwrap_or_default());
    Ok(())
}

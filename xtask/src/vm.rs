//! Booting one of Debian's kernels in a VM and running a command there.
//!
//! virtme-ng boots the kernel under QEMU with TCG (KVM guests crash or hang
//! on our machines) and shares this machine's root filesystem read-only,
//! with tmpfs overlays for writes, so the binaries built here run unchanged
//! and the guest cannot change the host. It mounts cgroup2, tracefs and
//! securityfs, gives the guest a fresh /run, and makes the extracted
//! modules the guest's /lib/modules/<release>, so `modprobe sch_netem`
//! works.
//!
//! The command's stdout and stderr come back merged on vng's stdout (one
//! stream keeps their order); vng's stderr carries the kernel console.
//! Every boot has a hard timeout, and may have an idle timeout (no output
//! for that long: a hung test or kernel). vng, QEMU and all they start run in their
//! own process group, which is killed on timeout, on error, on Ctrl-C and
//! after a normal exit (stragglers); vng's temporary files go to a directory
//! of ours that is removed in every case.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    build::{self, root},
    kernels::{self, Kernel},
};

/// Console lines kept for the tail printed on a hang or panic.
const CONSOLE_KEPT: usize = 400;
/// Console lines printed on a hang or panic.
pub const CONSOLE_TAIL: usize = 50;
/// Console lines that mean the kernel broke (the VM may go on after an
/// oops, but nothing it reports afterwards can be trusted).
const KERNEL_FAILURES: &[&str] =
    &["Kernel panic", "Oops:", "kernel BUG at", "BUG: unable to handle", "general protection fault"];

/// `./x vm`: boot a kernel of the matrix and run a command in it.
#[derive(clap::Args)]
pub struct Args {
    /// The kernel to boot.
    #[arg(long, default_value = "debian-6.12")]
    kernel: Kernel,
    /// Kill the VM after this many seconds.
    #[arg(long, value_name = "SECONDS", env = "CHAOS_VM_TIMEOUT", default_value_t = 600)]
    timeout: u64,
    /// Print the kernel console as it comes (it is printed anyway, the last
    /// lines of it, when the VM hangs or the kernel panics).
    #[arg(long)]
    console: bool,
    /// One more kernel command-line parameter (repeatable), e.g.
    /// `--append lsm=lockdown,capability,yama,apparmor,tomoyo,bpf` to see
    /// what a kernel does with the BPF LSM switched on.
    #[arg(long, value_name = "PARAM")]
    append: Vec<String>,
    /// The command to run as root in the VM, from the repository root, with
    /// target/release first on PATH and CHAOS_BIN and CHAOS_KERNEL set.
    #[arg(last = true, default_values_t = ["chaos".to_owned(), "doctor".to_owned()])]
    command: Vec<String>,
}

impl Args {
    /// A run of `command` on `kernel` (for other tasks, e.g. benchmarks).
    pub fn new(kernel: Kernel, timeout: u64, command: Vec<String>) -> Self {
        Self { kernel, timeout, console: false, append: Vec::new(), command }
    }
}

pub fn run_task(args: Args) -> anyhow::Result<bool> {
    if args.kernel == Kernel::Host {
        bail!("--kernel host: run the command directly, this task boots VMs");
    }
    let bins = build::release()?;
    let release_dir = bins.chaos.parent().expect("in target/release").to_path_buf();
    let mut env = guest_env(&bins.chaos, args.kernel);
    let path =
        format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", release_dir.display());
    env.push(("PATH".into(), path));
    // No idle timeout: a command may rightly be silent for long.
    let opts = Options {
        timeout: Duration::from_secs(args.timeout),
        idle_timeout: None,
        echo_console: args.console,
        append: args.append,
    };
    let out = run(args.kernel, &guest_script(&env, &args.command), |line| println!("{line}"), &opts)?;
    eprintln!("== {} ({}): {} after {:.1}s", args.kernel.label(), out.release, out.exit, out.seconds);
    if let Some(reason) = out.broken() {
        eprintln!("!! {reason}; last console lines:");
        out.print_console_tail();
    }
    Ok(matches!(out.exit, Exit::Code(0)) && out.broken().is_none())
}

/// How a VM run is done.
pub struct Options {
    /// Kill the VM after this long, whatever it does.
    pub timeout: Duration,
    /// Kill the VM when the command printed nothing for this long (the
    /// console does not count: a hung kernel may go on printing).
    pub idle_timeout: Option<Duration>,
    pub echo_console: bool,
    /// More kernel command-line parameters.
    pub append: Vec<String>,
}

/// How the VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command's exit code (vng passes it through).
    Code(i32),
    /// vng itself died of a signal.
    Signal(i32),
    /// The hard timeout ran out; the VM was killed.
    TimedOut(Duration),
    /// The command printed nothing for this long; the VM was killed.
    Silent(Duration),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "vng killed by signal {s}"),
            Exit::TimedOut(t) => write!(f, "timed out after {} s (QEMU killed)", t.as_secs()),
            Exit::Silent(t) => write!(f, "hung: no output for {} s (QEMU killed)", t.as_secs()),
        }
    }
}

/// What a VM run left to look at.
pub struct Outcome {
    pub exit: Exit,
    /// `uname -r` in the VM.
    pub release: String,
    /// The first console line that says the kernel broke.
    pub kernel_failure: Option<String>,
    /// The last console lines.
    pub console: Vec<String>,
    pub seconds: f64,
    /// From start until the command's first output line: roughly the boot.
    pub boot_seconds: Option<f64>,
}

impl Outcome {
    /// Why the VM itself (not a test in it) failed, if it did.
    pub fn broken(&self) -> Option<String> {
        if let Exit::TimedOut(_) | Exit::Silent(_) = self.exit {
            return Some(format!("VM {}", self.exit));
        }
        self.kernel_failure.as_ref().map(|line| format!("the kernel broke: {line}"))
    }

    /// The console's last lines, for a hang or panic.
    pub fn console_tail(&self) -> &[String] {
        &self.console[self.console.len().saturating_sub(CONSOLE_TAIL)..]
    }

    pub fn print_console_tail(&self) {
        for line in self.console_tail() {
            eprintln!("    | {line}");
        }
    }
}

/// Environment for a command in the VM: the chaos binary, the kernel label
/// the tests' expectations are keyed by, and whatever CHAOS_* and RUST_*
/// settings the caller has (except the VM runner's own).
pub fn guest_env(chaos: &Path, kernel: Kernel) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            (k.starts_with("CHAOS_")
                && !k.starts_with("CHAOS_VM_")
                && k != "CHAOS_BIN"
                && k != "CHAOS_KERNEL")
                || k == "RUST_BACKTRACE"
                || k == "RUST_LOG"
        })
        .collect();
    env.push(("CHAOS_BIN".into(), chaos.display().to_string()));
    env.push(("CHAOS_KERNEL".into(), kernel.label()));
    env
}

/// The shell command vng runs as root in the guest. virtme-ng mounts
/// cgroup2 itself; mount it if a virtme-ng ever does not, since the tests
/// need it. Say so when the kernel's modules are not reachable (the
/// fq/netem tests would then fail for that reason), and when the command is
/// not: virtme-ng hides some host directories behind empty tmpfs mounts
/// (/run, /var/tmp, /var/cache, ...), so a checkout there cannot work.
/// stderr joins stdout so that the two keep their order.
pub fn guest_script(env: &[(String, String)], argv: &[String]) -> String {
    let mut s = String::from(
        "grep -qw cgroup2 /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 125\n\
         [ -e /lib/modules/$(uname -r)/modules.dep ] || echo \"x: no modules for $(uname -r) in the VM\"\n",
    );
    for (k, v) in env {
        s.push_str(&format!("export {}\n", sh_quote(&format!("{k}={v}"))));
    }
    if let Some(program) = argv.first() {
        let p = sh_quote(program);
        s.push_str(&format!(
            "command -v {p} >/dev/null || {{ echo \"x: \"{p}\" is not visible in the VM\"; exit 127; }}\n"
        ));
    }
    s.push_str("exec");
    for a in argv {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push_str(" 2>&1");
    s
}

fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain { s.to_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// Boot `kernel`, run `script` in it, hand each stdout line to `on_line`
/// as it comes, and return how it ended. Errors are for what kept the VM
/// from starting at all (and for Ctrl-C); a hang or panic is an Outcome.
pub fn run(
    kernel: Kernel,
    script: &str,
    mut on_line: impl FnMut(&str),
    opts: &Options,
) -> anyhow::Result<Outcome> {
    let image = kernels::image(kernel)?;
    let virtme = kernels::virtme_bin_dir()?;
    remove_stale_temp_dirs();
    let tmp = TempDir::new(&kernel.label())?;
    let script_file = ScriptFile::new(&kernel.label(), script)?;
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new(virtme.join("vng"));
    cmd.arg("--run")
        .arg(&image.vmlinuz)
        .args(["--disable-kvm", "--cpus", "2", "--memory", "2G", "--name", &kernel.label()])
        // Under TCG the clocksource watchdog sooner or later finds the TSC
        // "unstable" (an emulated vCPU stalls between its TSC and HPET
        // reads): some runs switched to the HPET mid-suite (every clock
        // read an emulated MMIO access) and flipped sched_clock's static
        // key at run time, which is kernel text patching (see below). The
        // emulated TSC of both vCPUs comes from one host clock, so telling
        // the kernel it is reliable is true here and skips the watchdog
        // (`tsc=reliable`, Documentation/admin-guide/kernel-parameters.txt).
        .args(["--append", "tsc=reliable"])
        .args(opts.append.iter().flat_map(|a| ["--append", a.as_str()]))
        // One host thread runs both vCPUs in turn. With a thread per vCPU
        // (MTTCG) the 6.12 guest panicked in four of six runs with `Oops:
        // int3` (three at `__schedule+0x407`, one at `sched_clock_cpu+0x9`),
        // each on a vCPU woken by the IPI that ends a kernel text patch
        // (`text_poke_bp()`: BPF trampolines, static keys): it executed the
        // temporary int3 after the patch had removed it. Round-robin TCG
        // has no such concurrency; the guest still has two CPUs.
        .arg("--qemu-opts=-accel tcg,thread=single")
        // The console goes to stderr only with --verbose; we want it for
        // the tail on a hang or panic.
        .arg("--verbose")
        .args(["--exec", &format!("sh {}", sh_quote(&script_file.0.display().to_string()))])
        .current_dir(root())
        .env("PATH", format!("{}:{path}", virtme.display()))
        .env("TMPDIR", &tmp.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    install_signal_handlers();
    let started = Instant::now();
    let mut group = Group::spawn(&mut cmd)?;
    let (tx, lines) = mpsc::channel();
    let stdout = group.child.stdout.take().expect("piped");
    let alive = Arc::new(AtomicU64::new(0));
    let stdout = Alive { inner: stdout, started, seen_ms: alive.clone() };
    std::thread::spawn(move || for_each_line(stdout, |l| tx.send(l).is_ok()));
    let console = Arc::new(Mutex::new(Console::default()));
    let sink = console.clone();
    let stderr = group.child.stderr.take().expect("piped");
    let echo = opts.echo_console;
    std::thread::spawn(move || {
        for_each_line(stderr, |l| {
            if echo {
                eprintln!("    | {l}");
            }
            sink.lock().expect("console lock").push(l);
            true
        })
    });

    let mut boot_seconds = None;
    let mut handle = |line: String, boot: &mut Option<f64>| {
        boot.get_or_insert_with(|| started.elapsed().as_secs_f64());
        on_line(&line);
    };
    let deadline = started + opts.timeout;
    let mut last_output = started;
    let exit = loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                last_output = Instant::now();
                handle(line, &mut boot_seconds);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(100)),
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if group.has_exited() {
            break None;
        }
        if Instant::now() >= deadline {
            break Some(Exit::TimedOut(opts.timeout));
        }
        let bytes_seen = started + Duration::from_millis(alive.load(Ordering::Relaxed));
        if let Some(idle) = opts.idle_timeout
            && last_output.max(bytes_seen).elapsed() >= idle
        {
            break Some(Exit::Silent(idle));
        }
    };
    // Kill what may be left (or everything, on a timeout), then collect the
    // last output: the readers end when the last writer is gone.
    group.kill();
    let status = group.reap()?;
    let drain_until = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = lines.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        handle(line, &mut boot_seconds);
    }
    let exit = exit.unwrap_or_else(|| {
        match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(c), _) => Exit::Code(c),
            (None, s) => Exit::Signal(s.unwrap_or(0)),
        }
    });
    let console = std::mem::take(&mut *console.lock().expect("console lock"));
    Ok(Outcome {
        exit,
        release: image.release,
        kernel_failure: console.failure,
        console: console.lines.into(),
        seconds: started.elapsed().as_secs_f64(),
        boot_seconds,
    })
}

/// Read lines (lossily: a console may say anything) until EOF or until
/// `f` says stop.
/// A reader that notes when it last returned bytes: any output is a sign
/// of life for the idle timeout, also a test's progress (`10.. 20.. `) that
/// ends its line only when the test ends.
struct Alive<R> {
    inner: R,
    started: Instant,
    seen_ms: Arc<AtomicU64>,
}

impl<R: Read> Read for Alive<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.seen_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

fn for_each_line(r: impl Read, mut f: impl FnMut(String) -> bool) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                if !f(line) {
                    return;
                }
            }
        }
    }
}

#[derive(Default)]
struct Console {
    lines: VecDeque<String>,
    failure: Option<String>,
}

impl Console {
    fn push(&mut self, line: String) {
        if self.failure.is_none() && KERNEL_FAILURES.iter().any(|p| line.contains(p)) {
            self.failure = Some(line.trim().to_owned());
        }
        if self.lines.len() == CONSOLE_KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// The process group of vng and everything it started (QEMU among them).
struct Group {
    child: Child,
    pgid: i32,
    reaped: bool,
}

/// Did a signal stop the run? Then `./x test` stops too.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The groups to kill when we are interrupted (0: a free slot): one per VM
/// running at once.
static ACTIVE_GROUPS: [AtomicI32; MAX_VMS] = [const { AtomicI32::new(0) }; MAX_VMS];
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The most VMs that may run at once.
pub const MAX_VMS: usize = 8;

impl Group {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd.spawn().context("starting vng")?;
        let pgid = child.id() as i32;
        // The caller runs at most MAX_VMS at once (matrix::run), so a slot
        // is free; were none, a signal would not reach this group, and its
        // Drop still kills it.
        let _ = ACTIVE_GROUPS
            .iter()
            .find(|slot| slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        Ok(Self { child, pgid, reaped: false })
    }

    /// Has vng exited? Checked without reaping it: while it is an unreaped
    /// zombie its pid, and so the group id, cannot be reused, which makes
    /// killing the group afterwards safe.
    fn has_exited(&self) -> bool {
        // SAFETY: waitid writes only into `info`, which outlives the call.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            r == 0 && info.si_pid() != 0
        }
    }

    fn kill(&self) {
        if !self.reaped {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }

    fn reap(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = self.child.wait().context("waiting for vng")?;
        self.reaped = true;
        for slot in &ACTIVE_GROUPS {
            let _ = slot.compare_exchange(self.pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        Ok(status)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.reap();
        }
    }
}

/// On SIGINT/SIGTERM/SIGHUP while a VM runs, kill its group (it is not in
/// our process group, so a Ctrl-C would not reach it) and let the run loop
/// clean up; with no VM running, die as if we had no handler.
fn install_signal_handlers() {
    extern "C" fn on_signal(sig: libc::c_int) {
        let mut killed = false;
        for slot in &ACTIVE_GROUPS {
            let pgid = slot.load(Ordering::SeqCst);
            if pgid > 0 {
                // SAFETY: kill is async-signal-safe.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                killed = true;
            }
        }
        if killed {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            // SAFETY: signal and raise are async-signal-safe.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only does async-signal-safe things.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
    });
}

/// Our temporary directory for one VM run (vng's TMPDIR), removed on drop.
struct TempDir(PathBuf);

const TEMP_PREFIX: &str = "chaos-vm-";

impl TempDir {
    fn new(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{TEMP_PREFIX}{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guest's script, in a file under the build directory (which the
/// guest sees, read-only): vng passes `--exec`'s command base64-encoded on
/// the kernel command line, which holds 2048 bytes (COMMAND_LINE_SIZE,
/// arch/x86/include/uapi/asm/setup.h), and the script with 6.12's `--skip`
/// filters and a long checkout path did not fit — ci39's 6.12 guest never
/// printed a line. On the command line now: `sh PATH`. Removed on drop.
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn new(label: &str, script: &str) -> anyhow::Result<Self> {
        let dir = root().join("target/vm-scripts");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{label}-{}.sh", std::process::id()));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Remove the temporary directories of runs whose xtask died before it
/// could (SIGKILL, a crash).
fn remove_stale_temp_dirs() {
    for e in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(TEMP_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_guest_shell() {
        assert_eq!(sh_quote("net_loss::egress"), "net_loss::egress");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("CHAOS_KERNEL=debian-6.1"), "CHAOS_KERNEL=debian-6.1");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        let script = guest_script(&[("A".into(), "x y".into())], &["/bin/run".into(), "--json".into()]);
        assert!(script.contains("\nexport 'A=x y'\n"), "{script}");
        assert!(script.ends_with("\nexec /bin/run --json 2>&1"), "{script}");
    }

    #[test]
    fn output_without_a_newline_is_a_sign_of_life() {
        let (r, mut w) = std::io::pipe().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let started = Instant::now() - Duration::from_secs(5);
        let reader = Alive { inner: r, started, seen_ms: seen.clone() };
        let lines = std::thread::spawn(move || {
            let mut got = Vec::new();
            for_each_line(reader, |l| {
                got.push(l);
                true
            });
            got
        });
        std::io::Write::write_all(&mut w, b"test x ... 0.. 10.. ").unwrap();
        let t0 = Instant::now();
        while seen.load(Ordering::Relaxed) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Seen before the line ended, about 5 s after `started`.
        assert!(seen.load(Ordering::Relaxed) >= 5000, "{}", seen.load(Ordering::Relaxed));
        std::io::Write::write_all(&mut w, b"ok\n").unwrap();
        drop(w);
        assert_eq!(lines.join().unwrap(), ["test x ... 0.. 10.. ok"]);
    }

    #[test]
    fn console_keeps_a_tail_and_the_first_failure() {
        let mut c = Console::default();
        for i in 0..CONSOLE_KEPT + 10 {
            c.push(format!("[ {i}.0] fine"));
        }
        c.push("[ 9.1] Kernel panic - not syncing: Fatal exception".into());
        c.push("[ 9.2] Oops: later".into());
        assert_eq!(c.lines.len(), CONSOLE_KEPT);
        assert_eq!(c.failure.as_deref(), Some("[ 9.1] Kernel panic - not syncing: Fatal exception"));
    }
}

//! `chaos attack io-error`: what programs see (sqlite3's own error message,
//! the errno of raw system calls), rates, scope (paths as the kernel
//! resolves them, operations, cgroups), call windows, and how the safety
//! suite (`safety.rs`) measures the end of the fault — all measured by the
//! calling programs, not by chaos's counters (which are checked against
//! them).

use std::{
    fs,
    os::unix::fs::symlink,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use chaos::capabilities::Capability;

use super::safety::{Ending, Family, Window};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::{Ctx, Skip},
    helpers::io::{self, Calls, Waiting},
    stats::check_rate_measured,
};

const CALLS: u64 = 2000;

/// Two sibling cgroups (an idle process in the target, as a container
/// would have) and a directory tree:
///
/// ```text
/// /tmp/chaos-test-<pid>-io/
///   data/          the prefix the attacks name
///     f            10 bytes
///     sub/deep/f
///     out-link  -> ../data2/g
///   data2/         same name prefix, outside
///     g
///   link        -> data/f
///   mnt/           an empty mount point for the bind-mount cases
/// ```
pub struct World {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub data2: PathBuf,
    pub target: Cgroup,
    pub sibling: Cgroup,
    anchor: Option<Child>,
}

impl World {
    pub fn new() -> anyhow::Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    /// The tree under `base` (a directory on the filesystem to test).
    pub fn new_in(base: &std::path::Path) -> anyhow::Result<Self> {
        let dir = base.join(format!("{}{}-io", crate::fixtures::cgroup::PREFIX, std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let data = dir.join("data");
        let data2 = dir.join("data2");
        fs::create_dir_all(data.join("sub/deep"))?;
        fs::create_dir_all(&data2)?;
        fs::create_dir_all(dir.join("mnt"))?;
        for f in [data.join("f"), data.join("sub/deep/f"), data2.join("g")] {
            fs::write(f, "0123456789")?;
        }
        symlink("../data2/g", data.join("out-link"))?;
        symlink("data/f", dir.join("link"))?;
        let mut world = Self {
            dir,
            data,
            data2,
            target: Cgroup::new("io-target")?,
            sibling: Cgroup::new("io-sibling")?,
            anchor: None,
        };
        let anchor = world.target().spawn(Command::new("sleep").arg("3600"))?;
        world.anchor = Some(anchor);
        Ok(world)
    }

    pub fn target(&self) -> Place<'_> {
        Place { netns: None, cgroup: Some(&self.target) }
    }

    pub fn sibling(&self) -> Place<'_> {
        Place { netns: None, cgroup: Some(&self.sibling) }
    }

    pub fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut a) = self.anchor.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The mechanism the running test forces (`CHAOS_IO_VIA`), if any: set by
/// [`forcing`] for the one test it runs (the harness runs tests one at a
/// time).
static FORCED: Mutex<Option<&'static str>> = Mutex::new(None);

fn forced() -> Option<&'static str> {
    *FORCED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// chaos's environment for the mechanism under test.
fn via_env(via: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    via.map(|v| vec![("CHAOS_IO_VIA", v)]).unwrap_or_default()
}

/// The capability of the mechanism under test: the BPF LSM (chosen first
/// where it works), or fmod_ret when forced.
fn capability(via: Option<&str>) -> Capability {
    if via == Some("fmod-ret") { Capability::FmodRet } else { Capability::BpfLsm }
}

/// Skip unless the mechanism under test works here.
fn require_io(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(capability(forced()))
}

/// Run `test` with chaos forced to the mechanism `via`, and undo that even
/// if it panics.
fn forcing(via: &'static str, ctx: &mut Ctx, test: fn(&mut Ctx) -> anyhow::Result<()>) -> anyhow::Result<()> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            *FORCED.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
    *FORCED.lock().unwrap_or_else(PoisonError::into_inner) = Some(via);
    let _reset = Reset;
    test(ctx)
}

/// The tests that say what programs see, again through fmod_ret programs
/// on `security_file_open`/`security_file_permission`
/// (`CHAOS_IO_VIA=fmod-ret`): the mechanism of kernels whose `lsm=` list
/// lacks `bpf` (Ubuntu's default), tested here on every kernel that allows
/// it, the BPF LSM's kernels included.
pub mod fmod_ret {
    use super::{Ctx, forcing};

    macro_rules! through_fmod_ret {
        ($($test:ident),* $(,)?) => {$(
            pub fn $test(ctx: &mut Ctx) -> anyhow::Result<()> {
                forcing("fmod-ret", ctx, super::$test)
            }
        )*};
    }

    // Rates and call windows are decided by the code both mechanisms share
    // (chaos-ebpf/src/io/mod.rs), tested through the LSM.
    through_fmod_ret!(
        sqlite_reports_the_injected_error,
        every_errno_reaches_the_caller,
        paths_match_what_the_kernel_resolves,
        operations_are_filtered,
        walk_depth_is_bounded,
    );
}

/// Start an io-error attack on the world's target (`--path` data unless
/// `extra` names paths) and wait until it is in force.
pub fn attack(world: &World, extra: &[&str]) -> anyhow::Result<ChaosRun> {
    attack_via(world, extra, forced())
}

/// [`attack`] through the mechanism `via` (`CHAOS_IO_VIA`; None: chaos's
/// choice).
fn attack_via(world: &World, extra: &[&str], via: Option<&'static str>) -> anyhow::Result<ChaosRun> {
    let data = world.data.display().to_string();
    let mut args = vec!["attack", "io-error", "--cgroup", &world.target.rel];
    if !extra.contains(&"--path") {
        args.extend(["--path", &data]);
    }
    args.extend_from_slice(extra);
    let mut run = ChaosRun::start_with_env(&args, &via_env(via))?;
    run.wait_event("start", Duration::from_secs(60))?;
    Ok(run)
}

/// `chaos attack io-error` failing 5% of calls under `path` with EIO for
/// 10 s: for the tests that expect a refusal.
fn eio_for_10s<'a>(cgroup: &'a str, path: &'a str) -> [&'a str; 12] {
    [
        "attack",
        "io-error",
        "--cgroup",
        cgroup,
        "--duration",
        "10s",
        "--errno",
        "EIO",
        "--percent",
        "5",
        "--path",
        path,
    ]
}

/// Stop an attack (SIGTERM) and return its end event.
pub fn end(run: ChaosRun) -> anyhow::Result<serde_json::Value> {
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(30))?;
    ended.event("abort").or(ended.event("stop")).cloned().ok_or_else(|| {
        anyhow::anyhow!("no end event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })
}

fn counter(end: &serde_json::Value, name: &str) -> u64 {
    end["counters"][name].as_u64().unwrap_or(u64::MAX)
}

fn sqlite(place: Place<'_>, db: &str, sql: &str) -> anyhow::Result<(bool, String)> {
    let mut cmd = Command::new("sqlite3");
    cmd.arg(db).arg(sql).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = place.spawn(&mut cmd)?.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text.trim().to_owned()))
}

fn require_sqlite() -> anyhow::Result<()> {
    match Command::new("sqlite3").arg("-version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(Skip("sqlite3 is not installed (apt-get install sqlite3; ./x setup does)".into()).into()),
    }
}

/// A real program nobody here wrote, writing a database under the prefix:
/// it reports the injected error in its own words; outside the prefix, and
/// from a sibling cgroup, the same command succeeds.
pub fn sqlite_reports_the_injected_error(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    require_sqlite()?;
    let w = World::new()?;
    let sql = "create table t(x); insert into t values (42); select x from t;";
    // (errno, what sqlite3 says: sqlite3ErrStr, SQLITE_IOERR / SQLITE_FULL)
    for (errno, says) in [("EIO", "disk I/O error"), ("ENOSPC", "database or disk is full")] {
        let run = attack(
            &w,
            &["--errno", errno, "--percent", "100", "--operations", "write", "--duration", "120s"],
        )?;
        let (inside, outside, sibling) = (
            w.path(&format!("data/{errno}.db")),
            w.path(&format!("data2/{errno}.db")),
            w.path(&format!("data/{errno}-sibling.db")),
        );
        let (ok_in, text_in) = sqlite(w.target(), &inside, sql)?;
        let (ok_out, text_out) = sqlite(w.target(), &outside, sql)?;
        let (ok_sib, text_sib) = sqlite(w.sibling(), &sibling, sql)?;
        let ended = end(run)?;
        eprint!("[{errno}: sqlite3 said {text_in:?}] ");
        anyhow::ensure!(
            !ok_in && text_in.contains(says),
            "{errno} under the prefix: sqlite3 said {text_in:?}, expected {says:?}"
        );
        anyhow::ensure!(ok_out && text_out == "42", "outside the prefix sqlite3 failed: {text_out:?}");
        anyhow::ensure!(ok_sib && text_sib == "42", "in the sibling cgroup sqlite3 failed: {text_sib:?}");
        anyhow::ensure!(counter(&ended, "write_failed") > 0, "chaos counted no failed write: {ended}");
        // Unharmed after the attack: the same command now works.
        let (ok_after, text_after) = sqlite(w.target(), &w.path(&format!("data/{errno}-after.db")), sql)?;
        anyhow::ensure!(ok_after && text_after == "42", "after the attack sqlite3 failed: {text_after:?}");
    }
    Ok(())
}

/// The operations whose failure rate is measured.
const RATE_OPS: [&str; 4] = ["read", "write", "open", "readdir"];

/// One attack at `percent`, with a prepared helper per operation (files
/// opened before the attack), run after it started: 2000 calls each. The
/// calls each helper saw, checked against chaos's own counts.
fn rates_once<'a>(w: &World, percent: f64, ops: &[&'a str]) -> anyhow::Result<Vec<(&'a str, Calls)>> {
    let f = w.path("data/f");
    let prepared: Vec<(&str, Waiting)> = ops
        .iter()
        .map(|&op| {
            let path = if op == "readdir" { w.path("data/sub") } else { f.clone() };
            let n = CALLS.to_string();
            Waiting::start(w.target(), "io-calls", &["--op", op, "--path", &path, "--count", &n, "--wait"])
                .map(|h| (op, h))
        })
        .collect::<anyhow::Result<_>>()?;
    let run = attack(w, &["--errno", "EIO", "--percent", &percent.to_string(), "--duration", "300s"])?;
    let mut results = Vec::new();
    for (op, h) in prepared {
        results.push((op, h.calls()?));
    }
    let ended = end(run)?;
    for (op, calls) in &results {
        anyhow::ensure!(calls.calls == CALLS, "{op}: {} calls made", calls.calls);
        anyhow::ensure!(
            calls.with(libc::EIO) == calls.failed(),
            "{op}: failures with other errnos than EIO: {:?}",
            calls.errnos
        );
        let (matched, failed) =
            (counter(&ended, &format!("{op}_matched")), counter(&ended, &format!("{op}_failed")));
        anyhow::ensure!(
            matched == calls.calls && failed == calls.failed(),
            "{op} at {percent}%: chaos counted {failed} failed of {matched} matched, the program saw {} of {}",
            calls.failed(),
            calls.calls
        );
    }
    Ok(results)
}

/// The measured failure rate of each operation over 2000 calls is within
/// the 99.9% binomial interval of the configured probability, and equals
/// chaos's own count.
pub fn error_rates_match_the_probability(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let w = World::new()?;
    for percent in [0.0, 1.0, 10.0, 50.0, 100.0] {
        let mut shown = Vec::new();
        for (op, calls) in rates_once(&w, percent, &RATE_OPS)? {
            // The first sample is this attack's; a second, if the first
            // misses, is a fresh attack for this operation alone.
            let mut first = Some(calls);
            let failed =
                check_rate_measured(&format!("{op} failures at {percent}%"), percent / 100.0, || {
                    let calls = match first.take() {
                        Some(c) => c,
                        None => rates_once(&w, percent, &[op])?.remove(0).1,
                    };
                    Ok((calls.failed(), calls.calls))
                })?;
            shown.push(format!("{op} {failed}/{CALLS}"));
        }
        eprint!("[{percent}%: {}] ", shown.join(", "));
    }
    Ok(())
}

/// Every configured errno is the one the calling program sees, for each
/// operation.
pub fn every_errno_reaches_the_caller(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let w = World::new()?;
    let (f, sub) = (w.path("data/f"), w.path("data/sub"));
    for (name, number) in [
        ("EIO", libc::EIO),
        ("ENOSPC", libc::ENOSPC),
        ("EACCES", libc::EACCES),
        ("EROFS", libc::EROFS),
        ("EDQUOT", libc::EDQUOT),
        ("EMFILE", libc::EMFILE),
        ("EPERM", libc::EPERM),
        ("ENOMEM", libc::ENOMEM),
    ] {
        let probe = Waiting::start(w.target(), "io-errnos", &["--file", &f, "--dir", &sub])?;
        let run = attack(&w, &["--errno", &number.to_string(), "--percent", "100", "--duration", "120s"])?;
        let out = probe.go()?;
        end(run)?;
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        for op in ["open", "read", "write", "readdir"] {
            anyhow::ensure!(
                seen[op].as_i64() == Some(i64::from(number)),
                "--errno {number} ({name}): {op} failed with errno {}, expected {number}",
                seen[op]
            );
        }
    }
    Ok(())
}

fn reads(place: Place<'_>, path: &str, extra: &[&str]) -> anyhow::Result<Calls> {
    let mut args = vec!["--op", "read", "--path", path, "--count", "20"];
    args.extend_from_slice(extra);
    io::run(place, &args)
}

/// Paths behave as the kernel resolves them: relative paths, `..`,
/// symlinks, bind mounts and submounts; never by string prefix; hard links
/// by where the kernel sees the file. On the temporary directory's
/// filesystem (in the VMs an overlayfs, which opens a second, real file
/// below each file) and on a tmpfs.
pub fn paths_match_what_the_kernel_resolves(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let mut bases = vec![std::env::temp_dir()];
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() && fs_type(&shm) != fs_type(&bases[0]) {
        bases.push(shm);
    }
    for base in &bases {
        paths_on(base).map_err(|e| anyhow::anyhow!("under {} ({}): {e:#}", base.display(), fs_type(base)))?;
    }
    Ok(())
}

/// The filesystem type of `p`, from /proc/self/mountinfo (for messages).
fn fs_type(p: &std::path::Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best = (0, String::from("?"));
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(mnt), Some(ty)) = (fields.get(4), fields.get(sep + 1)) else { continue };
        if p.starts_with(mnt) && mnt.len() >= best.0 {
            best = (mnt.len(), (*ty).to_owned());
        }
    }
    best.1
}

fn paths_on(base: &std::path::Path) -> anyhow::Result<()> {
    let w = World::new_in(base)?;
    // A hard link outside the prefix to a file inside it.
    fs::hard_link(w.data.join("f"), w.data2.join("hard"))?;
    let run =
        attack(&w, &["--errno", "EIO", "--percent", "100", "--operations", "read", "--duration", "300s"])?;
    let mnt = w.path("mnt");
    let cases: Vec<(String, Vec<String>, bool)> = vec![
        // (path read, helper options, expect failure)
        (w.path("data/f"), vec![], true),
        (w.path("data/sub/deep/f"), vec![], true),
        (w.path("data2/../data/f"), vec![], true),
        (w.path("data/../data2/g"), vec![], false),
        (w.path("data2/g"), vec![], false),
        (w.path("link"), vec![], true),
        (w.path("data/out-link"), vec![], false),
        (w.path("data2/hard"), vec![], false),
        (format!("{mnt}/f"), vec!["--bind".into(), format!("{}:{mnt}", w.data.display())], true),
        (format!("{mnt}/deep/f"), vec!["--bind".into(), format!("{}:{mnt}", w.path("data/sub"))], true),
        (format!("{mnt}/g"), vec!["--bind".into(), format!("{}:{mnt}", w.data2.display())], false),
        (w.path("data/sub/f"), vec!["--tmpfs".into(), w.path("data/sub"), "--create".into()], true),
        (w.path("data2/t"), vec!["--tmpfs".into(), w.path("data2"), "--create".into()], false),
    ];
    let mut problems = Vec::new();
    for (path, extra, fail) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let c = reads(w.target(), path, &extra)?;
        let want = if *fail { c.calls } else { 0 };
        if c.failed() != want {
            problems.push(format!(
                "{path} {extra:?}: {} of {} reads failed, expected {want}",
                c.failed(),
                c.calls
            ));
        }
    }
    // A relative path, from inside the prefix.
    let mut cmd = io::command_in(&w.data, &["--op", "read", "--path", "f", "--count", "20"]);
    let c = io::run_command(w.target(), &mut cmd)?;
    if c.failed() != c.calls {
        problems.push(format!("relative path f from data/: {} of {} reads failed", c.failed(), c.calls));
    }
    let mut cmd = io::command_in(&w.data, &["--op", "read", "--path", "../data2/g", "--count", "20"]);
    let c = io::run_command(w.target(), &mut cmd)?;
    if c.failed() != 0 {
        problems.push(format!("relative path ../data2/g from data/: {} reads failed", c.failed()));
    }
    // The sibling cgroup, same file.
    let c = reads(w.sibling(), &w.path("data/f"), &[])?;
    if c.failed() != 0 {
        problems.push(format!("the sibling cgroup: {} reads failed", c.failed()));
    }
    end(run)?;
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    // A file prefix matches through all its hard links.
    let run = attack(
        &w,
        &[
            "--path",
            &w.path("data/f"),
            "--errno",
            "EIO",
            "--percent",
            "100",
            "--operations",
            "read",
            "--duration",
            "300s",
        ],
    )?;
    let via_link = reads(w.target(), &w.path("data2/hard"), &[])?;
    let other = reads(w.target(), &w.path("data/sub/deep/f"), &[])?;
    end(run)?;
    anyhow::ensure!(
        via_link.failed() == via_link.calls,
        "file prefix: {} reads through its hard link failed",
        via_link.failed()
    );
    anyhow::ensure!(
        other.failed() == 0,
        "file prefix: another file in the directory failed {} reads",
        other.failed()
    );
    Ok(())
}

/// `--path` names what the target's processes see: looked up in their root
/// directory (here a chroot, as a container's), absolute symlinks inside it
/// resolved inside it.
pub fn paths_are_looked_up_in_the_target_root(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        return Err(Skip(
            "needs a static /bin/busybox for the chroot (apt-get install busybox-static)".into(),
        )
        .into());
    }
    let w = World::new()?;
    // jail/bin/busybox, jail/srv/data/f, and jail/data -> /srv/data: an
    // absolute symlink that means jail/srv/data only inside the jail.
    let jail = w.dir.join("jail");
    fs::create_dir_all(jail.join("bin"))?;
    fs::create_dir_all(jail.join("srv/data"))?;
    fs::copy(&busybox, jail.join("bin/busybox"))?;
    fs::write(jail.join("srv/data/f"), "0123456789")?;
    symlink("/srv/data", jail.join("data"))?;
    let cg = Cgroup::new("io-jail")?;
    let place = Place { netns: None, cgroup: Some(&cg) };
    let mut chrooted =
        place.spawn(Command::new("chroot").arg(&jail).args(["/bin/busybox", "sleep", "3600"]))?;
    let result = (|| {
        // Wait until the process runs in the jail (chroot has exec'ed).
        let mut rooted = false;
        for _ in 0..200 {
            if fs::read_link(format!("/proc/{}/root", chrooted.id())).is_ok_and(|r| r == jail) {
                rooted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::ensure!(rooted, "the chrooted process did not start");
        let args = ["attack", "io-error", "--cgroup", &cg.rel, "--path", "/data", "--errno", "EIO"];
        let mut run = ChaosRun::start_with_env(
            &[&args[..], &["--percent", "100", "--operations", "read", "--duration", "120s"]].concat(),
            &via_env(forced()),
        )?;
        run.wait_event("start", Duration::from_secs(60))?;
        let inside = reads(place, &jail.join("srv/data/f").display().to_string(), &[])?;
        let outside = reads(place, &w.path("data/f"), &[])?;
        end(run)?;
        anyhow::ensure!(
            inside.failed() == inside.calls,
            "jail/srv/data/f: {} of {} reads failed",
            inside.failed(),
            inside.calls
        );
        anyhow::ensure!(
            outside.failed() == 0,
            "a file outside the jail's /data failed {} reads",
            outside.failed()
        );
        Ok(())
    })();
    let _ = chrooted.kill();
    let _ = chrooted.wait();
    result
}

/// Only the configured operations fail.
pub fn operations_are_filtered(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let w = World::new()?;
    let (f, sub) = (w.path("data/f"), w.path("data/sub"));
    for ops in ["write", "open", "read", "readdir", "open,readdir"] {
        let probe = Waiting::start(w.target(), "io-errnos", &["--file", &f, "--dir", &sub])?;
        let run =
            attack(&w, &["--errno", "EIO", "--percent", "100", "--operations", ops, "--duration", "120s"])?;
        let out = probe.go()?;
        end(run)?;
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        for op in ["open", "read", "write", "readdir"] {
            let want = if ops.split(',').any(|o| o == op) { libc::EIO } else { 0 };
            anyhow::ensure!(
                seen[op].as_i64() == Some(i64::from(want)),
                "--operations {ops}: {op} returned errno {}, expected {want}",
                seen[op]
            );
        }
    }
    Ok(())
}

/// The path walk's bound (chaos_abi::io): one step per path component from
/// the file up to the `--path` it lies under, `--path` itself included:
/// 48 steps under `bpf_loop`, 16 in the bounded walk of kernels without it
/// (fmod_ret only). A file the last step reaches from fails; one
/// component deeper it passes, counted `unresolved`, never failed.
pub fn walk_depth_is_bounded(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let bounded = forced() == Some("fmod-ret") && ctx.require(Capability::BpfLoop).is_err();
    // MAX_DEPTH_BOUNDED and MAX_DEPTH.
    let (steps, walk) = if bounded { (16, "bounded walk") } else { (48, "bpf_loop walk") };
    let w = World::new()?;
    // data/d1/.../dN/f: N + 1 components below data, N + 2 steps reach it.
    let chain = |n: usize| -> anyhow::Result<String> {
        let mut dir = w.data.clone();
        for i in 1..=n {
            dir.push(format!("d{i}"));
        }
        fs::create_dir_all(&dir)?;
        let f = dir.join("f");
        fs::write(&f, "0123456789")?;
        Ok(f.display().to_string())
    };
    let (within, beyond) = (chain(steps - 2)?, chain(steps - 1)?);
    let run =
        attack(&w, &["--errno", "EIO", "--percent", "100", "--operations", "read", "--duration", "120s"])?;
    let near = reads(w.target(), &within, &[]);
    let far = reads(w.target(), &beyond, &[]);
    let ended = end(run)?;
    let (near, far) = (near?, far?);
    anyhow::ensure!(
        near.failed() == near.calls && near.calls > 0,
        "{walk}: a file {} components below --path: {} of {} reads failed, expected all",
        steps - 1,
        near.failed(),
        near.calls
    );
    anyhow::ensure!(
        far.failed() == 0,
        "{walk}: a file {steps} components below --path: {} of {} reads failed, expected none",
        far.failed(),
        far.calls
    );
    let unresolved = counter(&ended, "unresolved");
    anyhow::ensure!(
        unresolved >= far.calls,
        "{walk}: chaos counted {unresolved} unresolved calls, fewer than the {} reads past the bound",
        far.calls
    );
    eprint!("[{walk}: {} components fail, {steps} pass ({unresolved} unresolved)] ", steps - 1);
    Ok(())
}

/// `count` reads of `data/f`, prepared; then an EIO attack on reads with
/// `window` (`--after`, `--first`) at `percent`. The index of each read
/// that failed, and chaos's count of failed reads.
fn windowed_reads(w: &World, count: u64, percent: &str, window: &[&str]) -> anyhow::Result<(Vec<u64>, u64)> {
    let (f, n) = (w.path("data/f"), count.to_string());
    let h = Waiting::start(
        w.target(),
        "io-calls",
        &["--op", "read", "--path", &f, "--count", &n, "--timeline", "--wait"],
    )?;
    let mut args = vec!["--errno", "EIO", "--percent", percent, "--operations", "read", "--duration", "120s"];
    args.extend_from_slice(window);
    let run = attack(w, &args)?;
    let c = h.calls()?;
    let ended = end(run)?;
    Ok((c.failures.iter().map(|f| f[2]).collect(), counter(&ended, "read_failed")))
}

/// `--after 5 --first 10 --percent 100`: exactly calls 5 to 14 fail.
pub fn first_and_after_windows(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let w = World::new()?;
    let (failed, counted) = windowed_reads(&w, 40, "100", &["--after", "5", "--first", "10"])?;
    anyhow::ensure!(failed == (5..15).collect::<Vec<_>>(), "calls that failed: {failed:?}, expected 5..15");
    anyhow::ensure!(counted == 10, "chaos counted {counted} failures");
    // --first at 50%: only the first 100 matching calls are candidates,
    // each failing at 50%: the failures are all among them, and as many as
    // the binomial interval of 100 candidates allows.
    check_rate_measured("--first 100 at 50%: failures among the first 100 reads", 0.5, || {
        let (failed, counted) = windowed_reads(&w, 400, "50", &["--first", "100"])?;
        let outside: Vec<u64> = failed.iter().copied().filter(|i| *i >= 100).collect();
        anyhow::ensure!(outside.is_empty(), "--first 100: calls past the window failed: {outside:?}");
        anyhow::ensure!(
            counted == failed.len() as u64,
            "chaos counted {counted} failures, the program saw {}",
            failed.len()
        );
        Ok((failed.len() as u64, 100))
    })?;
    Ok(())
}

/// The safety suite's io-error: every read under `data` fails with EIO, in
/// the target only; a program in the target, prepared before the attack,
/// reads one file once per millisecond and records when each failed read
/// returned (CLOCK_MONOTONIC). Through the BPF LSM (`FMOD_RET` false), or
/// forced through fmod_ret programs.
pub struct Io<const FMOD_RET: bool> {
    w: World,
}

pub type IoError = Io<false>;
pub type IoErrorFmodRet = Io<true>;

impl<const FMOD_RET: bool> Io<FMOD_RET> {
    const VIA: Option<&'static str> = if FMOD_RET { Some("fmod-ret") } else { None };
    /// The programs of the mechanism (fmod_ret's with the path walk under
    /// bpf_loop, and in a bounded loop where the kernel lacks it).
    const PROGRAMS: &'static [&'static str] = if FMOD_RET {
        &["io_fmod_open", "io_fmod_rw", "io_bounded_open", "io_bounded_rw"]
    } else {
        &["io_open", "io_rw"]
    };
}

impl<const FMOD_RET: bool> Family for Io<FMOD_RET> {
    const DEADLINE: &'static str = "10s";
    const DEADLINE_MEASURE_S: f64 = 12.0;
    const EXIT_WITHIN: Duration = Duration::from_secs(30);
    type Prepared = Waiting;
    type Measuring = std::thread::JoinHandle<anyhow::Result<Calls>>;
    type Measured = Calls;

    fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
        ctx.require(capability(Self::VIA))
    }

    fn new() -> anyhow::Result<Self> {
        Ok(Self { w: World::new()? })
    }

    /// The read stream, waiting, so that it runs from the fault's first
    /// moment.
    fn prepare(&self, seconds: f64) -> anyhow::Result<Waiting> {
        let f = self.w.path("data/f");
        let secs = seconds.to_string();
        let args = [
            "--op",
            "read",
            "--path",
            &f,
            "--seconds",
            &secs,
            "--interval-us",
            "1000",
            "--timeline",
            "--wait",
        ];
        Waiting::start(self.w.target(), "io-calls", &args)
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        attack_via(
            &self.w,
            &["--errno", "EIO", "--percent", "100", "--operations", "read", "--duration", duration],
            Self::VIA,
        )
    }

    fn measure(&self, prepared: Waiting, _seconds: f64) -> anyhow::Result<Self::Measuring> {
        Ok(std::thread::spawn(move || prepared.calls()))
    }

    fn finish(&self, measuring: Self::Measuring) -> anyhow::Result<Calls> {
        measuring.join().map_err(|_| anyhow::anyhow!("stream thread panicked"))?
    }

    fn ensure_ended(&self, c: &Calls, window: Window, what: &str) -> anyhow::Result<()> {
        c.ensure_ended("reads", 100, window.to_ns + window.grace_ns, window.to_ns, what)
    }

    fn loaded() -> Vec<String> {
        Self::PROGRAMS.iter().filter(|p| program_loaded(p)).map(|p| (*p).to_owned()).collect()
    }

    /// After a controller's stop, at once; after `kill -9`, the kernel frees
    /// the programs asynchronously once the last fd is gone: up to 2 s.
    fn unloaded_within(ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Deadline => Some(Duration::ZERO),
            Ending::Kill9 => Some(Duration::from_secs(2)),
            Ending::Signal | Ending::Hung => None,
        }
    }

    fn check_counters(c: &Calls, abort: &serde_json::Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            abort["counters"]["read_failed"].as_u64() == Some(c.failures.len() as u64),
            "counters {} vs {} failures seen",
            abort["counters"],
            c.failures.len()
        );
        Ok(())
    }
}

fn program_loaded(name: &str) -> bool {
    aya::programs::loaded_programs().flatten().any(|p| p.name_as_str() == Some(name))
}

/// Bad flags: exit code 3, a message naming the flag, nothing attached.
/// Runs everywhere (parsing comes before any kernel work).
pub fn bad_flags_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("io-flags")?;
    let cases: &[(&[&str], &str)] = &[
        (&["--errno", "EFOO", "--percent", "5", "--path", "/tmp"], "unknown errno"),
        (&["--errno", "0", "--percent", "5", "--path", "/tmp"], "not an errno"),
        (&["--errno", "512", "--percent", "5", "--path", "/tmp"], "not an errno"),
        (&["--errno", "EIO", "--percent", "101", "--path", "/tmp"], "outside 0..100"),
        (&["--errno", "EIO", "--percent", "5"], "--path"),
        (&["--errno", "EIO", "--percent", "5", "--path", "/tmp", "--first", "0"], "--first 0"),
        (&["--errno", "EIO", "--percent", "5", "--path", "/tmp", "--operations", "fsync"], "fsync"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "io-error", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        let loaded = [IoError::loaded(), IoErrorFmodRet::loaded()].concat();
        anyhow::ensure!(loaded.is_empty(), "{flags:?}: loaded {loaded:?}");
    }
    Ok(())
}

/// Paths that cannot be resolved: exit 3, nothing attached.
pub fn bad_paths_are_refused(ctx: &mut Ctx) -> anyhow::Result<()> {
    require_io(ctx)?;
    let w = World::new()?;
    let missing = w.path("nope");
    let cases: &[(&str, &str)] =
        &[(&missing, "does not exist"), ("/dev/null", "neither a directory nor a regular file")];
    for (path, says) in cases {
        let args = eio_for_10s(&w.target.rel, path);
        runner::run(&args)?.refused(&format!("--path {path}"), says)?;
        let loaded = [IoError::loaded(), IoErrorFmodRet::loaded()].concat();
        anyhow::ensure!(loaded.is_empty(), "--path {path}: loaded {loaded:?}");
    }
    Ok(())
}

/// Where no mechanism works (the host: no BPF LSM, no kprobe override), the
/// attack is refused with each mechanism's reason, and nothing happens.
pub fn unavailable_says_why(ctx: &mut Ctx) -> anyhow::Result<()> {
    for (cap, name) in [(Capability::BpfLsm, "BPF LSM"), (Capability::FmodRet, "fmod_ret")] {
        if ctx.require(cap).is_ok() {
            return Err(Skip(format!("{name} works here: io-error is available, nothing to refuse")).into());
        }
    }
    let w = World::new()?;
    let data = w.data.display().to_string();
    let args = eio_for_10s(&w.target.rel, &data);
    let out = runner::run(&args)?;
    anyhow::ensure!(out.code() == Some(3), "exit code {:?}, expected 3: {}", out.code(), out.stderr);
    for says in ["unavailable because", "BPF LSM:", "fmod_ret:", "kprobe + bpf_override_return"] {
        anyhow::ensure!(out.stderr.contains(says), "the message does not say {says:?}: {}", out.stderr);
    }
    anyhow::ensure!(out.event("start").is_none(), "a start event");
    Ok(())
}

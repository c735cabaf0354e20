//! Bad input: a clear error naming the thing and the fix, the documented
//! exit code, and the system exactly as it was (nothing loaded, attached or
//! written).

use std::{
    fs,
    io::Write,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{DirBuilderExt, OpenOptionsExt},
        process::CommandExt,
    },
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use chaos::{
    attach::netns::Netns as ChaosNetns,
    capabilities::Capability,
    state::{Leftover, Record},
};

use super::net_loss::{EGRESS, attack, end};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        lab::Lab,
        netns::Netns as TestNetns,
        runner::{self, ChaosRun, Ended},
    },
    harness::Ctx,
};

fn ensure_untouched(what: &str) -> anyhow::Result<()> {
    crate::fixtures::leaks::check_chaos().map_err(|leak| anyhow::anyhow!("{what}: left {leak}"))
}

pub fn bad_input_is_refused_with_nothing_attached(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let cg = Cgroup::new("badinput")?;
    let ok_target = ["--cgroup", cg.rel.as_str()];
    let with = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["attack", "net-loss"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let t = |extra: &[&'static str]| {
        let mut v = with(&[]);
        v.extend(ok_target.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&["--cgroup", "/no/such/cgroup", "--percent", "5", "--duration", "5s"]), "does not exist"),
        (
            with(&["--pid", "999999999", "--percent", "5", "--duration", "5s"]),
            "no process with pid 999999999",
        ),
        (with(&["--cgroup", "/", "--percent", "5", "--duration", "5s"]), "--allow-host"),
        (t(&["--percent", "101", "--duration", "5s"]), "outside 0..100"),
        (t(&["--percent", "-1", "--duration", "5s"]), "--percent"),
        (t(&["--percent", "abc", "--duration", "5s"]), "not a percentage"),
        (t(&["--percent", "5", "--duration", "0s"]), "zero duration"),
        (t(&["--percent", "5", "--duration", "25h"]), "longer than"),
        (t(&["--percent", "5", "--duration", "5"]), "no unit"),
        (t(&["--percent", "5", "--duration", "-5s"]), "--duration"),
        (t(&["--percent", "5"]), "--duration"),
        (t(&["--percent", "5", "--duration", "5s", "--cidr", "10.0.0.0/33"]), "prefix length"),
        (t(&["--percent", "5", "--duration", "5s", "--port", "0"]), "--port"),
        (
            t(&["--percent", "5", "--duration", "5s", "--direction", "ingress", "--interface", "lo"]),
            "--interface applies to egress",
        ),
        (
            t(&["--percent", "5", "--duration", "5s", "--interface", "nosuchdev0"]),
            "nosuchdev0 does not exist",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        runner::run(&args)?.refused(&format!("chaos {}", args.join(" ")), needle)?;
        ensure_untouched(&format!("chaos {}", args.join(" ")))?;
    }
    hardening_cases(&cg)
}

/// Issue 11: inputs that used to panic or slip through.
fn hardening_cases(cg: &Cgroup) -> anyhow::Result<()> {
    let net_loss = |target: &str| -> Vec<String> {
        ["attack", "net-loss", "--cgroup", target, "--percent", "5", "--duration", "5s"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    // A top-level systemd slice stands for the host (on this machine's
    // layout there is none: one of the test's own, named like one).
    let slice = Cgroup::new("host.slice")?;
    let scratch = Scratch::new()?;
    let pwned = scratch.0.join("pwned");
    let experiment = scratch.0.join("inject.yaml");
    std::fs::write(
        &experiment,
        format!(
            "name: inject\nvariables: {{x: ok}}\ntargets: {{a: {{cgroup: {}}}}}\nhypothesis:\n  probes:\n    \
             - name: p\n      command: {{run: 'echo ${{x}}'}}\nmethod:\n  - {{fault: net-loss, percent: 1, duration: \
             1s}}\n",
            cg.rel
        ),
    )?;
    let set = format!("x=$(touch {})", pwned.display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (net_loss(&slice.rel), "top-level grouping of the host"),
        (
            [
                "attack",
                "io-error",
                "--cgroup",
                &cg.rel,
                "--errno",
                "EIO",
                "--percent",
                "5",
                "--duration",
                "5s",
            ]
            .iter()
            .chain(&["--path", "data"])
            .map(|s| s.to_string())
            .collect(),
            "--path data is relative",
        ),
        (
            ["run", &experiment.to_string_lossy(), "--set", &set].iter().map(|s| s.to_string()).collect(),
            "substituted into it",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let what = format!("chaos {}", args.join(" "));
        runner::run(&args)?.refused(&what, needle)?;
        ensure_untouched(&what)?;
    }
    anyhow::ensure!(!pwned.exists(), "a --set value ran as a shell command: {} exists", pwned.display());

    // A state directory others can write to.
    let open_dir = scratch.0.join("state");
    std::fs::create_dir(&open_dir)?;
    std::fs::set_permissions(&open_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let what = format!("CHAOS_STATE_DIR={} chaos attack net-loss", open_dir.display());
    let args = net_loss(&cg.rel);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChaosRun::start_with_env(&args, &[("CHAOS_STATE_DIR", &open_dir.to_string_lossy())])?
        .wait(Duration::from_secs(60))?
        .refused(&what, "writable by others")?;
    anyhow::ensure!(
        std::fs::read_dir(&open_dir)?.next().is_none(),
        "{what}: wrote into {}",
        open_dir.display()
    );
    ensure_untouched(&what)?;

    // A cgroup named with bytes that are not UTF-8 (it exists: chaos used
    // to resolve it and then panic recording it), as an argument and
    // through a process in it.
    let bad = cg.path.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    std::fs::create_dir(&bad)?;
    let mut cmd = Command::new(runner::bin());
    cmd.args(["attack", "net-loss", "--percent", "5", "--duration", "5s", "--cgroup"]).arg(&bad);
    refused(cmd, "chaos attack net-loss --cgroup <not UTF-8>", "not valid UTF-8")?;
    let mut sleeper = Command::new("sleep").arg("60").spawn()?;
    let moved = std::fs::write(bad.join("cgroup.procs"), sleeper.id().to_string());
    let mut cmd = Command::new(runner::bin());
    cmd.args([
        "attack",
        "net-loss",
        "--percent",
        "5",
        "--duration",
        "5s",
        "--pid",
        &sleeper.id().to_string(),
    ]);
    let result = moved.map_err(anyhow::Error::from).and_then(|()| {
        refused(
            cmd,
            "chaos attack net-loss --pid <a process in a cgroup not named in UTF-8>",
            "not valid UTF-8",
        )
    });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    result?;

    // The cgroup chaos itself runs in, and its parent.
    let inner = cg.path.join("chaos");
    std::fs::create_dir(&inner)?;
    for target in [format!("{}/chaos", cg.rel), cg.rel.clone()] {
        let mut cmd = Command::new(runner::bin());
        cmd.args(net_loss(&target));
        let procs = inner.join("cgroup.procs");
        // SAFETY: between fork and exec: only a write(2) to a file.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        refused(
            cmd,
            &format!("chaos attack net-loss --cgroup {target}, run inside it"),
            "holds chaos itself",
        )?;
    }
    Ok(())
}

/// A private temporary directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        Ok(Self(chaos::safe_fs::private_dir(&std::env::temp_dir(), "chaos-test-scratch")?))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `refused` for a command built by hand: exit code 3, `says` on stderr,
/// no event on stdout, nothing left attached.
fn refused(mut cmd: Command, what: &str, says: &str) -> anyhow::Result<()> {
    let out = cmd.env("CHAOS_LOG", "info").stdin(std::process::Stdio::null()).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.code() == Some(3),
        "{what}: exit code {:?}, expected 3: {stderr}",
        out.status.code()
    );
    anyhow::ensure!(stderr.contains(says), "{what}: the message does not say {says:?}: {stderr}");
    anyhow::ensure!(out.stdout.is_empty(), "{what}: printed {}", String::from_utf8_lossy(&out.stdout));
    ensure_untouched(what)
}

/// `--report`, `--junit` and `--events` in a directory where someone has
/// planted symlinks (at the paths, and at the `PATH.tmp` names chaos used
/// to write through): what they point to is untouched, and the reports are
/// written.
pub fn output_paths_are_not_followed(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let cg = Cgroup::new("outputs")?;
    let scratch = Scratch::new()?;
    let dir = &scratch.0;
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious")?;
    let experiment = dir.join("e.yaml");
    std::fs::write(
        &experiment,
        format!(
            "name: outputs\ntargets: {{a: {{cgroup: {}}}}}\nhypothesis:\n  probes:\n    - name: p\n      \
             command: {{run: [true]}}\nmethod:\n  - {{fault: net-loss, percent: 1, duration: 1s}}\n",
            cg.rel
        ),
    )?;
    for planted in ["report.json", "report.json.tmp", "junit.xml.tmp", "events.jsonl"] {
        std::os::unix::fs::symlink(&victim, dir.join(planted))?;
    }
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (report, junit, events) = (path("report.json"), path("junit.xml"), path("events.jsonl"));
    let out = runner::run(&[
        "run",
        &experiment.to_string_lossy(),
        "--dry-run",
        "--report",
        &report,
        "--junit",
        &junit,
        "--events",
        &events,
    ])?;
    anyhow::ensure!(out.code() == Some(0), "chaos run --dry-run: exit code {:?}: {}", out.code(), out.stderr);
    anyhow::ensure!(
        std::fs::read_to_string(&victim)? == "precious",
        "root wrote through a planted symlink: {} now holds {:?}",
        victim.display(),
        std::fs::read_to_string(&victim)?
    );
    for (file, says) in [(&report, "\"verdict\": \"dry-run\""), (&junit, "<testsuites"), (&events, "")] {
        let meta = std::fs::symlink_metadata(file)?;
        anyhow::ensure!(meta.file_type().is_file(), "{file} is not a regular file");
        let text = std::fs::read_to_string(file)?;
        anyhow::ensure!(text.contains(says), "{file} does not contain {says:?}: {text}");
    }
    ensure_untouched("chaos run --dry-run with planted symlinks")
}

pub fn not_root_is_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let cg = Cgroup::new("notroot")?;
    let out = Command::new(runner::bin())
        .args(["attack", "net-loss", "--cgroup", &cg.rel, "--percent", "5", "--duration", "5s"])
        .uid(65534)
        .gid(65534)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.code() == Some(3),
        "exit code {:?} as nobody, expected 3: {stderr}",
        out.status.code()
    );
    anyhow::ensure!(stderr.contains("needs root"), "unhelpful error as nobody: {stderr}");
    ensure_untouched("chaos as nobody")
}

pub fn second_attack_on_same_target_is_refused(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let lab = Lab::new()?;
    let first = attack(&lab, &["--percent", "10", "--duration", "60s"])?;
    let second = ChaosRun::start(&[
        "attack",
        "net-loss",
        "--cgroup",
        &lab.target.rel,
        "--percent",
        "20",
        "--duration",
        "5s",
    ])?
    .wait(Duration::from_secs(20))?;
    anyhow::ensure!(
        second.code() == Some(4),
        "second attack: exit code {:?}, expected 4; {}",
        second.code(),
        second.stderr
    );
    anyhow::ensure!(
        second.stderr.contains("already under net-loss attack")
            && second.stderr.contains(&first.pid.to_string()),
        "second attack: unhelpful error: {}",
        second.stderr
    );
    // The first one is unharmed and still running.
    anyhow::ensure!(first.stderr().contains("started"), "first attack log: {}", first.stderr());
    let end = end(first)?;
    anyhow::ensure!(end["reason"] == "SIGTERM", "first attack ended with {}", end["reason"]);
    Ok(())
}

/// What one of several simultaneous attacks did.
enum Raced {
    Started(ChaosRun),
    Ended(Ended),
}

/// Issue 11, item 3: attacks started at the same instant on one target.
/// Exactly one may start; every other must exit 4 — every round, over
/// 200 rounds (on the host; see below). A `chaos recover` starts alongside each round: its end
/// (like a run's clean end) used to remove the state directory, whose inode
/// the lock was, so that a newcomer locked a new directory while another
/// held the old one's lock — and both injected.
///
/// The lock is flock(2) on a file: nothing in it depends on the kernel, so
/// the 200 rounds run on the host, where a round takes ~0.3 s; in a VM under
/// emulation a round of eight starts takes 8 s (14 s on CI), and 3 rounds
/// there check that the same holds on that kernel (20 took over 3 minutes
/// of CI's budget per kernel, 8 over 2 minutes).
pub fn simultaneous_attacks_on_one_target_have_one_winner(ctx: &mut Ctx) -> anyhow::Result<()> {
    let on_host = crate::harness::on_host();
    let rounds: usize = if on_host { 200 } else { 3 };
    const ATTACKERS: usize = 8;
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let lab = Lab::new()?;
    let args = ["attack", "net-loss", "--cgroup", &lab.target.rel, "--percent", "10", "--duration", "60s"];
    let began = Instant::now();
    for round in 0..rounds {
        // A sign of life for the VM runner's no-output timeout (every round
        // in a VM, where a round takes seconds and more under load).
        if round % 20 == 0 || !on_host {
            eprint!("{round}.. ");
        }
        let recover = ChaosRun::start(&["recover"])?;
        let runs = (0..ATTACKERS).map(|_| ChaosRun::start(&args)).collect::<anyhow::Result<Vec<_>>>()?;
        // Each attack either reaches `start` or exits; the winner is stopped
        // only once every other has exited (a winner ending early would let
        // a late starter win fairly).
        let (raced, recovered) = std::thread::scope(|s| {
            let recovered = s.spawn(move || recover.wait(Duration::from_secs(30)));
            let handles: Vec<_> = runs
                .into_iter()
                .map(|mut run| {
                    s.spawn(move || match run.wait_event("start", Duration::from_secs(30)) {
                        Ok(_) => Ok(Raced::Started(run)),
                        Err(_) => run.wait(Duration::from_secs(30)).map(Raced::Ended),
                    })
                })
                .collect();
            let raced: Vec<anyhow::Result<Raced>> =
                handles.into_iter().map(|h| h.join().expect("no panic")).collect();
            (raced, recovered.join().expect("no panic"))
        });
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for r in raced {
            match r? {
                Raced::Started(run) => winners.push(run),
                Raced::Ended(ended) => losers.push(ended),
            }
        }
        let winner_pids: Vec<i32> = winners.iter().map(|w| w.pid).collect();
        for w in winners {
            let end = end(w)?;
            anyhow::ensure!(
                end["reason"] == "SIGTERM",
                "round {round}: a winner ended with {}",
                end["reason"]
            );
        }
        let recovered = recovered?;
        anyhow::ensure!(
            recovered.code() == Some(0),
            "round {round}: chaos recover exited {:?}: {}",
            recovered.code(),
            recovered.stderr
        );
        anyhow::ensure!(
            winner_pids.len() == 1,
            "round {round}: {} of {ATTACKERS} simultaneous attacks on one target started (pids {winner_pids:?}); \
             the others exited {:?}; {}",
            winner_pids.len(),
            losers.iter().map(Ended::code).collect::<Vec<_>>(),
            losers.iter().find(|l| l.code() != Some(4)).map_or(String::new(), |l| l.stderr.clone())
        );
        if let Some(bad) = losers.iter().find(|l| l.code() != Some(4)) {
            anyhow::bail!(
                "round {round}: a losing attack exited {:?}, expected 4 (already under attack): {}",
                bad.code(),
                bad.stderr
            );
        }
    }
    eprint!(
        "[{rounds} rounds of {ATTACKERS} simultaneous attacks (+ chaos recover): one winner each, in {:.1}s] ",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A state file planted by the test, removed on drop.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Issue 11, item 2: chaos as PID 1 of a PID namespace (a container with
/// the host's /run/chaos) while a dead run that was PID 1 too left a
/// clsact qdisc recorded in `1.jsonl`. The new run must recover it (the
/// clsact goes), not truncate that file as its own (the clsact would stay
/// forever, its record lost).
pub fn a_dead_run_with_our_pid_is_recovered_not_overwritten(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    ctx.require(Capability::CgroupSkb)?;
    let ns = TestNetns::new("samepid")?;
    ns.exec(&["tc", "qdisc", "add", "dev", "lo", "clsact"])?;
    let id = ChaosNetns::at(ns.path())?.id();
    let inode = id.inode;
    let dir = chaos::state::state_dir();
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let dead = Planted(dir.join("1.jsonl"));
    let records = [
        Record::Owner { pid: 1, command: "chaos attack (killed)".into() },
        Record::Netns(id),
        Record::Leftover(Leftover::Clsact { netns: inode, ifindex: 1, ifname: "lo".into() }),
    ];
    let text: String = records.iter().map(|r| serde_json::to_string(r).expect("serializes") + "\n").collect();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dead.0)?
        .write_all(text.as_bytes())?;

    // An empty cgroup: chaos acts in its own namespace (the host's), on lo
    // only, where the rule matches nothing.
    let cg = Cgroup::new("samepid")?;
    let out = Command::new("unshare")
        // Its own /proc too: /proc/1 is then chaos, as in a container.
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(runner::bin())
        .args(["attack", "net-loss", "--cgroup", &cg.rel, "--interface", "lo", "--percent", "1"])
        .args(["--duration", "1s"])
        .env("CHAOS_LOG", "info")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "chaos as PID 1 exited {:?}: {stderr}", out.status.code());
    // The record was read and settled (an empty clsact chaos added is kept,
    // said so and closed: chaos::attach::tc), not truncated away unread.
    anyhow::ensure!(
        stderr.contains("clsact qdisc on lo") && stderr.contains("left: the empty clsact stays on lo"),
        "the dead run's record was not recovered; chaos said: {stderr}"
    );
    anyhow::ensure!(!dead.0.exists(), "the dead run's state file is still there after its recovery");
    Ok(())
}

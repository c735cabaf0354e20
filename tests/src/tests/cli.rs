//! Bad input: a clear error naming the thing and the fix, the documented
//! exit code, and the system exactly as it was (nothing loaded, attached or
//! written).

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use chaos::capabilities::Capability;

use super::net_loss::{EGRESS, attack, end};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        lab::Lab,
        runner::{self, ChaosRun},
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
    Ok(())
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

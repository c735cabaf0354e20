//! Containers as targets, on real runtimes (in the VMs: see
//! fixtures/containers.rs): `--container NAME` finds the container through
//! its runtime's API and attacks its cgroup in its network namespace;
//! `chaos targets` lists what runs; bad names are refused with nothing
//! injected.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use chaos::{capabilities::Capability, targets::CgroupFs};

use super::net_loss::{EGRESS, end};
use crate::{
    fixtures::{
        containers::{CNI_GATEWAY, CTR_NAMESPACE, Kind, Runtime, output},
        cri,
        lab::Lab,
        netns::{Netns, ip},
        runner::ChaosRun,
    },
    harness::Ctx,
    stats::check_rate_measured,
};

/// Pings per sample, 5 ms apart.
const PINGS: u64 = 400;

/// net-loss at 50% on one container by name, its exec'd ping measuring it
/// from inside: its loss within the binomial interval, and a second
/// container of the same runtime (on the same bridge for docker and
/// podman; wired to the same peer for containerd) loses nothing.
fn net_loss_by_name(ctx: &mut Ctx, kind: Kind) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let mut rt = Runtime::start(kind)?;
    // containerd makes no network itself (CNI is the kubelet's): each
    // container joins a namespace of the test's with a veth to one peer.
    // Two namespaces, not one: busybox ping tells its replies from another
    // ping's by ICMP id, its pid, and both pings are pid 2 or so of their
    // containers: in one namespace each would count the other's replies.
    let lab = if kind == Kind::Containerd { Some(Lab::new()?) } else { None };
    let other_ns = match &lab {
        Some(lab) => Some(second_namespace(lab)?),
        None => None,
    };
    rt.run("chaos-web", lab.as_ref().map(|l| l.ctr.path()).as_deref())?;
    rt.run("chaos-other", other_ns.as_ref().map(|n| n.path()).as_deref())?;
    let (to, to_other) = match &lab {
        Some(l) => (l.peer_ip.to_string(), OTHER_PEER.to_owned()),
        None => (rt.gateway("chaos-web")?, rt.gateway("chaos-other")?),
    };
    let fs = CgroupFs::discover()?;
    let cgroup = fs.cgroup_of(Path::new("/proc"), rt.pid("chaos-web")?)?;
    let cgroup_id = std::fs::metadata(&cgroup)?.ino();
    let runtime = kind.name();
    check_rate_measured(&format!("{runtime} container's pings lost"), 0.5, || {
        let mut run = ChaosRun::start(&[
            "attack",
            "net-loss",
            "--container",
            "chaos-web",
            "--runtime",
            runtime,
            "--direction",
            "egress",
            "--percent",
            "50",
            "--duration",
            "120s",
        ])?;
        let start = run.wait_event("start", Duration::from_secs(90))?;
        anyhow::ensure!(
            start["target"]["id"] == cgroup_id,
            "attacked cgroup {} (id {}), not the container's {} (id {cgroup_id})",
            start["target"]["path"],
            start["target"]["id"],
            cgroup.display()
        );
        let label = start["target"]["workload"].as_str().unwrap_or_default();
        anyhow::ensure!(
            label.starts_with(&format!("{runtime} container ")) && label.contains("chaos-web"),
            "the start event names the target {label:?}"
        );
        let ping = |name: &str, to: &str| {
            let mut cmd = rt.exec(
                name,
                &["/bin/busybox", "ping", "-q", "-c", &PINGS.to_string(), "-i", "0.005", "-W", "2", to],
            );
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            cmd.spawn()
        };
        let (web, other) = (ping("chaos-web", &to)?, ping("chaos-other", &to_other)?);
        let (web, other) = (web.wait_with_output()?, other.wait_with_output()?);
        end(run)?;
        let (web_sent, web_got) = transmitted(&String::from_utf8_lossy(&web.stdout))?;
        let (other_sent, other_got) = transmitted(&String::from_utf8_lossy(&other.stdout))?;
        anyhow::ensure!(
            web_sent == PINGS && other_sent == PINGS,
            "sent {web_sent} and {other_sent}, not {PINGS}"
        );
        anyhow::ensure!(
            other_got == other_sent,
            "the other container lost {} of {other_sent} pings",
            other_sent - other_got
        );
        eprint!("[{runtime}: {} of {web_sent} lost; other container 0] ", web_sent - web_got);
        Ok((web_sent - web_got, web_sent))
    })?;
    Ok(())
}

/// The peer's address on the second namespace's link.
const OTHER_PEER: &str = "10.78.0.2";

/// A second container namespace, linked to the lab's peer on 10.78.0.0/24.
fn second_namespace(lab: &Lab) -> anyhow::Result<Netns> {
    let ns = Netns::new("other")?;
    let tag = std::process::id() % 100_000;
    let (c, p) = (format!("ov{tag}c"), format!("ov{tag}p"));
    ip(&["link", "add", &c, "netns", &ns.name, "type", "veth", "peer", "name", &p, "netns", &lab.peer.name])?;
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", &c])?;
    lab.peer.ip(&["addr", "add", "10.78.0.2/24", "dev", &p])?;
    ns.ip(&["link", "set", &c, "up"])?;
    lab.peer.ip(&["link", "set", &p, "up"])?;
    Ok(ns)
}

/// busybox ping's summary: "400 packets transmitted, 203 packets received, ...".
fn transmitted(out: &str) -> anyhow::Result<(u64, u64)> {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| anyhow::anyhow!("no ping summary in: {out}"))?;
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let before =
        |w: &str| words.iter().position(|x| *x == w).and_then(|i| words.get(i.checked_sub(2)?)?.parse().ok());
    match (before("transmitted"), before("received")) {
        (Some(tx), Some(rx)) => Ok((tx, rx)),
        _ => anyhow::bail!("cannot read {line:?}"),
    }
}

pub mod net_loss_by_name {
    use super::*;

    pub fn docker(ctx: &mut Ctx) -> anyhow::Result<()> {
        net_loss_by_name(ctx, Kind::Docker)
    }

    pub fn podman(ctx: &mut Ctx) -> anyhow::Result<()> {
        net_loss_by_name(ctx, Kind::Podman)
    }

    pub fn containerd(ctx: &mut Ctx) -> anyhow::Result<()> {
        net_loss_by_name(ctx, Kind::Containerd)
    }
}

/// `chaos targets --json` with podman and containerd running: exactly
/// their containers, each with the cgroup id and network namespace of its
/// init process; a stopped one with no cgroup; docker reported
/// unreachable. And what `--container` makes of the same names: a name two
/// runtimes know is ambiguous until `--runtime` picks one, a misspelt one
/// gets a suggestion, a stopped one its state, a runtime that is not
/// running its socket — each exit 3, nothing injected.
pub fn targets_lists_what_runs_and_bad_names_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut podman = Runtime::start(Kind::Podman)?;
    let mut containerd = Runtime::start(Kind::Containerd)?;
    podman.run("chaos-web", None)?;
    podman.run("chaos-stopped", None)?;
    podman.stop("chaos-stopped")?;
    containerd.run("chaos-job", None)?;
    containerd.run("chaos-web", None)?;

    let out = output(Command::new(crate::fixtures::runner::bin()).args(["targets", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let listed = v["containers"].as_array().cloned().unwrap_or_default();
    let mut seen: Vec<(String, String)> = listed
        .iter()
        .map(|c| {
            (c["runtime"].as_str().unwrap_or("?").to_owned(), c["name"].as_str().unwrap_or("?").to_owned())
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("containerd", "chaos-job"),
        ("containerd", "chaos-web"),
        ("podman", "chaos-stopped"),
        ("podman", "chaos-web"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    anyhow::ensure!(seen == want, "chaos targets listed {seen:?}, not {want:?}:\n{out}");
    let fs = CgroupFs::discover()?;
    for (rt, name) in [(&podman, "chaos-web"), (&containerd, "chaos-job"), (&containerd, "chaos-web")] {
        let c = listed
            .iter()
            .find(|c| c["runtime"] == rt.kind.name() && c["name"] == name)
            .expect("checked above");
        let pid = rt.pid(name)?;
        let cgroup = fs.cgroup_of(Path::new("/proc"), pid)?;
        let want_id = std::fs::metadata(&cgroup)?.ino();
        let want_ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino();
        anyhow::ensure!(
            c["cgroup"]["id"] == want_id && c["netns"]["inode"] == want_ns && c["state"] == "running",
            "{} {name}: listed {c}, but its pid {pid} is in cgroup {} (id {want_id}), netns {want_ns}",
            rt.kind.name(),
            cgroup.display()
        );
        anyhow::ensure!(c["id"] == rt.id(name)?, "{name}: listed id {}", c["id"]);
    }
    let job = listed.iter().find(|c| c["name"] == "chaos-job").expect("checked above");
    anyhow::ensure!(job["namespace"] == CTR_NAMESPACE, "containerd namespace: {}", job["namespace"]);
    let stopped = listed.iter().find(|c| c["name"] == "chaos-stopped").expect("checked above");
    anyhow::ensure!(
        stopped["state"] == "exited" && stopped["cgroup"].is_null(),
        "a stopped container: {stopped}"
    );
    let unreachable = v["unreachable"].to_string();
    anyhow::ensure!(unreachable.contains("docker"), "docker is not running, yet: {unreachable}");

    // --container, planned only (--dry-run resolves the target as an
    // attack does, then prints the plan): exit 3 with the reason, or 0.
    let plan = |extra: &[&str], code: i32, says: &str| -> anyhow::Result<()> {
        let out = Command::new(crate::fixtures::runner::bin())
            .args(["attack", "net-loss", "--percent", "10", "--duration", "5s", "--dry-run"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(
            out.status.code() == Some(code) && text.contains(says),
            "{extra:?}: exit {:?}, expected {code} and a message saying {says:?}:\n{text}",
            out.status.code()
        );
        Ok(())
    };
    plan(&["--container", "chaos-web"], 3, "ambiguous")?;
    plan(&["--container", "chaos-web", "--runtime", "containerd"], 0, "chaos-test/chaos-web")?;
    plan(&["--container", "chaos-wbe", "--runtime", "podman"], 3, "did you mean chaos-web")?;
    plan(&["--container", "chaos-stopped"], 3, "not running (state: exited)")?;
    plan(&["--container", "chaos-web", "--runtime", "docker"], 3, "/var/run/docker.sock does not exist")?;
    Ok(())
}

/// kill on a docker container whose restart policy starts it again. When
/// its init dies, docker removes the container's cgroup and, for the
/// restart, makes it again under the same path with a new id: chaos goes
/// on to its deadline (no `target gone`), and reports the restart, which
/// it can only see in the new cgroup. A second container of the same image
/// is untouched. (Rounds in the new cgroup: kill::follows_its_cgroup_made_
/// again. One round here: under emulation docker takes seconds to start a
/// container, and a round that kills it while it is being started made
/// docker 20.10 give up restarting it: "restartmanger wait error: cannot
/// start a stopped process".)
pub fn kill_follows_a_docker_restart(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut rt = Runtime::start(Kind::Docker)?;
    rt.run_with("chaos-restarting", None, &["--restart", "always"])?;
    rt.run("chaos-other", None)?;
    let fs = CgroupFs::discover()?;
    let first = rt.pid("chaos-restarting")?;
    let cgroup = fs.cgroup_of(Path::new("/proc"), first)?;
    let first_id = std::fs::metadata(&cgroup)?.ino();
    let other = rt.pid("chaos-other")?;
    let inspect = |name: &str, what: &str| -> anyhow::Result<String> {
        Ok(output(Command::new(Kind::Docker.cli()).args(["inspect", "-f", what, name]))?.trim().to_owned())
    };
    let mut run = ChaosRun::start(&[
        "attack",
        "kill",
        "--container",
        "chaos-restarting",
        "--runtime",
        "docker",
        "--duration",
        "20s",
    ])?;
    run.wait_event("start", Duration::from_secs(90))?;
    let ended = run.wait(Duration::from_secs(60))?;
    anyhow::ensure!(ended.code() == Some(0), "exit {:?}: {}", ended.code(), ended.stderr);
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event: {:?}", ended.events))?;
    let counter = |name: &str| stop["counters"][name].as_u64().unwrap_or(u64::MAX);
    eprint!("[the cgroup removed, and the restart seen {} ms after the round] ", counter("restart_ms"));
    // Docker made the new cgroup 2.2 to 4 s after the kill in the VMs (two
    // side by side): the attack lasts five times that.
    anyhow::ensure!(
        stop["reason"] == "deadline"
            && counter("injected") == 1
            && counter("removed") == 1
            && counter("restarts") == 1,
        "counters: {stop}"
    );
    let count = inspect("chaos-restarting", "{{.RestartCount}}")?;
    let now = rt.pid("chaos-restarting")?;
    let now_cgroup = fs.cgroup_of(Path::new("/proc"), now)?;
    let now_id = std::fs::metadata(&now_cgroup)?.ino();
    anyhow::ensure!(
        count == "1" && now != first && now_id != first_id && now_cgroup == cgroup,
        "after the attack: restarted {count} times, pid {now} (was {first}) in cgroup {} id {now_id} (was {} id \
         {first_id})",
        now_cgroup.display(),
        cgroup.display()
    );
    anyhow::ensure!(
        rt.pid("chaos-other")? == other && inspect("chaos-other", "{{.RestartCount}}")? == "0",
        "the other container was touched"
    );
    Ok(())
}

/// io-error and clock-skew on a containerd container by name: a write under
/// `/data` *in the container's filesystem* fails with ENOSPC and the clock
/// its new processes read is 400 days ahead, while a second container of
/// the same image writes and reads the time as usual.
pub fn io_error_and_clock_skew_by_name(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(&[Capability::BpfLsm, Capability::FmodRet])?;
    super::clock_skew::require(ctx)?;
    let mut rt = Runtime::start(Kind::Containerd)?;
    for name in ["chaos-app", "chaos-other"] {
        rt.run(name, None)?;
        output(&mut rt.exec(name, &["/bin/busybox", "mkdir", "-p", "/data"]))?;
    }
    let write = |name: &str| -> anyhow::Result<std::process::Output> {
        Ok(rt.exec(name, &["/bin/busybox", "sh", "-c", "echo x > /data/f"]).stdin(Stdio::null()).output()?)
    };
    let mut run = ChaosRun::start(&[
        "attack",
        "io-error",
        "--container",
        "chaos-app",
        "--path",
        "/data",
        "--operations",
        "write",
        "--errno",
        "ENOSPC",
        "--percent",
        "100",
        "--duration",
        "120s",
    ])?;
    run.wait_event("start", Duration::from_secs(120))?;
    let (app, other) = (write("chaos-app")?, write("chaos-other")?);
    end(run)?;
    let says = String::from_utf8_lossy(&app.stderr);
    anyhow::ensure!(
        !app.status.success() && says.contains("No space left on device"),
        "a write in the attacked container: {}, {says:?}",
        app.status
    );
    anyhow::ensure!(
        other.status.success(),
        "the other container's write: {}",
        String::from_utf8_lossy(&other.stderr)
    );

    const OFFSET: i64 = 400 * 86_400;
    let mut run = ChaosRun::start(&[
        "attack",
        "clock-skew",
        "--container",
        "chaos-app",
        "--offset",
        "+400d",
        "--duration",
        "120s",
    ])?;
    run.wait_event("start", Duration::from_secs(120))?;
    let now = |name: &str| -> anyhow::Result<(i64, i64)> {
        let before = wall();
        let out = output(&mut rt.exec(name, &["/bin/busybox", "date", "+%s"]))?;
        let read: i64 = out.trim().parse().with_context(|| format!("date said {out:?}"))?;
        Ok((read - before, wall() - before))
    };
    let (app, other) = (now("chaos-app"), now("chaos-other"));
    end(run)?;
    // The read happened within the exec: between `before` and `before + took`.
    let ((app_off, app_took), (other_off, other_took)) = (app?, other?);
    anyhow::ensure!(
        (OFFSET - 1..=OFFSET + app_took + 1).contains(&app_off),
        "the attacked container read the time {app_off} s from ours (took {app_took} s), not +{OFFSET} s"
    );
    anyhow::ensure!(
        (-1..=other_took + 1).contains(&other_off),
        "the other container read the time {other_off} s from ours (took {other_took} s)"
    );
    eprint!(
        "[io-error: ENOSPC in the target, the other wrote; clock: +{app_off} s in the target, +{other_off} s in the other] "
    );
    Ok(())
}

fn wall() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A pod made through containerd's CRI plugin as a kubelet makes it (pod
/// cgroup under `kubepods/besteffort`, CNI bridge, two containers), and a
/// bystander pod: `--pod shop/web-0` puts one rule on the pod's cgroup, so
/// both containers lose 50% of their pings — and so does the app container
/// after it is killed and started again with a new id, mid-attack — while
/// the bystander pod loses none, and nothing after the end. `chaos targets`
/// lists both pods with their cgroups; `--pod-selector`, `--pod ...
/// --container` and a misspelt pod, planned only.
pub fn pod_covers_its_containers_even_restarted(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let mut node = cri::Node::start()?;
    let web = node.run_pod("shop", "web-0", &[("app", "web"), ("tier", "front")])?;
    let app = node.start_container(&web, "app", 0)?;
    let sidecar = node.start_container(&web, "sidecar", 0)?;
    let other = node.run_pod("shop", "other-0", &[("app", "other"), ("tier", "front")])?;
    let bystander = node.start_container(&other, "app", 0)?;

    let out = output(Command::new(crate::fixtures::runner::bin()).args(["targets", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    for pod in [&web, &other] {
        let listed = v["pods"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["uid"] == pod.uid.as_str()))
            .ok_or_else(|| anyhow::anyhow!("chaos targets does not list pod {}: {out}", pod.name))?;
        let id = std::fs::metadata(&pod.cgroup)?.ino();
        anyhow::ensure!(
            listed["cgroup"]["id"] == id
                && listed["namespace"] == "shop"
                && listed["name"] == pod.name.as_str(),
            "pod {} listed as {listed}, its cgroup {} has id {id}",
            pod.name,
            pod.cgroup.display()
        );
    }

    let plan = |extra: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = Command::new(crate::fixtures::runner::bin())
            .args(["attack", "net-loss", "--percent", "10", "--duration", "5s", "--dry-run"])
            .args(extra)
            .stdin(Stdio::null())
            .output()?;
        Ok((
            out.status.code(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ))
    };
    let (code, text) = plan(&["--pod-selector", "tier=front"])?;
    anyhow::ensure!(
        code == Some(0)
            && text.contains("net-loss-1.1:")
            && text.contains("net-loss-1.2:")
            && text.contains("shop/other-0"),
        "a selector matching two pods plans two attacks: exit {code:?}\n{text}"
    );
    let (code, text) = plan(&["--pod", "shop/web-0", "--container", "sidecar"])?;
    anyhow::ensure!(
        code == Some(0) && text.contains("container sidecar of pod shop/web-0"),
        "exit {code:?}\n{text}"
    );
    let (code, text) = plan(&["--pod", "shop/web-1"])?;
    anyhow::ensure!(code == Some(3) && text.contains("did you mean shop/web-0"), "exit {code:?}\n{text}");

    let lost = |id: &str| -> anyhow::Result<(u64, u64)> {
        let (code, out) = node.exec(
            id,
            &["/bin/busybox", "ping", "-q", "-c", &PINGS.to_string(), "-i", "0.005", "-W", "2", CNI_GATEWAY],
        )?;
        let (sent, got) = transmitted(&out).with_context(|| format!("ping exited {code}"))?;
        anyhow::ensure!(sent == PINGS, "sent {sent}, not {PINGS}");
        Ok((sent - got, sent))
    };
    let mut run = ChaosRun::start(&[
        "attack",
        "net-loss",
        "--pod",
        "shop/web-0",
        "--direction",
        "egress",
        "--percent",
        "50",
        "--duration",
        "600s",
    ])?;
    let start = run.wait_event("start", Duration::from_secs(120))?;
    let pod_id = std::fs::metadata(&web.cgroup)?.ino();
    anyhow::ensure!(
        start["target"]["id"] == pod_id
            && start["target"]["workload"].as_str().is_some_and(|w| w.starts_with("pod shop/web-0")),
        "attacked {}, not the pod's cgroup {} (id {pod_id})",
        start["target"],
        web.cgroup.display()
    );
    check_rate_measured("the app container's pings lost", 0.5, || lost(&app))?;
    check_rate_measured("the sidecar's pings lost", 0.5, || lost(&sidecar))?;
    let (spared, n) = lost(&bystander)?;
    anyhow::ensure!(spared == 0, "the bystander pod lost {spared} of {n}");
    node.kill_container(&app)?;
    let restarted = node.start_container(&web, "app", 1)?;
    anyhow::ensure!(restarted != app, "the restarted container kept its id");
    check_rate_measured("the restarted app container's pings lost", 0.5, || lost(&restarted))?;
    end(run)?;
    let (after, n) = lost(&restarted)?;
    anyhow::ensure!(after == 0, "{after} of {n} lost after the attack ended");

    // One container of the pod: when it goes (to be restarted with a new
    // id and cgroup), the attack ends at once and says why (exit 2).
    let mut run = ChaosRun::start(&[
        "attack",
        "net-loss",
        "--pod",
        "shop/web-0",
        "--container",
        "sidecar",
        "--percent",
        "50",
        "--duration",
        "600s",
    ])?;
    run.wait_event("start", Duration::from_secs(120))?;
    node.kill_container(&sidecar)?;
    let ended = run.wait(Duration::from_secs(60))?;
    let abort = ended.event("abort").cloned().unwrap_or_default();
    anyhow::ensure!(
        ended.code() == Some(2) && abort["reason"].as_str().is_some_and(|r| r.contains("target gone")),
        "after its container went: exit {:?}, abort event {abort}; chaos said:\n{}",
        ended.code(),
        ended.stderr
    );
    eprint!(
        "[pod: both containers and the restarted one at 50%, the bystander pod 0; a container's own attack ended when it went] "
    );
    Ok(())
}

/// CRI-O's containers by name, through chaos's CRI client. CRI-O is in no
/// Debian suite, so the runtime here is a stand-in: containerd's CRI
/// plugin serving on CRI-O's socket — what chaos asks CRI-O is only the
/// CRI. `chaos targets` lists a pod's container as a `cri-o` one named
/// `namespace/pod/container`, in a cgroup of its pod's, and `--container`
/// finds it by that name or by a prefix of its id; containerd's own API is
/// not there to ask (its socket is CRI-O's here), which is no doubt.
pub fn cri_o_containers_by_name_through_a_stand_in(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut node = cri::Node::start_as(Kind::CrioStandIn)?;
    let web = node.run_pod("shop", "web-0", &[("app", "web")])?;
    let app = node.start_container(&web, "app", 0)?;

    let out = output(Command::new(crate::fixtures::runner::bin()).args(["targets", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let listed = v["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == app.as_str()))
        .with_context(|| format!("chaos targets does not list container {app}: {out}"))?;
    let path = listed["cgroup"]["path"].as_str().unwrap_or_default();
    anyhow::ensure!(
        listed["runtime"] == "cri-o"
            && listed["name"] == "shop/web-0/app"
            && listed["state"] == "running"
            && Path::new(path).starts_with(&web.cgroup)
            && listed["cgroup"]["id"] == std::fs::metadata(path)?.ino(),
        "container app of pod shop/web-0 listed as {listed}; the pod's cgroup is {}",
        web.cgroup.display()
    );
    anyhow::ensure!(
        v["pods"].as_array().is_some_and(|p| p.iter().any(|p| p["uid"] == web.uid.as_str())),
        "the pods of CRI-O's socket are not listed: {out}"
    );

    for (query, runtime) in [("shop/web-0/app", None), (&app[..10], Some("cri-o"))] {
        let mut cmd = Command::new(crate::fixtures::runner::bin());
        cmd.args([
            "attack",
            "net-loss",
            "--percent",
            "10",
            "--duration",
            "5s",
            "--dry-run",
            "--container",
            query,
        ]);
        if let Some(r) = runtime {
            cmd.args(["--runtime", r]);
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(
            out.status.code() == Some(0)
                && text.contains("cri-o container shop/web-0/app")
                && text.contains(path),
            "--container {query}: exit {:?}\n{text}",
            out.status.code()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn busybox_ping_summary_is_read() {
        let out = "PING 10.88.0.1 (10.88.0.1): 56 data bytes\n\n--- 10.88.0.1 ping statistics ---\n\
                   400 packets transmitted, 203 packets received, 49% packet loss\n\
                   round-trip min/avg/max = 0.1/0.2/0.3 ms\n";
        assert_eq!(super::transmitted(out).unwrap(), (400, 203));
        assert!(super::transmitted("ping: sendto: Network unreachable\n").is_err());
    }
}

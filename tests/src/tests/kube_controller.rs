//! chaos on Kubernetes, the runner: `chaos-kube controller` and `chaos-kube
//! run` against a stand-in API server (no control plane runs here: see
//! fixtures/kube_api.rs; the pods and nodes it lists are recorded objects,
//! the ChaosAttacks the runner creates are the real ones).
//!
//! - on this machine, the runner's own decisions: a spec refused or a
//!   target matching no pod (`invalid`, 3) and a steady state that does
//!   not hold (`not-started`, 2) create no attack; `chaos-kube run` exits with those codes; two
//!   runners share a Lease, and when the leader is killed (-9) in the
//!   middle of an experiment the other takes the lease over, deletes the
//!   attacks left behind and ends the experiment `aborted`; a runner
//!   stopped (SIGTERM) rolls its experiment back and gives the lease up;
//! - in the 6.1 VM, with the agent and a pod made through containerd's
//!   CRI: an experiment's ChaosAttack reaches the pod (it is frozen) and
//!   the verdict is `held`; a hypothesis probe that fails aborts the run
//!   (`violated`, 1), and the deletion of its attack thaws the pod at once,
//!   long before the attack's deadline.

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use super::kube::{Process, agent_bin, frozen, wait_frozen};
use crate::{
    fixtures::{cri, kube_api::StandInApi, runner, scratch::PrivDir},
    harness::Ctx,
};

const NODE: &str = "node-a";

/// A recorded Pod, running and ready on `node`.
fn pod_object(name: &str, uid: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// A ChaosExperiment in namespace shop.
fn experiment(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    })
}

/// A runner with `identity`, sharing the lease `chaos-runner`.
fn start_runner(identity: &str, kubeconfig: &Path, log: &Path) -> anyhow::Result<Process> {
    Process::spawn(
        &["controller", "--lease-namespace", "chaos-system", "--identity", identity],
        kubeconfig,
        log,
    )
}

fn status(api: &StandInApi, name: &str) -> Value {
    api.get("ChaosExperiment", "shop", name).map_or(Value::Null, |e| e["status"].clone())
}

/// Wait for the experiment's verdict; its status.
fn verdict(api: &StandInApi, name: &str, within: Duration) -> Value {
    api.wait_for(within, |api| status(api, name)["phase"] == "Done");
    status(api, name)
}

fn attacks(api: &StandInApi) -> Vec<Value> {
    api.list("ChaosAttack")
}

fn lease_holder(api: &StandInApi) -> String {
    api.get("Lease", "chaos-system", "chaos-runner")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A step of net-loss on one pod of `app=web` for `duration`, with a
/// hypothesis probe of `address`.
fn loss_spec(address: &str, duration: &str) -> Value {
    json!({
        "targets": {"web": {"pod-selector": "app=web", "count": 1}},
        "hypothesis": {"probes": [{"name": "up", "tcp": {"address": address}, "interval": "200ms", "failures": 3}],
                       "recover-within": "5s"},
        "method": [{"name": "loss", "fault": "net-loss", "percent": 5, "duration": duration}],
    })
}

/// On this machine: the runner's decisions, `chaos-kube run`'s exit codes,
/// the Lease.
pub fn runner_verdicts_refusals_and_takeover_stand_in_api(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let dir = PrivDir::new("kube-runner")?;
    let api = StandInApi::start()?;
    let kubeconfig = api.kubeconfig(dir.dir())?;
    let log = dir.path("runner.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    api.put(pod_object("web-0", "uid-web-0", "node-a", "10.0.0.10"));
    api.put(pod_object("web-1", "uid-web-1", "node-b", "10.0.0.11"));
    // What the probes reach: open, and closed (a port bound, then freed).
    let open = TcpListener::bind("127.0.0.1:0")?;
    let open_at = open.local_addr()?.to_string();
    let closed_at = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();

    let mut a = start_runner("runner-a", &kubeconfig, &log)?;
    anyhow::ensure!(
        api.wait_for(Duration::from_secs(20), |api| lease_holder(api) == "runner-a"),
        "runner-a did not take the lease\n{}",
        logs()
    );
    let mut b = start_runner("runner-b", &kubeconfig, &log)?;

    // 1. Refused: a cgroup is a thing of one machine.
    let mut spec = loss_spec(&open_at, "10s");
    spec["targets"] = json!({"web": {"cgroup": "/system.slice/web.service"}});
    api.put(experiment("machine-target", spec));
    let s = verdict(&api, "machine-target", Duration::from_secs(20));
    anyhow::ensure!(
        s["verdict"] == "invalid"
            && s["exitCode"] == 3
            && s["message"].as_str().is_some_and(|m| m.contains("a thing of one machine")),
        "machine-target: {s}\n{}",
        logs()
    );
    // A selector that matches no pod is refused before anything, as a
    // local run refuses a target it cannot resolve.
    let mut spec = loss_spec(&open_at, "10s");
    spec["targets"] = json!({"web": {"pod-selector": "app=nowhere"}});
    api.put(experiment("no-pods", spec));
    let s = verdict(&api, "no-pods", Duration::from_secs(20));
    anyhow::ensure!(
        s["verdict"] == "invalid"
            && s["exitCode"] == 3
            && s["message"]
                .as_str()
                .is_some_and(|m| m.contains("matches no running, ready pod in namespace shop")),
        "no-pods: {s}\n{}",
        logs()
    );
    // 2. The steady state does not hold: nothing is created.
    api.put(experiment("down-before", loss_spec(&closed_at, "10s")));
    let s = verdict(&api, "down-before", Duration::from_secs(30));
    anyhow::ensure!(s["verdict"] == "not-started" && s["exitCode"] == 2, "down-before: {s}\n{}", logs());
    anyhow::ensure!(attacks(&api).is_empty(), "attacks created: {:?}", attacks(&api));
    let report = api.get("ConfigMap", "shop", s["report"].as_str().unwrap_or_default());
    anyhow::ensure!(
        report.as_ref().is_some_and(|r| {
            r["data"]["junit.xml"].as_str().is_some_and(|j| j.contains("<testsuite"))
                && r["data"]["report.json"].as_str().is_some_and(|j| j.contains("\"not-started\""))
        }),
        "the report ConfigMap: {report:?}"
    );

    // 3. `chaos-kube run` and `chaos run --kube`: the same exit codes, a
    // local refusal before anything is created.
    let file = dir.path("down.yaml");
    let mut doc = loss_spec(&closed_at, "10s");
    doc["name"] = "down".into();
    std::fs::write(&file, serde_yaml_ng::to_string(&doc)?)?;
    let run = |file: &Path| {
        Command::new(agent_bin())
            .args(["run", "-n", "shop"])
            .arg(file)
            .env("KUBECONFIG", &kubeconfig)
            .output()
    };
    let out = run(&file)?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.code() == Some(2), "chaos-kube run (not-started): {:?}\n{said}", out.status);
    anyhow::ensure!(said.contains("not-started"), "chaos-kube run said:\n{said}");
    doc["targets"] = json!({"web": {"pid": 1}});
    std::fs::write(&file, serde_yaml_ng::to_string(&doc)?)?;
    let before = api.list("ChaosExperiment").len();
    // Through `chaos run --kube`, which becomes `chaos-kube run`.
    let out = Command::new(runner::bin())
        .args(["run", "--kube", "--namespace", "shop"])
        .arg(&file)
        .env("KUBECONFIG", &kubeconfig)
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.code() == Some(3), "chaos run --kube (pid target): {:?}\n{said}", out.status);
    anyhow::ensure!(said.contains("a thing of one machine"), "chaos-kube run said:\n{said}");
    anyhow::ensure!(api.list("ChaosExperiment").len() == before, "an invalid file was created");

    // 4. The leader killed in the middle: the other takes over, deletes
    // what was left, ends the experiment `aborted`.
    let put_at = SystemTime::now();
    api.put(experiment("takeover", loss_spec(&open_at, "120s")));
    anyhow::ensure!(
        api.wait_for(Duration::from_secs(30), |api| attacks(api).len() == 1),
        "no ChaosAttack for `takeover`: {}\n{}",
        status(&api, "takeover"),
        logs()
    );
    let attack = attacks(&api).remove(0);
    // The deadline, chosen when it was created: 120 s after, to the second
    // (whole seconds of RFC 3339 compare as text).
    let second = |t: SystemTime| chaos::timebase::rfc3339(t)[..19].to_owned();
    let (earliest, latest) =
        (second(put_at + Duration::from_secs(119)), second(SystemTime::now() + Duration::from_secs(121)));
    let deadline = attack["spec"]["deadline"].as_str().unwrap_or_default();
    anyhow::ensure!(
        attack["metadata"]["labels"]["chaos.dev/node"] == attack["spec"]["nodeName"]
            && attack["spec"]["pods"].as_array().is_some_and(|p| p.len() == 1)
            && attack["metadata"]["ownerReferences"][0]["kind"] == "ChaosExperiment"
            && attack["spec"]["fault"] == json!({"fault": "net-loss", "percent": 5})
            && deadline.len() >= 19
            && (earliest.as_str()..=latest.as_str()).contains(&&deadline[..19]),
        "the ChaosAttack (deadline within {earliest}..{latest}): {attack}"
    );
    let s = status(&api, "takeover");
    anyhow::ensure!(
        s["phase"] == "Running"
            && s["runner"] == "runner-a"
            && s["picked"][0].as_str().is_some_and(|p| p.contains("1 of 2 matching pods")),
        "takeover's status: {s}"
    );
    a.signal(libc::SIGKILL);
    anyhow::ensure!(a.wait(Duration::from_secs(10))?.is_some(), "runner-a outlived SIGKILL");
    let killed = Instant::now();
    let s = verdict(&api, "takeover", Duration::from_secs(40));
    let took = killed.elapsed();
    eprint!("[taken over and rolled back {took:.1?} after the leader was killed] ");
    anyhow::ensure!(
        s["verdict"] == "aborted"
            && s["exitCode"] == 2
            && s["message"].as_str().is_some_and(|m| m.contains("runner-a") && m.contains("deleted")),
        "takeover: {s}\n{}",
        logs()
    );
    anyhow::ensure!(attacks(&api).is_empty(), "left behind: {:?}", attacks(&api));
    anyhow::ensure!(
        lease_holder(&api) == "runner-b",
        "the lease: {:?}",
        api.get("Lease", "chaos-system", "chaos-runner")
    );

    // 5. The runner stopped: its experiment rolled back at once, the lease
    // given up.
    api.put(experiment("stopped", loss_spec(&open_at, "120s")));
    anyhow::ensure!(
        api.wait_for(Duration::from_secs(30), |api| attacks(api).len() == 1),
        "no ChaosAttack for `stopped`\n{}",
        logs()
    );
    b.signal(libc::SIGTERM);
    let exited = b.wait(Duration::from_secs(20))?;
    anyhow::ensure!(exited.is_some_and(|s| s.success()), "runner-b exited {exited:?} on SIGTERM\n{}", logs());
    let s = status(&api, "stopped");
    anyhow::ensure!(
        s["verdict"] == "aborted"
            && s["message"].as_str().is_some_and(|m| m.contains("the runner is stopping")),
        "stopped: {s}\n{}",
        logs()
    );
    anyhow::ensure!(attacks(&api).is_empty(), "left behind: {:?}", attacks(&api));
    anyhow::ensure!(lease_holder(&api).is_empty(), "the lease was not given up");
    drop(open);
    Ok(())
}

/// In the 6.1 VM: runner, agent and a CRI pod.
pub fn runner_and_agent_on_a_cri_pod_stand_in_api(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut node = cri::Node::start()?;
    let web = node.run_pod("shop", "web-0", &[("app", "web")])?;
    node.start_container_running(
        &web,
        "app",
        0,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www",
        ],
    )?;
    let ip = node.pod_ip(&web)?;
    let url = format!("http://{ip}:8080/");
    let dir = PrivDir::new("kube-runner")?;
    let api = StandInApi::start()?;
    let kubeconfig = api.kubeconfig(dir.dir())?;
    let log = dir.path("kube.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    api.put(pod_object(&web.name, &web.uid, NODE, &ip));
    let _agent = Process::spawn(&["agent", "--node", NODE], &kubeconfig, &log)?;
    let _runner = start_runner("runner-a", &kubeconfig, &log)?;
    let parsed = chaos::probes::http::HttpUrl::parse(&url).map_err(anyhow::Error::msg)?;
    let answers = || {
        chaos::probes::http::request(&parsed, "GET", &[], None, Instant::now() + Duration::from_secs(1))
            .is_ok_and(|r| r.status == 200)
    };
    let t = Instant::now();
    while !answers() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::ensure!(answers(), "the pod's server does not answer at {url}");

    // Held: the pod frozen for 3 s (its probe tolerates it), then back.
    let spec = |failures: u32, duration: &str| {
        json!({
            "targets": {"web": {"pod-selector": "app=web"}},
            "hypothesis": {"probes": [{"name": "web", "http": {"url": url}, "interval": "250ms", "timeout": "1s", "failures": failures}],
                           "recover-within": "20s"},
            "method": [{"name": "freeze", "fault": "pause", "duration": duration}],
            "max-duration": "5m",
        })
    };
    api.put(experiment("held", spec(1000, "3s")));
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(90)).is_some(),
        "the pod was never frozen: {}\n{}",
        status(&api, "held"),
        logs()
    );
    let s = verdict(&api, "held", Duration::from_secs(90));
    anyhow::ensure!(s["verdict"] == "held" && s["exitCode"] == 0, "held: {s}\n{}", logs());
    anyhow::ensure!(
        !frozen(&web) && attacks(&api).is_empty(),
        "left: frozen {} attacks {:?}",
        frozen(&web),
        attacks(&api)
    );
    let report = api.get("ConfigMap", "shop", s["report"].as_str().unwrap_or_default()).unwrap_or_default();
    let json: Value = serde_json::from_str(report["data"]["report.json"].as_str().unwrap_or("null"))?;
    let attack = &json["steps"][0]["attacks"][0];
    anyhow::ensure!(
        attack["status"] == "completed"
            && attack["mechanism"]["phase"] == "Ended"
            && attack["mechanism"]["counters"]["injected"].as_u64().is_some_and(|n| n >= 1),
        "the report's attack: {attack}"
    );

    // Violated: the probe fails while the pod is frozen; the attack is
    // deleted and the pod thawed long before its deadline.
    api.put(experiment("violated", spec(2, "60s")));
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(90)).is_some(),
        "the pod was never frozen: {}\n{}",
        status(&api, "violated"),
        logs()
    );
    let frozen_at = Instant::now();
    let s = verdict(&api, "violated", Duration::from_secs(60));
    let decided = frozen_at.elapsed();
    anyhow::ensure!(s["verdict"] == "violated" && s["exitCode"] == 1, "violated: {s}\n{}", logs());
    let thawed = wait_frozen(&web, false, Duration::from_secs(20));
    eprint!("[violated {decided:.1?} after the freeze; thawed {thawed:.1?} after the verdict] ");
    anyhow::ensure!(thawed.is_some(), "still frozen 20 s after the verdict\n{}", logs());
    anyhow::ensure!(
        frozen_at.elapsed() < Duration::from_secs(50),
        "ended near its deadline, not by the rollback"
    );
    anyhow::ensure!(attacks(&api).is_empty(), "left behind: {:?}", attacks(&api));
    anyhow::ensure!(answers(), "the pod does not answer after the rollback");
    Ok(())
}

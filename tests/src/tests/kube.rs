//! chaos on Kubernetes, the node side: `chaos-kube agent` against a
//! stand-in API server (no control plane runs here: see
//! fixtures/kube_api.rs), attacking a pod made through containerd's CRI
//! as a kubelet makes one. The effect is measured from outside: the pod's
//! CPU time (its cgroup's cpu.stat, kept by the kernel whatever chaos
//! does) stands still while it is paused, and grows again after.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use crate::{
    fixtures::{
        cri::{self, Pod},
        kube_api::StandInApi,
        runner,
        scratch::PrivDir,
    },
    harness::Ctx,
};

const NODE: &str = "node-a";

/// The agent binary: next to the test binary, as chaos is.
pub(super) fn agent_bin() -> PathBuf {
    runner::bin().with_file_name("chaos-kube")
}

/// A `chaos-kube` process (the agent, the runner). Dropped (a failed
/// test): SIGTERM, as the kubelet stops a pod, SIGKILL if it lingers, then
/// `chaos recover` for what a killed agent left.
pub(super) struct Process(Option<Child>);

/// The agent of [`NODE`].
struct Agent;

impl Agent {
    fn spawn(kubeconfig: &Path, log: &Path) -> anyhow::Result<Process> {
        Process::spawn(&["agent", "--node", NODE], kubeconfig, log)
    }
}

impl Process {
    /// `chaos-kube ARGS` with the stand-in's kubeconfig, its output
    /// appended to `log`.
    pub(super) fn spawn(args: &[&str], kubeconfig: &Path, log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        Ok(Self(Some(
            Command::new(agent_bin())
                .args(args)
                .env("KUBECONFIG", kubeconfig)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        )))
    }

    pub(super) fn signal(&self, sig: i32) {
        if let Some(c) = &self.0 {
            // SAFETY: kill(2) with a child's pid and a signal.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Wait up to `within` for it to exit.
    pub(super) fn wait(&mut self, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(c) = self.0.as_mut() else { return Ok(None) };
        let t = Instant::now();
        loop {
            if let Some(status) = c.try_wait()? {
                self.0 = None;
                return Ok(Some(status));
            }
            if t.elapsed() >= within {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.0.is_none() {
            return;
        }
        self.signal(libc::SIGTERM);
        if !matches!(self.wait(Duration::from_secs(10)), Ok(Some(_))) {
            self.signal(libc::SIGKILL);
            let _ = self.wait(Duration::from_secs(5));
            let _ = runner::recover();
        }
    }
}

/// `after` from now, rounded up to a whole second: the deadline as written
/// (RFC 3339, whole seconds) is then the same instant as the one the test
/// measures against.
pub(super) fn deadline_in(after: Duration) -> SystemTime {
    let t = (SystemTime::now() + after).duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs() + 1)
}

/// How far from `deadline` the pod was thawed (the pod's own cgroup.events
/// polled every 10 ms), as milliseconds after it (negative: before).
pub(super) fn thawed_vs(pod: &Pod, deadline: SystemTime, within: Duration) -> Option<i64> {
    wait_frozen(pod, false, within)?;
    let now = SystemTime::now();
    Some(match now.duration_since(deadline) {
        Ok(after) => after.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

/// The thaw at a deadline: the attack's own end (pause's thread and its
/// guardian, each waking at the deadline) — within the bound pause's tests
/// hold a thaw to (tests/src/tests/pause.rs, AT_ONCE_NS: 500 ms), and not
/// before the deadline by more than the polling step.
pub(super) fn at_the_deadline(thawed: Option<i64>, what: &str, log: &str) -> anyhow::Result<()> {
    eprint!("[{what}: thawed {thawed:?} ms after the deadline] ");
    anyhow::ensure!(
        thawed.is_some_and(|ms| (-20..=500).contains(&ms)),
        "{what}: thawed {thawed:?} ms after the deadline, not within [-20, 500]\n{log}"
    );
    Ok(())
}

fn attack(name: &str, pod: &Pod, fault: Value, deadline: SystemTime) -> Value {
    attack_on(NODE, name, pod, fault, deadline)
}

/// A ChaosAttack of `fault` on `pod`, for node `node`'s agent.
pub(super) fn attack_on(node: &str, name: &str, pod: &Pod, fault: Value, deadline: SystemTime) -> Value {
    json!({
        "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosAttack",
        "metadata": {"name": name, "namespace": "shop", "labels": {"chaos.dev/node": node}},
        "spec": {
            "nodeName": node,
            "pods": [{"namespace": "shop", "name": pod.name, "uid": pod.uid}],
            "fault": fault,
            "deadline": chaos::timebase::rfc3339(deadline),
        },
    })
}

/// The pod's CPU time so far (µs), from the kernel's accounting.
fn cpu_usec(pod: &Pod) -> u64 {
    let stat = std::fs::read_to_string(pod.cgroup.join("cpu.stat")).unwrap_or_default();
    stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// CPU time used by the pod over `window`.
pub(super) fn cpu_over(pod: &Pod, window: Duration) -> u64 {
    let before = cpu_usec(pod);
    std::thread::sleep(window);
    cpu_usec(pod).saturating_sub(before)
}

pub(super) fn frozen(pod: &Pod) -> bool {
    std::fs::read_to_string(pod.cgroup.join("cgroup.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == "frozen 1")
}

/// Wait for `want` frozen state; how long it took.
pub(super) fn wait_frozen(pod: &Pod, want: bool, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if frozen(pod) == want {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The pod `shop/web-0` (labelled app=web) with a container `app` busy
/// enough to be measured, light enough for an emulated CPU; the pod and
/// the container's id.
pub(super) fn busy_pod(node: &mut cri::Node) -> anyhow::Result<(Pod, String)> {
    let web = node.run_pod("shop", "web-0", &[("app", "web")])?;
    let app = node.start_container_running(
        &web,
        "app",
        0,
        &["/bin/busybox", "sh", "-c", "while :; do /bin/busybox usleep 20000; done"],
    )?;
    Ok((web, app))
}

pub(super) fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

/// Every way a ChaosAttack ends, on one pod: by its deadline; by its
/// deletion (the rollback), long before it; by a deletion made while the
/// API server was unreachable, once it is back; with the agent killed (-9) in
/// the middle, the fault ends at once (pause's guardian) and the next agent
/// resumes it for the time left; refused with the parser's reason; never
/// run when its deadline passed before any agent saw it.
pub fn agent_runs_chaos_attacks_from_a_stand_in_api(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut node = cri::Node::start()?;
    let (web, _) = busy_pod(&mut node)?;
    let dir = PrivDir::new("kube")?;
    let api = StandInApi::start()?;
    let kubeconfig = api.kubeconfig(dir.dir())?;
    let log = dir.path("agent.log");
    let mut agent = Agent::spawn(&kubeconfig, &log)?;
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let running = |s: &Value| phase(s) == "Running";
    let ended = |s: &Value| matches!(phase(s), "Ended" | "Refused" | "Failed");
    // The agent's first list, the CRI lookup and the programs' load take
    // seconds under emulation.
    let start_within = Duration::from_secs(60);
    // A pause until `deadline`, seen Running and the pod frozen.
    let paused = |name: &str, deadline: SystemTime| -> anyhow::Result<()> {
        api.create(attack(name, &web, json!({"fault": "pause"}), deadline));
        let (ok, s) = api.wait_status(name, start_within, running);
        anyhow::ensure!(ok, "{name} not Running: {s}\n{}", agent_log());
        anyhow::ensure!(
            wait_frozen(&web, true, Duration::from_secs(5)).is_some(),
            "{name}: Running but not frozen\n{}",
            agent_log()
        );
        Ok(())
    };

    anyhow::ensure!(cpu_over(&web, Duration::from_secs(1)) > 0, "the pod uses no CPU before any attack");

    // 1. By its deadline.
    let deadline = deadline_in(Duration::from_secs(12));
    paused("pause-deadline", deadline)?;
    let still = cpu_over(&web, Duration::from_secs(1));
    anyhow::ensure!(still == 0, "the pod used {still} µs of CPU while paused");
    at_the_deadline(thawed_vs(&web, deadline, Duration::from_secs(30)), "deadline", &agent_log())?;
    let (ok, s) = api.wait_status("pause-deadline", Duration::from_secs(60), ended);
    anyhow::ensure!(ok && phase(&s) == "Ended" && s["reason"] == "deadline", "status {s}\n{}", agent_log());
    anyhow::ensure!(
        s["pods"][0]["uid"] == web.uid.as_str() && s["pods"][0]["cgroupId"].as_u64().is_some_and(|id| id > 0),
        "status pods: {s}"
    );
    anyhow::ensure!(s["counters"]["injected"].as_u64().is_some_and(|n| n >= 1), "counters: {s}");
    anyhow::ensure!(cpu_over(&web, Duration::from_secs(1)) > 0, "the pod uses no CPU after the attack");
    // Its Events, on the pod: injected, then ended, by this node's agent.
    let on_pod: Vec<String> = api
        .events()
        .iter()
        .filter(|e| e["regarding"]["uid"] == web.uid.as_str() && e["related"]["name"] == "pause-deadline")
        .filter(|e| e["reportingController"] == "chaos-agent" && e["reportingInstance"] == NODE)
        .map(|e| format!("{}: {}", e["reason"].as_str().unwrap_or(""), e["note"].as_str().unwrap_or("")))
        .collect();
    anyhow::ensure!(
        on_pod.len() == 2
            && on_pod[0].starts_with("ChaosInjected: pause")
            && on_pod[1].ends_with("ended: deadline"),
        "the pod's events: {on_pod:?}\n{:?}",
        api.events()
    );

    // Only this node's attacks are asked for (the label, URL-encoded).
    let watches: Vec<String> = api.requests().into_iter().filter(|r| r.contains("watch=true")).collect();
    anyhow::ensure!(
        !watches.is_empty() && watches.iter().all(|r| r.contains("labelSelector=chaos.dev%2Fnode%3Dnode-a")),
        "watch requests: {watches:?}"
    );

    // 2. Deleted: the rollback, 50 s before the deadline.
    paused("pause-deleted", deadline_in(Duration::from_secs(60)))?;
    api.delete("pause-deleted");
    let thawed = wait_frozen(&web, false, Duration::from_secs(20));
    eprint!("[deleted: thawed {thawed:.1?} after] ");
    anyhow::ensure!(thawed.is_some(), "still frozen 20 s after the deletion\n{}", agent_log());

    // 3. The API server gone: the attack goes on (nobody can tell the agent
    // it was deleted), and the deletion made meanwhile is applied when the
    // agent's watcher is back (kube's default backoff: at most 30 s).
    paused("pause-outage", deadline_in(Duration::from_secs(90)))?;
    api.set_down(true);
    api.delete("pause-outage");
    std::thread::sleep(Duration::from_secs(3));
    anyhow::ensure!(frozen(&web), "thawed during the outage, before the agent could know of the deletion");
    api.set_down(false);
    let thawed = wait_frozen(&web, false, Duration::from_secs(45));
    eprint!("[outage: thawed {thawed:.1?} after the API came back] ");
    anyhow::ensure!(thawed.is_some(), "still frozen 45 s after the API server came back\n{}", agent_log());

    // 4. The agent killed in the middle, and started again.
    let deadline = deadline_in(Duration::from_secs(40));
    paused("pause-resumed", deadline)?;
    agent.signal(libc::SIGKILL);
    anyhow::ensure!(agent.wait(Duration::from_secs(10))?.is_some(), "the agent outlived SIGKILL");
    let thawed = wait_frozen(&web, false, Duration::from_secs(5));
    eprint!("[agent killed: thawed {thawed:.1?} after] ");
    anyhow::ensure!(thawed.is_some(), "still frozen 5 s after the agent was killed");
    agent = Agent::spawn(&kubeconfig, &log)?;
    let (ok, s) = api.wait_status("pause-resumed", start_within, |s| s["agentRestarts"] == 1);
    anyhow::ensure!(ok && running(&s), "not resumed: {s}\n{}", agent_log());
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(5)).is_some(),
        "resumed but not frozen\n{}",
        agent_log()
    );
    at_the_deadline(thawed_vs(&web, deadline, Duration::from_secs(60)), "resumed", &agent_log())?;
    let (ok, s) = api.wait_status("pause-resumed", Duration::from_secs(60), ended);
    anyhow::ensure!(ok && s["reason"] == "deadline", "status {s}\n{}", agent_log());

    // 5. Refused: the parser's reason, nothing injected.
    api.create(attack(
        "loss-refused",
        &web,
        json!({"fault": "net-loss"}),
        SystemTime::now() + Duration::from_secs(60),
    ));
    let (ok, s) = api.wait_status("loss-refused", start_within, ended);
    anyhow::ensure!(
        ok && phase(&s) == "Refused" && s["message"].as_str().is_some_and(|m| m.contains("percent")),
        "status {s}"
    );
    // A Warning on the attack itself: nothing reached the pod.
    let warned = |name: &str| {
        api.events().iter().any(|e| {
            e["type"] == "Warning"
                && e["reason"] == "ChaosRefused"
                && e["regarding"]["kind"] == "ChaosAttack"
                && e["regarding"]["name"] == name
        })
    };
    anyhow::ensure!(warned("loss-refused"), "no ChaosRefused event: {:?}", api.events());
    // 6. Missed: its deadline passed before any agent saw it.
    api.create(attack(
        "pause-missed",
        &web,
        json!({"fault": "pause"}),
        SystemTime::now() - Duration::from_secs(1),
    ));
    let (ok, s) = api.wait_status("pause-missed", start_within, ended);
    anyhow::ensure!(ok && s["reason"] == "missed", "status {s}");
    anyhow::ensure!(!frozen(&web), "a missed attack froze the pod");
    anyhow::ensure!(
        api.patches("pause-missed").iter().all(|p| p["status"]["phase"] != "Running"),
        "a missed attack was started: {:?}",
        api.patches("pause-missed")
    );

    // SIGTERM: the agent exits cleanly.
    agent.signal(libc::SIGTERM);
    let status = agent.wait(Duration::from_secs(20))?;
    anyhow::ensure!(
        status.is_some_and(|s| s.success()),
        "the agent exited {status:?} on SIGTERM\n{}",
        agent_log()
    );
    runner::recover_finds_nothing()?;
    Ok(())
}

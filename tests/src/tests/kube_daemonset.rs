//! The agent as Kubernetes runs it: its image (deploy/Containerfile, FROM
//! scratch) run through containerd's CRI with exactly the pod spec of
//! deploy/agent.yaml's DaemonSet (fixtures/daemonset.rs translates it as
//! the kubelet does), against a stand-in API server (no control plane runs
//! here), attacking a pod made through the same CRI. Then the same pod spec
//! with each capability, host namespace and host path taken away in turn:
//! the agent must refuse its attacks naming what is missing.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

use super::kube::{
    agent_bin, at_the_deadline, attack_on, busy_pod, cpu_over, deadline_in, frozen, phase, thawed_vs,
    wait_frozen,
};
use crate::{
    fixtures::{
        containers::CNI_GATEWAY,
        cri::{self, Pod},
        daemonset::{self, AgentPod, Item},
        kube_api::StandInApi,
        runner,
        scratch::PrivDir,
    },
    harness::{Ctx, Skip},
};

/// Where the test's kubeconfig is mounted in the agent's container: the
/// one addition to the DaemonSet's pod spec (in a cluster, the service
/// account's token and the in-cluster address stand for it).
const KUBECONFIG: &str = "/etc/chaos-test/kubeconfig";
const CA: &str = "/etc/chaos-test/ca.crt";

/// The test's files the agent's container gets.
struct Files {
    kubeconfig: PathBuf,
    ca: PathBuf,
}

impl Files {
    /// A kubeconfig for `api` at the node's address, with a CA made by
    /// openssl (kube's client wants one; see kubeconfig_at).
    fn make(api: &StandInApi, dir: &PrivDir) -> anyhow::Result<Self> {
        let ca = dir.path("ca.crt");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=chaos-test-stand-in", "-keyout"])
            .arg(dir.path("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output()?;
        anyhow::ensure!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
        let kubeconfig = api.kubeconfig_at(dir.dir(), CNI_GATEWAY, Some(CA))?;
        Ok(Self { kubeconfig, ca })
    }
}

/// The guardians' cgroup in the agent's pod (chaos-kube's
/// agent/preflight.rs).
const GUARDIANS: &str = "chaos-guardians";

/// An agent's pod on `node`: its sandbox, its container, its log.
struct AgentRun {
    pod: Pod,
    container: String,
    logs: PathBuf,
}

impl AgentRun {
    fn start(
        node: &mut cri::Node,
        name: &str,
        spec: &AgentPod,
        files: &Files,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let logs = dir.join(name);
        std::fs::create_dir_all(&logs)?;
        let pod = node.run_pod_with(
            "chaos-system",
            name,
            &[("app.kubernetes.io/name", "chaos-agent")],
            &spec.pod_options(&logs),
        )?;
        let mut run = Self { pod, container: String::new(), logs };
        run.restart(node, spec, files, 0)?;
        Ok(run)
    }

    /// Start its container (again: `attempt`, as the kubelet restarts one).
    fn restart(
        &mut self,
        node: &cri::Node,
        spec: &AgentPod,
        files: &Files,
        attempt: u32,
    ) -> anyhow::Result<()> {
        let config = spec.container(
            attempt,
            &[("KUBECONFIG", KUBECONFIG)],
            &[(&files.kubeconfig, KUBECONFIG), (&files.ca, CA)],
        )?;
        self.container = node.start_container_config(&self.pod, config)?;
        Ok(())
    }

    /// Stop its container as the kubelet stops a pod: SIGTERM, then a
    /// grace period.
    fn stop(&self, node: &cri::Node) -> anyhow::Result<()> {
        node.stop_container(&self.container, Duration::from_secs(20))
    }

    /// Stopped so, and its pod removed.
    fn remove(self, node: &mut cri::Node) -> anyhow::Result<()> {
        self.stop(node)?;
        node.remove_pod(&self.pod);
        Ok(())
    }

    /// What the agent wrote, every attempt.
    fn log(&self) -> String {
        let mut text = String::new();
        for attempt in 0..4 {
            if let Ok(t) = std::fs::read_to_string(self.logs.join(format!("agent-{attempt}.log"))) {
                text += &t;
            }
        }
        text
    }
}

/// A CRI node with the agent's image (built from deploy/Containerfile),
/// a private directory named after `what`, and the DaemonSet's pod spec
/// for node-a.
fn node_with_the_agents_image(what: &str) -> anyhow::Result<(cri::Node, PrivDir, AgentPod)> {
    let node = cri::Node::start()?;
    let dir = PrivDir::new(what)?;
    let spec = AgentPod::read(&daemonset::manifest(), "node-a")?;
    let context = daemonset::image_context(dir.dir(), &agent_bin())?;
    node.runtime().add_image(&spec.image, &context)?;
    Ok((node, dir, spec))
}

/// This process's RLIMIT_MEMLOCK set to `bytes` (soft and hard) until
/// dropped, when it is put back (root may raise it again).
struct Memlock(libc::rlimit);

impl Memlock {
    fn set(bytes: u64) -> anyhow::Result<Self> {
        let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        anyhow::ensure!(
            unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved) } == 0,
            "getrlimit: {}",
            std::io::Error::last_os_error()
        );
        let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
        // SAFETY: setrlimit reads the struct it is given.
        anyhow::ensure!(
            unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } == 0,
            "setrlimit: {}",
            std::io::Error::last_os_error()
        );
        Ok(Self(saved))
    }
}

impl Drop for Memlock {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads the struct it is given.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &self.0) };
    }
}

/// The web pod's pings to its gateway (the node) are answered (busybox's
/// ping: its exit status is 0 when a reply came).
fn reaches(node: &cri::Node, app: &str) -> bool {
    let answer = node.exec(app, &["/bin/busybox", "ping", "-q", "-c", "3", "-W", "2", CNI_GATEWAY]);
    answer.is_ok_and(|(code, _)| code == 0)
}

/// GET http://`addr`/metrics.
fn scrape(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

/// The word a refusal must contain when `item` is missing.
fn named(item: &Item) -> String {
    match item {
        Item::HostPid => "hostPID".into(),
        Item::Capability(c) => format!("CAP_{c}"),
        Item::Mount(path) => path.clone(),
    }
}

pub fn agent_pod_with_the_daemonsets_security_context(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let (mut node, dir, spec) = node_with_the_agents_image("kube-pod")?;
    let manifest = daemonset::manifest();
    let (web, app) = busy_pod(&mut node)?;
    let api = StandInApi::start_on("0.0.0.0")?;
    let files = Files::make(&api, &dir)?;
    anyhow::ensure!(reaches(&node, &app), "the web pod cannot ping its gateway before any attack");

    let mut agent = AgentRun::start(&mut node, "chaos-agent-a", &spec, &files, dir.dir())?;
    let start_within = Duration::from_secs(90);
    let running = |s: &Value| phase(s) == "Running";
    let ended = |s: &Value| matches!(phase(s), "Ended" | "Refused" | "Failed");

    // 1. An eBPF fault from the container: every packet the web pod sends
    // is lost, then none.
    let deadline = deadline_in(Duration::from_secs(20));
    api.create(attack_on("node-a", "loss", &web, json!({"fault": "net-loss", "percent": 100}), deadline));
    let (ok, s) = api.wait_status("loss", start_within, running);
    anyhow::ensure!(ok, "net-loss not Running: {s}\n{}", agent.log());
    anyhow::ensure!(!reaches(&node, &app), "the web pod pings its gateway through 100% loss");
    // The pings lost, counted by the kernel, at the port the DaemonSet's
    // annotations give Prometheus.
    let ip = node.pod_ip(&agent.pod)?;
    let metrics = scrape(&format!("{ip}:9464"))?;
    let injected = metrics
        .lines()
        .find(|l| l.starts_with("chaos_attack_injected_total{") && l.contains("attack=\"loss\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    anyhow::ensure!(
        injected.is_some_and(|n| n >= 3),
        "injected {injected:?} in the agent's metrics:\n{metrics}"
    );
    let (ok, s) = api.wait_status("loss", Duration::from_secs(60), ended);
    anyhow::ensure!(ok && s["reason"] == "deadline", "net-loss status {s}\n{}", agent.log());
    anyhow::ensure!(reaches(&node, &app), "the web pod cannot ping its gateway after net-loss");

    // 2. A pause, and the agent's container killed (SIGKILL, as a node
    // under memory pressure or `crictl stop -t 0` does): the guardian
    // outside the container thaws the pod at once; the container started
    // again resumes the attack until its deadline.
    let deadline = deadline_in(Duration::from_secs(45));
    api.create(attack_on("node-a", "pause", &web, json!({"fault": "pause"}), deadline));
    let (ok, s) = api.wait_status("pause", start_within, running);
    anyhow::ensure!(ok, "pause not Running: {s}\n{}", agent.log());
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(5)).is_some(),
        "Running but not frozen\n{}",
        agent.log()
    );
    let still = cpu_over(&web, Duration::from_secs(1));
    anyhow::ensure!(still == 0, "the pod used {still} µs of CPU while paused");
    node.stop_container(&agent.container, Duration::ZERO)?;
    let thawed = wait_frozen(&web, false, Duration::from_secs(5));
    eprint!("[container killed: thawed {thawed:.1?} after] ");
    anyhow::ensure!(
        thawed.is_some(),
        "still frozen 5 s after the agent's container was killed\n{}",
        agent.log()
    );
    agent.restart(&node, &spec, &files, 1)?;
    let (ok, s) = api.wait_status("pause", start_within, |s| s["agentRestarts"] == 1);
    anyhow::ensure!(ok && running(&s), "not resumed: {s}\n{}", agent.log());
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(5)).is_some(),
        "resumed but not frozen\n{}",
        agent.log()
    );
    at_the_deadline(thawed_vs(&web, deadline, Duration::from_secs(60)), "resumed", &agent.log())?;
    let (ok, s) = api.wait_status("pause", Duration::from_secs(60), ended);
    anyhow::ensure!(ok && s["reason"] == "deadline", "pause status {s}\n{}", agent.log());

    // Stopped as the kubelet stops a pod (SIGTERM, a grace period).
    agent.stop(&node)?;
    let guardians = agent.pod.cgroup.join(GUARDIANS);
    anyhow::ensure!(!guardians.exists(), "the agent left {}\n{}", guardians.display(), agent.log());
    node.remove_pod(&agent.pod);

    // 3. Each item taken away, all at once (one node name each, so that
    // each agent sees only its own attack).
    let items = spec.items();
    anyhow::ensure!(items.len() >= 8, "the DaemonSet gives only {items:?}");
    let mut runs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = format!("node-{i}");
        let without = AgentPod::read(&manifest, &name)?.without(item);
        runs.push(AgentRun::start(&mut node, &format!("chaos-agent-{i}"), &without, &files, dir.dir())?);
        // `kill` for what only kill needs.
        let fault = match item {
            Item::Capability(c) if c == "KILL" => json!({"fault": "kill"}),
            _ => json!({"fault": "pause"}),
        };
        let until = SystemTime::now() + Duration::from_secs(120);
        api.create(attack_on(&name, &format!("without-{i}"), &web, fault, until));
    }
    let mut failures = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (ok, s) = api.wait_status(&format!("without-{i}"), start_within, ended);
        let message = s["message"].as_str().unwrap_or_default();
        eprint!("[without {item:?}: {} {message:?}] ", phase(&s));
        if !(ok && phase(&s) == "Refused" && message.contains(&named(item))) {
            failures.push(format!("without {item:?}: status {s}\n{}", runs[i].log()));
        }
    }
    anyhow::ensure!(!frozen(&web), "an agent without some item froze the pod");
    for run in runs {
        run.remove(&mut node)?;
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    runner::recover_finds_nothing()?;
    Ok(())
}

/// On a kernel that charges BPF memory to RLIMIT_MEMLOCK (before 5.11; the
/// 5.10 VM): the agent's container inherits the container runtime's limit,
/// here the kernel's default of 64 KiB (containerd started by the fixture
/// under it, as by a systemd unit that sets no LimitMEMLOCK; containerd's
/// CRI sets no RLIMIT_MEMLOCK of its own). That the kernel refuses chaos's maps there
/// is checked first, with `chaos attack` alone. With the DaemonSet's pod
/// spec as it is, the agent refuses its attacks, naming the limit and the
/// two fixes, and the pod is untouched; with SYS_RESOURCE added (the
/// chart's agent.sysResource), the same attack freezes the pod until its
/// deadline.
pub fn memlock_before_5_11_refused_then_granted(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (5, 11) {
        return Err(Skip(format!(
            "kernel {}: BPF memory is charged to the memory cgroup since 5.11, not to RLIMIT_MEMLOCK",
            release.trim()
        ))
        .into());
    }
    // The daemons the node starts inherit this process's limit, which aya
    // may have raised to infinity in an earlier test of the run (it does
    // on its first refused map before 5.11, as root can): set the limit a
    // node whose runtime sets none has, the kernel's default before 5.16,
    // for the node's start only.
    let (mut node, dir, spec) = {
        let _limit = Memlock::set(64 << 10)?;
        node_with_the_agents_image("kube-memlock")?
    };
    let (web, _) = busy_pod(&mut node)?;
    // The kernel's need first, with no agent: `chaos attack pause` under
    // the same 64 KiB fails without CAP_SYS_RESOURCE (aya's raise of the
    // limit is refused, then the maps are) and freezes nothing; with it, it
    // freezes the pod.
    let pause = |keep: bool| -> anyhow::Result<std::process::Output> {
        let mut cmd = std::process::Command::new("setpriv");
        if !keep {
            cmd.args(["--bounding-set", "-sys_resource", "--inh-caps", "-sys_resource"]);
        }
        Ok(cmd
            .args(["sh", "-c", "ulimit -l 64 && exec \"$0\" attack pause --cgroup \"$1\" --duration 2s"])
            .arg(runner::bin())
            .arg(&web.cgroup)
            .output()?)
    };
    let without = pause(false)?;
    let stderr = String::from_utf8_lossy(&without.stderr);
    eprint!(
        "[chaos without CAP_SYS_RESOURCE: {} {:?}] ",
        without.status,
        stderr.lines().last().unwrap_or("")
    );
    anyhow::ensure!(
        !without.status.success(),
        "chaos paused the pod within 64 KiB of RLIMIT_MEMLOCK:\n{stderr}"
    );
    anyhow::ensure!(!frozen(&web), "a failed pause left the pod frozen");
    let with = pause(true)?;
    anyhow::ensure!(
        with.status.success(),
        "chaos with CAP_SYS_RESOURCE: {}\n{}",
        with.status,
        String::from_utf8_lossy(&with.stderr)
    );

    let api = StandInApi::start_on("0.0.0.0")?;
    let files = Files::make(&api, &dir)?;
    let start_within = Duration::from_secs(90);
    let ended = |s: &Value| matches!(phase(s), "Ended" | "Refused" | "Failed");

    let agent = AgentRun::start(&mut node, "chaos-agent-a", &spec, &files, dir.dir())?;
    api.create(attack_on(
        "node-a",
        "as-is",
        &web,
        json!({"fault": "pause"}),
        deadline_in(Duration::from_secs(60)),
    ));
    let (ok, s) = api.wait_status("as-is", start_within, ended);
    let message = s["message"].as_str().unwrap_or_default();
    eprint!("[as is: {} {message:?}] ", phase(&s));
    anyhow::ensure!(
        ok && phase(&s) == "Refused"
            && ["RLIMIT_MEMLOCK", "64 KiB", "SYS_RESOURCE", "LimitMEMLOCK=infinity"]
                .iter()
                .all(|w| message.contains(w)),
        "with the runtime's 64 KiB: status {s}\n{}",
        agent.log()
    );
    anyhow::ensure!(!frozen(&web), "a refused attack froze the pod");
    agent.remove(&mut node)?;

    let granted = spec.with_capability("SYS_RESOURCE");
    let agent = AgentRun::start(&mut node, "chaos-agent-b", &granted, &files, dir.dir())?;
    let deadline = deadline_in(Duration::from_secs(20));
    api.create(attack_on("node-a", "granted", &web, json!({"fault": "pause"}), deadline));
    let (ok, s) = api.wait_status("granted", start_within, |s| phase(s) == "Running" || ended(s));
    anyhow::ensure!(ok && phase(&s) == "Running", "with SYS_RESOURCE: status {s}\n{}", agent.log());
    anyhow::ensure!(
        wait_frozen(&web, true, Duration::from_secs(5)).is_some(),
        "Running but not frozen\n{}",
        agent.log()
    );
    at_the_deadline(thawed_vs(&web, deadline, Duration::from_secs(60)), "with SYS_RESOURCE", &agent.log())?;
    let (ok, s) = api.wait_status("granted", Duration::from_secs(60), ended);
    anyhow::ensure!(ok && s["reason"] == "deadline", "with SYS_RESOURCE: status {s}\n{}", agent.log());
    agent.remove(&mut node)?;
    runner::recover_finds_nothing()?;
    Ok(())
}

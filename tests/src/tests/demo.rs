//! `chaos demo`, as `./x demo` runs it: its service in a real container
//! where a runtime runs one (in the VMs: see fixtures/containers.rs), else
//! in a process sandbox; both verdicts as announced (5% holds, 90% is
//! violated and rolled back); nothing left behind.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::{
    fixtures::{
        containers::{Kind, Runtime, output},
        runner::bin,
    },
    harness::Ctx,
};

/// The demo's two acts take under a minute; an emulated VM doubles that.
const DEMO_WITHIN: Duration = Duration::from_secs(300);

/// The reports' directory, removed on drop.
struct Reports(std::path::PathBuf);

impl Reports {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `chaos demo` to its end with `args` and `env`; its stdout, and its
/// reports' directory.
fn demo(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(String, Reports)> {
    let out = Reports(format!("/run/chaos-test-{}-demo", std::process::id()).into());
    let _ = std::fs::remove_dir_all(out.path());
    std::fs::create_dir(out.path())?;
    let child = Command::new(bin())
        .args(["demo", "--no-live", "--out"])
        .arg(out.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Both pipes are read to the end while the demo runs (a full pipe
    // would stall it); a watchdog kills a demo that outlives its bound.
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = finished.recv_timeout(DEMO_WITHIN).is_err();
        if late {
            // SAFETY: kill(2) on our child, not reaped until the
            // wait below returns, which this thread's kill makes happen.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        late
    });
    let o = child.wait_with_output()?;
    let _ = done.send(());
    ensure!(
        !watchdog.join().unwrap_or(true),
        "chaos demo still ran after {DEMO_WITHIN:?}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(
        o.status.success(),
        "chaos demo exited with {}:\n{stdout}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    // As announced: light loss holds, heavy loss breaks the hypothesis.
    for verdict in ["  5% loss: HELD (exit 0)", " 90% loss: VIOLATED (exit 1)"] {
        ensure!(stdout.contains(verdict), "no `{verdict}` in the demo's verdicts:\n{stdout}");
    }
    Ok((stdout, out))
}

/// The target each act's report names.
fn targets(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for stem in ["act1-loss5", "act2-loss90"] {
        let path = dir.join(format!("{stem}-report.json"));
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).context(path.display().to_string())?)?;
        out.push(report["targets"][0].clone());
    }
    Ok(out)
}

/// Nothing of the demo's is left: no namespace, no cgroup.
fn nothing_left() -> anyhow::Result<()> {
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chaos-demo-"))
        .collect();
    ensure!(netns.is_empty(), "the demo left network namespaces {netns:?}");
    let fs = chaos::targets::CgroupFs::discover()?;
    let cgroups: Vec<String> = std::fs::read_dir(&fs.mount)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chaos-demo-"))
        .collect();
    ensure!(cgroups.is_empty(), "the demo left cgroups {cgroups:?}");
    Ok(())
}

/// No runtime to run a container (their sockets named elsewhere): the
/// service runs as a process in the demo's own cgroup, which the
/// experiment names by path, and the demo says why.
pub fn falls_back_to_a_process_without_a_container_runtime(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let (stdout, dir) = demo(
        &[],
        &[
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ("CONTAINER_HOST", "unix:///nonexistent/podman.sock"),
        ],
    )?;
    ensure!(
        stdout.contains("no container runtime ran the service (docker: no socket at /nonexistent/docker.sock; podman: no socket at /nonexistent/podman.sock)"),
        "the demo did not say why its service runs as a process:\n{stdout}"
    );
    for t in targets(dir.path())? {
        let path = t["path"].as_str().unwrap_or_default();
        ensure!(
            path.rsplit('/').next().is_some_and(|n| n.starts_with("chaos-demo-"))
                && t.get("workload").is_none(),
            "the demo attacked {t}, not its own cgroup"
        );
    }
    nothing_left()
}

/// Start `chaos demo` and SIGKILL it once its first act has begun: what
/// it made stays behind for the next demo to remove.
fn demo_killed_in_act_one(args: &[&str]) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut child = Command::new(bin())
        .args(["demo", "--no-live"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("act 1:") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let started = rx.recv_timeout(DEMO_WITHIN);
    let _ = child.kill();
    let _ = child.wait();
    let seen = started.context("the demo did not reach its first act")?;
    ensure!(seen.contains("podman container chaos-demo-"), "the killed demo ran no container:\n{seen}");
    Ok(())
}

/// podman runs containers: the service is one (busybox httpd from an image
/// the demo imports), the experiment names it by its container name, the
/// attack lands on the container's cgroup, and the container and its
/// image are removed at the end — and those of a demo killed with SIGKILL
/// by the next demo.
pub fn runs_its_service_in_a_container(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let _podman = Runtime::start(Kind::Podman)?;
    demo_killed_in_act_one(&["--runtime", "podman"])?;
    // The killed demo's attack is in the kernel until its deadline, or
    // until recovered; its container, image and namespaces until the next
    // demo.
    crate::fixtures::runner::recover()?;
    let (stdout, dir) = demo(&["--runtime", "podman"], &[])?;
    for left in [
        "removed podman container ",
        "removed podman image localhost/chaos-demo:",
        "removed network namespace chaos-demo-",
    ] {
        ensure!(
            stdout.contains(left),
            "the demo did not remove what the killed one left (`{left}`):\n{stdout}"
        );
    }
    let name = stdout
        .split_whitespace()
        .find(|w| w.starts_with("chaos-demo-") && w[11..].chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("the demo named no container chaos-demo-<pid>:\n{stdout}"))?
        .to_owned();
    ensure!(
        stdout.contains(&format!("podman container {name} (busybox httpd)"))
            && stdout.contains(&format!("--set container={name}")),
        "the service did not run in podman container {name}, named by the experiment:\n{stdout}"
    );
    for t in targets(dir.path())? {
        let path = t["path"].as_str().unwrap_or_default();
        let workload = t["workload"].as_str().unwrap_or_default();
        ensure!(
            workload.starts_with(&format!("podman container {name} (")) && path.contains("libpod"),
            "the demo attacked {t}, not podman's container {name}"
        );
    }
    let left =
        output(Command::new("podman").args(["ps", "-a", "-q", "--filter", "label=io.chaos.demo.owner"]))?;
    ensure!(left.trim().is_empty(), "the demo left containers: {left}");
    let images = output(Command::new("podman").args(["images", "-q", "localhost/chaos-demo"]))?;
    ensure!(images.trim().is_empty(), "the demo left images: {images}");
    nothing_left()
}

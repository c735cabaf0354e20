//! `chaos targets`: what can be attacked on this machine, by name.

use std::path::Path;

use clap::Args;
use serde_json::json;

use crate::{
    capabilities::CapabilitySet,
    error::{ExitCode, Result},
    plan::Preferences,
    runtime::{self, Container, Runtime},
    targets::{AllowHost, CgroupFs, Target},
};

/// List the containers of this machine that chaos can attack by name: with
/// their runtime, name, id, state, cgroup (path and id) and network
/// namespace, and the fault kinds this kernel offers for them.
///
/// Every runtime whose socket exists is asked through its API: docker
/// (/var/run/docker.sock), podman as root (/run/podman/podman.sock, served
/// by `podman.socket` or `podman system service`) and containerd
/// (/run/containerd/containerd.sock, every namespace but docker's `moby`).
/// Runtimes that cannot be asked are listed with the reason. Attack one
/// with `chaos attack <fault> --container NAME`.
#[derive(Debug, Args)]
pub struct TargetsArgs {
    /// Print JSON: `containers` (each with `cgroup` and `netns` when it
    /// runs), `unreachable` (runtime and reason) and `faults` (the fault
    /// kinds this kernel offers).
    #[arg(long)]
    pub json: bool,

    /// Ask only this runtime.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<Runtime>,
}

impl TargetsArgs {
    pub fn run(self) -> Result<ExitCode> {
        let fs = CgroupFs::discover()?;
        let (containers, unreachable) = runtime::list(self.runtime);
        let rows: Vec<(Container, Option<Target>, Option<u64>)> = containers
            .into_iter()
            .map(|c| {
                // Resolved as an attack would, host check included: a
                // container in a cgroup that stands for the host shows no
                // cgroup here, as `attack` would refuse it.
                let cgroup =
                    c.pid.and_then(|pid| fs.resolve_pid(Path::new("/proc"), pid, AllowHost(true)).ok());
                let netns = c.pid.and_then(runtime::netns_inode);
                (c, cgroup, netns)
            })
            .collect();
        // Pods, when this is a Kubernetes node (a CRI socket answers): each
        // with the pod's cgroup, which `--pod` attacks.
        let cri = runtime::cri_socket();
        let (pods, cri_unreachable) =
            if self.runtime.is_some_and(|r| !matches!(r, Runtime::Containerd | Runtime::Crio))
                || !cri.exists()
            {
                (Vec::new(), None)
            } else {
                match runtime::list_pods() {
                    Ok(pods) => (pods, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                }
            };
        let pods: Vec<(runtime::cri::Pod, Option<Target>, Option<u64>)> = pods
            .into_iter()
            .map(|p| {
                let cgroup = p.pid.and_then(|pid| {
                    let sandbox = fs.cgroup_of(Path::new("/proc"), pid).ok()?;
                    let dir = runtime::cri::pod_cgroup(&p, &sandbox).ok()?;
                    fs.resolve_path(&dir, AllowHost(true)).ok()
                });
                let netns = p.pid.and_then(runtime::netns_inode);
                (p, cgroup, netns)
            })
            .collect();
        let caps = CapabilitySet::detect_all();
        let faults: Vec<String> = super::doctor::families(&caps, &Preferences::from_env()?)
            .into_iter()
            .filter(|f| f["available"].as_bool() == Some(true))
            .filter_map(|f| f["fault"].as_str().map(str::to_owned))
            .collect();
        if self.json {
            let containers: Vec<serde_json::Value> = rows
                .iter()
                .map(|(c, cgroup, netns)| {
                    let mut v = serde_json::to_value(c).expect("plain data");
                    v["label"] = json!(c.label());
                    v["cgroup"] = json!(cgroup);
                    v["netns"] = json!(netns.map(|inode| json!({ "inode": inode })));
                    v
                })
                .collect();
            let unreachable: Vec<serde_json::Value> =
                unreachable.iter().map(|(r, why)| json!({ "runtime": r, "reason": why })).collect();
            let pods: Vec<serde_json::Value> = pods
                .iter()
                .map(|(p, cgroup, netns)| {
                    let mut v = serde_json::to_value(p).expect("plain data");
                    v["cgroup"] = json!(cgroup);
                    v["netns"] = json!(netns.map(|inode| json!({ "inode": inode })));
                    v
                })
                .collect();
            println!(
                "{}",
                json!({
                    "containers": containers,
                    "pods": pods,
                    "cri_unreachable": cri_unreachable,
                    "unreachable": unreachable,
                    "faults": faults
                })
            );
            return Ok(ExitCode::Ok);
        }
        if rows.is_empty() {
            println!("no containers");
        } else {
            println!(
                "{:10}  {:30}  {:12}  {:8}  {:>10}  {:>10}  CGROUP",
                "RUNTIME", "NAME", "ID", "STATE", "CGROUP-ID", "NETNS"
            );
            for (c, cgroup, netns) in &rows {
                let name = match &c.namespace {
                    Some(ns) => format!("{ns}/{}", c.name),
                    None => c.name.clone(),
                };
                let (id, netns, path) = columns(&fs, c.host_network, cgroup.as_ref(), *netns);
                println!(
                    "{:10}  {name:30}  {:12}  {:8}  {id:>10}  {netns:>10}  /{path}",
                    c.runtime.name(),
                    c.short_id(),
                    c.state
                );
            }
        }
        for (r, why) in &unreachable {
            println!("({r} not asked: {why})");
        }
        if !pods.is_empty() {
            println!(
                "\n{:40}  {:36}  {:5}  {:>10}  {:>10}  CGROUP",
                "POD", "UID", "READY", "CGROUP-ID", "NETNS"
            );
            for (p, cgroup, netns) in &pods {
                let (id, netns, path) = columns(&fs, p.host_network, cgroup.as_ref(), *netns);
                let name = format!("{}/{}", p.namespace, p.name);
                println!(
                    "{name:40}  {:36}  {:5}  {id:>10}  {netns:>10}  /{path}",
                    p.uid,
                    if p.ready { "yes" } else { "no" }
                );
            }
        }
        if let Some(why) = &cri_unreachable {
            println!("(pods not listed: {why})");
        }
        println!(
            "\nfaults this kernel offers for each: {}\n(`chaos doctor` says how; a container with the host's \
             network gets network faults on the host's devices, for its own traffic only)",
            if faults.is_empty() { "none (run as root to probe)".to_owned() } else { faults.join(", ") }
        );
        Ok(ExitCode::Ok)
    }
}

/// The table's cgroup id, network namespace and cgroup path columns of a
/// container or pod ("-" where it does not run, "host" for the host's
/// network).
fn columns(
    fs: &CgroupFs,
    host_network: bool,
    cgroup: Option<&Target>,
    netns: Option<u64>,
) -> (String, String, String) {
    let netns = match (host_network, netns) {
        (true, _) => "host".to_owned(),
        (false, Some(n)) => n.to_string(),
        (false, None) => "-".to_owned(),
    };
    match cgroup {
        Some(t) => {
            (t.id.to_string(), netns, t.path.strip_prefix(&fs.mount).unwrap_or(&t.path).display().to_string())
        }
        None => ("-".to_owned(), netns, "-".to_owned()),
    }
}

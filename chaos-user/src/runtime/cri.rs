//! Pods, through the Container Runtime Interface: the kubelet's own view of
//! a node, served by containerd's CRI plugin (on containerd's socket) and
//! by CRI-O.
//!
//! A pod is a sandbox (its "pause" process holds the pod's namespaces) and
//! containers that join it. The kubelet asks the runtime to put all of them
//! under one cgroup of the pod's (`RunPodSandbox`'s `cgroup_parent`:
//! `.../pod<uid>` with the cgroupfs driver, `...-pod<uid_with_underscores>.slice`
//! with systemd's; kubelet's pkg/kubelet/cm/pod_container_manager_linux.go),
//! so that cgroup is the pod's target: a rule there covers every container
//! of the pod, including one restarted (with a new id and a new cgroup)
//! during the attack. chaos finds it as the parent of the sandbox process's
//! cgroup, and checks that it is named for the pod's uid.

use std::{collections::HashMap, path::Path};

use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::{
    ContainerFilter, ContainerStatusRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
    PodSandboxStatusRequest, runtime_service_client::RuntimeServiceClient,
};
use serde::Serialize;

use super::{Container, Runtime, pid_of};

/// `PodSandboxState.SANDBOX_READY` and `ContainerState.CONTAINER_RUNNING`
/// (cri-api's api.proto); `NamespaceMode.NODE`: the pod shares the node's
/// network namespace (`hostNetwork: true`).
const SANDBOX_READY: i32 = 0;
const CONTAINER_RUNNING: i32 = 1;
const NAMESPACE_NODE: i32 = 2;

/// A pod as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// The sandbox's id.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    /// The sandbox ("pause") process, while the pod is ready.
    pub pid: Option<i32>,
    pub ready: bool,
    /// `hostNetwork: true`.
    pub host_network: bool,
}

impl Pod {
    pub fn label(&self) -> String {
        format!("pod {}/{} (uid {})", self.namespace, self.name, self.uid)
    }

    /// Whether `name` names this pod's cgroup directory: the kubelet's
    /// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice`
    /// (systemd).
    pub fn owns_cgroup_name(&self, name: &str) -> bool {
        let plain = format!("pod{}", self.uid);
        let systemd = format!("pod{}.slice", self.uid.replace('-', "_"));
        name == plain || name.ends_with(&systemd)
    }
}

/// A container of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodContainer {
    pub id: String,
    pub name: String,
    pub pid: Option<i32>,
}

/// The pods (ready ones, or all) on the CRI socket, `selector` labels all
/// matching.
pub async fn pods(channel: Channel, selector: &HashMap<String, String>) -> Result<Vec<Pod>, String> {
    let mut client = RuntimeServiceClient::new(channel);
    let filter = PodSandboxFilter { label_selector: selector.clone(), ..Default::default() };
    let items = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
        .await
        .map_err(|e| e.message().to_owned())?
        .into_inner()
        .items;
    let mut out = Vec::with_capacity(items.len());
    for p in items {
        let meta = p.metadata.unwrap_or_default();
        let ready = p.state == SANDBOX_READY;
        let (pid, host_network) = if ready {
            let status = client
                .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: p.id.clone(), verbose: true })
                .await
                .map_err(|e| e.message().to_owned())?
                .into_inner();
            let host = status
                .status
                .and_then(|s| s.linux)
                .and_then(|l| l.namespaces)
                .and_then(|n| n.options)
                .is_some_and(|o| o.network == NAMESPACE_NODE);
            (verbose_pid(&status.info), host)
        } else {
            (None, false)
        };
        out.push(Pod {
            id: p.id,
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            labels: p.labels,
            pid,
            ready,
            host_network,
        });
    }
    Ok(out)
}

/// The containers of the pod `sandbox`, running or not.
pub async fn containers(channel: Channel, sandbox: &str) -> Result<Vec<PodContainer>, String> {
    let filter = ContainerFilter { pod_sandbox_id: sandbox.to_owned(), ..Default::default() };
    let listed = with_pids(channel, Some(filter)).await?;
    Ok(listed
        .into_iter()
        .map(|(c, pid)| PodContainer { id: c.id, name: c.metadata.unwrap_or_default().name, pid })
        .collect())
}

/// Every container the CRI knows, running or not, as a [`Container`] of
/// `runtime`: named `namespace/pod/container` after its pod (as
/// containerd's `k8s.io` containers are), its init process from its
/// verbose status. For CRI-O, which serves only the CRI: its containers
/// are all pods' containers.
pub async fn list_containers(channel: Channel, runtime: Runtime) -> Result<Vec<Container>, String> {
    let pods: HashMap<String, Pod> =
        pods(channel.clone(), &HashMap::new()).await?.into_iter().map(|p| (p.id.clone(), p)).collect();
    let listed = with_pids(channel, None).await?;
    Ok(listed
        .into_iter()
        .map(|(c, pid)| {
            let name = c.metadata.map(|m| m.name).unwrap_or_default();
            let name = match pods.get(&c.pod_sandbox_id) {
                Some(p) => format!("{}/{}/{name}", p.namespace, p.name),
                None => name,
            };
            Container {
                runtime,
                id: c.id,
                name,
                namespace: None,
                image: c.image.map(|i| i.image).unwrap_or(c.image_ref),
                state: CONTAINER_STATES.get(c.state as usize).copied().unwrap_or("unknown").to_owned(),
                pid,
                host_network: false,
            }
        })
        .collect())
}

/// The containers `filter` lets through, each with its init process while
/// it runs; one that went away between the list and its status is left
/// out, as if listed a moment later.
async fn with_pids(
    channel: Channel,
    filter: Option<ContainerFilter>,
) -> Result<Vec<(k8s_cri::v1::Container, Option<i32>)>, String> {
    let mut client = RuntimeServiceClient::new(channel);
    let listed = client
        .list_containers(ListContainersRequest { filter })
        .await
        .map_err(|e| e.message().to_owned())?
        .into_inner()
        .containers;
    let mut out = Vec::with_capacity(listed.len());
    for c in listed {
        if c.state != CONTAINER_RUNNING {
            out.push((c, None));
            continue;
        }
        let status = client
            .container_status(ContainerStatusRequest { container_id: c.id.clone(), verbose: true })
            .await;
        if let Ok(s) = status {
            let pid = verbose_pid(&s.into_inner().info);
            out.push((c, pid));
        }
    }
    Ok(out)
}

/// `ContainerState`'s names, by value (cri-api's api.proto).
const CONTAINER_STATES: [&str; 4] = ["created", "running", "exited", "unknown"];

/// The process of a sandbox or container, from the runtime's verbose
/// status: containerd and CRI-O both put a JSON object under `info` with
/// its `pid` (containerd: pkg/cri/server/sandbox_status.go and
/// container_status.go; CRI-O: server/sandbox_status.go).
fn verbose_pid(info: &HashMap<String, String>) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    pid_of(v.get("pid")?.as_i64()?)
}

/// Every ready pod's sandbox `uid` must be named by the parent of its
/// process's cgroup; see the module's comment.
pub fn pod_cgroup(pod: &Pod, sandbox_cgroup: &Path) -> Result<std::path::PathBuf, String> {
    let parent = sandbox_cgroup.parent().ok_or("the sandbox is in the root cgroup")?;
    let name = parent.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if pod.owns_cgroup_name(name) {
        Ok(parent.to_path_buf())
    } else {
        Err(format!(
            "its sandbox is in cgroup {}, whose parent {} is not named for the pod (pod{} or \
             ...-pod{}.slice): the pod was not made with a pod-level cgroup, as a kubelet makes it",
            sandbox_cgroup.display(),
            parent.display(),
            pod.uid,
            pod.uid.replace('-', "_")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        Pod {
            id: "s1".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: uid.into(),
            labels: HashMap::new(),
            pid: Some(7),
            ready: true,
            host_network: false,
        }
    }

    #[test]
    fn the_pod_cgroup_is_the_sandbox_cgroups_parent_named_for_the_uid() {
        let p = pod("1b2c-3d");
        // cgroupfs driver
        let cg = Path::new("/sys/fs/cgroup/kubepods/besteffort/pod1b2c-3d/abc123");
        assert_eq!(pod_cgroup(&p, cg).unwrap(), Path::new("/sys/fs/cgroup/kubepods/besteffort/pod1b2c-3d"));
        // systemd driver
        let cg = Path::new(
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d.slice/cri-containerd-abc.scope",
        );
        assert!(pod_cgroup(&p, cg).unwrap().ends_with("kubepods-burstable-pod1b2c_3d.slice"));
        // another pod's, or no pod-level cgroup at all
        let err = pod_cgroup(&p, Path::new("/sys/fs/cgroup/kubepods/besteffort/pod9/abc")).unwrap_err();
        assert!(err.contains("not named for the pod"), "{err}");
        assert!(pod_cgroup(&p, Path::new("/sys/fs/cgroup/k8s.io/abc")).is_err());
    }

    #[test]
    fn the_pid_comes_from_the_verbose_info() {
        let info = HashMap::from([("info".to_owned(), r#"{"pid": 4242, "runtimeSpec": {}}"#.to_owned())]);
        assert_eq!(verbose_pid(&info), Some(4242));
        assert_eq!(verbose_pid(&HashMap::from([("info".to_owned(), r#"{"pid": 0}"#.to_owned())])), None);
        assert_eq!(verbose_pid(&HashMap::new()), None);
    }
}

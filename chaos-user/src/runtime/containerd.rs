//! containerd, through its gRPC API (containerd's own client crate).
//!
//! containerd keeps containers in namespaces: `default` for `ctr`,
//! `k8s.io` for its CRI plugin (the kubelet's containers and pod
//! sandboxes), `moby` for docker's. Every namespace is listed but `moby`:
//! docker's containers are docker's to name (`--runtime docker`), and
//! containerd knows them only by id. A container runs when it has a task;
//! the task's pid is its init process.

use std::path::Path;

use containerd_client::{
    services::v1::{
        GetRequest, ListContainersRequest, ListNamespacesRequest, containers_client::ContainersClient,
        namespaces_client::NamespacesClient, tasks_client::TasksClient,
    },
    tonic::{Code, Request},
    with_namespace,
};

use super::{Container, Runtime, pid_of};

/// The labels the kubelet puts on the containers it makes through CRI
/// (kubelet's pkg/kubelet/types/labels.go), and the one containerd's CRI
/// plugin puts on pod sandboxes.
const K8S_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const K8S_POD: &str = "io.kubernetes.pod.name";
const K8S_CONTAINER: &str = "io.kubernetes.container.name";
const CRI_KIND: &str = "io.cri-containerd.kind";

/// `task.proto`'s Status: 2 is RUNNING (1 CREATED, 3 STOPPED, 4 PAUSED,
/// 5 PAUSING).
const TASK_RUNNING: i32 = 2;

pub async fn list(socket: &Path) -> Result<Vec<Container>, String> {
    let channel = containerd_client::connect(socket).await.map_err(|e| e.to_string())?;
    let namespaces = NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await
        .map_err(|e| e.message().to_owned())?
        .into_inner()
        .namespaces;
    let mut containers = ContainersClient::new(channel.clone());
    let mut tasks = TasksClient::new(channel);
    let mut out = Vec::new();
    for ns in namespaces.into_iter().map(|n| n.name).filter(|n| n != "moby") {
        let listed = containers
            .list(with_namespace!(ListContainersRequest::default(), ns.as_str()))
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner()
            .containers;
        for c in listed {
            let task = tasks
                .get(with_namespace!(
                    GetRequest { container_id: c.id.clone(), exec_id: String::new() },
                    ns.as_str()
                ))
                .await;
            let (state, pid) = match task {
                Ok(t) => match t.into_inner().process {
                    Some(p) if p.status == TASK_RUNNING => ("running", pid_of(p.pid.into())),
                    Some(_) => ("stopped", None),
                    None => ("created", None),
                },
                Err(e) if e.code() == Code::NotFound => ("created", None),
                Err(e) => return Err(e.message().to_owned()),
            };
            let label = |k: &str| c.labels.get(k).cloned();
            let name = match (label(K8S_NAMESPACE), label(K8S_POD), label(K8S_CONTAINER), label(CRI_KIND)) {
                (Some(pns), Some(pod), Some(name), _) => format!("{pns}/{pod}/{name}"),
                (Some(pns), Some(pod), None, Some(kind)) if kind == "sandbox" => {
                    format!("{pns}/{pod}/(sandbox)")
                }
                _ => c.id.clone(),
            };
            out.push(Container {
                runtime: Runtime::Containerd,
                id: c.id,
                name,
                namespace: Some(ns.clone()),
                image: c.image,
                state: state.to_owned(),
                pid,
                host_network: false,
            });
        }
    }
    Ok(out)
}

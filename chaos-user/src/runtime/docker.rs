//! docker and podman, through the Docker Engine API.
//!
//! podman serves the same API (its "compat" endpoints, `podman system
//! service`; `podman.socket` starts it on demand), so one client covers
//! both. The API is versioned by path (`/v1.41/containers/json`); chaos
//! asks in version 1.41 (Docker 20.10), which every engine since speaks —
//! Docker keeps old versions down to 1.24 — and podman's compat API too.
//! The two endpoints used, container list and inspect, have carried the
//! fields read here (id, names, state, network mode, pid) since long
//! before. Not negotiated: negotiation asks `/version` first, which podman
//! answers by asking its OCI runtime and conmon for their versions — 21 s
//! in an emulated VM here, for nothing chaos needs.

use std::path::Path;

use bollard::{ClientVersion, Docker, query_parameters::ListContainersOptions};

use super::{Container, Runtime, pid_of};

const API_VERSION: &ClientVersion = &ClientVersion { major_version: 1, minor_version: 41 };

/// Seconds the HTTP client waits for one response (the caller bounds the
/// whole conversation as well).
const HTTP_TIMEOUT_SECS: u64 = 20;

/// Every container `runtime` has (running or not), with the init pid of
/// the running ones.
pub async fn list(runtime: Runtime, socket: &Path) -> Result<Vec<Container>, String> {
    let path = socket.to_str().ok_or("the socket path is not UTF-8")?;
    let docker =
        Docker::connect_with_unix(path, HTTP_TIMEOUT_SECS, API_VERSION).map_err(|e| e.to_string())?;
    let summaries = docker
        .list_containers(Some(ListContainersOptions { all: true, ..Default::default() }))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(summaries.len());
    for s in summaries {
        let Some(id) = s.id else { continue };
        let state = s.state.map(|s| s.to_string()).unwrap_or_default();
        // The list carries no pid; the inspection does. A container that
        // went away in between is left out, as if listed a moment later.
        let pid = if state == "running" {
            match docker.inspect_container(&id, None).await {
                Ok(i) => i.state.and_then(|st| st.pid).and_then(pid_of),
                Err(_) => continue,
            }
        } else {
            None
        };
        let name = s
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| id.clone());
        out.push(Container {
            runtime,
            id,
            name,
            namespace: None,
            image: s.image.unwrap_or_default(),
            state,
            pid,
            host_network: false,
        });
    }
    Ok(out)
}

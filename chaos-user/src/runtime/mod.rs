//! Container runtimes: name a container as its runtime knows it; get the
//! cgroup and the network namespace chaos acts on.
//!
//! Each runtime is asked through its own API on its own socket — the Docker
//! Engine API for docker and podman (podman serves the same API, see
//! [`docker`]), containerd's gRPC API for containerd ([`containerd`]), the
//! CRI for CRI-O, which serves nothing else ([`cri`]) — never by running
//! or scraping a CLI. What chaos needs from a runtime is
//! the container's init process: the cgroup it is in (`/proc/PID/cgroup`)
//! is the target, a rule on it covers every process of the container,
//! `exec`s included; the network namespace it is in is the container's.

pub mod containerd;
pub mod cri;
pub mod docker;

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::{
    error::{Error, Result},
    experiment::Selector,
    targets::{AllowHost, CgroupFs, Target},
};

/// How long one runtime may take to answer. Generous: a runtime under load
/// (or in an emulated VM) answers in seconds, not milliseconds.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// CRI-O's socket (its `listen` default, crio.conf(5)).
const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";

/// A container runtime chaos can ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    #[value(name = "cri-o")]
    #[serde(rename = "cri-o")]
    Crio,
}

impl Runtime {
    pub const ALL: [Self; 4] = [Self::Docker, Self::Podman, Self::Containerd, Self::Crio];

    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
            Self::Crio => "cri-o",
        }
    }

    /// The socket this runtime listens on as root: the runtime's own
    /// environment variable when it is a unix socket (`DOCKER_HOST`,
    /// `CONTAINER_HOST`, `CONTAINERD_ADDRESS`: what its own CLI honours;
    /// CRI-O's CLI is crictl, whose variable names any CRI runtime, so
    /// CRI-O has none), else its default path.
    pub fn socket(self) -> PathBuf {
        let (var, default) = match self {
            Self::Docker => (Some("DOCKER_HOST"), "/var/run/docker.sock"),
            Self::Podman => (Some("CONTAINER_HOST"), "/run/podman/podman.sock"),
            Self::Containerd => (Some("CONTAINERD_ADDRESS"), "/run/containerd/containerd.sock"),
            Self::Crio => (None, CRIO_SOCKET),
        };
        var.and_then(|var| std::env::var(var).ok())
            .and_then(|v| match v.strip_prefix("unix://") {
                Some(p) => Some(p.to_owned()),
                None if v.starts_with('/') => Some(v),
                None => None,
            })
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    }

    /// What to do when the socket is not there.
    fn how_to_start(self) -> &'static str {
        match self {
            Self::Docker => "start dockerd (`systemctl start docker`)",
            Self::Podman => {
                "podman answers on a socket only while its API service runs: `systemctl enable --now \
                 podman.socket` (or `podman system service --time=0 &`); rootless podman's containers \
                 are not reachable this way: give the cgroup (--cgroup) or a process (--pid) of the \
                 container instead"
            }
            Self::Containerd => "start containerd (`systemctl start containerd`)",
            Self::Crio => "start CRI-O (`systemctl start crio`)",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A container as its runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    /// The full id.
    pub id: String,
    /// Its name (docker, podman), or what Kubernetes calls it
    /// (`pod-namespace/pod/container` under containerd's `k8s.io`), or its
    /// id (plain containerd containers have no other name).
    pub name: String,
    /// containerd's namespace (`default`, `k8s.io`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub image: String,
    /// As the runtime says it (`running`, `exited`, `created`, ...).
    pub state: String,
    /// The init process, while the container runs.
    pub pid: Option<i32>,
    /// The container shares the host's network namespace (`--network
    /// host`), as its init process shows: set by [`list`] for every
    /// runtime alike.
    pub host_network: bool,
}

impl Container {
    /// The id as people quote it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// How events, reports and messages name it, e.g. `docker container
    /// web (3f2a1b0c9d8e)`.
    pub fn label(&self) -> String {
        let name = match &self.namespace {
            Some(ns) if self.name == self.id => format!("{ns}/{}", self.short_id()),
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        };
        if name.ends_with(self.short_id()) {
            format!("{} container {name}", self.runtime)
        } else {
            format!("{} container {name} ({})", self.runtime, self.short_id())
        }
    }

    /// Whether `query` names this container: its full id, its name, its
    /// `namespace/name` (containerd), or a prefix of its id.
    fn matches(&self, query: &str) -> Match {
        let by_ns = |n: &str| self.namespace.as_ref().is_some_and(|ns| query == format!("{ns}/{n}"));
        if query == self.id || query == self.name || by_ns(&self.name) || by_ns(&self.id) {
            Match::Exact
        } else if self.id.starts_with(query)
            || self.namespace.as_ref().is_some_and(|ns| {
                query
                    .strip_prefix(ns.as_str())
                    .and_then(|q| q.strip_prefix('/'))
                    .is_some_and(|q| self.id.starts_with(q))
            })
        {
            Match::Prefix
        } else {
            Match::No
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    No,
    Prefix,
    Exact,
}

/// The containers of every reachable runtime (or of `only`), and for each
/// runtime that could not be asked, why.
pub fn list(only: Option<Runtime>) -> (Vec<Container>, Vec<(Runtime, String)>) {
    let mut all = Vec::new();
    let mut unreachable = Vec::new();
    for runtime in Runtime::ALL.into_iter().filter(|r| only.is_none_or(|o| o == *r)) {
        match list_one(runtime) {
            Ok(found) => all.extend(found),
            Err(why) => unreachable.push((runtime, why)),
        }
    }
    all.sort_by(|a, b| (a.runtime, &a.namespace, &a.name).cmp(&(b.runtime, &b.namespace, &b.name)));
    (all, unreachable)
}

fn list_one(runtime: Runtime) -> std::result::Result<Vec<Container>, String> {
    let socket = runtime.socket();
    match std::fs::symlink_metadata(&socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "its socket {} does not exist: {}",
                socket.display(),
                runtime.how_to_start()
            ));
        }
        Err(e) => return Err(format!("its socket {}: {e}", socket.display())),
        Ok(_) => {}
    }
    let listed = match runtime {
        Runtime::Docker | Runtime::Podman => block_on(docker::list(runtime, &socket)),
        Runtime::Containerd => block_on(containerd::list(&socket)),
        Runtime::Crio => block_on(async {
            let channel = containerd_client::connect(&socket).await.map_err(|e| e.to_string())?;
            cri::list_containers(channel, Runtime::Crio).await
        }),
    };
    let mut listed = listed.map_err(|e| format!("asking it on {} failed: {e}", socket.display()))?;
    // Whatever the runtime calls it: a container whose init process is in
    // PID 1's network namespace has the host's network.
    let host = netns_inode(1);
    for c in &mut listed {
        if let Some(pid) = c.pid {
            c.host_network |= host.is_some() && netns_inode(pid) == host;
        }
    }
    Ok(listed)
}

/// The inode of process `pid`'s network namespace.
pub fn netns_inode(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// The one running container `query` names (see [`Container::matches`]),
/// in `only` or in any reachable runtime.
pub fn find(query: &str, only: Option<Runtime>) -> Result<Container> {
    if query.is_empty() {
        return Err(Error::invalid("--container: give a container's name or id (see `chaos targets`)"));
    }
    let (all, unreachable) = list(only);
    choose(query, only, &all, &unreachable, |r| r.socket().exists())
}

/// [`find`]'s decision, given what the runtimes answered (`all`), which
/// could not be asked and why (`unreachable`), and whether a runtime's
/// socket is there (`present`).
fn choose(
    query: &str,
    only: Option<Runtime>,
    all: &[Container],
    unreachable: &[(Runtime, String)],
    present: impl Fn(Runtime) -> bool,
) -> Result<Container> {
    let tried = if only.is_some() { 1 } else { Runtime::ALL.len() };
    if unreachable.len() == tried {
        let why: Vec<String> = unreachable.iter().map(|(r, why)| format!("{r}: {why}")).collect();
        return Err(Error::environment(format!(
            "cannot look up container {query}: no container runtime could be asked ({})",
            why.join("; ")
        )));
    }
    let best = all.iter().map(|c| c.matches(query)).max().unwrap_or(Match::No);
    let found: Vec<&Container> =
        all.iter().filter(|c| best != Match::No && c.matches(query) == best).collect();
    // A runtime that is there (its socket exists) but did not answer may
    // know the name too: attacking the one that answered could be
    // attacking the wrong container. A missing socket is no such doubt.
    let silent: Vec<String> =
        unreachable.iter().filter(|(r, _)| present(*r)).map(|(r, why)| format!("{r}: {why}")).collect();
    if !found.is_empty() && !silent.is_empty() {
        return Err(Error::environment(format!(
            "{query} names {}, but {} could not be asked and may know the name too; name the runtime with \
             --runtime {}",
            found[0].label(),
            silent.join("; "),
            found[0].runtime
        )));
    }
    match found.as_slice() {
        [] => {
            let mut msg = format!("no container named {query}");
            if let Some(runtime) = only {
                msg += &format!(" in {runtime}");
            }
            let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            let near: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.contains(query) || query.contains(*n))
                .chain(crate::experiment::diag::did_you_mean(query, names.iter().copied()))
                .collect();
            if let Some(first) = near.first() {
                msg += &format!("; did you mean {first}?");
            }
            if !unreachable.is_empty() {
                let why: Vec<String> = unreachable.iter().map(|(r, why)| format!("{r}: {why}")).collect();
                msg += &format!(" (not asked: {})", why.join("; "));
            }
            msg += "; `chaos targets` lists the containers of this machine";
            Err(Error::invalid(msg))
        }
        [one] => running(one),
        many => {
            let names: Vec<String> = many.iter().map(|c| c.label()).collect();
            Err(Error::invalid(format!(
                "{query} is ambiguous: it names {} containers ({}); give more of the id, or the \
                 runtime with --runtime",
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// The targets `selector` names: one, but for a pod selector, which may
/// match several pods.
pub fn resolve(selector: &Selector, fs: &CgroupFs, allow_host: AllowHost) -> Result<Vec<Target>> {
    match selector {
        Selector::Cgroup(path) => Ok(vec![fs.resolve_path(path, allow_host)?]),
        Selector::Pid(pid) => Ok(vec![fs.resolve_pid(Path::new("/proc"), *pid, allow_host)?]),
        Selector::Container { name, runtime } => Ok(vec![target(fs, name, *runtime, allow_host)?]),
        Selector::Pod { query, container } => pod_targets(fs, query, container.as_deref(), allow_host),
    }
}

/// The target `--container query` names: the cgroup of the container's
/// init process, which holds every process of the container (runtimes put
/// `exec`s in the same cgroup).
pub fn target(fs: &CgroupFs, query: &str, only: Option<Runtime>, allow_host: AllowHost) -> Result<Target> {
    let c = find(query, only)?;
    let pid = c.pid.expect("find returns running containers");
    let mut target = fs.resolve_pid(Path::new("/proc"), pid, allow_host).map_err(|e| match e {
        Error::NoSuchPid(_) => Error::invalid(format!(
            "{} stopped while chaos was planning the attack (its process {pid} is gone); nothing was injected",
            c.label()
        )),
        other => other,
    })?;
    if c.host_network {
        tracing::info!(
            "{} shares the host's network: network faults act on the host's devices, for this \
             container's traffic only",
            c.label()
        );
    }
    target.workload = Some(c.label());
    Ok(target)
}

/// How a pod is named: `--pod NAMESPACE/NAME`, `--pod-uid UID` or
/// `--pod-selector KEY=VALUE,...` (the pod's labels, as the kubelet gives
/// them to the runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodQuery {
    Name { namespace: String, name: String },
    Uid(String),
    Selector(Vec<(String, String)>),
}

impl PodQuery {
    /// `NAMESPACE/NAME`.
    pub fn name(text: &str) -> std::result::Result<Self, String> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::Name { namespace: ns.to_owned(), name: name.to_owned() })
            }
            _ => Err(format!("`{text}` is not NAMESPACE/NAME (e.g. default/web-0)")),
        }
    }

    /// `KEY=VALUE,KEY=VALUE` (all must match).
    pub fn selector(text: &str) -> std::result::Result<Self, String> {
        label_pairs(text, "pod").map(Self::Selector)
    }

    fn matches(&self, pod: &cri::Pod) -> bool {
        match self {
            Self::Name { namespace, name } => &pod.namespace == namespace && &pod.name == name,
            Self::Uid(uid) => &pod.uid == uid,
            Self::Selector(pairs) => pairs.iter().all(|(k, v)| pod.labels.get(k) == Some(v)),
        }
    }
}

/// `KEY=VALUE,KEY=VALUE`: a label selector of `things` (all must match).
pub fn label_pairs(text: &str, things: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim().to_owned(), v.trim().to_owned())),
            _ => return Err(format!("`{part}` is not KEY=VALUE (e.g. app=web,tier=front)")),
        }
    }
    if pairs.is_empty() {
        return Err(format!("an empty selector would match every {things}; give KEY=VALUE,..."));
    }
    Ok(pairs)
}

impl std::fmt::Display for PodQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Self::Uid(uid) => write!(f, "the pod with uid {uid}"),
            Self::Selector(pairs) => {
                let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "pods labelled {}", text.join(","))
            }
        }
    }
}

/// The CRI socket: `CONTAINER_RUNTIME_ENDPOINT` (crictl's variable), else
/// containerd's, else CRI-O's, whichever exists.
pub fn cri_socket() -> PathBuf {
    if let Ok(v) = std::env::var("CONTAINER_RUNTIME_ENDPOINT")
        && let Some(p) = v.strip_prefix("unix://").map(str::to_owned).or(v.starts_with('/').then_some(v))
    {
        return PathBuf::from(p);
    }
    let containerd = Runtime::Containerd.socket();
    let crio = PathBuf::from(CRIO_SOCKET);
    if !containerd.exists() && crio.exists() { crio } else { containerd }
}

fn ask_cri<T>(
    socket: &Path,
    ask: impl AsyncFnOnce(containerd_client::tonic::transport::Channel) -> std::result::Result<T, String>,
) -> Result<T> {
    if !socket.exists() {
        return Err(Error::environment(format!(
            "no CRI socket at {} (a Kubernetes node's runtime serves one: containerd, or CRI-O at \
             /var/run/crio/crio.sock; CONTAINER_RUNTIME_ENDPOINT names another)",
            socket.display()
        )));
    }
    block_on(async {
        let channel = containerd_client::connect(socket).await.map_err(|e| e.to_string())?;
        ask(channel).await
    })
    .map_err(|e| Error::environment(format!("asking the CRI on {} failed: {e}", socket.display())))
}

/// Every pod the CRI knows (ready or not).
pub fn list_pods() -> Result<Vec<cri::Pod>> {
    ask_cri(&cri_socket(), async |ch| cri::pods(ch, &HashMap::new()).await)
}

/// The targets `query` names: each matching pod's cgroup, or with
/// `container`, that container's in each.
pub fn pod_targets(
    fs: &CgroupFs,
    query: &PodQuery,
    container: Option<&str>,
    allow_host: AllowHost,
) -> Result<Vec<Target>> {
    let socket = cri_socket();
    let all = ask_cri(&socket, async |ch| cri::pods(ch, &HashMap::new()).await)?;
    let ready: Vec<&cri::Pod> = all.iter().filter(|p| p.ready && query.matches(p)).collect();
    if ready.is_empty() {
        let mut msg = format!("not on this node, or not ready: {query}");
        if let Some(p) = all.iter().find(|p| query.matches(p)) {
            msg += &format!(" ({} is not ready: its sandbox is stopped)", p.label());
        } else if let PodQuery::Name { namespace, name } = query {
            let names: Vec<String> = all.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
            let wanted = format!("{namespace}/{name}");
            if let Some(near) =
                crate::experiment::diag::did_you_mean(&wanted, names.iter().map(String::as_str))
            {
                msg += &format!("; did you mean {near}?");
            } else if let Some(p) = all.iter().find(|p| &p.name == name) {
                msg += &format!("; there is {}/{} in namespace {}", p.namespace, p.name, p.namespace);
            }
        }
        msg += "; `chaos targets` lists the pods of this node";
        return Err(Error::invalid(msg));
    }
    let mut out = Vec::new();
    for pod in ready {
        let gone = || {
            Error::invalid(format!("{} stopped while chaos was planning; nothing was injected", pod.label()))
        };
        let pid = pod.pid.ok_or_else(gone)?;
        let target = match container {
            None => {
                let sandbox = fs.cgroup_of(Path::new("/proc"), pid).map_err(|_| gone())?;
                let dir = cri::pod_cgroup(pod, &sandbox)
                    .map_err(|why| Error::environment(format!("{}: {why}", pod.label())))?;
                let mut t = fs.resolve_path(&dir, allow_host)?;
                t.workload = Some(pod.label());
                t
            }
            Some(name) => {
                let sandbox = pod.id.clone();
                let listed = ask_cri(&socket, async move |ch| cri::containers(ch, &sandbox).await)?;
                let c = listed.iter().find(|c| c.name == name && c.pid.is_some()).ok_or_else(|| {
                    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
                    Error::invalid(format!(
                        "{} has no running container {name} (its containers: {})",
                        pod.label(),
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ))
                })?;
                let mut t = fs
                    .resolve_pid(Path::new("/proc"), c.pid.expect("checked"), allow_host)
                    .map_err(|_| gone())?;
                t.workload = Some(format!("container {name} of {}", pod.label()));
                t
            }
        };
        if pod.host_network {
            tracing::info!(
                "{} uses the host's network: network faults act on the host's devices, for its traffic only",
                pod.label()
            );
        }
        out.push(target);
    }
    Ok(out)
}

fn running(c: &Container) -> Result<Container> {
    match c.pid {
        Some(pid) if pid > 0 => Ok(c.clone()),
        _ => Err(Error::invalid(format!(
            "{} is not running (state: {}); start it, then attack it",
            c.label(),
            if c.state.is_empty() { "unknown" } else { &c.state }
        ))),
    }
}

/// Run one runtime request to its end, within [`ANSWER_WITHIN`]. The
/// clients are async (tonic, hyper); chaos is not, so each request gets a
/// small single-threaded runtime of its own.
fn block_on<T>(fut: impl Future<Output = std::result::Result<T, String>>) -> std::result::Result<T, String> {
    block_on_within(ANSWER_WITHIN, fut)
}

/// [`block_on`], within `limit`.
pub(crate) fn block_on_within<T>(
    limit: Duration,
    fut: impl Future<Output = std::result::Result<T, String>>,
) -> std::result::Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start an async runtime: {e}"))?;
    rt.block_on(async {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        }
    })
}

/// The init pid of a running container, from a runtime's integer.
fn pid_of(pid: i64) -> Option<i32> {
    i32::try_from(pid).ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(runtime: Runtime, id: &str, name: &str, ns: Option<&str>) -> Container {
        Container {
            runtime,
            id: id.into(),
            name: name.into(),
            namespace: ns.map(Into::into),
            image: "bb".into(),
            state: "running".into(),
            pid: Some(42),
            host_network: false,
        }
    }

    #[test]
    fn names_ids_and_prefixes_match() {
        let web = c(Runtime::Docker, "3f2a1b0c9d8e77", "web", None);
        assert_eq!(web.matches("web"), Match::Exact);
        assert_eq!(web.matches("3f2a1b0c9d8e77"), Match::Exact);
        assert_eq!(web.matches("3f2a"), Match::Prefix);
        assert_eq!(web.matches("we"), Match::No);
        let plain = c(Runtime::Containerd, "job1", "job1", Some("default"));
        assert_eq!(plain.matches("default/job1"), Match::Exact);
        assert_eq!(plain.matches("default/jo"), Match::Prefix);
        assert_eq!(plain.matches("other/job1"), Match::No);
    }

    #[test]
    fn labels_say_runtime_name_and_id() {
        assert_eq!(
            c(Runtime::Docker, "3f2a1b0c9d8e77", "web", None).label(),
            "docker container web (3f2a1b0c9d8e)"
        );
        assert_eq!(
            c(Runtime::Containerd, "job1", "job1", Some("default")).label(),
            "containerd container default/job1"
        );
        assert_eq!(
            c(Runtime::Containerd, "0123456789abcdef", "ns/pod/app", Some("k8s.io")).label(),
            "containerd container k8s.io/ns/pod/app (0123456789ab)"
        );
    }

    #[test]
    fn choosing_names_the_problem() {
        let web = c(Runtime::Podman, "3f2a1b0c9d8e77", "web", None);
        let web2 = c(Runtime::Containerd, "web", "web", Some("default"));
        let db = c(Runtime::Podman, "3f99aa", "db", None);
        let all = [web.clone(), web2.clone(), db.clone()];
        let pick = |q: &str, only: Option<Runtime>| {
            let listed: Vec<Container> =
                all.iter().filter(|c| only.is_none_or(|o| o == c.runtime)).cloned().collect();
            choose(q, only, &listed, &[], |_| true)
        };
        assert!(pick("web", None).unwrap_err().to_string().contains("ambiguous"));
        assert_eq!(pick("web", Some(Runtime::Containerd)).unwrap(), web2);
        assert_eq!(pick("default/web", None).unwrap(), web2);
        // An exact name wins over an id prefix; a prefix two ids share is ambiguous.
        assert_eq!(pick("db", None).unwrap(), db);
        assert!(pick("3f", None).unwrap_err().to_string().contains("ambiguous"));
        assert_eq!(pick("3f2", None).unwrap(), web);
        let err = pick("wbe", Some(Runtime::Podman)).unwrap_err().to_string();
        assert!(err.contains("no container named wbe in podman; did you mean web?"), "{err}");
        // A runtime whose socket is there but which did not answer might
        // know the name too: refused. One with no socket is no doubt.
        let docker_down = [(Runtime::Docker, "no answer within 20 s".to_owned())];
        let err = choose("db", None, &all, &docker_down, |_| true).unwrap_err();
        assert!(err.to_string().contains("--runtime podman"), "{err}");
        assert_eq!(choose("db", None, &all, &docker_down, |r| r != Runtime::Docker).unwrap(), db);
        // Nobody to ask.
        let none: Vec<(Runtime, String)> =
            Runtime::ALL.iter().map(|r| (*r, "no socket".to_owned())).collect();
        let err = choose("db", None, &[], &none, |_| false).unwrap_err();
        assert!(err.to_string().contains("no container runtime could be asked"), "{err}");
        assert_eq!(err.exit_code(), crate::error::ExitCode::Invalid);
    }

    #[test]
    fn pod_queries_parse_and_match() {
        assert_eq!(
            PodQuery::name("shop/web-0").unwrap(),
            PodQuery::Name { namespace: "shop".into(), name: "web-0".into() }
        );
        for bad in ["web-0", "/web-0", "shop/", "a/b/c"] {
            assert!(PodQuery::name(bad).unwrap_err().contains("NAMESPACE/NAME"), "{bad}");
        }
        let sel = PodQuery::selector(" app=web , tier=front").unwrap();
        assert_eq!(
            sel,
            PodQuery::Selector(vec![("app".into(), "web".into()), ("tier".into(), "front".into())])
        );
        assert!(PodQuery::selector("app").unwrap_err().contains("KEY=VALUE"));
        assert!(PodQuery::selector(" , ").unwrap_err().contains("every pod"));
        let pod = cri::Pod {
            id: "s".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            labels: HashMap::from([("app".into(), "web".into()), ("tier".into(), "front".into())]),
            pid: Some(1),
            ready: true,
            host_network: false,
        };
        assert!(sel.matches(&pod));
        assert!(!PodQuery::selector("app=web,tier=back").unwrap().matches(&pod));
        assert!(PodQuery::Uid("u1".into()).matches(&pod));
        assert!(!PodQuery::name("other/web-0").unwrap().matches(&pod));
    }

    #[test]
    fn a_stopped_container_is_refused_with_its_state() {
        let mut web = c(Runtime::Podman, "3f2a1b0c9d8e77", "web", None);
        web.pid = None;
        web.state = "exited".into();
        let err = running(&web).unwrap_err();
        assert!(err.to_string().contains("not running (state: exited)"), "{err}");
    }
}

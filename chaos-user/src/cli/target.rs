//! Target flags shared by every attack.

use std::path::PathBuf;

use clap::Args;

use crate::{
    error::{Error, Result},
    experiment::Selector,
    runtime::{self, Runtime},
    targets::{AllowHost, CgroupFs, Target},
};

#[derive(Debug, Args)]
#[group(skip)]
pub struct TargetArgs {
    #[command(flatten)]
    pub select: Select,

    /// With --container: ask only this runtime (docker, podman,
    /// containerd). Without it every runtime whose socket exists is asked,
    /// and a name two of them know is refused as ambiguous.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<Runtime>,

    /// Allow a target that stands for the host: the root cgroup, one that
    /// holds PID 1 or chaos itself, a top-level systemd slice
    /// (/system.slice, /user.slice, /init.scope, ...) or the kubelet's
    /// kubepods* and its QoS classes.
    #[arg(long)]
    pub allow_host: bool,
}

/// Exactly one of --cgroup, --pid, --container.
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct Select {
    /// The cgroup v2 directory to attack, with everything below it: a path
    /// under the cgroup2 mount (/sys/fs/cgroup/system.slice/nginx.service)
    /// or relative to it (/system.slice/nginx.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Attack the cgroup that process PID is in (and everything below it).
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,

    /// Attack a running container: its name, its id or a unique prefix of
    /// the id (containerd: `namespace/id`), as docker, podman (as root) or
    /// containerd knows it — `chaos targets` lists them. The attack covers
    /// every process of the container, `exec`s included, and acts in the
    /// container's network namespace.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
}

impl TargetArgs {
    /// What clap's derive cannot say across the flattened group: --runtime
    /// only means something with --container.
    pub fn check(&self) -> Result<()> {
        if self.runtime.is_some() && self.select.container.is_none() {
            return Err(Error::invalid(
                "--runtime picks the runtime of --container; with --cgroup or --pid there is none to pick: \
                 drop --runtime",
            ));
        }
        Ok(())
    }

    /// The target as an experiment file would name it.
    pub fn selector(&self) -> Selector {
        match (&self.select.cgroup, self.select.pid, &self.select.container) {
            (Some(path), _, _) => Selector::Cgroup(path.clone()),
            (None, Some(pid), _) => Selector::Pid(pid),
            (None, None, Some(name)) => Selector::Container { name: name.clone(), runtime: self.runtime },
            (None, None, None) => unreachable!("clap requires one of --cgroup, --pid, --container"),
        }
    }

    pub fn resolve(&self) -> Result<Target> {
        let fs = CgroupFs::discover()?;
        let allow = AllowHost(self.allow_host);
        match (&self.select.cgroup, self.select.pid, &self.select.container) {
            (Some(path), _, _) => fs.resolve_path(path, allow),
            (None, Some(pid), _) => fs.resolve_pid(std::path::Path::new("/proc"), pid, allow),
            (None, None, Some(name)) => runtime::target(&fs, name, self.runtime, allow),
            (None, None, None) => unreachable!("clap requires one of --cgroup, --pid, --container"),
        }
    }
}

//! Target flags shared by every attack.

use std::path::PathBuf;

use clap::Args;

use crate::{
    error::Result,
    targets::{AllowHost, CgroupFs, Target},
};

#[derive(Debug, Args)]
#[group(skip)]
pub struct TargetArgs {
    #[command(flatten)]
    pub select: Select,

    /// Allow a target that stands for the host: the root cgroup, one that
    /// holds PID 1 or chaos itself, a top-level systemd slice
    /// (/system.slice, /user.slice, /init.scope, ...) or the kubelet's
    /// kubepods* and its QoS classes.
    #[arg(long)]
    pub allow_host: bool,
}

/// Exactly one of --cgroup, --pid.
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
}

impl TargetArgs {
    pub fn resolve(&self) -> Result<Target> {
        let fs = CgroupFs::discover()?;
        let allow = AllowHost(self.allow_host);
        match (&self.select.cgroup, self.select.pid) {
            (Some(path), _) => fs.resolve_path(path, allow),
            (None, Some(pid)) => fs.resolve_pid(std::path::Path::new("/proc"), pid, allow),
            (None, None) => unreachable!("clap requires one of --cgroup, --pid"),
        }
    }
}

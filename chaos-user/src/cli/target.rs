//! Target flags shared by every attack.

use std::path::PathBuf;

use clap::Args;

use crate::{
    error::{Error, Result},
    experiment::Selector,
    runtime::{self, PodQuery, Runtime},
    targets::{AllowHost, CgroupFs, Target},
};

#[derive(Debug, Args)]
#[group(skip)]
pub struct TargetArgs {
    #[command(flatten)]
    pub select: Select,

    /// With --container: ask only this runtime (docker, podman,
    /// containerd, cri-o). Without it every runtime whose socket exists is asked,
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

/// One of --cgroup, --pid, --container, --pod, --pod-uid, --pod-selector
/// (--container may narrow a pod to one of its containers).
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = true)]
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
    /// the id (containerd: `namespace/id`; a Kubernetes container:
    /// `pod-namespace/pod/container`), as docker, podman (as root),
    /// containerd or CRI-O knows it — `chaos targets` lists them. The attack covers
    /// every process of the container, `exec`s included, and acts in the
    /// container's network namespace. With a pod flag: that container of
    /// the pod (by its name in the pod spec).
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,

    /// Attack a pod of this Kubernetes node, through the CRI (containerd's
    /// or CRI-O's socket): the pod's cgroup, so every container of the pod
    /// is covered, including one restarted during the attack.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = PodQuery::name)]
    pub pod: Option<PodQuery>,

    /// Attack the pod with this uid (metadata.uid).
    #[arg(long, value_name = "UID")]
    pub pod_uid: Option<String>,

    /// Attack every ready pod whose labels match all of these (one attack
    /// per pod, started and ended together).
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = PodQuery::selector)]
    pub pod_selector: Option<PodQuery>,
}

impl TargetArgs {
    /// What clap's derive cannot say across the flattened group: which
    /// flags go together.
    pub fn check(&self) -> Result<()> {
        let s = &self.select;
        let pods =
            [s.pod.is_some(), s.pod_uid.is_some(), s.pod_selector.is_some()].iter().filter(|b| **b).count();
        let given = usize::from(s.cgroup.is_some()) + usize::from(s.pid.is_some()) + pods;
        if given > 1 || (given == 1 && s.container.is_some() && pods == 0) {
            return Err(Error::invalid(
                "give one target: --cgroup, --pid, --container, --pod, --pod-uid or --pod-selector \
                 (--container may go with a pod flag: that container of the pod)",
            ));
        }
        if self.runtime.is_some() && (s.container.is_none() || pods > 0) {
            return Err(Error::invalid(
                "--runtime picks the runtime of --container; pods are found through the CRI and \
                 --cgroup and --pid need none: drop --runtime",
            ));
        }
        Ok(())
    }

    /// The target as an experiment file would name it.
    pub fn selector(&self) -> Selector {
        let s = &self.select;
        let pod =
            s.pod.clone().or_else(|| s.pod_uid.clone().map(PodQuery::Uid)).or_else(|| s.pod_selector.clone());
        match (&s.cgroup, s.pid, pod) {
            (Some(path), _, _) => Selector::Cgroup(path.clone()),
            (None, Some(pid), _) => Selector::Pid(pid),
            (None, None, Some(query)) => Selector::Pod { query, container: s.container.clone() },
            (None, None, None) => Selector::Container {
                name: s.container.clone().expect("clap requires a target flag"),
                runtime: self.runtime,
            },
        }
    }

    pub fn resolve(&self) -> Result<Vec<Target>> {
        self.check()?;
        runtime::resolve(&self.selector(), &CgroupFs::discover()?, AllowHost(self.allow_host))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        target: TargetArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<TargetArgs, String> {
        let flags = Flags::try_parse_from(std::iter::once("chaos").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        flags.target.check().map_err(|e| e.to_string())?;
        Ok(flags.target)
    }

    #[test]
    fn one_target_or_a_container_of_a_pod() {
        assert_eq!(
            parse(&["--container", "web"]).unwrap().selector(),
            Selector::Container { name: "web".into(), runtime: None }
        );
        assert_eq!(
            parse(&["--pod", "shop/web-0", "--container", "app"]).unwrap().selector(),
            Selector::Pod {
                query: PodQuery::Name { namespace: "shop".into(), name: "web-0".into() },
                container: Some("app".into())
            }
        );
        assert_eq!(
            parse(&["--pod-uid", "u1"]).unwrap().selector(),
            Selector::Pod { query: PodQuery::Uid("u1".into()), container: None }
        );
        for bad in [
            &["--cgroup", "/a", "--pid", "1"][..],
            &["--pid", "1", "--container", "web"],
            &["--pod", "a/b", "--pod-uid", "u"],
            &["--cgroup", "/a", "--runtime", "docker"],
            &["--pod", "a/b", "--container", "c", "--runtime", "docker"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&[]).unwrap_err().contains("required"));
        assert!(parse(&["--pod", "web-0"]).unwrap_err().contains("NAMESPACE/NAME"));
        assert!(parse(&["--pod-selector", "app"]).unwrap_err().contains("KEY=VALUE"));
    }
}

//! The demo's sandbox: the service — a real container where docker or
//! podman runs one ([`super::container`]), else a process in a cgroup and
//! a network namespace of the demo's own — and its client, made and
//! removed by the demo itself.
//!
//! ```text
//!   netns chaos-demo-<pid>-svc                 netns chaos-demo-<pid>-client
//!     container chaos-demo-<pid>: busybox httpd  (the probes run here)
//!     or cgroup chaos-demo-<pid>: demo-service
//!     veth 10.213.0.1/24  <------------------->  veth 10.213.0.2/24
//! ```
//!
//! The container's namespace is the runtime's, named here with `ip netns
//! attach`. Nothing on the host's own network is touched. Everything made
//! is removed on drop; the service dies with the demo (PR_SET_PDEATHSIG,
//! or the container's removal); and what a demo killed with SIGKILL left
//! behind is removed by the next one ([`remove_stale`]).

use std::{
    ffi::CString,
    fs::File,
    net::SocketAddr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    demo::container::DemoContainer,
    error::{Error, Result},
    probes::{Check, HttpCheck, Probe, http::HttpUrl},
    targets::CgroupFs,
};

/// Prefix of every namespace and cgroup a demo makes.
pub const PREFIX: &str = "chaos-demo-";
const SERVICE_IP: &str = "10.213.0.1";
const CLIENT_IP: &str = "10.213.0.2";
pub const PORT: u16 = 8080;

pub struct Sandbox {
    pub service_ns: String,
    pub client_ns: String,
    /// The cgroup directory, and its path as users write it.
    pub cgroup: PathBuf,
    pub cgroup_rel: String,
    pub service_addr: SocketAddr,
    /// The service's container, if it runs in one.
    pub container: Option<DemoContainer>,
    made_ns: Vec<String>,
    made_cgroup: bool,
    service: Option<Child>,
}

/// `ip args...`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::environment(format!("cannot run `ip` (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(Error::environment(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Sandbox {
    /// Build the namespaces, the veth pair and the cgroup — or, for a
    /// `container`, name its namespace and find its cgroup. On failure,
    /// what was made is removed (by drop), the container too.
    pub fn create(container: Option<DemoContainer>) -> Result<Self> {
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        let fs = CgroupFs::discover()?;
        let container_pid = container.as_ref().map(|c| c.pid);
        let mut sb = Self {
            service_ns: format!("{tag}-svc"),
            client_ns: format!("{tag}-client"),
            cgroup: fs.mount.join(&tag),
            cgroup_rel: format!("/{tag}"),
            service_addr: SocketAddr::from(([10, 213, 0, 1], PORT)),
            container,
            made_ns: Vec::new(),
            made_cgroup: false,
            service: None,
        };
        for ns in [sb.service_ns.clone(), sb.client_ns.clone()] {
            match container_pid {
                Some(cpid) if ns == sb.service_ns => ip(&["netns", "attach", &ns, &cpid.to_string()])?,
                _ => ip(&["netns", "add", &ns])?,
            }
            sb.made_ns.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // Device names are at most 15 characters.
        let (s, c) = (format!("cdemo{pid}s"), format!("cdemo{pid}c"));
        ip(&[
            "link",
            "add",
            &s,
            "netns",
            &sb.service_ns,
            "type",
            "veth",
            "peer",
            "name",
            &c,
            "netns",
            &sb.client_ns,
        ])?;
        ip(&["-n", &sb.service_ns, "addr", "add", &format!("{SERVICE_IP}/24"), "dev", &s])?;
        ip(&["-n", &sb.client_ns, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", &c])?;
        ip(&["-n", &sb.service_ns, "link", "set", &s, "up"])?;
        ip(&["-n", &sb.client_ns, "link", "set", &c, "up"])?;
        if let Some(cpid) = container_pid {
            sb.cgroup = fs.cgroup_of(Path::new("/proc"), cpid)?;
            sb.cgroup_rel = format!("/{}", sb.cgroup.strip_prefix(&fs.mount).unwrap_or(&sb.cgroup).display());
            return Ok(sb);
        }
        std::fs::create_dir(&sb.cgroup)
            .map_err(|e| Error::environment(format!("creating cgroup {}: {e}", sb.cgroup.display())))?;
        sb.made_cgroup = true;
        Ok(sb)
    }

    /// Start the service (this binary, `demo-service`) inside the service
    /// namespace and the cgroup — unless it runs in its container — and
    /// wait until the client side reaches it.
    pub fn start_service(&mut self) -> Result<()> {
        if self.container.is_none() {
            self.spawn_service()?;
        }
        self.wait_until_ready()
    }

    fn spawn_service(&mut self) -> Result<()> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::environment(format!("finding the chaos binary: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.args(["demo-service", "--listen", &self.service_addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let ns = File::open(format!("/run/netns/{}", self.service_ns))?;
        let procs = CString::new(self.cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid("cgroup path with a NUL byte"))?;
        let ns_fd = ns.as_raw_fd();
        // SAFETY: only async-signal-safe calls (prctl, setns, open, write,
        // close) on values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the demo, however it dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::setns(ns_fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        self.service =
            Some(cmd.spawn().map_err(|e| Error::environment(format!("starting the demo service: {e}")))?);
        Ok(())
    }

    fn wait_until_ready(&self) -> Result<()> {
        let probe = Probe {
            name: "ready".into(),
            check: Check::Http(HttpCheck::get(HttpUrl::parse(&self.health_url()).expect("valid"))),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            failures: 1,
            netns: Some(self.client_ns.clone()),
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let s = probe.run_once();
            if s.ok {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(Error::environment(format!("the demo service did not come up: {}", s.detail)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn health_url(&self) -> String {
        format!("http://{}/health", self.service_addr)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Removing the container ends its namespace, and the veth in it.
        drop(self.container.take());
        if self.made_cgroup {
            remove_cgroup(&self.cgroup);
        }
        for ns in self.made_ns.drain(..) {
            // Deleting a namespace destroys its devices, the veth with them
            // (for the container's, attached, it only removes the name).
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("chaos demo: removing network namespace {ns}: {e}");
            }
        }
    }
}

/// Kill what runs in a cgroup and remove it.
fn remove_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err()
        && let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
    {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    while let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        if Instant::now() > until {
            eprintln!("chaos demo: removing cgroup {}: {e}", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid in a `chaos-demo-<pid>[-...]` name.
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the sandboxes of demos that are no longer running (killed
/// before they could clean up). Returns what was removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = super::container::remove_stale(alive);
    for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if owner(&name).is_some_and(|p| !alive(p)) && ip(&["netns", "del", &name]).is_ok() {
            removed.push(format!("network namespace {name}"));
        }
    }
    if let Ok(fs) = CgroupFs::discover() {
        for e in std::fs::read_dir(&fs.mount).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner(&name).is_some_and(|p| !alive(p)) {
                remove_cgroup(&e.path());
                removed.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_names() {
        assert_eq!(owner("chaos-demo-123-svc"), Some(123));
        assert_eq!(owner("chaos-demo-123"), Some(123));
        assert_eq!(owner("chaos-test-123-ctr"), None);
        assert_eq!(owner("chaos-demo-x"), None);
    }
}

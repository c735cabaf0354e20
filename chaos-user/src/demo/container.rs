//! The demo's service as a real container, where docker or podman runs
//! one: the attack then names it as users name theirs (`container:` in the
//! experiment, found through the runtime's API like any other).
//!
//! No registry is needed: the image is imported from a root filesystem
//! the demo builds in memory — a statically linked busybox and a health
//! file, served by `busybox httpd` — the Engine API's `POST
//! /images/create?fromSrc=-` (what `docker import` does; podman's
//! compatible API serves it too). The container gets no network from the
//! runtime (`network_mode: none`): the demo wires a veth into its
//! namespace itself, exactly as it does for its own sandbox, so the demo
//! depends on no bridge, firewall or NAT of the runtime's and its traffic
//! stays in namespaces it made.
//!
//! Everything made carries the demo's pid (container `chaos-demo-<pid>`,
//! image `localhost/chaos-demo:<pid>`, label [`OWNER`]), is removed at the
//! end, and what a killed demo left is removed by the next one
//! ([`remove_stale`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::{
    ClientVersion, Docker,
    models::{ContainerCreateBody, HostConfig},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
        RemoveContainerOptions, RemoveImageOptions,
    },
};
use futures_util::StreamExt as _;

use crate::runtime::{Runtime, block_on_within};

/// The label that says which demo made a container.
pub const OWNER: &str = "io.chaos.demo.owner";
const REPOSITORY: &str = "localhost/chaos-demo";
/// Where busybox-static (Debian, Ubuntu) puts its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Generous: importing and starting under an emulated CPU takes seconds.
const START_WITHIN: Duration = Duration::from_secs(120);
/// The Engine API version chaos speaks (see runtime/docker.rs).
const API_VERSION: &ClientVersion = &ClientVersion { major_version: 1, minor_version: 41 };

/// The runtimes that can run the demo's service: those of the Docker
/// Engine API. (containerd's own API leaves networking, image unpacking
/// and the OCI spec to its client: too much machinery for a demo.)
pub const RUNTIMES: [Runtime; 2] = [Runtime::Docker, Runtime::Podman];

/// The service's container, running.
pub struct DemoContainer {
    pub runtime: Runtime,
    socket: PathBuf,
    /// `chaos-demo-<pid>`: how the experiment names it.
    pub name: String,
    image: String,
    /// Its init process (busybox httpd).
    pub pid: i32,
}

impl DemoContainer {
    /// Start the service in `only`, or in the first runtime that runs it;
    /// `Err` says why none did, runtime by runtime.
    pub fn start(only: Option<Runtime>, port: u16) -> Result<Self, String> {
        let busybox = static_busybox()?;
        let mut why = Vec::new();
        for runtime in RUNTIMES.into_iter().filter(|r| only.is_none_or(|o| o == *r)) {
            let socket = runtime.socket();
            if !socket.exists() {
                why.push(format!("{runtime}: no socket at {}", socket.display()));
                continue;
            }
            match block_on_within(START_WITHIN, start_in(runtime, &socket, &busybox, port)) {
                Ok(c) => return Ok(c),
                Err(e) => why.push(format!("{runtime}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    /// How the demo prints it, e.g. `podman container chaos-demo-4242`.
    pub fn label(&self) -> String {
        format!("{} container {}", self.runtime, self.name)
    }
}

impl Drop for DemoContainer {
    fn drop(&mut self) {
        let (socket, name, image) = (self.socket.clone(), self.name.clone(), self.image.clone());
        if let Err(e) = block_on_within(START_WITHIN, async move {
            let docker = connect(&socket)?;
            remove(&docker, &name, &image).await
        }) {
            eprintln!("chaos demo: removing {} container {}: {e}", self.runtime, self.name);
        }
    }
}

/// busybox, if it is statically linked: the image has nothing else, no C
/// library to load a dynamic one.
fn static_busybox() -> Result<Vec<u8>, String> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = std::fs::read(BUSYBOX)
        .map_err(|e| format!("{BUSYBOX}: {e} (install busybox-static to run the service in a container)"))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).map_err(|e| format!("{BUSYBOX}: {e}"))?;
    // A dynamically linked executable names its loader (PT_INTERP).
    let endian = elf.endian();
    if elf.elf_program_headers().iter().any(|p| p.p_type(endian) == object::elf::PT_INTERP) {
        return Err(format!(
            "{BUSYBOX} is dynamically linked (install busybox-static to run the service in a container)"
        ));
    }
    Ok(data)
}

/// The image's root filesystem: /bin/busybox and /www/health.
fn rootfs(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data)
    };
    add("bin/busybox", 0o755, busybox)?;
    add("www/health", 0o644, b"ok\n")?;
    tar.into_inner()
}

fn connect(socket: &Path) -> Result<Docker, String> {
    let path = socket.to_str().ok_or("the socket path is not UTF-8")?;
    Docker::connect_with_unix(path, START_WITHIN.as_secs(), API_VERSION).map_err(|e| e.to_string())
}

async fn start_in(
    runtime: Runtime,
    socket: &Path,
    busybox: &[u8],
    port: u16,
) -> Result<DemoContainer, String> {
    let docker = connect(socket)?;
    let me = std::process::id();
    let name = format!("{}{me}", super::sandbox::PREFIX);
    let image = format!("{REPOSITORY}:{me}");
    let tar = rootfs(busybox).map_err(|e| format!("building the image: {e}"))?;
    // The tag inside `repo` ("The repo may include a tag", says the
    // Engine API): podman's compatible API takes it there, not in `tag`.
    let options =
        CreateImageOptions { from_src: Some("-".into()), repo: Some(image.clone()), ..Default::default() };
    let mut progress = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| format!("importing image {image}: {e}"))?;
    }
    let made = async {
        let port_arg = port.to_string();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some([BUSYBOX, "httpd", "-f", "-p", &port_arg, "-h", "/www"].map(str::to_owned).to_vec()),
            labels: Some(HashMap::from([(OWNER.to_owned(), me.to_string())])),
            host_config: Some(HostConfig { network_mode: Some("none".into()), ..Default::default() }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        docker.create_container(Some(options), body).await.map_err(|e| format!("creating {name}: {e}"))?;
        docker.start_container(&name, None).await.map_err(|e| format!("starting {name}: {e}"))?;
        let info =
            docker.inspect_container(&name, None).await.map_err(|e| format!("inspecting {name}: {e}"))?;
        info.state
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{name} is not running after its start"))
    };
    match made.await {
        Ok(pid) => Ok(DemoContainer { runtime, socket: socket.to_owned(), name, image, pid }),
        Err(e) => {
            // Whatever was made of it goes; the reason is what matters.
            let _ = remove(&docker, &name, &image).await;
            Err(e)
        }
    }
}

async fn remove(docker: &Docker, name: &str, image: &str) -> Result<(), String> {
    remove_container(docker, name).await?;
    remove_image(docker, image).await
}

/// Remove a container, running or not; one already gone is no error.
async fn remove_container(docker: &Docker, name: &str) -> Result<(), String> {
    let options = RemoveContainerOptions { force: true, ..Default::default() };
    match docker.remove_container(name, Some(options)).await {
        Err(e) if !not_found(&e) => Err(format!("container {name}: {e}")),
        _ => Ok(()),
    }
}

/// Remove an image; one already gone is no error.
async fn remove_image(docker: &Docker, image: &str) -> Result<(), String> {
    let options = RemoveImageOptions { force: true, ..Default::default() };
    match docker.remove_image(image, Some(options), None).await {
        Err(e) if !not_found(&e) => Err(format!("image {image}: {e}")),
        _ => Ok(()),
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Remove the containers and images of demos that are no longer running.
/// Returns what was removed.
pub fn remove_stale(alive: impl Fn(i32) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    for runtime in RUNTIMES {
        let socket = runtime.socket();
        if !socket.exists() {
            continue;
        }
        let found = block_on_within(Duration::from_secs(20), async {
            let docker = connect(&socket)?;
            let filters = HashMap::from([("label".to_owned(), vec![OWNER.to_owned()])]);
            let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            let containers = docker.list_containers(Some(options)).await.map_err(|e| e.to_string())?;
            let filters = HashMap::from([("reference".to_owned(), vec![REPOSITORY.to_owned()])]);
            let options = ListImagesOptions { filters: Some(filters), ..Default::default() };
            let images = docker.list_images(Some(options)).await.map_err(|e| e.to_string())?;
            let mut stale = Vec::new();
            for c in containers {
                // Ours only if name, label and image all say so: a label
                // alone is anyone's to set.
                let owner: Option<i32> =
                    c.labels.as_ref().and_then(|l| l.get(OWNER)).and_then(|p| p.parse().ok());
                let ours = owner.is_some_and(|o| {
                    let name = format!("/{}{o}", super::sandbox::PREFIX);
                    c.names.iter().flatten().any(|n| *n == name)
                        && c.image.as_deref() == Some(format!("{REPOSITORY}:{o}").as_str())
                });
                if let (Some(id), Some(owner), true) = (c.id, owner, ours)
                    && !alive(owner)
                {
                    stale.push((format!("{runtime} container {}", &id[..id.len().min(12)]), id, None));
                }
            }
            for i in images {
                for tag in i.repo_tags {
                    let owner = tag.strip_prefix(REPOSITORY).and_then(|t| t.strip_prefix(':'));
                    if owner.and_then(|p| p.parse().ok()).is_some_and(|p| !alive(p)) {
                        stale.push((format!("{runtime} image {tag}"), String::new(), Some(tag)));
                    }
                }
            }
            for (what, container, image) in &stale {
                let r = match image {
                    None => remove_container(&docker, container).await,
                    Some(tag) => remove_image(&docker, tag).await,
                };
                if let Err(e) = r {
                    eprintln!("chaos demo: removing {what}, left by a demo that was killed: {e}");
                }
            }
            Ok(stale.into_iter().map(|(what, _, _)| what).collect::<Vec<_>>())
        });
        // A runtime that does not answer has nothing of ours to remove
        // that we could remove; the start will say what is wrong with it.
        removed.extend(found.unwrap_or_default());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_holds_busybox_and_the_health_file() {
        let tar = rootfs(b"\x7fELF...").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.size())
            })
            .collect();
        assert_eq!(entries, [("bin/busybox".to_owned(), 0o755, 7), ("www/health".to_owned(), 0o644, 3)]);
    }
}

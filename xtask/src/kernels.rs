//! The kernel matrix: this machine's kernel, and Debian's kernels that
//! scripts/setup.sh extracts into a cache for virtme-ng to boot.
//!
//! Cache layout (shared with scripts/setup.sh):
//!
//! ```text
//! $CHAOS_VM_CACHE (default /var/lib/chaos-dev; not /var/cache, which
//! virtme-ng hides behind an empty tmpfs in the guest)
//!   virtme-ng/bin/vng                        virtme-ng in its own venv
//!   kernels/<label>/boot/vmlinuz-<release>   an extracted linux-image .deb
//!   kernels/<label>/lib/modules/<release>/   its modules, depmod run
//!   kernels/<label>/PACKAGE                  the package it came from
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A kernel the integration tests run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Kernel {
    /// The kernel this machine runs.
    Host,
    /// Debian 11's 5.10 kernel (bullseye), in a VM: the oldest in the
    /// matrix (no TCX, no bpf_loop).
    #[value(name = "debian-5.10")]
    Debian5_10,
    /// Debian 12's 6.1 kernel, in a VM: no TCX (netlink tc only).
    #[value(name = "debian-6.1")]
    Debian6_1,
    /// Debian's 6.12 kernel, in a VM.
    #[value(name = "debian-6.12")]
    Debian6_12,
    /// Debian unstable's 7.2 kernel (sid), in a VM: the newest.
    #[value(name = "debian-7.2")]
    Debian7_2,
}

impl Kernel {
    /// The whole matrix, in the order `./x test` runs it. The VMs start in
    /// this order, `--vm-jobs` at a time: the two whole suites (6.1, 6.12)
    /// first, the reduced tiers (see matrix::Tier) after, so that on two
    /// cores each short tier follows a long suite instead of preceding it.
    pub const ALL: [Kernel; 5] =
        [Kernel::Host, Kernel::Debian6_1, Kernel::Debian6_12, Kernel::Debian5_10, Kernel::Debian7_2];

    /// The label results are reported under, and that `CHAOS_KERNEL` carries
    /// (tests/src/tests/doctor.rs keys its expectations by it).
    pub fn label(self) -> String {
        match self {
            Kernel::Host => host_label(),
            Kernel::Debian5_10 => "debian-5.10".into(),
            Kernel::Debian6_1 => "debian-6.1".into(),
            Kernel::Debian6_12 => "debian-6.12".into(),
            Kernel::Debian7_2 => "debian-7.2".into(),
        }
    }
}

/// `host-<major>.<minor>` of the running kernel.
fn host_label() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mm: Vec<&str> = release.trim().split('.').take(2).collect();
    format!("host-{}", mm.join("."))
}

/// Where setup.sh keeps virtme-ng and the kernels.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CHAOS_VM_CACHE").map_or_else(|| PathBuf::from("/var/lib/chaos-dev"), PathBuf::from)
}

/// virtme-ng's bin directory (vng calls `virtme-run` from its PATH).
pub fn virtme_bin_dir() -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("virtme-ng/bin");
    if !dir.join("vng").is_file() {
        bail!("virtme-ng is not installed at {} (run `sudo ./x setup`)", dir.display());
    }
    Ok(dir)
}

/// A kernel image to boot, with its modules beside it.
#[derive(Debug, PartialEq, Eq)]
pub struct Image {
    pub vmlinuz: PathBuf,
    /// `uname -r` inside the VM, e.g. `6.1.0-56-amd64`.
    pub release: String,
}

/// The image setup.sh extracted for a VM kernel.
pub fn image(kernel: Kernel) -> anyhow::Result<Image> {
    image_in(&cache_dir().join("kernels").join(kernel.label()))
}

fn image_in(dir: &Path) -> anyhow::Result<Image> {
    let boot = dir.join("boot");
    let found = std::fs::read_dir(&boot)
        .with_context(|| format!("no kernel at {} (run `sudo ./x setup`)", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(|r| (r.to_owned(), e.path()))
        })
        .max();
    let Some((release, vmlinuz)) = found else {
        bail!("no vmlinuz-* in {} (run `sudo ./x setup`)", boot.display());
    };
    let modules = dir.join("lib/modules").join(&release);
    if !modules.join("modules.dep").is_file() {
        bail!(
            "{} has no modules.dep: the extraction was incomplete (remove {} and run `sudo ./x setup`)",
            modules.display(),
            dir.display()
        );
    }
    Ok(Image { vmlinuz, release })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_extracted_image_and_refuses_a_partial_one() {
        let dir = std::env::temp_dir().join(format!("chaos-xtask-kernels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(image_in(&dir).is_err());
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::write(dir.join("boot/vmlinuz-6.1.0-56-amd64"), "").unwrap();
        std::fs::write(dir.join("boot/config-6.1.0-56-amd64"), "").unwrap();
        let err = image_in(&dir).unwrap_err().to_string();
        assert!(err.contains("modules.dep"), "{err}");
        std::fs::create_dir_all(dir.join("lib/modules/6.1.0-56-amd64")).unwrap();
        std::fs::write(dir.join("lib/modules/6.1.0-56-amd64/modules.dep"), "").unwrap();
        let img = image_in(&dir).unwrap();
        assert_eq!(img.release, "6.1.0-56-amd64");
        assert_eq!(img.vmlinuz, dir.join("boot/vmlinuz-6.1.0-56-amd64"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_match_the_doctor_expectations() {
        assert_eq!(Kernel::Debian6_1.label(), "debian-6.1");
        assert_eq!(Kernel::Debian6_12.label(), "debian-6.12");
        assert_eq!(Kernel::Debian5_10.label(), "debian-5.10");
        assert_eq!(Kernel::Debian7_2.label(), "debian-7.2");
        assert!(Kernel::Host.label().starts_with("host-"));
    }
}

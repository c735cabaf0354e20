//! Which disk a user means: a device node, a `MAJ:MIN`, or a file or
//! directory on the disk, resolved to the whole disk that cgroup v2's
//! `io.max` takes (block/blk-cgroup.c, `blkg_conf_open_bdev()`, refuses
//! partitions) through sysfs and `/proc/self/mountinfo`.
//!
//! Read-only: nothing here opens a device.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use crate::faults::block::majmin;

/// A whole disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// `MAJ:MIN`, the key of its line in `io.max` and `io.stat`.
    pub key: String,
    /// Its kernel name (`sda`, `nvme0n1`, `loop0`).
    pub name: String,
}

impl std::fmt::Display for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.key)
    }
}

/// Where the kernel's views are: `/sys` and `/proc/self/mountinfo` on a
/// machine, a directory in the unit tests.
pub struct Views {
    pub sys: PathBuf,
    pub mountinfo: PathBuf,
}

impl Default for Views {
    fn default() -> Self {
        Self { sys: "/sys".into(), mountinfo: "/proc/self/mountinfo".into() }
    }
}

/// The whole disk `arg` (a `--device` value) names, or why it names none.
pub fn resolve(arg: &str, views: &Views) -> Result<Disk, String> {
    let (dev, from_path) = match majmin(arg) {
        Some(dev) => (dev, false),
        None => {
            let meta = std::fs::metadata(arg).map_err(|e| format!("--device {arg}: {e}"))?;
            if meta.file_type().is_block_device() {
                (split(meta.rdev()), false)
            } else {
                (split(meta.dev()), true)
            }
        }
    };
    let key = format!("{}:{}", dev.0, dev.1);
    let dir = views.sys.join("dev/block").join(&key);
    let Ok(real) = std::fs::canonicalize(&dir) else {
        return Err(if from_path {
            on_no_disk(arg, &key, views)
        } else {
            format!("--device {arg}: no block device {key} on this machine (/proc/partitions lists them)")
        });
    };
    let name = file_name(&real);
    if !real.join("partition").exists() {
        return Ok(Disk { key, name });
    }
    // A partition's sysfs directory is inside its disk's
    // (block/partitions/core.c, `add_partition()`).
    let disk_dir = real.parent().unwrap_or(&real);
    let disk = Disk {
        key: std::fs::read_to_string(disk_dir.join("dev")).unwrap_or_default().trim().to_owned(),
        name: file_name(disk_dir),
    };
    if majmin(&disk.key).is_none() {
        return Err(format!("--device {arg}: {name} ({key}) is a partition, and its disk could not be read"));
    }
    if from_path {
        return Ok(disk);
    }
    Err(format!(
        "--device {arg} is the partition {name} ({key}); io.max limits whole disks: give --device /dev/{} \
         ({}), which holds the target's I/O to all of {} to the limit",
        disk.name, disk.key, disk.name
    ))
}

fn split(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The refusal for a file on a filesystem without a disk, naming the
/// filesystem (and, for overlay, the layer whose disk to give).
fn on_no_disk(arg: &str, key: &str, views: &Views) -> String {
    let mountinfo = std::fs::read_to_string(&views.mountinfo).unwrap_or_default();
    // mountinfo: `id parent MAJ:MIN root mountpoint options... - fstype source superoptions`
    // (Documentation/filesystems/proc.rst, 3.5).
    let mount = mountinfo.lines().find_map(|l| {
        let (mine, theirs) = l.split_once(" - ")?;
        let mut m = mine.split_whitespace();
        if m.nth(2)? != key {
            return None;
        }
        let point = m.nth(1)?;
        let mut t = theirs.split_whitespace();
        Some((point.to_owned(), t.next()?.to_owned(), t.nth(1).unwrap_or("").to_owned()))
    });
    let Some((point, fstype, options)) = mount else {
        return format!(
            "--device {arg} is on device {key}, which is no block device: io-throttle acts on disks only; give \
             the disk (/dev/sda, 8:0)"
        );
    };
    let upper = options.split(',').find_map(|o| o.strip_prefix("upperdir="));
    match (fstype.as_str(), upper) {
        ("overlay", Some(upper)) => format!(
            "--device {arg} is on overlay ({point}), which is on no disk itself: its writes go to its upper \
             layer {upper}; give --device {upper} (or the disk under it)"
        ),
        _ => format!(
            "--device {arg} is on {fstype} ({point}, device {key}), which is on no disk: io-throttle acts on \
             block I/O only (not tmpfs, not a network filesystem); give a disk (/dev/sda, 8:0) or a path on one"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs with a disk `vdb` (254:16) and its partition `vdb1`
    /// (254:17), as the kernel lays them out.
    fn views(test: &str) -> (PathBuf, Views) {
        let root = std::env::temp_dir().join(format!("chaos-disks-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let disk = root.join("sys/devices/virtual/block/vdb");
        std::fs::create_dir_all(disk.join("vdb1")).unwrap();
        std::fs::write(disk.join("dev"), "254:16\n").unwrap();
        std::fs::write(disk.join("vdb1/dev"), "254:17\n").unwrap();
        std::fs::write(disk.join("vdb1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, root.join("sys/dev/block/254:16")).unwrap();
        std::os::unix::fs::symlink(disk.join("vdb1"), root.join("sys/dev/block/254:17")).unwrap();
        std::fs::write(
            root.join("mountinfo"),
            "30 1 0:27 / /tmp rw - tmpfs tmpfs rw\n\
             31 1 0:28 / /var/lib/c/merged rw - overlay overlay rw,lowerdir=/l,upperdir=/var/lib/c/upper,workdir=/w\n",
        )
        .unwrap();
        let v = Views { sys: root.join("sys"), mountinfo: root.join("mountinfo") };
        (root, v)
    }

    #[test]
    fn disks_partitions_and_filesystems_without_a_disk() {
        let (root, v) = views("all");
        let vdb = Disk { key: "254:16".into(), name: "vdb".into() };
        assert_eq!(resolve("254:16", &v), Ok(vdb.clone()));
        let e = resolve("254:17", &v).unwrap_err();
        assert!(e.contains("partition vdb1") && e.contains("--device /dev/vdb (254:16)"), "{e}");
        assert!(resolve("254:99", &v).unwrap_err().contains("no block device 254:99"));
        assert!(resolve("/nonexistent/x", &v).unwrap_err().starts_with("--device /nonexistent/x: "));
        assert!(on_no_disk("/tmp/x", "0:27", &v).contains("is on tmpfs (/tmp, device 0:27)"));
        let e = on_no_disk("/var/lib/c/merged/db", "0:28", &v);
        assert!(e.contains("give --device /var/lib/c/upper"), "{e}");
        assert!(on_no_disk("/x", "0:99", &v).contains("no block device"));
        std::fs::remove_dir_all(root).unwrap();
    }
}

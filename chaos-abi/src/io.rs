//! I/O faults: one [`IoRule`] per target cgroup, counters per slot, and the
//! kernel facts the programs need that Rust eBPF cannot get by CO-RE
//! (field offsets, and the kernel's identity of each path prefix).
//!
//! Paths are matched by *inode*, as the kernel resolved them: the loader
//! opens every prefix once, the `file_open` program reports the address of
//! the `struct inode` it saw for that open ([`IoCalibration`]), and the
//! programs then walk a file's ancestors (dentry parents, then mount points)
//! comparing inode addresses. The loader keeps the prefix open while the
//! rule exists, so the inode cannot be freed and its address reused.

use crate::cgroup::Levels;

/// `HashMap<u64 /* cgroup id */, IoRule>`.
pub const RULES: &str = "IO_RULES";
/// `Array<IoConfig>` with one entry.
pub const CONFIG: &str = "IO_CONFIG";
/// `PerCpuArray<IoCounters>`, indexed by [`IoRule::slot`].
pub const COUNTERS: &str = "IO_COUNTERS";
/// `Array<u64>`, indexed by [`IoRule::slot`]: how many calls matched the
/// rule so far, across CPUs (atomic), for [`IoRule::window_start`] and
/// [`IoRule::window_end`].
pub const CALLS: &str = "IO_CALLS";
/// `Array<IoCalibration>` with one entry.
pub const CALIBRATION: &str = "IO_CALIBRATION";

/// Maximum number of target cgroups with an I/O rule at once.
pub const MAX_RULES: u32 = 1024;
/// Counter slots: the injector's slot numbers are shared by every family.
pub const MAX_SLOTS: u32 = crate::net::MAX_SLOTS;
/// Path prefixes (inodes) per rule.
pub const MAX_INODES: usize = 8;
/// Steps of the ancestor walk (one per directory level or mount crossed).
/// A file deeper than this below its mount-tree root is passed untouched
/// and counted in [`IoCounters::unresolved`].
pub const MAX_DEPTH: u32 = 48;
/// The same, on kernels without `bpf_loop` (before Linux 5.17), where the
/// walk is a bounded loop the verifier follows step by step.
pub const MAX_DEPTH_BOUNDED: u32 = 16;

/// Operation bits of [`IoRule::ops`], and indexes of [`IoRule::errno`].
pub const OP_OPEN: u32 = 1 << 0;
pub const OP_READ: u32 = 1 << 1;
pub const OP_WRITE: u32 = 1 << 2;
pub const OP_READDIR: u32 = 1 << 3;
pub const IDX_OPEN: usize = 0;
pub const IDX_READ: usize = 1;
pub const IDX_WRITE: usize = 2;
pub const IDX_READDIR: usize = 3;
pub const N_OPS: usize = 4;

/// `threshold` that fails every matching call: `bpf_get_prandom_u32()` is
/// always below 2^32.
pub const ALWAYS: u64 = 1 << 32;

/// An I/O fault on one cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoRule {
    /// `bpf_ktime_get_ns()` from which the rule is inert.
    pub deadline_ns: u64,
    /// Fail a matching call when `bpf_get_prandom_u32() < threshold`.
    pub threshold: u64,
    /// Matching calls number 0, 1, 2, ... in the order the kernel saw them;
    /// only calls numbered in `[window_start, window_end)` may fail. The
    /// programs count calls only when the window is not `[0, u64::MAX)`.
    pub window_start: u64,
    pub window_end: u64,
    /// Kernel addresses of the prefixes' inodes; the first `n_inodes` are
    /// used. A file matches when one of them is the file or an ancestor.
    pub inodes: [u64; MAX_INODES],
    pub n_inodes: u32,
    /// `OP_*` bits.
    pub ops: u32,
    /// The (positive) errno each operation fails with, by `IDX_*`.
    pub errno: [u16; N_OPS],
    /// Index into [`COUNTERS`] and [`CALLS`].
    pub slot: u32,
    pub _pad: u32,
}

/// Byte offsets of the kernel fields the programs read, computed by the
/// loader from the running kernel's BTF (they differ between releases).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoOffsets {
    /// `struct file` -> `f_inode`.
    pub file_inode: u32,
    /// `struct file` -> `f_path.mnt` (`struct vfsmount *`).
    pub file_mnt: u32,
    /// `struct file` -> `f_path.dentry`.
    pub file_dentry: u32,
    /// `struct dentry` -> `d_parent`.
    pub dentry_parent: u32,
    /// `struct dentry` -> `d_inode`.
    pub dentry_inode: u32,
    /// `struct inode` -> `i_mode` (`umode_t`, 16 bits).
    pub inode_mode: u32,
    /// `struct mount` -> `mnt` (the embedded `struct vfsmount`).
    pub mount_mnt: u32,
    /// `struct mount` -> `mnt_parent`.
    pub mount_parent: u32,
    /// `struct mount` -> `mnt_mountpoint` (`struct dentry *`).
    pub mount_mountpoint: u32,
    pub _pad: u32,
}

/// Target cgroup ids [`IoConfig`] lists, so that a call of another cgroup
/// costs compares instead of a hash lookup per targeted level.
pub const MAX_LISTED_TARGETS: usize = 8;
/// [`IoConfig::n_targets`] when there are more targets than that: every
/// ancestor id is looked up in [`RULES`].
pub const TARGETS_UNLISTED: u32 = u32::MAX;

/// What every call reads first: one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoConfig {
    /// The cgroup levels of [`RULES`]' keys; `mask == 0`: no rule at all.
    pub levels: Levels,
    /// While non-zero, an open by this thread (`bpf_get_current_pid_tgid()`)
    /// is reported in [`CALIBRATION`] and never failed.
    pub calibrate_pid_tgid: u64,
    pub offsets: IoOffsets,
    /// The cgroup ids of [`RULES`]' keys (the first `n_targets`; unused
    /// entries are 0, which is no cgroup's id), or `n_targets ==
    /// TARGETS_UNLISTED`.
    pub targets: [u64; MAX_LISTED_TARGETS],
    pub n_targets: u32,
    pub _pad: u32,
}

/// What the `file_open` program saw for the loader's calibration open: the
/// *first* open the kernel makes for it. Opening a file on overlayfs opens
/// the overlay file, then the real file below it (ovl_open,
/// fs/overlayfs/file.c), and the programs match the overlay's inodes, as
/// the program sees them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCalibration {
    /// The `calibrate_pid_tgid` this answer is for.
    pub pid_tgid: u64,
    /// `file->f_path.dentry->d_inode`.
    pub inode: u64,
    /// Its `i_mode`.
    pub mode: u32,
    pub _pad: u32,
}

/// Per-CPU counters of one attack. The loader sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Calls of the target that matched the rule (operation and path), by
    /// `IDX_*`.
    pub matched: [u64; N_OPS],
    /// ... of which were failed.
    pub failed: [u64; N_OPS],
    /// Calls that found the rule past its deadline and were passed.
    pub expired: u64,
    /// Calls passed because the ancestor walk reached [`MAX_DEPTH`] (or [`MAX_DEPTH_BOUNDED`]) or a
    /// kernel read failed (fail open).
    pub unresolved: u64,
}

const _: () = assert!(core::mem::size_of::<IoRule>() == 120);
const _: () = assert!(core::mem::align_of::<IoRule>() == 8);
const _: () = assert!(core::mem::size_of::<IoOffsets>() == 40);
const _: () = assert!(core::mem::size_of::<IoConfig>() == 128);
const _: () = assert!(core::mem::size_of::<IoCalibration>() == 24);
const _: () = assert!(core::mem::size_of::<IoCounters>() == 80);

crate::pod!(IoRule, IoConfig, IoCalibration, IoCounters);

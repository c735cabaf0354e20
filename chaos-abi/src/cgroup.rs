//! How rules are keyed: by cgroup v2 id, matched against a packet's or a
//! task's ancestors so that a rule on a cgroup covers its whole subtree.

/// Deepest cgroup level (root = 0) a target may sit at.
pub const MAX_LEVEL: u32 = 31;

/// Which cgroup levels carry rules of one fault family (one entry of an
/// `Array<Levels>`). The eBPF side walks a packet's or task's ancestors from
/// `deepest` up to the root, looking up only the levels whose bit is set in
/// `mask`: untargeted events cost one lookup per level in use (usually one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// Bit `n` set: some rule targets a cgroup at level `n`.
    pub mask: u32,
    /// The highest set bit of `mask` (0 when empty).
    pub deepest: u32,
}

impl Levels {
    /// The levels of the given per-level rule counts.
    pub fn from_users(users: &[usize]) -> Self {
        let mut l = Self::default();
        for (level, n) in users.iter().enumerate().take(MAX_LEVEL as usize + 1) {
            if *n > 0 {
                l.mask |= 1 << level;
                l.deepest = level as u32;
            }
        }
        l
    }
}

const _: () = assert!(core::mem::size_of::<Levels>() == 8);

crate::pod!(Levels);

/// [`Ancestry::mode`]: `bpf_get_current_ancestor_cgroup_id`, which tracing
/// and LSM programs may call from Linux 5.14 on (bpf_tracing_func_proto,
/// kernel/trace/bpf_trace.c).
pub const ANCESTRY_HELPER: u32 = 0;
/// [`Ancestry::mode`]: read the ancestor's id where that helper is missing
/// (Linux 5.10 to 5.13): `current->cgroups->dfl_cgrp->ancestor_ids[level]`,
/// the array `cgroup_ancestor()` and the helper read on those kernels
/// (include/linux/cgroup.h; `ancestor_ids` holds each ancestor's id, the
/// cgroup's own at its level, until Linux 6.0 replaced it with pointers).
pub const ANCESTRY_TASK_IDS: u32 = 1;

/// How the tracing and LSM programs find the current task's ancestor
/// cgroups: a read-only global of the fault object (`ANCESTRY`), set when
/// the loader loads the object, so the verifier sees `mode` as a constant
/// and never checks the branch not taken (a helper the kernel lacks, or
/// reads it does not need). Offsets are from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ancestry {
    /// `ANCESTRY_*`.
    pub mode: u32,
    /// `struct task_struct` -> `cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `struct css_set` -> `dfl_cgrp` (`struct cgroup *`, the v2 cgroup).
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup` -> `level` (`int`; the root is 0).
    pub cgroup_level: u32,
    /// `struct cgroup` -> `ancestor_ids` (`u64[]`).
    pub cgroup_ancestor_ids: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Ancestry>() == 24);

crate::pod!(Ancestry);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_track_the_deepest_rule() {
        assert_eq!(Levels::from_users(&[]), Levels::default());
        assert_eq!(Levels::from_users(&[0, 2, 0, 1]), Levels { mask: 0b1010, deepest: 3 });
    }
}

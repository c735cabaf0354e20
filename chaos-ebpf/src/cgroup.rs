//! Rule lookup by cgroup ancestry.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_get_current_ancestor_cgroup_id},
    maps::HashMap,
};
use chaos_abi::cgroup::{ANCESTRY_HELPER, Ancestry, Levels, MAX_LEVEL};

/// How [`current_ancestor`] works on this kernel: set by the loader
/// (`EbpfLoader::override_global`) in the object's read-only data, which it
/// freezes, so the verifier reads `mode` as a constant
/// (kernel/bpf/verifier.c, bpf_map_direct_read) and prunes the other branch
/// unchecked: a kernel without the helper never sees the call.
#[unsafe(no_mangle)]
static ANCESTRY: Ancestry = Ancestry {
    mode: ANCESTRY_HELPER,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_level: 0,
    cgroup_ancestor_ids: 0,
    _pad: 0,
};

/// The id of the current task's ancestor cgroup (v2) at `level`, its own
/// at its own level, 0 when it is shallower or a read fails — what
/// `bpf_get_current_ancestor_cgroup_id` returns (kernel/bpf/helpers.c).
#[inline(always)]
pub fn current_ancestor(level: i32) -> u64 {
    // SAFETY: a plain read of a static; volatile so that the compiler does
    // not fold in the value it was compiled with.
    let mode = unsafe { core::ptr::read_volatile(&raw const ANCESTRY.mode) };
    if mode == ANCESTRY_HELPER {
        // SAFETY: helper without pointer arguments.
        return unsafe { bpf_get_current_ancestor_cgroup_id(level) };
    }
    // SAFETY: as above.
    let a = unsafe { core::ptr::read_volatile(&raw const ANCESTRY) };
    ancestor_by_reads(&a, level).unwrap_or(0)
}

/// `current->cgroups->dfl_cgrp->ancestor_ids[level]`, as cgroup_ancestor()
/// reads it before Linux 6.0 (include/linux/cgroup.h). `current->cgroups`
/// is RCU-protected, and a BPF program runs in an RCU read-side section.
#[inline(always)]
fn ancestor_by_reads(a: &Ancestry, level: i32) -> Option<u64> {
    if !(0..=MAX_LEVEL as i32).contains(&level) {
        return None;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let css_set = read::<u64>(task, a.task_cgroups)?;
    let cgroup = read::<u64>(css_set, a.css_set_dfl_cgrp)?;
    let own = read::<i32>(cgroup, a.cgroup_level)?;
    if level > own {
        return None;
    }
    read::<u64>(cgroup, a.cgroup_ancestor_ids + 8 * level as u32)
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address: a bad one makes
    // it fail (and zero the destination), never fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(u64::from(offset)) as *const T) }.ok()
}

/// The rule of the deepest targeted ancestor of a cgroup, so that a rule on
/// a child overrides one on its parent.
///
/// `ancestor(n)` returns the id of the ancestor at level `n` (0 when the
/// cgroup is shallower), as `bpf_skb_ancestor_cgroup_id` and
/// `bpf_get_current_ancestor_cgroup_id` do. The walk starts at the deepest
/// targeted level, so a single target costs one ancestor lookup and one
/// hash lookup; the bound on `deepest` lets the verifier see the loop end.
#[inline(always)]
pub fn find_rule<'a, V>(
    rules: &'a HashMap<u64, V>,
    levels: &Levels,
    ancestor: impl Fn(i32) -> u64,
) -> Option<&'a V> {
    find_rule_keyed(rules, levels, ancestor).map(|(_, rule)| rule)
}

/// [`find_rule`], with the key (the targeted ancestor's id) it was found
/// under.
#[inline(always)]
pub fn find_rule_keyed<'a, V>(
    rules: &'a HashMap<u64, V>,
    levels: &Levels,
    ancestor: impl Fn(i32) -> u64,
) -> Option<(u64, &'a V)> {
    if levels.deepest > MAX_LEVEL {
        return None;
    }
    let mask = levels.mask;
    let mut level = levels.deepest as i32;
    while level >= 0 {
        if mask & (1 << level) != 0 {
            let id = ancestor(level);
            if id != 0 {
                // SAFETY: rules are only ever replaced whole by the loader
                // (BPF_ANY update), never modified in place, and we copy
                // the fields we use before acting on them.
                if let Some(rule) = unsafe { rules.get(&id) } {
                    return Some((id, rule));
                }
            }
        }
        level -= 1;
    }
    None
}

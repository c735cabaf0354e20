//! Rule lookup by cgroup ancestry.

use aya_ebpf::maps::HashMap;
use chaos_abi::cgroup::{Levels, MAX_LEVEL};

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
                    return Some(rule);
                }
            }
        }
        level -= 1;
    }
    None
}

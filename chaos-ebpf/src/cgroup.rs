//! Rule lookup by cgroup ancestry.

use aya_ebpf::maps::HashMap;
use chaos_abi::cgroup::MAX_LEVEL;

/// The rule of the deepest targeted ancestor of a cgroup, so that a rule on
/// a child overrides one on its parent.
///
/// `levels` has bit `n` set when some rule targets a cgroup at level `n`;
/// `ancestor(n)` returns the id of the ancestor at level `n` (0 when the
/// cgroup is shallower), as `bpf_skb_ancestor_cgroup_id` and
/// `bpf_get_current_ancestor_cgroup_id` do. The loop is bounded by
/// `MAX_LEVEL` for the verifier; untargeted levels cost one bit test.
#[inline(always)]
pub fn find_rule<V>(rules: &HashMap<u64, V>, levels: u32, ancestor: impl Fn(i32) -> u64) -> Option<&V> {
    let mut level = MAX_LEVEL as i32;
    while level >= 0 {
        if levels & (1 << level) != 0 {
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

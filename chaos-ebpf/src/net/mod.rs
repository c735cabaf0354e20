//! What the network fault programs share: finding a packet's rule, matching
//! its filters, and the loss decision with its counters.

mod packet;

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, generated::bpf_skb_ancestor_cgroup_id},
};
use chaos_abi::net::{DIR_EGRESS, FAMILY_ANY, NetCounters, NetRule};

use crate::{
    cgroup::find_rule,
    maps::{NET_COUNTERS, NET_LEVELS, NET_RULES},
};

/// What to do with a packet.
pub enum Verdict {
    Pass,
    Drop,
}

/// Decide the fate of one packet of the socket's cgroup in direction `dir`
/// (`DIR_EGRESS` or `DIR_INGRESS`). Fails open.
#[inline(always)]
pub fn decide(ctx: &impl EbpfContext, dir: u8) -> Verdict {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let Some(levels) = NET_LEVELS.get(0) else {
        return Verdict::Pass;
    };
    if levels.mask == 0 {
        return Verdict::Pass;
    }
    // SAFETY: the helper only reads the skb the kernel handed us.
    let ancestor = |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
    let Some(rule) = find_rule(&NET_RULES, levels, ancestor) else {
        return Verdict::Pass;
    };
    let rule: NetRule = *rule;
    let Some(counters) = NET_COUNTERS.get_ptr_mut(rule.slot) else {
        return Verdict::Pass;
    };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled, so
    // nothing else on this CPU touches it while we do.
    let counters: &mut NetCounters = unsafe { &mut *counters };

    // The kernel-side deadline: whatever the loader does (or fails to do),
    // the rule is inert from here on.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        counters.expired += 1;
        return Verdict::Pass;
    }
    if rule.directions & dir == 0 || !filters_match(skb, &rule, dir) {
        return Verdict::Pass;
    }

    let egress = dir == DIR_EGRESS;
    if egress {
        counters.egress_matched += 1;
    } else {
        counters.ingress_matched += 1;
    }
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    if roll >= rule.loss_threshold {
        return Verdict::Pass;
    }
    if egress {
        counters.egress_dropped += 1;
    } else {
        counters.ingress_dropped += 1;
    }
    Verdict::Drop
}

/// Peer, port and protocol filters; parses the packet only when the rule
/// has any.
#[inline(always)]
fn filters_match(skb: *mut __sk_buff, rule: &NetRule, dir: u8) -> bool {
    if rule.peer.family == FAMILY_ANY && rule.port == 0 && rule.protocol == 0 {
        return true;
    }
    match packet::Headers::parse(skb) {
        Some(headers) => headers.matches(rule, dir),
        // Not IP, truncated, or a later fragment: not ours to touch.
        None => false,
    }
}

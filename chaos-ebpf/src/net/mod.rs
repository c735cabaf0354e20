//! What the network fault programs share: finding a packet's rule, matching
//! its filters, and the loss decision with its counters. The egress-only
//! effects (delay, rate, duplication, corruption, reordering) live in
//! [`effects`] and run only for packets that matched a rule.

pub mod effects;
pub mod flow;
mod packet;
pub mod receive;

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    bindings::bpf_spin_lock,
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns,
        generated::{bpf_skb_ancestor_cgroup_id, bpf_spin_lock, bpf_spin_unlock},
    },
};
use chaos_abi::net::{DIR_EGRESS, FAMILY_ANY, NetCounters, NetRule, TAG_MARK, direction_index};

use crate::{
    cgroup::find_rule_keyed,
    maps::{NET_BURST_STATES, NET_COUNTERS, NET_LEVELS, NET_RULES},
};

/// The outcome of looking a packet up.
pub enum Lookup {
    /// No rule for the packet's cgroup (or the packet has no socket).
    Miss,
    /// A rule, but not for this packet: past its deadline, other direction,
    /// filtered out, or no counter slot. Pass it.
    Inert,
    /// The packet matched this rule (already counted as matched); the
    /// counters are this CPU's slot of the rule's attack.
    Hit(NetRule, *mut NetCounters),
}

/// The rule of the packet's socket's cgroup, if one is targeted (a copy of
/// the rule: see [`find_rule`]).
#[inline(always)]
pub fn rule_of(skb: *mut __sk_buff) -> Option<NetRule> {
    keyed_rule_of(skb).map(|(_, rule)| rule)
}

/// [`rule_of`], with the rule's key in `NET_RULES`.
#[inline(always)]
pub fn keyed_rule_of(skb: *mut __sk_buff) -> Option<(u64, NetRule)> {
    let levels = NET_LEVELS.get(0)?;
    if levels.mask == 0 {
        return None;
    }
    // SAFETY: the helper only reads the skb the kernel handed us.
    let ancestor = |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
    find_rule_keyed(&NET_RULES, levels, ancestor).map(|(key, rule)| (key, *rule))
}

/// Find the rule of one packet of the socket's cgroup in direction `dir`
/// (`DIR_EGRESS` or `DIR_INGRESS`). Fails open.
#[inline(always)]
pub fn lookup(ctx: &impl EbpfContext, dir: u8) -> Lookup {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let Some(rule) = rule_of(skb) else {
        return Lookup::Miss;
    };
    let Some(counters) = NET_COUNTERS.get_ptr_mut(rule.slot) else {
        return Lookup::Inert;
    };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled, so
    // nothing else on this CPU touches it while we do.
    let c: &mut NetCounters = unsafe { &mut *counters };

    // The kernel-side deadline: whatever the loader does (or fails to do),
    // the rule is inert from here on.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return Lookup::Inert;
    }
    if rule.directions & dir == 0 || !filters_match(skb, &rule, dir) {
        return Lookup::Inert;
    }
    if dir == DIR_EGRESS {
        c.egress_matched += 1;
    } else {
        c.ingress_matched += 1;
    }
    Lookup::Hit(rule, counters)
}

/// Whether the tag program marked this packet as one of a targeted cgroup's
/// (see [`chaos_abi::net::TAG_MARK`]).
#[inline(always)]
pub fn tagged(skb: *mut __sk_buff) -> bool {
    // SAFETY: a ctx field read at its own width.
    unsafe { read_volatile(addr_of!((*skb).mark)) & TAG_MARK != 0 }
}

/// Clear the tag once the classifier has found the packet's rule: it has
/// served, and nothing after the hook should see it (the mark is as the
/// stack left it, unless the target's own mark had this bit: see
/// [`chaos_abi::net::TAG_MARK`]). The
/// duplicates and delayed copies are sent before this (they inherit the
/// tag, which brings them back through the classifier's lookup, where
/// `release_copy` clears it on them).
#[inline(always)]
pub fn untag(skb: *mut __sk_buff) {
    // SAFETY: ctx field accesses at their own width; tc programs may write
    // `mark` (net/core/filter.c, tc_cls_act_is_valid_access).
    unsafe {
        let mark = read_volatile(addr_of!((*skb).mark));
        write_volatile(addr_of_mut!((*skb).mark), mark & !TAG_MARK);
    }
}

/// A uniform roll against a threshold on the [`chaos_abi::net::LOSS_ALWAYS`]
/// scale: 0 never succeeds, 2^32 always does.
#[inline(always)]
pub fn roll(threshold: u64) -> bool {
    // SAFETY: helper without arguments.
    threshold != 0 && u64::from(unsafe { bpf_get_prandom_u32() }) < threshold
}

/// The loss decision for a matched packet, counted. True: drop it.
#[inline(always)]
pub fn lose(rule: &NetRule, c: &mut NetCounters, dir: u8) -> bool {
    let lost = if rule.burst_enter_threshold != 0 { in_burst(rule, dir) } else { roll(rule.loss_threshold) };
    if !lost {
        return false;
    }
    if dir == DIR_EGRESS {
        c.egress_dropped += 1;
        c.egress_injected += 1;
    } else {
        c.ingress_dropped += 1;
    }
    true
}

/// Step the direction's burst-loss chain by one packet (see
/// [`NetRule::burst_enter_threshold`]); true: the packet arrived in the bad
/// state and is lost. As in netem's `loss_gilb_ell`
/// (net/sched/sch_netem.c), the fate is the arrival state's and the move
/// follows. The roll is drawn before the lock: the verifier allows no
/// helper call while a `bpf_spin_lock` is held (kernel/bpf/verifier.c,
/// `check_helper_call`). Fails open: no chain, no loss.
#[inline(always)]
fn in_burst(rule: &NetRule, dir: u8) -> bool {
    let Some(state) = NET_BURST_STATES.get_ptr_mut(direction_index(rule.slot, dir)) else {
        return false;
    };
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    // SAFETY: `state` points into a map value whose BTF declares the lock;
    // between lock and unlock only this value is touched, with no call.
    unsafe {
        let lock = addr_of_mut!((*state).lock).cast::<bpf_spin_lock>();
        bpf_spin_lock(lock);
        let bad = (*state).bad != 0;
        let threshold = if bad { rule.burst_leave_threshold } else { rule.burst_enter_threshold };
        if roll < threshold {
            (*state).bad = u32::from(!bad);
        }
        bpf_spin_unlock(lock);
        bad
    }
}

/// Peer, port and protocol filters; parses the packet only when the rule
/// has any.
#[inline(always)]
pub fn filters_match(skb: *mut __sk_buff, rule: &NetRule, dir: u8) -> bool {
    if rule.peer.family == FAMILY_ANY && rule.port == 0 && rule.protocol == 0 {
        return true;
    }
    match packet::Headers::parse(skb) {
        Some(headers) => headers.matches(rule, dir),
        // Not IP, truncated, or a later fragment: not ours to touch.
        None => false,
    }
}

//! Network faults on what the target receives, beyond the socket-level
//! loss of [`crate::net_ingress`]: a tc ingress classifier on the devices
//! of the target's network namespace (TCX link, fd-owned), which delays,
//! rate-limits, duplicates, corrupts, reorders or drops the target's
//! packets through chaos's ifb (see [`crate::net::receive`]).
//!
//! At tc ingress no socket has been found yet, and the program types that
//! run there are not offered the socket's cgroup (`bpf_sk_cgroup_id` is
//! cgroup_skb's only: `cg_skb_func_proto`, net/core/filter.c). So the
//! target's flows are learned from its own packets, by two cgroup_skb
//! programs on the target cgroup, which the kernel runs for that subtree's
//! sockets only: [`net_rx_out`] on what it sends (a connection it opens, a
//! query it sends: known before the first answer arrives) and [`net_rx_in`]
//! on what reaches its sockets (a connection it accepts, a datagram from a
//! new peer: known from its first packet on). The classifier looks each
//! received packet's flow up in `NET_RX_FLOWS`: a sibling cgroup in the
//! same namespace, receiving from the same peer, has other flows and is
//! not touched. What this cannot see: the first packet of a flow the target
//! did not start (a SYN to its listener, a first datagram from a new peer)
//! arrives before the flow is known, and passes untouched.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::{cgroup_skb, classifier},
    programs::{SkBuffContext, TcContext},
};
use chaos_abi::net::{DIR_EGRESS, DIR_INGRESS, RxFlow, tag_device_key};

use crate::{
    maps::{NET_COUNTERS, NET_RULES, NET_RX_FLOWS, NET_RX_IFBS},
    net::{filters_match, flow, keyed_rule_of, receive},
};

/// cgroup_skb return code: pass (include/uapi/linux/bpf.h).
const CGROUP_SKB_PASS: i32 = 1;

#[classifier]
pub fn net_receive(ctx: TcContext) -> i32 {
    try_receive(ctx.as_ptr().cast())
}

/// Fails open: whatever cannot be read or found passes (`TC_ACT_UNSPEC`,
/// which is TCX_NEXT: the next program decides, as if we were not there).
#[inline(always)]
fn try_receive(skb: *mut __sk_buff) -> i32 {
    let Some(key) = flow::of(skb, DIR_INGRESS) else { return TC_ACT_UNSPEC };
    // SAFETY: the value is copied at once; the LRU map may recycle it.
    let Some(flow) = (unsafe { NET_RX_FLOWS.get(&key) }).copied() else { return TC_ACT_UNSPEC };
    // SAFETY: rules are replaced whole by the loader, and copied here.
    let Some(rule) = (unsafe { NET_RULES.get(&flow.cgroup) }).copied() else { return TC_ACT_UNSPEC };
    if rule.slot != flow.slot {
        return TC_ACT_UNSPEC;
    }
    let Some(counters) = NET_COUNTERS.get_ptr_mut(rule.slot) else { return TC_ACT_UNSPEC };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled.
    let c = unsafe { &mut *counters };
    // The kernel-side deadline, as everywhere.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return TC_ACT_UNSPEC;
    }
    if rule.directions & DIR_INGRESS == 0 || !filters_match(skb, &rule, DIR_INGRESS) {
        return TC_ACT_UNSPEC;
    }
    // Only on the attack's devices, each with the ifb of its namespace
    // (ifindexes are per namespace; the key names the attack).
    // SAFETY: a ctx field read at its own width.
    let ifindex = unsafe { read_volatile(addr_of!((*skb).ifindex)) };
    // SAFETY: a plain value, copied.
    let Some(ifb) = (unsafe { NET_RX_IFBS.get(&tag_device_key(rule.slot, ifindex)) }).copied() else {
        return TC_ACT_UNSPEC;
    };
    c.ingress_matched += 1;
    receive::apply(skb, &rule, c, ifb)
}

/// Learn the flow of a packet the target sends.
#[cgroup_skb]
pub fn net_rx_out(ctx: SkBuffContext) -> i32 {
    learn(ctx.as_ptr().cast(), DIR_EGRESS);
    CGROUP_SKB_PASS
}

/// Learn the flow of a packet that reached one of the target's sockets
/// (TCP, UDP and SCTP only: see [`flow::demuxed_by_port`]).
#[cgroup_skb]
pub fn net_rx_in(ctx: SkBuffContext) -> i32 {
    learn(ctx.as_ptr().cast(), DIR_INGRESS);
    CGROUP_SKB_PASS
}

/// Record the packet's flow under the rule of its socket's cgroup, when
/// that rule acts on what the target receives (a rule on a child cgroup
/// without it overrides its parent's, as everywhere). One lookup when the
/// flow is known already.
#[inline(always)]
fn learn(skb: *mut __sk_buff, dir: u8) {
    let Some((cgroup, rule)) = keyed_rule_of(skb) else { return };
    if rule.directions & DIR_INGRESS == 0 {
        return;
    }
    let Some(key) = flow::of(skb, dir) else { return };
    // What reaches the target's socket may have been meant for another
    // socket too (an echo reply reaches every raw ICMP socket): only a
    // packet the kernel gave to this socket alone names its flow.
    if dir == DIR_INGRESS && !flow::demuxed_by_port(key.protocol) {
        return;
    }
    let value = RxFlow { cgroup, slot: rule.slot, _pad: 0 };
    // SAFETY: read and compared at once.
    if unsafe { NET_RX_FLOWS.get(&key) }.is_some_and(|known| *known == value) {
        return;
    }
    // A full map evicts its least recently used flow; an error leaves the
    // flow unknown (its packets pass), never fails the packet.
    let _ = NET_RX_FLOWS.insert(&key, &value, 0);
}

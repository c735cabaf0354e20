//! The effects of a rule on what its target receives: loss, delay with
//! jitter, rate, duplication, corruption and reordering, applied by the tc
//! ingress classifier (`net_receive`) to the target's packets before the
//! stack sees them.
//!
//! Ingress has no qdisc of its own (the clsact/ingress hook runs
//! classifiers, never a queue), so packets that must wait are handed to a
//! queue that does: chaos's ifb device in the same namespace, whose root is
//! fq. The program gives the packet its delivery time with
//! `bpf_skb_set_tstamp(.., BPF_SKB_TSTAMP_DELIVERY_MONO)` (Linux 5.18) and
//! redirects it to the ifb's egress with `bpf_redirect`:
//!
//! - `__bpf_tx_skb` (net/core/filter.c) keeps a mono delivery time
//!   (`skb_clear_tstamp` clears only receive times) and, since Linux 6.4
//!   ("bpf: Set skb redirect and from_ingress info in __bpf_tx_skb"),
//!   marks the skb redirected from ingress, which `ifb_xmit`
//!   (drivers/net/ifb.c) requires — before, it dropped what BPF sent it;
//! - fq holds it until `skb->tstamp` (`fq_enqueue`, net/sched/sch_fq.c),
//!   releasing packets without one at once;
//! - the ifb's tasklet (`ifb_ri_tasklet`) puts the packet back on the
//!   device it arrived on, with `tc_skip_classify` set, so that this
//!   program does not see it twice, and `netif_receive_skb` delivers it;
//! - `ip_local_deliver` / `ip6_input` replace the delivery time with the
//!   real receive time (`skb_clear_delivery_time`), so a socket asking for
//!   receive timestamps sees when the packet was delivered, after the delay.
//!
//! A received packet has no owner yet (no socket: `skb->sk` is set by the
//! socket lookup, after this hook), so unlike on egress the original itself
//! can wait in the queue: no clone, no socket memory held.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_clone_redirect, bpf_redirect, bpf_set_hash, bpf_skb_set_tstamp},
    },
};
use chaos_abi::net::{
    DIR_INGRESS, FLAG_FLOW_PER_PACKET, FLAG_SCHEDULE, NetCounters, NetRule, direction_index,
};

use super::{
    effects::{corrupt, departure, network_offset, prandom},
    packet::load,
    roll,
};

/// `bpf_skb_set_tstamp`'s types (include/uapi/linux/bpf.h; renamed
/// `BPF_SKB_CLOCK_REALTIME` / `BPF_SKB_CLOCK_MONOTONIC` in Linux 6.11, same
/// values): none (the helper then requires 0), and a CLOCK_MONOTONIC
/// delivery time.
const TSTAMP_UNSPEC: u32 = 0;
const TSTAMP_DELIVERY_MONO: u32 = 1;

/// Apply the rule to a received packet that matched it: loss first (as
/// netem on an ifb would), then the effects. Returns the tc verdict.
#[inline(always)]
pub fn apply(skb: *mut __sk_buff, rule: &NetRule, c: &mut NetCounters, ifb: u32) -> i32 {
    if super::lose(rule, c, DIR_INGRESS) {
        // Counted in `ingress_dropped`. At ingress a drop is silent: the
        // sender cannot tell it from the network's.
        return TC_ACT_SHOT;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut injected = false;
    if roll(rule.duplicate_threshold) {
        // The duplicate is an independent copy, with its own corruption and
        // delivery time, as netem re-enqueues its duplicate.
        let flip = if roll(rule.corrupt_threshold) { corrupt(skb) } else { None };
        if let Some(at) = delivery(skb, rule, c, now) {
            if flip.is_some() {
                c.ingress_corrupted += 1;
            }
            // Without a schedule the copy keeps the original's receive time,
            // which `__bpf_tx_skb` clears on it (fq then sends it at once)
            // and leaves on the original, which goes on in place.
            if rule.flags & FLAG_SCHEDULE != 0 {
                set_delivery(skb, rule, at);
            }
            // A clone of the packet (with its delivery time: `__copy_skb_header`
            // copies `tstamp`) to the ifb; the original's head is made
            // private first (`bpf_try_make_head_writable`), so undoing the
            // flip leaves the copy's bit flipped.
            // SAFETY: helper on the skb the kernel handed us.
            let ret = unsafe { bpf_clone_redirect(skb, ifb, 0) };
            if ret != 0 {
                c.ingress_queue_dropped += 1;
            }
        }
        if let Some(f) = flip {
            f.undo(skb);
        }
        c.ingress_duplicated += 1;
        injected = true;
    }
    if roll(rule.corrupt_threshold) && corrupt(skb).is_some() {
        c.ingress_corrupted += 1;
        injected = true;
    }
    if rule.flags & FLAG_SCHEDULE == 0 {
        // Nothing waits: the original goes on in place.
        if injected {
            c.ingress_injected += 1;
        }
        return TC_ACT_UNSPEC;
    }
    c.ingress_injected += 1;
    let Some(at) = delivery(skb, rule, c, now) else {
        return TC_ACT_SHOT;
    };
    set_delivery(skb, rule, at);
    // SAFETY: plain helper call; flags 0: the ifb's egress.
    unsafe { bpf_redirect(ifb, 0) as i32 }
}

/// When one copy is delivered: at once (0) when reordered or when nothing
/// is scheduled, else after the rate limiter and the delay. `None`: the
/// rate limiter's backlog is full, the copy is dropped (counted).
#[inline(always)]
fn delivery(skb: *mut __sk_buff, rule: &NetRule, c: &mut NetCounters, now: u64) -> Option<u64> {
    if rule.flags & FLAG_SCHEDULE == 0 {
        return Some(0);
    }
    if roll(rule.reorder_threshold) {
        c.ingress_reordered += 1;
        return Some(0);
    }
    match departure(wire_bytes(skb), direction_index(rule.slot, DIR_INGRESS), rule, now, now) {
        Some(at) => {
            c.ingress_delayed += 1;
            Some(at)
        }
        None => {
            c.ingress_rate_dropped += 1;
            None
        }
    }
}

/// Give the packet its delivery time (0: none, deliver at once) and, with
/// jitter or reordering, a flow of its own in fq: fq keys a socket-less
/// packet's flow by `skb_get_hash()`, and a flow releases its packets no
/// earlier than its head's time (see `effects::schedule_copy`).
#[inline(always)]
fn set_delivery(skb: *mut __sk_buff, rule: &NetRule, at: u64) {
    // SAFETY: helpers on the skb the kernel handed us. Only IPv4 and IPv6
    // packets get here (`flow::of`), the protocols the helper accepts.
    unsafe {
        if at == 0 {
            bpf_skb_set_tstamp(skb, 0, TSTAMP_UNSPEC);
        } else {
            bpf_skb_set_tstamp(skb, at, TSTAMP_DELIVERY_MONO);
        }
        if rule.flags & FLAG_FLOW_PER_PACKET != 0 {
            bpf_set_hash(skb, prandom());
        }
    }
}

/// The packet's size on the wire, as `wire_len` gives it on egress
/// (`qdisc_pkt_len_init`, net/core/dev.c): at tc ingress `len` counts the
/// link-layer header (the hook pushes it before running the program), but a
/// GSO packet (a veth passes its peer's TSO sends whole) carries the
/// headers once for `gso_segs` segments, and at ingress `wire_len` is `len`
/// (`sch_handle_ingress`). So the headers of the other segments are added,
/// as `qdisc_pkt_len_init` does.
#[inline(always)]
fn wire_bytes(skb: *mut __sk_buff) -> u64 {
    // SAFETY: ctx field reads at their own width.
    let (len, segs) =
        unsafe { (read_volatile(addr_of!((*skb).len)), read_volatile(addr_of!((*skb).gso_segs))) };
    let mut bytes = u64::from(len);
    if segs > 1
        && let Some(headers) = headers_len(skb)
    {
        bytes += u64::from(segs - 1) * u64::from(headers);
    }
    bytes
}

/// The length of the link-layer, IP and TCP or UDP headers of a packet.
#[inline(always)]
fn headers_len(skb: *mut __sk_buff) -> Option<u32> {
    let l3 = network_offset(skb)?;
    let first: [u8; 1] = load(skb, 0)?;
    let (ip_len, protocol) = match first[0] >> 4 {
        4 => {
            let h: [u8; 10] = load(skb, 0)?;
            (u32::from(h[0] & 0x0f) * 4, h[9])
        }
        6 => {
            let h: [u8; 7] = load(skb, 0)?;
            (40, h[6])
        }
        _ => return None,
    };
    let l4 = match protocol {
        // TCP: the data offset, in 32-bit words.
        6 => u32::from(load::<13>(skb, ip_len)?[12] >> 4) * 4,
        17 => 8,
        _ => 0,
    };
    Some(l3 + ip_len + l4)
}

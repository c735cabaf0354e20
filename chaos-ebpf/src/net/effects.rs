//! The egress effects of a rule beyond loss: delay with jitter, rate,
//! duplication, corruption and reordering, as netem applies them — but to
//! the target's packets only. Runs only for packets that matched a rule.
//!
//! How a packet is delayed: the tc egress hook runs before the device's
//! qdisc (`__dev_queue_xmit`, net/core/dev.c), so setting `skb->tstamp`
//! here gives the packet an *earliest departure time* that an fq qdisc on
//! the device honours (`fq_enqueue` copies it into `time_to_send`;
//! `fq_dequeue` throttles the flow until then; net/sched/sch_fq.c on 6.1
//! and 6.12). fq also releases packets without a timestamp at once, so the
//! sibling cgroups sharing the device keep their latency.
//!
//! The packet fq holds is not the original but a clone: the original is
//! owned by its socket (`skb->sk`, charged to `sk_wmem_alloc`) until freed,
//! so holding it for 50 ms would make TCP Small Queues
//! (`tcp_small_queue_check`, net/ipv4/tcp_output.c) and the socket's send
//! buffer see a 50 ms-deep local queue and throttle the sender — a UDP
//! sender would block, a TCP flow would collapse to a few packets per
//! delay. netem avoids that with `skb_orphan_partial()` before delaying
//! (net/sched/sch_netem.c, netem_enqueue). A BPF program cannot orphan, but
//! `skb_clone()` gives a copy without owner (`n->sk = NULL; n->destructor =
//! NULL` in `__skb_clone`, net/core/skbuff.c): the program sends that copy
//! with `bpf_clone_redirect` to the same device's egress, then drops the
//! original silently, which releases the socket's memory at once, as a
//! transmit completion would. If no copy could be made, the original is
//! passed undelayed instead (fail open, counted in `egress_copy_failed`).
//!
//! The copy goes through this device's egress again (and this program
//! again, tagged as the original was: see [`super::untag`]): it carries
//! [`COPY_MARK`] in `cb[0..2]` and its departure time in
//! `cb[2..4]`, set on the original just before the clone
//! (`__copy_skb_header` copies `cb`) and restored on it right after, so
//! the program recognises the copy, writes its departure time into
//! `skb->tstamp`, clears the mark and lets it pass. `cb` is the qdisc's
//! scratch area (`qdisc_skb_cb`): nothing between the hook and the qdisc
//! reads it, and fq overwrites it. The nesting is one level deep (the copy
//! is never copied again), far from `XMIT_RECURSION_LIMIT`.
//!
//! Why the copy's own pass writes the time: `__bpf_tx_skb`
//! (net/core/filter.c) clears a copy's timestamp unless it is a mono
//! delivery time (`skb_clear_tstamp`), and marking it mono needs
//! `bpf_skb_set_tstamp` (Linux 5.18), which would keep this program — loss
//! included — from loading on older kernels. A plain `__sk_buff->tstamp`
//! write at egress (Linux 5.0) is stored as is (`bpf_convert_tstamp_write`
//! leaves the type alone at egress), which fq reads as a departure time;
//! what crosses a veth into another namespace has the timestamp of a
//! non-mono skb cleared (`skb_scrub_packet`), and loopback clears it too
//! (`loopback_xmit`), so no receiver mistakes it for a receive time.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{__sk_buff, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns,
        generated::{
            bpf_clone_redirect, bpf_set_hash, bpf_skb_load_bytes, bpf_skb_load_bytes_relative,
            bpf_skb_store_bytes,
        },
    },
};
use chaos_abi::net::{
    COPY_MARK, DIR_EGRESS, DIST_NORMAL, FLAG_FLOW_PER_PACKET, FLAG_SCHEDULE, JITTER_TABLE_SHIFT,
    JITTER_TABLE_SIZE, NetCounters, NetRule, direction_index,
};

use super::roll;
use crate::maps::{NET_JITTER_TABLE, NET_RATE_CLOCKS};

/// A timestamp the stack set further ahead than this is not a departure
/// time we understand (SO_TXTIME with CLOCK_TAI, say): schedule from now.
const OWN_TSTAMP_AHEAD_MAX_NS: u64 = 10_000_000_000;

/// What to do with the original packet.
pub enum Verdict {
    Pass,
    Drop,
}

#[inline(always)]
pub(super) fn prandom() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

/// Apply the rule's effects to a packet that matched and was not lost.
#[inline(always)]
pub fn apply(skb: *mut __sk_buff, rule: &NetRule, c: &mut NetCounters) -> Verdict {
    let duplicate = roll(rule.duplicate_threshold);
    if rule.flags & FLAG_SCHEDULE == 0 {
        // No departure times: the original goes on (owned by its socket, as
        // without chaos); a duplicate is a clone sent just before it.
        let mut injected = false;
        if duplicate {
            // The duplicate is an independent copy, with its own chance of
            // corruption (as netem re-enqueues its duplicate).
            let flip = if roll(rule.corrupt_threshold) { corrupt(skb) } else { None };
            if flip.is_some() {
                c.egress_corrupted += 1;
            }
            if send_copy(skb, 0) != 0 {
                c.egress_queue_dropped += 1;
            }
            // bpf_clone_redirect gave the original a private head
            // (`bpf_try_make_head_writable`): undoing the flip there leaves
            // the copy's bit flipped.
            if let Some(f) = flip {
                f.undo(skb);
            }
            c.egress_duplicated += 1;
            injected = true;
        }
        if roll(rule.corrupt_threshold) && corrupt(skb).is_some() {
            c.egress_corrupted += 1;
            injected = true;
        }
        if injected {
            c.egress_injected += 1;
        }
        return Verdict::Pass;
    }

    // Departure times: every copy is an orphaned clone (see the module
    // documentation); the original is dropped silently once they are sent.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a ctx field read at its own width.
    let own = unsafe { read_volatile(addr_of!((*skb).tstamp)) };
    let base = if own > now && own - now < OWN_TSTAMP_AHEAD_MAX_NS { own } else { now };
    if matches!(schedule_copy(skb, rule, c, now, base), Sent::NotMade) {
        // Fail open: no copy left, so dropping the original would turn the
        // delay into a loss (and, if the clone kept failing, a blackhole
        // until the deadline). The original goes on undelayed, counted.
        c.egress_copy_failed += 1;
        return Verdict::Pass;
    }
    if duplicate {
        schedule_copy(skb, rule, c, now, base);
        c.egress_duplicated += 1;
    }
    c.egress_injected += 1;
    Verdict::Drop
}

/// What became of one scheduled copy.
enum Sent {
    /// Handed to the device's qdisc (which may still have refused it for
    /// its packet limits, as a full queue on the path would: counted in
    /// `egress_queue_dropped`), or dropped on purpose by the rate limiter.
    Handled,
    /// `bpf_clone_redirect` failed before any qdisc saw a copy (a negative
    /// errno: the clone's allocation, `skb_do_redirect`'s checks): the
    /// packet exists only as the original.
    NotMade,
}

/// Send one scheduled copy: its own corruption and reorder rolls, then a
/// departure time from the rate limiter and the delay distribution.
#[inline(always)]
fn schedule_copy(skb: *mut __sk_buff, rule: &NetRule, c: &mut NetCounters, now: u64, base: u64) -> Sent {
    let flip = if roll(rule.corrupt_threshold) { corrupt(skb) } else { None };
    let at = if roll(rule.reorder_threshold) {
        // No departure time: fq sends it at once, ahead of the delayed
        // packets (with FLAG_FLOW_PER_PACKET it is a flow of its own, so no
        // delayed packet of its flow holds it back).
        c.egress_reordered += 1;
        0
    } else {
        // SAFETY: a ctx field read at its own width.
        let wire = u64::from(unsafe { read_volatile(addr_of!((*skb).wire_len)) });
        let Some(at) = departure(wire, direction_index(rule.slot, DIR_EGRESS), rule, now, base) else {
            c.egress_rate_dropped += 1;
            if let Some(f) = flip {
                f.undo(skb);
            }
            return Sent::Handled;
        };
        c.egress_delayed += 1;
        at
    };
    if rule.flags & FLAG_FLOW_PER_PACKET != 0 {
        // fq keys a socket-less packet's flow by `skb_get_hash()` (masked by
        // orphan_mask, which chaos's fq leaves whole), and a flow sends its
        // packets no earlier than its head's departure time; a hash of its
        // own makes this copy a flow of one, released at its own time.
        // SAFETY: helper on the skb the kernel handed us.
        unsafe { bpf_set_hash(skb, prandom()) };
    }
    if flip.is_some() {
        c.egress_corrupted += 1;
    }
    let sent = send_copy(skb, at);
    if let Some(f) = flip {
        f.undo(skb);
    }
    if sent < 0 {
        return Sent::NotMade;
    }
    if sent != 0 {
        // NET_XMIT_DROP / NET_XMIT_CN: the qdisc took the copy and dropped
        // it (fq's limits), a full queue's drop.
        c.egress_queue_dropped += 1;
    }
    Sent::Handled
}

/// The departure time of one copy of `bytes` on the link of rate clock
/// `clock` (one per attack and direction): after the rate limiter (if any),
/// plus the delay and its jitter. `None`: the rate limiter's backlog is
/// full.
#[inline(always)]
pub(super) fn departure(bytes: u64, clock: u32, rule: &NetRule, now: u64, base: u64) -> Option<u64> {
    let mut t = base;
    if rule.rate_bps != 0
        && let Some(clock) = NET_RATE_CLOCKS.get_ptr_mut(clock)
    {
        // Earliest departure time rate limiting, as Cilium's bandwidth
        // manager does (bpf/lib/edt.h, edt_sched_departure): one virtual
        // clock per attack says when the link is free again; a packet
        // leaves when its last bit has crossed it. CPUs race on the clock
        // without a lock, as in Cilium: two packets that read the same
        // value both leave at its end, which is benign (measured within 1%).
        // SAFETY: an array slot; concurrent plain accesses as above.
        let free_at = unsafe { read_volatile(clock) };
        let start = if free_at > t { free_at } else { t };
        let end = start + bytes * 8_000_000_000 / rule.rate_bps;
        // The link's buffer: beyond it the packet is dropped (silently,
        // like a full router queue), and the clock does not advance.
        if end - now > rule.rate_backlog_ns {
            return None;
        }
        // SAFETY: as above.
        unsafe { write_volatile(clock, end) };
        t = end;
    }
    let mut delay = rule.delay_ns as i64;
    if rule.jitter_ns != 0 {
        let jitter = rule.jitter_ns as i64;
        let offset = if rule.distribution == DIST_NORMAL {
            let q = NET_JITTER_TABLE.get(prandom() & (JITTER_TABLE_SIZE - 1)).copied().unwrap_or(0);
            // jitter < 2^34 ns and |q| < 2^18 (3.67 sd in Q16): the
            // product fits.
            (jitter * i64::from(q)) >> JITTER_TABLE_SHIFT
        } else {
            // Uniform in [-jitter, +jitter): 24 random bits times a span
            // below 2^35 fits in 64 bits.
            ((u64::from(prandom() >> 8) * (2 * rule.jitter_ns)) >> 24) as i64 - jitter
        };
        delay += offset;
    }
    // A negative delay sends at once, as netem clamps it.
    if delay > 0 {
        t += delay as u64;
    }
    Some(t)
}

/// Send a clone of the packet to the egress of its own device, marked so
/// that the program lets it pass when it comes by, with its departure time
/// (0: none, leave at once). Returns what `bpf_clone_redirect` did: 0, a
/// negative errno, or the qdisc's `NET_XMIT_DROP`.
#[inline(always)]
fn send_copy(skb: *mut __sk_buff, departure: u64) -> i64 {
    // SAFETY: ctx field accesses at their own width (each cb word is a u32
    // field); the helper acts on the skb the kernel handed us.
    unsafe {
        let cb = addr_of_mut!((*skb).cb);
        let mut saved = [0u32; 4];
        let mine = [COPY_MARK[0], COPY_MARK[1], departure as u32, (departure >> 32) as u32];
        for i in 0..4 {
            saved[i] = read_volatile(addr_of!((*cb)[i]));
            write_volatile(addr_of_mut!((*cb)[i]), mine[i]);
        }
        let ifindex = read_volatile(addr_of!((*skb).ifindex));
        let ret = bpf_clone_redirect(skb, ifindex, 0);
        for (i, word) in saved.iter().enumerate() {
            write_volatile(addr_of_mut!((*cb)[i]), *word);
        }
        ret
    }
}

/// A tagged packet that found no rule: if it is a copy this program sent,
/// give it its departure time and clear the marks (the caller passes it
/// either way).
#[inline(always)]
pub fn release_copy(skb: *mut __sk_buff) {
    // SAFETY: ctx field accesses at their own width.
    unsafe {
        let cb = addr_of_mut!((*skb).cb);
        if read_volatile(addr_of!((*cb)[0])) != COPY_MARK[0]
            || read_volatile(addr_of!((*cb)[1])) != COPY_MARK[1]
        {
            return;
        }
        let at = u64::from(read_volatile(addr_of!((*cb)[2])))
            | (u64::from(read_volatile(addr_of!((*cb)[3]))) << 32);
        if at != 0 {
            write_volatile(addr_of_mut!((*skb).tstamp), at);
        }
        for i in 0..4 {
            write_volatile(addr_of_mut!((*cb)[i]), 0);
        }
    }
    // The copy inherited the original's tag (`__copy_skb_header` copies
    // `mark`): it is ours, so clear it as on the original.
    super::untag(skb);
}

/// A flipped bit, to undo on the original after its copy left.
#[derive(Clone, Copy)]
pub(super) struct Flip {
    offset: u32,
    mask: u8,
}

impl Flip {
    #[inline(always)]
    pub(super) fn undo(self, skb: *mut __sk_buff) {
        let _ = xor_byte(skb, self.offset, self.mask);
    }
}

/// Flip one bit of the IP header so that the receiver must drop the packet,
/// as a bit error caught by a checksum is.
///
/// Not the payload: on veth and on NICs with checksum offload the L4
/// checksum of most packets is still to be computed after this hook
/// (CHECKSUM_PARTIAL), over the corrupted bytes, so the receiver would
/// accept them; netem calls `skb_checksum_help` first, which BPF cannot.
/// The IPv4 header checksum, though, is always verified in software
/// (`ip_rcv_core`, net/ipv4/ip_input.c: csum_error -> InCsumErrors and
/// InHdrErrors), and any single flipped bit fails it. So for IPv4 a random
/// bit of the 20-byte header outside the checksum field is flipped. IPv6
/// has no header checksum: one of the four version bits is flipped, which
/// `ipv6_rcv` rejects (Ip6InHdrErrors) — always caught, but not spread over
/// the header. GSO packets get a version bit too, IPv4 included: a NIC
/// doing TSO rewrites the IPv4 checksum of every segment it cuts, which
/// would turn another flipped bit into a valid, misdelivered packet.
#[inline(always)]
pub(super) fn corrupt(skb: *mut __sk_buff) -> Option<Flip> {
    let l3 = network_offset(skb)?;
    let mut first = [0u8; 1];
    // SAFETY: the helper bounds-checks against the skb and writes one byte.
    if unsafe { bpf_skb_load_bytes(skb as *const _, l3, first.as_mut_ptr().cast(), 1) } != 0 {
        return None;
    }
    let version = first[0] >> 4;
    // gso_segs (Linux 5.1) rather than gso_size (5.7): nothing else in the
    // program needs more than 5.1.
    // SAFETY: a ctx field read at its own width.
    let gso = unsafe { read_volatile(addr_of!((*skb).gso_segs)) } > 1;
    let r = prandom();
    let (byte, bit) = match version {
        4 if !gso => {
            // 18 header bytes: 0..=9 and 12..=19 (10 and 11 hold the checksum).
            let i = r % 18;
            (if i >= 10 { i + 2 } else { i }, (r >> 16) & 7)
        }
        4 | 6 => (0, 4 + (r & 3)),
        _ => return None,
    };
    let flip = Flip { offset: l3 + byte, mask: (1u32 << bit) as u8 };
    xor_byte(skb, flip.offset, flip.mask).then_some(flip)
}

#[inline(always)]
fn xor_byte(skb: *mut __sk_buff, offset: u32, mask: u8) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: the helpers bounds-check against the skb; store_bytes makes
    // the data writable first (unsharing a clone's head), flags 0 leaves
    // checksums alone.
    unsafe {
        if bpf_skb_load_bytes(skb as *const _, offset, b.as_mut_ptr().cast(), 1) != 0 {
            return false;
        }
        b[0] ^= mask;
        bpf_skb_store_bytes(skb, offset, b.as_ptr().cast(), 1, 0) == 0
    }
}

/// Where the IP header starts in the data `bpf_skb_store_bytes` addresses
/// (the link-layer header, if the device has one): the first of 0 (L3
/// devices), 14 (Ethernet) and 18 (an in-band VLAN tag) whose 8 bytes equal
/// those at the network header.
#[inline(always)]
pub(super) fn network_offset(skb: *mut __sk_buff) -> Option<u32> {
    let mut net = [0u8; 8];
    // SAFETY: the helper bounds-checks against the skb.
    if unsafe {
        bpf_skb_load_bytes_relative(skb as *const _, 0, net.as_mut_ptr().cast(), 8, BPF_HDR_START_NET)
    } != 0
    {
        return None;
    }
    for offset in [14u32, 0, 18] {
        let mut here = [0u8; 8];
        // SAFETY: as above.
        if unsafe { bpf_skb_load_bytes(skb as *const _, offset, here.as_mut_ptr().cast(), 8) } == 0
            && here == net
        {
            return Some(offset);
        }
    }
    None
}

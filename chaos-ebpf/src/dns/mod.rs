//! DNS errors (`dns-error`): a tc egress classifier on the devices of the
//! target's network namespaces answers the target's matching queries
//! itself, or drops them.
//!
//! **The answer.** A query leaving by a device is turned into its own reply
//! in place — Ethernet addresses, IP addresses and UDP ports swapped, the
//! DNS flags word rewritten (QR, RA, the RCODE) — and handed to the same
//! device's receive path with `bpf_redirect(ifindex, BPF_F_INGRESS)`. The
//! reply then takes `dev_forward_skb` (net/core/dev.c), whose
//! `eth_type_trans` finds its destination address, the query's source, to
//! be the device's own: a packet for this host. `ip_rcv_core` /
//! `ipv6_rcv` orphan it from the sending socket, and UDP delivers it to the
//! socket that asked, from the address and port it asked: glibc takes it
//! (`res_ourserver_p`, `res_queriesmatch` in resolv/res_send.c want a
//! configured server and the same question, and the question is kept: the
//! reply is the query, turned round).
//!
//! Loopback is the exception: `dev_forward_skb` drops the route the packet
//! carried, and a fresh input route refuses a 127/8 source on any device
//! (`ip_route_input_slow`, drop reason `IP_LOCALNET`, unless the
//! `route_localnet` sysctl is set). So a reply on loopback is transmitted
//! again instead (`bpf_redirect(1, 0)`): `loopback_xmit` hands it to the
//! receive path with the query's route, a local one, whose input is local
//! delivery. It passes this classifier again on the way: as a reply.
//!
//! **Checksums.** Swapping the addresses and ports leaves the IPv4 header
//! sum and the UDP sum unchanged (one's-complement sums commute); only the
//! flags word changes, which `bpf_l4_csum_replace` folds into the UDP sum.
//! For a packet whose checksum the device would have completed
//! (`CHECKSUM_PARTIAL`, what the stack hands loopback and veth) the helper
//! leaves it alone (`inet_proto_csum_replace2`, net/core/utils.c), and the
//! receive path trusts such a packet (`skb_csum_unnecessary`).
//!
//! **Which queries.** UDP to port 53, IPv4 without options or IPv6 without
//! extension headers, one question, opcode QUERY, a name without
//! compression pointers (a query's never has one). Anything else passes.
//! The name is read into a per-CPU scratch buffer, written backwards and
//! looked up in the attack's trie (see `chaos_abi::dns::NameKey`).
//!
//! **Cost.** Every packet of the device runs the program: a packet that is
//! not a UDP datagram to port 53 leaves after reading the protocol and
//! four bytes of headers; a query of another cgroup after the rule
//! lookup; only the target's queries have their name read.

use core::{
    mem::size_of,
    ptr::{addr_of, read_unaligned, read_volatile, write_unaligned},
};

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, TC_ACT_REDIRECT, TC_ACT_UNSPEC},
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns,
        generated::{bpf_l4_csum_replace, bpf_redirect, bpf_skb_ancestor_cgroup_id, bpf_skb_load_bytes},
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use chaos_abi::dns::{
    ACTION_DROP, DnsCounters, DnsRule, NAME_BYTES, NAME_KEY_FIXED_BITS, NAME_MATCH, NameKey,
};

pub mod tcp;

use crate::{
    cgroup::find_rule,
    maps::{DNS_COUNTERS, DNS_LEVELS, DNS_NAMES, DNS_RULES, DNS_SCRATCH},
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
pub(crate) const DNS_PORT: u16 = 53;
/// The DNS header: id, flags, and four counts (RFC 1035 §4.1.1).
pub(crate) const DNS_HLEN: usize = 12;
/// Flags: QR (a response), the opcode, RD (recursion desired), RA
/// (recursion available).
pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const FLAG_OPCODE: u16 = 0x7800;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
/// A label is at most 63 bytes; 0xc0 and up is a compression pointer
/// (RFC 1035 §4.1.4).
const MAX_LABEL: u8 = 63;
/// A name is at most 255 bytes, so at most 127 labels.
const MAX_LABELS: usize = 127;
pub(crate) const MAX_NAME: usize = 255;

/// The per-CPU scratch space: the name as read, and the trie key built
/// from it (both too large for the 512-byte stack together).
#[repr(C)]
pub struct Scratch {
    pub(crate) wire: [u8; 256],
    key: Key<NameKey>,
}

/// Where a query's headers are.
struct Query {
    /// The IP header's offset in the packet (after Ethernet's).
    ip: usize,
    v6: bool,
    udp: usize,
    dns: usize,
}

/// Decide for one packet leaving a device: pass it (`TC_ACT_UNSPEC`, the
/// next program runs as if we were not there), or answer or drop a
/// matching query (`TC_ACT_REDIRECT`).
#[inline(always)]
pub fn decide(ctx: &TcContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let Some(q) = query(ctx) else { return TC_ACT_UNSPEC };
    let Some(levels) = DNS_LEVELS.get(0) else { return TC_ACT_UNSPEC };
    if levels.mask == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: the helper only reads the skb the kernel handed us.
    let ancestor = |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
    let Some(rule) = find_rule(&DNS_RULES, levels, ancestor).copied() else { return TC_ACT_UNSPEC };
    let Some(counters) = DNS_COUNTERS.get_ptr_mut(rule.slot) else { return TC_ACT_UNSPEC };
    // SAFETY: this CPU's slot; BPF programs run with migration disabled.
    let c: &mut DnsCounters = unsafe { &mut *counters };
    // The kernel-side deadline: whatever the loader does, the rule is
    // inert from here on.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return TC_ACT_UNSPEC;
    }
    c.queries += 1;
    match name_matches(ctx, q.dns + DNS_HLEN, rule.slot) {
        Some(true) => {}
        Some(false) => return TC_ACT_UNSPEC,
        None => {
            c.unparsed += 1;
            return TC_ACT_UNSPEC;
        }
    }
    c.matched += 1;
    // SAFETY: helper without arguments.
    if rule.threshold == 0 || u64::from(unsafe { bpf_get_prandom_u32() }) >= rule.threshold {
        return TC_ACT_UNSPEC;
    }
    act(ctx, skb, &q, &rule, c)
}

/// Drop the query, or turn it into its answer and send that back in.
#[inline(always)]
fn act(ctx: &TcContext, skb: *mut __sk_buff, q: &Query, rule: &DnsRule, c: &mut DnsCounters) -> i32 {
    if rule.action == ACTION_DROP {
        c.dropped += 1;
        // As net-loss drops: a redirect to no device frees the packet, and
        // the sender sees a successful send (see net_egress's
        // `drop_silently`).
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(0, 0) };
        return TC_ACT_REDIRECT;
    }
    if !answer(ctx, skb, q, rule.action as u16) {
        // Only if the packet changed under us: it may be half turned
        // round, so it must not leave.
        c.dropped += 1;
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(0, 0) };
        return TC_ACT_REDIRECT;
    }
    c.answered += 1;
    // SAFETY: a ctx field read at its own width.
    let ifindex = unsafe { read_volatile(addr_of!((*skb).ifindex)) };
    // Loopback delivers what it transmits, keeping the route of the query
    // (see the module's comment); every other device is entered by its
    // receive path.
    let flags = if ifindex == LOOPBACK_IFINDEX { 0 } else { BPF_F_INGRESS };
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, u64::from(flags)) as i32 }
}

/// The flags word of the answer to a query with `query`'s: a response,
/// recursion desired as asked, recursion available, and `rcode`.
#[inline(always)]
pub(crate) fn reply_flags(query: u16, rcode: u16) -> u16 {
    FLAG_QR | (query & FLAG_RD) | FLAG_RA | (rcode & 0xf)
}

/// Every namespace's loopback device has this index
/// (`LOOPBACK_IFINDEX`, include/net/net_namespace.h).
const LOOPBACK_IFINDEX: u32 = 1;

/// A pointer to a `T` at `offset` in the packet's linear data, checked
/// against its end (the verifier wants the check before the access).
#[inline(always)]
fn at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: `at` checked the bounds; the packet need not be aligned.
    at::<T>(ctx, offset).map(|p| unsafe { read_unaligned(p) })
}

/// The headers of a DNS query over UDP, if this is one; else `None`, as
/// cheaply as can be: most packets are not.
#[inline(always)]
fn query(ctx: &TcContext) -> Option<Query> {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: a ctx field read at its own width.
    let protocol = u16::from_be(unsafe { read_volatile(addr_of!((*skb).protocol)) } as u16);
    let v6 = match protocol {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return None,
    };
    // The device's header must be Ethernet's (the loader attaches to
    // Ethernet and loopback devices only): its type says the same.
    if u16::from_be(read::<u16>(ctx, 12)?) != protocol {
        return None;
    }
    let ip = ETH_HLEN;
    let udp = if v6 {
        if read::<u8>(ctx, ip + 6)? != IPPROTO_UDP {
            return None;
        }
        ip + 40
    } else {
        // No options (ihl 5), not a fragment.
        if read::<u8>(ctx, ip)? != 0x45 || read::<u8>(ctx, ip + 9)? != IPPROTO_UDP {
            return None;
        }
        if u16::from_be(read::<u16>(ctx, ip + 6)?) & 0x3fff != 0 {
            return None;
        }
        ip + 20
    };
    if u16::from_be(read::<u16>(ctx, udp + 2)?) != DNS_PORT {
        return None;
    }
    let dns = udp + 8;
    let flags = u16::from_be(read::<u16>(ctx, dns + 2)?);
    let questions = u16::from_be(read::<u16>(ctx, dns + 4)?);
    if flags & (FLAG_QR | FLAG_OPCODE) != 0 || questions != 1 {
        return None;
    }
    Some(Query { ip, v6, udp, dns })
}

/// Whether the question's name at `offset` matches one of the attack's
/// patterns; `None` when it cannot be read.
#[inline(always)]
fn name_matches(ctx: &TcContext, offset: usize, slot: u32) -> Option<bool> {
    let s = scratch()?;
    // What the packet has from the name on, up to a name's maximum; at
    // least a one-byte name and the type and class.
    let avail = (ctx.len() as usize).checked_sub(offset)?;
    let len = if avail > MAX_NAME { MAX_NAME } else { avail };
    if len < 5 {
        return None;
    }
    // SAFETY: the helper checks the packet's bounds and writes at most
    // `len` (≤ 255) bytes into the 256-byte buffer.
    if unsafe { bpf_skb_load_bytes(ctx.as_ptr(), offset as u32, s.wire.as_mut_ptr().cast(), len as u32) } != 0
    {
        return None;
    }
    wire_matches(s, len, slot)
}

/// This CPU's scratch space.
#[inline(always)]
pub(crate) fn scratch() -> Option<&'static mut Scratch> {
    let s = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile
    // (BPF programs run with migration disabled, and one at a time per
    // CPU in the contexts that read it: tc and sendmsg).
    Some(unsafe { &mut *s })
}

/// Whether the name read into `s.wire` (its first `len` bytes, at most
/// [`MAX_NAME`]) matches one of the slot's patterns; `None` when it is not
/// a name.
#[inline(always)]
pub(crate) fn wire_matches(s: &mut Scratch, len: usize, slot: u32) -> Option<bool> {
    // Walk the labels, writing `.` over each length byte; `end` is where
    // the closing zero is.
    let mut pos = 0usize;
    let mut end = None;
    for _ in 0..MAX_LABELS + 1 {
        if pos >= len {
            return None;
        }
        let l = s.wire[pos & 0xff];
        if l == 0 {
            end = Some(pos);
            break;
        }
        if l > MAX_LABEL {
            return None;
        }
        s.wire[pos & 0xff] = b'.';
        pos += l as usize + 1;
    }
    let n = end?;
    // Backwards and in lower case (resolvers randomise the case of the
    // names they send: draft-vixie-dnsext-dns0x20).
    s.key.data.slot_be = slot.to_be();
    // An iterator, not an index: the compiler keeps no bounds check (a
    // panic path the verifier would refuse) in the loop. The closing zero
    // is written in the loop too: the verifiers of 5.10 and 6.1 followed
    // an indexed write after the loop down a branch where n was both
    // >= 252 and <= 251, and refused it as a scalar dereference (6.18's
    // prunes that branch).
    for (i, out) in s.key.data.name.iter_mut().enumerate() {
        if i > n {
            break;
        }
        *out = if i == n {
            0
        } else {
            let b = s.wire[(n - 1 - i) & 0xff];
            if b.is_ascii_uppercase() { b | 0x20 } else { b }
        };
    }
    let kept = if n < NAME_BYTES { n + 1 } else { NAME_BYTES };
    s.key.prefix_len = NAME_KEY_FIXED_BITS + 8 * kept as u32;
    Some(DNS_NAMES.get(&s.key).is_some_and(|v| *v == NAME_MATCH))
}

/// Swap `N` bytes at `a` with those at `b` in the packet.
#[inline(always)]
fn swap<const N: usize>(ctx: &TcContext, a: usize, b: usize) -> Option<()> {
    let pa = at::<[u8; N]>(ctx, a)?;
    let pb = at::<[u8; N]>(ctx, b)?;
    // SAFETY: both checked against the packet's end; tc programs may write
    // packet data (the verifier makes a cloned skb's head private first:
    // `bpf_unclone_prologue`, net/core/filter.c).
    unsafe {
        let (va, vb) = (read_unaligned(pa), read_unaligned(pb));
        write_unaligned(pa, vb);
        write_unaligned(pb, va);
    }
    Some(())
}

/// Turn the query into its answer with `rcode`, in place. False when the
/// packet could not be written, which `query` ruled out (every offset
/// written is before the DNS header it read).
#[inline(always)]
fn answer(ctx: &TcContext, skb: *mut __sk_buff, q: &Query, rcode: u16) -> bool {
    let Some(flags) = at::<u16>(ctx, q.dns + 2) else { return false };
    // SAFETY: checked by `at`.
    let old = unsafe { read_unaligned(flags) };
    let new = reply_flags(u16::from_be(old), rcode).to_be();
    let (addr, addr_len) = if q.v6 { (q.ip + 8, 16) } else { (q.ip + 12, 4) };
    let swapped = swap::<6>(ctx, 0, 6).is_some()
        && if addr_len == 16 {
            swap::<16>(ctx, addr, addr + 16).is_some()
        } else {
            swap::<4>(ctx, addr, addr + 4).is_some()
        }
        && swap::<2>(ctx, q.udp, q.udp + 2).is_some();
    if !swapped {
        return false;
    }
    let Some(flags) = at::<u16>(ctx, q.dns + 2) else { return false };
    // SAFETY: checked by `at`.
    unsafe { write_unaligned(flags, new) };
    // Last: the helper may move the packet, which invalidates the
    // pointers above. BPF_F_MARK_MANGLED_0 keeps an IPv4 sum of zero (none
    // computed) zero, and turns a computed zero into 0xffff.
    // SAFETY: plain helper call on our skb.
    let ret = unsafe {
        bpf_l4_csum_replace(
            skb,
            (q.udp + 6) as u32,
            u64::from(old),
            u64::from(new),
            u64::from(BPF_F_MARK_MANGLED_0) | size_of::<u16>() as u64,
        )
    };
    ret == 0
}

//! Incoming connections to the target's listeners (`net-refuse
//! --direction incoming`): an `sk_lookup` program in each network namespace
//! the target's processes live in.
//!
//! The kernel runs it when a packet has no established socket and is about
//! to be delivered to a listener (`inet_lookup_run_sk_lookup`, called from
//! `__inet_lookup_listener`, net/ipv4/inet_hashtables.c; IPv6 alike), with
//! the packet's addresses and ports, before the listener is chosen. It
//! cannot ask which socket that would be, so the loader lists the target's
//! listeners in `CONN_LISTENERS` (see `chaos_abi::conn::ListenerKey`).
//! Returning `SK_DROP` makes the lookup fail with -ECONNREFUSED
//! (`bpf_sk_lookup_run_v4`, include/linux/filter.h): TCP then answers the
//! SYN as it answers one for a closed port, with a reset
//! (`tcp_v4_send_reset` from `tcp_v4_rcv`'s no_tcp_socket), and the client's
//! connect fails with ECONNREFUSED. Established connections are found
//! before the program runs, and the final ACK of a handshake finds its
//! request socket: both untouched.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::SkLookupContext,
};
use chaos_abi::conn::{AF_INET, AF_INET6, CALL_INCOMING, ConnRule, ListenerKey, PASS};

use super::{Ip, peer_matches};
use crate::maps::{CONN_COUNTERS, CONN_LISTENERS, CONN_RULES};

/// `IPPROTO_TCP` (include/uapi/linux/in.h).
const IPPROTO_TCP: u32 = 6;

const ALLOW: u32 = sk_action::SK_PASS;
const REFUSE: u32 = sk_action::SK_DROP;

/// One 32-bit field of the lookup context.
#[inline(always)]
fn field(p: *const u32) -> u32 {
    // SAFETY: `p` points into the context the kernel handed us.
    unsafe { read_volatile(p) }
}

/// Decide for one incoming connection: `SK_PASS` (the kernel goes on with
/// its own lookup) or `SK_DROP` (refused).
#[inline(always)]
pub fn decide(ctx: &SkLookupContext) -> u32 {
    let l: *mut bpf_sk_lookup = ctx.lookup;
    // SAFETY (every read below): fields of the context, read at their
    // own 4-byte width.
    if field(unsafe { addr_of!((*l).protocol) }) != IPPROTO_TCP {
        return ALLOW;
    }
    let ip = match field(unsafe { addr_of!((*l).family) }) {
        2 => Ip::V4,
        10 => Ip::V6,
        _ => return ALLOW,
    };
    let mut key = ListenerKey {
        port: field(unsafe { addr_of!((*l).local_port) }) as u16,
        protocol: IPPROTO_TCP as u8,
        ..Default::default()
    };
    if ip == Ip::V4 {
        key.family = AF_INET;
        key.addr[0] = field(unsafe { addr_of!((*l).local_ip4) });
    } else {
        key.family = AF_INET6;
        for i in 0..4 {
            key.addr[i] = field(unsafe { addr_of!((*l).local_ip6[i]) });
        }
    }
    // The exact address first, as the kernel's own lookup: a socket bound
    // to it wins over one bound to the wildcard.
    // SAFETY: entries are replaced whole by the loader, never in place.
    let target = match unsafe { CONN_LISTENERS.get(&key) } {
        Some(t) => *t,
        None => {
            key.addr = [0; 4];
            // SAFETY: as above.
            match unsafe { CONN_LISTENERS.get(&key) } {
                Some(t) => *t,
                None => return ALLOW,
            }
        }
    };
    if target == PASS {
        return ALLOW;
    }
    // SAFETY: as above.
    let Some(rule) = (unsafe { CONN_RULES.get(&target) }) else { return ALLOW };
    let rule: ConnRule = *rule;
    let Some(counters) = CONN_COUNTERS.get_ptr_mut(rule.slot) else { return ALLOW };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled.
    let c = unsafe { &mut *counters };
    // The kernel-side deadline: from here on the rule is inert.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return ALLOW;
    }
    if rule.calls & CALL_INCOMING == 0
        || !peer_matches(
            &rule.peer,
            ip,
            || field(unsafe { addr_of!((*l).remote_ip4) }),
            |i| field(unsafe { addr_of!((*l).remote_ip6[i]) }),
        )
    {
        return ALLOW;
    }
    c.incoming_matched += 1;
    // SAFETY: helper without arguments.
    if u64::from(unsafe { bpf_get_prandom_u32() }) >= rule.threshold {
        return ALLOW;
    }
    c.incoming_refused += 1;
    REFUSE
}

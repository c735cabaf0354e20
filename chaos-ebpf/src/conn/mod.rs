//! What the connection fault programs share: finding the caller's rule,
//! matching the call's destination, and the refusal with its counters.
//! Every error along the way lets the call through.
//!
//! The programs are cgroup sock_addr programs attached to each target
//! cgroup: the kernel runs them for sockets whose cgroup lies in that
//! subtree (`sk_cgrp_data`, fixed when the socket was created), with the
//! destination the caller passed, before anything is sent
//! (`__cgroup_bpf_run_filter_sock_addr`, kernel/bpf/cgroup.c; TCP:
//! `tcp_v4_pre_connect`, net/ipv4/tcp_ipv4.c; UDP: `udp_pre_connect` and
//! `udp_sendmsg`, net/ipv4/udp.c). The rule is the calling task's, found
//! with `bpf_get_current_ancestor_cgroup_id`, which sock_addr programs
//! may call since Linux 5.7 (0f09abd105da, sock_addr_func_proto in
//! net/core/filter.c): connect and sendmsg run in the caller's context.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, generated::bpf_get_current_ancestor_cgroup_id},
    programs::SockAddrContext,
};
use chaos_abi::{
    conn::{CALL_CONNECT, CALL_SENDMSG, ConnCounters, ConnRule, EPERM},
    net::{FAMILY_ANY, FAMILY_V4, FAMILY_V6, NetPeer},
};

pub mod incoming;

use crate::{
    cgroup::find_rule,
    maps::{CONN_COUNTERS, CONN_LEVELS, CONN_RULES},
};

/// cgroup sock_addr return codes: 1 lets the call proceed; 0 fails it,
/// with EPERM or the errno set by `bpf_set_retval` (`bpf_prog_run_array_cg`,
/// kernel/bpf/cgroup.c).
pub const ALLOW: i32 = 1;
pub const REFUSE: i32 = 0;

/// The call a hook saw.
#[derive(Clone, Copy)]
pub enum Call {
    Connect,
    Sendmsg,
}

/// How a program tells the caller which errno: `bpf_set_retval`, which
/// cgroup sock_addr programs may call since Linux 6.1 (bed89185af0d,
/// "bpf: Use cgroup_{common,current}_func_proto in more hooks"), or not at
/// all (EPERM): the program for older kernels must not contain the call,
/// since their verifier rejects an unknown helper.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    SetRetval,
    EpermOnly,
}

/// The address family of a hook's sockets: connect4 and sendmsg4 programs
/// may read only `user_ip4`, the IPv6 hooks only `user_ip6`
/// (sock_addr_is_valid_access, net/core/filter.c), so each program is
/// built for one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    V4,
    V6,
}

/// Decide for one call: [`ALLOW`] or [`REFUSE`].
#[inline(always)]
pub fn decide(ctx: &SockAddrContext, ip: Ip, call: Call, errno: Errno) -> i32 {
    let Some(levels) = CONN_LEVELS.get(0) else { return ALLOW };
    if levels.mask == 0 {
        return ALLOW;
    }
    // SAFETY: helper with a plain integer argument.
    let ancestor = |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) };
    let Some(rule) = find_rule(&CONN_RULES, levels, ancestor) else { return ALLOW };
    let rule: ConnRule = *rule;
    let Some(counters) = CONN_COUNTERS.get_ptr_mut(rule.slot) else { return ALLOW };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled, so
    // nothing else on this CPU touches it while we do.
    let c: &mut ConnCounters = unsafe { &mut *counters };

    // The kernel-side deadline: from here on the rule is inert, whatever
    // the loader does.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return ALLOW;
    }
    let bit = match call {
        Call::Connect => CALL_CONNECT,
        Call::Sendmsg => CALL_SENDMSG,
    };
    if rule.calls & bit == 0 || !destination_matches(ctx.sock_addr, ip, &rule) {
        return ALLOW;
    }
    match call {
        Call::Connect => c.connect_matched += 1,
        Call::Sendmsg => c.sendmsg_matched += 1,
    }
    // SAFETY: helper without arguments.
    if u64::from(unsafe { bpf_get_prandom_u32() }) >= rule.threshold {
        return ALLOW;
    }
    match call {
        Call::Connect => c.connect_refused += 1,
        Call::Sendmsg => c.sendmsg_refused += 1,
    }
    if errno == Errno::SetRetval && rule.errno != EPERM && rule.errno > 0 && rule.errno < 4096 {
        // SAFETY: helper with a plain integer argument.
        unsafe { aya_ebpf::helpers::generated::bpf_set_retval(-(rule.errno as i32)) };
    }
    REFUSE
}

/// One 32-bit field of the context, read at its own width (the verifier
/// allows `user_ip6` and `user_port` only as 4-byte loads on older
/// kernels: sock_addr_is_valid_access, net/core/filter.c).
#[inline(always)]
fn field(p: *const u32) -> u32 {
    // SAFETY: `p` points into the context the kernel handed us.
    unsafe { read_volatile(p) }
}

/// Destination network, port and protocol. `user_ip4`, `user_ip6` and
/// `user_port` are in network byte order, as in the caller's sockaddr.
#[inline(always)]
fn destination_matches(sa: *mut bpf_sock_addr, ip: Ip, rule: &ConnRule) -> bool {
    if rule.protocol != 0 {
        // SAFETY: a context field.
        let protocol = field(unsafe { addr_of!((*sa).protocol) });
        if protocol != u32::from(rule.protocol) {
            return false;
        }
    }
    if rule.port != 0 {
        // SAFETY: as above.
        let port = field(unsafe { addr_of!((*sa).user_port) }) as u16;
        if u16::from_be(port) != rule.port {
            return false;
        }
    }
    // SAFETY (both closures): context fields, element by element.
    peer_matches(
        &rule.peer,
        ip,
        || field(unsafe { addr_of!((*sa).user_ip4) }),
        |i| field(unsafe { addr_of!((*sa).user_ip6[i]) }),
    )
}

/// Whether an address is in the rule's network. The address is read
/// through `ip4` or `ip6` (word `i`, network byte order), and only the one
/// `ip` says the context has: the verifier refuses a read of the other
/// family's field in some program types.
#[inline(always)]
pub fn peer_matches(peer: &NetPeer, ip: Ip, ip4: impl Fn() -> u32, ip6: impl Fn(usize) -> u32) -> bool {
    if peer.family == FAMILY_ANY {
        return true;
    }
    if ip == Ip::V4 {
        return peer.family == FAMILY_V4 && ip4() & peer.mask[0] == peer.addr[0];
    }
    if peer.family == FAMILY_V4 {
        // ::ffff:a.b.c.d, the IPv4-mapped form (RFC 4291 2.5.5.2), what a
        // dual-stack socket connects to for an IPv4 peer.
        return ip6(0) == 0
            && ip6(1) == 0
            && ip6(2) == 0x0000_ffffu32.to_be()
            && ip6(3) & peer.mask[0] == peer.addr[0];
    }
    peer.family == FAMILY_V6
        && ip6(0) & peer.mask[0] == peer.addr[0]
        && ip6(1) & peer.mask[1] == peer.addr[1]
        && ip6(2) & peer.mask[2] == peer.addr[2]
        && ip6(3) & peer.mask[3] == peer.addr[3]
}

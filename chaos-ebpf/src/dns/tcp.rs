//! DNS over TCP (`dns-error`): the target's TCP connections to port 53 are
//! put in a sockhash when they are established, and an sk_msg program
//! sees each message they send before TCP does.
//!
//! **The answer.** A matching query is turned into its answer in place (the
//! flags word, as over UDP) and redirected to the *ingress* queue of the
//! socket that sent it (`bpf_msg_redirect_hash` with `BPF_F_INGRESS`:
//! `tcp_bpf_sendmsg_redir` → `bpf_tcp_ingress`, net/ipv4/tcp_bpf.c). The
//! client reads it as the server's reply: a socket in a sockmap reads its
//! psock's ingress queue before the TCP receive queue (`tcp_bpf_recvmsg`),
//! and `poll` reports it readable (`tcp_bpf_sock_is_readable`, Linux 5.15).
//! Nothing reaches the wire: the connection's sequence numbers do not move,
//! so the server sees a connection that asked nothing, and closes cleanly
//! when the client does. The length prefix stays right: the answer is the
//! query, turned round, and as long.
//!
//! **No answer.** The query's bytes are removed (`bpf_msg_pop_data`) and
//! what is left, nothing, is passed: `send` succeeds and the client waits,
//! as for a server that never answers. (Where the kernel will not remove a
//! message's last byte, Debian's 5.10, that byte is sent: the server waits
//! for the rest of a length.) Nothing is held back by chaos, so nothing is
//! held past the rule's deadline.
//!
//! **Which messages.** One query per `send` (glibc's `writev` of length and
//! message, musl, dig, Python, Go): a two-byte length, then the message. A
//! send with only part of a message (a client writing the length apart)
//! passes, and so does a send with more than one (pipelined queries,
//! counted as unparsed).
//!
//! **Whose connections.** The sock_ops program is attached to the target's
//! cgroups only, so only their connections enter the map; the rule is found
//! from the sending task's cgroup (sendmsg runs in the task's context),
//! through bpf_get_current_ancestor_cgroup_id. Connections established before
//! the attack are not in the map, and are not acted on.

use core::ptr::{addr_of, read_unaligned, read_volatile, write_unaligned};

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_F_INGRESS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock_ops, sk_action, sk_msg_md,
    },
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_msg_pop_data, bpf_msg_pull_data, bpf_probe_read_kernel,
        },
    },
    programs::{SkMsgContext, SockOpsContext},
};
use chaos_abi::dns::{ACTION_DROP, DnsCounters, SockKey};

use super::{DNS_HLEN, DNS_PORT, FLAG_OPCODE, FLAG_QR, MAX_NAME, reply_flags, scratch, wire_matches};
use crate::{
    cgroup::find_rule,
    maps::{DNS_COUNTERS, DNS_LEVELS, DNS_RULES, DNS_TCP_SOCKS},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// The two-byte length before each message over TCP (RFC 1035 §4.2.2).
const PREFIX: usize = 2;
const SK_PASS: u32 = sk_action::SK_PASS;

/// sock_ops: put a connection the target has just established to port 53
/// in the map. Always returns 1 (the return value matters only for the
/// ops that ask for a reply, `tcp_call_bpf`).
#[inline(always)]
pub fn track(ctx: &SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // `remote_port` is the network-order port in the upper half on a
    // little-endian machine (the conversion shifts it:
    // sock_ops_convert_ctx_access, net/core/filter.c); accept the lower
    // half too, in case a kernel does not shift.
    let port = ctx.remote_port();
    if u32::from_be(port) != u32::from(DNS_PORT) && port != u32::from(DNS_PORT.to_be()) {
        return 1;
    }
    let ops: *mut bpf_sock_ops = ctx.ops;
    // SAFETY: ctx fields, read at their own width.
    let key = unsafe {
        key(
            read_volatile(addr_of!((*ops).family)),
            read_volatile(addr_of!((*ops).local_port)),
            read_volatile(addr_of!((*ops).remote_port)),
            || [read_volatile(addr_of!((*ops).local_ip4)), 0, 0, 0],
            || [read_volatile(addr_of!((*ops).remote_ip4)), 0, 0, 0],
            || read_volatile(addr_of!((*ops).local_ip6)),
            || read_volatile(addr_of!((*ops).remote_ip6)),
        )
    };
    let Some(mut key) = key else { return 1 };
    // SAFETY: `ops` is the context the kernel handed us.
    // A full map, or a socket the kernel will not take: the connection
    // is simply not acted on.
    let _ = DNS_TCP_SOCKS.update(&mut key, unsafe { &mut *ops }, u64::from(BPF_ANY));
    1
}

/// The key of a connection, from `family`, the ports and the addresses
/// (read only for the connection's family: a ctx field of the other one
/// may read as anything).
#[inline(always)]
fn key(
    family: u32,
    local_port: u32,
    remote_port: u32,
    local4: impl FnOnce() -> [u32; 4],
    remote4: impl FnOnce() -> [u32; 4],
    local6: impl FnOnce() -> [u32; 4],
    remote6: impl FnOnce() -> [u32; 4],
) -> Option<SockKey> {
    let (local, remote) = match family {
        AF_INET => (local4(), remote4()),
        AF_INET6 => (local6(), remote6()),
        _ => return None,
    };
    Some(SockKey { family, local_port, remote_port, _pad: 0, local, remote })
}

/// sk_msg: answer, hold back or pass one message the target sends on a
/// connection in the map.
#[inline(always)]
pub fn decide(ctx: &SkMsgContext) -> u32 {
    let Some(levels) = DNS_LEVELS.get(0) else { return SK_PASS };
    if levels.mask == 0 {
        return SK_PASS;
    }
    // The helper itself, not `current_ancestor`'s reads of the task (for
    // tracing programs before 5.14): the capability probe checks that
    // sk_msg programs may call it, which Debian's 5.10 already allows.
    // SAFETY: helper without pointer arguments.
    let ancestor = |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) };
    let Some(rule) = find_rule(&DNS_RULES, levels, ancestor).copied() else { return SK_PASS };
    let Some(counters) = DNS_COUNTERS.get_ptr_mut(rule.slot) else { return SK_PASS };
    // SAFETY: this CPU's slot; BPF programs run with migration disabled.
    let c: &mut DnsCounters = unsafe { &mut *counters };
    let msg = ctx.msg;
    let size = ctx.size() as usize;
    // The prefix, the header, a name and its type and class: what the
    // decision reads, made contiguous (a message may span pages).
    let want = PREFIX + DNS_HLEN + MAX_NAME + 4;
    let want = if size < want { size } else { want };
    if want < PREFIX {
        return SK_PASS;
    }
    // SAFETY: the helper checks its range against the message.
    if unsafe { bpf_msg_pull_data(msg, 0, want as u32, 0) } != 0 {
        return SK_PASS;
    }
    let Some(length) = read::<u16>(ctx, 0) else { return SK_PASS };
    let whole = PREFIX + usize::from(u16::from_be(length));
    // A send with part of a message (the length alone, as a client that
    // writes length and message apart sends it) passes, and so does the
    // rest: gathering them (bpf_msg_cork_bytes) loses the query on
    // Debian's 5.10, whatever its name, and a lost lookup of a name the
    // attack does not name is worse than a missed one.
    if whole > size || size < PREFIX + DNS_HLEN + 5 {
        return SK_PASS;
    }
    let Some(flags) = read::<u16>(ctx, PREFIX + 2) else { return SK_PASS };
    let Some(questions) = read::<u16>(ctx, PREFIX + 4) else { return SK_PASS };
    if u16::from_be(flags) & (FLAG_QR | FLAG_OPCODE) != 0 || u16::from_be(questions) != 1 {
        return SK_PASS;
    }
    // The kernel-side deadline: whatever the loader does, the rule is
    // inert from here on.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        c.expired += 1;
        return SK_PASS;
    }
    c.queries += 1;
    if whole < size {
        c.unparsed += 1;
        return SK_PASS;
    }
    match name_matches(ctx, PREFIX + DNS_HLEN, rule.slot) {
        Some(true) => {}
        Some(false) => return SK_PASS,
        None => {
            c.unparsed += 1;
            return SK_PASS;
        }
    }
    c.matched += 1;
    // SAFETY: helper without arguments.
    if rule.threshold == 0 || u64::from(unsafe { bpf_get_prandom_u32() }) >= rule.threshold {
        return SK_PASS;
    }
    if rule.action == ACTION_DROP {
        // Remove the query. Before Linux 6.x the helper cannot remove a
        // message's last byte (Debian's 5.10 refuses `start + len >=
        // size`); there that byte is sent, and the server waits for the
        // rest of a length as the client waits for an answer.
        // SAFETY: the helper checks the range against the message.
        let gone = unsafe {
            bpf_msg_pop_data(msg, 0, size as u32, 0) == 0 || bpf_msg_pop_data(msg, 0, size as u32 - 1, 0) == 0
        };
        if gone {
            c.dropped += 1;
        }
        return SK_PASS;
    }
    answer(ctx, msg, rule.action as u16, c)
}

/// Turn the query into its answer and put it in the sender's own receive
/// queue; pass it unchanged if it cannot be.
#[inline(always)]
fn answer(ctx: &SkMsgContext, msg: *mut sk_msg_md, rcode: u16, c: &mut DnsCounters) -> u32 {
    let Some(mut key) = msg_key(msg) else { return SK_PASS };
    let Some(flags) = at::<u16>(ctx, PREFIX + 2) else { return SK_PASS };
    // SAFETY: checked by `at`; sk_msg programs may write message data
    // (may_access_direct_pkt_data, kernel/bpf/verifier.c).
    unsafe {
        let query = u16::from_be(read_unaligned(flags));
        write_unaligned(flags, reply_flags(query, rcode).to_be());
    }
    let verdict = DNS_TCP_SOCKS.redirect_msg(ctx, &mut key, u64::from(BPF_F_INGRESS)) as u32;
    if verdict == SK_PASS {
        c.answered += 1;
    }
    // SK_DROP if the socket left the map meanwhile (it is closing): the
    // send then fails, as it would on a closed connection.
    verdict
}

/// The sending connection's key, read as [`track`] read it.
#[inline(always)]
fn msg_key(msg: *mut sk_msg_md) -> Option<SockKey> {
    // SAFETY: ctx fields, read at their own width.
    unsafe {
        key(
            read_volatile(addr_of!((*msg).family)),
            read_volatile(addr_of!((*msg).local_port)),
            read_volatile(addr_of!((*msg).remote_port)),
            || [read_volatile(addr_of!((*msg).local_ip4)), 0, 0, 0],
            || [read_volatile(addr_of!((*msg).remote_ip4)), 0, 0, 0],
            || read_volatile(addr_of!((*msg).local_ip6)),
            || read_volatile(addr_of!((*msg).remote_ip6)),
        )
    }
}

/// Whether the question's name at `offset` matches one of the attack's
/// patterns; `None` when it cannot be read.
#[inline(always)]
fn name_matches(ctx: &SkMsgContext, offset: usize, slot: u32) -> Option<bool> {
    let s = scratch()?;
    let (start, end) = (ctx.data(), ctx.data_end());
    let avail = end.saturating_sub(start + offset);
    let len = if avail > MAX_NAME { MAX_NAME } else { avail };
    if len < 5 {
        return None;
    }
    // sk_msg programs have no bpf_skb_load_bytes; a loop of direct reads
    // makes the verifier walk the rest of the program once per packet
    // range it learns (one per byte), so the pulled bytes are copied with
    // bpf_probe_read_kernel (an sk_msg program may call it from Linux 5.x
    // with CAP_PERFMON: bpf_base_func_proto, net/core/filter.c; the
    // capability probe calls it too).
    // SAFETY: the source is the message's pulled, linear data, checked to
    // hold `len` bytes at `offset`; the helper never faults, and writes at
    // most `len` (≤ 255) bytes into the 256-byte buffer.
    let copied = unsafe {
        bpf_probe_read_kernel(
            s.wire.as_mut_ptr().cast(),
            (len & 0xff) as u32,
            (start + offset) as *const core::ffi::c_void,
        )
    };
    if copied != 0 {
        return None;
    }
    wire_matches(s, len, slot)
}

/// A pointer to a `T` at `offset` in the message's pulled data, checked
/// against its end.
#[inline(always)]
fn at<T>(ctx: &SkMsgContext, offset: usize) -> Option<*mut T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &SkMsgContext, offset: usize) -> Option<T> {
    // SAFETY: `at` checked the bounds; the data need not be aligned.
    at::<T>(ctx, offset).map(|p| unsafe { read_unaligned(p) })
}

//! Connection faults (`net-refuse`): one [`ConnRule`] per target cgroup,
//! read by cgroup `connect4`/`connect6`/`sendmsg4`/`sendmsg6` programs
//! (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`), which see a call's destination
//! before anything is sent and can fail the call, and for incoming
//! connections by an `sk_lookup` program in the target's network
//! namespaces, which finds the target's listeners in [`LISTENERS`].

use crate::net::NetPeer;

/// `HashMap<u64 /* cgroup id */, ConnRule>`.
pub const RULES: &str = "CONN_RULES";
/// `Array<cgroup::Levels>` with one entry: the levels of [`RULES`]' keys.
pub const LEVELS: &str = "CONN_LEVELS";
/// `PerCpuArray<ConnCounters>`, indexed by [`ConnRule::slot`].
pub const COUNTERS: &str = "CONN_COUNTERS";

/// `HashMap<ListenerKey, u64>`: the listening sockets whose incoming
/// connections are refused, each with the id of the target cgroup whose
/// [`ConnRule`] decides, or [`PASS`] for a socket of another cgroup that
/// shares a port with a target's listener (see [`ListenerKey`]).
pub const LISTENERS: &str = "CONN_LISTENERS";

/// Maximum number of target cgroups with a connection rule at once.
pub const MAX_RULES: u32 = 1024;
/// Counter slots: the injector's slot numbers are shared by every family.
pub const MAX_SLOTS: u32 = crate::net::MAX_SLOTS;

/// `threshold` that refuses every matching call: `bpf_get_prandom_u32()`
/// is always below 2^32.
pub const ALWAYS: u64 = 1 << 32;

/// [`ConnRule::calls`] bit: `connect()` of TCP and UDP sockets.
pub const CALL_CONNECT: u32 = 1 << 0;
/// [`ConnRule::calls`] bit: `sendto()`/`sendmsg()` with an address, on
/// unconnected UDP sockets (the kernel runs the sendmsg hooks only there:
/// udp_sendmsg, net/ipv4/udp.c).
pub const CALL_SENDMSG: u32 = 1 << 1;

/// [`ConnRule::calls`] bit: incoming TCP connections to the target's
/// listeners (the `sk_lookup` program).
pub const CALL_INCOMING: u32 = 1 << 2;

/// Maximum number of entries in [`LISTENERS`].
pub const MAX_LISTENERS: u32 = 4096;

/// A [`LISTENERS`] value: a listener of no target, which an incoming
/// connection reaches unharmed.
pub const PASS: u64 = 0;

/// `AF_INET` and `AF_INET6` as the kernel numbers them
/// (include/linux/socket.h), for [`ListenerKey::family`].
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// A listening socket as the kernel's listener lookup finds it: by the
/// destination address and port of an incoming SYN. A socket bound to the
/// wildcard address has `addr` zero and answers every local address that
/// has no socket bound to it exactly (`__inet_lookup_listener`,
/// net/ipv4/inet_hashtables.c, looks up the exact address first), which is
/// why the `sk_lookup` program tries the exact key, then the wildcard, and
/// why a non-target socket on an exact address gets a [`PASS`] entry. An
/// IPv6 socket that also accepts IPv4 (not `IPV6_V6ONLY`) has an IPv4 key
/// too, since the program sees IPv4 SYNs with `family` [`AF_INET`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Local address in network byte order; IPv4 uses `addr[0]` only.
    pub addr: [u32; 4],
    /// Local port, host byte order (as `bpf_sk_lookup.local_port`).
    pub port: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// `IPPROTO_TCP`.
    pub protocol: u8,
}

/// `EPERM`: what a cgroup sock_addr program's refusal means to the caller
/// when it sets no other errno (`bpf_prog_run_array_cg`,
/// kernel/bpf/cgroup.c).
pub const EPERM: u32 = 1;

/// A connection fault on one cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnRule {
    /// `bpf_ktime_get_ns()` from which the rule is inert.
    pub deadline_ns: u64,
    /// Refuse a matching call when `bpf_get_prandom_u32() < threshold`.
    pub threshold: u64,
    /// Limit to one destination network; `family == FAMILY_ANY` matches
    /// all. An IPv4 network also matches IPv4-mapped IPv6 destinations
    /// (`::ffff:a.b.c.d`, what dual-stack sockets connect to).
    pub peer: NetPeer,
    /// Limit to this destination port (host byte order); 0 matches all.
    pub port: u16,
    /// Limit to one IP protocol (`IPPROTO_TCP`, `IPPROTO_UDP`); 0 = both.
    pub protocol: u8,
    pub _pad: u8,
    /// The (positive) errno refused calls fail with. The programs built
    /// without `bpf_set_retval` (kernels before 6.1) can only give
    /// [`EPERM`]; the planner refuses any other errno there.
    pub errno: u32,
    /// Index into [`COUNTERS`].
    pub slot: u32,
    /// `CALL_*` bits: which calls are refused.
    pub calls: u32,
    pub _pad2: u32,
}

/// Per-CPU counters of one attack. The loader sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    /// `connect()` calls of the target that matched the rule's filters.
    pub connect_matched: u64,
    /// ... of which were refused.
    pub connect_refused: u64,
    /// `sendto()`/`sendmsg()` calls (unconnected UDP) that matched.
    pub sendmsg_matched: u64,
    /// ... of which were refused.
    pub sendmsg_refused: u64,
    /// Calls or incoming connections that found the rule past its
    /// deadline and were passed.
    pub expired: u64,
    /// Incoming connections to the target's listeners that matched.
    pub incoming_matched: u64,
    /// ... of which were refused (the client got a reset).
    pub incoming_refused: u64,
}

const _: () = assert!(core::mem::size_of::<ConnRule>() == 72);
const _: () = assert!(core::mem::align_of::<ConnRule>() == 8);
const _: () = assert!(core::mem::size_of::<ConnCounters>() == 56);
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);

crate::pod!(ConnRule, ConnCounters, ListenerKey);

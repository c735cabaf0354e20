//! Connection faults (`net-refuse`): one [`ConnRule`] per target cgroup,
//! read by cgroup `connect4`/`connect6`/`sendmsg4`/`sendmsg6` programs
//! (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`), which see a call's destination
//! before anything is sent and can fail the call.

use crate::net::NetPeer;

/// `HashMap<u64 /* cgroup id */, ConnRule>`.
pub const RULES: &str = "CONN_RULES";
/// `Array<cgroup::Levels>` with one entry: the levels of [`RULES`]' keys.
pub const LEVELS: &str = "CONN_LEVELS";
/// `PerCpuArray<ConnCounters>`, indexed by [`ConnRule::slot`].
pub const COUNTERS: &str = "CONN_COUNTERS";

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
    /// Calls that found the rule past its deadline and were passed.
    pub expired: u64,
}

const _: () = assert!(core::mem::size_of::<ConnRule>() == 72);
const _: () = assert!(core::mem::align_of::<ConnRule>() == 8);
const _: () = assert!(core::mem::size_of::<ConnCounters>() == 40);

crate::pod!(ConnRule, ConnCounters);

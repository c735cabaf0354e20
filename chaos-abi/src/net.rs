//! Network faults: one [`NetRule`] per target cgroup, counters per slot.

/// `HashMap<u64 /* cgroup id */, NetRule>`.
pub const RULES: &str = "NET_RULES";
/// `Array<cgroup::Levels>` with one entry: the levels of [`RULES`]' keys.
pub const LEVELS: &str = "NET_LEVELS";
/// `PerCpuArray<NetCounters>`, indexed by [`NetRule::slot`].
pub const COUNTERS: &str = "NET_COUNTERS";

/// Maximum number of target cgroups with a network rule at once.
pub const MAX_RULES: u32 = 1024;
/// Number of counter slots (one per attack in a run).
pub const MAX_SLOTS: u32 = 64;

/// [`NetRule::directions`] bit: packets the target sends.
pub const DIR_EGRESS: u8 = 1 << 0;
/// [`NetRule::directions`] bit: packets the target receives.
pub const DIR_INGRESS: u8 = 1 << 1;

/// [`NetPeer::family`]: match any address.
pub const FAMILY_ANY: u32 = 0;
/// [`NetPeer::family`]: IPv4 (`AF_INET`).
pub const FAMILY_V4: u32 = 2;
/// [`NetPeer::family`]: IPv6 (`AF_INET6`).
pub const FAMILY_V6: u32 = 10;

/// `loss_threshold` that drops every packet: `bpf_get_prandom_u32()` is
/// always below 2^32.
pub const LOSS_ALWAYS: u64 = 1 << 32;

/// The peer a rule is limited to: the destination of egress packets, the
/// source of ingress packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPeer {
    /// Address in network byte order; IPv4 uses `addr[0]` only.
    pub addr: [u32; 4],
    /// Prefix mask in network byte order, same layout as `addr`.
    pub mask: [u32; 4],
    /// [`FAMILY_ANY`], [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
}

/// A network fault on one cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRule {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) from which the rule is inert:
    /// the kernel-side end of the fault, whatever the loader does.
    pub deadline_ns: u64,
    /// Drop a matching packet when `bpf_get_prandom_u32() < loss_threshold`:
    /// 0 never drops, [`LOSS_ALWAYS`] always does.
    pub loss_threshold: u64,
    /// Limit to one peer network; `family == FAMILY_ANY` matches all.
    pub peer: NetPeer,
    /// Limit to packets whose source or destination port is this one
    /// (host byte order); 0 matches all.
    pub port: u16,
    /// Limit to one IP protocol (`IPPROTO_TCP`, `IPPROTO_UDP`, ...); 0 = all.
    pub protocol: u8,
    /// [`DIR_EGRESS`] | [`DIR_INGRESS`].
    pub directions: u8,
    /// Index into [`COUNTERS`].
    pub slot: u32,
    pub _pad: u32,
}

/// Per-CPU counters of one attack. The loader sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Target packets that matched the rule's filters on egress.
    pub egress_matched: u64,
    /// ... of which were dropped.
    pub egress_dropped: u64,
    /// Target packets that matched the rule's filters on ingress.
    pub ingress_matched: u64,
    /// ... of which were dropped.
    pub ingress_dropped: u64,
    /// Target packets that found the rule past its deadline and were passed
    /// untouched: proof that the kernel-side deadline ended the fault.
    pub expired: u64,
}

const _: () = assert!(core::mem::size_of::<NetPeer>() == 36);
const _: () = assert!(core::mem::size_of::<NetRule>() == 64);
const _: () = assert!(core::mem::align_of::<NetRule>() == 8);
const _: () = assert!(core::mem::size_of::<NetCounters>() == 40);

crate::pod!(NetRule, NetCounters);

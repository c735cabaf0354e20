//! Network faults: one [`NetRule`] per target cgroup, counters per slot.
//!
//! A rule carries every effect of one attack (loss, delay with jitter, rate,
//! duplication, corruption, reordering), as one netem instance does; the eBPF
//! side evaluates them only after a packet matched the rule.

/// `HashMap<u64 /* cgroup id */, NetRule>`.
pub const RULES: &str = "NET_RULES";
/// `Array<cgroup::Levels>` with one entry: the levels of [`RULES`]' keys.
pub const LEVELS: &str = "NET_LEVELS";
/// `PerCpuArray<NetCounters>`, indexed by [`NetRule::slot`].
pub const COUNTERS: &str = "NET_COUNTERS";

/// `HashMap<u64, u8>` keyed by [`tag_device_key`]: for each attack (by its
/// counter slot), the devices that carry chaos's egress classifier, where
/// the tag program may set [`TAG_MARK`] on its target's packets (the
/// classifier clears it there; nothing would on another device). Per
/// attack, not per ifindex alone: ifindexes are per network namespace, and
/// another target's packets may leave by a device of the same ifindex in a
/// namespace chaos does not act on.
pub const TAG_DEVICES: &str = "NET_TAG_DEVICES";
/// Maximum number of devices in [`TAG_DEVICES`].
pub const MAX_TAG_DEVICES: u32 = 1024;

/// The key of [`TAG_DEVICES`]: an attack's counter slot and a device's
/// ifindex.
#[inline(always)]
pub const fn tag_device_key(slot: u32, ifindex: u32) -> u64 {
    ((slot as u64) << 32) | ifindex as u64
}

/// The `skb->mark` bit by which the target's packets reach the egress
/// classifier tagged, so that it can pass every other packet after one load
/// and one test, as cheaply as an empty program.
///
/// The tag program (`net_tag`, cgroup_skb egress on the target cgroup) sets
/// it; the classifier clears it on every packet whose rule it finds. It
/// lives only between the cgroup egress hook (`ip_finish_output`, after
/// routing and netfilter's POSTROUTING) and the device's tc egress hook
/// (`__dev_queue_xmit`), where chaos's program is first in the TCX chain.
/// 0x2000 is used by none of the marks of kube-proxy (0x4000, 0x8000),
/// Cilium (0x0f00 and the upper 16 bits), Calico (upper 16 bits), Istio
/// (0x539), Tailscale (0xff0000), AWS VPC CNI (0x80) or wg-quick (0xca6c).
/// A target packet that carries this bit from its own fwmark leaves the
/// classifier without it.
pub const TAG_MARK: u32 = 0x2000;

/// Maximum number of target cgroups with a network rule at once.
pub const MAX_RULES: u32 = 1024;
/// Number of counter slots (one per attack in a run).
pub const MAX_SLOTS: u32 = 64;
/// `Array<u64>` of `2 * MAX_SLOTS` entries, at [`direction_index`]: the
/// rate limiter's virtual clock of each attack and direction
/// (`bpf_ktime_get_ns()` at which the last scheduled byte leaves).
pub const RATE_CLOCKS: &str = "NET_RATE_CLOCKS";
/// `Array<i32>` of [`JITTER_TABLE_SIZE`] entries: quantiles of the standard
/// normal distribution at `(i + 0.5) / JITTER_TABLE_SIZE`, scaled by
/// 2^[`JITTER_TABLE_SHIFT`]; written once by the loader.
pub const JITTER_TABLE: &str = "NET_JITTER_TABLE";
/// Entries of [`JITTER_TABLE`]; a power of two so that a random index is a
/// mask.
pub const JITTER_TABLE_SIZE: u32 = 4096;
/// Fixed-point scale of [`JITTER_TABLE`] entries.
pub const JITTER_TABLE_SHIFT: u32 = 16;

/// `Array<BurstState>` of `2 * MAX_SLOTS` entries, at [`direction_index`]: the
/// state of each attack's burst-loss chain, one per direction. A BTF map:
/// the value holds a `bpf_spin_lock`, which the verifier finds by its BTF
/// name (kernel/bpf/btf.c, `btf_find_spin_lock`).
pub const BURST_STATES: &str = "NET_BURST_STATES";

/// The entry of [`BURST_STATES`] and [`RATE_CLOCKS`] of an attack's slot
/// and a direction ([`DIR_EGRESS`] or [`DIR_INGRESS`]): each direction is a
/// link of its own.
#[inline(always)]
pub const fn direction_index(slot: u32, dir: u8) -> u32 {
    slot * 2 + (dir == DIR_INGRESS) as u32
}

/// `LruHashMap<RxFlowKey, RxFlow>`: the flows of targets whose rule acts on
/// what they receive, learned from their own packets by cgroup_skb programs
/// on the target (the only hooks that know a packet's cgroup), so that the
/// tc ingress classifier, which runs before any socket is found, can tell
/// the target's packets from its siblings' in the same namespace. Keyed as
/// the received packet reads: local (destination) address and port first.
pub const RX_FLOWS: &str = "NET_RX_FLOWS";
/// Entries of [`RX_FLOWS`]; the least recently used flow is forgotten
/// first (an LRU map: a target with more live flows than this loses the
/// effect on its idlest ones, it never fails a packet).
pub const MAX_RX_FLOWS: u32 = 65536;

/// `HashMap<u64, u32>` keyed by [`tag_device_key`]: for each attack acting
/// on what its target receives, the devices carrying the ingress classifier
/// and the ifindex of chaos's ifb device in the same namespace, whose fq
/// holds the packets until their time.
pub const RX_IFBS: &str = "NET_RX_IFBS";

/// A flow as a received packet names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RxFlowKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_SCTP`, `IPPROTO_ICMP` or
    /// `IPPROTO_ICMPV6`.
    pub protocol: u8,
    /// Host byte order; for ICMP echo, the identifier as the local port
    /// and 0 as the remote one.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    /// Network byte order; IPv4 in `[0]`, the rest 0.
    pub local: [u32; 4],
    pub remote: [u32; 4],
}

/// What [`RX_FLOWS`] knows of a flow: whose rule it falls under.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxFlow {
    /// The key of the rule in [`RULES`] (the targeted ancestor cgroup).
    pub cgroup: u64,
    /// The rule's slot when the flow was learned: a rule found under the
    /// key with another slot is another attack's, which has not seen this
    /// flow yet.
    pub slot: u32,
    pub _pad: u32,
}

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

/// [`NetPeer::family`]: match the packet's peer address against the
/// attack's networks in [`PEERS`] (several `--cidr`).
pub const FAMILY_SET: u32 = 0xffff_ffff;

/// `LpmTrie<PeerKey, u8>`: the peer networks of attacks whose rule has
/// [`FAMILY_SET`], keyed by counter slot, family and network, so that one
/// lookup finds whether a packet's peer lies in any network of its attack.
pub const PEERS: &str = "NET_PEERS";
/// Networks per attack in [`PEERS`].
pub const MAX_PEERS_PER_ATTACK: u32 = 64;
/// Entries of [`PEERS`]: every slot full.
pub const MAX_PEERS: u32 = MAX_PEERS_PER_ATTACK * MAX_SLOTS;
/// Bits of [`PeerKey`] before the address: an LPM trie matches a key's data
/// from its first bit, so an entry's prefix length is this plus the
/// network's.
pub const PEER_KEY_FIXED_BITS: u32 = 64;

/// The data of a [`PEERS`] key (the LPM trie's `prefixlen` precedes it).
/// Compared bit by bit from the first byte, so the integers are stored
/// big-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    /// The attack's counter slot, big-endian.
    pub slot_be: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`], big-endian.
    pub family_be: u32,
    /// The address in network byte order (IPv4 in `addr[0]`, the rest 0).
    pub addr: [u32; 4],
}

/// `loss_threshold` that drops every packet: `bpf_get_prandom_u32()` is
/// always below 2^32. The same scale serves every probability of a rule.
pub const LOSS_ALWAYS: u64 = 1 << 32;

/// [`NetRule::flags`]: packets get a departure time (delay, jitter, rate or
/// reorder): the original is replaced by an orphaned clone that an fq qdisc
/// on the device holds until then.
pub const FLAG_SCHEDULE: u32 = 1 << 0;
/// [`NetRule::flags`]: give each scheduled copy a flow hash of its own, so
/// that fq treats it as a flow of one packet and releases it at its own time
/// (jitter, reorder); without it a packet cannot leave before an earlier one
/// of its flow.
pub const FLAG_FLOW_PER_PACKET: u32 = 1 << 1;

/// [`NetRule::distribution`]: jitter uniform in `[-jitter, +jitter]`.
pub const DIST_UNIFORM: u32 = 0;
/// [`NetRule::distribution`]: jitter normal with standard deviation
/// `jitter`, from [`JITTER_TABLE`].
pub const DIST_NORMAL: u32 = 1;

/// Written to `__sk_buff->cb[0]` and `cb[1]` of a copy chaos sends with
/// `bpf_clone_redirect`, so that the egress program recognises the copy when
/// it comes through the device's egress again, clears the mark and lets it
/// pass. An arbitrary 64-bit constant: `cb` of other packets holds what the
/// IP layer left there, which never spells this.
pub const COPY_MARK: [u32; 2] = [0xc4a0_5eed, 0x9e37_79b9];

/// The peer a rule is limited to: the destination of egress packets, the
/// source of ingress packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPeer {
    /// Address in network byte order; IPv4 uses `addr[0]` only.
    pub addr: [u32; 4],
    /// Prefix mask in network byte order, same layout as `addr`.
    pub mask: [u32; 4],
    /// [`FAMILY_ANY`], [`FAMILY_V4`], [`FAMILY_V6`], or [`FAMILY_SET`]
    /// (then `addr` and `mask` are unused).
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
    /// Index into [`COUNTERS`] and [`RATE_CLOCKS`].
    pub slot: u32,
    /// [`FLAG_SCHEDULE`] | [`FLAG_FLOW_PER_PACKET`].
    pub flags: u32,
    /// Added to every scheduled packet's departure time (ns).
    pub delay_ns: u64,
    /// Uniform half-width or normal standard deviation (ns); 0 = none.
    pub jitter_ns: u64,
    /// Bandwidth limit in bits per second on the wire (`wire_len`); 0 =
    /// none.
    pub rate_bps: u64,
    /// Drop a packet, rather than queue it, when it would leave the rate
    /// limiter more than this long from now (ns).
    pub rate_backlog_ns: u64,
    /// Send an extra copy when `bpf_get_prandom_u32() < duplicate_threshold`.
    pub duplicate_threshold: u64,
    /// Flip a header bit of a copy when the roll is below this.
    pub corrupt_threshold: u64,
    /// Send a copy at once, past the delayed ones, when the roll is below
    /// this (only with [`FLAG_SCHEDULE`]).
    pub reorder_threshold: u64,
    /// [`DIST_UNIFORM`] or [`DIST_NORMAL`].
    pub distribution: u32,
    pub _pad: u32,
    /// Burst loss (the Gilbert model: netem's `loss gemodel p r` with
    /// 1-h = 100%, 1-k = 0%): when not 0, it replaces `loss_threshold`.
    /// A packet is lost when its direction's chain ([`BURST_STATES`]) is in
    /// the bad state as it arrives; then the chain moves good → bad when a
    /// roll is below this threshold (p)...
    pub burst_enter_threshold: u64,
    /// ... and bad → good when it is below this one (r). Bursts are
    /// geometric with mean 1/r packets, gaps with mean 1/p, and the loss
    /// rate is p / (p + r).
    pub burst_leave_threshold: u64,
}

/// The `bpf_spin_lock` of a map value. The verifier recognises it by this
/// exact BTF name (include/uapi/linux/bpf.h), so the type is named as the
/// kernel's; it is written only by the `bpf_spin_lock` helpers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bpf_spin_lock {
    pub val: u32,
}

/// One burst-loss chain (see [`NetRule::burst_enter_threshold`]). Stepped
/// under its lock, so that the packets of every CPU walk one chain, as
/// netem's do under its qdisc lock; per-CPU chains would keep the loss rate
/// but cut bursts short wherever a flow's packets change CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstState {
    pub lock: bpf_spin_lock,
    /// 1 in the bad (losing) state.
    pub bad: u32,
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
    /// Egress packets any effect of the rule applied to (loss included).
    pub egress_injected: u64,
    /// Copies sent with a departure time in the future.
    pub egress_delayed: u64,
    /// Extra copies sent.
    pub egress_duplicated: u64,
    /// Copies sent with a flipped header bit.
    pub egress_corrupted: u64,
    /// Copies sent at once, ahead of the delayed ones.
    pub egress_reordered: u64,
    /// Packets dropped because the rate limiter's backlog was full.
    pub egress_rate_dropped: u64,
    /// Copies the device's qdisc refused (fq's packet limits).
    pub egress_queue_dropped: u64,
    /// Packets passed undelayed because no copy of them could be made
    /// (`bpf_clone_redirect` failed): the delay fails open, never closed.
    pub egress_copy_failed: u64,
    /// Received packets any effect of the rule but loss applied to (loss
    /// is `ingress_dropped`), when the rule acts on them at the device.
    pub ingress_injected: u64,
    /// Received packets (or copies) sent through the ifb with a delivery
    /// time in the future.
    pub ingress_delayed: u64,
    /// Extra copies of received packets.
    pub ingress_duplicated: u64,
    /// Received packets (or copies) with a flipped header bit.
    pub ingress_corrupted: u64,
    /// Received packets delivered at once, ahead of the delayed ones.
    pub ingress_reordered: u64,
    /// Received packets dropped because the rate limiter's backlog was full.
    pub ingress_rate_dropped: u64,
    /// Copies the ifb's qdisc refused.
    pub ingress_queue_dropped: u64,
}

const _: () = assert!(core::mem::size_of::<NetPeer>() == 36);
const _: () = assert!(core::mem::size_of::<NetRule>() == 144);
const _: () = assert!(core::mem::size_of::<BurstState>() == 8);
const _: () = assert!(core::mem::size_of::<PeerKey>() * 8 == PEER_KEY_FIXED_BITS as usize + 128);
const _: () = assert!(core::mem::align_of::<NetRule>() == 8);
const _: () = assert!(core::mem::size_of::<NetCounters>() == 160);
const _: () = assert!(core::mem::size_of::<RxFlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<RxFlow>() == 16);

crate::pod!(NetRule, NetCounters, BurstState, PeerKey, RxFlowKey, RxFlow);

//! The maps of the fault object. Types and names come from chaos-abi.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockHash},
};
use chaos_abi::{
    cgroup::Levels,
    net::{
        BurstState, JITTER_TABLE_SIZE, MAX_PEERS, MAX_RULES, MAX_RX_FLOWS, MAX_SLOTS, MAX_TAG_DEVICES,
        NetCounters, NetRule, PeerKey, RxFlow, RxFlowKey,
    },
};

/// `chaos_abi::net::RULES`: network rules keyed by target cgroup id.
#[map]
pub static NET_RULES: HashMap<u64, NetRule> = HashMap::with_max_entries(MAX_RULES, 0);

/// `chaos_abi::net::LEVELS`: which cgroup levels carry a network rule.
#[map]
pub static NET_LEVELS: Array<Levels> = Array::with_max_entries(1, 0);

/// `chaos_abi::net::TAG_DEVICES`: per attack, the devices with the egress
/// classifier.
#[map]
pub static NET_TAG_DEVICES: HashMap<u64, u8> = HashMap::with_max_entries(MAX_TAG_DEVICES, 0);

/// `chaos_abi::net::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static NET_COUNTERS: PerCpuArray<NetCounters> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// `chaos_abi::net::RATE_CLOCKS`: the rate limiter's clock, one per attack
/// and direction (shared by all CPUs: it is one link).
#[map]
pub static NET_RATE_CLOCKS: Array<u64> = Array::with_max_entries(2 * MAX_SLOTS, 0);

/// `chaos_abi::net::RX_FLOWS`: the flows of targets whose received packets
/// are acted on, learned from their own packets.
#[map]
pub static NET_RX_FLOWS: LruHashMap<RxFlowKey, RxFlow> = LruHashMap::with_max_entries(MAX_RX_FLOWS, 0);

/// `chaos_abi::net::RX_IFBS`: per attack and receiving device, chaos's ifb
/// in that namespace.
#[map]
pub static NET_RX_IFBS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TAG_DEVICES, 0);

/// `chaos_abi::net::BURST_STATES`: the burst-loss chains, two per attack.
/// The only BTF-defined map: the verifier needs the value's BTF to find its
/// `bpf_spin_lock`, and a legacy map definition carries none.
#[btf_map]
pub static NET_BURST_STATES: btf_maps::Array<BurstState, { 2 * MAX_SLOTS as usize }> = btf_maps::Array::new();

/// `chaos_abi::net::PEERS`: the networks of attacks with several `--cidr`.
/// LPM tries must be created without preallocation (`trie_alloc`,
/// kernel/bpf/lpm_trie.c).
#[map]
pub static NET_PEERS: LpmTrie<PeerKey, u8> = LpmTrie::with_max_entries(MAX_PEERS, BPF_F_NO_PREALLOC);

/// `chaos_abi::net::JITTER_TABLE`: standard normal quantiles for jitter.
#[map]
pub static NET_JITTER_TABLE: Array<i32> = Array::with_max_entries(JITTER_TABLE_SIZE, 0);

/// `chaos_abi::io::RULES`: I/O rules keyed by target cgroup id.
#[map]
pub static IO_RULES: HashMap<u64, chaos_abi::io::IoRule> =
    HashMap::with_max_entries(chaos_abi::io::MAX_RULES, 0);

/// `chaos_abi::io::CONFIG`: levels, field offsets, calibration request.
#[map]
pub static IO_CONFIG: Array<chaos_abi::io::IoConfig> = Array::with_max_entries(1, 0);

/// `chaos_abi::io::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static IO_COUNTERS: PerCpuArray<chaos_abi::io::IoCounters> =
    PerCpuArray::with_max_entries(chaos_abi::io::MAX_SLOTS, 0);

/// `chaos_abi::io::CALLS`: matching calls so far, per slot (atomic).
#[map]
pub static IO_CALLS: Array<u64> = Array::with_max_entries(chaos_abi::io::MAX_SLOTS, 0);

/// `chaos_abi::io::CALIBRATION`: the inode of the loader's last
/// calibration open.
#[map]
pub static IO_CALIBRATION: Array<chaos_abi::io::IoCalibration> = Array::with_max_entries(1, 0);

/// `chaos_abi::clock::RULES`: clock rules keyed by target cgroup id.
#[map]
pub static CLOCK_RULES: HashMap<u64, chaos_abi::clock::ClockRule> =
    HashMap::with_max_entries(chaos_abi::clock::MAX_RULES, 0);

/// `chaos_abi::clock::CONFIG`: levels and `struct linux_binprm` offsets.
#[map]
pub static CLOCK_CONFIG: Array<chaos_abi::clock::ClockConfig> = Array::with_max_entries(1, 0);

/// `chaos_abi::clock::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static CLOCK_COUNTERS: PerCpuArray<chaos_abi::clock::ClockCounters> =
    PerCpuArray::with_max_entries(chaos_abi::clock::MAX_SLOTS, 0);

/// `chaos_abi::clock::PENDING_SYSCALL`: clock system calls in flight.
#[map]
pub static CLOCK_PENDING_SYSCALL: LruHashMap<u64, chaos_abi::clock::ClockPending> =
    LruHashMap::with_max_entries(chaos_abi::clock::MAX_PENDING, 0);

/// `chaos_abi::clock::PENDING_LIBC`: C library clock calls in flight.
#[map]
pub static CLOCK_PENDING_LIBC: LruHashMap<u64, chaos_abi::clock::ClockPending> =
    LruHashMap::with_max_entries(chaos_abi::clock::MAX_PENDING, 0);

/// `chaos_abi::conn::RULES`: connection rules keyed by target cgroup id.
#[map]
pub static CONN_RULES: HashMap<u64, chaos_abi::conn::ConnRule> =
    HashMap::with_max_entries(chaos_abi::conn::MAX_RULES, 0);

/// `chaos_abi::conn::LISTENERS`: the target's listeners, for the
/// `sk_lookup` program.
#[map]
pub static CONN_LISTENERS: HashMap<chaos_abi::conn::ListenerKey, u64> =
    HashMap::with_max_entries(chaos_abi::conn::MAX_LISTENERS, 0);

/// `chaos_abi::conn::LEVELS`: which cgroup levels carry a connection rule.
#[map]
pub static CONN_LEVELS: Array<Levels> = Array::with_max_entries(1, 0);

/// `chaos_abi::conn::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static CONN_COUNTERS: PerCpuArray<chaos_abi::conn::ConnCounters> =
    PerCpuArray::with_max_entries(chaos_abi::conn::MAX_SLOTS, 0);

/// `chaos_abi::dns::RULES`: DNS rules keyed by target cgroup id.
#[map]
pub static DNS_RULES: HashMap<u64, chaos_abi::dns::DnsRule> =
    HashMap::with_max_entries(chaos_abi::dns::MAX_RULES, 0);

/// `chaos_abi::dns::LEVELS`: which cgroup levels carry a DNS rule.
#[map]
pub static DNS_LEVELS: Array<Levels> = Array::with_max_entries(1, 0);

/// `chaos_abi::dns::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static DNS_COUNTERS: PerCpuArray<chaos_abi::dns::DnsCounters> =
    PerCpuArray::with_max_entries(chaos_abi::dns::MAX_SLOTS, 0);

/// `chaos_abi::dns::NAMES`: each attack's name patterns (no
/// preallocation: see `NET_PEERS`).
#[map]
pub static DNS_NAMES: LpmTrie<chaos_abi::dns::NameKey, u8> =
    LpmTrie::with_max_entries(chaos_abi::dns::MAX_NAMES, BPF_F_NO_PREALLOC);

/// `chaos_abi::dns::TCP_SOCKS`: the target's TCP connections to port 53.
#[map]
pub static DNS_TCP_SOCKS: SockHash<chaos_abi::dns::SockKey> =
    SockHash::with_max_entries(chaos_abi::dns::MAX_TCP_SOCKS, 0);

/// The classifier's per-CPU scratch space (a query's name, and the trie
/// key made of it); the loader never reads it.
#[map]
pub static DNS_SCRATCH: PerCpuArray<crate::dns::Scratch> = PerCpuArray::with_max_entries(1, 0);

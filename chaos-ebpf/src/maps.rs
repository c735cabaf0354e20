//! The maps of the fault object. Types and names come from chaos-abi.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use chaos_abi::{
    cgroup::Levels,
    net::{MAX_RULES, MAX_SLOTS, NetCounters, NetRule},
};

/// `chaos_abi::net::RULES`: network rules keyed by target cgroup id.
#[map]
pub static NET_RULES: HashMap<u64, NetRule> = HashMap::with_max_entries(MAX_RULES, 0);

/// `chaos_abi::net::LEVELS`: which cgroup levels carry a network rule.
#[map]
pub static NET_LEVELS: Array<Levels> = Array::with_max_entries(1, 0);

/// `chaos_abi::net::COUNTERS`: per-CPU counters, one slot per attack.
#[map]
pub static NET_COUNTERS: PerCpuArray<NetCounters> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

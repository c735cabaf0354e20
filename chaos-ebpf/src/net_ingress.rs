//! Packet loss on what the target receives: a cgroup_skb ingress program on
//! the target cgroup (fd-owned link), run by the kernel for sockets of that
//! subtree only, when a packet reaches the socket (`sk_filter`). Dropping
//! there is invisible to the remote sender, as network loss is. The other
//! network effects act on egress only (a cgroup_skb program can neither
//! hold nor rewrite a packet).

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use chaos_abi::net::DIR_INGRESS;

use crate::net::{Lookup, lookup, lose};

/// cgroup_skb return codes (include/uapi/linux/bpf.h, `__cgroup_bpf_run_filter_skb`).
const CGROUP_SKB_DROP: i32 = 0;
const CGROUP_SKB_PASS: i32 = 1;

#[cgroup_skb]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    match lookup(&ctx, DIR_INGRESS) {
        // SAFETY: this CPU's counter slot (see `lookup`).
        Lookup::Hit(rule, counters) if lose(&rule, unsafe { &mut *counters }, DIR_INGRESS) => CGROUP_SKB_DROP,
        _ => CGROUP_SKB_PASS,
    }
}

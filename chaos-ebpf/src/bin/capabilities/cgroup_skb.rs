//! cgroup_skb: attached to a throwaway cgroup.
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

#[cgroup_skb]
pub fn probe_cgroup_skb(_ctx: SkBuffContext) -> i32 {
    1
}

//! cgroup_sock_addr (connect4), attached to a throwaway cgroup, calling
//! what net-refuse's programs call there on every kernel:
//! `bpf_get_current_ancestor_cgroup_id` (sock_addr programs have it since
//! Linux 5.7: 0f09abd105da, sock_addr_func_proto in net/core/filter.c).
use aya_ebpf::{
    helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

#[cgroup_sock_addr(connect4)]
pub fn probe_sock_addr(_ctx: SockAddrContext) -> i32 {
    // SAFETY: a helper call with a plain integer argument. A probe attached
    // to an empty scratch cgroup never runs: the verifier judges the call.
    let _ = unsafe { bpf_get_current_ancestor_cgroup_id(0) };
    1
}

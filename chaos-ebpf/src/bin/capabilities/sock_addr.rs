//! cgroup_sock_addr (connect4): attached to a throwaway cgroup.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn probe_sock_addr(_ctx: SockAddrContext) -> i32 {
    1
}

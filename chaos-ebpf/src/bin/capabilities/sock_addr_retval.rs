//! `bpf_set_retval` in a cgroup sock_addr program: net-refuse gives an
//! errno other than EPERM with it. Loaded, never attached. The helper came
//! in Linux 5.18 (b44123b4a3dc) for other cgroup hooks; sock_addr programs
//! may call it from 6.1 (bed89185af0d, "bpf: Use
//! cgroup_{common,current}_func_proto in more hooks").
use aya_ebpf::{helpers::generated::bpf_set_retval, macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn probe_sock_addr_retval(_ctx: SockAddrContext) -> i32 {
    // SAFETY: a helper call with a plain integer argument.
    let _ = unsafe { bpf_set_retval(0) };
    1
}

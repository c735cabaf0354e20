//! net-refuse on `connect()` of IPv6 sockets, dual-stack ones
//! included (`tcp_v6_pre_connect`, net/ipv6/tcp_ipv6.c): a cgroup `connect6` program on each target
//! cgroup. Two builds of one entry point: `conn_connect6` fails the call with
//! the rule's errno (`bpf_set_retval`, Linux 6.1), `conn_eperm_cn6`
//! with EPERM, for kernels whose verifier does not know that helper in
//! sock_addr programs (see crate::conn::Errno). Names stay within the
//! kernel's 15 characters (BPF_OBJ_NAME_LEN), so that `bpftool prog` and
//! the leak checks see them whole.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::conn::{Call, Errno, Ip, decide};

#[cgroup_sock_addr(connect6)]
pub fn conn_connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V6, Call::Connect, Errno::SetRetval)
}

#[cgroup_sock_addr(connect6)]
pub fn conn_eperm_cn6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V6, Call::Connect, Errno::EpermOnly)
}

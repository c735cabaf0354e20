//! net-refuse on `connect()` of IPv4 sockets (TCP and UDP; the kernel runs it
//! from `tcp_v4_pre_connect`, net/ipv4/tcp_ipv4.c, before the SYN is built,
//! and from `udp_pre_connect`): a cgroup `connect4` program on each target
//! cgroup. Two builds of one entry point: `conn_connect4` fails the call with
//! the rule's errno (`bpf_set_retval`, Linux 6.1), `conn_eperm_cn4`
//! with EPERM, for kernels whose verifier does not know that helper in
//! sock_addr programs (see crate::conn::Errno). Names stay within the
//! kernel's 15 characters (BPF_OBJ_NAME_LEN), so that `bpftool prog` and
//! the leak checks see them whole.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::conn::{Call, Errno, Ip, decide};

#[cgroup_sock_addr(connect4)]
pub fn conn_connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V4, Call::Connect, Errno::SetRetval)
}

#[cgroup_sock_addr(connect4)]
pub fn conn_eperm_cn4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V4, Call::Connect, Errno::EpermOnly)
}

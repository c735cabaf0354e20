//! net-refuse on `sendto()`/`sendmsg()` with a destination on
//! unconnected IPv4 UDP sockets (`udp_sendmsg`, net/ipv4/udp.c): a cgroup `sendmsg4` program on each target
//! cgroup. Two builds of one entry point: `conn_sendmsg4` fails the call with
//! the rule's errno (`bpf_set_retval`, Linux 6.1), `conn_eperm_sm4`
//! with EPERM, for kernels whose verifier does not know that helper in
//! sock_addr programs (see crate::conn::Errno). Names stay within the
//! kernel's 15 characters (BPF_OBJ_NAME_LEN), so that `bpftool prog` and
//! the leak checks see them whole.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::conn::{Call, Errno, Ip, decide};

#[cgroup_sock_addr(sendmsg4)]
pub fn conn_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V4, Call::Sendmsg, Errno::SetRetval)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn conn_eperm_sm4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V4, Call::Sendmsg, Errno::EpermOnly)
}

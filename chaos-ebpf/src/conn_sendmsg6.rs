//! net-refuse on `sendto()`/`sendmsg()` with a destination on
//! unconnected IPv6 UDP sockets (`udpv6_sendmsg`, net/ipv6/udp.c): a cgroup `sendmsg6` program on each target
//! cgroup. Two builds of one entry point: `conn_sendmsg6` fails the call with
//! the rule's errno (`bpf_set_retval`, Linux 6.1), `conn_eperm_sm6`
//! with EPERM, for kernels whose verifier does not know that helper in
//! sock_addr programs (see crate::conn::Errno). Names stay within the
//! kernel's 15 characters (BPF_OBJ_NAME_LEN), so that `bpftool prog` and
//! the leak checks see them whole.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::conn::{Call, Errno, Ip, decide};

#[cgroup_sock_addr(sendmsg6)]
pub fn conn_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V6, Call::Sendmsg, Errno::SetRetval)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn conn_eperm_sm6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Ip::V6, Call::Sendmsg, Errno::EpermOnly)
}

//! dns-error over TCP: a sock_ops program on the target's cgroups, which
//! puts the connections they establish to port 53 in the sockhash the
//! `dns_msg` program runs on (see crate::dns::tcp).

use aya_ebpf::{macros::sock_ops, programs::SockOpsContext};

#[sock_ops]
pub fn dns_sockops(ctx: SockOpsContext) -> u32 {
    crate::dns::tcp::track(&ctx)
}

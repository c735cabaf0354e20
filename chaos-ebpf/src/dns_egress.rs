//! dns-error: a tc egress classifier on the devices of the target's
//! network namespaces (TCX link, or a netlink filter before Linux 6.6),
//! which answers or drops the target's matching DNS queries (see
//! crate::dns).

use aya_ebpf::{macros::classifier, programs::TcContext};

#[classifier]
pub fn dns_egress(ctx: TcContext) -> i32 {
    crate::dns::decide(&ctx)
}

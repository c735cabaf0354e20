//! dns-error over TCP: an sk_msg program on the sockhash of the target's
//! connections to port 53, which answers or swallows their matching
//! queries before TCP sends them (see crate::dns::tcp).

use aya_ebpf::{macros::sk_msg, programs::SkMsgContext};

#[sk_msg]
pub fn dns_msg(ctx: SkMsgContext) -> u32 {
    crate::dns::tcp::decide(&ctx)
}

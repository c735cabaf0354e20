//! net-refuse on incoming TCP connections to the target's listeners: an
//! `sk_lookup` program attached to each network namespace the target's
//! processes live in (an fd-owned link), which refuses a matching SYN so
//! that the client gets a reset (see crate::conn::incoming). Both address
//! families: one program sees every lookup of its namespace.

use aya_ebpf::{macros::sk_lookup, programs::SkLookupContext};

use crate::conn::incoming::decide;

#[sk_lookup]
pub fn conn_incoming(ctx: SkLookupContext) -> u32 {
    decide(&ctx)
}
